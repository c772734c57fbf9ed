// Portable block-sparse quantised attention, sm_80+ (mma.sync), numerics "i8f16":
//   S = Q8 · K8ᵀ with mma.sync m16n8k32 s8.s8.s32, dequantised as
//       float(int32) · (q_scale[row] · k_scale · sm_scale_log2)    (log2 domain)
//   online softmax in exp2 (running max m, row sum l in fp32, l summed from the unrounded p),
//   P = exp2(s − m) rounded to the dtype of V (fp16 or bf16), O += P·V with mma.sync m16n8k16
//   into fp32 accumulators, o = O / l (0 where l == 0).
// The CPU emulation of exactly this is ref::sparse_attention(..., PvNumerics::kHalf).
//
// Geometry "sm80": block_q = 128 query rows per CTA, block_k = 64 keys per K block, 8 warps of
// 16 query rows each. A warp's 16 rows are one stage-2 group (warp_rows = 16): for every K block
// the warp computes diff = max over its valid rows of (m_local − m_new) and skips the block's P·V
// and l update iff diff < lambda_log2[h] (m is still updated; rows whose m_new is −inf contribute
// nothing to diff; lambda = −inf never skips).
//
// Shapes (params.h): q8 [B, H, nq·128, D], k8 [B, Hkv, nk·64, D], vh [B, Hkv, nk·64, D],
// scales [B, H, nq] / [B, Hkv, nk], lut [B, H, nq, nk], lut_len [B, H, nq], o [B, H, Nq, D] with
// explicit strides. Padded rows/keys are zeros; keys ≥ Nk are masked, rows ≥ Nq not written.
//
// Pipeline: grid (nq, H, B), one CTA per query block. Q is loaded once (cp.async) and kept in
// registers as mma A fragments. The K8/V tiles of the LUT's K blocks are double-buffered with
// cp.async: the tiles of step j+1 load while step j computes. Shared-memory rows are padded by
// 16 bytes so the 8 row addresses of every ldmatrix fall into distinct 16-byte bank groups.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/params.h"

namespace sparge::kernels::sm80 {

constexpr int kBlockQ = 128;
constexpr int kBlockK = 64;
constexpr int kWarpRows = 16;
constexpr int kWarps = kBlockQ / kWarpRows;  // 8
constexpr int kThreads = kWarps * 32;        // 256

// Shared-memory layout (bytes). Rows padded by 16 B: the row stride is then ≡ 16 (mod 128) for
// every D here, so ldmatrix's 8 rows of 16 B hit 8 distinct bank groups (no conflicts), and every
// row start stays 16-B aligned for cp.async.
template <int D>
struct SmemLayout {
  static constexpr int kQStride = D + 16;      // int8 rows
  static constexpr int kKStride = D + 16;      // int8 rows
  static constexpr int kVStride = 2 * D + 16;  // 16-bit rows
  static constexpr int kQBytes = kBlockQ * kQStride;
  static constexpr int kKBytes = kBlockK * kKStride;
  static constexpr int kVBytes = kBlockK * kVStride;
  static constexpr int kKOffset = kQBytes;                // two K buffers
  static constexpr int kVOffset = kQBytes + 2 * kKBytes;  // two V buffers
  static constexpr int kTotal = kQBytes + 2 * (kKBytes + kVBytes);
};

// ---- PTX wrappers ------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// C[16x8] += A[16x32] · B[32x8], int8 → int32.
__device__ __forceinline__ void mma_s8(int32_t (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                       uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// C[16x8] += A[16x16] · B[16x8], fp16 or bf16 → fp32.
template <typename T>
__device__ __forceinline__ void mma_half(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1);
template <>
__device__ __forceinline__ void mma_half<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                 uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_half<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4],
                                                        uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two fp32 → one register of two 16-bit values (lo = first), round to nearest even.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ void store_out(void* o, int64_t idx, DType dt, float x0, float x1) {
  // idx is the element index of x0; x1 is the next element along D (stride 1 in HND and NHD).
  switch (dt) {
    case DType::kFloat16:
      *reinterpret_cast<__half2*>(static_cast<__half*>(o) + idx) = __floats2half2_rn(x0, x1);
      break;
    case DType::kBFloat16:
      *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(o) + idx) =
          __floats2bfloat162_rn(x0, x1);
      break;
    case DType::kFloat32:
      *reinterpret_cast<float2*>(static_cast<float*>(o) + idx) = make_float2(x0, x1);
      break;
  }
}

// ---- the kernel --------------------------------------------------------------------------------

// VT: element type of vh (fp16 or bf16); P is rounded to the same type.
template <int D, typename VT>
__global__ void __launch_bounds__(kThreads, D == 64 ? 2 : 1)
    attention_kernel(const AttentionParams p) {
  static_assert(D == 64 || D == 128, "head dims 64 and 128 are compiled");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // Built for an arch without int8/bf16 mma.sync (a build that forgot the arch list): fail loudly
  // at run time instead of breaking the whole kernel library's build.
  __trap();
#else
  using L = SmemLayout<D>;
  constexpr int kKSteps = D / 32;       // k-steps of the QK^T MMA (32 int8 each)
  constexpr int kSTiles = kBlockK / 8;  // n-tiles of S (8 keys each)
  constexpr int kOTiles = D / 8;        // n-tiles of O (8 channels each)
  constexpr float kNegInf = -INFINITY;

  extern __shared__ __align__(128) uint8_t smem[];
  const int qb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hkv = h / (p.heads / p.kv_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;  // mma fragment coordinates: row group, thread in group

  const int64_t bhq = (static_cast<int64_t>(b) * p.heads + h) * p.num_q_blocks + qb;
  const int64_t bkv = static_cast<int64_t>(b) * p.kv_heads + hkv;
  const int8_t* q8 = p.q8 + bhq * kBlockQ * D;
  const int8_t* k8 = p.k8 + bkv * p.num_k_blocks * kBlockK * D;
  const VT* vh = static_cast<const VT*>(p.v) + bkv * p.num_k_blocks * kBlockK * D;
  const float* k_scale = p.k_scale + bkv * p.num_k_blocks;
  const float lambda = p.lambda_log2 ? p.lambda_log2[h] : kNegInf;

  // The K blocks to visit: a LUT row, or (dense mode) every causally valid block.
  const int32_t* lut = nullptr;
  int n_iter;
  if (p.lut) {
    lut = p.lut + bhq * p.num_k_blocks;
    n_iter = p.lut_len[bhq];
  } else if (p.causal) {
    const int last_q = min(qb * kBlockQ + kBlockQ - 1, p.seq_q - 1);
    const int last_k = min(p.seq_k - 1, last_q + p.causal_offset);
    n_iter = last_k / kBlockK + 1;
  } else {
    n_iter = p.num_k_blocks;
  }
  auto k_block = [&](int it) { return lut ? lut[it] : it; };

  const uint32_t s_q = smem_addr(smem);
  const uint32_t s_k = smem_addr(smem + L::kKOffset);
  const uint32_t s_v = smem_addr(smem + L::kVOffset);

  // cp.async of one K block's K8 and V tiles into buffer `buf` (16 B per copy, coalesced).
  auto load_kv = [&](int kb, int buf) {
    const int8_t* ksrc = k8 + static_cast<int64_t>(kb) * kBlockK * D;
    constexpr int kKChunksRow = D / 16;
#pragma unroll
    for (int i = 0; i < kBlockK * kKChunksRow / kThreads; ++i) {
      const int c = tid + i * kThreads, row = c / kKChunksRow, col = c % kKChunksRow;
      cp_async16(s_k + buf * L::kKBytes + row * L::kKStride + col * 16, ksrc + row * D + col * 16);
    }
    const VT* vsrc = vh + static_cast<int64_t>(kb) * kBlockK * D;
    constexpr int kVChunksRow = D / 8;
#pragma unroll
    for (int i = 0; i < kBlockK * kVChunksRow / kThreads; ++i) {
      const int c = tid + i * kThreads, row = c / kVChunksRow, col = c % kVChunksRow;
      cp_async16(s_v + buf * L::kVBytes + row * L::kVStride + col * 16, vsrc + row * D + col * 8);
    }
  };

  // Prologue: Q tile and the first K block.
  {
    constexpr int kQChunksRow = D / 16;
#pragma unroll
    for (int i = 0; i < kBlockQ * kQChunksRow / kThreads; ++i) {
      const int c = tid + i * kThreads, row = c / kQChunksRow, col = c % kQChunksRow;
      cp_async16(s_q + row * L::kQStride + col * 16, q8 + row * D + col * 16);
    }
  }
  if (n_iter > 0) load_kv(k_block(0), 0);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();

  // Q A-fragments of this warp's 16 rows: ldmatrix matrix m = lane / 8 covers rows
  // (m % 2) * 8 .. +7 and bytes (m / 2) * 16 .. +15 of each 32-byte k-step, which is exactly the
  // m16n8k32 A layout {a0: rows 0-7 k 0-15, a1: rows 8-15 k 0-15, a2: rows 0-7 k 16-31, a3: ...}.
  uint32_t qf[kKSteps][4];
  {
    const int m = lane / 8, r = lane % 8;
    const uint32_t base = s_q + (warp * kWarpRows + (m % 2) * 8 + r) * L::kQStride + (m / 2) * 16;
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) ldmatrix_x4(qf[ks], base + ks * 32);
  }

  // Per-thread state for rows r0 = g and r1 = g + 8 of the warp.
  const int row0 = qb * kBlockQ + warp * kWarpRows + g;  // token index of row r0
  // INT8 scales of rows r0 and r0 + 8 (Q has one per row; q_scale's rows start at bhq · kBlockQ).
  const float* qs = p.q_scale + bhq * kBlockQ + warp * kWarpRows + g;
  const float q_scale[2] = {qs[0], qs[8]};
  const bool row_valid[2] = {row0 < p.seq_q, row0 + 8 < p.seq_q};
  float m_run[2] = {kNegInf, kNegInf};
  float l_part[2] = {0.f, 0.f};  // this thread's partial row sums (4 lanes share a row)
  float acc[kOTiles][4];
#pragma unroll
  for (int n = 0; n < kOTiles; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  int executed = 0;
  // First query token of this warp: causal masking is needed in a K block only if one of its keys
  // lies beyond this row's diagonal.
  const int warp_q0 = qb * kBlockQ + warp * kWarpRows;

  for (int it = 0; it < n_iter; ++it) {
    const int buf = it & 1;
    const int kb = k_block(it);
    if (it > 0) {
      cp_async_wait_all();  // tiles of step `it` (issued during step it-1) have landed
      __syncthreads();      // ... for every thread, and every warp is done with buffer buf ^ 1
    }
    if (it + 1 < n_iter) {
      load_kv(k_block(it + 1), buf ^ 1);
      cp_async_commit();
    }

    // S = Q8 · K8ᵀ (int32). K ldmatrix x4 matrix m: keys (m / 2) * 8 .. +7 of an n-tile pair,
    // bytes (m % 2) * 16 of the k-step → {b0, b1} of n-tile 2np and {b0, b1} of n-tile 2np+1.
    int32_t sacc[kSTiles][4];
#pragma unroll
    for (int n = 0; n < kSTiles; ++n) sacc[n][0] = sacc[n][1] = sacc[n][2] = sacc[n][3] = 0;
    {
      const int m = lane / 8, r = lane % 8;
      const uint32_t base = s_k + buf * L::kKBytes + ((m / 2) * 8 + r) * L::kKStride + (m % 2) * 16;
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
        for (int np = 0; np < kSTiles / 2; ++np) {
          uint32_t kf[4];
          ldmatrix_x4(kf, base + np * 16 * L::kKStride + ks * 32);
          mma_s8(sacc[2 * np], qf[ks], kf[0], kf[1]);
          mma_s8(sacc[2 * np + 1], qf[ks], kf[2], kf[3]);
        }
      }
    }

    // Dequantise into the log2 domain; element e of n-tile n is row (e < 2 ? r0 : r1), key
    // kb * 64 + 8n + 2t + (e & 1).
    const float factor[2] = {q_scale[0] * k_scale[kb] * p.sm_scale_log2,
                             q_scale[1] * k_scale[kb] * p.sm_scale_log2};
    float s[kSTiles][4];
#pragma unroll
    for (int n = 0; n < kSTiles; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = static_cast<float>(sacc[n][e]) * factor[e >> 1];

    const int key0 = kb * kBlockK;
    const bool mask_tail = key0 + kBlockK > p.seq_k;
    const bool mask_causal = p.causal && key0 + kBlockK - 1 > warp_q0 + p.causal_offset;
    if (mask_tail || mask_causal) {
#pragma unroll
      for (int n = 0; n < kSTiles; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int tk = key0 + 8 * n + 2 * t + (e & 1);
          const int tq = row0 + (e >= 2 ? 8 : 0);
          if (tk >= p.seq_k || (p.causal && tk > tq + p.causal_offset)) s[n][e] = kNegInf;
        }
    }

    // Online softmax: block row max over the 4 lanes sharing a row.
    float m_loc[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int n = 0; n < kSTiles; ++n) {
      m_loc[0] = fmaxf(m_loc[0], fmaxf(s[n][0], s[n][1]));
      m_loc[1] = fmaxf(m_loc[1], fmaxf(s[n][2], s[n][3]));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      m_loc[i] = fmaxf(m_loc[i], __shfl_xor_sync(0xffffffffu, m_loc[i], 1));
      m_loc[i] = fmaxf(m_loc[i], __shfl_xor_sync(0xffffffffu, m_loc[i], 2));
    }
    float m_new[2], rescale[2], diff = kNegInf;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      m_new[i] = fmaxf(m_run[i], m_loc[i]);
      // Rows that have seen no visible key yet (m_new = -inf) and padding rows (>= Nq) take no
      // part in the stage-2 decision.
      if (row_valid[i] && m_new[i] != kNegInf) diff = fmaxf(diff, m_loc[i] - m_new[i]);
      rescale[i] = m_new[i] == kNegInf ? 1.f : exp2f(m_run[i] - m_new[i]);
      m_run[i] = m_new[i];
    }
    // Stage 2: the group is the warp's 16 rows (8 row groups g x 2 rows each).
    diff = fmaxf(diff, __shfl_xor_sync(0xffffffffu, diff, 4));
    diff = fmaxf(diff, __shfl_xor_sync(0xffffffffu, diff, 8));
    diff = fmaxf(diff, __shfl_xor_sync(0xffffffffu, diff, 16));

    // A skip implies m_loc < m_new for every valid row, i.e. rescale == 1 there (lambda <= 0);
    // the rescale is applied unconditionally anyway so that m, l and O never disagree.
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) {
      acc[n][0] *= rescale[0];
      acc[n][1] *= rescale[0];
      acc[n][2] *= rescale[1];
      acc[n][3] *= rescale[1];
    }
    l_part[0] *= rescale[0];
    l_part[1] *= rescale[1];

    if (!(diff < lambda)) {  // warp-uniform
      ++executed;
      const float m_use[2] = {m_new[0] == kNegInf ? 0.f : m_new[0],
                              m_new[1] == kNegInf ? 0.f : m_new[1]};
      // P = exp2(s - m) (fp32, summed into l unrounded), rounded to VT as the A operand of P·V.
      // The m16n8k32 int32 C layout {c0,c1: row g, keys 2t,2t+1; c2,c3: row g+8} of n-tiles 2kk
      // and 2kk+1 is the m16n8k16 A layout of keys 16kk .. 16kk+15, so no shuffles are needed.
      uint32_t pf[kBlockK / 16][4];
#pragma unroll
      for (int n = 0; n < kSTiles; ++n) {
        const float p0 = exp2f(s[n][0] - m_use[0]), p1 = exp2f(s[n][1] - m_use[0]);
        const float p2 = exp2f(s[n][2] - m_use[1]), p3 = exp2f(s[n][3] - m_use[1]);
        l_part[0] += p0 + p1;
        l_part[1] += p2 + p3;
        pf[n / 2][(n % 2) * 2 + 0] = pack2<VT>(p0, p1);
        pf[n / 2][(n % 2) * 2 + 1] = pack2<VT>(p2, p3);
      }
      // O += P · V. V ldmatrix x4.trans matrix m: keys (m % 2) * 8 .. +7 of the k-step, channels
      // (m / 2) * 8 .. +7 of an n-tile pair → {b0, b1} of n-tile 2q and of n-tile 2q+1.
      const int m = lane / 8, r = lane % 8;
      const uint32_t base = s_v + buf * L::kVBytes + ((m % 2) * 8 + r) * L::kVStride + (m / 2) * 16;
#pragma unroll
      for (int kk = 0; kk < kBlockK / 16; ++kk) {
#pragma unroll
        for (int q = 0; q < kOTiles / 2; ++q) {
          uint32_t vf[4];
          ldmatrix_x4_trans(vf, base + kk * 16 * L::kVStride + q * 32);
          mma_half<VT>(acc[2 * q], pf[kk], vf[0], vf[1]);
          mma_half<VT>(acc[2 * q + 1], pf[kk], vf[2], vf[3]);
        }
      }
    }
  }

  // Epilogue: full row sums, o = O / l (0 where no key was visible), rows >= Nq not written.
  // Query row r goes to output row o_rows[r] when the caller's sequence was permuted (params.h).
  float l_row[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_row[i] = l_part[i];
    l_row[i] += __shfl_xor_sync(0xffffffffu, l_row[i], 1);
    l_row[i] += __shfl_xor_sync(0xffffffffu, l_row[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (!row_valid[i]) continue;
    const float l = l_row[i];
    const int row = row0 + 8 * i;
    const int64_t out_row = p.o_rows != nullptr ? p.o_rows[row] : static_cast<int64_t>(row);
    const int64_t base = static_cast<int64_t>(b) * p.o_stride_b +
                         static_cast<int64_t>(h) * p.o_stride_h + out_row * p.o_stride_n;
#pragma unroll
    for (int n = 0; n < kOTiles; ++n)
      store_out(p.o, base + 8 * n + 2 * t, p.o_dtype, l > 0.f ? acc[n][2 * i] / l : 0.f,
                l > 0.f ? acc[n][2 * i + 1] / l : 0.f);
  }
  if (p.stage2_kept && lane == 0) p.stage2_kept[bhq * kWarps + warp] = executed;
#endif
}

// Sets the shared-memory limit and launches one (D, V dtype) instance; explicitly instantiated
// per instance in kernels/instances/ (scripts/gen_kernel_instances.py). Parameters are checked by
// launch_attention_sm80 before this is called.
template <int D, typename VT>
void launch(const AttentionParams& p, cudaStream_t stream) {
  constexpr int smem = SmemLayout<D>::kTotal;
  auto* kernel = attention_kernel<D, VT>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err == cudaSuccess) {
    kernel<<<dim3(p.num_q_blocks, p.heads, p.batch), kThreads, smem, stream>>>(p);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("attention_sm80: launch failed: ") +
                             cudaGetErrorString(err));
}

}  // namespace sparge::kernels::sm80
