// GPU tests of the Hopper "i8f8" attention kernel (kernels/attention_sm90.cu) against the CPU
// reference (src/reference): same quantised inputs (built on the host by the reference's own
// quantisers), same block mask and lambda. Skips without an sm_90 device or sm_90a code.
//
// Every correctness test runs once per compiled Hopper kernel (AttentionParams::sm90_kernel = each
// of kernels::sm90_kernels_compiled()): each is selectable in production (--kernel sm90.NAME), so
// each must match the reference, not only each head dim's default.
//
// Also holds a disabled timing test (AttentionSm90Bench.DISABLED_Throughput) run by hand:
//   gpu_test_attention_sm90 --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
#include "kernels/attention_sm90.cuh"

#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention_api.h"
#include "kernels/params.h"
#include "reference/reference.hpp"
#include "support/gpu.hpp"
#include "support/v8_order.hpp"

namespace {

using sparge::kernels::AttentionParams;
using sparge::kernels::DType;
using sparge::kernels::Sm90Kernel;
namespace ref = sparge::ref;

constexpr int kBlock = 128;  // "sm90" geometry: 128 x 128 blocks, 16-row stage-2 groups
constexpr int kGroups = 8;
constexpr float kInf = std::numeric_limits<float>::infinity();

using sparge::test::cuda_check;

bool sm90_ready() { return sparge::kernels::attention_sm90_available(); }
#define REQUIRE_SM90()                                                               \
  do {                                                                               \
    if (!sm90_ready()) GTEST_SKIP() << "no sm_90 device or no sm_90a code in build"; \
  } while (0)

// Owning device allocation.
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(size_t n) : bytes(n) {
    cuda_check(cudaMalloc(&p, std::max<size_t>(n, 16)), "cudaMalloc");
  }
  DevBuf(DevBuf&& o) noexcept : p(o.p), bytes(o.bytes) { o.p = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(bytes, o.bytes);
    return *this;
  }
  DevBuf(const DevBuf&) = delete;
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

DevBuf upload(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  DevBuf b(c.nbytes());
  cuda_check(cudaMemcpy(b.p, c.data_ptr(), c.nbytes(), cudaMemcpyHostToDevice), "upload");
  return b;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Problem: q [B, H, Nq, D], k/v [B, Hkv, Nk, D], fp32 on the CPU.
struct Problem {
  at::Tensor q, k, v;
  bool causal = false;
  int64_t B() const { return q.size(0); }
  int64_t H() const { return q.size(1); }
  int64_t Hkv() const { return k.size(1); }
  int64_t Nq() const { return q.size(2); }
  int64_t Nk() const { return k.size(2); }
  int64_t D() const { return q.size(3); }
  int64_t nq() const { return cdiv(Nq(), kBlock); }
  int64_t nk() const { return cdiv(Nk(), kBlock); }
};

// Random N(0, 1) inputs, or "structured" ones: a shared direction u that q follows and each K
// block carries with its own weight, so some blocks' logits sit far below others' (stage-2
// skipping has something to skip) and the attention is peaky rather than uniform.
Problem make_problem(int64_t B, int64_t H, int64_t Hkv, int64_t Nq, int64_t Nk, int64_t D,
                     bool causal, bool structured) {
  Problem p;
  p.causal = causal;
  p.q = at::randn({B, H, Nq, D});
  p.k = at::randn({B, Hkv, Nk, D});
  p.v = at::randn({B, Hkv, Nk, D});
  if (structured) {
    at::Tensor u = at::randn({D});
    u = u / u.norm();
    // Block shifts of the logits up to +-8 (natural units): w * 2 sqrt(D) / sqrt(D).
    p.q = p.q + 2.0 * std::sqrt(static_cast<double>(D)) * u.view({1, 1, 1, D});
    const int64_t nk = cdiv(Nk, kBlock);
    at::Tensor w = (at::rand({B, Hkv, nk}) * 8.0 - 4.0).repeat_interleave(kBlock, 2);
    w = w.narrow(2, 0, Nk).unsqueeze(-1);
    p.k = p.k + w * u.view({1, 1, 1, D});
    p.v = p.v * (1.0 + at::rand({B, Hkv, 1, D}));  // channel scales differ
  }
  return p;
}

// Random block mask of the given density AND causal validity; every row keeps >= 1 valid block
// (its last valid one), as the predictor guarantees.
at::Tensor random_mask(const Problem& p, double density) {
  at::Tensor valid = ref::causal_block_mask(p.Nq(), p.Nk(), ref::hopper_geometry(), p.causal);
  at::Tensor m =
      (at::rand({p.B(), p.H(), p.nq(), p.nk()}) < density) & valid.view({1, 1, p.nq(), p.nk()});
  at::Tensor last = (valid.to(at::kLong) * at::arange(p.nk()).view({1, -1})).amax(1);  // [nq]
  at::Tensor force = at::arange(p.nk()).view({1, -1}) == last.view({-1, 1});           // [nq, nk]
  at::Tensor empty_rows = m.sum(-1, /*keepdim=*/true) == 0;
  return m | (empty_rows & force.view({1, 1, p.nq(), p.nk()}));
}

// Kernel inputs built from the reference quantisers, padded to whole 128-blocks (params.h).
struct DeviceInputs {
  DevBuf q8, k8, v8, q_scale, k_scale, v_scale;
};
DeviceInputs quantize(const Problem& p) {
  const ref::BlockStats qs = ref::q_block_stats(p.q, kBlock);
  const ref::BlockStats ks = ref::k_block_stats(p.k, kBlock);
  const ref::VFp8 vq = ref::quantize_v_fp8(p.v);
  const int64_t pad_q = p.nq() * kBlock - p.Nq(), pad_k = p.nk() * kBlock - p.Nk();
  DeviceInputs d;
  d.q8 = upload(at::constant_pad_nd(qs.values, {0, 0, 0, pad_q}));
  d.k8 = upload(at::constant_pad_nd(ks.values, {0, 0, 0, pad_k}));
  // [B, Hkv, D, nk * 128] e4m3 in the v8 token order (params.h): the values are e4m3 already, so
  // the cast is exact.
  d.v8 = upload(at::constant_pad_nd(vq.values, {0, 0, 0, pad_k})
                    .transpose(2, 3)
                    .index_select(3, sparge::test::v8_gather(p.nk() * kBlock))
                    .contiguous()
                    .to(at::kFloat8_e4m3fn));
  d.q_scale = upload(qs.scale.to(at::kFloat));
  d.k_scale = upload(ks.scale.to(at::kFloat));
  d.v_scale = upload(vq.scale.to(at::kFloat));
  return d;
}

struct RunOptions {
  at::Tensor mask;            // bool [B, H, nq, nk]; undefined = dense mode (lut = nullptr)
  std::vector<float> lambda;  // natural-log units per query head; empty = stage 2 off
  DType out = DType::kFloat16;
  bool nhd = false;  // output [B, Nq, H, D] instead of [B, H, Nq, D]
  int max_ctas = 0;  // persistent kernel: grid cap (0 = one CTA per SM)
  // kDefault: the kernel of the running AttentionSm90V test (g_fixture_kernel), else each head
  // dim's default.
  Sm90Kernel kernel = Sm90Kernel::kDefault;
};
// The kernel an AttentionSm90V test runs (its parameter), kDefault outside those tests.
Sm90Kernel g_fixture_kernel = Sm90Kernel::kDefault;
struct RunResult {
  at::Tensor o;   // fp32 [B, H, Nq, D]
  at::Tensor pv;  // int32 [B, H, nq, 8]
};

RunResult run_kernel(const Problem& p, const DeviceInputs& in, const RunOptions& opt) {
  const int64_t B = p.B(), H = p.H(), Nq = p.Nq(), D = p.D(), nq = p.nq(), nk = p.nk();
  AttentionParams prm;
  prm.q8 = in.q8.as<int8_t>();
  prm.k8 = in.k8.as<int8_t>();
  prm.v = in.v8.p;
  prm.q_scale = in.q_scale.as<float>();
  prm.k_scale = in.k_scale.as<float>();
  prm.v_scale = in.v_scale.as<float>();
  DevBuf lut, lut_len, lambda, o, pv;
  if (opt.mask.defined()) {
    // Kept blocks first, ascending (sort key (!kept, j)), zero-filled after lut_len.
    at::Tensor m = opt.mask.to(at::kBool).reshape({-1, nk});
    at::Tensor key = m.logical_not().to(at::kLong) * nk + at::arange(nk).view({1, -1});
    at::Tensor idx = std::get<0>(key.sort(1)).remainder(nk);
    at::Tensor len = m.sum(1);
    idx =
        at::where(at::arange(nk).view({1, -1}) < len.view({-1, 1}), idx, at::zeros({}, at::kLong));
    lut = upload(idx.to(at::kInt));
    lut_len = upload(len.to(at::kInt));
    prm.lut = lut.as<int32_t>();
    prm.lut_len = lut_len.as<int32_t>();
  }
  if (!opt.lambda.empty()) {
    std::vector<float> l2(opt.lambda.size());
    // The reference's conversion: fp32 lambda * fp32 log2(e).
    for (size_t h = 0; h < l2.size(); ++h) l2[h] = opt.lambda[h] * 1.44269504088896340736f;
    lambda = upload(at::tensor(l2, at::kFloat));
    prm.lambda_log2 = lambda.as<float>();
  }
  const at::ScalarType odt = opt.out == DType::kFloat16    ? at::kHalf
                             : opt.out == DType::kBFloat16 ? at::kBFloat16
                                                           : at::kFloat;
  const size_t o_elems = static_cast<size_t>(B * H * Nq * D);
  o = DevBuf(o_elems * at::elementSize(odt));
  cuda_check(cudaMemset(o.p, 0xFF, o.bytes), "poison o");  // NaN in every output dtype
  pv = DevBuf(static_cast<size_t>(B * H * nq * kGroups) * sizeof(int32_t));
  cuda_check(cudaMemset(pv.p, 0xFF, pv.bytes), "poison pv");  // -1
  prm.o = o.p;
  prm.o_dtype = opt.out;
  if (opt.nhd) {
    prm.o_stride_b = Nq * H * D, prm.o_stride_h = D, prm.o_stride_n = H * D;
  } else {
    prm.o_stride_b = H * Nq * D, prm.o_stride_h = Nq * D, prm.o_stride_n = D;
  }
  prm.stage2_kept = pv.as<int32_t>();
  prm.batch = static_cast<int>(B);
  prm.heads = static_cast<int>(H);
  prm.kv_heads = static_cast<int>(p.Hkv());
  prm.seq_q = static_cast<int>(Nq);
  prm.seq_k = static_cast<int>(p.Nk());
  prm.head_dim = static_cast<int>(D);
  prm.num_q_blocks = static_cast<int>(nq);
  prm.num_k_blocks = static_cast<int>(nk);
  prm.sm_scale_log2 =
      static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)) * 1.4426950408889634);
  prm.causal = p.causal;
  prm.causal_offset = static_cast<int>(p.Nk() - Nq);
  prm.max_ctas = opt.max_ctas;
  prm.sm90_kernel = opt.kernel != Sm90Kernel::kDefault ? opt.kernel : g_fixture_kernel;

  sparge::kernels::launch_attention_sm90(prm, nullptr);
  cuda_check(cudaDeviceSynchronize(), "attention_sm90 kernel");

  at::Tensor host = at::empty({static_cast<int64_t>(o_elems)}, odt);
  cuda_check(cudaMemcpy(host.data_ptr(), o.p, o.bytes, cudaMemcpyDeviceToHost), "download o");
  RunResult r;
  r.o = opt.nhd ? host.view({B, Nq, H, D}).permute({0, 2, 1, 3}) : host.view({B, H, Nq, D});
  r.o = r.o.to(at::kFloat).contiguous();
  r.pv = at::empty({B, H, nq, kGroups}, at::kInt);
  cuda_check(cudaMemcpy(r.pv.data_ptr(), pv.p, pv.bytes, cudaMemcpyDeviceToHost), "download pv");
  return r;
}

double rel_l1(const at::Tensor& a, const at::Tensor& b) {
  return ref::compare(a.to(at::kDouble), b.to(at::kDouble)).rel_l1;
}

struct Case {
  const char* name;
  int64_t B, H, Hkv, Nq, Nk, D;
  bool causal;
  double density;
  float lambda;  // natural-log units for every head (-inf = off)
  DType out;
  bool nhd;
  bool structured;
};

std::string describe(const Case& c, uint64_t seed) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s: B=%lld H=%lld Hkv=%lld Nq=%lld Nk=%lld D=%lld causal=%d density=%.2f "
                "lambda=%g out=%d nhd=%d seed=%llu",
                c.name, (long long)c.B, (long long)c.H, (long long)c.Hkv, (long long)c.Nq,
                (long long)c.Nk, (long long)c.D, c.causal, c.density, c.lambda,
                static_cast<int>(c.out), c.nhd, (unsigned long long)seed);
  return buf;
}

uint64_t fresh_seed() { return std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32); }

// Tolerance vs the CPU emulation on identical inputs, mask and lambda. The logits, running
// maxima and stage-2 decisions are bit-identical (exact int32 dot products, the same fp32
// products in the same order); what differs: ex2.approx vs the CPU exp2 (~2 ulp on p, which can
// flip an e4m3 rounding of P near a tie: one e4m3 step, 2^-3 relative, of one element), each
// block's sums of P·V and of P (l) in the tensor core's truncating ~13-bit accumulator against the
// reference's fp32 sums, and the output rounding (fp16: 2^-11 relative,
// bf16: 2^-8, so bf16 outputs alone reach ~2e-3 rel-L1).
double emulation_tolerance(DType out) { return out == DType::kBFloat16 ? 6e-3 : 3e-3; }

TEST(AttentionSm90, RejectsBadParams) {
  AttentionParams p;  // no device needed: parameters are checked before anything else
  p.head_dim = 96;
  EXPECT_THROW(sparge::kernels::launch_attention_sm90(p, nullptr), std::invalid_argument);
}

// Runs the test body with the Hopper kernel GetParam().
class AttentionSm90V : public ::testing::TestWithParam<Sm90Kernel> {
 protected:
  void SetUp() override { g_fixture_kernel = GetParam(); }
  void TearDown() override { g_fixture_kernel = Sm90Kernel::kDefault; }
};
INSTANTIATE_TEST_SUITE_P(Kernels, AttentionSm90V,
                         ::testing::ValuesIn(sparge::kernels::sm90_kernels_compiled()),
                         [](const ::testing::TestParamInfo<Sm90Kernel>& i) {
                           return std::string(sparge::kernels::sm90_kernel_name(i.param));
                         });

TEST_P(AttentionSm90V, MatchesCpuEmulation) {
  REQUIRE_SM90();
  const float l1 = -1.5f, l3 = -4.f;
  const Case cases[] = {
      {"basic", 1, 2, 2, 256, 384, 128, false, 0.5, -kInf, DType::kFloat16, false, false},
      {"partial+gqa+batch", 2, 4, 2, 300, 517, 64, false, 0.6, -kInf, DType::kBFloat16, true,
       false},
      {"causal mqa", 1, 2, 1, 333, 333, 128, true, 1.0, -kInf, DType::kFloat32, false, false},
      {"causal Lq<Lk", 1, 3, 3, 200, 700, 64, true, 0.5, -kInf, DType::kFloat16, true, false},
      {"stage2 d128", 1, 2, 2, 512, 1024, 128, false, 1.0, l1, DType::kFloat16, false, true},
      {"stage2 d64 causal", 2, 2, 1, 640, 1000, 64, true, 0.7, l3, DType::kBFloat16, true, true},
      {"stage2 lambda 0", 1, 2, 2, 384, 768, 128, false, 0.8, 0.f, DType::kFloat16, false, true},
      // One K block per row (each consumer runs only the first and the last phase), and many
      // q blocks with uneven LUT lengths side by side (per-CTA phase counts differ).
      {"single k block", 1, 2, 2, 520, 100, 64, false, 1.0, -kInf, DType::kFloat32, false, true},
      {"uneven luts", 1, 3, 3, 1024, 1536, 128, false, 0.35, l3, DType::kFloat16, false, true},
  };
  for (const Case& c : cases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(describe(c, seed));
    at::manual_seed(seed);
    const Problem p = make_problem(c.B, c.H, c.Hkv, c.Nq, c.Nk, c.D, c.causal, c.structured);
    const at::Tensor mask = random_mask(p, c.density);
    const std::vector<float> lambda(c.H, c.lambda);
    const DeviceInputs in = quantize(p);
    const RunResult r = run_kernel(p, in, {mask, lambda, c.out, c.nhd});
    ASSERT_TRUE(at::isfinite(r.o).all().item<bool>()) << "unwritten or non-finite outputs";

    ref::AttentionOptions ao;
    ao.causal = c.causal;
    const ref::SparseResult e =
        ref::sparse_attention(p.q, p.k, p.v, mask, lambda, ref::hopper_geometry(), ao);
    const double err = rel_l1(r.o, e.o);
    EXPECT_LE(err, emulation_tolerance(c.out));
    // Stage-2 decisions are exact: stage-2 kept groups = kept groups - skipped groups.
    const int64_t stage2_kept = r.pv.sum().item<int64_t>();
    const double expected =
        static_cast<double>(e.kept_blocks) * kGroups - e.pv_skipped_blocks * kGroups;
    EXPECT_EQ(static_cast<double>(stage2_kept), expected);
    if (std::isfinite(c.lambda)) {
      EXPECT_GT(e.pv_skipped_blocks, 0.0) << "structured case should exercise stage 2";
    }
    std::printf("[%s] rel-L1 vs emulation %.3g, stage 2 kept %lld of %lld groups\n", c.name, err,
                (long long)stage2_kept, (long long)(e.kept_blocks * kGroups));
  }
}

// Every block kept, stage 2 off: the kernel sits on the quantisation floor, i.e. its error vs
// exact fp64 attention is the emulation's error (INT8 Q/K, FP8 P/V) up to the emulation
// tolerance, on random and structured inputs, causal and not.
TEST_P(AttentionSm90V, DenseMaskAtQuantisationFloor) {
  REQUIRE_SM90();
  const Case cases[] = {
      {"dense d128", 1, 2, 2, 384, 384, 128, false, 1.0, -kInf, DType::kFloat32, false, false},
      {"dense d64 structured", 1, 2, 1, 256, 640, 64, false, 1.0, -kInf, DType::kFloat32, false,
       true},
      {"dense causal", 1, 2, 2, 400, 400, 128, true, 1.0, -kInf, DType::kFloat32, false, true},
  };
  for (const Case& c : cases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(describe(c, seed));
    at::manual_seed(seed);
    const Problem p = make_problem(c.B, c.H, c.Hkv, c.Nq, c.Nk, c.D, c.causal, c.structured);
    const DeviceInputs in = quantize(p);
    const at::Tensor all = at::ones({p.B(), p.H(), p.nq(), p.nk()}, at::kBool);
    const RunResult r = run_kernel(p, in, {all, {}, c.out, c.nhd});
    ASSERT_TRUE(at::isfinite(r.o).all().item<bool>());
    ref::AttentionOptions ao;
    ao.causal = c.causal;
    const at::Tensor exact = ref::dense_attention(p.q, p.k, p.v, ao, at::kDouble);
    const ref::SparseResult e = ref::sparse_attention(
        p.q, p.k, p.v, all, std::vector<float>(p.H(), -kInf), ref::hopper_geometry(), ao);
    const double err_kernel = rel_l1(r.o, exact), err_emul = rel_l1(e.o, exact);
    EXPECT_NEAR(err_kernel, err_emul, emulation_tolerance(c.out));
    // Sanity bound on the floor itself (INT8 per-block QK + FP8 PV on these inputs ~1e-2..4e-2).
    EXPECT_LT(err_kernel, 0.08);
    std::printf("[%s] rel-L1 vs fp64 dense: kernel %.4g, emulation %.4g\n", c.name, err_kernel,
                err_emul);
  }
}

// A V constant along the keys comes out as that constant: l is the sum of the e4m3 P that
// multiply V, taken by the same P·V GEMM (the ones rows after V in each stage), so each row's
// weights sum to 1. What is left is the tensor core's truncating accumulation (~13 bits), which
// treats Σ P·448 (V8 of a constant channel) and Σ P·1 (the ones) differently because 448 is not
// a power of two; on an H100 (kernels/NOTES.md run 26) worst 2.0e-3 and mean 3.8e-4..7.8e-4 over
// six runs of these cases, so the bounds are twice that. A row sum of the unrounded p (the
// contract before) is off by Σ(P - p) / Σ p: the CPU contract then gave mean 2e-3..3.8e-3 and
// worst 7e-3..2.3e-2 on peaked inputs of this kind.
TEST_P(AttentionSm90V, WeightsSumToOneSoConstantValuesSurvive) {
  REQUIRE_SM90();
  const Case cases[] = {
      {"d64 sparse", 1, 2, 1, 384, 1000, 64, false, 0.6, -kInf, DType::kFloat32, false, true},
      {"d128 causal", 1, 2, 2, 500, 500, 128, true, 1.0, -kInf, DType::kFloat32, false, true},
      {"d128 stage2", 1, 2, 2, 512, 1024, 128, false, 0.8, -1.5f, DType::kFloat32, false, true},
  };
  for (const Case& c : cases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(describe(c, seed));
    at::manual_seed(seed);
    Problem p = make_problem(c.B, c.H, c.Hkv, c.Nq, c.Nk, c.D, c.causal, c.structured);
    // [B, Hkv, Nk, D]: channel d holds ±(d + 1) / 4 at every key.
    const at::Tensor per_channel =
        (at::arange(c.D, at::kFloat) + 1) * 0.25 * at::where(at::arange(c.D) % 3 == 0, -1.0, 1.0);
    p.v = per_channel.view({1, 1, 1, c.D}).expand({c.B, c.Hkv, c.Nk, c.D}).contiguous();
    const at::Tensor mask = random_mask(p, c.density);
    const DeviceInputs in = quantize(p);
    const RunResult r = run_kernel(p, in, {mask, std::vector<float>(c.H, c.lambda), c.out});
    ASSERT_TRUE(at::isfinite(r.o).all().item<bool>());
    const at::Tensor rel =
        ((r.o - per_channel.view({1, 1, 1, c.D})).abs() / per_channel.abs().view({1, 1, 1, c.D}));
    const float worst = rel.max().item<float>(), mean = rel.mean().item<float>();
    EXPECT_LT(worst, 4e-3f);
    EXPECT_LT(mean, 1.5e-3f);
    std::printf("[%s] constant V: worst relative error %.3g, mean %.3g\n", c.name, worst, mean);
  }
}

// Dense mode (lut = nullptr) visits every causally valid block in order: bit-identical to a full
// LUT. lambda = -inf for every head is bit-identical to stage 2 off (lambda_log2 = nullptr).
TEST_P(AttentionSm90V, DenseModeAndLambdaOffAreExact) {
  REQUIRE_SM90();
  for (bool causal : {false, true}) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE("causal=" + std::to_string(causal) + " seed=" + std::to_string(seed));
    at::manual_seed(seed);
    const Problem p = make_problem(1, 2, 1, 300, 460, 128, causal, true);
    const DeviceInputs in = quantize(p);
    const at::Tensor valid = ref::causal_block_mask(p.Nq(), p.Nk(), ref::hopper_geometry(), causal);
    const at::Tensor full = valid.view({1, 1, p.nq(), p.nk()}).expand({1, 2, p.nq(), p.nk()});
    const RunResult a = run_kernel(p, in, {full, {}, DType::kFloat32, false});
    const RunResult b = run_kernel(p, in, {at::Tensor(), {}, DType::kFloat32, false});
    const RunResult c = run_kernel(p, in, {full, {-kInf, -kInf}, DType::kFloat32, false});
    EXPECT_TRUE(at::equal(a.o, b.o)) << "dense mode differs from the full LUT";
    EXPECT_TRUE(at::equal(a.o, c.o)) << "lambda = -inf differs from stage 2 off";
    EXPECT_TRUE(at::equal(a.pv, c.pv));
    EXPECT_EQ(a.pv.sum().item<int64_t>(), full.sum().item<int64_t>() * kGroups);
  }
}

// pingpong (persistent) and warpgroup (one CTA per 64 rows, nothing carried between tiles) run
// the same per-row computation, so their outputs and stage-2 counts are bit-identical whatever
// pingpong's grid: 1 CTA walks every tile through the same Q/K/V rings (phases wrap many times),
// 3 CTAs claim tiles from the atomic counter in a run-dependent order, 0 = one CTA per SM. grid
// (an experiment: pingpong one tile per CTA) too, where compiled.
TEST(AttentionSm90, PersistentGridIsExactForAnyCtaCount) {
  REQUIRE_SM90();
  struct Persist {
    const char* name;
    int64_t B, H, Hkv, Nq, Nk, D;
    bool causal, structured, use_mask;
    double density;
    float lambda;
  };
  const Persist cases[] = {
      {"sparse stage2 gqa d128", 1, 4, 2, 1000, 1400, 128, false, true, true, 0.4, -1.5f},
      {"dense-mode causal d64 b2", 2, 3, 3, 700, 900, 64, true, true, false, 1.0, -kInf},
      {"one k block", 1, 2, 2, 1300, 100, 64, false, false, true, 1.0, -kInf},
  };
  for (const Persist& c : cases) {
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(std::string(c.name) + " seed=" + std::to_string(seed));
    at::manual_seed(seed);
    const Problem p = make_problem(c.B, c.H, c.Hkv, c.Nq, c.Nk, c.D, c.causal, c.structured);
    const DeviceInputs in = quantize(p);
    RunOptions opt;
    if (c.use_mask) opt.mask = random_mask(p, c.density);
    if (std::isfinite(c.lambda)) opt.lambda.assign(c.H, c.lambda);
    opt.out = DType::kFloat32;
    // warpgroup: one fresh CTA per 64 rows, no state carried between tiles.
    opt.kernel = Sm90Kernel::kWarpgroup;
    const RunResult ref = run_kernel(p, in, opt);
    opt.kernel = Sm90Kernel::kPingPong;
    for (int ctas : {1, 3, 0}) {
      SCOPED_TRACE("pingpong max_ctas=" + std::to_string(ctas));
      opt.max_ctas = ctas;
      const RunResult r = run_kernel(p, in, opt);
      EXPECT_TRUE(at::equal(r.o, ref.o))
          << "max |diff| " << (r.o - ref.o).abs().max().item<float>();
      EXPECT_TRUE(at::equal(r.pv, ref.pv));
    }
    const auto compiled = sparge::kernels::sm90_kernels_compiled();
    if (std::find(compiled.begin(), compiled.end(), Sm90Kernel::kGrid) != compiled.end()) {
      SCOPED_TRACE("grid");
      opt.kernel = Sm90Kernel::kGrid;
      opt.max_ctas = 0;
      const RunResult r = run_kernel(p, in, opt);
      EXPECT_TRUE(at::equal(r.o, ref.o));
      EXPECT_TRUE(at::equal(r.pv, ref.pv));
    }
  }
}

// Output layouts and dtypes: NHD equals HND exactly; fp16/bf16 are the fp32 result rounded.
TEST_P(AttentionSm90V, OutputLayoutsAndDtypes) {
  REQUIRE_SM90();
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  at::manual_seed(seed);
  const Problem p = make_problem(2, 3, 3, 200, 300, 64, false, false);
  const DeviceInputs in = quantize(p);
  const at::Tensor mask = random_mask(p, 0.7);
  const RunResult f32 = run_kernel(p, in, {mask, {}, DType::kFloat32, false});
  const RunResult f32n = run_kernel(p, in, {mask, {}, DType::kFloat32, true});
  EXPECT_TRUE(at::equal(f32.o, f32n.o));
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    for (bool nhd : {false, true}) {
      const RunResult h = run_kernel(p, in, {mask, {}, dt, nhd});
      const at::ScalarType st = dt == DType::kFloat16 ? at::kHalf : at::kBFloat16;
      EXPECT_TRUE(at::equal(h.o, f32.o.to(st).to(at::kFloat)))
          << "dtype " << static_cast<int>(dt) << " nhd " << nhd;
    }
  }
}

// ------------------------------------------------------------------------------------ timing

struct Lcg {
  uint64_t s;
  uint32_t next() {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(s >> 33);
  }
};

// Kernel-only timing at the TARGETS shapes, random block masks; prints a table. Not an
// assertion (timings vary by machine). SPARGE_SM90_BENCH_QUICK=1: only the first shape, dense
// (for profiler runs).
TEST(AttentionSm90Bench, DISABLED_Throughput) {
  REQUIRE_SM90();
  struct Shape {
    int B, H, N, D;
    bool causal;
    std::vector<double> densities;  // empty = dense mode
  };
  const Shape shapes[] = {{1, 32, 32768, 128, false, {1.0, 0.5, 0.25, 0.1}},
                          {1, 32, 32768, 64, false, {1.0, 0.5, 0.25, 0.1}},
                          {1, 32, 32768, 128, true, {}}};
  // SPARGE_SM90_BENCH_KERNEL=NAME: that Hopper kernel at every shape (else each head dim's).
  const char* kernel_env = std::getenv("SPARGE_SM90_BENCH_KERNEL");
  Sm90Kernel kernel = Sm90Kernel::kDefault;
  if (kernel_env && !sparge::kernels::parse_sm90_kernel(kernel_env, &kernel))
    GTEST_FAIL() << "SPARGE_SM90_BENCH_KERNEL=" << kernel_env << " names no Hopper kernel";
  std::printf("sm90 kernel %s\n", sparge::kernels::sm90_kernel_name(kernel));
  std::printf("%-22s %-8s %10s %12s %12s\n", "shape B,H,N,D", "density", "ms", "eff TOPS",
              "actual TOPS");
  const char* quick_env = std::getenv("SPARGE_SM90_BENCH_QUICK");
  const bool quick = quick_env && std::string(quick_env) == "1";
  for (const Shape& s : shapes) {
    if (quick && &s != &shapes[0]) break;
    const int nq = s.N / kBlock, nk = s.N / kBlock;
    const size_t elems = size_t(s.B) * s.H * s.N * s.D;
    std::vector<int8_t> host(elems);
    Lcg rng{12345};
    for (auto& x : host) x = static_cast<int8_t>(static_cast<int>(rng.next() % 255) - 127);
    DevBuf q8(elems), k8(elems), v8(elems);
    cuda_check(cudaMemcpy(q8.p, host.data(), elems, cudaMemcpyHostToDevice), "q8");
    for (auto& x : host) x = static_cast<int8_t>(static_cast<int>(rng.next() % 255) - 127);
    cuda_check(cudaMemcpy(k8.p, host.data(), elems, cudaMemcpyHostToDevice), "k8");
    // e4m3 bytes with bit 6 clear: exponent <= 7, |v| < 2, never NaN.
    for (auto& x : host) x = static_cast<int8_t>(rng.next() & 0xBF);
    cuda_check(cudaMemcpy(v8.p, host.data(), elems, cudaMemcpyHostToDevice), "v8");
    std::vector<float> qs(size_t(s.B) * s.H * nq * kBlock, 0.02f),  // per Q row
        ks(size_t(s.B) * s.H * nk, 0.02f), vs(size_t(s.B) * s.H * s.D, 0.01f);
    DevBuf dqs(qs.size() * 4), dks(ks.size() * 4), dvs(vs.size() * 4);
    cuda_check(cudaMemcpy(dqs.p, qs.data(), qs.size() * 4, cudaMemcpyHostToDevice), "qs");
    cuda_check(cudaMemcpy(dks.p, ks.data(), ks.size() * 4, cudaMemcpyHostToDevice), "ks");
    cuda_check(cudaMemcpy(dvs.p, vs.data(), vs.size() * 4, cudaMemcpyHostToDevice), "vs");
    DevBuf o(elems * 2);
    AttentionParams prm;
    prm.q8 = q8.as<int8_t>();
    prm.k8 = k8.as<int8_t>();
    prm.v = v8.p;
    prm.q_scale = dqs.as<float>();
    prm.k_scale = dks.as<float>();
    prm.v_scale = dvs.as<float>();
    prm.o = o.p;
    prm.o_dtype = DType::kFloat16;
    prm.o_stride_b = int64_t(s.H) * s.N * s.D, prm.o_stride_h = int64_t(s.N) * s.D;
    prm.o_stride_n = s.D;
    prm.batch = s.B, prm.heads = s.H, prm.kv_heads = s.H, prm.seq_q = s.N, prm.seq_k = s.N;
    prm.head_dim = s.D, prm.num_q_blocks = nq, prm.num_k_blocks = nk;
    prm.sm_scale_log2 = static_cast<float>(1.0 / std::sqrt(double(s.D)) * 1.4426950408889634);
    prm.causal = s.causal;
    prm.causal_offset = 0;
    prm.sm90_kernel = kernel;

    std::vector<double> dens = s.densities;
    if (dens.empty()) dens.push_back(-1.0);  // dense mode
    if (quick) dens.resize(1);
    for (double d : dens) {
      DevBuf lut, lut_len;
      double kept_frac = 1.0;
      if (d > 0) {
        std::vector<int32_t> l(size_t(s.B) * s.H * nq * nk, 0), len(size_t(s.B) * s.H * nq);
        const int keep = std::max(1, static_cast<int>(std::lround(d * nk)));
        std::vector<int32_t> perm(nk);
        std::mt19937 g(777);
        for (size_t r = 0; r < len.size(); ++r) {
          for (int j = 0; j < nk; ++j) perm[j] = j;
          std::shuffle(perm.begin(), perm.end(), g);
          std::sort(perm.begin(), perm.begin() + keep);
          std::copy(perm.begin(), perm.begin() + keep, l.begin() + r * nk);
          len[r] = keep;
        }
        kept_frac = double(keep) / nk;
        lut = DevBuf(l.size() * 4);
        lut_len = DevBuf(len.size() * 4);
        cuda_check(cudaMemcpy(lut.p, l.data(), l.size() * 4, cudaMemcpyHostToDevice), "lut");
        cuda_check(cudaMemcpy(lut_len.p, len.data(), len.size() * 4, cudaMemcpyHostToDevice),
                   "lut_len");
        prm.lut = lut.as<int32_t>();
        prm.lut_len = lut_len.as<int32_t>();
      } else {
        prm.lut = nullptr;
        prm.lut_len = nullptr;
      }
      const std::vector<float> ms =
          sparge::test::time_launches([&] { sparge::kernels::launch_attention_sm90(prm, nullptr); },
                                      /*warmup=*/3, /*reps=*/30);
      const double t = ms[ms.size() / 2] * 1e-3;
      double flops = 4.0 * s.B * s.H * double(s.N) * s.N * s.D;
      if (s.causal) flops /= 2;
      char shape[64];
      std::snprintf(shape, sizeof shape, "%d,%d,%d,%d%s", s.B, s.H, s.N, s.D,
                    s.causal ? " causal" : "");
      std::printf("%-22s %-8s %10.3f %12.1f %12.1f   (min %.3f max %.3f ms)\n", shape,
                  d > 0 ? std::to_string(d).substr(0, 4).c_str() : "dense", t * 1e3,
                  flops / t * 1e-12, flops * kept_frac / t * 1e-12, ms.front(), ms.back());
    }
  }
}

}  // namespace
