// Token permutation for the inference side (issue 16): a config tuned with `permutation:
// hilbert` must see Q/K/V in the Hilbert order before prediction and kernel, and its output put
// back after. Both are one gather (index_select along N) on the tensors' device: bandwidth-bound
// passes of B*H*N*D elements each, timed by the bench as part of the prepare cost.
//
// ATen only (no kernels/ code, no CUDA API): works on CUDA and CPU tensors alike, so the CPU
// tests check it against ref::apply_permutation / invert_permutation.
//
// Shapes: x [B, H, N, D] (any strides; the result is contiguous [B, H, N, D]).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/params.h"
#include "reference/reference.hpp"
#include "runtime/runtime.hpp"

namespace sparge::runtime {

struct TokenPermutation {
  at::Tensor index;    // int64 [N] on the device: position k of the permuted sequence holds
                       //   original token index[k]
  at::Tensor inverse;  // int64 [N]: inverse[index[k]] = k (a gather again, not a scatter)
  int64_t tokens() const { return index.defined() ? index.size(0) : 0; }
  // Copies `perm` (e.g. ref::hilbert_permutation) and its inverse to `device` once; reuse the
  // result for every call of a layer. Throws Error(kUsage) if perm is not a permutation.
  static TokenPermutation from_host(const std::vector<int64_t>& perm, at::Device device);
  // ref::hilbert_permutation(T, H, W, prefix, suffix) on `device`.
  static TokenPermutation hilbert(int T, int H, int W, int text_prefix, int text_suffix,
                                  at::Device device);
  // An index already on its device (torch.ops.sparge caches one per device): the inverse by one
  // argsort there, no host round trip, so it also runs under CUDA graph capture. Not validated:
  // the caller passes a permutation (hilbert_permutation's output).
  static TokenPermutation from_device(const at::Tensor& index);
};

// x [B, H, N, D] -> x[:, :, index, :]. Error(kUsage) when N != tokens() or x is on another
// device than the index.
at::Tensor permute_tokens(const at::Tensor& x, const TokenPermutation& p);
// o_perm [B, H, N, D] computed on permuted tokens -> the original order (o[:, :, index[k]] =
// o_perm[:, :, k]).
at::Tensor unpermute_tokens(const at::Tensor& o_perm, const TokenPermutation& p);

}  // namespace sparge::runtime
