// SM clock probe for the bench timer (src/bench/timer.cpp): nvbench-style, one thread spins for a
// fixed number of clock64() cycles and reads %globaltimer (ns) around the spin, so
// cycles / ns is the SM clock achieved at that moment. No NVML needed (CUDA 13 here has none).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sparge::kernels {

// Enqueues the probe on `stream`; `out` is device memory for two uint64 values
// {elapsed cycles, elapsed ns}. Returns the launch error.
cudaError_t launch_clock_probe(uint64_t* out, int64_t cycles, cudaStream_t stream);

}  // namespace sparge::kernels
