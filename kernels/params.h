// The one parameter struct that crosses the kernel boundary (plain pointers, sizes, strides).
// Filled by src/runtime from at::Tensors; no torch/fmt/yaml/HDF5 here.
//
// Data layouts produced by the prediction/quantisation kernels and consumed by the attention
// kernels (all HND; padded to whole blocks with zeros so tile loads need no bounds checks):
//   q8      int8  [B, H,   nq * block_q, D]        per-row INT8 of Q
//   k8      int8  [B, Hkv, nk * block_k, D]        per-block INT8 of K - k_mean (kKMeanStride)
//   q_scale fp32  [B, H,   nq * block_q]           dequantisation scale of each Q row (padded
//                                                  rows 1): the kernels scale each accumulator
//                                                  row anyway, so a row scale costs one FMUL
//                                                  per block and row, and a block's largest row
//                                                  no longer sets the others' INT8 step
//   k_scale fp32  [B, Hkv, nk]
//   v8      e4m3  [B, Hkv, D, nk * block_k]        FP8 V, transposed (tokens contiguous): the
//                                                  B operand of P·V must be K-major for FP8 MMA;
//                                                  tokens permuted inside each 32-token group
//                                                  (v8_slot below)
//   vh      half  [B, Hkv, nk * block_k, D]        fp16/bf16 V for the half-P·V kernels
//   v_scale fp32  [B, Hkv, D]                      per-channel FP8 scale (amax / 448)
//   lut     int32 [B, H, nq, nk]                   kept K block indices, ascending, absolute
//   lut_len int32 [B, H, nq]                       number of valid entries of each lut row (>= 1)
//   o       fp16/bf16 output with explicit strides (HND or NHD views of [B, H, Nq, D])
#pragma once

#include <cstdint>

namespace sparge::kernels {

// Byte position of token x (0..31) inside its 32-token group of a v8 row. Why: the P·V wgmma
// contracts over tokens, so any token order works if P's columns and V's rows agree. This order
// is the one in which the QKᵀ accumulator already holds P: a thread owns columns 8c + 2t + {0,1}
// of chunk c, and the FP8 A fragment wants k = 4t..4t+3 (chunks 0, 1) and 16 + 4t.. (chunks
// 2, 3), so P packs into A in place with no shuffles. Token x = 8c + 2t + e goes to slot
// 16 (c / 2) + 4t + 2 (c % 2) + e; the map is a bijection of 0..31 (tested).
constexpr int v8_slot(int x) {
  const int c = x / 8, t = (x % 8) / 2, e = x % 2;
  return 16 * (c / 2) + 4 * t + 2 * (c % 2) + e;
}

// K is smoothed by the mean of every kKMeanStride-th token of its (b, kv head), tokens 0, 16, 32,
// ... of the sequence as attended (after any token permutation). Why a sample: softmax is
// invariant to any vector subtracted from every key, so the mean only has to remove the channel
// bias that would waste INT8 range, and 1/16 of the tokens estimates it as well as all of them
// (real-image tensors: the same attention error to 3 digits). The exact mean cost a full extra
// read of K (268 MB, ~0.09 ms at 1,32,32768,128); the sample costs 1/16 of that.
constexpr int kKMeanStride = 16;

enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };

// The Hopper attention kernels by what they do (kernels/attention_sm90.cuh has the designs,
// kernels/NOTES.md their measurements). kDefault runs each head dim's fastest: warpgroup at
// D = 64, pingpong at D = 128. serial and grid are experiments, compiled only with the CMake
// option SPARGE_KERNEL_EXPERIMENTS=ON.
enum class Sm90Kernel : int {
  kDefault = 0,
  kPingPong = 1,   // "pingpong": producer + two consumer warpgroups taking turns, persistent grid
  kWarpgroup = 2,  // "warpgroup": one warpgroup of 64 rows per CTA, several CTAs per SM
  kSerial = 3,     // "serial" (experiment): one 128-row CTA, stage 2 skips whole P·V products
  kGrid = 4,       // "grid" (experiment): pingpong with one tile per CTA instead of persistent
};

struct AttentionParams {
  // Quantised inputs (see the layouts above).
  const int8_t* q8 = nullptr;
  const int8_t* k8 = nullptr;
  const void* v = nullptr;  // v8 (FP8 P·V kernels) or vh (half P·V kernels)
  const float* q_scale = nullptr;
  const float* k_scale = nullptr;
  const float* v_scale = nullptr;  // FP8 kernels only
  const int32_t* lut = nullptr;
  const int32_t* lut_len = nullptr;

  // Stage-2 thresholds per query head [H], already in log2 units (lambda * log2(e)); -inf
  // disables skipping. nullptr = stage 2 off for every head.
  const float* lambda_log2 = nullptr;

  // Output [B, H, Nq, D] with element strides (so HND and NHD outputs need no copy).
  void* o = nullptr;
  int64_t o_stride_b = 0, o_stride_h = 0, o_stride_n = 0;
  // Optional int64 [Nq] (device memory): the output of query row n (of the order q8 was
  // quantised in) is stored at row o_rows[n] of o, which scatters a permuted sequence back to the
  // caller's order in the epilogue (QuantParams' InputView::rows is the gather on the way in).
  // Must be a permutation of 0..Nq-1 (not checked on the device). nullptr: row n at row n.
  const int64_t* o_rows = nullptr;
  DType o_dtype = DType::kFloat16;
  DType v_dtype = DType::kFloat16;  // half P·V kernels: dtype of vh

  // Optional stage-2 statistics, int32 [B, H, nq, block_q / warp_rows]: per row group (one
  // warp's 16 rows), the kept K blocks it did not skip in stage 2. Written once per group with a
  // plain store (no atomics, no need to zero it). sm80 skips the P·V of a skipping warp, so there
  // this is the P·V products run; the sm90 kernels pingpong, grid and warpgroup always issue P·V
  // (P = 0 for a skipping warp), so there it counts decisions. nullptr = not collected.
  int32_t* stage2_kept = nullptr;

  // Which Hopper kernel launch_attention_sm90 runs (ignored by sm80).
  Sm90Kernel sm90_kernel = Sm90Kernel::kDefault;
  // The persistent sm90 kernel (pingpong) only: at most this many CTAs (0 = one per SM). Tests
  // use small caps so that every CTA walks many tiles through the same shared-memory rings.
  int max_ctas = 0;
  // The persistent sm90 kernel (pingpong) only: int32 [2] of device memory, zero before the first
  // launch that uses it, which the kernel leaves zero again (the last CTA to finish resets it), so
  // one allocation serves every launch of a stream: [0] claims tiles, [1] counts finished CTAs.
  // Launches that share it must not overlap (one stream). nullptr: the launch allocates
  // stream-ordered memory for itself (cudaMallocAsync, memset, free) each time.
  int* tile_counter = nullptr;

  int batch = 0, heads = 0, kv_heads = 0;
  int seq_q = 0, seq_k = 0;  // valid tokens (Nq, Nk); padded extents are nq*block_q, nk*block_k
  int head_dim = 0;
  int num_q_blocks = 0, num_k_blocks = 0;
  float sm_scale_log2 = 0.f;  // softmax scale * log2(e)
  bool causal = false;        // token mask inside blocks; key t_k visible to query t_q iff
  int causal_offset = 0;      // t_k <= t_q + causal_offset, causal_offset = Nk - Nq (>= 0)
};

}  // namespace sparge::kernels
