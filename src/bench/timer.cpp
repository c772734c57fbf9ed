#include "bench/timer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "common/error.hpp"
#include "kernels/bench_probe.h"

namespace sparge::bench {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    fail(ExitCode::kSoftware, "CUDA error in {}: {}", what, cudaGetErrorString(status));
  }
}

GpuTimer::GpuTimer(cudaStream_t stream, TimerOptions options) : stream_(stream), opt_(options) {
  int dev = 0, l2 = 0, clock_khz = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "L2 size query");
  check_cuda(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev), "clock query");
  nominal_mhz_ = clock_khz / 1000.0;
  // 2x L2 (FlashInfer's choice): a memset of that size evicts every line the timed work could
  // otherwise find warm, whatever the replacement policy does with the first pass.
  flush_bytes_ = std::max<size_t>(2 * static_cast<size_t>(l2), 1 << 20);
  check_cuda(cudaMalloc(&flush_buf_, flush_bytes_), "cudaMalloc(L2 flush buffer)");
  check_cuda(cudaMalloc(&probe_buf_, 2 * sizeof(uint64_t)), "cudaMalloc(clock probe)");
}

GpuTimer::~GpuTimer() {
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  cudaFree(flush_buf_);
  cudaFree(probe_buf_);
}

void GpuTimer::flush() {
  if (!opt_.flush_l2) return;
  check_cuda(cudaMemsetAsync(flush_buf_, 0, flush_bytes_, stream_), "cudaMemsetAsync(L2 flush)");
}

double GpuTimer::measure_clock_mhz() {
  // ~2.5 ms at 2 GHz: long enough that the globaltimer's update granularity (~1 us) is < 0.1%.
  constexpr int64_t kCycles = 5'000'000;
  check_cuda(sparge::kernels::launch_clock_probe(probe_buf_, kCycles, stream_), "clock probe");
  uint64_t host[2] = {0, 0};
  check_cuda(cudaMemcpyAsync(host, probe_buf_, sizeof(host), cudaMemcpyDeviceToHost, stream_),
             "clock probe copy");
  check_cuda(cudaStreamSynchronize(stream_), "clock probe sync");
  return host[1] ? static_cast<double>(host[0]) / static_cast<double>(host[1]) * 1000.0 : 0.0;
}

double GpuTimer::sample_ms(const std::function<void()>& launch) {
  if (events_.size() < 2) {
    for (int i = 0; i < 2; ++i) {
      cudaEvent_t e;
      check_cuda(cudaEventCreate(&e), "cudaEventCreate");
      events_.push_back(e);
    }
  }
  flush();
  check_cuda(cudaEventRecord(events_[0], stream_), "cudaEventRecord");
  launch();
  check_cuda(cudaEventRecord(events_[1], stream_), "cudaEventRecord");
  check_cuda(cudaEventSynchronize(events_[1]), "cudaEventSynchronize");
  float ms = 0;
  check_cuda(cudaEventElapsedTime(&ms, events_[0], events_[1]), "cudaEventElapsedTime");
  return ms;
}

Timing GpuTimer::measure(const std::function<void()>& launch) {
  using Clock = std::chrono::steady_clock;
  auto ms_since = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  // Warm-up: module load, cuDNN plan building and clock ramp-up stay out of the samples.
  const auto w0 = Clock::now();
  for (int n = 0;; ++n) {
    if (n >= opt_.warmup_launches && ms_since(w0) >= opt_.warmup_ms) break;
    if (ms_since(w0) >= opt_.warmup_max_ms && n > 0) break;
    launch();
    check_cuda(cudaStreamSynchronize(stream_), "warm-up");
  }
  check_cuda(cudaGetLastError(), "warm-up launch");

  const int batch = std::max(1, std::min(opt_.min_samples, 30));
  while (events_.size() < 2 * static_cast<size_t>(batch)) {
    cudaEvent_t e;
    check_cuda(cudaEventCreate(&e), "cudaEventCreate");
    events_.push_back(e);
  }
  std::vector<double> samples;
  const auto t0 = Clock::now();
  while (true) {
    // Enqueue a whole batch, then synchronise once: the host stays ahead of the GPU, so launch
    // latency does not leak into the samples of short kernels.
    for (int i = 0; i < batch; ++i) {
      flush();
      check_cuda(cudaEventRecord(events_[2 * i], stream_), "cudaEventRecord");
      launch();
      check_cuda(cudaEventRecord(events_[2 * i + 1], stream_), "cudaEventRecord");
    }
    check_cuda(cudaStreamSynchronize(stream_), "timed samples");
    check_cuda(cudaGetLastError(), "timed launch");
    for (int i = 0; i < batch; ++i) {
      float ms = 0;
      check_cuda(cudaEventElapsedTime(&ms, events_[2 * i], events_[2 * i + 1]),
                 "cudaEventElapsedTime");
      samples.push_back(ms);
    }
    const int n = static_cast<int>(samples.size());
    if (n < opt_.min_samples) continue;
    if (summarize(samples).rel_spread() <= opt_.target_spread) break;
    if (n >= opt_.max_samples || ms_since(t0) >= 1000.0 * opt_.max_seconds) break;
  }
  Timing t;
  t.stats = summarize(samples);
  if (t.stats.rel_spread() > 0.05) {
    t.notes.push_back(fmt::format("spread {:.1f}% > 5% after {} samples",
                                  100 * t.stats.rel_spread(), t.stats.count));
  }
  if (opt_.probe_clock && nominal_mhz_ > 0) {
    const double mhz = measure_clock_mhz();
    t.clock_mhz = mhz;
    if (mhz > 0 && mhz < 0.75 * nominal_mhz_) {
      t.notes.push_back(fmt::format("SM clock {:.0f} MHz < 75% of nominal {:.0f} MHz (throttled?)",
                                    mhz, nominal_mhz_));
    }
  }
  return t;
}

}  // namespace sparge::bench
