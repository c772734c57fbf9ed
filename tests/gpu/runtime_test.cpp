// src/runtime end to end: input validation (one-line sparge::Error with the right exit code),
// kernel choice, the full pipeline against the CPU reference (layouts, padding of D, GQA,
// causal, batch), stream ordering. Plus a disabled timing test for the prediction/quantisation
// overhead, run by hand on the GPU machine:
//   gpu_test_runtime --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
#include "runtime/runtime.hpp"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "kernels/api.h"
#include "reference/reference.hpp"
#include "runtime/cuda_oracle.hpp"
#include "support/gpu.hpp"
#include "tune/oracle.hpp"

namespace {

namespace ref = sparge::ref;
namespace rt = sparge::runtime;
using sparge::ExitCode;

using sparge::test::code_of;

at::Tensor gpu_randn(std::vector<int64_t> shape, at::ScalarType dt, at::Generator& gen) {
  return at::randn(shape, gen, at::kFloat).to(dt).to(at::kCUDA);
}

TEST(RuntimeValidation, BadInputsAreUsageErrors) {
  REQUIRE_GPU();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const at::Tensor q = gpu_randn({1, 4, 256, 64}, at::kHalf, gen);
  const at::Tensor k = gpu_randn({1, 2, 256, 64}, at::kHalf, gen);
  const ref::Geometry g = ref::hopper_geometry();
  const rt::Options o;
  auto quant = [&](const at::Tensor& a, const at::Tensor& b, const at::Tensor& c,
                   const rt::Options& opt) { return [=] { rt::quantize(a, b, c, g, opt); }; };
  EXPECT_EQ(code_of(quant(q, k, k, o)), ExitCode::kOk);
  EXPECT_EQ(code_of(quant(q.cpu(), k, k, o)), ExitCode::kUsage) << "CPU tensor";
  EXPECT_EQ(code_of(quant(q.to(at::kFloat), k, k, o)), ExitCode::kUsage) << "fp32";
  EXPECT_EQ(code_of(quant(q.to(at::kBFloat16), k, k, o)), ExitCode::kUsage) << "mixed dtypes";
  EXPECT_EQ(code_of(quant(q[0], k, k, o)), ExitCode::kUsage) << "rank 3";
  EXPECT_EQ(code_of(quant(q, k, k.narrow(2, 0, 100), o)), ExitCode::kUsage) << "k/v shapes";
  EXPECT_EQ(code_of(quant(q.narrow(1, 0, 3), k, k, o)), ExitCode::kUsage) << "H % Hkv";
  EXPECT_EQ(code_of(quant(q.transpose(2, 3), k.transpose(2, 3), k.transpose(2, 3), o)),
            ExitCode::kUsage)
      << "strided last dim";
  const at::Tensor q192 = gpu_randn({1, 4, 64, 192}, at::kHalf, gen);
  const at::Tensor k192 = gpu_randn({1, 2, 64, 192}, at::kHalf, gen);
  EXPECT_EQ(code_of(quant(q192, k192, k192, o)), ExitCode::kUsage) << "D > 128";
  rt::Options causal;
  causal.causal = true;
  EXPECT_EQ(code_of(quant(q, k.narrow(2, 0, 100), k.narrow(2, 0, 100), causal)), ExitCode::kUsage)
      << "causal with Nq > Nk";
  EXPECT_EQ(code_of([] { rt::resolve_kernel("sm75"); }), ExitCode::kUsage) << "unknown kernel";

  rt::Prepared p = rt::quantize(q, k, k, g, o);
  rt::Thresholds t = rt::Thresholds::uniform(3, 0.9f, 0.5f, at::kCUDA);
  EXPECT_EQ(code_of([&] { rt::predict(p, t, o); }), ExitCode::kUsage) << "thresholds of 3 heads";
  EXPECT_EQ(code_of([&] {
              rt::prepare_with_mask(q, k, k, at::ones({1, 4, 2, 3}, at::kBool), g, o);
            }),
            ExitCode::kUsage)
      << "mask shape";
}

TEST(RuntimeKernels, AutoPicksTheDevicesPath) {
  REQUIRE_GPU();
  const auto avail = rt::available_kernels();
  ASSERT_FALSE(avail.empty());
  const std::string v = rt::resolve_kernel("auto");
  std::printf("[ kernels ] available: %s; auto -> %s\n",
              fmt::format("{}", fmt::join(avail, ", ")).c_str(), v.c_str());
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  if (prop->major == 9 && prop->minor == 0 && sparge::kernels::attention_sm90_available()) {
    EXPECT_EQ(v, "sm90");
  } else {
    EXPECT_EQ(v, "sm80");
  }
  // Not available: a kernel this GPU cannot run is a usage error, one the build lacks exit 69.
  for (const char* name : {"sm80", "sm90"}) {
    const bool has = std::find(avail.begin(), avail.end(), name) != avail.end();
    const bool gpu_can =
        std::string(name) == "sm90" ? prop->major == 9 && prop->minor == 0 : prop->major >= 8;
    EXPECT_EQ(code_of([&] { rt::resolve_kernel(name); }), has       ? ExitCode::kOk
                                                          : gpu_can ? ExitCode::kNoDevice
                                                                    : ExitCode::kUsage)
        << name;
  }
}

struct E2E {
  std::string name;
  at::ScalarType dtype;
  int64_t batch, heads, kv_heads, seq_q, seq_k, head_dim;
  bool nhd, causal;
  const char* kernel;
};

// gtest prints a failing parameter through this (not as a byte dump).
void PrintTo(const E2E& c, std::ostream* os) { *os << c.name; }

class RuntimeAttention : public ::testing::TestWithParam<E2E> {};

// The full pipeline with the GPU-predicted mask against the reference's emulation of the same
// quantised kernel on that mask (same INT8/FP8 inputs up to the K-mean rounding): only the
// rounding of individual exponentials and of the accumulation order differs, so the rel-L1
// distance must be far below the quantisation error itself (< 1e-2, where quantised vs dense is
// ~3e-2 on N(0,1) inputs); and against dense fp64 attention within a loose quantisation bound.
TEST_P(RuntimeAttention, MatchesReference) {
  REQUIRE_GPU();
  const E2E c = GetParam();
  const auto avail = rt::available_kernels();
  if (std::find(avail.begin(), avail.end(), c.kernel) == avail.end())
    GTEST_SKIP() << c.kernel << " not available here";
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto make = [&](int64_t h, int64_t n) {
    return at::randn({c.batch, h, n, c.head_dim}, gen, at::kFloat).to(c.dtype);
  };
  const at::Tensor q = make(c.heads, c.seq_q), k = make(c.kv_heads, c.seq_k),
                   v = make(c.kv_heads, c.seq_k);
  auto gpu = [&](const at::Tensor& x) { return sparge::test::to_gpu(x, c.nhd); };
  ref::Thresholds th = ref::Thresholds::uniform(static_cast<int>(c.heads), 0.9f, 0.02f);
  rt::Options opts;
  opts.causal = c.causal;
  const rt::Thresholds t = rt::Thresholds::from_ref(th, at::kCUDA);

  const at::Tensor o = rt::attention(gpu(q), gpu(k), gpu(v), t, opts, c.kernel);
  ASSERT_EQ(o.sizes(), q.sizes());
  EXPECT_EQ(o.scalar_type(), c.dtype);
  // NHD memory: the head stride is below the token stride (the layout used to come out swapped).
  EXPECT_EQ(o.stride(1) < o.stride(2), c.nhd) << "output layout follows q";
  const at::Tensor of = o.cpu().to(at::kFloat);
  ASSERT_TRUE(at::isfinite(of).all().item<bool>());

  // The mask the pipeline used (prediction is deterministic).
  opts.return_mask = true;
  const ref::Geometry g = ref::geometry_by_name(c.kernel);
  const rt::Prepared p = rt::prepare(gpu(q), gpu(k), gpu(v), g, t, opts);
  ref::AttentionOptions ro;
  ro.causal = c.causal;
  const ref::SparseResult emu = ref::sparse_attention(q, k, v, p.mask.cpu(), th.lambda, g, ro);
  const ref::Metrics vs_emu = ref::compare(of, emu.o);
  const ref::Metrics vs_dense = ref::compare(of, ref::dense_attention(q, k, v, ro));
  std::printf("[ %s ] stage-1 sparsity %.3f, rel-L1 vs emulation %.2e, vs dense %.2e\n",
              c.name.c_str(), emu.sparsity_stage1(), vs_emu.rel_l1, vs_dense.rel_l1);
  EXPECT_LT(vs_emu.rel_l1, 1e-2);
  EXPECT_LT(vs_dense.rel_l1, 0.5) << "sparse mask: loose bound, the mask drops real mass";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, RuntimeAttention,
    ::testing::Values(
        E2E{"sm90_f16_hnd_d128", at::kHalf, 1, 2, 2, 384, 384, 128, false, false, "sm90"},
        E2E{"sm90_bf16_nhd_d64_gqa_causal", at::kBFloat16, 2, 4, 2, 300, 500, 64, true, true,
            "sm90"},
        E2E{"sm90_f16_hnd_d80_padded", at::kHalf, 1, 2, 1, 200, 260, 80, false, false, "sm90"},
        E2E{"sm80_f16_nhd_d128_causal", at::kHalf, 1, 2, 2, 257, 257, 128, true, true, "sm80"},
        E2E{"sm80_bf16_hnd_d64_b2", at::kBFloat16, 2, 2, 1, 130, 333, 64, false, false, "sm80"}),
    sparge::test::param_name<E2E>);

// Work queued on a side stream is ordered on that stream: results equal those of the default
// stream.
TEST(RuntimeStreams, UsesTheCurrentStream) {
  REQUIRE_GPU();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const at::Tensor q = gpu_randn({2, 4, 1000, 128}, at::kHalf, gen);
  const at::Tensor k = gpu_randn({2, 4, 1000, 128}, at::kHalf, gen);
  const ref::Geometry g = ref::hopper_geometry();
  const rt::Thresholds t = rt::Thresholds::uniform(4, 0.9f, 0.02f, at::kCUDA);
  rt::Options opts;
  opts.return_mask = true;
  const rt::Prepared a = rt::prepare(q, k, k, g, t, opts);
  at::Tensor lut_b, q8_b;
  {
    c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
    side.synchronize();
    const c10::cuda::CUDAStreamGuard guard(side);
    const rt::Prepared b = rt::prepare(q, k, k, g, t, opts);
    lut_b = b.lut.cpu();  // .cpu() syncs the side stream's copy
    q8_b = b.q8.cpu();
  }
  EXPECT_TRUE(at::equal(a.lut.cpu(), lut_b));
  EXPECT_TRUE(at::equal(a.q8.cpu(), q8_b));
}

// prepare is the pipeline's entry point: its outputs must be bit-identical to quantize + predict
// called separately (the tuner's path), for fp8 V (sm90) and fp16 V (sm80), causal + GQA.
TEST(RuntimeStreams, PrepareEqualsQuantizePlusPredict) {
  REQUIRE_GPU();
  const uint64_t seed = std::random_device{}();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor q = gpu_randn({1, 8, 2000, 128}, at::kHalf, gen);
  const at::Tensor k = gpu_randn({1, 2, 2000, 128}, at::kHalf, gen);
  const at::Tensor v = gpu_randn({1, 2, 2000, 128}, at::kHalf, gen);
  const rt::Thresholds t = rt::Thresholds::uniform(8, 0.85f, 0.1f, at::kCUDA);
  for (const ref::Geometry& g : {ref::hopper_geometry(), ref::geometry_by_name("sm80")}) {
    rt::Options opts;
    opts.causal = true;
    opts.return_mask = true;
    const rt::Prepared a = rt::prepare(q, k, v, g, t, opts);
    rt::Prepared b = rt::quantize(q, k, v, g, opts);
    rt::predict(b, t, opts);
    const std::string where = fmt::format("geometry {} seed {}", g.name, seed);
    EXPECT_TRUE(at::equal(a.lut.cpu(), b.lut.cpu())) << where;
    EXPECT_TRUE(at::equal(a.lut_len.cpu(), b.lut_len.cpu())) << where;
    EXPECT_TRUE(at::equal(a.mask.cpu(), b.mask.cpu())) << where;
    EXPECT_TRUE(at::equal(a.q8.cpu(), b.q8.cpu())) << where;
    EXPECT_TRUE(at::equal(a.k8.cpu(), b.k8.cpu())) << where;
    // fp8 tensors compare as bytes (at::equal has no float8 kernel on every build).
    EXPECT_TRUE(at::equal(a.v.cpu().view(at::kByte), b.v.cpu().view(at::kByte))) << where;
  }
}

// The `--backend cuda` oracle against the CPU reference backend on the same head: identical
// masks give identical stage-1 sparsity; errors differ only by the kernel-vs-emulation output
// difference (~1e-3 rel-L1, see RuntimeAttention), so within 5e-3; stage-2 skip decisions may
// flip near λ, so stage-1+2 sparsity within 0.05.
TEST(RuntimeCudaOracle, AgreesWithCpuBackend) {
  REQUIRE_GPU();
  if (!sparge::kernels::attention_sm90_available()) GTEST_SKIP() << "no sm90 kernel here";
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto make_request = [&] {
    sparge::tune::HeadRequest r;
    r.geometry = ref::hopper_geometry();
    r.attention.causal = false;
    return r;
  };
  sparge::tune::HeadRequest req = make_request();
  for (int s = 0; s < 2; ++s) {
    // Smooth latent walk (locality) so that masks are neither empty nor dense.
    const int64_t n = 1000, d = 64;
    at::Tensor lat = at::randn({1, 1, n, 8}, gen, at::kFloat).cumsum(2) * 0.15;
    at::Tensor basis = at::randn({1, 1, 8, d}, gen, at::kFloat);
    auto tok = [&] {
      return (at::matmul(lat, basis) + 0.3 * at::randn({1, 1, n, d}, gen, at::kFloat))
          .to(at::kHalf);
    };
    req.samples.push_back({tok(), tok(), at::randn({1, 1, n, d}, gen, at::kFloat).to(at::kHalf)});
  }
  sparge::tune::HeadRequest req_cpu = req;
  sparge::runtime::register_cuda_oracle();
  auto gpu_backend = sparge::tune::make_oracle_backend("cuda");
  auto cpu_backend = sparge::tune::make_cpu_backend();
  std::vector<sparge::tune::HeadRequest> a{req}, b{req_cpu};
  sparge::tune::HeadRequest req_all = req;
  auto gpu = std::move(gpu_backend->make_oracles(std::move(a)).at(0));
  auto cpu = std::move(cpu_backend->make_oracles(std::move(b)).at(0));
  // `tune --devices all`: the same head on the last GPU of the host gives the same answers.
  auto spread_backend = sparge::tune::make_oracle_backend("cuda");
  spread_backend->use_devices({sparge::kernels::device_count() - 1});
  std::vector<sparge::tune::HeadRequest> c{req_all};
  auto gpu_last = std::move(spread_backend->make_oracles(std::move(c)).at(0));
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<sparge::tune::Candidate> cands{
      {0.9f, 0.3f, -inf}, {0.5f, 0.1f, -inf}, {0.99f, 0.5f, -4.f}, sparge::tune::kDenseCandidate};
  const auto eg = gpu->evaluate(cands), ec = cpu->evaluate(cands);
  ASSERT_EQ(eg.size(), cands.size());
  const auto el = gpu_last->evaluate(cands);
  for (size_t i = 0; i < cands.size(); ++i) {
    for (int s = 0; s < 2; ++s) {  // same kernels; only the order of GPU reductions may differ
      EXPECT_NEAR(el[i].error_per_sample[s], eg[i].error_per_sample[s], 1e-6) << "cand " << i;
      EXPECT_EQ(el[i].sparsity_stage1_per_sample[s], eg[i].sparsity_stage1_per_sample[s]);
    }
  }
  EXPECT_THROW(spread_backend->use_devices({sparge::kernels::device_count()}), sparge::Error);
  EXPECT_THROW(cpu_backend->use_devices({0}), sparge::Error);
  for (size_t i = 0; i < cands.size(); ++i) {
    for (int s = 0; s < 2; ++s) {
      std::printf(
          "[ oracle ] cand %zu sample %d: err gpu %.5f cpu %.5f, s1 %.4f / %.4f, s12 %.4f / %.4f\n",
          i, s, eg[i].error_per_sample[s], ec[i].error_per_sample[s],
          eg[i].sparsity_stage1_per_sample[s], ec[i].sparsity_stage1_per_sample[s],
          eg[i].sparsity_stage12_per_sample[s], ec[i].sparsity_stage12_per_sample[s]);
      EXPECT_NEAR(eg[i].error_per_sample[s], ec[i].error_per_sample[s], 5e-3);
      EXPECT_DOUBLE_EQ(eg[i].sparsity_stage1_per_sample[s], ec[i].sparsity_stage1_per_sample[s]);
      EXPECT_NEAR(eg[i].sparsity_stage12_per_sample[s], ec[i].sparsity_stage12_per_sample[s], 0.05);
    }
  }
  // Same candidates again: cached, deterministic.
  const auto eg2 = gpu->evaluate(cands);
  for (size_t i = 0; i < cands.size(); ++i) EXPECT_EQ(eg2[i].error_worst, eg[i].error_worst);
}

// ---- timing (disabled by default) ------------------------------------------------------------

double median_ms(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
std::vector<float> time_it(F&& f, int iters) {
  cudaStream_t s = at::cuda::getCurrentCUDAStream().stream();
  for (int i = 0; i < 3; ++i) f();
  std::vector<float> out;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(e0, s);
    f();
    cudaEventRecord(e1, s);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    out.push_back(ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return out;
}

TEST(RuntimeBench, DISABLED_PrepareTiming) {
  REQUIRE_GPU();
  struct Shape {
    int64_t b, h, n, d;
    const char* geometry;
  };
  for (const Shape s : {Shape{1, 32, 32768, 128, "sm90"}, Shape{1, 32, 32768, 64, "sm90"},
                        Shape{2, 30, 17776, 64, "sm90"}, Shape{1, 32, 32768, 128, "sm80"}}) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
    const auto opts = at::TensorOptions(at::kHalf).device(at::kCUDA);
    // Structured-ish data on the GPU (not zeros: a smooth component plus noise).
    at::Tensor q = at::randn({s.b, s.h, s.n, s.d}, opts);
    at::Tensor k = at::randn({s.b, s.h, s.n, s.d}, opts) + 0.5;
    at::Tensor v = at::randn({s.b, s.h, s.n, s.d}, opts);
    const ref::Geometry g = ref::geometry_by_name(s.geometry);
    const rt::Thresholds t = rt::Thresholds::uniform(s.h, 0.9f, 0.3f, at::kCUDA);
    rt::Options o;
    rt::Prepared p = rt::quantize(q, k, v, g, o);
    const auto tq = time_it([&] { p = rt::quantize(q, k, v, g, o); }, 30);
    const auto tp = time_it([&] { rt::predict(p, t, o); }, 30);
    const auto tall = time_it([&] { rt::prepare(q, k, v, g, t, o); }, 30);
    // Pass by pass, as differences of prefixes (passes 0..i): a pass run alone would read the
    // statistics of freshly allocated, uninitialised buffers, and garbage scales can send the
    // V pass down the slow path of the IEEE division (kernels/NOTES.md, quantisation run 5).
    double prefix_ms[4], stage_ms[4];
    for (int i = 0; i < 4; ++i) {
      rt::Options os = o;
      os.quant_stages = (2u << i) - 1;
      prefix_ms[i] = median_ms(time_it([&] { rt::quantize(q, k, v, g, os); }, 30));
      stage_ms[i] = prefix_ms[i] - (i > 0 ? prefix_ms[i - 1] : 0.0);
    }
    std::printf(
        "[bench] %s passes (prefix differences): K/V column stats %.3f ms, finalise %.3f ms, "
        "Q/K blocks %.3f ms, V %.3f ms\n",
        s.geometry, stage_ms[0], stage_ms[1], stage_ms[2], stage_ms[3]);
    at::Tensor dst = at::empty_like(q);
    const auto tcopy = time_it([&] { dst.copy_(q); }, 30);
    const double in_bytes = 3.0 * q.numel() * 2;  // q, k, v read once
    const double out_bytes = 3.0 * q.numel() * (g.pv == ref::PvNumerics::kFp8 ? 1 : 1.0 + 1.0 / 3);
    const double extra = 2.0 * k.numel() * 2;  // second read of K and V
    const double copy_bw = 2.0 * q.numel() * 2 / (median_ms(tcopy) * 1e-3);
    std::printf(
        "[bench] %s B,H,N,D=%lld,%lld,%lld,%lld: quantize %.3f ms, predict %.3f ms, prepare "
        "%.3f ms (min %.3f); copy bw %.2f TB/s; compulsory %.0f MB -> floor %.3f ms at copy bw; "
        "moved %.0f MB -> %.3f ms\n",
        s.geometry, (long long)s.b, (long long)s.h, (long long)s.n, (long long)s.d, median_ms(tq),
        median_ms(tp), median_ms(tall), *std::min_element(tall.begin(), tall.end()), copy_bw / 1e12,
        (in_bytes + out_bytes) / 1e6, (in_bytes + out_bytes) / copy_bw * 1e3,
        (in_bytes + out_bytes + extra) / 1e6, (in_bytes + out_bytes + extra) / copy_bw * 1e3);
  }
}

}  // namespace
