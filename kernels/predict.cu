// Stage-1 block-mask prediction on the GPU (docs/design.md, Stage 1), from the block statistics
// of quant.cu: compressed map -> softmax -> TopCdf / top-k -> forced rows and columns, causal,
// sink -> LUT. The numerics contract is the CPU reference's (src/reference/reference.hpp);
// results differ only where two scores tie within fp32 rounding (dot-product and exp summation
// order).
//
// One CTA = 8 warps = 8*R query-block rows of one (b, h). Phase A: the CTA streams the kv head's
// pooled K in chunks of 32 blocks through shared memory and each warp computes its R rows x 32
// blocks of the map (R dot products per lane, float4 shared loads). Phase B, per row and warp:
// softmax over candidates, a bitonic sort of (p, index) keys in registers (descending p, ties
// by lower index), a sequential fp32 cumsum (the reference's order), the final flags, and an
// ordered compaction (ballot + popc) into the LUT. The LUT never leaves the GPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/api.h"
#include "kernels/common/device_utils.cuh"

namespace sparge::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = 8;
constexpr int kChunk = 32;  // K blocks per shared-memory chunk (one per lane)

__host__ __device__ inline int next_pow2(int n) {
  int p = 32;
  while (p < n) p <<= 1;
  return p;
}

// The sparsity cap's scratch (PredictCap::scratch), per (b, h) = bh of B*H, rows nq, K blocks nk:
// cum[bh][nq][nk] fp32 (each row's cumulative p̂ in its candidate order), order [bh][nq][nk]
// int16 (that order), keep[bh][nq] (the prefix TopCdf / top-k kept; -1: a row whose Q block is
// not similar, which keeps everything already), ncand[bh][nq], counts[bh][2] (kept and causally
// valid blocks of the mask), kstar[bh] (the largest selected event key; 0 = the cap does not
// bind). Each region starts on a 16-byte boundary; cap_layout is the one place that says where.
struct CapScratch {
  float* cum;
  int16_t* order;
  int32_t* keep;
  int32_t* ncand;
  unsigned int* counts;
  unsigned long long* kstar;
};
__host__ __device__ inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }
struct CapLayout {
  size_t cum, order, keep, ncand, counts, kstar, bytes;  // byte offsets, then the total
};
__host__ __device__ inline CapLayout cap_layout(const PredictParams& p) {
  const size_t bh = static_cast<size_t>(p.batch) * p.heads,
               cells = bh * p.num_q_blocks * p.num_k_blocks;
  const size_t rows = bh * p.num_q_blocks;
  CapLayout l;
  l.cum = 0;
  l.order = l.cum + align16(cells * sizeof(float));
  l.keep = l.order + align16(cells * sizeof(int16_t));
  l.ncand = l.keep + align16(rows * sizeof(int32_t));
  l.counts = l.ncand + align16(rows * sizeof(int32_t));
  l.kstar = l.counts + align16(bh * 2 * sizeof(unsigned int));
  l.bytes = l.kstar + align16(bh * sizeof(unsigned long long));
  return l;
}
__host__ __device__ inline CapScratch cap_scratch(const PredictParams& p, void* scratch) {
  const CapLayout l = cap_layout(p);
  unsigned char* base = static_cast<unsigned char*>(scratch);
  return {reinterpret_cast<float*>(base + l.cum),
          reinterpret_cast<int16_t*>(base + l.order),
          reinterpret_cast<int32_t*>(base + l.keep),
          reinterpret_cast<int32_t*>(base + l.ncand),
          reinterpret_cast<unsigned int*>(base + l.counts),
          reinterpret_cast<unsigned long long*>(base + l.kstar)};
}

// Bytes of the float part of the prediction kernel's shared memory: pooled Q rows, scores, and
// the larger of the pooled-K chunk (phase A) and the sort keys (phase B), which share a region.
__host__ __device__ inline size_t shared_region(int d, int r, int nk) {
  const size_t rows = static_cast<size_t>(kWarps) * r;
  const size_t chunk = sizeof(float) * kChunk * (d + 4);
  const size_t keys = sizeof(uint64_t) * kWarps * next_pow2(nk);
  return sizeof(float) * rows * (d + nk) + (chunk > keys ? chunk : keys);
}

// Index of the last causally valid K block of query block i (nk - 1 when not causal).
__device__ __forceinline__ int last_valid_block(const PredictParams& p, int i) {
  if (!p.causal) return p.num_k_blocks - 1;
  const int last_q = min((i + 1) * p.block_q, p.seq_q) - 1;
  const int offset = p.seq_k - p.seq_q;
  return min(p.num_k_blocks - 1, (last_q + offset) / p.block_k);
}

// flags[nk] holds the row's selection before forcing (by this warp). Applies forced columns
// (k_ok[j] == 0), a forced row, causal validity and the sink; an empty row keeps its last valid
// block; then writes the LUT row, its length and the optional mask row.
__device__ __forceinline__ void finish_row(const PredictParams& p, int b, int h, int i,
                                           uint8_t* flags, const uint8_t* k_ok, bool force_row) {
  const int lane = threadIdx.x % 32;
  const int nk = p.num_k_blocks;
  const int offset = p.seq_k - p.seq_q;
  int count = 0;
  for (int j = lane; j < nk; j += 32) {
    bool on = flags[j] || force_row || (k_ok != nullptr && !k_ok[j]);
    if (p.causal) on = on && dev::block_causally_valid(i, j, p.block_q, p.block_k, p.seq_q, offset);
    if (p.sink && j == 0) on = true;
    flags[j] = on;
    count += on;
  }
  count = dev::warp_sum_int(count);
  __syncwarp();
  if (count == 0 && lane == 0) flags[last_valid_block(p, i)] = 1;
  __syncwarp();

  const int64_t row = (static_cast<int64_t>(b) * p.heads + h) * p.num_q_blocks + i;
  int32_t* lut = p.lut + row * nk;
  int pos = 0;
  for (int base = 0; base < nk; base += 32) {
    const int j = base + lane;
    const bool on = j < nk && flags[j];
    const unsigned bal = __ballot_sync(0xffffffffu, on);
    if (on) lut[pos + __popc(bal & ((1u << lane) - 1u))] = j;
    if (p.mask != nullptr && j < nk) p.mask[row * nk + j] = on;
    pos += __popc(bal);
  }
  for (int j = pos + lane; j < nk; j += 32) lut[j] = 0;
  if (lane == 0) p.lut_len[row] = pos;
}

// Sorts one row's 32*E keys descending, in place in shared memory. Lane L holds keys L*E ..
// L*E+E-1 in registers, so the bitonic network's stages with a partner less than E apart are
// register swaps and the others a shuffle, and shared memory is read and written once instead
// of once per stage (the per-stage shared-memory sort made the prediction L1/shared-bound).
// The keys are distinct apart from 0 (not a candidate), so the order is the one any correct sort
// gives.
template <int E>
__device__ __forceinline__ void sort_keys_descending(uint64_t* keys, int lane) {
  constexpr int kN = 32 * E;
  uint64_t v[E];
#pragma unroll
  for (int e = 0; e < E; ++e) v[e] = keys[lane * E + e];
#pragma unroll
  for (int k = 2; k <= kN; k <<= 1) {
#pragma unroll
    for (int s = k >> 1; s > 0; s >>= 1) {
      if (s < E) {
#pragma unroll
        for (int e = 0; e < E; ++e) {
          if ((e & s) != 0) continue;
          const bool descending = ((lane * E + e) & k) == 0;
          const uint64_t a = v[e], c = v[e | s];
          if (descending ? a < c : a > c) {
            v[e] = c;
            v[e | s] = a;
          }
        }
      } else {
        // Partner lane L ^ (s / E) holds element t ^ s in the same register; the lower element
        // of a pair keeps the larger key in a descending run.
        const bool lower = (lane & (s / E)) == 0;
        const bool descending = ((lane * E) & k) == 0;
        const bool keep_max = lower == descending;
#pragma unroll
        for (int e = 0; e < E; ++e) {
          const uint64_t o = __shfl_xor_sync(0xffffffffu, v[e], s / E);
          v[e] = keep_max ? (v[e] > o ? v[e] : o) : (v[e] < o ? v[e] : o);
        }
      }
    }
  }
#pragma unroll
  for (int e = 0; e < E; ++e) keys[lane * E + e] = v[e];
  __syncwarp();
}

// kCap: the sparsity cap's bookkeeping is compiled in (PredictCap::sparsity_cap set), so the
// kernel without a cap keeps its registers. Four CTAs per SM: left alone, ptxas gives the R = 2
// kernels 80 registers for the register sort, three CTAs per SM, and the 512 CTAs of
// 1,32,32768,128 then take 1.3 waves instead of one.
template <int D, int R, bool kCap>
__global__ void __launch_bounds__(kThreads, 4) predict_kernel(PredictParams p, PredictCap cap) {
  constexpr int kRows = kWarps * R;
  const int b = blockIdx.z, h = blockIdx.y;
  const int row0 = blockIdx.x * kRows;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int nk = p.num_k_blocks, nkp = next_pow2(nk);
  const int hkv = h / (p.heads / p.kv_heads);
  const int offset = p.seq_k - p.seq_q;
  const float theta = p.theta[h];

  // Phase A's pooled-K chunk and phase B's sort keys share one region (a barrier separates the
  // phases): the smaller footprint fits one wave of CTAs at N = 32K.
  extern __shared__ __align__(16) unsigned char smem[];
  float* s_q = reinterpret_cast<float*>(smem);                                   // [kRows][D]
  float* s_score = s_q + kRows * D;                                              // [kRows][nk]
  float* s_k = s_score + kRows * nk;                                             // [kChunk][D + 4]
  uint64_t* s_sort = reinterpret_cast<uint64_t*>(s_k);                           // [kWarps][nkp]
  uint8_t* s_flag = reinterpret_cast<uint8_t*>(smem) + shared_region(D, R, nk);  // [kWarps][nk]
  uint8_t* s_kok = s_flag + kWarps * nk;                                         // [nk]

  const float* qp = p.q_pooled + ((static_cast<int64_t>(b) * p.heads + h) * p.num_q_blocks) * D;
  const float* kp = p.k_pooled + ((static_cast<int64_t>(b) * p.kv_heads + hkv) * nk) * D;
  const float* ks = p.k_sim + (static_cast<int64_t>(b) * p.kv_heads + hkv) * nk;
  for (int v = threadIdx.x; v < kRows * D / 4; v += kThreads) {
    const int r = v / (D / 4), c = (v % (D / 4)) * 4;
    const float4 x = row0 + r < p.num_q_blocks
                         ? *reinterpret_cast<const float4*>(qp + (row0 + r) * D + c)
                         : make_float4(0.f, 0.f, 0.f, 0.f);
    *reinterpret_cast<float4*>(s_q + r * D + c) = x;
  }
  for (int j = threadIdx.x; j < nk; j += kThreads) s_kok[j] = ks[j] > theta;

  // ---- phase A: the compressed map, Ŝ = (pooled_q . pooled_k') * scale -------------------------
  for (int c0 = 0; c0 < nk; c0 += kChunk) {
    __syncthreads();  // previous chunk fully consumed (and s_q / s_kok written, first time)
    for (int v = threadIdx.x; v < kChunk * D / 4; v += kThreads) {
      const int r = v / (D / 4), c = (v % (D / 4)) * 4;
      const float4 x = c0 + r < nk ? *reinterpret_cast<const float4*>(kp + (c0 + r) * D + c)
                                   : make_float4(0.f, 0.f, 0.f, 0.f);
      *reinterpret_cast<float4*>(s_k + r * (D + 4) + c) = x;
    }
    __syncthreads();
    float acc[R] = {};
#pragma unroll 8
    for (int d = 0; d < D; d += 4) {
      const float4 kv = *reinterpret_cast<const float4*>(s_k + lane * (D + 4) + d);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float4 qv = *reinterpret_cast<const float4*>(s_q + (warp * R + r) * D + d);
        acc[r] = fmaf(qv.x, kv.x, acc[r]);
        acc[r] = fmaf(qv.y, kv.y, acc[r]);
        acc[r] = fmaf(qv.z, kv.z, acc[r]);
        acc[r] = fmaf(qv.w, kv.w, acc[r]);
      }
    }
    if (c0 + lane < nk) {
#pragma unroll
      for (int r = 0; r < R; ++r) s_score[(warp * R + r) * nk + c0 + lane] = acc[r] * p.scale;
    }
  }
  __syncthreads();

  // ---- phase B: per row: softmax, TopCdf / top-k, forcing, LUT
  // -----------------------------------
  uint64_t* keys = s_sort + warp * nkp;
  uint8_t* flags = s_flag + warp * nk;
  for (int r = 0; r < R; ++r) {
    const int i = row0 + warp * R + r;
    if (i >= p.num_q_blocks) break;
    const float* score = s_score + (warp * R + r) * nk;
    float mx = -INFINITY;
    int n_cand = 0, n_valid = 0;
    for (int j = lane; j < nk; j += 32) {
      const bool valid =
          !p.causal || dev::block_causally_valid(i, j, p.block_q, p.block_k, p.seq_q, offset);
      const bool cand = valid && s_kok[j];
      n_valid += valid;
      n_cand += cand;
      if (cand) mx = fmaxf(mx, score[j]);
    }
    mx = dev::warp_max(mx);
    n_cand = dev::warp_sum_int(n_cand);
    n_valid = dev::warp_sum_int(n_valid);
    float sum = 0.f;
    for (int j = lane; j < nk; j += 32) {
      const bool cand = s_kok[j] && (!p.causal || dev::block_causally_valid(
                                                      i, j, p.block_q, p.block_k, p.seq_q, offset));
      if (cand) sum += expf(score[j] - mx);
    }
    sum = dev::warp_sum(sum);
    // Keys: p in the high word (p >= 0 orders like its bits), ~index in the low word so that
    // equal p puts the lower index first in a descending sort; 0 = not a candidate.
    for (int j = lane; j < nkp; j += 32) {
      uint64_t key = 0;
      if (j < nk && s_kok[j] &&
          (!p.causal || dev::block_causally_valid(i, j, p.block_q, p.block_k, p.seq_q, offset))) {
        const float prob = expf(score[j] - mx) / sum;
        key = (static_cast<uint64_t>(__float_as_uint(prob)) << 32) | (0xffffffffu - j);
      }
      keys[j] = key;
    }
    for (int j = lane; j < nk; j += 32) flags[j] = 0;
    __syncwarp();
    switch (nkp) {
      case 32:
        sort_keys_descending<1>(keys, lane);
        break;
      case 64:
        sort_keys_descending<2>(keys, lane);
        break;
      case 128:
        sort_keys_descending<4>(keys, lane);
        break;
      case 256:
        sort_keys_descending<8>(keys, lane);
        break;
      default:
        // More than 8 keys per lane would cost the registers of every row's occupancy, so rows
        // of more than 256 K blocks (N > 32K at block 128, the sm80 geometry's 64-token blocks)
        // sort through shared memory stage by stage.
        for (int k = 2; k <= nkp; k <<= 1) {
          for (int s = k >> 1; s > 0; s >>= 1) {
            for (int t = lane; t < nkp; t += 32) {
              const int u = t ^ s;
              if (u > t) {
                const uint64_t a = keys[t], c = keys[u];
                const bool descending = (t & k) == 0;
                if (descending ? a < c : a > c) {
                  keys[t] = c;
                  keys[u] = a;
                }
              }
            }
            __syncwarp();
          }
        }
    }
    int n_keep = 0;
    if (n_cand > 0) {
      if (p.topk != nullptr) {
        const int k = static_cast<int>(ceilf(p.topk[h] * static_cast<float>(n_valid)));
        n_keep = min(n_cand, max(1, k));
      } else if (lane == 0) {
        // Shortest prefix whose fp32 cumsum, in sorted order, reaches tau; all if never. The sum
        // stays sequential (the reference's rounding); loads go 8 at a time so that only the
        // dependent additions remain on the critical path.
        const float tau = p.tau[h];
        float c = 0.f;
        n_keep = n_cand;
        for (int t0 = 0; t0 < n_cand; t0 += 8) {
          float pr[8];
#pragma unroll
          for (int u = 0; u < 8; ++u)
            pr[u] =
                t0 + u < n_cand ? __uint_as_float(static_cast<uint32_t>(keys[t0 + u] >> 32)) : 0.f;
          int hit = -1;
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            if (t0 + u < n_cand && hit < 0) {
              c += pr[u];
              if (c >= tau) hit = t0 + u;
            }
          }
          if (hit >= 0) {
            n_keep = hit + 1;
            break;
          }
        }
        n_keep = max(1, n_keep);
      }
      n_keep = __shfl_sync(0xffffffffu, n_keep, 0);
    }
    for (int t = lane; t < n_keep; t += 32)
      flags[0xffffffffu - static_cast<uint32_t>(keys[t] & 0xffffffffu)] = 1;
    __syncwarp();
    const bool q_sim_ok =
        p.q_sim[(static_cast<int64_t>(b) * p.heads + h) * p.num_q_blocks + i] > theta;
    finish_row(p, b, h, i, flags, s_kok, !q_sim_ok);
    if constexpr (kCap) {
      // What the cap may extend: the row's candidate order and the cumsum before each candidate
      // (the same sequential fp32 sum as TopCdf's, so the reference's values).
      const CapScratch cs = cap_scratch(p, cap.scratch);
      const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
      const int64_t row = bh * p.num_q_blocks + i;
      for (int t = lane; t < n_cand; t += 32)
        cs.order[row * nk + t] =
            static_cast<int16_t>(0xffffffffu - static_cast<uint32_t>(keys[t] & 0xffffffffu));
      if (lane == 0) {
        float c = 0.f;
        for (int t = 0; t < n_cand; ++t) {
          c += __uint_as_float(static_cast<uint32_t>(keys[t] >> 32));
          cs.cum[row * nk + t] = c;
        }
        cs.keep[row] = q_sim_ok ? n_keep : -1;
        cs.ncand[row] = n_cand;
        // finish_row's lane 0 wrote the row's kept count.
        atomicAdd(&cs.counts[2 * bh], static_cast<unsigned int>(p.lut_len[row]));
        atomicAdd(&cs.counts[2 * bh + 1], static_cast<unsigned int>(n_valid));
      }
    }
    __syncwarp();
  }
}

__global__ void __launch_bounds__(kThreads)
    mask_to_lut_kernel(PredictParams p, const uint8_t* mask) {
  const int b = blockIdx.z, h = blockIdx.y;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int i = blockIdx.x * kWarps + warp;
  const int nk = p.num_k_blocks;
  extern __shared__ __align__(16) unsigned char smem[];
  uint8_t* flags = smem + warp * nk;
  if (i >= p.num_q_blocks) return;
  const int64_t row = (static_cast<int64_t>(b) * p.heads + h) * p.num_q_blocks + i;
  for (int j = lane; j < nk; j += 32) flags[j] = mask[row * nk + j] != 0;
  __syncwarp();
  finish_row(p, b, h, i, flags, nullptr, false);
}

// ---- the sparsity cap (PredictCap::sparsity_cap) ---------------------------------------------
// An event is "row i takes its candidate t": key = (bits of the cumsum before it) << 32 | i << 16
// | t, so ascending keys are the reference's order (cumsum, then row, then candidate; cumsums are
// >= 0, so their bits order like their values). A sink block already on is no event.
__device__ __forceinline__ bool cap_event(const PredictParams& p, const CapScratch& cs, int64_t bh,
                                          int i, int t, unsigned long long* key) {
  const int64_t row = bh * p.num_q_blocks + i;
  const int keep = cs.keep[row];
  if (keep < 0 || t < max(keep, 1) || t >= cs.ncand[row]) return false;
  const int nk = p.num_k_blocks;
  if (p.sink && cs.order[row * nk + t] == 0) return false;
  *key = (static_cast<unsigned long long>(__float_as_uint(cs.cum[row * nk + t - 1])) << 32) |
         (static_cast<unsigned long long>(i) << 16) | static_cast<unsigned long long>(t);
  return true;
}

// grid (H, B): the key of the need-th smallest event of a (b, h) whose mask skips more than the
// cap allows (radix select, 8 bits a pass from the top); 0 where the cap does not bind, all ones
// where the events run out first.
__global__ void __launch_bounds__(kThreads) cap_select_kernel(PredictParams p, PredictCap cap) {
  const int h = blockIdx.x, b = blockIdx.y;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const CapScratch cs = cap_scratch(p, cap.scratch);
  const long long kept = cs.counts[2 * bh], valid = cs.counts[2 * bh + 1];
  const long long allowed =
      static_cast<long long>(floor(static_cast<double>(cap.sparsity_cap[h]) * valid));
  long long need = (valid - allowed) - kept;
  if (need <= 0) {
    if (threadIdx.x == 0) cs.kstar[bh] = 0ull;
    return;
  }
  __shared__ unsigned int hist[256];
  __shared__ unsigned long long s_prefix, s_mask;
  __shared__ long long s_need, s_total;
  if (threadIdx.x == 0) {
    s_prefix = 0ull;
    s_mask = 0ull;
    s_need = need;
    s_total = 0;
  }
  const int64_t cells = static_cast<int64_t>(p.num_q_blocks) * p.num_k_blocks;
  for (int pass = 0; pass < 8; ++pass) {
    const int shift = 56 - 8 * pass;
    for (int d = threadIdx.x; d < 256; d += kThreads) hist[d] = 0;
    __syncthreads();
    const unsigned long long prefix = s_prefix, mask = s_mask;
    for (int64_t c = threadIdx.x; c < cells; c += kThreads) {
      unsigned long long key;
      if (cap_event(p, cs, bh, static_cast<int>(c / p.num_k_blocks),
                    static_cast<int>(c % p.num_k_blocks), &key) &&
          (key & mask) == prefix)
        atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      if (pass == 0) {
        long long total = 0;
        for (int d = 0; d < 256; ++d) total += hist[d];
        s_total = total;
      }
      long long below = 0;
      int d = 0;
      for (; d < 255 && below + hist[d] < s_need; ++d) below += hist[d];
      s_need -= below;
      s_prefix = prefix | (static_cast<unsigned long long>(d) << shift);
      s_mask = mask | (255ull << shift);
    }
    __syncthreads();
    if (s_total <= need) break;  // every event is taken
  }
  if (threadIdx.x == 0) cs.kstar[bh] = s_total <= need ? ~0ull : s_prefix;
}

// grid like mask_to_lut: each warp re-emits one row of a capped (b, h) with the events of its
// row whose keys are at most kstar (a prefix of the row's remaining candidates) added.
__global__ void __launch_bounds__(kThreads) cap_apply_kernel(PredictParams p, PredictCap cap) {
  const int b = blockIdx.z, h = blockIdx.y;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int i = blockIdx.x * kWarps + warp;
  const int nk = p.num_k_blocks;
  const int64_t bh = static_cast<int64_t>(b) * p.heads + h;
  const CapScratch cs = cap_scratch(p, cap.scratch);
  const unsigned long long kstar = cs.kstar[bh];
  if (i >= p.num_q_blocks || kstar == 0ull) return;
  const int64_t row = bh * p.num_q_blocks + i;
  if (cs.keep[row] < 0) return;
  extern __shared__ __align__(16) unsigned char smem[];
  uint8_t* flags = smem + warp * nk;
  for (int j = lane; j < nk; j += 32) flags[j] = 0;
  __syncwarp();
  const int32_t* lut = p.lut + row * nk;
  const int len = p.lut_len[row];
  for (int t = lane; t < len; t += 32) flags[lut[t]] = 1;
  for (int t = lane; t < nk; t += 32) {
    unsigned long long key;
    if (cap_event(p, cs, bh, i, t, &key) && key <= kstar) flags[cs.order[row * nk + t]] = 1;
  }
  __syncwarp();
  finish_row(p, b, h, i, flags, nullptr, false);
}

size_t predict_smem(int d, int r, int nk) {
  return shared_region(d, r, nk) + kWarps * nk + nk + 16;
}

template <int D, int R>
cudaError_t launch_predict_dr(const PredictParams& p, const PredictCap& cap, cudaStream_t stream) {
  const size_t smem = predict_smem(D, R, p.num_k_blocks);
  auto kernel =
      cap.sparsity_cap != nullptr ? predict_kernel<D, R, true> : predict_kernel<D, R, false>;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
      e != cudaSuccess)
    return e;
  const dim3 grid((p.num_q_blocks + kWarps * R - 1) / (kWarps * R), p.heads, p.batch);
  kernel<<<grid, kThreads, smem, stream>>>(p, cap);
  return cudaGetLastError();
}

template <int D>
cudaError_t launch_predict_d(const PredictParams& p, const PredictCap& cap, cudaStream_t stream) {
  // Two rows per warp up to 512 K blocks: enough CTAs to fill the GPU (the per-row work is
  // latency-bound), while each CTA still reuses every pooled-K chunk for 16 rows.
  if (p.num_k_blocks <= 512) return launch_predict_dr<D, 2>(p, cap, stream);
  return launch_predict_dr<D, 1>(p, cap, stream);
}

bool geometry_ok(const PredictParams& p) {
  return p.batch >= 1 && p.heads >= 1 && p.kv_heads >= 1 && p.heads % p.kv_heads == 0 &&
         p.seq_q >= 1 && p.seq_k >= 1 && (!p.causal || p.seq_k >= p.seq_q) &&
         p.num_q_blocks == (p.seq_q + p.block_q - 1) / p.block_q &&
         p.num_k_blocks == (p.seq_k + p.block_k - 1) / p.block_k &&
         p.num_k_blocks <= kMaxPredictKBlocks && p.lut != nullptr && p.lut_len != nullptr;
}

}  // namespace

size_t predict_cap_scratch_bytes(const PredictParams& p) { return cap_layout(p).bytes; }

cudaError_t launch_predict(const PredictParams& p, cudaStream_t stream, const PredictCap& cap) {
  if (!geometry_ok(p) || p.q_pooled == nullptr || p.q_sim == nullptr || p.k_pooled == nullptr ||
      p.k_sim == nullptr || p.theta == nullptr || (p.tau == nullptr && p.topk == nullptr) ||
      (cap.sparsity_cap != nullptr && cap.scratch == nullptr))
    return cudaErrorInvalidValue;
  if (p.head_dim != 64 && p.head_dim != 128) return cudaErrorInvalidValue;
  if (cap.sparsity_cap != nullptr) {
    const CapLayout l = cap_layout(p);
    if (cudaError_t e = cudaMemsetAsync(static_cast<unsigned char*>(cap.scratch) + l.counts, 0,
                                        l.kstar - l.counts, stream);
        e != cudaSuccess)
      return e;
  }
  if (cudaError_t e = p.head_dim == 64 ? launch_predict_d<64>(p, cap, stream)
                                       : launch_predict_d<128>(p, cap, stream);
      e != cudaSuccess || cap.sparsity_cap == nullptr)
    return e;
  cap_select_kernel<<<dim3(p.heads, p.batch), kThreads, 0, stream>>>(p, cap);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const dim3 grid((p.num_q_blocks + kWarps - 1) / kWarps, p.heads, p.batch);
  cap_apply_kernel<<<grid, kThreads, kWarps * p.num_k_blocks, stream>>>(p, cap);
  return cudaGetLastError();
}

cudaError_t launch_mask_to_lut(const PredictParams& p, const uint8_t* mask, cudaStream_t stream) {
  if (!geometry_ok(p) || mask == nullptr) return cudaErrorInvalidValue;
  const dim3 grid((p.num_q_blocks + kWarps - 1) / kWarps, p.heads, p.batch);
  mask_to_lut_kernel<<<grid, kThreads, kWarps * p.num_k_blocks, stream>>>(p, mask);
  return cudaGetLastError();
}

}  // namespace sparge::kernels
