// Shared pieces of the GPU tests (tests/gpu/): the skip without a device, CUDA error checks, the
// exit code of a sparge::Error, whether a kernel runs here, the upload of [B, H, N, D] tensors in
// HND or NHD strides, the name of a parametrised case, and the CUDA-event loop of the hand-run
// throughput tests. Host code only; compiles without a GPU.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "kernels/api.h"
#include "runtime/runtime.hpp"

// Skips the current test when no CUDA device is visible.
#define REQUIRE_GPU() \
  if (sparge::kernels::device_count() == 0) GTEST_SKIP() << "no CUDA device"

namespace sparge::test {

// Whether runtime kernel `kernel` ("sm90", "sm80") runs on this device and build.
inline bool runnable(const std::string& kernel) {
  const auto avail = sparge::runtime::available_kernels();
  return std::find(avail.begin(), avail.end(), kernel) != avail.end();
}

// Runs f and returns the exit code of the sparge::Error it throws (kOk if none); the message must
// be one line.
template <typename F>
ExitCode code_of(F&& f) {
  try {
    f();
  } catch (const sparge::Error& e) {
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "multi-line: " << e.what();
    return e.code();
  }
  return ExitCode::kOk;
}

// Throws std::runtime_error "what: <CUDA error>" unless e is cudaSuccess.
inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// [B, H, N, D] values on the GPU, laid out HND (contiguous) or NHD (tokens outer, a transposed
// view with the same logical shape).
inline at::Tensor to_gpu(const at::Tensor& x, bool nhd) {
  if (!nhd) return x.to(at::kCUDA).contiguous();
  return x.transpose(1, 2).contiguous().to(at::kCUDA).transpose(1, 2);
}

// Test names of a parametrised suite whose parameter struct has a `name` (its PrintTo prints the
// same name, so a failure names the case instead of dumping the struct's bytes).
template <class Param>
std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return info.param.name;
}

// Times `launch` on the default stream with CUDA events: `warmup` untimed launches, then `reps`
// timed one at a time. Returns the times in ms, sorted ascending.
inline std::vector<float> time_launches(const std::function<void()>& launch, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) launch();
  cuda_check(cudaDeviceSynchronize(), "warm-up");
  cudaEvent_t e0, e1;
  cuda_check(cudaEventCreate(&e0), "event");
  cuda_check(cudaEventCreate(&e1), "event");
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    cuda_check(cudaEventRecord(e0), "record");
    launch();
    cuda_check(cudaEventRecord(e1), "record");
    cuda_check(cudaEventSynchronize(e1), "sync");
    float t = 0;
    cuda_check(cudaEventElapsedTime(&t, e0, e1), "elapsed");
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms;
}

}  // namespace sparge::test
