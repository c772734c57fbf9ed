#include "io/tensor_stats.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace sparge::io {

TensorStats tensor_stats(const at::Tensor& t) {
  TensorStats s;
  const at::Tensor c = t.contiguous().reshape({-1});
  double sum = 0, sumsq = 0;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  // Slices of 1M elements keep the fp64 copy small for multi-GB tensors.
  constexpr int64_t kSlice = 1 << 20;
  for (int64_t off = 0; off < c.numel(); off += kSlice) {
    const at::Tensor x = c.slice(0, off, std::min(c.numel(), off + kSlice)).to(at::kDouble);
    const at::Tensor nan = at::isnan(x), inf = at::isinf(x);
    s.nan += nan.sum().item<int64_t>();
    s.inf += inf.sum().item<int64_t>();
    const at::Tensor f = x.masked_select(at::logical_not(at::logical_or(nan, inf)));
    if (f.numel() == 0) continue;
    s.count += f.numel();
    sum += f.sum().item<double>();
    sumsq += (f * f).sum().item<double>();
    lo = std::min(lo, f.min().item<double>());
    hi = std::max(hi, f.max().item<double>());
  }
  if (s.count > 0) {
    s.mean = sum / s.count;
    s.std = std::sqrt(std::max(0.0, sumsq / s.count - s.mean * s.mean));
    s.min = lo;
    s.max = hi;
    s.absmax = std::max(std::abs(lo), std::abs(hi));
  }
  s.checksum = tensor_checksum(t);
  return s;
}

std::string tensor_checksum(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  const size_t n = static_cast<size_t>(c.numel()) * c.element_size();
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis and prime
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return fmt::format("fnv1a64:{:016x}", h);
}

}  // namespace sparge::io
