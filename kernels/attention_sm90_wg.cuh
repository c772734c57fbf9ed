// Hopper attention, one warpgroup per CTA ("warpgroup", the default at D = 64). A CTA owns 64
// query rows, one half of a 128-row q block, so it reads that block's LUT row; it issues its own
// TMA loads and runs each block serially: QKᵀ, wait, softmax, P·V (with P's row sums), wait,
// merge. Several CTAs share an SM (four at D = 64; two at D = 128, see wg_shape), so the overlap
// of one CTA's GEMMs with another's softmax comes from the warp schedulers rather than a
// ping-pong protocol, and each SM sub-partition has more math warps than the two of pingpong. Per
// row it runs the code of pingpong in the same order, so its outputs are bit-identical to
// pingpong's (tested).
#pragma once

#include <type_traits>

#include "kernels/attention_sm90.cuh"
#include "kernels/attention_sm90_device.cuh"
#include "kernels/params.h"

namespace sparge::kernels::sm90 {

inline constexpr int kWgThreads = 128;
inline constexpr int kWgRows = 64;
// Shape of the one-warpgroup kernel: K/V ring stages and CTAs per SM (the register cap follows
// from it: 65536 / (128 x ctas)). D = 64: four CTAs per SM at 128 registers (a few spills around
// the P·V GEMM) beat three at 168 by 3-5 %, two stages being what four CTAs' shared memory holds
// (kernels/NOTES.md run 22). D = 128: the register cap is set for three CTAs (168), but since
// each stage also holds the ones rows (run 26) a CTA needs ~76 KB of shared memory, so two fit;
// warpgroup is not the default there (pingpong is).
struct WgShape {
  int stages, ctas;
};
constexpr WgShape wg_shape(int d) { return d == 64 ? WgShape{2, 4} : WgShape{2, 3}; }

template <int kD>
struct WgPlan {
  static constexpr int kStages = wg_shape(kD).stages;
  static constexpr int kQBytes = kWgRows * kD;
  static constexpr int kKBytes = kBlockK * kD;
  static constexpr int kVTileBytes = kD * kBlockK;            // by TMA
  static constexpr int kVBytes = (kD + kOnesRows) * kBlockK;  // a stage: the tile, the ones rows
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kQBytes;
  static constexpr int kV = kK + kStages * kKBytes;
  static constexpr int kBars = kV + kStages * kVBytes;  // q_full, k_full[S], v_full[S]
  // Then the tile's K scales (fp32) and K block indices (int16), num_iters entries each, sized by
  // the launch for num_k_blocks: read from global memory once per CTA instead of twice per block.
  // 6 bytes per K block keep four D = 64 CTAs per SM up to ~2890 K blocks (370k tokens).
  static constexpr int kBlocks = kBars + (1 + 2 * kStages) * 8;
  static constexpr int kMaxBlocks = 32767;
  static constexpr int alloc(int num_k_blocks) { return kBlocks + 6 * num_k_blocks + 1024; }
  static_assert(kQBytes % 1024 == 0 && kKBytes % 1024 == 0 && kVBytes % 1024 == 0);
};

template <int kD>
__global__ void __launch_bounds__(kWgThreads, wg_shape(kD).ctas)
    attention_kernel_wg(const __grid_constant__ CUtensorMap tm_q,
                        const __grid_constant__ CUtensorMap tm_k,
                        const __grid_constant__ CUtensorMap tm_v, const AttentionParams p) {
#if SPARGE_SM90A_DEVICE
  using Plan = WgPlan<kD>;
  constexpr int kPoly = poly_every(kD);
  constexpr int kStages = Plan::kStages;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                             ~static_cast<uintptr_t>(1023));
  int8_t* s_q = reinterpret_cast<int8_t*>(smem + Plan::kQ);
  int8_t* s_k = reinterpret_cast<int8_t*>(smem + Plan::kK);
  uint8_t* s_v = smem + Plan::kV;
  uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + Plan::kBars);
  uint64_t* k_full = q_full + 1;
  uint64_t* v_full = k_full + kStages;
  float* s_kscale = reinterpret_cast<float*>(smem + Plan::kBlocks);          // [num_iters]
  int16_t* s_block = reinterpret_cast<int16_t*>(s_kscale + p.num_k_blocks);  // [num_iters]

  // Tile (b, h, q block) as grid walks them; the low bit of blockIdx.x picks the half.
  const int half = static_cast<int>(blockIdx.x) & 1;
  const int tile =
      (static_cast<int>(blockIdx.z) * p.heads + static_cast<int>(blockIdx.y)) * p.num_q_blocks +
      static_cast<int>(blockIdx.x >> 1);
  const Tile w = make_tile(p, tile);

  auto load_kv = [&](int it) {  // thread 0: block it into its stage
    const int stage = it % kStages;
    load_kv_block<kD>(s_k + stage * Plan::kKBytes, s_v + stage * Plan::kVBytes, &k_full[stage],
                      &v_full[stage], &tm_k, &tm_v, w.bhkv, p.num_k_blocks, s_block[it]);
  };
  if (threadIdx.x == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&k_full[s], 1);
      mbar_init(&v_full[s], 1);
    }
    fence_barrier_init();
    tma_prefetch_desc(&tm_k);
    tma_prefetch_desc(&tm_v);
    mbar_arrive_expect_tx(q_full, Plan::kQBytes);
    tma_load_2d(s_q, &tm_q, q_full, 0, static_cast<int32_t>(w.row_idx * kBlockQ + half * kWgRows));
    // The first stages straight from the LUT, so these loads overlap the copy below (short
    // causal tiles feel the CTA prologue most).
    for (int it = 0; it < kStages && it < w.num_iters; ++it) {
      load_kv_block<kD>(s_k + it * Plan::kKBytes, s_v + it * Plan::kVBytes, &k_full[it],
                        &v_full[it], &tm_k, &tm_v, w.bhkv, p.num_k_blocks,
                        w.lut_row ? w.lut_row[it] : it);
    }
  }
  {
    const float* k_scale = p.k_scale + w.bhkv * p.num_k_blocks;
    for (int i = static_cast<int>(threadIdx.x); i < w.num_iters; i += kWgThreads) {
      const int j = w.lut_row ? w.lut_row[i] : i;
      s_block[i] = static_cast<int16_t>(j);
      s_kscale[i] = k_scale[j];
    }
  }
  fill_ones_rows<Plan::kVTileBytes, Plan::kVBytes, kStages>(s_v, static_cast<int>(threadIdx.x),
                                                            kWgThreads);
  __syncthreads();

  Lanes ln;
  ln.warp = threadIdx.x / 32;
  ln.lane = threadIdx.x % 32;
  ln.t = ln.lane % 4;
  set_rows(ln, w, half, p);
  const uint64_t dq = qk_desc<kD>(smem_u32(s_q));
  const uint64_t dk0 = qk_desc<kD>(smem_u32(s_k)), dv0 = v_desc(smem_u32(s_v));
  const int mask_from = first_masked_block(p, w);
  const float lambda = p.lambda_log2 ? p.lambda_log2[w.h] : kNegInf;
  const bool stage2 = lambda != kNegInf;
  const uint32_t s_block_u32 = smem_u32(s_block), s_kscale_u32 = smem_u32(s_kscale);
  float q_scale0, q_scale1;
  q_row_scales(p, w, half, ln, q_scale0, q_scale1);

  float acc[kD / 2];
  float pv[pv_regs(kD)];
#pragma unroll
  for (int i = 0; i < kD / 2; ++i) acc[i] = 0.f;
  float m0 = kNegInf, m1 = kNegInf, l0 = 0.f, l1 = 0.f;
  int skipped = 0;  // blocks this warp's stage 2 skipped (counted off the common path)
  uint32_t a[4][4];
  int32_t s[64];
  mbar_wait(q_full, 0);

  // One block on stage kStage, a compile-time constant: the loop below runs the stages in turn,
  // so each stage's wgmma descriptors and barrier addresses are loop invariants instead of being
  // rebuilt from it % kStages before every wgmma (uniform-register moves with fixed latency).
  static_assert(kStages == 2, "the block loop is unrolled over the two stages");
  auto block = [&](int it, auto stage_tag) {
    constexpr int stage = decltype(stage_tag)::value;
    const uint32_t phase = (it / kStages) & 1;
    const int j = ld_shared_s16(s_block_u32 + 2 * it);
    const float ks = ld_shared_f32(s_kscale_u32 + 4 * it);
    const float blk0 = (q_scale0 * ks) * p.sm_scale_log2, blk1 = (q_scale1 * ks) * p.sm_scale_log2;
    const bool mask = j >= mask_from;
    mbar_wait(&k_full[stage], phase);
    wgmma_fence();
    issue_qk<kD>(s, dq, desc_advance(dk0, stage * Plan::kKBytes));
    wgmma_commit();
    wgmma_wait<0>();
    fence_operands(s);

    float ml0, ml1;
    if (mask) {
      block_max_int<true>(s, j, ln, p, blk0, blk1, ml0, ml1);
    } else {
      block_max_int<false>(s, j, ln, p, blk0, blk1, ml0, ml1);
    }
    const float mn0 = fmaxf(m0, ml0), mn1 = fmaxf(m1, ml1);
    const bool skip = stage2 && stage2_skip(ml0, ml1, mn0, mn1, ln, lambda);
    float alpha0 = 1.f, alpha1 = 1.f;
    if (!skip) {
      alpha0 = rescale_factor(m0, mn0);
      alpha1 = rescale_factor(m1, mn1);
      if (mask) {
        block_exp_int<true, kPoly>(s, blk0, blk1, mn0, mn1, s);
      } else {
        block_exp_int<false, kPoly>(s, blk0, blk1, mn0, mn1, s);
      }
      pack_p(s, a);
    } else {
      ++skipped;
      clear_p(a);
    }
    m0 = mn0;
    m1 = mn1;
    const bool any = stage2 ? named_barrier_or(1, kWgThreads, !skip) : true;
    mbar_wait(&v_full[stage], phase);
    if (any) {
      wgmma_fence();
      issue_pv_block<kD>(pv, a, desc_advance(dv0, stage * Plan::kVBytes));
      wgmma_commit();
      wgmma_wait<0>();
      fence_operands(pv);
      merge<kD>(acc, l0, l1, pv, alpha0, alpha1);
    }
    // Every warp's GEMMs on this stage have retired: thread 0 refills it.
    if (it + kStages < w.num_iters) {
      named_barrier_sync(2, kWgThreads);
      if (threadIdx.x == 0) load_kv(it + kStages);
    }
  };
#pragma unroll 1
  for (int it = 0; it < w.num_iters; it += kStages) {
    block(it, std::integral_constant<int, 0>{});
    if (it + 1 < w.num_iters) block(it + 1, std::integral_constant<int, 1>{});
  }
  if (p.stage2_kept && ln.lane == 0) {
    p.stage2_kept[w.row_idx * kGroupsPerBlock + half * 4 + ln.warp] = w.num_iters - skipped;
  }
  store_any<kD>(acc, l0, l1, ln, p, w);
#endif  // SPARGE_SM90A_DEVICE
}

}  // namespace sparge::kernels::sm90
