// Device-side building blocks of the Hopper attention kernel (attention_sm90_kernel.cuh): the
// per-thread view of the accumulator rows, the two wgmma issues, masks and the stage-2 vote, the
// integer-max online softmax with its exp2 split between the SFU and a polynomial, P packing,
// the output epilogue, and the tile walk (ring positions, Tile/TileCtx). All force-inlined into
// the kernel; nothing here owns shared memory or barriers.
//
// Shapes: a consumer warpgroup holds 64 query rows of a 128-row tile; S / P are the 64 int32 /
// fp32 accumulator entries of this thread (rows row0, row1, 32 column pairs), acc the kD / 2
// fp32 entries of O (same rows, kD / 8 column pairs per row), pv the pv_regs(kD) entries of one
// block's P·V: O's kD / 2, then 4 holding the row sums of P (entries kD / 2 and kD / 2 + 2).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "kernels/attention_sm90.cuh"
#include "kernels/params.h"

#if SPARGE_SM90A_DEVICE
#include "kernels/hopper/ptx.cuh"
#include "kernels/hopper/wgmma.cuh"
#endif

namespace sparge::kernels::sm90 {

template <typename T>
struct OutTraits;
template <>
struct OutTraits<__half> {
  static __device__ __forceinline__ void store2(__half* p, float a, float b) {
    *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
  }
};
template <>
struct OutTraits<__nv_bfloat16> {
  static __device__ __forceinline__ void store2(__nv_bfloat16* p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
  }
};
template <>
struct OutTraits<float> {
  static __device__ __forceinline__ void store2(float* p, float a, float b) {
    *reinterpret_cast<float2*>(p) = make_float2(a, b);
  }
};

#if SPARGE_SM90A_DEVICE
using namespace hopper;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int32_t kMaskedS = INT32_MIN;  // sentinel for masked logits (|S| <= 127^2 D < 2^22)

// Per-thread view of the consumer's rows.
struct Lanes {
  int warp, lane, t;
  int row0, row1;  // query tokens of accumulator entries e = 0, 1 (row0) and e = 2, 3 (row1)
  bool valid0, valid1;
};

// Descriptors of the Q tile and of stage 0's K and V tiles (rows of D bytes for Q/K, so D = 128
// fills the 128-byte swizzle and D = 64 uses the 64-byte one; V8ᵀ rows are 128 tokens). Built
// once per consumer; stages and k-steps advance them with desc_advance.
template <int kD>
__device__ __forceinline__ uint64_t qk_desc(uint32_t addr) {
  return make_smem_desc(addr, kD == 128 ? Swizzle::k128B : Swizzle::k64B, 8 * kD);
}
__device__ __forceinline__ uint64_t v_desc(uint32_t addr) {
  return make_smem_desc(addr, Swizzle::k128B, 8 * kBlockK);
}

// S = Q8 · K8ᵀ for one consumer warpgroup: (64 × D) · (128 × D)ᵀ, D / 32 k-steps of 32 bytes.
template <int kD>
__device__ __forceinline__ void issue_qk(int32_t (&s)[64], uint64_t dq, uint64_t dk) {
#pragma unroll
  for (int kk = 0; kk < kD / 32; ++kk) {
    wgmma_m64n128k32_s32_s8_s8_ss(s, desc_advance(dq, kk * 32), desc_advance(dk, kk * 32),
                                  kk > 0 ? 1 : 0);
  }
}
// Accumulator entries of one block's P·V: O's kD / 2, then the 8 columns of the ones rows that
// follow V's kD rows in every stage (kOnesRows), which hold Σ_c P[row, c] for rows row0 (entries
// kD / 2, +1) and row1 (+2, +3). The row sum of the softmax thus comes from the tensor core and
// sums exactly the e4m3 P that multiplies V, with the same per-block accumulation as O: no FADD
// per element (64 per block and thread, ~9 % of the block's instructions at D = 64), and
// o = Σ P·V / Σ P normalises the weights P·V actually used (numerics contract,
// src/reference/sparse_attention.cpp).
constexpr int pv_regs(int d) { return (d + kOnesRows) / 2; }
inline constexpr uint32_t kE4m3OnesWord = 0x38383838u;  // four e4m3 1.0

// pv = P · [V8; 1] of one block: (64 × 128) · ((D + 8) × 128)ᵀ, 4 k-steps of 32 tokens, into a
// fresh accumulator (the first k-step does not read pv). Why not straight into O: Hopper's e4m3
// wgmma adds into its accumulator with about 13 mantissa bits (truncating), so accumulating a whole
// row of blocks there loses every block whose contribution sits below 2^-13 of the running sum.
// On attention with a dominant local peak and a long tail (real images) that cost 3-5x the
// contract's error over 139 blocks (kernels/NOTES.md, "FP22 accumulation"). One block's sum
// (128 products) stays within ~2^-13 of itself; merge() adds it to O in fp32.
template <int kD>
__device__ __forceinline__ void issue_pv_block(float (&pv)[pv_regs(kD)], const uint32_t (&a)[4][4],
                                               uint64_t dv) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint64_t db = desc_advance(dv, kk * 32);
    if constexpr (kD == 128) {
      wgmma_m64n136k32_f32_e4m3_rs(pv, a[kk], db, kk > 0 ? 1 : 0);
    } else {
      wgmma_m64n72k32_f32_e4m3_rs(pv, a[kk], db, kk > 0 ? 1 : 0);
    }
  }
}

// The ones rows after each stage's V8ᵀ tile (kVTileBytes in, kOnesRows × 128 bytes), written once
// per CTA by all its threads: TMA only ever writes the kD rows before them. A run of equal bytes
// is invariant under the 128-byte swizzle, so no swizzled addressing is needed. The fence makes
// the generic-proxy stores visible to wgmma's async-proxy reads; the caller's barrier follows.
template <int kVTileBytes, int kVStageBytes, int kStages>
__device__ __forceinline__ void fill_ones_rows(uint8_t* s_v, int thread, int threads) {
  constexpr int kWords = kOnesRows * 128 / 4;
  for (int i = thread; i < kStages * kWords; i += threads) {
    reinterpret_cast<uint32_t*>(s_v + (i / kWords) * kVStageBytes + kVTileBytes)[i % kWords] =
        kE4m3OnesWord;
  }
  fence_proxy_async_shared();
}

__device__ __forceinline__ bool is_masked(int i, int j, const Lanes& ln, const AttentionParams& p) {
  const int tk = j * kBlockK + 8 * (i / 4) + 2 * ln.t + (i % 2);
  const int tq = (i % 4) < 2 ? ln.row0 : ln.row1;
  return tk >= p.seq_k || (p.causal && tk > tq + p.causal_offset);
}

template <typename T>
__device__ __forceinline__ T quad_max(T v) {
  v = max(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return max(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

// Stage 2 vote of this warp (16 rows): skip iff max over its valid rows of (m_local - m_new) is
// below lambda. Rows beyond Nq and rows still at -inf do not vote (their d is -inf).
__device__ __forceinline__ bool stage2_skip(float ml0, float ml1, float mn0, float mn1,
                                            const Lanes& ln, float lambda) {
  float diff = fmaxf((ln.valid0 && mn0 != kNegInf) ? ml0 - mn0 : kNegInf,
                     (ln.valid1 && mn1 != kNegInf) ? ml1 - mn1 : kNegInf);
#pragma unroll
  for (int o = 4; o <= 16; o <<= 1) diff = fmaxf(diff, __shfl_xor_sync(0xffffffffu, diff, o));
  return diff < lambda;  // lambda = -inf never skips
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// alpha = 2^(m_old - m_new), the factor a row's O and l are rescaled by when its maximum moves
// from m_old to m_new (1 while the row has no finite maximum yet; 0 from m_old = -inf). The
// argument is <= 0, so the SFU's approximation needs none of exp2f's range handling below -126
// (a factor under 2^-126 flushes to 0 instead of a subnormal: ~10 fewer instructions per block).
__device__ __forceinline__ float rescale_factor(float m_old, float m_new) {
  return m_new == kNegInf ? 1.f : fast_exp2(m_old - m_new);
}

// P (fp32, accumulator layout) -> e4m3 A fragments, in place. This thread holds, per 8-column
// chunk c, columns 8c + 2t, +1 of rows g (e = 0, 1) and g + 8 (e = 2, 3); v8 stores the tokens of
// each 32-token k-step in the order that makes those pairs the A fragment's bytes 4t..4t+3
// (chunks 0, 1) and 16 + 4t.. (chunks 2, 3) (kernels/params.h, v8_slot): no shuffles.
__device__ __forceinline__ float as_f32(float v) { return v; }
__device__ __forceinline__ float as_f32(int32_t v) { return __int_as_float(v); }
template <typename T>  // float, or int32 holding float bits (in-place softmax)
__device__ __forceinline__ void pack_p(const T (&xv)[64], uint32_t (&a)[4][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // r = 0: row g; r = 1: row g + 8
      const int c0 = 4 * (4 * kk + 0) + 2 * r, c1 = 4 * (4 * kk + 1) + 2 * r;
      const int c2 = 4 * (4 * kk + 2) + 2 * r, c3 = 4 * (4 * kk + 3) + 2 * r;
      a[kk][r] =
          pack_e4m3x4(as_f32(xv[c0]), as_f32(xv[c0 + 1]), as_f32(xv[c1]), as_f32(xv[c1 + 1]));
      a[kk][2 + r] =
          pack_e4m3x4(as_f32(xv[c2]), as_f32(xv[c2 + 1]), as_f32(xv[c3]), as_f32(xv[c3 + 1]));
    }
  }
}

// P = 0 for a warp whose rows stage 2 skips while the rest of its warpgroup still runs P·V.
__device__ __forceinline__ void clear_p(uint32_t (&a)[4][4]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) a[kk][r] = 0u;
  }
}

// O = O · alpha + pv and l = l · alpha + Σ P in fp32: the online-softmax rescale for the block
// whose P·V is in pv, fused with the second level of the accumulation (issue_pv_block). alpha0 /
// alpha1 are the factors of rows row0 / row1 (accumulator entries e = 0, 1 / e = 2, 3).
template <int kD>
__device__ __forceinline__ void merge(float (&acc)[kD / 2], float& l0, float& l1,
                                      const float (&pv)[pv_regs(kD)], float alpha0, float alpha1) {
  l0 = fmaf(l0, alpha0, pv[kD / 2]);
  l1 = fmaf(l1, alpha1, pv[kD / 2 + 2]);
#pragma unroll
  for (int i = 0; i < kD / 2; i += 4) {
    acc[i] = fmaf(acc[i], alpha0, pv[i]);
    acc[i + 1] = fmaf(acc[i + 1], alpha0, pv[i + 1]);
    acc[i + 2] = fmaf(acc[i + 2], alpha1, pv[i + 2]);
    acc[i + 3] = fmaf(acc[i + 3], alpha1, pv[i + 3]);
  }
}

// One block's softmax statistics from the int32 logits: masks (sentinel), row maxima in the
// integer domain (x = S · blk is monotone in S, blk > 0, so max x = float(max S) · blk exactly).
// kMask is a template parameter: as a run-time flag the compiler if-converted the per-element
// mask tests into every block (≈ 500 extra SASS instructions per block and warp, measured).
template <bool kMask>
__device__ __forceinline__ void block_max_int(int32_t (&s)[64], int j, const Lanes& ln,
                                              const AttentionParams& p, float blk0, float blk1,
                                              float& ml0, float& ml1) {
  if constexpr (kMask) {
#pragma unroll
    for (int i = 0; i < 64; ++i) {
      if (is_masked(i, j, ln, p)) s[i] = kMaskedS;
    }
  }
  int32_t im0 = kMaskedS, im1 = kMaskedS;
#pragma unroll
  for (int i = 0; i < 64; i += 4) {
    im0 = max(im0, max(s[i], s[i + 1]));
    im1 = max(im1, max(s[i + 2], s[i + 3]));
  }
  im0 = quad_max(im0);
  im1 = quad_max(im1);
  ml0 = im0 == kMaskedS ? kNegInf : static_cast<float>(im0) * blk0;
  ml1 = im1 == kMaskedS ? kNegInf : static_cast<float>(im1) * blk1;
}

// 2^x on the FMA/ALU pipes (x <= 8; x = -inf gives ~1e-38, which rounds to e4m3 zero): round
// to the nearest integer n with the 1.5 * 2^23 trick, 2^f for f in [-0.5, 0.5] by a cubic
// (least-squares fit, max relative error 1.4e-4, far below e4m3's 2^-4 step), n into the exponent.
// Used for a fraction of the elements to offload the SFU (16 EX2 per clock per SM).
__device__ __forceinline__ float poly_exp2(float x) {
  x = fmaxf(x, -126.0f);
  const float t = x + 12582912.0f;
  const float f = x - (t - 12582912.0f);
  const float q = fmaf(fmaf(fmaf(0.05502927f, f, 0.24225698f), f, 0.69325305f), f, 0.99995134f);
  return __int_as_float(__float_as_int(q) + (__float_as_int(t) << 23));
}

// p = exp2(x - m_new + 8) with x = S · blk (blk0 for row0's elements, blk1 for row1's: Q has a
// scale per row): I2FP + FFMA + EX2 per element (the row sums come from the P·V GEMM,
// issue_pv_block).
// kPolyEvery = n > 0: every n-th element (n even) goes through poly_exp2 instead of the SFU.
__device__ __forceinline__ void store_f32(float& d, float v) { d = v; }
__device__ __forceinline__ void store_f32(int32_t& d, float v) { d = __float_as_int(v); }
// x may alias s (T = int32_t: p's bits replace S in place, saving 64 registers).
template <bool kMask, int kPolyEvery = 0, typename T>
__device__ __forceinline__ void block_exp_int(const int32_t (&s)[64], float blk0, float blk1,
                                              float mn0, float mn1, T (&x)[64]) {
  const float c0 = mn0 == kNegInf ? kNegInf : 8.0f - mn0;  // rows with m_new = -inf: p = 0
  const float c1 = mn1 == kNegInf ? kNegInf : 8.0f - mn1;
#pragma unroll
  for (int i = 0; i < 64; i += 2) {
    const float c = (i % 4) < 2 ? c0 : c1;
    const float blk = (i % 4) < 2 ? blk0 : blk1;
    const float a0 = fmaf(static_cast<float>(s[i]), blk, c);
    const float a1 = fmaf(static_cast<float>(s[i + 1]), blk, c);
    float p0 = fast_exp2(a0);
    constexpr int kEvery = kPolyEvery > 0 ? kPolyEvery : 1;  // no % 0 when the share is none
    float p1 = (kPolyEvery > 0 && (i + 1) % kEvery == kEvery - 1) ? poly_exp2(a1) : fast_exp2(a1);
    if constexpr (kMask) {
      if (s[i] == kMaskedS) p0 = 0.f;
      if (s[i + 1] == kMaskedS) p1 = 0.f;
    }
    store_f32(x[i], p0);
    store_f32(x[i + 1], p1);
  }
}

// l0 / l1: full row sums (every thread of a quad holds its rows' sums).
template <int kD, typename OutT>
__device__ __forceinline__ void store_out(const float (&acc)[kD / 2], float l0, float l1,
                                          const Lanes& ln, const AttentionParams& p, int b, int h,
                                          int64_t bhkv) {
  // One IEEE reciprocal per row instead of a division per element (64 divisions per thread sat
  // on every tile's critical path; the result differs from acc / l by at most an ulp or two).
  const float r0 = l0 == 0.f ? 0.f : 1.f / l0, r1 = l1 == 0.f ? 0.f : 1.f / l1;
  const float* v_scale = p.v_scale + bhkv * kD;
  OutT* out = static_cast<OutT*>(p.o) + b * p.o_stride_b + h * p.o_stride_h;
  // Output rows of the two accumulator rows: o_rows scatters a permuted sequence back to the
  // caller's order (params.h). One index load per row, only for rows < seq_q (o_rows has Nq).
  const int64_t n0 = p.o_rows != nullptr && ln.valid0 ? p.o_rows[ln.row0] : ln.row0;
  const int64_t n1 = p.o_rows != nullptr && ln.valid1 ? p.o_rows[ln.row1] : ln.row1;
#pragma unroll
  for (int i = 0; i < kD / 2; i += 4) {
    const int d = 8 * (i / 4) + 2 * ln.t;
    const float vs0 = v_scale[d], vs1 = v_scale[d + 1];
    if (ln.valid0) {
      OutTraits<OutT>::store2(out + n0 * p.o_stride_n + d, acc[i] * r0 * vs0,
                              acc[i + 1] * r0 * vs1);
    }
    if (ln.valid1) {
      OutTraits<OutT>::store2(out + n1 * p.o_stride_n + d, acc[i + 2] * r1 * vs0,
                              acc[i + 3] * r1 * vs1);
    }
  }
}

// K8 block j and V8ᵀ block j of kv head bhkv (rows bhkv · nk · 128 + 128 j of k8, columns 128 j
// of the V8ᵀ rows bhkv · D) into one stage's buffers, each landing on its own barrier: consumers
// wait for K before QKᵀ and for V only before P·V. Issued by one thread.
template <int kD>
__device__ __forceinline__ void load_kv_block(int8_t* k_dst, uint8_t* v_dst, uint64_t* k_bar,
                                              uint64_t* v_bar, const void* tm_k, const void* tm_v,
                                              int64_t bhkv, int num_k_blocks, int j) {
  mbar_arrive_expect_tx(k_bar, kBlockK * kD);
  tma_load_2d(k_dst, tm_k, k_bar, 0, static_cast<int32_t>((bhkv * num_k_blocks + j) * kBlockK));
  mbar_arrive_expect_tx(v_bar, kD * kBlockK);
  tma_load_2d(v_dst, tm_v, v_bar, j * kBlockK, static_cast<int32_t>(bhkv * kD));
}

// Position g in a ring of kSlots buffers (shared-memory stages or Q slots): the buffer, and the
// mbarrier phase parity of this pass over the ring. g counts over the CTA's whole life (all its
// tiles), so it is unsigned: % and / by the power-of-two kSlots are a mask and a shift (signed
// arithmetic on the GEMM-issue path cost 4 % at D = 128, NOTES run 17).
template <int kSlots>
__device__ __forceinline__ int ring_slot(uint32_t g) {
  static_assert(kSlots > 0 && (kSlots & (kSlots - 1)) == 0);
  return static_cast<int>(g % kSlots);
}
template <int kSlots>
__device__ __forceinline__ uint32_t ring_phase(uint32_t g) {
  return (g / kSlots) & 1;
}

// One tile: a CTA's pass over one (b, h, q block) row of the LUT.
struct Tile {
  int b, h, qb;
  int64_t bhkv;
  int64_t row_idx;         // (b, h, qb) index of lut_len / stage2_kept; q_scale's rows start
                           // at row_idx · kBlockQ
  int num_iters;           // K blocks visited
  const int32_t* lut_row;  // nullptr: dense mode (every causally valid block)
};

// Tile t of the B · H · nq tiles. The q block varies fastest, so the CTAs in flight share one
// head's K/V in L2; causal: within a head the last q blocks (the most K blocks) come first.
__device__ __forceinline__ Tile make_tile(const AttentionParams& p, int t) {
  const int nq = p.num_q_blocks, nk = p.num_k_blocks;
  const int x = t % nq, bh = t / nq;
  Tile w;
  w.b = bh / p.heads;
  w.h = bh % p.heads;
  w.qb = p.causal ? nq - 1 - x : x;
  w.bhkv = static_cast<int64_t>(w.b) * p.kv_heads + w.h / (p.heads / p.kv_heads);
  w.row_idx = static_cast<int64_t>(bh) * nq + w.qb;
  w.lut_row = p.lut ? p.lut + w.row_idx * nk : nullptr;
  if (p.lut) {
    w.num_iters = p.lut_len[w.row_idx];
  } else {
    w.num_iters = nk;
    if (p.causal) {
      const int tq_max = min(p.seq_q - 1, w.qb * kBlockQ + kBlockQ - 1);
      w.num_iters = min(nk, (tq_max + p.causal_offset) / kBlockK + 1);
    }
  }
  return w;
}

// What one consumer warpgroup needs of the tile it is working on, besides the Tile itself.
struct TileCtx {
  Tile w;
  int slot;                  // its Q slot
  float lambda;              // stage-2 threshold of its head (log2 units); -inf = stage 2 off
  float q_scale0, q_scale1;  // INT8 scales of this thread's two query rows (row0, row1)
  uint64_t dq;               // wgmma descriptor of this consumer's 64 rows of Q in the slot
};

// This thread's first accumulator row within its 128-row tile (consumer warpgroup cw); the
// second is 8 below.
__device__ __forceinline__ int tile_row0(int cw, const Lanes& ln) {
  return cw * kRowsPerWarpgroup + ln.warp * 16 + ln.lane / 4;
}

// The query tokens of this thread's accumulator rows in tile w (consumer warpgroup cw).
__device__ __forceinline__ void set_rows(Lanes& ln, const Tile& w, int cw,
                                         const AttentionParams& p) {
  ln.row0 = w.qb * kBlockQ + tile_row0(cw, ln);
  ln.row1 = ln.row0 + 8;
  ln.valid0 = ln.row0 < p.seq_q;
  ln.valid1 = ln.row1 < p.seq_q;
}

// The first K block index whose logits need the per-element mask in tile w: the partial last
// block (Nk not a multiple of 128) and, causal, every block reaching past the tile's first query
// row, j·128 + 127 > qb·128 + offset, i.e. j >= (qb·128 + offset + 1) / 128 (offset >= 0, checked
// at launch, so the division is a plain non-negative one). Both conditions are "j at or above a
// bound", so a block costs one comparison against it. warpgroup keeps the bound for the tile;
// pingpong calls this per block, because one more live value in its TileCtx costs it 8 B more
// spills (NOTES run 27).
__device__ __forceinline__ int first_masked_block(const AttentionParams& p, const Tile& w) {
  const int from = (p.seq_k % kBlockK) ? p.num_k_blocks - 1 : p.num_k_blocks;
  if (!p.causal) return from;
  return min(from, (w.qb * kBlockQ + p.causal_offset + 1) / kBlockK);
}

// INT8 scales of this thread's two query rows in tile w (q_scale holds one per row; tile w's
// start at row_idx · kBlockQ).
__device__ __forceinline__ void q_row_scales(const AttentionParams& p, const Tile& w, int cw,
                                             const Lanes& ln, float& s0, float& s1) {
  const float* qs = p.q_scale + w.row_idx * kBlockQ + tile_row0(cw, ln);
  s0 = qs[0];
  s1 = qs[8];
}

// Tile w's rows of the output (ln holds them), in the launch's output dtype.
template <int kD>
__device__ __forceinline__ void store_any(const float (&acc)[kD / 2], float l0, float l1,
                                          const Lanes& ln, const AttentionParams& p,
                                          const Tile& w) {
  switch (p.o_dtype) {
    case DType::kFloat16:
      store_out<kD, __half>(acc, l0, l1, ln, p, w.b, w.h, w.bhkv);
      break;
    case DType::kBFloat16:
      store_out<kD, __nv_bfloat16>(acc, l0, l1, ln, p, w.b, w.h, w.bhkv);
      break;
    case DType::kFloat32:
      store_out<kD, float>(acc, l0, l1, ln, p, w.b, w.h, w.bhkv);
      break;
  }
}

#endif  // SPARGE_SM90A_DEVICE

}  // namespace sparge::kernels::sm90
