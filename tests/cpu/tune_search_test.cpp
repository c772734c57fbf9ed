// The threshold search on synthetic oracles whose optimum is known in closed form.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "common/error.hpp"
#include "tune/search.hpp"

namespace sparge::tune {
namespace {

// error and sparsities of one candidate on "sample 0"; sample k scales the error by (1 + 0.1 k),
// so the worst sample is always the last one (the search must use the worst, not the mean).
struct Model {
  std::function<double(const Candidate&)> error;
  std::function<double(const Candidate&)> s1;
  std::function<double(const Candidate&)> s12;
};

class SyntheticOracle final : public HeadOracle {
 public:
  SyntheticOracle(Model m, int samples) : m_(std::move(m)), samples_(samples) {}
  std::vector<Evaluation> evaluate(std::span<const Candidate> cands) override {
    std::vector<Evaluation> out;
    for (const auto& c : cands) {
      Evaluation e;
      for (int s = 0; s < samples_; ++s) {
        double err = m_.error(c) * (1.0 + 0.1 * s);
        e.error_per_sample.push_back(err);
        e.error_worst = std::max(e.error_worst, err);
        e.sparsity_stage1_per_sample.push_back(m_.s1(c));
        e.sparsity_stage12_per_sample.push_back(m_.s12(c));
      }
      e.sparsity_stage1_mean = m_.s1(c);
      e.sparsity_stage12_mean = m_.s12(c);
      seen.push_back({c, e});
      out.push_back(e);
    }
    return out;
  }
  int num_samples() const override { return samples_; }
  // The oracle's own record of what it answered: the written point must be one of these.
  std::vector<std::pair<Candidate, Evaluation>> seen;

 private:
  Model m_;
  int samples_;
};

// These closed-form tests pin the pre-issue-16 rule (worst calibration error <= budget); the
// held-out rule that is now the default has its own tests (tune_holdout_test.cpp).
SearchOptions edge() {
  SearchOptions o;
  o.holdout = "edge";
  return o;
}

constexpr double kA = 0.5;  // stage-1 error slope: error = kA (1 - τ) on sample 0
// Stage-1 sparsity (1 - τ) B(θ), B peaks at θ = 0.25 (on the default grid).
double B(float theta) { return 1.0 - (theta - 0.25) * (theta - 0.25); }

Model monotone_model() {
  Model m;
  m.error = [](const Candidate& c) {
    double e1 = kA * (1.0 - c.tau) + 0.001;  // 0.001: the quantisation floor of a dense mask
    return std::isinf(c.lambda) ? e1 : e1 + 0.02 * std::exp(c.lambda / 4.0);
  };
  m.s1 = [](const Candidate& c) { return c.theta >= 1.0f ? 0.0 : (1.0 - c.tau) * B(c.theta); };
  m.s12 = [m](const Candidate& c) {
    double s1 = m.s1(c);
    return std::isinf(c.lambda) ? s1 : s1 + (1.0 - s1) * 0.5 * std::exp(c.lambda / 8.0);
  };
  return m;
}

const Evaluation* find_seen(const SyntheticOracle& o, const Candidate& c) {
  for (const auto& [cand, e] : o.seen) {
    if (std::bit_cast<uint32_t>(cand.tau) == std::bit_cast<uint32_t>(c.tau) &&
        std::bit_cast<uint32_t>(cand.theta) == std::bit_cast<uint32_t>(c.theta) &&
        std::bit_cast<uint32_t>(cand.lambda) == std::bit_cast<uint32_t>(c.lambda)) {
      return &e;
    }
  }
  return nullptr;
}

TEST(TuneSearch, FindsKnownOptimumOfMonotoneOracle) {
  SyntheticOracle oracle(monotone_model(), 2);
  SearchOptions opt = edge();  // l1 0.05, l2 0.06
  HeadResult r = search_head(oracle, opt);
  // Worst sample (k = 1) error 1.1 (kA (1 - τ) + 0.001) = l1 at the optimum.
  const double tau_star = 1.0 - (opt.l1 / 1.1 - 0.001) / kA;
  EXPECT_TRUE(r.sparse);
  EXPECT_TRUE(r.meets_budget);
  EXPECT_FLOAT_EQ(r.chosen.theta, 0.25f);
  // Bisection keeps the smallest passing τ it tested: within one tolerance above τ*.
  EXPECT_GE(r.chosen.tau, tau_star - 1e-6);
  EXPECT_LE(r.chosen.tau, tau_star + opt.tau_tol);
  EXPECT_LE(r.error_stage1, opt.l1);
  EXPECT_NEAR(r.sparsity_stage1, (1.0 - tau_star) * B(0.25f), opt.tau_tol * B(0.25f) + 1e-9);
  // λ*: 1.1 (e1 + 0.02 exp(λ/4)) = l2 with e1 the stage-1 error on sample 0 at the chosen τ.
  const double e1 = r.error_stage1 / 1.1;
  const double lambda_star = 4.0 * std::log((opt.l2 / 1.1 - e1) / 0.02);
  EXPECT_LE(r.chosen.lambda, lambda_star + 1e-5);
  EXPECT_GE(r.chosen.lambda, lambda_star - opt.lambda_tol);
  EXPECT_LE(r.error_stage12, opt.l2);
  EXPECT_GT(r.sparsity_stage12, r.sparsity_stage1);
}

TEST(TuneSearch, WrittenPointWasEvaluatedAndPasses) {
  SyntheticOracle oracle(monotone_model(), 3);
  HeadResult r = search_head(oracle, edge());
  Candidate s1 = r.chosen;
  s1.lambda = kNoSkip;
  const Evaluation* e1 = find_seen(oracle, s1);
  const Evaluation* e12 = find_seen(oracle, r.chosen);
  ASSERT_NE(e1, nullptr) << "stage-1 point never evaluated";
  ASSERT_NE(e12, nullptr) << "final point never evaluated";
  EXPECT_EQ(e1->error_worst, r.error_stage1);
  EXPECT_EQ(e12->error_worst, r.error_stage12);
  EXPECT_EQ(e12->sparsity_stage12_mean, r.sparsity_stage12);
}

TEST(TuneSearch, NonMonotoneOracleNeverWritesFailingPoint) {
  // Errors with deterministic pseudo-random jumps keyed on the candidate: bisection's
  // monotonicity assumption is broken everywhere, yet what is written must pass.
  for (uint32_t seed : {1u, 2u, 3u, 4u, 5u, 6u, 7u, 8u}) {
    Model m = monotone_model();
    Model base = m;
    m.error = [base, seed](const Candidate& c) {
      uint32_t h = std::bit_cast<uint32_t>(c.tau) * 2654435761u ^
                   std::bit_cast<uint32_t>(c.theta) * 40503u ^
                   std::bit_cast<uint32_t>(c.lambda) * 97u ^ seed * 2246822519u;
      std::mt19937 g(h);
      return base.error(c) + std::uniform_real_distribution<double>(-0.03, 0.03)(g);
    };
    SyntheticOracle oracle(m, 2);
    SearchOptions opt = edge();
    HeadResult r = search_head(oracle, opt);
    ASSERT_TRUE(r.meets_budget) << "seed " << seed;
    Candidate s1 = r.chosen;
    s1.lambda = kNoSkip;
    const Evaluation* e1 = find_seen(oracle, s1);
    const Evaluation* e12 = find_seen(oracle, r.chosen);
    ASSERT_NE(e1, nullptr) << "seed " << seed;
    ASSERT_NE(e12, nullptr) << "seed " << seed;
    EXPECT_LE(e1->error_worst, opt.l1) << "seed " << seed;
    EXPECT_LE(e12->error_worst, opt.l2) << "seed " << seed;
    // Nothing that passed among the stage-1 points seen is sparser than what was kept (when
    // the head stayed sparse): the best evaluated point wins, not the last midpoint.
    if (r.sparse) {
      for (const auto& [c, e] : oracle.seen) {
        if (std::isinf(c.lambda) && e.error_worst <= opt.l1) {
          EXPECT_LE(e.sparsity_stage1_mean, r.sparsity_stage1) << "seed " << seed;
        }
      }
    }
  }
}

// monotone_model whose stage-1 sparsity never reaches min_sparsity (the head ends dense), while
// λ still skips P·V: the stage-2 search runs on the dense mask.
Model dense_lambda_model() {
  Model m = monotone_model();
  Model base = m;
  m.s1 = [base](const Candidate& c) { return base.s1(c) * 0.01; };
  m.s12 = [m](const Candidate& c) {
    double s1 = m.s1(c);
    return std::isinf(c.lambda) ? s1 : s1 + (1.0 - s1) * 0.5 * std::exp(c.lambda / 8.0);
  };
  return m;
}

TEST(TuneSearch, DenseFallbackKeepsLambda) {
  // Sparsity never reaches min_sparsity: the head is dense, yet λ may still skip P·V.
  Model m = dense_lambda_model();
  SyntheticOracle oracle(m, 2);
  SearchOptions opt = edge();
  HeadResult r = search_head(oracle, opt);
  EXPECT_FALSE(r.sparse);
  EXPECT_TRUE(r.meets_budget);
  EXPECT_EQ(r.chosen.tau, kDenseCandidate.tau);
  EXPECT_EQ(r.chosen.theta, kDenseCandidate.theta);
  EXPECT_FALSE(std::isinf(r.chosen.lambda)) << "λ should be tuned on the dense mask";
  EXPECT_LE(r.error_stage12, opt.l2);
}

TEST(TuneSearch, InfeasibleHeadIsReported) {
  Model m = monotone_model();
  m.error = [](const Candidate&) { return 0.2; };  // quantisation alone misses every budget
  SyntheticOracle oracle(m, 2);
  HeadResult r = search_head(oracle, edge());
  EXPECT_FALSE(r.meets_budget);
  EXPECT_FALSE(r.sparse);
  EXPECT_TRUE(std::isinf(r.chosen.lambda));
  EXPECT_GT(r.error_stage1, 0.05);
}

TEST(TuneSearch, DeterministicAcrossRuns) {
  SearchOptions opt = edge();
  opt.l1 = 0.07;
  opt.l2 = 0.08;
  SyntheticOracle a(monotone_model(), 2), b(monotone_model(), 2);
  HeadResult ra = search_head(a, opt), rb = search_head(b, opt);
  EXPECT_EQ(std::bit_cast<uint32_t>(ra.chosen.tau), std::bit_cast<uint32_t>(rb.chosen.tau));
  EXPECT_EQ(std::bit_cast<uint32_t>(ra.chosen.theta), std::bit_cast<uint32_t>(rb.chosen.theta));
  EXPECT_EQ(std::bit_cast<uint32_t>(ra.chosen.lambda), std::bit_cast<uint32_t>(rb.chosen.lambda));
  ASSERT_EQ(a.seen.size(), b.seen.size());  // same sequence of oracle calls
  EXPECT_EQ(ra.evaluations, rb.evaluations);
}

TEST(TuneSearch, CombinedOracleUsesWorstHead) {
  // Per-layer granularity: head 1 is twice as sensitive, so the shared τ must satisfy it.
  Model m0 = monotone_model(), m1 = monotone_model();
  Model base = m1;
  m1.error = [base](const Candidate& c) { return 2.0 * base.error(c); };
  SyntheticOracle h0(m0, 2), h1(m1, 2);
  auto combined = make_combined_oracle({&h0, &h1});
  SearchOptions opt = edge();
  opt.tune_lambda = false;
  opt.min_sparsity = 0.01;  // the optimum's sparsity (about 0.043) is below the default 0.05
  HeadResult r = search_head(*combined, opt);
  EXPECT_TRUE(r.sparse);
  const double tau_star = 1.0 - (opt.l1 / 2.2 - 0.001) / kA;  // worst: head 1, sample 1
  EXPECT_GE(r.chosen.tau, tau_star - 1e-6);
  EXPECT_LE(r.chosen.tau, tau_star + opt.tau_tol);
  EXPECT_TRUE(std::isinf(r.chosen.lambda));
}

TEST(TuneSearch, StageTwoShareBoundsWhatLambdaAdds) {
  // A dense head (stage-1 error 0.001, 1.1x on sample 1) under the spread rule (K = 2: predicted
  // = 1.3 x the sample-0 value). Before the stage-2 share, λ could spend l2 minus the stage-1
  // error: 1.3 (0.001 + 0.02 e^(λ/4)) <= 0.06 holds up to λ = 0, the end of the range. With the
  // share, the predicted increment 1.3 x 0.02 e^(λ/4) must stay <= l2 - l1 = 0.01.
  Model m = dense_lambda_model();
  SyntheticOracle oracle(m, 2);
  SearchOptions opt;   // spread, no floor (TuneHoldout.SpreadFloorWhenSamplesAgree)
  opt.spread_k = 2.0;  // the arithmetic below (1.3 x) is K = 2's
  opt.spread_floor = 0.0;
  ASSERT_EQ(opt.holdout, "spread");
  HeadResult r = search_head(oracle, opt);
  ASSERT_FALSE(r.sparse);
  const double lambda_star = 4.0 * std::log((opt.l2 - opt.l1) / (1.3 * 0.02));
  EXPECT_LE(r.chosen.lambda, lambda_star + 1e-5);
  EXPECT_GE(r.chosen.lambda, lambda_star - opt.lambda_tol);
  // The increment at the chosen λ, as the rule predicts it, is within the share.
  const double inc0 = 0.02 * std::exp(r.chosen.lambda / 4.0);
  EXPECT_LE(1.1 * inc0 + 2.0 * 0.1 * inc0, opt.l2 - opt.l1 + 1e-12);
  EXPECT_LT(r.expected_stage12, 0.5 * opt.l2) << "far inside l2: the share, not l2, bound it";

  // The edge rule keeps the old behaviour: λ up to where the worst error reaches l2.
  SyntheticOracle o2(m, 2);
  HeadResult e = search_head(o2, edge());
  EXPECT_GT(e.chosen.lambda, r.chosen.lambda + 1.0);
}

TEST(TuneSearch, MarginTightensTheTargetNotTheBudget) {
  // With margin m the written point passes (1 - m) l1 and (1 - m) l2 on the calibration samples,
  // and the stage-1 optimum moves to the τ* of the tightened target.
  SyntheticOracle plain(monotone_model(), 2), tight(monotone_model(), 2);
  SearchOptions opt = edge();
  opt.margin = 0.2;
  HeadResult r0 = search_head(plain, edge());
  HeadResult r = search_head(tight, opt);
  EXPECT_DOUBLE_EQ(opt.target_l1(), 0.8 * opt.l1);
  EXPECT_LE(r.error_stage1, 0.8 * opt.l1);
  EXPECT_LE(r.error_stage12, 0.8 * opt.l2);
  const double tau_star = 1.0 - (0.8 * opt.l1 / 1.1 - 0.001) / kA;
  EXPECT_GE(r.chosen.tau, tau_star - 1e-6);
  EXPECT_LE(r.chosen.tau, tau_star + opt.tau_tol);
  EXPECT_LT(r.sparsity_stage1, r0.sparsity_stage1) << "a tighter target cannot be sparser";
  EXPECT_TRUE(r.meets_budget);

  // A head whose dense (quantisation-only) error lies between the target and l1 falls back to
  // dense but still meets the budget: the margin is headroom, not a stricter budget.
  Model floor = monotone_model();
  floor.error = [](const Candidate& c) { return 0.045 / 1.1 + 0.1 * (1.0 - c.tau); };
  SyntheticOracle o(floor, 2);
  HeadResult d = search_head(o, opt);
  EXPECT_FALSE(d.sparse);
  EXPECT_TRUE(d.meets_budget);
}

// Issue 16, the rocket miss: on the calibration samples θ forces most blocks on, so the error
// is flat in τ above 0.3 and the stage-1 sparsity hardly moves on [0, 0.6] (0.0812 to 0.0800);
// above 0.6 τ decides and the sparsity falls steeply. A held-out sample with fewer forced blocks
// feels τ directly: its error is 0.1 (1 - τ).
Model plateau_model() {
  Model m;
  m.error = [](const Candidate& c) {
    return 0.02 + 0.5 * std::max(0.0, 0.3 - static_cast<double>(c.tau));
  };
  m.s1 = [](const Candidate& c) {
    const double t = c.tau;
    return t <= 0.6 ? 0.08 + 0.002 * (0.6 - t) : std::max(0.0, 0.08 - 0.5 * (t - 0.6));
  };
  m.s12 = m.s1;
  return m;
}
double plateau_heldout_error(const Candidate& c) { return 0.1 * (1.0 - c.tau); }

TEST(TuneSearch, TauPlateauGuardKeepsTheLargestTauOfAPlateau) {
  SearchOptions opt;  // spread, floor 0.2, K = 2: predicted = 1.54 x the sample-0 error
  opt.spread_k = 2.0;
  opt.theta_grid = {0.375f};
  opt.tune_lambda = false;
  ASSERT_GT(opt.tau_plateau, 0.0) << "the guard is on by default";
  // The τ where the predicted error reaches l1: 1.54 (0.02 + 0.5 (0.3 - τ)) = 0.05.
  const double tau_pass = 0.3 - (opt.l1 / 1.54 - 0.02) / 0.5;

  SearchOptions off = opt;
  off.tau_plateau = 0.0;
  SyntheticOracle o_off(plateau_model(), 2);
  const HeadResult old_rule = search_head(o_off, off);
  ASSERT_TRUE(old_rule.sparse);
  // Without the guard: the smallest τ that passes, at the low end of the plateau.
  EXPECT_GE(old_rule.chosen.tau, tau_pass - 1e-6);
  EXPECT_LE(old_rule.chosen.tau, tau_pass + off.tau_tol);
  EXPECT_GT(plateau_heldout_error(old_rule.chosen), opt.l1) << "the held-out miss";

  SyntheticOracle o_on(plateau_model(), 2);
  const HeadResult r = search_head(o_on, opt);
  ASSERT_TRUE(r.sparse);
  // With it: the upper end of the plateau (0.002 sparsity per unit τ, below R), where the
  // sparsity given up reaches R x (τ - τ*): on the steep part, 0.08 - 0.5 (τ - 0.6) = s* - R (τ -
  // τ*).
  const double R = opt.tau_plateau, s0 = old_rule.sparsity_stage1, t0 = old_rule.chosen.tau;
  const double tau_edge = (0.38 - s0 - R * t0) / (0.5 - R);
  EXPECT_GE(r.chosen.tau, 0.6f);
  EXPECT_LE(r.chosen.tau, tau_edge + 1e-6);
  EXPECT_GE(r.chosen.tau, tau_edge - opt.tau_tol);
  EXPECT_FLOAT_EQ(r.chosen.theta, 0.375f);
  EXPECT_LE(plateau_heldout_error(r.chosen), opt.l1) << "the held-out sample stays inside";
  // Its price on the calibration samples: at most R x (τ - τ*) of stage-1 sparsity.
  EXPECT_LE(r.sparsity_stage1, s0);
  EXPECT_GE(r.sparsity_stage1, s0 - R * (r.chosen.tau - t0) - 1e-12);
  EXPECT_LT(s0 - r.sparsity_stage1, 0.01);
  // The point written was evaluated and passes.
  const Evaluation* e = find_seen(o_on, r.chosen);
  ASSERT_NE(e, nullptr);
  EXPECT_LE(predicted_error(*e, opt), opt.target_l1());
  EXPECT_DOUBLE_EQ(r.expected_stage1, predicted_error(*e, opt));

  // The edge rule ignores the guard (the sparsest point that passes the calibration samples).
  SearchOptions e_on = edge(), e_off = edge();
  e_on.theta_grid = e_off.theta_grid = opt.theta_grid;
  e_off.tau_plateau = 0.0;
  SyntheticOracle a(plateau_model(), 2), b(plateau_model(), 2);
  EXPECT_EQ(search_head(a, e_on).chosen.tau, search_head(b, e_off).chosen.tau);
}

TEST(TuneSearch, TauPlateauGuardLooksAcrossThetaLines) {
  // As on the real head: on the plateau line (θ = 0.375) the samples' errors part above τ = 0.5,
  // so the spread rule fails every τ in (0.5, 1) there, and the guard cannot climb that line far.
  // The line θ = 0.25 reaches nearly the same sparsity (0.7 (1 - τ), 0.0734 at its smallest
  // passing τ 0.895 against the plateau's 0.0806) at a τ near 1: that point is kept, refined up
  // its line to where it gives up R (τ - τ*). Held out, the plateau line's error is 0.12 (1 -
  // τ) and the other line's is its calibration error (θ = 0.25 forced little there either).
  Model m = plateau_model();
  const Model plateau = m;
  m.error = [plateau](const Candidate& c) {
    if (c.theta == 0.25f) return 0.3 * (1.0 - c.tau) + 0.001;
    return c.tau > 0.5f && c.tau < 1.0f ? 0.04 : plateau.error(c);
  };
  m.s1 = [plateau](const Candidate& c) {
    return c.theta == 0.25f ? 0.7 * (1.0 - c.tau) : plateau.s1(c);
  };
  m.s12 = m.s1;
  auto heldout = [](const Candidate& c) {
    return c.theta == 0.25f ? 0.3 * (1.0 - c.tau) + 0.001 : 0.12 * (1.0 - c.tau);
  };
  SearchOptions opt;
  opt.spread_k = 2.0;  // the model's lines are set for K = 2's prediction
  opt.theta_grid = {0.25f, 0.375f};
  opt.tune_lambda = false;
  SearchOptions off = opt;
  off.tau_plateau = 0.0;
  SyntheticOracle o_off(m, 2), o_on(m, 2);
  const HeadResult old_rule = search_head(o_off, off);
  const HeadResult r = search_head(o_on, opt);
  ASSERT_TRUE(old_rule.sparse && r.sparse);
  EXPECT_FLOAT_EQ(old_rule.chosen.theta, 0.375f);
  EXPECT_LT(old_rule.chosen.tau, 0.3f);
  EXPECT_GT(heldout(old_rule.chosen), opt.l1);
  EXPECT_FLOAT_EQ(r.chosen.theta, 0.25f) << "tau " << r.chosen.tau;
  // 0.7 (1 - τ) = s* - R (τ - τ*)
  const double R = opt.tau_plateau, s0 = old_rule.sparsity_stage1, t0 = old_rule.chosen.tau;
  const double tau_edge = (0.7 - s0 - R * t0) / (0.7 - R);
  EXPECT_LE(r.chosen.tau, tau_edge + 1e-6);
  EXPECT_GE(r.chosen.tau, tau_edge - opt.tau_tol);
  EXPECT_GE(r.sparsity_stage1, s0 - R * (r.chosen.tau - t0) - 1e-12);
  EXPECT_LE(heldout(r.chosen), opt.l1);
  // The best the plateau line alone could do (τ = 0.5) still misses held out.
  EXPECT_GT(heldout({0.5f, 0.375f, kNoSkip, false}), opt.l1);
}

TEST(TuneSearch, TauPlateauGuardNeverMakesASparseHeadDense) {
  // The plateau's sparsity is 0.055 to 0.0562: giving up R (τ - τ*), about 0.0065 at the end of
  // the plateau, would end below min_sparsity (0.05); the guard stops at min_sparsity instead,
  // and the head stays sparse.
  Model m = plateau_model();
  Model base = m;
  m.s1 = [base](const Candidate& c) { return base.s1(c) - 0.025; };
  m.s12 = m.s1;
  SearchOptions opt;
  opt.theta_grid = {0.375f};
  opt.tune_lambda = false;
  SyntheticOracle o(m, 2);
  const HeadResult r = search_head(o, opt);
  ASSERT_TRUE(r.sparse);
  EXPECT_GE(r.sparsity_stage1, opt.min_sparsity);
  EXPECT_GT(r.chosen.tau, 0.6f) << "still moved up the plateau";
  EXPECT_LT(r.chosen.tau, 0.6f + 0.011f);
}

TEST(TuneSearch, OptionsValidated) {
  SearchOptions opt = edge();
  opt.l2 = 0.01;  // below l1
  try {
    opt.validate();
    FAIL() << "l2 < l1 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kUsage);
  }
  opt = edge();
  opt.theta_grid = {0.5f, 1.5f};
  EXPECT_THROW(opt.validate(), Error);
  opt = edge();
  opt.margin = 0.6;  // above 0.5: the search target would be under half the budget
  EXPECT_THROW(opt.validate(), Error);
  opt = edge();
  opt.tau_plateau = -0.01;
  EXPECT_THROW(opt.validate(), Error);
  opt.tau_plateau = 1.5;
  EXPECT_THROW(opt.validate(), Error);
}

}  // namespace
}  // namespace sparge::tune
