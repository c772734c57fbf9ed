// Hopper (sm_90a) block-sparse quantised attention "i8f8": the warp-specialised kernel template
// of pingpong, grid and serial (design: docs/design.md, "Kernels"; constants and kernels:
// attention_sm90.cuh; measurements: kernels/NOTES.md "sm90 attention"). Its host launch is in
// attention_sm90_launch.cuh, which the generated instance files in kernels/instances/ include
// (one (head dim, kernel) per translation unit); the dispatch lives in attention_sm90.cu, the
// device-side building blocks (softmax, packing, epilogue, tile walk, K/V loads) in
// attention_sm90_device.cuh.
//
// A CTA works on tiles (b, h, q block): one tile per CTA in serial and grid; in pingpong
// (persistent) one CTA per SM claims tiles from a counter. Warpgroup 0 is the producer (one
// thread issues the TMA loads: each tile's Q into one of two Q slots, then the K8/V8 tiles of its
// LUT blocks into a kStages-deep ring guarded by mbarriers; the warpgroup gives its registers
// away with setmaxnreg), warpgroups 1 and 2 are consumers, 64 query rows each:
//   S = Q8·K8ᵀ (wgmma s8, both operands from shared memory) -> fp32 logits in log2 units,
//   masks, online softmax (fp32 m, l), stage-2 skip per warp (16 rows), P -> e4m3 in registers,
//   pv = P·[V8; 1] (wgmma e4m3, P as the register A operand, V8ᵀ tile plus rows of ones as the
//   shared B operand) into a fresh accumulator per block, then O = O·alpha + pv and
//   l = l·alpha + Σ P in fp32 (issue_pv_block, merge).
#pragma once

#include <cuda.h>  // CUtensorMap and the driver enums only: libcuda is reached through cudart
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/attention_api.h"
#include "kernels/attention_sm90.cuh"
#include "kernels/attention_sm90_device.cuh"
#include "kernels/params.h"

namespace sparge::kernels {
namespace sm90 {

// tile_counter (the persistent kernel only): int32 [2], zero at the launch; CTA c starts on tile c
// and then claims gridDim.x + atomicAdd(&tile_counter[0], 1) until the tiles run out. Each CTA's
// producer counts itself done in tile_counter[1] once its last claim has returned; the last one
// resets both to zero (every claim of the launch happened before it), so the next launch on the
// stream finds them zero without a memset.
template <int kD, Sm90Kernel kKernel>
__global__ void __launch_bounds__(kThreads, 1)
    attention_kernel(const __grid_constant__ CUtensorMap tm_q,
                     const __grid_constant__ CUtensorMap tm_k,
                     const __grid_constant__ CUtensorMap tm_v, const AttentionParams p,
                     int* tile_counter) {
#if SPARGE_SM90A_DEVICE
  constexpr int kStages = stages_of(kKernel);
  constexpr bool kPersistent = is_persistent(kKernel);
  using Plan = SmemPlan<kD, kStages>;

  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                             ~static_cast<uintptr_t>(1023));
  int8_t* s_q = reinterpret_cast<int8_t*>(smem + Plan::kQ);  // [kQSlots] Q tiles
  int8_t* s_k = reinterpret_cast<int8_t*>(smem + Plan::kK);
  uint8_t* s_v = smem + Plan::kV;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + Plan::kBars);
  uint64_t* q_full = bars;                                                  // [kQSlots]
  uint64_t* q_empty = bars + Plan::kQSlots;                                 // [kQSlots]
  uint64_t* k_full = bars + 2 * Plan::kQSlots;                              // [kStages]
  uint64_t* v_full = k_full + kStages;                                      // [kStages]
  uint64_t* empty = v_full + kStages;                                       // [kStages]
  int32_t* info_j = reinterpret_cast<int32_t*>(smem + Plan::kInfo);         // [kStages]
  float* info_ks = reinterpret_cast<float*>(smem + Plan::kInfo) + kStages;  // [kStages]
  int32_t* tile_of = info_j + 2 * kStages;  // [kQSlots]: tile id of each Q slot, -1 = no more

  const int tiles = p.batch * p.heads * p.num_q_blocks;
  const int first_tile =
      kPersistent ? static_cast<int>(blockIdx.x)
                  : (static_cast<int>(blockIdx.z) * p.heads + static_cast<int>(blockIdx.y)) *
                            p.num_q_blocks +
                        static_cast<int>(blockIdx.x);

  const int warpgroup = threadIdx.x / 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < Plan::kQSlots; ++s) {
      mbar_init(&q_full[s], 1);
      mbar_init(&q_empty[s], kConsumerWarpgroups * 4);  // lane 0 of every consumer warp
    }
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
      mbar_init(&empty[s], kConsumerWarpgroups * 4);
    }
    fence_barrier_init();
  }
  fill_ones_rows<Plan::kVTileBytes, Plan::kVBytes, kStages>(s_v, static_cast<int>(threadIdx.x),
                                                            kThreads);
  __syncthreads();

  // Ring positions (ring_slot / ring_phase): the g-th K/V block of this CTA, over all its tiles,
  // uses stage ring_slot<kStages>(g); its n-th tile uses Q slot ring_slot<kQSlots>(n).
  if (warpgroup == 0) {
    // ---------------------------------------------------------------- producer
    setmaxnreg_dec<24>();
    if (threadIdx.x == 0) {
      tma_prefetch_desc(&tm_q);
      tma_prefetch_desc(&tm_k);
      tma_prefetch_desc(&tm_v);
      uint32_t g = 0;  // K/V blocks loaded so far
      int t = first_tile;
      for (uint32_t n = 0;; ++n) {
        const int slot = ring_slot<Plan::kQSlots>(n);
        mbar_wait(&q_empty[slot], ring_phase<Plan::kQSlots>(n) ^ 1);  // fresh: passes at once
        if (t >= tiles) {
          tile_of[slot] = -1;  // published by the arrive's release
          mbar_arrive(&q_full[slot]);
          if constexpr (kPersistent) {
            if (atomicAdd(&tile_counter[1], 1) == static_cast<int>(gridDim.x) - 1) {
              tile_counter[0] = 0;
              tile_counter[1] = 0;
            }
          }
          break;
        }
        tile_of[slot] = t;
        const Tile w = make_tile(p, t);
        mbar_arrive_expect_tx(&q_full[slot], Plan::kQBytes);
        tma_load_2d(s_q + slot * Plan::kQBytes, &tm_q, &q_full[slot], 0,
                    static_cast<int32_t>(w.row_idx * kBlockQ));
        // Claimed now so that the atomic's latency hides behind this tile's K/V loads.
        const int t_next =
            kPersistent ? static_cast<int>(gridDim.x) + atomicAdd(tile_counter, 1) : tiles;
        const float* k_scale = p.k_scale + w.bhkv * p.num_k_blocks;
        auto block_of = [&](int it) { return w.lut_row ? w.lut_row[it] : it; };
        int j_next = w.num_iters > 0 ? block_of(0) : 0;
        float ks_next = w.num_iters > 0 ? k_scale[j_next] : 0.f;
        for (int it = 0; it < w.num_iters; ++it, ++g) {
          const int stage = ring_slot<kStages>(g);
          const uint32_t phase = ring_phase<kStages>(g);
          const int j = j_next;
          const float ks = ks_next;
          if (it + 1 < w.num_iters) {  // next block's LUT entry and scale load during the wait
            j_next = block_of(it + 1);
            ks_next = k_scale[j_next];
          }
          mbar_wait(&empty[stage], phase ^ 1);  // a fresh barrier passes parity 1 at once
          info_j[stage] = j;  // published by the release semantics of the arrive below
          info_ks[stage] = ks;
          load_kv_block<kD>(s_k + stage * Plan::kKBytes, s_v + stage * Plan::kVBytes,
                            &k_full[stage], &v_full[stage], &tm_k, &tm_v, w.bhkv, p.num_k_blocks,
                            j);
        }
        t = t_next;
      }
    }
  } else {
    // ------------------------------------------------------------------ consumers
    setmaxnreg_inc<240>();
    const int cw = warpgroup - 1;  // consumer warpgroup: rows [64 cw, 64 cw + 64) of the block
    Lanes ln;
    ln.warp = (threadIdx.x / 32) % 4;
    ln.lane = threadIdx.x % 32;
    ln.t = ln.lane % 4;

    const uint64_t dk0 = qk_desc<kD>(smem_u32(s_k)), dv0 = v_desc(smem_u32(s_v));
    auto k_desc = [&](int stage) { return desc_advance(dk0, stage * Plan::kKBytes); };
    auto v_desc_of = [&](int stage) { return desc_advance(dv0, stage * Plan::kVBytes); };
    // Lane 0 arrives for its warp. It is also the only lane that read the stage's block facts
    // from shared memory (block_info), so the arrive's release covers every read the producer
    // must not overtake when it refills the stage.
    auto release = [&](int stage) {
      if (ln.lane == 0) mbar_arrive(&empty[stage]);
    };

    // State of the tile in hand: its facts (cur), this warpgroup's output accumulator, the
    // online-softmax statistics of its rows, and P of the block whose P·V is issued next.
    TileCtx cur{};
    float acc[kD / 2];      // O in fp32, all blocks merged so far
    float pv[pv_regs(kD)];  // P·V and Σ P of one block, the wgmma accumulator (issue_pv_block)
    float m0, m1, l0, l1;
    int pv_count;
    uint32_t a[4][4];  // P in e4m3, the A operand of the 4 k-steps (32 tokens each)
    // Ring positions (see the producer): n = tiles taken from the Q ring, g = ring position of
    // the first K/V block of the tile in hand.
    uint32_t n = 0, g = 0;
    auto stage_of = [&](int it) { return ring_slot<kStages>(g + it); };
    auto phase_of = [&](int it) { return ring_phase<kStages>(g + it); };
    auto reset = [&] {
#pragma unroll
      for (int i = 0; i < kD / 2; ++i) acc[i] = 0.f;
      m0 = m1 = kNegInf;
      l0 = l1 = 0.f;
      pv_count = 0;
    };

    // Block facts of a K block of tile c, valid once its k_full has completed (the producer
    // wrote them before arming it; the try_wait acquires them).
    struct BlockInfo {
      float blk0, blk1;  // logits scale of row0 / row1 in log2 units: q_scale[row] · k_scale[j]
                         // · sm_scale · log2(e)
      int j;
      bool mask;
    };
    // Lane 0 reads and broadcasts: an mbarrier arrive releases only the arriving thread's own
    // accesses, and only lane 0 arrives on `empty`, so a read by another lane could race the
    // refill (all-lane arrives instead cost 6-8 % at D = 128; NOTES runs 13-14).
    auto block_info = [&](int stage, const TileCtx& c) {
      BlockInfo bi;
      int j = 0;
      float ks = 0.f;
      if (ln.lane == 0) {
        j = ld_shared_s32(smem_u32(info_j + stage));
        ks = ld_shared_f32(smem_u32(info_ks + stage));
      }
      bi.j = __shfl_sync(0xffffffffu, j, 0);
      ks = __shfl_sync(0xffffffffu, ks, 0);
      bi.blk0 = (c.q_scale0 * ks) * p.sm_scale_log2;
      bi.blk1 = (c.q_scale1 * ks) * p.sm_scale_log2;
      bi.mask = bi.j >= first_masked_block(p, c.w);
      return bi;
    };

    // Output of tile c from acc and l (ln holds c's rows); stage2_kept gets this warp's count of
    // blocks stage 2 did not skip (P·V is issued for the others too, with P = 0, except in serial).
    auto finish = [&](const TileCtx& c) {
      if (p.stage2_kept && ln.lane == 0) {
        p.stage2_kept[c.w.row_idx * kGroupsPerBlock + cw * 4 + ln.warp] = pv_count;
      }
      store_any<kD>(acc, l0, l1, ln, p, c.w);
    };

    // The next tile: waits for its Q and fills c; false once the producer says there are no
    // more. A tile may have no K block (causal rows before the first key): no phase, output 0.
    auto take = [&](TileCtx& c) {
      const int slot = ring_slot<Plan::kQSlots>(n);
      mbar_wait(&q_full[slot], ring_phase<Plan::kQSlots>(n));
      ++n;
      int t = 0;
      if (ln.lane == 0) t = tile_of[slot];  // lane 0: its q_empty arrive releases the read
      t = __shfl_sync(0xffffffffu, t, 0);
      if (t < 0) return false;
      c.w = make_tile(p, t);
      c.slot = slot;
      c.lambda = p.lambda_log2 ? p.lambda_log2[c.w.h] : kNegInf;
      q_row_scales(p, c.w, cw, ln, c.q_scale0, c.q_scale1);
      c.dq = qk_desc<kD>(smem_u32(s_q + slot * Plan::kQBytes) + cw * kRowsPerWarpgroup * kD);
      return true;
    };
    // Q of the tile in hand is no longer read once the QKᵀ of its last block has retired.
    auto hand_back_q = [&] {
      if (ln.lane == 0) mbar_arrive(&q_empty[cur.slot]);
    };

    if constexpr (kKernel == Sm90Kernel::kSerial) {
      while (take(cur)) {
        reset();
        set_rows(ln, cur.w, cw, p);
        const bool stage2 = cur.lambda != kNegInf;  // uniform: the warpgroup vote is needed
        for (int it = 0; it < cur.w.num_iters; ++it) {
          const int stage = stage_of(it);
          const uint32_t phase = phase_of(it);
          int32_t s[64];
          mbar_wait(&k_full[stage], phase);
          const BlockInfo bi = block_info(stage, cur);
          wgmma_fence();
          issue_qk<kD>(s, cur.dq, k_desc(stage));
          wgmma_commit();
          wgmma_wait<0>();
          fence_operands(s);

          float x[64], ml0, ml1;
          if (bi.mask) {
            block_max_int<true>(s, bi.j, ln, p, bi.blk0, bi.blk1, ml0, ml1);
          } else {
            block_max_int<false>(s, bi.j, ln, p, bi.blk0, bi.blk1, ml0, ml1);
          }
          const float mn0 = fmaxf(m0, ml0), mn1 = fmaxf(m1, ml1);
          const bool skip = stage2 && stage2_skip(ml0, ml1, mn0, mn1, ln, cur.lambda);
          float alpha0 = 1.f, alpha1 = 1.f;  // a skipping warp leaves acc as it is
          if (!skip) {
            alpha0 = rescale_factor(m0, mn0);
            alpha1 = rescale_factor(m1, mn1);
            if (bi.mask) {
              block_exp_int<true, kPolyEverySerial>(s, bi.blk0, bi.blk1, mn0, mn1, x);
            } else {
              block_exp_int<false, kPolyEverySerial>(s, bi.blk0, bi.blk1, mn0, mn1, x);
            }
            pack_p(x, a);
            ++pv_count;
          } else {
            clear_p(a);  // other warps of the warpgroup may still run the product
          }
          m0 = mn0;
          m1 = mn1;

          // Skip the product only when every warp of the warpgroup skips it.
          const bool any = stage2 ? named_barrier_or(1 + cw, 128, !skip) : true;
          mbar_wait(&v_full[stage], phase);  // always: a stage is refilled only after it landed
          if (any) {
            wgmma_fence();
            issue_pv_block<kD>(pv, a, v_desc_of(stage));
            wgmma_commit();
            wgmma_wait<0>();
            fence_operands(pv);
            merge<kD>(acc, l0, l1, pv, alpha0, alpha1);  // pv = 0 for a skipping warp (P = 0)
          }
          release(stage);
        }
        hand_back_q();
        finish(cur);
        g += cur.w.num_iters;
      }
    } else {
      static_assert(kKernel == Sm90Kernel::kGrid || kKernel == Sm90Kernel::kPingPong);
      // grid (pingpong: the same, persistent): serial's softmax + FA3's inter-warpgroup ping-pong.
      // Each GEMM phase issues QKᵀ(it+1) and P·V(it) back to back; the two consumer warpgroups take
      // turns issuing (named barriers kSchedBarrier + cw), so one warpgroup's GEMMs run on the
      // tensor cores while the other is in its softmax. Inside a warpgroup, softmax(it+1)
      // overlaps P·V(it) (wait_group 1), and P(it+1) is written over S in place (no second
      // register set).
      //
      // Handshake: before issuing, a warpgroup waits on its own barrier (256 threads: its 128
      // bar.sync + the peer's 128 bar.arrive); right after issuing it arrives on the peer's.
      // Both walk the same tiles and LUT rows, so both have the same number of phases: per
      // tile, QKᵀ(0) alone, then one per block. Consumer 1 pre-arms consumer 0's barrier at the
      // start of a tile and skips its arrival in the tile's last phase, which leaves both
      // barriers balanced at exit.
      //
      // Stage 2: a skipping warp feeds P = 0 (no exp2, no pack) but P·V is always issued, even
      // when all 4 warps skip. Any branch around a wgmma issued while another wgmma is in
      // flight makes ptxas serialise every wgmma of the kernel (C7520 "WG.AR in divergent
      // path"; tried: if, guard predicate, bra.uni inside the asm), and a serialised pipeline
      // costs far more than the 256 tensor-core clocks of a zero P·V, which overlaps the
      // softmax anyway. stage2_kept still counts the warps' decisions.
      const uint32_t bar_own = kSchedBarrier + cw, bar_peer = kSchedBarrier + (cw ^ 1);
      constexpr uint32_t kPair = 2 * 128;
      int32_t s[64];
      float alpha0 = 1.f, alpha1 = 1.f;  // acc's rescale for the block whose P is in `a`
      // Softmax of one block of the tile in hand, in place (p's fp32 bits replace S); returns
      // this warp's stage-2 skip and sets the factors acc and l must be rescaled by when that
      // block's P·V (and row sums) are merged into them (1 on a skip).
      auto softmax_inplace = [&](const BlockInfo& bi) {
        float ml0, ml1;
        if (bi.mask) {
          block_max_int<true>(s, bi.j, ln, p, bi.blk0, bi.blk1, ml0, ml1);
        } else {
          block_max_int<false>(s, bi.j, ln, p, bi.blk0, bi.blk1, ml0, ml1);
        }
        const float mn0 = fmaxf(m0, ml0), mn1 = fmaxf(m1, ml1);
        const bool skip = cur.lambda != kNegInf && stage2_skip(ml0, ml1, mn0, mn1, ln, cur.lambda);
        alpha0 = 1.f;
        alpha1 = 1.f;
        if (!skip) {
          alpha0 = rescale_factor(m0, mn0);
          alpha1 = rescale_factor(m1, mn1);
          if (bi.mask) {
            block_exp_int<true, poly_every(kD)>(s, bi.blk0, bi.blk1, mn0, mn1, s);
          } else {
            block_exp_int<false, poly_every(kD)>(s, bi.blk0, bi.blk1, mn0, mn1, s);
          }
        }
        m0 = mn0;
        m1 = mn1;
        return skip;
      };
      auto set_a = [&](bool skip) {
        if (!skip) {
          pack_p(s, a);
          ++pv_count;
        } else {
          clear_p(a);
        }
      };
      // The first phase of a tile: QKᵀ(0) alone.
      auto fill = [&] {
        if (cw == 1) named_barrier_arrive(kSchedBarrier, kPair);  // consumer 0 goes first
        mbar_wait(&k_full[stage_of(0)], phase_of(0));
        const BlockInfo b0 = block_info(stage_of(0), cur);
        named_barrier_sync(bar_own, kPair);
        wgmma_fence();
        issue_qk<kD>(s, cur.dq, k_desc(stage_of(0)));
        wgmma_commit();
        named_barrier_arrive(bar_peer, kPair);  // a tile's first phase is never its last
        wgmma_wait<0>();
        fence_operands(s);
        set_a(softmax_inplace(b0));  // acc = 0, l = 0: the rescale is a no-op
      };
      // One phase per block `it` of the tile: P·V(it), and with kLast = false the QKᵀ of block
      // it + 1, whose softmax overlaps P·V(it). The last phase issues P·V alone, and there
      // consumer 1 does not arrive.
      auto body = [&](auto last_tag, int it) {
        constexpr bool kLast = decltype(last_tag)::value;
        const int stage = stage_of(it);
        const uint32_t phase = phase_of(it);
        const int next_stage = stage_of(it + 1);
        // Block it's rescale: softmax(it + 1) below overwrites alpha before P·V(it) is merged.
        const float merge0 = alpha0, merge1 = alpha1;
        BlockInfo bi{};
        if constexpr (!kLast) {
          mbar_wait(&k_full[next_stage], phase_of(it + 1));
          bi = block_info(next_stage, cur);
        }
        mbar_wait(&v_full[stage], phase);  // always: a stage is refilled only after it landed
        named_barrier_sync(bar_own, kPair);
        wgmma_fence();
        if constexpr (!kLast) {
          issue_qk<kD>(s, cur.dq, k_desc(next_stage));
          wgmma_commit();
        }
        issue_pv_block<kD>(pv, a, v_desc_of(stage));
        wgmma_commit();
        if (!kLast || cw == 0) named_barrier_arrive(bar_peer, kPair);
        bool skip_next = false;
        if constexpr (!kLast) {
          wgmma_wait<1>();  // QKᵀ(it+1) retired; P·V(it) may still run
          fence_operands(s);
          skip_next = softmax_inplace(bi);
        }
        wgmma_wait<0>();  // P·V(it) retired: pv and a are ours again, stage `it` is free
        fence_operands(pv);
        release(stage);
        // After the peer was released and off the softmax chain: the FMAs overlap the peer's
        // GEMMs, which this warpgroup waits for at its next phase anyway.
        merge<kD>(acc, l0, l1, pv, merge0, merge1);
        if constexpr (!kLast) set_a(skip_next);
      };

      while (take(cur)) {
        reset();
        set_rows(ln, cur.w, cw, p);
        if (cur.w.num_iters > 0) {
          alpha0 = alpha1 = 1.f;
          fill();
#pragma unroll 1
          for (int it = 0; it + 1 < cur.w.num_iters; ++it) body(std::false_type{}, it);
          // The QKᵀ of the last block retired in the phase before (or in the fill), so Q is
          // free: handed back before take() waits for the next Q, which may need this slot.
          hand_back_q();
          body(std::true_type{}, cur.w.num_iters - 1);
        } else {
          hand_back_q();  // no K block: no phase, the output is 0 (acc = 0, l = 0)
        }
        finish(cur);
        g += cur.w.num_iters;
      }
    }
  }     // consumers
#endif  // SPARGE_SM90A_DEVICE
}

}  // namespace sm90
}  // namespace sparge::kernels
