#include "kernels/bench_probe.h"

namespace sparge::kernels {
namespace {

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void clock_probe_kernel(uint64_t* out, int64_t cycles) {
  const uint64_t t0 = global_ns();
  const int64_t c0 = clock64();
  int64_t c1 = c0;
  while (c1 - c0 < cycles) c1 = clock64();
  const uint64_t t1 = global_ns();
  out[0] = static_cast<uint64_t>(c1 - c0);
  out[1] = t1 - t0;
}

}  // namespace

cudaError_t launch_clock_probe(uint64_t* out, int64_t cycles, cudaStream_t stream) {
  clock_probe_kernel<<<1, 1, 0, stream>>>(out, cycles);
  return cudaGetLastError();
}

}  // namespace sparge::kernels
