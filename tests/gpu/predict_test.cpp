// GPU stage-1 prediction (kernels/predict.cu through src/runtime) against the CPU reference's
// predict_block_mask on the same inputs: masks equal except rows where two candidates tie within
// fp32 rounding (the GPU sums dot products and exponentials in another order); LUT and lengths
// consistent with the mask; the mask -> LUT path for given masks. Skips without a CUDA device.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/api.h"
#include "reference/reference.hpp"
#include "runtime/runtime.hpp"
#include "support/gpu.hpp"

namespace {

namespace ref = sparge::ref;
namespace rt = sparge::runtime;
using sparge::test::to_gpu;

struct Case {
  std::string name;
  at::ScalarType dtype;
  int64_t batch, heads, kv_heads, seq_q, seq_k, head_dim;
  bool nhd;
  const char* geometry;
  bool causal, sink, topk_mode, structured;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

at::Tensor make_input(const Case& c, int64_t heads, int64_t n, at::Generator& gen,
                      const at::Tensor& latent_basis, float offset) {
  const auto f32 = at::TensorOptions(at::kFloat);
  at::Tensor x;
  if (!c.structured) {
    x = at::randn({c.batch, heads, n, c.head_dim}, gen, f32);
  } else {
    // Low-rank + locality (see quant_test.cpp): a smooth latent walk shared by Q and K through
    // one basis per kv head makes the compressed map peaked near the diagonal.
    const int64_t r = latent_basis.size(2);
    at::Tensor steps = at::randn({c.batch, 1, n, r}, gen, f32);
    at::Tensor latent = steps.cumsum(2) * (4.0 / std::sqrt(static_cast<double>(n)));
    at::Tensor basis = latent_basis.repeat_interleave(heads / latent_basis.size(1), 1);
    x = at::matmul(latent.expand({c.batch, heads, n, r}), basis) +
        0.3 * at::randn({c.batch, heads, n, c.head_dim}, gen, f32);
  }
  return (x + offset).to(c.dtype);
}

// Q [B, H, Nq, D], K and V [B, Hkv, Nk, D] of a case, drawn from `seed`; K carries an offset
// (what its smoothing removes).
std::tuple<at::Tensor, at::Tensor, at::Tensor> make_qkv(const Case& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor basis = at::randn({1, c.kv_heads, 8, c.head_dim}, gen, at::kFloat);
  at::Tensor q = make_input(c, c.heads, c.seq_q, gen, basis, 0.f);
  at::Tensor k = make_input(c, c.kv_heads, c.seq_k, gen, basis, 0.7f);
  at::Tensor v = make_input(c, c.kv_heads, c.seq_k, gen, basis, 0.f);
  return {q, k, v};
}

// LUT rows must list the mask's kept blocks ascending, zero filled, with matching lengths >= 1.
void expect_lut_matches_mask(const at::Tensor& lut, const at::Tensor& lut_len,
                             const at::Tensor& mask) {
  const int64_t nk = mask.size(3);
  const at::Tensor m = mask.reshape({-1, nk}), l = lut.reshape({-1, nk}), n = lut_len.reshape({-1});
  const auto ma = m.accessor<bool, 2>();
  const auto la = l.accessor<int32_t, 2>();
  const auto na = n.accessor<int32_t, 1>();
  int64_t bad = 0;
  for (int64_t r = 0; r < m.size(0); ++r) {
    int32_t pos = 0;
    bool ok = true;
    for (int32_t j = 0; j < nk; ++j) {
      if (ma[r][j]) ok = ok && la[r][pos++] == j;
    }
    for (int32_t t = pos; t < nk; ++t) ok = ok && la[r][t] == 0;
    ok = ok && na[r] == pos && pos >= 1;
    bad += !ok;
  }
  EXPECT_EQ(bad, 0) << "LUT rows inconsistent with the mask";
}

// The GPU prediction's mask (runtime::prepare; its LUT checked against it) and the reference's,
// for the same inputs and thresholds: [B, H, nq, nk] bool each.
std::pair<at::Tensor, at::Tensor> gpu_and_ref_masks(const Case& c, const at::Tensor& q,
                                                    const at::Tensor& k, const at::Tensor& v,
                                                    const ref::Geometry& g,
                                                    const ref::Thresholds& th) {
  ref::AttentionOptions ro;
  ro.causal = c.causal;
  ro.sink = c.sink;
  rt::Options opts;
  opts.causal = c.causal;
  opts.sink = c.sink;
  opts.return_mask = true;
  const rt::Prepared p = rt::prepare(to_gpu(q, c.nhd), to_gpu(k, c.nhd), to_gpu(v, c.nhd), g,
                                     rt::Thresholds::from_ref(th, at::kCUDA), opts);
  const at::Tensor mask = p.mask.cpu();
  expect_lut_matches_mask(p.lut.cpu(), p.lut_len.cpu(), mask);
  return {mask, ref::predict_block_mask(q, k, g, th, ro)};
}

class PredictTest : public ::testing::TestWithParam<Case> {};

TEST_P(PredictTest, MatchesReference) {
  REQUIRE_GPU();
  const Case c = GetParam();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto [q, k, v] = make_qkv(c, seed);
  const ref::Geometry g = ref::geometry_by_name(c.geometry);

  // Per-head thresholds drawn at random: τ in [0.3, 0.99], θ in [0, 0.8] (structured inputs
  // have similarities spread over that range; random ones sit near 1/n).
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> utau(0.3f, 0.99f), utheta(0.f, 0.8f), utopk(0.05f, 0.6f);
  ref::Thresholds th;
  for (int64_t h = 0; h < c.heads; ++h) {
    th.theta.push_back(c.structured ? utheta(rng) : utheta(rng) * 0.05f);
    if (c.topk_mode) {
      th.topk.push_back(utopk(rng));
    } else {
      th.tau.push_back(utau(rng));
    }
  }
  const auto [mask, ref_mask] = gpu_and_ref_masks(c, q, k, v, g, th);
  ASSERT_EQ(mask.sizes(), ref_mask.sizes());

  // Rows that differ must be fp32 near-ties. Judge them with the reference's own statistics in
  // fp64: same similarity flags up to |sim - θ| < 1e-5, and kept candidate mass equal within
  // 1e-5, or (TopCdf) the shorter selection's mass within 1e-5 of τ (the crossing itself tied).
  const ref::BlockStats rq = ref::q_block_stats(q, g.block_q);
  const ref::BlockStats rk = ref::k_block_stats(k, g.block_k);
  const int64_t B = c.batch, H = c.heads, nq = mask.size(2), nk = mask.size(3);
  const int64_t group = c.heads / c.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const at::Tensor valid = ref::causal_block_mask(c.seq_q, c.seq_k, g, c.causal);
  const at::Tensor diff_rows = (mask != ref_mask).any(3);
  const int64_t n_diff = diff_rows.sum().item<int64_t>();
  const int64_t rows = B * H * nq;
  std::printf("[ %s ] rows %lld, differing %lld, kept %.3f\n", c.name.c_str(),
              static_cast<long long>(rows), static_cast<long long>(n_diff),
              mask.to(at::kFloat).mean().item<double>());
  EXPECT_LE(n_diff, std::max<int64_t>(2, rows / 1000)) << "more than 0.1% of rows differ";
  for (int64_t b = 0; b < B && n_diff > 0; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hk = h / group;
      const double theta = th.theta[h];
      at::Tensor ks = rk.sim[b][hk].to(at::kDouble);
      at::Tensor shat =
          at::matmul(rq.pooled[b][h].to(at::kDouble), rk.pooled[b][hk].to(at::kDouble).t()) * scale;
      at::Tensor cand = valid & (ks > theta).view({1, nk});
      at::Tensor prob =
          at::softmax(shat.masked_fill(cand.logical_not(), -INFINITY), 1).nan_to_num(0.0);
      for (int64_t i = 0; i < nq; ++i) {
        if (!diff_rows[b][h][i].item<bool>()) continue;
        const double near_sim = std::min((ks - theta).abs().min().item<double>(),
                                         std::abs(rq.sim[b][h][i].item<double>() - theta));
        const double m_gpu = (prob[i] * mask[b][h][i].to(at::kDouble)).sum().item<double>();
        const double m_ref = (prob[i] * ref_mask[b][h][i].to(at::kDouble)).sum().item<double>();
        const bool tie = std::abs(m_gpu - m_ref) < 1e-5 ||
                         (!c.topk_mode && std::abs(std::min(m_gpu, m_ref) - th.tau[h]) < 1e-5) ||
                         near_sim < 1e-5;
        EXPECT_TRUE(tie) << "b " << b << " h " << h << " row " << i << ": kept mass gpu " << m_gpu
                         << " ref " << m_ref;
      }
    }
  }
}

// The per-head sparsity cap (kernels/predict.cu cap_select / cap_apply) against the reference's
// rule, with each head's cap at half the sparsity its uncapped mask reaches, so it binds. The
// cap only adds blocks; a head's skipped count is exactly floor(cap x valid) on both sides
// (unless the rows ran out of candidates, then both agree anyway). Which rows take the added
// blocks follows the cumsum before each candidate, compared across rows, so a cell may differ
// only where it ties the selection's boundary in fp32. Such ties are common, not rare: once a
// row's fp32 cumsum reaches ~1 it stops moving, and every later candidate of every such row
// carries the same value up to the last bit, which the GPU's softmax sum (a tree, not the
// reference's ascending order) may round the other way. So no row count is asserted; every
// differing cell's event value (fp64, the reference's statistics) must lie within 1e-5 of the
// largest event value the reference took for that head.
TEST_P(PredictTest, SparsityCapMatchesReference) {
  REQUIRE_GPU();
  const Case c = GetParam();
  if (c.topk_mode || !c.structured) GTEST_SKIP() << "TopCdf on structured inputs only";
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const auto [q, k, v] = make_qkv(c, seed);
  const ref::Geometry g = ref::geometry_by_name(c.geometry);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::uniform_real_distribution<float> utau(0.3f, 0.9f), utheta(0.f, 0.3f);
  ref::Thresholds th;
  for (int64_t h = 0; h < c.heads; ++h) {
    th.theta.push_back(utheta(rng));
    th.tau.push_back(utau(rng));
  }
  ref::AttentionOptions ro;
  ro.causal = c.causal;
  ro.sink = c.sink;
  const at::Tensor free = ref::predict_block_mask(q, k, g, th, ro);
  const at::Tensor valid = ref::causal_block_mask(c.seq_q, c.seq_k, g, c.causal);
  const double n_valid = valid.sum().item<double>();
  for (int64_t h = 0; h < c.heads; ++h) {
    const double skipped = n_valid - free.select(1, h).select(0, 0).sum().item<double>();
    th.sparsity_cap.push_back(static_cast<float>(0.5 * skipped / n_valid));
  }
  const auto [mask, ref_mask] = gpu_and_ref_masks(c, q, k, v, g, th);
  EXPECT_TRUE(at::equal(ref_mask & free, free)) << "the reference's cap removed a block";
  const at::Tensor skipped_gpu = n_valid - mask.sum({2, 3}).to(at::kDouble);      // [B, H]
  const at::Tensor skipped_ref = n_valid - ref_mask.sum({2, 3}).to(at::kDouble);  // [B, H]
  EXPECT_TRUE(at::equal(skipped_gpu, skipped_ref))
      << "skipped blocks per (b, h): gpu " << skipped_gpu << " ref " << skipped_ref;
  const int64_t rows = mask.size(0) * mask.size(1) * mask.size(2);
  const int64_t n_diff = (mask != ref_mask).any(3).sum().item<int64_t>();
  std::printf("[ %s ] cap: rows %lld, differing %lld, kept %.3f (uncapped %.3f)\n", c.name.c_str(),
              static_cast<long long>(rows), static_cast<long long>(n_diff),
              mask.to(at::kFloat).mean().item<double>(), free.to(at::kFloat).mean().item<double>());

  const ref::BlockStats rq = ref::q_block_stats(q, g.block_q);
  const ref::BlockStats rk = ref::k_block_stats(k, g.block_k);
  const int64_t group = c.heads / c.kv_heads, nk = mask.size(3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  const at::Tensor added_ref = ref_mask & free.logical_not();
  double worst = 0.0;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const at::Tensor differ = mask[b][h] != ref_mask[b][h];  // [nq, nk]
      if (!differ.any().item<bool>()) continue;
      const int64_t hk = h / group;
      const at::Tensor cand = valid & (rk.sim[b][hk] > th.theta[h]).view({1, nk});
      const at::Tensor shat =
          at::matmul(rq.pooled[b][h].to(at::kDouble), rk.pooled[b][hk].to(at::kDouble).t()) * scale;
      const at::Tensor prob =
          at::softmax(shat.masked_fill(cand.logical_not(), -INFINITY), 1).nan_to_num(0.0);
      // Event value of each candidate: the mass ranked before it in its row (descending p, ties
      // to the lower block, as TopCdf sorts).
      const auto [sorted, order] = at::sort(prob, /*stable=*/true, /*dim=*/1, /*descending=*/true);
      const at::Tensor event =
          at::zeros_like(prob).scatter_(1, order, at::cumsum(sorted, 1) - sorted);
      ASSERT_TRUE(added_ref[b][h].any().item<bool>()) << "b " << b << " h " << h;
      const double boundary = event.masked_select(added_ref[b][h]).max().item<double>();
      const double off = (event.masked_select(differ) - boundary).abs().max().item<double>();
      EXPECT_LT(off, 1e-5) << "b " << b << " h " << h << ": a differing cell's event value is "
                           << off << " from the boundary " << boundary;
      worst = std::max(worst, off);
    }
  }
  std::printf("[ %s ] cap: differing cells at most %.2e from the boundary\n", c.name.c_str(),
              worst);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, PredictTest,
    ::testing::Values(Case{"f16_hnd_d128", at::kHalf, 1, 4, 4, 1024, 1024, 128, false, "sm90",
                           false, false, false, true},
                      Case{"f16_hnd_d128_random", at::kHalf, 1, 2, 2, 700, 900, 128, false, "sm90",
                           false, false, false, false},
                      Case{"bf16_nhd_d64_causal_gqa", at::kBFloat16, 2, 4, 2, 1000, 1000, 64, true,
                           "sm80", true, false, false, true},
                      Case{"f16_nhd_d64_causal_lq_lt_lk_sink", at::kHalf, 1, 4, 1, 333, 1500, 64,
                           true, "sm90", true, true, false, true},
                      Case{"bf16_hnd_d128_topk_causal", at::kBFloat16, 2, 2, 2, 900, 900, 128,
                           false, "sm90", true, false, true, true},
                      Case{"f16_hnd_d64_topk_sm80", at::kHalf, 1, 2, 1, 640, 2000, 64, false,
                           "sm80", false, true, true, true},
                      Case{"f16_hnd_d128_long", at::kHalf, 1, 2, 2, 8192, 8192, 128, false, "sm90",
                           false, false, false, true},
                      Case{"bf16_hnd_d64_tiny", at::kBFloat16, 1, 1, 1, 5, 70, 64, false, "sm80",
                           true, false, false, false}),
    sparge::test::param_name<Case>);

// Given masks: LUT = ascending kept blocks of (mask AND causal validity); an empty row keeps its
// last causally valid block.
TEST(PredictMaskToLut, RandomMasks) {
  REQUIRE_GPU();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const ref::Geometry g = ref::hopper_geometry();
  for (const bool causal : {false, true}) {
    const int64_t B = 2, H = 3, Nq = 700, Nk = 1000, D = 64;
    const at::Tensor q = at::randn({B, H, Nq, D}, gen, at::kFloat).to(at::kHalf).to(at::kCUDA);
    const at::Tensor k = at::randn({B, H, Nk, D}, gen, at::kFloat).to(at::kHalf).to(at::kCUDA);
    const int64_t nq = (Nq + 127) / 128, nk = (Nk + 127) / 128;
    // ~30% density, plus some all-empty rows.
    at::Tensor m = at::rand({B, H, nq, nk}, gen, at::kFloat) < 0.3;
    m.select(2, 1).zero_();
    rt::Options opts;
    opts.causal = causal;
    opts.return_mask = true;
    const rt::Prepared p = rt::prepare_with_mask(q, k, k, m.to(at::kCUDA), g, opts);
    const at::Tensor valid = ref::causal_block_mask(Nq, Nk, g, causal);
    at::Tensor want = m & valid.view({1, 1, nq, nk});
    const at::Tensor empty = want.any(3).logical_not();
    for (int64_t i = 0; i < nq; ++i) {
      const int64_t last = valid[i].nonzero().max().item<int64_t>();
      want.select(2, i).select(2, last).logical_or_(empty.select(2, i));
    }
    EXPECT_TRUE(at::equal(p.mask.cpu(), want)) << "causal " << causal;
    expect_lut_matches_mask(p.lut.cpu(), p.lut_len.cpu(), want);
  }
}

}  // namespace
