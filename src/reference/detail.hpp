// Internals shared by the reference's translation units (not part of the public API).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>

#include "reference/reference.hpp"

namespace sparge::ref::detail {

inline constexpr float kLog2e = 1.44269504088896340736f;
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Validated problem sizes of one attention call.
struct Shape {
  int64_t batch = 0, heads = 0, kv_heads = 0, nq_tokens = 0, nk_tokens = 0, head_dim = 0;
  int64_t group() const { return heads / kv_heads; }
};
// Checks ranks, B/D agreement, k == v shape, H % Hkv, N >= 1, causal with Nq > Nk (kUsage).
Shape check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal);

int64_t ceil_div(int64_t a, int64_t b);
void check_geometry(const Geometry& geometry);
// softmax scale as given or 1/sqrt(D) (double) and its log2-domain fp32 factor
// float(scale * log2(e)) (the kernels' sm_scale_log2).
double softmax_scale(const AttentionOptions& options, int64_t head_dim);
float softmax_scale_log2(const AttentionOptions& options, int64_t head_dim);

// Per-block statistics plus the zero-padded INT8 values as fp32, [B, H, nblk, blk, D].
struct BlockData {
  BlockStats stats;
  at::Tensor padded;
};
// How INT8 scales are shared: one per block (K) or one per token row (Q).
enum class Int8Scale { kPerBlock, kPerRow };
// x: [B, H, N, D] fp32, already smoothed where required. stats.scale is [B, H, nblk] per block,
// or [B, H, nblk * block] per row (padded rows 1), the layout of the kernels' q_scale.
BlockData block_data(const at::Tensor& x, int64_t block, Int8Scale granularity);
// K minus the mean of its tokens 0, S, 2S, ... (S = kernels::kKMeanStride) in fp32,
// [B, Hkv, Nk, D].
at::Tensor smooth_k(const at::Tensor& k);

// Token-level visibility of block pairs (i, j): bool [R, bq, bk] for the given block indices
// (int64 [R] each): tq < Nq, tk < Nk and, when causal, tk <= tq + (Nk - Nq).
at::Tensor token_visibility(const at::Tensor& qi, const at::Tensor& kj, int64_t bq, int64_t bk,
                            int64_t nq_tokens, int64_t nk_tokens, bool causal);

}  // namespace sparge::ref::detail
