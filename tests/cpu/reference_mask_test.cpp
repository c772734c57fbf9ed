// CPU reference, stage 1: TopCdf / top-k selection edges on hand-made compressed maps, forced
// rows and columns, causal validity (top-left and bottom-right), sink, and the invariants of masks
// predicted from random inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "common/error.hpp"
#include "reference/reference.hpp"

namespace ref = sparge::ref;

namespace {

uint64_t fresh_seed() { return std::random_device{}(); }

// Unit blocks so that block indices are token indices and the map is fully hand-controlled.
ref::Geometry unit_geometry() { return ref::Geometry{1, 1, 1, ref::PvNumerics::kFp8, "unit"}; }

// Stats of one head with D = 1: pooled values and similarities given directly.
ref::BlockStats stats(std::vector<float> pooled, std::vector<float> sim) {
  ref::BlockStats s;
  const int64_t n = pooled.size();
  s.pooled = at::tensor(pooled).view({1, 1, n, 1});
  s.sim = at::tensor(sim).view({1, 1, n});
  return s;
}

// Row r of a [1, 1, nq, nk] mask as a vector of kept indices.
std::vector<int64_t> kept(const at::Tensor& mask, int64_t r) {
  std::vector<int64_t> out;
  at::Tensor row = mask[0][0][r];
  for (int64_t j = 0; j < row.size(0); ++j)
    if (row[j].item<bool>()) out.push_back(j);
  return out;
}

using Idx = std::vector<int64_t>;

// One query block against K blocks whose logits are log(w_j): with scale 1 and pooled q = 1,
// P̂ = w / sum(w).
at::Tensor predict_row(std::vector<float> w, ref::Thresholds t, bool causal = false,
                       bool sink = false, int64_t nq_tokens = 1) {
  std::vector<float> logk, simk(w.size(), 1.f);
  for (float x : w) logk.push_back(std::log(x));
  ref::AttentionOptions o;
  o.scale = 1.0;
  o.causal = causal;
  o.sink = sink;
  std::vector<float> q(nq_tokens, 1.f), simq(nq_tokens, 1.f);
  return ref::predict_block_mask(stats(q, simq), stats(logk, simk), nq_tokens, w.size(),
                                 unit_geometry(), t, o);
}

}  // namespace

TEST(ReferenceMask, TopCdfKeepsShortestPrefixReachingTau) {
  // P̂ = [1, 2, 4, 1] / 8 -> order 2, 1, 0, 3 (0 before 3: tie to the lower index),
  // cumsum 0.5, 0.75, 0.875, 1.
  const std::vector<float> w = {1, 2, 4, 1};
  auto with_tau = [&](float tau) {
    return kept(predict_row(w, ref::Thresholds::uniform(1, tau, 0)), 0);
  };
  EXPECT_EQ(with_tau(0.f), (Idx{2}));  // tau = 0: one block, the largest
  EXPECT_EQ(with_tau(0.3f), (Idx{2}));
  EXPECT_EQ(with_tau(0.6f), (Idx{1, 2}));
  EXPECT_EQ(with_tau(0.8f), (Idx{0, 1, 2}));  // tie 0 / 3 broken to the lower index
  EXPECT_EQ(with_tau(0.9f), (Idx{0, 1, 2, 3}));
  EXPECT_EQ(with_tau(1.f), (Idx{0, 1, 2, 3}));  // reaches 1 or never does: all candidates
}

TEST(ReferenceMask, TopCdfUniformRowTakesLowestIndicesFirst) {
  const std::vector<float> w(8, 1.f);  // P̂ = 1/8 each
  auto with_tau = [&](float tau) {
    return kept(predict_row(w, ref::Thresholds::uniform(1, tau, 0)), 0);
  };
  EXPECT_EQ(with_tau(0.1f), (Idx{0}));
  EXPECT_EQ(with_tau(0.3f), (Idx{0, 1, 2}));  // 0.375 >= 0.3 after three
  EXPECT_EQ(with_tau(0.6f), (Idx{0, 1, 2, 3, 4}));
  EXPECT_EQ(with_tau(1.f).size(), 8u);
}

TEST(ReferenceMask, TopKKeepsCeilOfFractionOfValidBlocks) {
  const std::vector<float> w = {1, 2, 4, 1};
  auto with_k = [&](float k) {
    ref::Thresholds t = ref::Thresholds::uniform(1, 0.f, 0.f);
    t.topk = {k};
    return kept(predict_row(w, t), 0);
  };
  EXPECT_EQ(with_k(0.5f), (Idx{1, 2}));     // ceil(2.0) = 2
  EXPECT_EQ(with_k(0.6f), (Idx{0, 1, 2}));  // ceil(2.4) = 3
  EXPECT_EQ(with_k(0.01f), (Idx{2}));       // at least one
  EXPECT_EQ(with_k(0.f), (Idx{2}));         // at least one
  EXPECT_EQ(with_k(1.f), (Idx{0, 1, 2, 3}));
  EXPECT_EQ(with_k(0.3f), (Idx{1, 2}));  // 0.3f * 4 = 1.2 -> 2

  // Causal: n_valid counts causally valid blocks of the row. Unit blocks, Nq = Nk = 4: row 1 has
  // 2 valid blocks, ceil(0.5 * 2) = 1 -> the larger of w0 = 1, w1 = 2.
  ref::Thresholds t = ref::Thresholds::uniform(1, 0.f, 0.f);
  t.topk = {0.5f};
  at::Tensor m = predict_row(w, t, /*causal=*/true, false, /*nq_tokens=*/4);
  EXPECT_EQ(kept(m, 0), (Idx{0}));
  EXPECT_EQ(kept(m, 1), (Idx{1}));
  EXPECT_EQ(kept(m, 2), (Idx{1, 2}));  // ceil(0.5 * 3) = 2 of {0, 1, 2}
  EXPECT_EQ(kept(m, 3), (Idx{1, 2}));  // ceil(0.5 * 4) = 2
}

TEST(ReferenceMask, ForcedColumnsAndRowsCausalAndSink) {
  // 3 query blocks x 4 key blocks (unit geometry, Nq = 3, Nk = 4, causal bottom-right: query t
  // sees keys <= t + 1). K block 3 is not similar -> forced column (candidates exclude it); Q
  // block 0 is not similar -> forced row (within causal validity).
  ref::AttentionOptions o;
  o.scale = 1.0;
  o.causal = true;
  ref::BlockStats qs = stats({1, 1, 1}, {0.1f, 0.9f, 0.9f});
  ref::BlockStats ks = stats({std::log(1.f), std::log(8.f), std::log(1.f), std::log(100.f)},
                             {0.9f, 0.9f, 0.9f, 0.1f});
  ref::Thresholds t = ref::Thresholds::uniform(1, 0.f, 0.5f);  // tau 0: one selected block
  at::Tensor m = ref::predict_block_mask(qs, ks, 3, 4, unit_geometry(), t, o);
  EXPECT_EQ(kept(m, 0), (Idx{0, 1}));  // forced row, cut to its causal range (keys 0, 1)
  EXPECT_EQ(kept(m, 1), (Idx{1}));     // valid {0,1,2}: best candidate 1; col 3 not valid
  EXPECT_EQ(kept(m, 2), (Idx{1, 3}));  // best candidate 1 + forced column 3
  o.sink = true;
  m = ref::predict_block_mask(qs, ks, 3, 4, unit_geometry(), t, o);
  EXPECT_EQ(kept(m, 1), (Idx{0, 1}));
  EXPECT_EQ(kept(m, 2), (Idx{0, 1, 3}));
  // Non-causal: the forced column reaches every row.
  o.causal = false;
  o.sink = false;
  m = ref::predict_block_mask(qs, ks, 3, 4, unit_geometry(), t, o);
  EXPECT_EQ(kept(m, 0), (Idx{0, 1, 2, 3}));
  EXPECT_EQ(kept(m, 1), (Idx{1, 3}));
}

TEST(ReferenceMask, CausalBlockMaskMatchesTokenEnumeration) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 40; ++trial) {
    const int64_t nk_tokens = 1 + rng() % 400;
    const int64_t nq_tokens = 1 + rng() % nk_tokens;
    ref::Geometry g{static_cast<int>(1 + rng() % 130), static_cast<int>(1 + rng() % 130), 1,
                    ref::PvNumerics::kFp8, "random"};
    at::Tensor m = ref::causal_block_mask(nq_tokens, nk_tokens, g, true);
    const int64_t nq = (nq_tokens + g.block_q - 1) / g.block_q;
    const int64_t nk = (nk_tokens + g.block_k - 1) / g.block_k;
    ASSERT_EQ(m.sizes(), (std::vector<int64_t>{nq, nk}));
    for (int64_t i = 0; i < nq; ++i) {
      for (int64_t j = 0; j < nk; ++j) {
        bool any = false;
        for (int64_t tq = i * g.block_q; tq < std::min((i + 1) * g.block_q, nq_tokens); ++tq)
          for (int64_t tk = j * g.block_k; tk < std::min((j + 1) * g.block_k, nk_tokens); ++tk)
            any = any || tk <= tq + (nk_tokens - nq_tokens);
        ASSERT_EQ(m[i][j].item<bool>(), any)
            << "Nq " << nq_tokens << " Nk " << nk_tokens << " blocks " << g.block_q << "x"
            << g.block_k << " (" << i << ", " << j << ")";
      }
    }
  }
  EXPECT_TRUE(ref::causal_block_mask(300, 100, ref::hopper_geometry(), false).all().item<bool>());
  try {
    ref::causal_block_mask(300, 100, ref::hopper_geometry(), true);
    FAIL() << "Nq > Nk with causal accepted";
  } catch (const sparge::Error& e) {
    EXPECT_EQ(e.code(), sparge::ExitCode::kUsage);
  }
}

TEST(ReferenceMask, PredictedMaskInvariantsOnRandomInputs) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  at::manual_seed(seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t B = 1 + rng() % 2, Hkv = 1 + rng() % 2, H = Hkv * (1 + rng() % 2);
    const int64_t nk_tokens = 1 + rng() % 700, nq_tokens = 1 + rng() % nk_tokens;
    const bool causal = rng() % 2, sink = rng() % 2;
    ref::Geometry g = (rng() % 2) ? ref::hopper_geometry() : ref::portable_geometry();
    g.block_q = 32 << (rng() % 3);
    g.block_k = 32 << (rng() % 3);
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " Nq " << nq_tokens << " Nk "
                                      << nk_tokens << " causal " << causal << " sink " << sink);
    // Low-rank structure plus noise so that both similar and non-similar blocks occur.
    at::Tensor q = at::randn({B, H, nq_tokens, 32}) + at::randn({B, H, 1, 32}) * 2;
    at::Tensor k = at::randn({B, Hkv, nk_tokens, 32});
    ref::Thresholds t;
    for (int64_t h = 0; h < H; ++h) {
      t.tau.push_back(std::uniform_real_distribution<float>(0, 1)(rng));
      t.theta.push_back(std::uniform_real_distribution<float>(-0.1f, 0.6f)(rng));
    }
    if (rng() % 3 == 0) t.topk.assign(H, std::uniform_real_distribution<float>(0, 1)(rng));
    ref::AttentionOptions o;
    o.causal = causal;
    o.sink = sink;
    at::Tensor m = ref::predict_block_mask(q, k, g, t, o);
    const ref::BlockStats qs = ref::q_block_stats(q, g.block_q);
    const ref::BlockStats ks = ref::k_block_stats(k, g.block_k);
    const at::Tensor valid = ref::causal_block_mask(nq_tokens, nk_tokens, g, causal);
    const int64_t nq = valid.size(0), nk = valid.size(1);
    ASSERT_EQ(m.sizes(), (std::vector<int64_t>{B, H, nq, nk}));
    // Only causally valid blocks, at least one per row.
    EXPECT_FALSE((m & valid.logical_not()).any().item<bool>());
    EXPECT_TRUE(m.any(-1).all().item<bool>());
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t hk = h / (H / Hkv);
        at::Tensor mh = m[b][h];
        at::Tensor knon = ks.sim[b][hk] <= t.theta[h];  // [nk]
        at::Tensor qnon = qs.sim[b][h] <= t.theta[h];   // [nq]
        // Forced columns and rows (within validity).
        EXPECT_TRUE(at::equal(mh & (knon.view({1, nk}) & valid), knon.view({1, nk}) & valid));
        EXPECT_TRUE(at::equal(mh & (qnon.view({nq, 1}) & valid), qnon.view({nq, 1}) & valid));
        if (sink) EXPECT_TRUE(mh.select(1, 0).all().item<bool>());
      }
    }
  }
}

// Two query rows against K logits log(w): row 0 (pooled q = 1) has P̂ = w / 8, cumsum in its
// order 2, 1, 0, 3 of 0.5, 0.75, 0.875, 1; row 1 (q = 2) has P̂ ∝ w², cumsum 0.727, 0.909, 0.955,
// 1 in the same order. At τ = 0.3 each keeps {2}: 2 of 8 blocks, sparsity 0.75.
TEST(ReferenceMask, SparsityCapAddsCandidatesInAscendingCumsumAcrossRows) {
  const std::vector<float> w = {1, 2, 4, 1};
  std::vector<float> logk, simk(w.size(), 1.f);
  for (float x : w) logk.push_back(std::log(x));
  ref::AttentionOptions o;
  o.scale = 1.0;
  auto with_cap = [&](std::vector<float> cap) {
    ref::Thresholds t = ref::Thresholds::uniform(1, 0.3f, 0.f);
    t.sparsity_cap = std::move(cap);
    return ref::predict_block_mask(stats({1.f, 2.f}, {1.f, 1.f}), stats(logk, simk), 2, 4,
                                   unit_geometry(), t, o);
  };
  const at::Tensor free = with_cap({});
  EXPECT_EQ(kept(free, 0), (Idx{2}));
  EXPECT_EQ(kept(free, 1), (Idx{2}));
  EXPECT_TRUE(at::equal(with_cap({0.75f}), free));  // the cap is not reached: nothing changes
  EXPECT_TRUE(at::equal(with_cap({1.f}), free));
  // 0.5: at most 4 skipped, 2 more kept: row 0's block 1 (after 0.5), row 1's block 1 (0.727).
  at::Tensor m = with_cap({0.5f});
  EXPECT_EQ(kept(m, 0), (Idx{1, 2}));
  EXPECT_EQ(kept(m, 1), (Idx{1, 2}));
  // 0.375: 3 more, the third is row 0's block 0 (after 0.75 < row 1's 0.909). The same mask as
  // TopCdf at a τ between 0.75 and 0.875 would give row 0, and between 0.727 and 0.909 row 1.
  m = with_cap({0.375f});
  EXPECT_EQ(kept(m, 0), (Idx{0, 1, 2}));
  EXPECT_EQ(kept(m, 1), (Idx{1, 2}));
  m = with_cap({0.f});  // nothing may be skipped
  EXPECT_EQ(kept(m, 0), (Idx{0, 1, 2, 3}));
  EXPECT_EQ(kept(m, 1), (Idx{0, 1, 2, 3}));
}

TEST(ReferenceMask, SparsityCapHoldsAndOnlyAddsBlocksOnRandomInputs) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  at::manual_seed(seed);
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 12; ++trial) {
    const int64_t H = 1 + rng() % 3, nk_tokens = 64 + rng() % 900;
    const int64_t nq_tokens = 1 + rng() % nk_tokens;
    const bool causal = rng() % 2, sink = rng() % 2;
    ref::Geometry g = ref::hopper_geometry();
    g.block_q = g.block_k = 32;
    SCOPED_TRACE(::testing::Message() << "trial " << trial << " Nq " << nq_tokens << " Nk "
                                      << nk_tokens << " causal " << causal << " sink " << sink);
    at::Tensor q = at::randn({1, H, nq_tokens, 32}) + at::randn({1, H, 1, 32}) * 2;
    at::Tensor k = at::randn({1, H, nk_tokens, 32}) * 2;
    ref::Thresholds t;
    for (int64_t h = 0; h < H; ++h) {
      t.tau.push_back(std::uniform_real_distribution<float>(0.1f, 0.9f)(rng));
      t.theta.push_back(std::uniform_real_distribution<float>(-0.1f, 0.3f)(rng));
    }
    ref::AttentionOptions o;
    o.causal = causal;
    o.sink = sink;
    const at::Tensor free = ref::predict_block_mask(q, k, g, t, o);
    const at::Tensor valid = ref::causal_block_mask(nq_tokens, nk_tokens, g, causal);
    const double n_valid = valid.sum().item<double>();
    for (float cap : {0.f, 0.1f, 0.3f, 0.6f, 1.f}) {
      SCOPED_TRACE(::testing::Message() << "cap " << cap);
      t.sparsity_cap.assign(H, cap);
      const at::Tensor m = ref::predict_block_mask(q, k, g, t, o);
      // Only adds: everything the free mask keeps is still kept, and only valid blocks.
      EXPECT_TRUE(at::equal(m & free, free));
      EXPECT_FALSE((m & valid.logical_not()).any().item<bool>());
      const ref::BlockStats qs = ref::q_block_stats(q, g.block_q);
      for (int64_t h = 0; h < H; ++h) {
        const double kept_free = free[0][h].sum().item<double>();
        const double kept_now = m[0][h].sum().item<double>();
        const double skip_free = n_valid - kept_free, skip_now = n_valid - kept_now;
        const double allowed = std::floor(static_cast<double>(cap) * n_valid);
        if (skip_free <= allowed) {
          EXPECT_EQ(kept_now, kept_free) << "head " << h << ": the cap was not reached";
        } else {
          // Blocks are added one at a time, so the cap is met exactly, unless the rows ran out
          // of candidates first: then every row whose Q block is similar (the only ones that
          // take more) keeps all of its valid blocks.
          const at::Tensor open = qs.sim[0][h] > t.theta[h];  // [nq]
          const bool full = at::equal(m[0][h].index({open}), valid.index({open}));
          EXPECT_TRUE(skip_now == allowed || (skip_now > allowed && full))
              << "head " << h << " skipped " << skip_now << " allowed " << allowed;
        }
      }
    }
  }
}

TEST(ReferenceMask, ThresholdSizeMismatchIsAUsageError) {
  at::Tensor q = at::randn({1, 2, 64, 16}), k = at::randn({1, 2, 64, 16});
  try {
    ref::predict_block_mask(q, k, ref::hopper_geometry(), ref::Thresholds::uniform(3, 0.5f, 0.f),
                            {});
    FAIL() << "accepted 3 thresholds for 2 heads";
  } catch (const sparge::Error& e) {
    EXPECT_EQ(e.code(), sparge::ExitCode::kUsage);
  }
  ref::Thresholds t = ref::Thresholds::uniform(2, 0.5f, 0.f);
  t.sparsity_cap = {0.5f};
  try {
    ref::predict_block_mask(q, k, ref::hopper_geometry(), t, {});
    FAIL() << "accepted 1 sparsity cap for 2 heads";
  } catch (const sparge::Error& e) {
    EXPECT_EQ(e.code(), sparge::ExitCode::kUsage);
  }
}
