// CPU reference of SpargeAttn as sparge implements it (docs/design.md): stage-1 block-mask
// prediction, the quantised block-sparse attention with stage-2 skipping (emulating the CUDA
// kernels' numerics), dense attention, and the error metrics. libtorch ops, CPU tensors.
//
// Shapes at every boundary, HND layout:
//   q [B, H, Nq, D]   k, v [B, Hkv, Nk, D]   with H % Hkv == 0 (GQA/MQA: query head h uses
//   kv head h / (H / Hkv)); o [B, H, Nq, D]; block mask [B, H, nq, nk] with
//   nq = ceil(Nq / block_q), nk = ceil(Nk / block_k).
// These are the shapes of the captured tensors and of the kernels' inputs, so the reference can
// be compared with both without reshaping.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace sparge::ref {

// How P·V is computed by a kernel (its name states it: "i8f8" or "i8f16").
enum class PvNumerics {
  kFp8,   // P in FP8 e4m3 with the exp2 offset, V in FP8 e4m3 with a per-channel scale
  kHalf,  // P and V in the input dtype (fp16 or bf16), for GPUs without FP8 MMA
};

// A kernel's block geometry. The predictor always uses the kernel's geometry; a tuned config
// records it and is rejected by a kernel of another geometry.
struct Geometry {
  int block_q = 128;   // query rows per block (one CTA tile)
  int block_k = 128;   // key tokens per block
  int warp_rows = 16;  // query rows sharing one stage-2 skip decision (one warp's rows)
  PvNumerics pv = PvNumerics::kFp8;
  std::string name = "sm90";  // "sm90" (Hopper wgmma) or "sm80" (portable mma.sync)
};
Geometry hopper_geometry();    // 128 x 128, warp rows 16, FP8 P·V
Geometry portable_geometry();  // 128 x 64, warp rows 16, half P·V
// By name ("sm90", "sm80"); throws Error(kUsage) listing the known names.
Geometry geometry_by_name(const std::string& name);

// Per query head thresholds; every vector has H entries.
struct Thresholds {
  std::vector<float> tau;     // TopCdf mass in [0, 1] (ignored where topk is given)
  std::vector<float> theta;   // block self-similarity threshold in [-1, 1]; sim > theta = similar
  std::vector<float> lambda;  // stage-2 threshold, <= 0, natural-log units; -inf disables
  std::vector<float> topk;    // optional (empty = TopCdf mode): fraction of K blocks kept
  // Optional (empty = none): the most stage-1 sparsity a head may reach on any input, in
  // [0, 1]. Where TopCdf(τ) or top-k would skip more, rows take further candidates as a larger
  // τ would give them (predict_block_mask), so an input unlike the calibration samples is not
  // sparsified far beyond what they saw (reports/tune-real/holdout-dit.md, capping).
  std::vector<float> sparsity_cap;
  static Thresholds uniform(int heads, float tau, float theta,
                            float lambda = -std::numeric_limits<float>::infinity());
};

struct AttentionOptions {
  bool causal = false;  // top-left aligned when Nq == Nk, bottom-right when Nq < Nk
  bool sink = false;    // first K block always kept
  double scale = 0.0;   // softmax scale; 0 means 1/sqrt(D)
};

// Per-block statistics of one fused pass over Q or K (what the CUDA prediction kernel produces).
struct BlockStats {
  at::Tensor pooled;  // [B, H, nblk, D] fp32: mean of the block's valid rows
  at::Tensor sim;     // [B, H, nblk] fp32: mean pairwise cosine similarity of the valid rows
  at::Tensor values;  // [B, H, N, D] int8: symmetric quantisation (K after smoothing)
  // Dequantisation scale (amax / 127), fp32: K [B, Hkv, nblk], one per block; Q [B, H, nblk *
  // blk], one per token row (padded rows 1), the layout of the kernels' q_scale.
  at::Tensor scale;
};
// Q is not smoothed. K is smoothed by its per-(b, kv head) mean of every kKMeanStride-th token
// (kernels/params.h) before pooling and quantisation (softmax is invariant to that shift; it
// raises similarity and INT8 precision).
BlockStats q_block_stats(const at::Tensor& q, int block_q);
BlockStats k_block_stats(const at::Tensor& k, int block_k);

// Stage 1: the block mask, bool [B, H, nq, nk] (docs/design.md, Stage 1: compressed map,
// TopCdf / top-k, forced rows and columns for non-similar blocks, causal, sink). Every row keeps
// >= 1 block among its causally valid ones.
at::Tensor predict_block_mask(const at::Tensor& q, const at::Tensor& k, const Geometry& geometry,
                              const Thresholds& thresholds, const AttentionOptions& options);
// Same, from precomputed statistics (the tuner computes them once per head and sample).
at::Tensor predict_block_mask(const BlockStats& q_stats, const BlockStats& k_stats,
                              int64_t nq_tokens, int64_t nk_tokens, const Geometry& geometry,
                              const Thresholds& thresholds, const AttentionOptions& options);

// Causally valid block pairs, bool [nq, nk] (all true when not causal).
at::Tensor causal_block_mask(int64_t nq_tokens, int64_t nk_tokens, const Geometry& geometry,
                             bool causal);

struct SparseResult {
  at::Tensor o;                  // [B, H, Nq, D] fp32
  int64_t valid_blocks = 0;      // causally valid (q block, k block) pairs, summed over B, H
  int64_t kept_blocks = 0;       // pairs whose QK^T product was computed (mask true)
  double pv_skipped_blocks = 0;  // P·V products skipped by stage 2, in block units (a block
                                 // counts block_q/warp_rows groups, each 1/groups of a product)
  // Of pv_skipped_blocks, the groups made only of padded query rows (rows >= Nq of the last Q
  // block): the kernels skip them too (they have nothing to add), but they are no saving, so
  // the stage-1+2 sparsity leaves them out (N = 1 would otherwise report 7/16 for a dense head).
  double pv_padding_blocks = 0;
  double sparsity_stage1() const;  // 1 - kept / valid
  // (2 (valid - kept) + pv_skipped - pv_padding) / (2 valid), as stage 1 + stage 2's share
  double sparsity_stage12() const;
};

// The quantised block-sparse attention exactly as the kernels compute it: INT8 Q/K per block
// (K smoothed), int32 dot products, online softmax in exp2 over the kept K blocks in ascending
// order, stage-2 skip per group of `warp_rows` rows when max_rows(m_local - m_new) < lambda,
// P·V per `geometry.pv`, fp32 accumulation. `mask` is bool [B, H, nq, nk].
SparseResult sparse_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& mask, const std::vector<float>& lambda,
                              const Geometry& geometry, const AttentionOptions& options);

// Dense attention in fp64 (exact reference) or fp32; causal per AttentionOptions.
// Returns [B, H, Nq, D] in `dtype`.
at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const AttentionOptions& options, at::ScalarType dtype = at::kDouble);

// ---------------------------------------------------------------------------------------------
// Quantisation primitives (exposed so the kernels' tests and the tuner can check them directly).

// FP8 e4m3 ("fn": no infinities, max 448) rounding of fp32 values, round to nearest even,
// saturating at +-448 (clamped before the conversion). Returns fp32 holding e4m3 values.
at::Tensor round_e4m3(const at::Tensor& x);

// V as the FP8 P·V product sees it: per (b, kv head, channel) scale = amax over the Nk tokens of
// |v| / 448 (1 where amax == 0); values = round_e4m3(v / scale) (fp32 division).
struct VFp8 {
  at::Tensor values;  // [B, Hkv, Nk, D] fp32 holding e4m3 values
  at::Tensor scale;   // [B, Hkv, D] fp32
};
VFp8 quantize_v_fp8(const at::Tensor& v);

// ---------------------------------------------------------------------------------------------
// Precomputed state for repeated evaluation of the same inputs (many masks / lambdas per head).
// Holds the block statistics for the predictor and the INT8 logits x of every block pair (log2
// units, token mask applied), so a candidate mask only redoes the online softmax and P·V over its
// kept blocks. Results are bit-identical to the uncached functions. Used by the reference tests;
// the tuner's cpu oracle (tune/oracle.cpp) does not use it (it keeps the block statistics and
// caches results per (mask, λ) instead).
// Memory: 4 * B * H * nq*block_q * nk*block_k bytes of logits (64 MiB for one head at N = 4096),
// so build one per head (slice q with q.narrow(1, h, 1) and k, v with the head's kv head).
struct HeadCache {
  Geometry geometry;
  AttentionOptions options;
  int64_t batch = 0, heads = 0, kv_heads = 0, nq_tokens = 0, nk_tokens = 0, head_dim = 0;
  BlockStats q_stats, k_stats;  // as q_block_stats / k_block_stats
  at::Tensor logits;            // [B, H, nq, nk, block_q, block_k] fp32, -inf where masked
  at::Tensor v_pv;              // [B, Hkv, nk, block_k, D] fp32: V as P·V sees it (zero padded)
  at::Tensor v_scale;           // [B, Hkv, D] fp32 (FP8 mode; ones in half mode)
  at::ScalarType half_dtype = at::kHalf;  // rounding of P and V in half mode
};
HeadCache make_head_cache(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const Geometry& geometry, const AttentionOptions& options);
at::Tensor predict_block_mask(const HeadCache& cache, const Thresholds& thresholds);
SparseResult sparse_attention(const HeadCache& cache, const at::Tensor& mask,
                              const std::vector<float>& lambda);

// Diagnostic/test path: the same block schedule, masking and stage-2 logic as sparse_attention
// with every quantisation removed (fp32 logits q·k·s·log2e, fp32 P and V, no exp2 offset). With
// every block kept and lambda = -inf it equals dense attention up to fp32 rounding; the difference
// between this and sparse_attention is the quantisation error alone.
SparseResult sparse_attention_float(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const at::Tensor& mask, const std::vector<float>& lambda,
                                    const Geometry& geometry, const AttentionOptions& options);

struct Metrics {
  double rel_l1 = 0;  // sum|o - ref| / sum|ref|  (the budget metric)
  double cosine = 0;  // cosine similarity of the flattened tensors
  double rmse = 0;    // sqrt(mean((o - ref)^2))
};
Metrics compare(const at::Tensor& o, const at::Tensor& ref);

}  // namespace sparge::ref
