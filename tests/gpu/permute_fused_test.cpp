// The token permutation fused into the kernels (issue 17): runtime::Options::token_order makes
// the quantisation passes read token n from row perm[n] of q (and of k, v when Nk == Nq) and the
// attention epilogue store query row n at row perm[n] of o. It replaces an explicit gather of
// q, k, v (index_select), the kernel on the gathered copies, and a scatter of o back
// (index_select by the inverse). The proof here is that the two are bit-identical: every
// quantised tensor and prediction statistic, the LUT, and the output in the caller's order, for
// both kernels (sm90: the default and every compiled Hopper kernel by name, so both epilogue
// call sites at both head dims; sm80), D 64 and 128 (and a zero-padded 96), fp16 and bf16, HND and
// NHD views, Nk == Nq and Nk != Nq (only q permuted), causal, GQA with batch > 1, stage 2 on, and
// real-image tensors at full length. Outputs start as NaN, so a row the epilogue never stores
// cannot pass. Plus the runtime's refusals of a malformed index. Skips without a CUDA device.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "io/dump.hpp"
#include "reference/hilbert.hpp"
#include "reference/reference.hpp"
#include "runtime/permute.hpp"
#include "runtime/runtime.hpp"
#include "support/gpu.hpp"
#include "support/realdata.hpp"

namespace {

namespace fs = std::filesystem;
namespace ref = sparge::ref;
namespace rt = sparge::runtime;
using sparge::ExitCode;
using sparge::test::runnable;

constexpr float kNoSkip = -std::numeric_limits<float>::infinity();

// The kernels of a geometry: "sm80", or "sm90" (each head dim's default) and every compiled
// Hopper kernel by name ("sm90.pingpong", "sm90.warpgroup", experiments when compiled), so each
// call site of the Hopper epilogue runs at both head dims.
std::vector<std::string> kernels_of(const std::string& geometry) {
  std::vector<std::string> out;
  for (const std::string& name : rt::kernel_names()) {
    if (rt::kernel_geometry(name) == geometry) out.push_back(name);
  }
  return out;
}

// A permutation and its inverse as int64 CUDA tensors.
struct Perm {
  at::Tensor index, inverse;
};
Perm on_gpu(const std::vector<int64_t>& perm) {
  const auto host = at::TensorOptions(at::kLong);
  return {at::tensor(perm, host).to(at::kCUDA),
          at::tensor(ref::inverse_permutation(perm), host).to(at::kCUDA)};
}

// [B, H, N, D] output of the given dtype, HND or an NHD view, every element NaN.
at::Tensor nan_output(int64_t b, int64_t h, int64_t n, int64_t d, at::ScalarType dt, bool nhd) {
  const auto opts = at::TensorOptions(dt).device(at::kCUDA);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  return nhd ? at::full({b, n, h, d}, nan, opts).transpose(1, 2)
             : at::full({b, h, n, d}, nan, opts);
}

struct Outcome {
  rt::Prepared p;
  at::Tensor o;  // [B, H, Nq, head_dim] in the caller's token order
};

// The explicit path: q (k, v when Nk == Nq) gathered by index_select, prediction, quantisation
// and the kernel on the copies, the output gathered back by the inverse.
Outcome gather_kernel_scatter(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const Perm& perm, const ref::Geometry& g, const std::string& kernel,
                              const rt::Thresholds& th, const rt::Options& opts, bool nhd_out) {
  const bool kv_on_grid = k.size(2) == q.size(2);
  auto gather = [&](const at::Tensor& x) { return x.index_select(2, perm.index); };
  Outcome r;
  r.p = rt::prepare(gather(q), kv_on_grid ? gather(k) : k, kv_on_grid ? gather(v) : v, g, th, opts);
  const at::Tensor o =
      nan_output(r.p.batch, r.p.heads, r.p.seq_q, r.p.head_dim, q.scalar_type(), nhd_out);
  rt::run_attention(r.p, o, th.lambda, kernel);
  r.o = o.index_select(2, perm.inverse);
  return r;
}

// The fused path: the caller's tensors and output, the index in Options::token_order.
Outcome fused(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Perm& perm,
              const ref::Geometry& g, const std::string& kernel, const rt::Thresholds& th,
              rt::Options opts, bool nhd_out) {
  opts.token_order = perm.index;
  Outcome r;
  r.p = rt::prepare(q, k, v, g, th, opts);
  r.o = nan_output(r.p.batch, r.p.heads, r.p.seq_q, r.p.head_dim, q.scalar_type(), nhd_out);
  rt::run_attention(r.p, r.o, th.lambda, kernel);
  return r;
}

// Bitwise equality (the FP8 V has no at::equal on CUDA, so everything is compared as bytes).
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (!a.defined() || !b.defined()) return a.defined() == b.defined();
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  return at::equal(a.contiguous().view(at::kByte), b.contiguous().view(at::kByte));
}

void expect_identical(const Outcome& fused_run, const Outcome& explicit_run) {
  const rt::Prepared &a = fused_run.p, &b = explicit_run.p;
  const std::pair<const char*, std::pair<at::Tensor, at::Tensor>> parts[] = {
      {"q8", {a.q8, b.q8}},
      {"q_scale", {a.q_scale, b.q_scale}},
      {"q_pooled", {a.q_pooled, b.q_pooled}},
      {"q_sim", {a.q_sim, b.q_sim}},
      {"k8", {a.k8, b.k8}},
      {"k_scale", {a.k_scale, b.k_scale}},
      {"k_pooled", {a.k_pooled, b.k_pooled}},
      {"k_sim", {a.k_sim, b.k_sim}},
      {"k_mean", {a.k_mean, b.k_mean}},
      {"v", {a.v, b.v}},
      {"v_scale", {a.v_scale, b.v_scale}},
      {"lut_len", {a.lut_len, b.lut_len}},
      {"lut", {a.lut, b.lut}},
      {"o", {fused_run.o, explicit_run.o}},
  };
  for (const auto& [name, t] : parts) {
    EXPECT_TRUE(same_bits(t.first, t.second))
        << name << " differs from gather -> kernel -> scatter";
  }
  EXPECT_FALSE(at::isnan(fused_run.o).any().item<bool>()) << "an output row was never stored";
}

struct Case {
  std::string name;
  std::string kernel;  // "sm90" or "sm80"
  int64_t batch = 1, heads = 4, kv_heads = 4, head_dim = 64;
  at::ScalarType dtype = at::kHalf;
  bool nhd = false;  // q, k, v and o as NHD views
  bool causal = false;
  int64_t seq_k = 0;  // 0: Nk = Nq (keys on the grid, permuted); else unpermuted text keys
  float lambda = -4.f;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char* kernel : {"sm90", "sm80"}) {
    for (const int64_t d : {64, 128}) {
      for (const at::ScalarType dt : {at::kHalf, at::kBFloat16}) {
        for (const bool nhd : {false, true}) {
          Case c;
          c.kernel = kernel;
          c.head_dim = d;
          c.dtype = dt;
          c.nhd = nhd;
          c.name = fmt::format("{}_d{}_{}_{}", kernel, d, dt == at::kHalf ? "fp16" : "bf16",
                               nhd ? "nhd" : "hnd");
          out.push_back(c);
        }
      }
      Case c;
      c.kernel = kernel;
      c.head_dim = d;
      const std::string base = fmt::format("{}_d{}_", kernel, d);
      // Cross-attention: 333 text keys, only the queries permuted.
      Case cross = c;
      cross.name = base + "cross_nk333_nhd";
      cross.seq_k = 333;
      cross.nhd = true;
      out.push_back(cross);
      Case causal = c;
      causal.name = base + "causal_bf16";
      causal.causal = true;
      causal.dtype = at::kBFloat16;
      out.push_back(causal);
      // Causal with more keys than queries: Nk != Nq, only the queries permuted.
      Case causal_long = c;
      causal_long.name = base + "causal_nk900";
      causal_long.causal = true;
      causal_long.seq_k = 900;
      out.push_back(causal_long);
      Case gqa = c;
      gqa.name = base + "gqa_h8_hkv2_b2";
      gqa.batch = 2;
      gqa.heads = 8;
      gqa.kv_heads = 2;
      out.push_back(gqa);
      Case dense = c;
      dense.name = base + "stage2_off";
      dense.lambda = kNoSkip;
      out.push_back(dense);
    }
    Case padded;
    padded.kernel = kernel;
    padded.head_dim = 96;  // zero padded to 128 by the runtime (a copy), gathered all the same
    padded.name = fmt::format("{}_d96_padded", kernel);
    out.push_back(padded);
  }
  return out;
}

class PermuteFused : public ::testing::TestWithParam<Case> {};

// 64 text tokens + a 3 x 12 x 20 grid = 784 queries: 6.125 blocks of 128 (and 12.25 of 64), so
// the last block is partial and rows past Nq must stay unstored.
TEST_P(PermuteFused, BitIdenticalToGatherKernelScatter) {
  REQUIRE_GPU();
  const Case c = GetParam();
  if (!runnable(c.kernel)) GTEST_SKIP() << c.kernel << " not runnable on this device/build";
  const std::vector<int64_t> hilbert = ref::hilbert_permutation(3, 12, 20, 64, 0);
  const int64_t n = static_cast<int64_t>(hilbert.size());
  const int64_t nk = c.seq_k > 0 ? c.seq_k : n;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(17);
  auto input = [&](int64_t heads, int64_t tokens) {
    return sparge::test::to_gpu(
        at::randn({c.batch, heads, tokens, c.head_dim}, gen, at::kFloat).to(c.dtype), c.nhd);
  };
  const at::Tensor q = input(c.heads, n), k = input(c.kv_heads, nk), v = input(c.kv_heads, nk);
  const Perm perm = on_gpu(hilbert);
  ASSERT_FALSE(at::equal(perm.index, at::arange(n, perm.index.options())));
  const ref::Geometry g = ref::geometry_by_name(c.kernel);
  // N(0, 1) inputs have no block self-similarity, so any θ filter keeps every block, and their
  // attention is nearly uniform over the ~7 K blocks, so τ 0.9 keeps all of them too: θ off and
  // τ 0.5 make the prediction drop blocks (checked below), which the equality needs to mean much.
  const rt::Thresholds th = rt::Thresholds::uniform(c.heads, 0.5f, -1.f, at::kCUDA, c.lambda);
  rt::Options opts;
  opts.causal = c.causal;
  for (const std::string& kernel : kernels_of(c.kernel)) {
    SCOPED_TRACE(kernel);
    const Outcome want = gather_kernel_scatter(q, k, v, perm, g, kernel, th, opts, c.nhd);
    const Outcome got = fused(q, k, v, perm, g, kernel, th, opts, c.nhd);
    expect_identical(got, want);
    // Not vacuous: the prediction kept some blocks and dropped others.
    const double kept = want.p.lut_len.sum().item<double>();
    EXPECT_GT(kept, 0.0);
    EXPECT_LT(kept, static_cast<double>(want.p.lut.numel())) << "no block was dropped";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, PermuteFused, ::testing::ValuesIn(cases()),
                         sparge::test::param_name<Case>);

using sparge::test::code_of;

// The whole pipeline (runtime::attention): the output laid out like q (NHD here) and in q's
// token order.
TEST(PermuteFusedPipeline, AttentionReturnsTheCallersOrder) {
  REQUIRE_GPU();
  const std::vector<int64_t> hilbert = ref::hilbert_permutation(3, 12, 20, 64, 0);
  const int64_t n = static_cast<int64_t>(hilbert.size());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto input = [&] {
    return sparge::test::to_gpu(at::randn({1, 4, n, 64}, gen, at::kFloat).to(at::kHalf), true);
  };
  const at::Tensor q = input(), k = input(), v = input();
  const Perm perm = on_gpu(hilbert);
  const rt::Thresholds th = rt::Thresholds::uniform(4, 0.9f, 0.3f, at::kCUDA, -4.f);
  for (const char* kernel : {"sm90", "sm80"}) {
    if (!runnable(kernel)) continue;
    SCOPED_TRACE(kernel);
    rt::Options opts;
    const at::Tensor want =
        rt::attention(q.index_select(2, perm.index), k.index_select(2, perm.index),
                      v.index_select(2, perm.index), th, opts, kernel)
            .index_select(2, perm.inverse);
    opts.token_order = perm.index;
    const at::Tensor got = rt::attention(q, k, v, th, opts, kernel);
    EXPECT_EQ(got.sizes(), q.sizes());
    // NHD: the token stride (dim 2) spans all heads, so it is the larger one; the output takes
    // q's strides exactly.
    EXPECT_GT(got.stride(2), got.stride(1)) << "an NHD q gives an NHD output";
    EXPECT_EQ(got.strides(), q.strides());
    EXPECT_TRUE(same_bits(got, want));
  }
}

TEST(PermuteFusedValidation, MalformedIndexIsAUsageError) {
  REQUIRE_GPU();
  const at::Tensor q = at::randn({1, 2, 256, 64}, at::TensorOptions(at::kHalf).device(at::kCUDA));
  const at::Tensor idx = at::arange(256, at::TensorOptions(at::kLong).device(at::kCUDA)).flip(0);
  auto quant = [&](const at::Tensor& order) {
    return [=] {
      rt::Options o;
      o.token_order = order;
      rt::quantize(q, q, q, ref::hopper_geometry(), o);
    };
  };
  EXPECT_EQ(code_of(quant(idx)), ExitCode::kOk);
  EXPECT_EQ(code_of(quant(idx.cpu())), ExitCode::kUsage) << "index on the CPU";
  EXPECT_EQ(code_of(quant(idx.to(at::kInt))), ExitCode::kUsage) << "int32";
  EXPECT_EQ(code_of(quant(idx.narrow(0, 0, 255))), ExitCode::kUsage) << "Nq - 1 entries";
  EXPECT_EQ(code_of(quant(idx.view({1, 256}))), ExitCode::kUsage) << "rank 2";
  EXPECT_EQ(code_of(quant(at::cat({idx, idx}).view({256, 2}).select(1, 0))), ExitCode::kUsage)
      << "strided";
}

// ---- real-image tensors ------------------------------------------------------------------------
// The dump of tests/gpu/real_data_test.cpp (support/realdata.hpp: one generated file for both):
// [1, 4, 17776, D] fp16, 226 text tokens + a 13 x 30 x 45 grid, and its Hilbert order.
struct RealDump {
  at::Tensor q, k, v;
  std::vector<int64_t> hilbert;
};
RealDump real_dump(int64_t d) {
  const fs::path path = sparge::test::real_image_dump(d);
  const sparge::io::DumpReader reader(path);
  const auto& info = reader.info();
  if (!info.grid) throw std::runtime_error(path.string() + ": no token grid");
  const auto& grid = *info.grid;
  return {reader.read(0, 0, "q"), reader.read(0, 0, "k"), reader.read(0, 0, "v"),
          ref::hilbert_permutation(grid[0], grid[1], grid[2], info.text_prefix, info.text_suffix)};
}

class PermuteFusedRealImage : public ::testing::TestWithParam<sparge::test::KernelDim> {};

TEST_P(PermuteFusedRealImage, BitIdenticalToGatherKernelScatter) {
  REQUIRE_GPU();
  const sparge::test::KernelDim c = GetParam();
  if (!runnable(c.kernel)) GTEST_SKIP() << c.kernel << " not runnable on this device/build";
  const RealDump dump = real_dump(c.head_dim);
  const at::Tensor q = dump.q.cuda(), k = dump.k.cuda(), v = dump.v.cuda();
  ASSERT_EQ(q.size(2), static_cast<int64_t>(dump.hilbert.size()));
  const Perm perm = on_gpu(dump.hilbert);
  const ref::Geometry g = ref::geometry_by_name(c.kernel);
  const rt::Thresholds th = rt::Thresholds::uniform(q.size(1), 0.9f, -1.f, at::kCUDA, -4.f);
  const rt::Options opts;
  for (const std::string& kernel : kernels_of(c.kernel)) {
    SCOPED_TRACE(kernel);
    expect_identical(fused(q, k, v, perm, g, kernel, th, opts, false),
                     gather_kernel_scatter(q, k, v, perm, g, kernel, th, opts, false));
  }
  const rt::Prepared natural = rt::prepare(q, k, v, g, th, opts);
  rt::Options hilbert;
  hilbert.token_order = perm.index;
  const rt::Prepared permuted = rt::prepare(q, k, v, g, th, hilbert);
  std::printf("[%s D=%lld] kept blocks: %.3f in the Hilbert order, %.3f in the natural order\n",
              c.kernel, static_cast<long long>(c.head_dim),
              permuted.lut_len.sum().item<double>() / static_cast<double>(permuted.lut.numel()),
              natural.lut_len.sum().item<double>() / static_cast<double>(natural.lut.numel()));
}

INSTANTIATE_TEST_SUITE_P(Kernels, PermuteFusedRealImage, sparge::test::real_image_kernel_dims(),
                         sparge::test::kernel_dim_name);

}  // namespace
