// Generalised 3-D Hilbert permutation of visual tokens (docs/design.md, Hilbert token order;
// paper §3.7): tokens on a T x H x W grid are reordered along a space-filling curve before
// attention so that a block of consecutive tokens is a compact 3-D neighbourhood (higher block
// self-similarity), and the attention output is put back in the original order afterwards. Text
// tokens (a prefix and/or a suffix of the sequence) stay in place.
//
// The curve is a generalised Hilbert curve for any sizes (not only powers of two), in the spirit of
// Červený's "gilbert3d" recursion: the cuboid is split along its long axes into sub-cuboids whose
// sizes are kept even where possible, each traversed recursively with rotated axes so that the
// end of one is next to the start of the next. It starts at (t, h, w) = (0, 0, 0).
// Continuity: consecutive curve points are grid neighbours (Manhattan distance 1) whenever every
// dimension is even or 1 (the parity-preserving splits always exist). With odd sizes a few steps
// can be diagonal (each coordinate changes by at most 1); see tests/cpu/hilbert_test.cpp.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <vector>

namespace sparge::ref {

// Curve points (t, h, w) of a T x H x W grid, in curve order. Throws Error(kUsage) for a
// dimension < 1.
std::vector<std::array<int, 3>> hilbert_curve(int T, int H, int W);

// perm[k] = original token index of the k-th token in curve order, over a sequence of
// text_prefix + T*H*W + text_suffix tokens; visual token (t, h, w) has original index
// text_prefix + (t * H + h) * W + w. Text tokens map to themselves.
std::vector<int64_t> hilbert_permutation(int T, int H, int W, int text_prefix, int text_suffix);

// inv[perm[k]] = k. Throws Error(kUsage) if perm is not a permutation of 0..n-1.
std::vector<int64_t> inverse_permutation(const std::vector<int64_t>& perm);

// x [B, H, N, D] -> x[:, :, perm, :] (the permuted sequence; apply to q, k and v alike).
at::Tensor apply_permutation(const at::Tensor& x, const std::vector<int64_t>& perm);
// o_perm [B, H, N, D] computed on permuted tokens -> o in the original order:
// o[:, :, perm[k], :] = o_perm[:, :, k, :].
at::Tensor invert_permutation(const at::Tensor& o_perm, const std::vector<int64_t>& perm);

}  // namespace sparge::ref
