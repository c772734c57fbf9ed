// Quantisation + block statistics for stage-1 prediction (docs/design.md, Stage 1 and Numerics
// contract; layouts in kernels/params.h, numerics in src/reference/reference.hpp).
// Bandwidth-bound: every global access is a 16-byte vector, coalesced along D, and each thread
// issues all of its loads before using any of them.
//
// Passes (inputs [B, H(kv), N, D] with arbitrary b/h/n strides, so HND and NHD are read in place):
//   1. kv_colstats: per (b, kv head, chunk of kChunkTokens tokens): fp32 column sums of K's
//      sampled tokens (every kKMeanStride-th, params.h) and column abs-maxima of V -> workspace.
//      (The K mean is needed before any K block can be smoothed, and the V scale before any V
//      token can be quantised: one extra read of V and of 1/16 of K is the price of per-head
//      statistics.)
//   2. kv_finalize: fixed-order reduction of the chunks -> k_mean [B,Hkv,D], v_scale [B,Hkv,D]
//      (deterministic: no atomics).
//   3. qk_blocks: one CTA per Q block and per K block: pooled mean, self-similarity, amax,
//      INT8 values and scale, all from registers after one read of the block.
//   4. v_quant: one CTA per (kv head, K block): FP8 e4m3 transposed through shared memory (tokens
//      in the v8 order of params.h), or the padded half copy.
//
// Token order: an input with InputView::rows is read in that order (token n from row rows[n]),
// one index load per row a thread reads, so a permuted sequence costs no copy of Q/K/V. Each
// kernel has a kGather = false instance, the plain path without any index load or check, and
// launch_quantize picks it when no input has rows.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/api.h"
#include "kernels/common/device_utils.cuh"
#include "kernels/common/divide_rn.h"

namespace sparge::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunkTokens = 512;  // tokens per CTA of the column-statistics pass

int num_chunks(int seq_k) { return (seq_k + kChunkTokens - 1) / kChunkTokens; }

// The input row holding token n (InputView::rows; rows == nullptr: n itself).
template <bool kGather>
__device__ __forceinline__ int64_t input_row(const int64_t* __restrict__ rows, int n) {
  if constexpr (kGather) {
    return rows != nullptr ? rows[n] : n;
  } else {
    return n;
  }
}

// The index entries of the block of tokens starting at `first`: nullptr when the input is read
// in its own order (then the caller offsets its base pointer by the block instead).
template <bool kGather>
__device__ __forceinline__ const int64_t* block_rows(const int64_t* rows, int64_t first) {
  if constexpr (kGather) {
    return rows != nullptr ? rows + first : nullptr;
  } else {
    return nullptr;
  }
}

// ---- pass 1: column sums of sampled K, column abs-max of V, per chunk of tokens --------------
// grid (chunks, B*Hkv). Thread layout: kTpr = D/8 threads per row (8 columns each), kRows rows
// per pass; kUnroll rows' loads in flight per thread. A thread visits tokens row0 mod kRows, and
// kRows and the chunk are multiples of kKMeanStride, so the threads of row slots 0 mod
// kKMeanStride read exactly the sampled K tokens and the others read no K at all.
template <typename T, int D, bool kGather>
__global__ void __launch_bounds__(kThreads) kv_colstats_kernel(QuantParams p) {
  constexpr int kTpr = D / 8;
  constexpr int kRows = kThreads / kTpr;
  constexpr int kUnroll = 4;
  static_assert(kRows % kKMeanStride == 0 && kChunkTokens % kKMeanStride == 0,
                "K sample rows must be whole row slots");
  const int chunk = blockIdx.x;
  const int bh = blockIdx.y;
  const int b = bh / p.kv_heads, h = bh % p.kv_heads;
  const int col = (threadIdx.x % kTpr) * 8;
  const int row0 = threadIdx.x / kTpr;
  const int t_begin = chunk * kChunkTokens;
  const int t_end = min(t_begin + kChunkTokens, p.seq_k);
  const bool want_v = p.v_fp8 && p.v_out != nullptr;
  const bool want_k = row0 % kKMeanStride == 0;

  const T* kbase = static_cast<const T*>(p.k.ptr) + b * p.k.stride_b + h * p.k.stride_h + col;
  const T* vbase = static_cast<const T*>(p.v.ptr) + b * p.v.stride_b + h * p.v.stride_h + col;
  float ksum[8] = {}, vmax[8] = {};
  for (int t = t_begin + row0; t < t_end; t += kRows * kUnroll) {
    uint4 kr[kUnroll], vr[kUnroll];  // raw 16-byte words: half the registers of fp32
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int tt = t + u * kRows;
      kr[u] = vr[u] = make_uint4(0, 0, 0, 0);
      if (tt < t_end) {
        if (want_k) kr[u] = dev::load16(kbase + input_row<kGather>(p.k.rows, tt) * p.k.stride_n);
        if (want_v) vr[u] = dev::load16(vbase + input_row<kGather>(p.v.rows, tt) * p.v.stride_n);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float kx[8], vx[8];
      dev::unpack8<T>(kr[u], kx);
      dev::unpack8<T>(vr[u], vx);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        ksum[i] += kx[i];
        vmax[i] = fmaxf(vmax[i], fabsf(vx[i]));
      }
    }
  }
  // Rows sharing a column block: reduce across the kRows row slots through shared memory.
  __shared__ float s_sum[kRows][D];
  __shared__ float s_max[kRows][D];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    s_sum[row0][col + i] = ksum[i];
    s_max[row0][col + i] = vmax[i];
  }
  __syncthreads();
  for (int c = threadIdx.x; c < D; c += kThreads) {
    float s = 0.f, m = 0.f;
    for (int r = 0; r < kRows; ++r) {
      s += s_sum[r][c];
      m = fmaxf(m, s_max[r][c]);
    }
    const size_t base = (static_cast<size_t>(bh) * gridDim.x + chunk) * D;
    p.workspace[base + c] = s;
    if (want_v) {
      const size_t off = static_cast<size_t>(p.batch) * p.kv_heads * gridDim.x * D;
      p.workspace[off + base + c] = m;
    }
  }
}

// ---- pass 2: k_mean = sum / sampled tokens; v_scale = amax / 448 (1 for an all-zero channel) --
__global__ void kv_finalize_kernel(QuantParams p, int chunks) {
  const int bh = blockIdx.x;
  const int D = p.head_dim;
  const bool want_v = p.v_fp8 && p.v_out != nullptr;
  const size_t off = static_cast<size_t>(p.batch) * p.kv_heads * chunks * D;
  const int sampled = (p.seq_k + kKMeanStride - 1) / kKMeanStride;  // tokens 0, S, 2S, ... < Nk
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float s = 0.f, m = 0.f;
#pragma unroll 16
    for (int k = 0; k < chunks; ++k) {  // unrolled: the loads go out together, sums stay ordered
      const size_t i = (static_cast<size_t>(bh) * chunks + k) * D + c;
      s += p.workspace[i];
      if (want_v) m = fmaxf(m, p.workspace[off + i]);
    }
    p.k_mean[static_cast<size_t>(bh) * D + c] = s / static_cast<float>(sampled);
    if (want_v) p.v_scale[static_cast<size_t>(bh) * D + c] = m > 0.f ? m / 448.f : 1.f;
  }
}

// ---- pass 3: one block of Q (mean == nullptr) or smoothed K, [kBlock, D] ------------------------
// Each warp owns kBlock/8 consecutive rows; kTpr = D/8 lanes share a row (8 columns per lane).
// Row r of the block is src + rows[r] * stride_n when rows != nullptr (src: the head's row 0),
// else src + r * stride_n (src: the block's first row).
// kRowScale (Q): one INT8 scale per row, scale_out[r] for r < kBlock (padded rows 1); else (K)
// one per block, *scale_out. The block amax is reduced only for K. Q's row amax is reduced in the
// statistics loop and parked one row per lane (lane L of a warp holds its row L), so each lane
// does one IEEE division pair for its row and the quantisation loop fetches the row's 127 / amax
// with a shuffle: a division pair per row slice (every lane of every row, ~20 instructions per
// 8 values) was the largest cost the per-row scale added. Keeping the kIters amaxes of a lane's
// own rows live instead would cost kIters registers at the kernel's cap.
template <typename T, int D, int kBlock, bool kGather, bool kRowScale>
__device__ void block_stats(const T* __restrict__ src, int64_t stride_n,
                            const int64_t* __restrict__ rows, int valid,
                            const float* __restrict__ mean, int8_t* __restrict__ out8,
                            float* __restrict__ scale_out, float* __restrict__ pooled_out,
                            float* __restrict__ sim_out) {
  constexpr int kTpr = D / 8;
  constexpr int kRowsPerIt = 32 / kTpr;
  constexpr int kRowsPerWarp = kBlock / kWarps;
  constexpr int kIters = kRowsPerWarp / kRowsPerIt;
  static_assert(kIters >= 1 && kRowsPerWarp % kRowsPerIt == 0);
  static_assert(!kRowScale || kRowsPerWarp <= 32, "one row per lane");
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int col = (lane % kTpr) * 8;
  const int rsub = lane / kTpr;

  float m[8] = {};
  if (mean != nullptr) {
#pragma unroll
    for (int i = 0; i < 8; ++i) m[i] = mean[col + i];
  }
  // The block stays in registers as raw 16-byte words (4 registers per row slice instead of 8)
  // and is unpacked twice: once for the statistics, once for the quantisation.
  uint4 raw[kIters];
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int r = warp * kRowsPerWarp + it * kRowsPerIt + rsub;
    raw[it] = r < valid ? dev::load16(src + input_row<kGather>(rows, r) * stride_n + col)
                        : make_uint4(0, 0, 0, 0);
  }
  // K' = K - mean on valid rows; padded rows stay exactly 0.
  auto row_values = [&](int it, float(&x)[8]) {
    dev::unpack8<T>(raw[it], x);
    const int r = warp * kRowsPerWarp + it * kRowsPerIt + rsub;
    if (r < valid) {
#pragma unroll
      for (int i = 0; i < 8; ++i) x[i] = x[i] - m[i];
    }
  };
  float colsum[8] = {}, hatsum[8] = {};
  float amax = 0.f;
  float row_amax = 0.f;  // kRowScale: lane L < kRowsPerWarp, the amax of the warp's row L
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    float x[8];
    row_values(it, x);
    if constexpr (kRowScale) {
      float ra = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) ra = fmaxf(ra, fabsf(x[i]));
      ra = dev::warp_max<kTpr>(ra);  // lanes of one row are kTpr consecutive lanes
      // Rows it·kRowsPerIt + q (q < kRowsPerIt) sit on lanes q·kTpr...: lane L of this
      // iteration's range takes row L's value.
      const float got = __shfl_sync(0xffffffffu, ra, (lane % kRowsPerIt) * kTpr);
      if (lane / kRowsPerIt == it) row_amax = got;
    }
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) ss += x[i] * x[i];
    ss = dev::warp_sum<kTpr>(ss);  // lanes of one row are kTpr consecutive lanes
    // One reciprocal per row instead of a division per element (the division dominated the
    // instruction count; sim is compared with a tolerance, not bitwise).
    const float rnorm = ss > 0.f ? 1.f / sqrtf(ss) : 0.f;  // zero rows stay 0
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      colsum[i] += x[i];
      hatsum[i] += x[i] * rnorm;
      if constexpr (!kRowScale) amax = fmaxf(amax, fabsf(x[i]));
    }
  }
  // Lanes holding the same columns differ by multiples of kTpr.
#pragma unroll
  for (int o = kTpr; o < 32; o <<= 1) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      colsum[i] += __shfl_xor_sync(0xffffffffu, colsum[i], o);
      hatsum[i] += __shfl_xor_sync(0xffffffffu, hatsum[i], o);
    }
  }
  if constexpr (!kRowScale) amax = dev::warp_max(amax);

  __shared__ float s_col[kWarps][D];
  __shared__ float s_hat[kWarps][D];
  __shared__ float s_amax[kWarps];
  if (lane < kTpr) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      s_col[warp][col + i] = colsum[i];
      s_hat[warp][col + i] = hatsum[i];
    }
  }
  if constexpr (!kRowScale) {
    if (lane == 0) s_amax[warp] = amax;
  }
  __syncthreads();
  float block_amax = 0.f;
  if constexpr (!kRowScale) {
#pragma unroll
    for (int w = 0; w < kWarps; ++w) block_amax = fmaxf(block_amax, s_amax[w]);
  }

  if (warp == 0) {
    // sim = |sum of unit rows|^2 / n^2 (mean pairwise cosine, diagonal included).
    float part = 0.f;
    for (int c = lane; c < D; c += 32) {
      float hs = 0.f, cs = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        hs += s_hat[w][c];
        cs += s_col[w][c];
      }
      pooled_out[c] = cs / static_cast<float>(valid);
      part += hs * hs;
    }
    part = dev::warp_sum(part);
    if (lane == 0) {
      const float n = static_cast<float>(valid);
      *sim_out = part / (n * n);
      if constexpr (!kRowScale) *scale_out = block_amax > 0.f ? block_amax / 127.f : 1.f;
    }
  }

  const float block_inv = block_amax > 0.f ? 127.f / block_amax : 0.f;
  float row_inv = 0.f;
  if constexpr (kRowScale) {
    row_inv = row_amax > 0.f ? 127.f / row_amax : 0.f;
    if (lane < kRowsPerWarp) {
      scale_out[warp * kRowsPerWarp + lane] = row_amax > 0.f ? row_amax / 127.f : 1.f;
    }
  }
#pragma unroll
  for (int it = 0; it < kIters; ++it) {
    const int r = warp * kRowsPerWarp + it * kRowsPerIt + rsub;
    float x[8];
    row_values(it, x);
    float inv = block_inv;
    if constexpr (kRowScale) inv = __shfl_sync(0xffffffffu, row_inv, it * kRowsPerIt + rsub);
    uint32_t w[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      w[h] = dev::pack_int8x4(x[4 * h] * inv, x[4 * h + 1] * inv, x[4 * h + 2] * inv,
                              x[4 * h + 3] * inv);
    }
    *reinterpret_cast<uint2*>(out8 + static_cast<int64_t>(r) * D + col) = make_uint2(w[0], w[1]);
  }
}

// grid: B*H*nq Q blocks followed by B*Hkv*nk K blocks.
template <typename T, int D, int kBq, int kBk, bool kGather>
__global__ void __launch_bounds__(kThreads, 3) qk_blocks_kernel(QuantParams p) {
  const int64_t q_ctas = static_cast<int64_t>(p.batch) * p.heads * p.num_q_blocks;
  int64_t id = blockIdx.x;
  if (id < q_ctas) {
    const int blk = id % p.num_q_blocks;
    const int64_t bh = id / p.num_q_blocks;
    const int b = bh / p.heads, h = bh % p.heads;
    const int64_t* rows = block_rows<kGather>(p.q.rows, static_cast<int64_t>(blk) * kBq);
    const T* src = static_cast<const T*>(p.q.ptr) + b * p.q.stride_b + h * p.q.stride_h;
    if (rows == nullptr) src += static_cast<int64_t>(blk) * kBq * p.q.stride_n;
    const int valid = min(kBq, p.seq_q - blk * kBq);
    block_stats<T, D, kBq, kGather, true>(src, p.q.stride_n, rows, valid, nullptr,
                                          p.q8 + (bh * p.num_q_blocks + blk) * kBq * D,
                                          p.q_scale + id * kBq, p.q_pooled + id * D, p.q_sim + id);
  } else {
    id -= q_ctas;
    const int blk = id % p.num_k_blocks;
    const int64_t bh = id / p.num_k_blocks;
    const int b = bh / p.kv_heads, h = bh % p.kv_heads;
    const int64_t* rows = block_rows<kGather>(p.k.rows, static_cast<int64_t>(blk) * kBk);
    const T* src = static_cast<const T*>(p.k.ptr) + b * p.k.stride_b + h * p.k.stride_h;
    if (rows == nullptr) src += static_cast<int64_t>(blk) * kBk * p.k.stride_n;
    const int valid = min(kBk, p.seq_k - blk * kBk);
    block_stats<T, D, kBk, kGather, false>(src, p.k.stride_n, rows, valid, p.k_mean + bh * D,
                                           p.k8 + (bh * p.num_k_blocks + blk) * kBk * D,
                                           p.k_scale + id, p.k_pooled + id * D, p.k_sim + id);
  }
}

// ---- pass 4: V -> e4m3 transposed [D, tokens] (kFp8) or the padded half copy ------------------
// grid (nk, B*Hkv). FP8: values staged as bytes in shared memory [D][kBk + 4] (a row stride of
// kBk/4 + 1 words keeps the byte scatter at <= 4-way bank conflicts), then written out as
// 16-byte runs of tokens.
template <typename T, int D, int kBk, bool kFp8, bool kGather>
__global__ void __launch_bounds__(kThreads, 3) v_quant_kernel(QuantParams p) {
  constexpr int kTpr = D / 8;
  constexpr int kRowsPerPass = kThreads / kTpr;
  constexpr int kIters = kBk / kRowsPerPass;
  static_assert(kIters >= 1 && kBk % kRowsPerPass == 0);
  const int blk = blockIdx.x;
  const int64_t bh = blockIdx.y;
  const int b = bh / p.kv_heads, h = bh % p.kv_heads;
  const int col = (threadIdx.x % kTpr) * 8;
  const int rsub = threadIdx.x / kTpr;
  const int valid = min(kBk, p.seq_k - blk * kBk);
  // Row r of the block: src + rows[r] * stride_n (gathered), else src + r * stride_n.
  const int64_t* rows = block_rows<kGather>(p.v.rows, static_cast<int64_t>(blk) * kBk);
  const T* src = static_cast<const T*>(p.v.ptr) + b * p.v.stride_b + h * p.v.stride_h + col;
  if (rows == nullptr) src += static_cast<int64_t>(blk) * kBk * p.v.stride_n;
  const int64_t padded = static_cast<int64_t>(p.num_k_blocks) * kBk;

  if constexpr (!kFp8) {
    uint4 raw[kIters];
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int r = it * kRowsPerPass + rsub;
      raw[it] = r < valid ? dev::load16(src + input_row<kGather>(rows, r) * p.v.stride_n)
                          : make_uint4(0, 0, 0, 0);
    }
    T* dst = static_cast<T*>(p.v_out) + (bh * padded + static_cast<int64_t>(blk) * kBk) * D + col;
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int r = it * kRowsPerPass + rsub;
      *reinterpret_cast<uint4*>(dst + static_cast<int64_t>(r) * D) = raw[it];
    }
  } else {
    // Each thread converts kTok (4, or 2 for D 64 x 64-token blocks) consecutive tokens x 8
    // channels and stores, per channel, its tokens as one 32/16-bit word of the transposed tile.
    constexpr int kStride = kBk + 4;
    constexpr int kTok = kBk / kRowsPerPass >= 4 ? 4 : 2;
    constexpr int kTokIters = kBk / (kTok * kRowsPerPass);
    static_assert(kTokIters >= 1 && kBk % (kTok * kRowsPerPass) == 0);
    __shared__ __align__(16) uint8_t tile[D * kStride];
    float x[kTokIters][kTok][8];
#pragma unroll
    for (int it = 0; it < kTokIters; ++it) {
#pragma unroll
      for (int u = 0; u < kTok; ++u) {
        const int r = (it * kRowsPerPass + rsub) * kTok + u;
        if (r < valid) {
          dev::load8(src + input_row<kGather>(rows, r) * p.v.stride_n, x[it][u]);
        } else {
#pragma unroll
          for (int i = 0; i < 8; ++i) x[it][u][i] = 0.f;
        }
      }
    }
    // Channel-major, so that one channel's divisor is live at a time (all of the thread's values
    // already are: the loads went out first).
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const DivideRn scale(p.v_scale[bh * D + col + i]);
#pragma unroll
      for (int it = 0; it < kTokIters; ++it) {
        const int r0 = (it * kRowsPerPass + rsub) * kTok;
        uint32_t w = 0;
#pragma unroll
        for (int u = 0; u < kTok; ++u)
          w |= static_cast<uint32_t>(dev::to_e4m3(scale(x[it][u][i]))) << (8 * u);
        uint8_t* t = tile + (col + i) * kStride + r0;
        if constexpr (kTok == 4) {
          *reinterpret_cast<uint32_t*>(t) = w;
        } else {
          *reinterpret_cast<uint16_t*>(t) = static_cast<uint16_t>(w);
        }
      }
    }
    __syncthreads();
    // Row d of the output holds kBk tokens: kBk/16 lanes write 16 bytes each, in the v8 token
    // order (params.h, v8_slot): slots 16a + 4t + 2b + e of a 32-token group hold token
    // 8 (2a + b) + 2t + e, so the 16 bytes of half a (tokens 16a .. 16a + 15, words s0..s3 of
    // the natural-order tile) are the 16-bit pairs (0,1)(8,9)(2,3)(10,11)(4,5)(12,13)(6,7)(14,15).
    static_assert(kBk % 32 == 0, "v8 permutes whole 32-token groups");
    constexpr int kVecPerRow = kBk / 16;
    uint8_t* dst =
        static_cast<uint8_t*>(p.v_out) + bh * D * padded + static_cast<int64_t>(blk) * kBk;
    for (int v = threadIdx.x; v < D * kVecPerRow; v += kThreads) {
      const int d = v / kVecPerRow, c = (v % kVecPerRow) * 16;
      const uint32_t* s = reinterpret_cast<const uint32_t*>(tile + d * kStride + c);
      *reinterpret_cast<uint4*>(dst + d * padded + c) =
          make_uint4(__byte_perm(s[0], s[2], 0x5410), __byte_perm(s[0], s[2], 0x7632),
                     __byte_perm(s[1], s[3], 0x5410), __byte_perm(s[1], s[3], 0x7632));
    }
  }
}

template <typename T, int D, bool kGather>
cudaError_t launch_typed(const QuantParams& p, cudaStream_t stream) {
  const int chunks = num_chunks(p.seq_k);
  if (p.stages & kQuantColStats)
    kv_colstats_kernel<T, D, kGather>
        <<<dim3(chunks, p.batch * p.kv_heads), kThreads, 0, stream>>>(p);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (p.stages & kQuantFinalize)
    kv_finalize_kernel<<<p.batch * p.kv_heads, 128, 0, stream>>>(p, chunks);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  const int64_t ctas = static_cast<int64_t>(p.batch) * p.heads * p.num_q_blocks +
                       static_cast<int64_t>(p.batch) * p.kv_heads * p.num_k_blocks;
  auto blocks = [&](auto kernel) {
    if (!(p.stages & kQuantBlocks)) return;
    kernel<<<static_cast<unsigned>(ctas), kThreads, 0, stream>>>(p);
  };
  if (p.block_q == 128 && p.block_k == 128)
    blocks(qk_blocks_kernel<T, D, 128, 128, kGather>);
  else if (p.block_q == 128 && p.block_k == 64)
    blocks(qk_blocks_kernel<T, D, 128, 64, kGather>);
  else if (p.block_q == 64 && p.block_k == 128)
    blocks(qk_blocks_kernel<T, D, 64, 128, kGather>);
  else if (p.block_q == 64 && p.block_k == 64)
    blocks(qk_blocks_kernel<T, D, 64, 64, kGather>);
  else
    return cudaErrorInvalidValue;
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  if (p.v_out != nullptr && (p.stages & kQuantV)) {
    const dim3 grid(p.num_k_blocks, p.batch * p.kv_heads);
    if (p.block_k == 128) {
      if (p.v_fp8)
        v_quant_kernel<T, D, 128, true, kGather><<<grid, kThreads, 0, stream>>>(p);
      else
        v_quant_kernel<T, D, 128, false, kGather><<<grid, kThreads, 0, stream>>>(p);
    } else {
      if (p.v_fp8)
        v_quant_kernel<T, D, 64, true, kGather><<<grid, kThreads, 0, stream>>>(p);
      else
        v_quant_kernel<T, D, 64, false, kGather><<<grid, kThreads, 0, stream>>>(p);
    }
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <int D>
cudaError_t launch_dim(const QuantParams& p, cudaStream_t stream) {
  const bool bf16 = p.dtype == DType::kBFloat16;
  if (p.q.rows != nullptr || p.k.rows != nullptr || p.v.rows != nullptr)
    return bf16 ? launch_typed<__nv_bfloat16, D, true>(p, stream)
                : launch_typed<__half, D, true>(p, stream);
  return bf16 ? launch_typed<__nv_bfloat16, D, false>(p, stream)
              : launch_typed<__half, D, false>(p, stream);
}

}  // namespace

size_t quant_workspace_floats(const QuantParams& p) {
  return 2 * static_cast<size_t>(p.batch) * p.kv_heads * num_chunks(p.seq_k) * p.head_dim;
}

cudaError_t launch_quantize(const QuantParams& p, cudaStream_t stream) {
  if (p.batch < 1 || p.heads < 1 || p.kv_heads < 1 || p.heads % p.kv_heads != 0 || p.seq_q < 1 ||
      p.seq_k < 1 || p.workspace == nullptr)
    return cudaErrorInvalidValue;
  if (p.head_dim == 64) return launch_dim<64>(p, stream);
  if (p.head_dim == 128) return launch_dim<128>(p, stream);
  return cudaErrorInvalidValue;
}

}  // namespace sparge::kernels
