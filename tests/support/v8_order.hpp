// Host view of the v8 token order (kernels/params.h, v8_slot) for tests that build or read v8
// tensors: index tensors for index_select along the token dimension.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "kernels/params.h"

namespace sparge::test {

// int64 [n] (n a multiple of 32): element y is the token stored at v8 position y, so
// natural.index_select(-1, v8_gather(n)) puts natural-order tokens into the v8 order.
inline at::Tensor v8_gather(int64_t n) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t g = 0; g < n; g += 32) {
    for (int x = 0; x < 32; ++x) idx[static_cast<size_t>(g + kernels::v8_slot(x))] = g + x;
  }
  return at::tensor(idx, at::kLong);
}

// int64 [n]: element x is the v8 position of token x, so
// v8.index_select(-1, v8_scatter(n)) returns the tokens to their natural order.
inline at::Tensor v8_scatter(int64_t n) {
  std::vector<int64_t> idx(static_cast<size_t>(n));
  for (int64_t g = 0; g < n; g += 32) {
    for (int x = 0; x < 32; ++x) idx[static_cast<size_t>(g + x)] = g + kernels::v8_slot(x);
  }
  return at::tensor(idx, at::kLong);
}

}  // namespace sparge::test
