// Google Benchmark micro-benchmarks of the GPU pieces, timed by sparge::bench::GpuTimer
// (UseManualTime: one L2-flushed, CUDA-event-timed sample per iteration):
//   BM_Quantize/N/D       block statistics + INT8/FP8 quantisation (runtime::quantize)
//   BM_Predict/N/D        stage-1 prediction: compressed map + TopCdf + LUT (runtime::predict)
//   BM_Attention/N/D/pct  kernel only, random block mask keeping pct% of blocks
//   BM_SdpaCudnn/N/D      PyTorch SDPA cuDNN backend, the dense baseline
// B = 1, H = 32 throughout. Without a GPU every benchmark reports SkipWithError.
//   build/tests/sparge_microbench --benchmark_filter=Attention --benchmark_min_warmup_time=0.05
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <benchmark/benchmark.h>
#include <c10/cuda/CUDAGuard.h>

#include <memory>
#include <optional>

#include "bench/masks.hpp"
#include "bench/runner.hpp"
#include "bench/timer.hpp"
#include "runtime/runtime.hpp"

namespace {

using namespace sparge;

struct Inputs {
  at::Tensor q, k, v;
  std::string kernel;
  ref::Geometry geometry;
};

// Fresh U(-1, 1) fp16 inputs [1, 32, N, D] on device 0, or nullopt (skip) without a GPU.
std::optional<Inputs> make_inputs(benchmark::State& state) {
  if (bench::visible_devices() == 0) {
    state.SkipWithError("no CUDA device visible");
    return std::nullopt;
  }
  const int64_t n = state.range(0), d = state.range(1);
  auto opts = at::TensorOptions().dtype(at::kHalf).device(at::kCUDA, 0);
  Inputs in;
  in.q = at::empty({1, 32, n, d}, opts).uniform_(-1, 1);
  in.k = at::empty({1, 32, n, d}, opts).uniform_(-1, 1);
  in.v = at::empty({1, 32, n, d}, opts).uniform_(-1, 1);
  in.kernel = runtime::resolve_kernel("auto");
  in.geometry = ref::geometry_by_name(in.kernel);
  return in;
}

bench::GpuTimer& timer() {
  static bench::GpuTimer t(at::cuda::getCurrentCUDAStream().stream());
  return t;
}

void set_counters(benchmark::State& state, double flops) {
  state.counters["TOPS"] =
      benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Quantize(benchmark::State& state) {
  auto in = make_inputs(state);
  if (!in) return;
  for (auto _ : state) {
    state.SetIterationTime(1e-3 * timer().sample_ms([&] {
      runtime::quantize(in->q, in->k, in->v, in->geometry, {});
    }));
  }
  state.SetBytesProcessed(state.iterations() * 3 * in->q.nbytes());
}

void BM_Predict(benchmark::State& state) {
  auto in = make_inputs(state);
  if (!in) return;
  auto p = runtime::quantize(in->q, in->k, in->v, in->geometry, {});
  auto th = runtime::Thresholds::uniform(32, 0.9f, -1.0f, in->q.device());
  for (auto _ : state) {
    state.SetIterationTime(1e-3 * timer().sample_ms([&] { runtime::predict(p, th, {}); }));
  }
}

void BM_Attention(benchmark::State& state) {
  auto in = make_inputs(state);
  if (!in) return;
  const double density = state.range(2) / 100.0;
  const int64_t n = state.range(0), d = state.range(1);
  const bench::Case c{bench::Shape{1, 32, 32, n, n, d}, false, density};
  const auto mask = bench::random_block_mask(c, in->geometry.block_q, in->geometry.block_k, 0);
  auto p = runtime::prepare_with_mask(in->q, in->k, in->v, mask.mask.to(in->q.device()),
                                      in->geometry, {});
  auto o = at::empty_like(in->q);
  for (auto _ : state) {
    state.SetIterationTime(
        1e-3 * timer().sample_ms([&] { runtime::run_attention(p, o, at::Tensor(), in->kernel); }));
  }
  set_counters(state, 4.0 * 32 * n * n * d);  // dense-equivalent ("effective") TOPS
  state.counters["density"] = mask.density();
}

void BM_SdpaCudnn(benchmark::State& state) {
  auto in = make_inputs(state);
  if (!in) return;
  for (auto _ : state) {
    state.SetIterationTime(1e-3 * timer().sample_ms([&] {
      at::_scaled_dot_product_cudnn_attention(in->q, in->k, in->v, std::nullopt, false);
    }));
  }
  const int64_t n = state.range(0), d = state.range(1);
  set_counters(state, 4.0 * 32 * n * n * d);
}

}  // namespace

BENCHMARK(BM_Quantize)
    ->Args({32768, 128})
    ->Args({32768, 64})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Predict)
    ->Args({32768, 128})
    ->Args({32768, 64})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Attention)
    ->ArgsProduct({{8192, 32768}, {64, 128}, {100, 50, 25, 10}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SdpaCudnn)
    ->ArgsProduct({{8192, 32768}, {64, 128}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
