// GPU block statistics and quantisation (kernels/quant.cu through src/runtime) against the CPU
// reference (src/reference): INT8 Q/K values and scales, pooled means, self-similarities, FP8 V
// and its per-channel scales, the half V copy, on random and structured inputs; fp16/bf16,
// HND/NHD, D 64/128, partial blocks, Lq != Lk, GQA, batch > 1. Skips without a CUDA device.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include "kernels/api.h"
#include "reference/reference.hpp"
#include "runtime/runtime.hpp"
#include "support/gpu.hpp"
#include "support/v8_order.hpp"

namespace {

namespace ref = sparge::ref;
namespace rt = sparge::runtime;
using sparge::test::to_gpu;

struct Case {
  std::string name;
  at::ScalarType dtype;
  int64_t batch, heads, kv_heads, seq_q, seq_k, head_dim;
  bool nhd;
  const char* geometry;  // "sm90" (128x128, FP8 V) or "sm80" (128x64, half V)
  bool structured;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// Low-rank + locality: tokens follow a smooth random walk in an R-dim latent space, so nearby
// tokens (and their blocks) are similar and the compressed map is far from uniform.
at::Tensor make_input(const Case& c, int64_t heads, int64_t n, at::Generator& gen, float offset) {
  const auto f32 = at::TensorOptions(at::kFloat);
  at::Tensor x;
  if (!c.structured) {
    x = at::randn({c.batch, heads, n, c.head_dim}, gen, f32);
  } else {
    const int64_t r = 8;
    at::Tensor steps = at::randn({c.batch, heads, n, r}, gen, f32) * 0.3;
    at::Tensor latent = steps.cumsum(2) / std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)));
    at::Tensor basis = at::randn({1, heads, r, c.head_dim}, gen, f32);
    x = at::matmul(latent, basis) + 0.2 * at::randn({c.batch, heads, n, c.head_dim}, gen, f32);
  }
  x = x + offset;  // a common offset per channel is what K smoothing removes
  return x.to(c.dtype);
}

// Padded rows of a [B, H, nblk*block, D] tensor beyond `valid` tokens must be zero.
void expect_zero_tail(const at::Tensor& padded, int64_t valid, const char* what) {
  const int64_t total = padded.size(2);
  if (total == valid) return;
  EXPECT_EQ(padded.narrow(2, valid, total - valid).abs().max().item<double>(), 0.0) << what;
}

class QuantTest : public ::testing::TestWithParam<Case> {};

TEST_P(QuantTest, MatchesReference) {
  REQUIRE_GPU();
  const Case c = GetParam();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor q = make_input(c, c.heads, c.seq_q, gen, 0.f);
  const at::Tensor k = make_input(c, c.kv_heads, c.seq_k, gen, 1.5f);
  const at::Tensor v = make_input(c, c.kv_heads, c.seq_k, gen, 0.f);
  const ref::Geometry g = ref::geometry_by_name(c.geometry);

  const rt::Prepared p =
      rt::quantize(to_gpu(q, c.nhd), to_gpu(k, c.nhd), to_gpu(v, c.nhd), g, rt::Options{});
  const ref::BlockStats rq = ref::q_block_stats(q, g.block_q);
  const ref::BlockStats rk = ref::k_block_stats(k, g.block_k);

  // Q: x, amax and 127/amax are exactly defined, so values and scales are bit-identical.
  const at::Tensor q8 = p.q8.cpu();
  expect_zero_tail(q8, c.seq_q, "q8 padding");
  EXPECT_TRUE(at::equal(q8.narrow(2, 0, c.seq_q), rq.values)) << "q8 values";
  EXPECT_TRUE(at::equal(p.q_scale.cpu(), rq.scale)) << "q scales";
  // Pooled means and similarities are fp32 sums of up to 128 terms in another order: a relative
  // error of a few ulp of the largest term (2^-24 * 128 terms, with margin).
  EXPECT_TRUE(at::allclose(p.q_pooled.cpu(), rq.pooled, 1e-5, 1e-5)) << "q pooled";
  EXPECT_TRUE(at::allclose(p.q_sim.cpu(), rq.sim, 1e-5, 1e-5)) << "q sim";

  // K: the mean of the sampled tokens is an fp32 sum in another order, so K' may differ in its last
  // bit; an INT8 value can then round the other way at an exact tie (rare), never by more than 1.
  const at::Tensor k8 = p.k8.cpu();
  expect_zero_tail(k8, c.seq_k, "k8 padding");
  const at::Tensor kdiff = (k8.narrow(2, 0, c.seq_k).to(at::kInt) - rk.values.to(at::kInt)).abs();
  EXPECT_LE(kdiff.max().item<int>(), 1) << "k8 values";
  const double kfrac = kdiff.ne(0).sum().item<double>() / static_cast<double>(kdiff.numel());
  EXPECT_LE(kfrac, 1e-3) << "k8 values differing by 1";
  EXPECT_TRUE(at::allclose(p.k_scale.cpu(), rk.scale, 1e-5, 0.0)) << "k scales";
  EXPECT_TRUE(at::allclose(p.k_pooled.cpu(), rk.pooled, 1e-5, 1e-5)) << "k pooled";
  EXPECT_TRUE(at::allclose(p.k_sim.cpu(), rk.sim, 1e-5, 1e-5)) << "k sim";
  // The mean of tokens 0, 16, 32, ... (sparge::kernels::kKMeanStride), not of all Nk tokens.
  const at::Tensor sampled = k.to(at::kFloat).slice(2, 0, c.seq_k, sparge::kernels::kKMeanStride);
  EXPECT_TRUE(at::allclose(p.k_mean.cpu(), sampled.mean(2), 1e-5, 1e-5)) << "k mean";

  if (g.pv == ref::PvNumerics::kFp8) {
    // V: amax, amax/448, v/scale and the RNE saturating e4m3 cast are exact: bit-identical.
    const ref::VFp8 rv = ref::quantize_v_fp8(v);
    EXPECT_TRUE(at::equal(p.v_scale.cpu(), rv.scale)) << "v scales";
    // [B, Hkv, D, Nkp] in the v8 token order -> natural order, [B, Hkv, Nkp, D]
    const at::Tensor v8 = p.v.cpu()
                              .to(at::kFloat)
                              .index_select(3, sparge::test::v8_scatter(p.v.size(3)))
                              .transpose(2, 3)
                              .contiguous();
    expect_zero_tail(v8, c.seq_k, "v8 padding");
    EXPECT_TRUE(at::equal(v8.narrow(2, 0, c.seq_k), rv.values)) << "v8 values";
  } else {
    const at::Tensor vh = p.v.cpu();
    EXPECT_EQ(vh.scalar_type(), c.dtype);
    expect_zero_tail(vh.to(at::kFloat), c.seq_k, "vh padding");
    EXPECT_TRUE(at::equal(vh.narrow(2, 0, c.seq_k), v)) << "vh copy";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, QuantTest,
    ::testing::Values(
        Case{"f16_hnd_d128_partial", at::kHalf, 1, 4, 4, 300, 300, 128, false, "sm90", false},
        Case{"f16_hnd_d128_structured", at::kHalf, 1, 2, 2, 512, 512, 128, false, "sm90", true},
        Case{"bf16_nhd_d64_gqa_sm80", at::kBFloat16, 2, 4, 2, 200, 333, 64, true, "sm80", false},
        Case{"f16_nhd_d128_mqa_b2", at::kHalf, 2, 2, 1, 128, 257, 128, true, "sm90", true},
        Case{"bf16_hnd_d64_tiny", at::kBFloat16, 1, 2, 2, 1, 1, 64, false, "sm90", false},
        Case{"f16_hnd_d64_sm80_structured", at::kHalf, 1, 3, 3, 1000, 700, 64, false, "sm80", true},
        Case{"bf16_nhd_d128_long", at::kBFloat16, 1, 2, 1, 2100, 4500, 128, true, "sm90", false}),
    sparge::test::param_name<Case>);

}  // namespace
