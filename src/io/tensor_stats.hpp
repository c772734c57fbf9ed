// Value statistics and a content checksum of a dumped tensor (`sparge inspect`).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace sparge::io {

struct TensorStats {
  int64_t count = 0;  // finite values; the moments, min and max cover only these
  double mean = 0, std = 0, min = 0, max = 0, absmax = 0;
  int64_t nan = 0, inf = 0;
  std::string checksum;  // "fnv1a64:<16 hex digits>"
};

// Any shape, fp16/bf16/fp32 on the CPU. Population std (divisor = count), accumulated in fp64.
TensorStats tensor_stats(const at::Tensor& t);

// FNV-1a 64 over the tensor's bytes in contiguous row-major order, as stored in the dump (little
// endian). The Python capture tests compute the same over numpy's bytes to prove that the reader
// returns exactly the bits that were written.
std::string tensor_checksum(const at::Tensor& t);

}  // namespace sparge::io
