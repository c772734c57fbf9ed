// The one GPU timer behind every sparge timing (`sparge bench`, sparge_microbench, GPU tests).
//
// Method (nvbench / FlashInfer / CUTLASS, engineering-notes §4.2): CUDA events around each
// sample on the caller's stream; the L2 cache flushed before every sample by a cudaMemsetAsync of
// 2x cudaDevAttrL2CacheSize (so no sample profits from the previous one's cache); untimed warm-up
// until both >= warmup_ms and >= warmup_launches; >= min_samples samples, more (in batches) while
// the IQR/median spread exceeds the target, within max_samples / max_seconds; median + spread;
// notes when the spread stays above 5% or when the SM clock measured by a probe kernel
// (kernels/bench_probe.cu) is below 75% of the nominal clock (nvbench's throttle rule).
#pragma once

#include <cuda_runtime.h>

#include <functional>
#include <string>
#include <vector>

#include "bench/results.hpp"
#include "bench/stats.hpp"

namespace sparge::bench {

struct TimerOptions {
  double warmup_ms = 25.0;
  int warmup_launches = 10;
  double warmup_max_ms = 2000.0;  // a slow kernel stops warming up after this long
  int min_samples = 30;
  int max_samples = 120;
  double max_seconds = 10.0;
  double target_spread = 0.05;  // IQR / median
  bool flush_l2 = true;
  bool probe_clock = true;
};

// Throws Error(kSoftware) naming the CUDA call on any CUDA failure.
void check_cuda(cudaError_t status, const char* what);

// Bound to the current device and `stream`; not thread-safe (one timer per device thread).
class GpuTimer {
 public:
  explicit GpuTimer(cudaStream_t stream, TimerOptions options = {});
  ~GpuTimer();
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;

  // `launch` enqueues the work to time on the stream (it must not synchronise). Full method.
  Timing measure(const std::function<void()>& launch);

  // One L2-flushed sample in milliseconds, synchronous; for Google Benchmark's UseManualTime
  // loop, whose own warm-up/repetition settings then apply.
  double sample_ms(const std::function<void()>& launch);

  // Achieved SM clock (MHz) over a ~2 ms probe, and the nominal one (cudaDevAttrClockRate).
  double measure_clock_mhz();
  double nominal_clock_mhz() const { return nominal_mhz_; }
  const TimerOptions& options() const { return opt_; }

 private:
  void flush();

  cudaStream_t stream_;
  TimerOptions opt_;
  void* flush_buf_ = nullptr;
  size_t flush_bytes_ = 0;
  uint64_t* probe_buf_ = nullptr;
  double nominal_mhz_ = 0;
  std::vector<cudaEvent_t> events_;  // pairs (start, stop), reused across measurements
};

}  // namespace sparge::bench
