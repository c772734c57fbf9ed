// Token permutation for the inference side (issue 16): a config tuned with `permutation:
// hilbert` must see Q/K/V in the Hilbert order before prediction and kernel, and its output put
// back after.
//
// On CUDA the runtime does both inside the kernels (runtime::Options::token_order: the
// quantisation passes gather, the attention epilogue scatters), so no copy of Q/K/V/O is made.
// The CPU op gathers copies with index_select. TokenPermutation holds the index (and its
// inverse, the explicit scatter the GPU tests check the fused path against) on a device.
//
// Shapes: index and inverse int64 [N], N = the query length.
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
};

// The checks of a token-order index as the runtime takes it (Options::token_order): int64 [N]
// with N = `tokens` (the query length), contiguous, on `device` (q's). Error(kUsage) naming the
// fault otherwise. Metadata only, so cheap once per call. Whether it is a permutation is not
// checked: that is a pass over the index on the device (and a sync to report it) per call, and
// the index comes from ref::hilbert_permutation (torch.ops.sparge.hilbert_permutation,
// TokenPermutation::from_host, which validates), built once per layer shape, not per call.
void check_token_order(const at::Tensor& index, int64_t tokens, at::Device device);

}  // namespace sparge::runtime
