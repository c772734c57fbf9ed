#include "tune/search.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <tuple>

#include "common/error.hpp"
#include "common/log.hpp"

namespace sparge::tune {

std::vector<float> SearchOptions::default_theta_grid() {
  std::vector<float> grid;
  for (int i = -8; i < 8; ++i) grid.push_back(static_cast<float>(i) / 8.0f);
  return grid;
}

void SearchOptions::validate() const {
  if (!(l1 > 0) || !std::isfinite(l1))
    fail(ExitCode::kUsage, "--l1 {}: must be a positive number", l1);
  if (!(l2 >= l1) || !std::isfinite(l2))
    fail(ExitCode::kUsage, "--l2 {}: must be >= --l1 ({})", l2, l1);
  if (theta_grid.empty()) fail(ExitCode::kUsage, "--theta-grid: empty");
  for (float t : theta_grid) {
    if (!(t >= -1.0f && t <= 1.0f))
      fail(ExitCode::kUsage, "--theta-grid: {} is outside [-1, 1]", t);
  }
  if (!(tau_tol > 0 && tau_tol < 1))
    fail(ExitCode::kUsage, "--tau-tol {}: must be in (0, 1)", tau_tol);
  if (!(lambda_min < lambda_max) || lambda_max > 0 || !std::isfinite(lambda_min)) {
    fail(ExitCode::kUsage, "--lambda-range {},{}: need finite min < max <= 0", lambda_min,
         lambda_max);
  }
  if (!(lambda_tol > 0)) fail(ExitCode::kUsage, "--lambda-tol {}: must be positive", lambda_tol);
  if (!(min_sparsity >= 0 && min_sparsity < 1))
    fail(ExitCode::kUsage, "--min-sparsity {}: must be in [0, 1)", min_sparsity);
  if (!(margin >= 0 && margin <= 0.5))
    fail(ExitCode::kUsage, "--margin {}: must be in [0, 0.5]", margin);
  if (mode != "cdf" && mode != "topk")
    fail(ExitCode::kUsage, "--mode '{}': expected cdf or topk", mode);
  if (holdout != "spread" && holdout != "edge")
    fail(ExitCode::kUsage, "--holdout '{}': expected spread or edge", holdout);
  if (!(spread_k >= 0 && spread_k <= 10))
    fail(ExitCode::kUsage, "--spread-k {}: must be in [0, 10]", spread_k);
  if (!(spread_floor >= 0 && spread_floor <= 1))
    fail(ExitCode::kUsage, "--spread-floor {}: must be in [0, 1]", spread_floor);
  if (!(sparsity_cap == 0 || (sparsity_cap >= 1 && sparsity_cap <= 10)))
    fail(ExitCode::kUsage, "--sparsity-cap {}: must be 0 (off) or in [1, 10]", sparsity_cap);
  if (!(tau_plateau >= 0 && tau_plateau <= 1))
    fail(ExitCode::kUsage, "--tau-plateau {}: must be in [0, 1]", tau_plateau);
}

namespace {

// The rule on per-sample values v (errors, or the error λ adds): the worst, plus for the spread
// rule spread_k x max(max - min, spread_floor x max) within each group of `group` consecutive
// samples (one head each).
double rule_over(const std::vector<double>& v, int group, const SearchOptions& o) {
  if (v.empty()) return 0;
  double out = *std::max_element(v.begin(), v.end());
  if (o.holdout == "edge" || v.size() < 2) return out;
  const size_t n = group > 0 ? static_cast<size_t>(group) : v.size();
  for (size_t g = 0; g + n <= v.size(); g += n) {  // per head: its own samples' spread
    const auto [lo, hi] = std::minmax_element(v.begin() + g, v.begin() + g + n);
    out = std::max(out, *hi + o.spread_k * std::max(*hi - *lo, o.spread_floor * *hi));
  }
  return out;
}

// R of the τ plateau guard as the search applies it: the edge rule keeps the sparsest passing
// point, so the guard is off there (and the record says 0, tuner.cpp).
double plateau_rate(const SearchOptions& o) { return o.holdout == "edge" ? 0.0 : o.tau_plateau; }

}  // namespace

double predicted_error(const Evaluation& e, const SearchOptions& o) {
  return std::max(e.error_worst, rule_over(e.error_per_sample, e.group_size, o));
}

double predicted_increment(const Evaluation& stage12, const Evaluation& stage1,
                           const SearchOptions& o) {
  const auto& a = stage12.error_per_sample;
  const auto& b = stage1.error_per_sample;
  SPARGE_ASSERT(a.size() == b.size(), "stage-2 point with {} samples, its stage-1 point {}",
                a.size(), b.size());
  std::vector<double> inc(a.size());
  for (size_t i = 0; i < a.size(); ++i) inc[i] = a[i] - b[i];
  return rule_over(inc, stage12.group_size, o);
}

bool stage2_passes(double predicted, double increment, const SearchOptions& o) {
  if (!(predicted <= o.target_l2())) return false;
  return o.holdout == "edge" || increment <= o.target_l2() - o.target_l1();
}

namespace {

// Exact-bits key so the memo never merges distinct floats (and -inf is a normal key).
using Key = std::tuple<uint32_t, uint32_t, uint32_t, bool>;
Key key_of(const Candidate& c) {
  return {std::bit_cast<uint32_t>(c.tau), std::bit_cast<uint32_t>(c.theta),
          std::bit_cast<uint32_t>(c.lambda), c.topk};
}

// Memoises the oracle so a candidate asked for twice (τ = 1 at several θ after the dense check,
// the stage-1 point re-used by stage 2) costs one evaluation.
class Memo {
 public:
  explicit Memo(HeadOracle& oracle) : oracle_(oracle) {}
  std::vector<Evaluation> evaluate(const std::vector<Candidate>& cands) {
    std::vector<Candidate> missing;
    for (const auto& c : cands) {
      if (!cache_.count(key_of(c)) &&
          std::find(missing.begin(), missing.end(), c) == missing.end()) {
        missing.push_back(c);
      }
    }
    if (!missing.empty()) {
      auto evals = oracle_.evaluate(missing);
      SPARGE_ASSERT(evals.size() == missing.size(), "oracle returned {} evaluations for {}",
                    evals.size(), missing.size());
      for (size_t i = 0; i < missing.size(); ++i) {
        cache_.emplace(key_of(missing[i]), evals[i]);
        order_.push_back(missing[i]);
      }
    }
    std::vector<Evaluation> out;
    out.reserve(cands.size());
    for (const auto& c : cands) out.push_back(cache_.at(key_of(c)));
    return out;
  }
  Evaluation evaluate(const Candidate& c) { return evaluate(std::vector<Candidate>{c}).front(); }
  long count() const { return static_cast<long>(cache_.size()); }
  // The stage-1 points evaluated so far (λ = -inf) in the mode `topk`, in evaluation order.
  std::vector<std::pair<Candidate, Evaluation>> stage1_points(bool topk) const {
    std::vector<std::pair<Candidate, Evaluation>> out;
    for (const auto& o : order_) {
      if (std::isinf(o.lambda) && o.topk == topk) out.emplace_back(o, cache_.at(key_of(o)));
    }
    return out;
  }
  // Every evaluated candidate in first-evaluation order (deterministic: see search_head).
  std::vector<TracePoint> trace(const SearchOptions& opt) const {
    std::vector<TracePoint> out;
    for (const auto& c : order_) {
      TracePoint t{c, cache_.at(key_of(c))};
      t.predicted = predicted_error(t.e, opt);
      if (std::isinf(c.lambda)) {
        t.pass = t.predicted <= opt.target_l1();
      } else {
        Candidate s1 = c;
        s1.lambda = kNoSkip;
        auto base = cache_.find(key_of(s1));  // stage 2 runs at an evaluated stage-1 point
        SPARGE_ASSERT(base != cache_.end(), "stage-2 point without its stage-1 point");
        t.increment = predicted_increment(t.e, base->second, opt);
        t.pass = stage2_passes(t.predicted, t.increment, opt);
      }
      out.push_back(std::move(t));
    }
    return out;
  }

 private:
  HeadOracle& oracle_;
  std::map<Key, Evaluation> cache_;
  std::vector<Candidate> order_;
};

struct Point {
  Candidate c;
  Evaluation e;
};

// Stage-1 order: higher sparsity, then lower error, then smaller θ, then larger τ.
bool better_stage1(const Point& a, const Point& b) {
  if (a.e.sparsity_stage1_mean != b.e.sparsity_stage1_mean)
    return a.e.sparsity_stage1_mean > b.e.sparsity_stage1_mean;
  if (a.e.error_worst != b.e.error_worst) return a.e.error_worst < b.e.error_worst;
  if (a.c.theta != b.c.theta) return a.c.theta < b.c.theta;
  return a.c.tau > b.c.tau;
}

// Stage-2 order: higher stage-1+2 sparsity, then lower error, then smaller λ.
bool better_stage2(const Point& a, const Point& b) {
  if (a.e.sparsity_stage12_mean != b.e.sparsity_stage12_mean)
    return a.e.sparsity_stage12_mean > b.e.sparsity_stage12_mean;
  if (a.e.error_worst != b.e.error_worst) return a.e.error_worst < b.e.error_worst;
  return a.c.lambda < b.c.lambda;
}

std::optional<Point> search_stage1(Memo& memo, const SearchOptions& opt) {
  struct Line {
    float theta;
    float lo = 0.0f, hi = 1.0f;
    bool alive = true;
    double reachable = 2.0;  // upper bound on the sparsity a passing τ of this line can have
  };
  std::vector<Line> lines;
  for (float t : opt.theta_grid) {
    bool dup = false;
    for (const auto& l : lines) dup |= l.theta == t;
    if (!dup) lines.push_back({t});
  }
  std::optional<Point> best;
  // Step 2b may keep a point up to tau_plateau x (1 - τ) less sparse than the best (τ): lines
  // that can still reach one go on.
  const double plateau = plateau_rate(opt);
  auto consider = [&](const Point& p) {
    if (predicted_error(p.e, opt) <= opt.target_l1() && (!best || better_stage1(p, *best)))
      best = p;
  };

  // τ = 1 on every line: a line that fails there has nothing to offer.
  {
    std::vector<Candidate> cands;
    for (const auto& l : lines) cands.push_back({1.0f, l.theta, kNoSkip, opt.topk()});
    auto evals = memo.evaluate(cands);
    for (size_t i = 0; i < lines.size(); ++i) {
      Point p{cands[i], evals[i]};
      if (predicted_error(p.e, opt) <= opt.target_l1()) {
        consider(p);
      } else {
        lines[i].alive = false;
      }
    }
  }
  for (;;) {
    std::vector<size_t> active;
    std::vector<Candidate> cands;
    for (size_t i = 0; i < lines.size(); ++i) {
      auto& l = lines[i];
      if (!l.alive) continue;
      if (l.hi - l.lo <= opt.tau_tol) {
        l.alive = false;
        continue;
      }
      // Monotone TopCdf: every τ > lo keeps a superset of lo's blocks, so this line cannot beat
      // the best point any more, nor come within the τ plateau guard's reach of it. (Strict: an
      // equal bound could still win a tie.)
      if (best && l.reachable < best->e.sparsity_stage1_mean - plateau * (1.0 - best->c.tau)) {
        l.alive = false;
        continue;
      }
      active.push_back(i);
      cands.push_back({(l.lo + l.hi) * 0.5f, l.theta, kNoSkip, opt.topk()});
    }
    if (active.empty()) break;
    auto evals = memo.evaluate(cands);
    for (size_t j = 0; j < active.size(); ++j) {
      auto& l = lines[active[j]];
      Point p{cands[j], evals[j]};
      if (predicted_error(p.e, opt) <= opt.target_l1()) {
        consider(p);
        l.hi = p.c.tau;
      } else {
        l.lo = p.c.tau;
        l.reachable = p.e.sparsity_stage1_mean;
      }
    }
  }
  return best;
}

// Search step 2b (SearchOptions::tau_plateau), from the sparsest passing point (τ*, s*). A point
// of τ > τ* is acceptable when it passes and its mean stage-1 sparsity is at least
// max(s* - tau_plateau x (τ - τ*), min_sparsity): lowering τ to τ* did not buy tau_plateau per
// unit of τ. First the acceptable evaluated point of largest τ over every θ line (ties:
// better_stage1), then a bisection on its θ line between that τ and the smallest unacceptable τ
// evaluated above it (TopCdf keeps more blocks as τ grows, so the sparsity falls with τ and the
// bisection finds where the plateau ends). A larger τ bounds the predicted mass a row may drop
// wherever θ does not force its blocks on, which is what changes between inputs. A
// non-monotone oracle can only shorten the move: every point kept was evaluated and passes.
Point guard_tau_plateau(Memo& memo, const SearchOptions& opt, const Point& best) {
  const double rate = plateau_rate(opt);
  if (!(rate > 0)) return best;
  if (best.e.sparsity_stage1_mean < opt.min_sparsity) return best;  // dense anyway
  auto acceptable = [&](const Candidate& c, const Evaluation& e) {
    const double least =
        std::max(best.e.sparsity_stage1_mean - rate * (c.tau - best.c.tau), opt.min_sparsity);
    return c.tau > best.c.tau && predicted_error(e, opt) <= opt.target_l1() &&
           e.sparsity_stage1_mean >= least;
  };
  Point keep = best;
  const auto points = memo.stage1_points(best.c.topk);
  for (const auto& [c, e] : points) {
    const Point p{c, e};
    if (acceptable(c, e) && (c.tau > keep.c.tau || (c.tau == keep.c.tau && better_stage1(p, keep))))
      keep = p;
  }
  if (keep.c.tau >= 1.0f) return keep;
  float hi = 1.0f;  // τ = 1 is evaluated on every θ line a point passed on
  for (const auto& [c, e] : points) {
    if (c.theta == keep.c.theta && c.tau > keep.c.tau && c.tau < hi && !acceptable(c, e))
      hi = c.tau;
  }
  while (hi - keep.c.tau > opt.tau_tol) {
    Candidate c = keep.c;
    c.tau = (keep.c.tau + hi) * 0.5f;
    Point p{c, memo.evaluate(c)};
    if (acceptable(p.c, p.e)) {
      keep = p;
    } else {
      hi = c.tau;
    }
  }
  return keep;
}

Point search_stage2(Memo& memo, const SearchOptions& opt, const Point& base) {
  Point best = base;  // λ = -inf: error <= l1 <= l2
  if (!opt.tune_lambda) return best;
  auto at = [&](float lambda) {
    Candidate c = base.c;
    c.lambda = lambda;
    return Point{c, memo.evaluate(c)};
  };
  auto consider = [&](const Point& p) {
    const bool pass =
        stage2_passes(predicted_error(p.e, opt), predicted_increment(p.e, base.e, opt), opt);
    if (pass && better_stage2(p, best)) best = p;
    return pass;
  };
  float lo = opt.lambda_min, hi = opt.lambda_max;  // λ closer to 0 skips more
  if (!consider(at(lo))) return best;
  if (consider(at(hi))) return best;
  while (hi - lo > opt.lambda_tol) {
    float mid = (lo + hi) * 0.5f;
    if (consider(at(mid))) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return best;
}

}  // namespace

HeadResult search_head(HeadOracle& oracle, const SearchOptions& opt) {
  Memo memo(oracle);
  HeadResult r;
  std::optional<Point> s1 = search_stage1(memo, opt);
  if (s1) s1 = guard_tau_plateau(memo, opt, *s1);
  Point base;
  if (s1 && s1->e.sparsity_stage1_mean >= opt.min_sparsity) {
    base = *s1;
    r.sparse = true;
  } else {
    base = Point{kDenseCandidate, memo.evaluate(kDenseCandidate)};
    r.sparse = false;
    if (base.e.error_worst > opt.l1) {
      r.meets_budget = false;
      r.chosen = kDenseCandidate;
      r.sparsity_stage1 = base.e.sparsity_stage1_mean;
      r.sparsity_stage12 = base.e.sparsity_stage12_mean;
      r.error_stage1 = r.error_stage12 = base.e.error_worst;
      r.expected_stage1 = r.expected_stage12 = predicted_error(base.e, opt);
      r.evaluations = memo.count();
      r.trace = memo.trace(opt);
      return r;
    }
  }
  Point fin = search_stage2(memo, opt, base);
  r.chosen = fin.c;
  r.sparsity_stage1 = base.e.sparsity_stage1_mean;
  r.error_stage1 = base.e.error_worst;
  r.sparsity_stage12 = fin.e.sparsity_stage12_mean;
  r.error_stage12 = fin.e.error_worst;
  r.expected_stage1 = predicted_error(base.e, opt);
  r.expected_stage12 = predicted_error(fin.e, opt);
  r.evaluations = memo.count();
  r.trace = memo.trace(opt);
  return r;
}

namespace {

class CombinedOracle final : public HeadOracle {
 public:
  explicit CombinedOracle(std::vector<HeadOracle*> heads) : heads_(std::move(heads)) {
    SPARGE_ASSERT(!heads_.empty(), "combined oracle over no heads");
  }
  std::vector<Evaluation> evaluate(std::span<const Candidate> cands) override {
    std::vector<Evaluation> out(cands.size());
    for (auto* h : heads_) {
      auto part = h->evaluate(cands);
      SPARGE_ASSERT(part.size() == cands.size(), "oracle returned {} evaluations for {}",
                    part.size(), cands.size());
      for (size_t i = 0; i < cands.size(); ++i) {
        auto& o = out[i];
        const auto& p = part[i];
        o.error_worst = std::max(o.error_worst, p.error_worst);
        o.error_per_sample.insert(o.error_per_sample.end(), p.error_per_sample.begin(),
                                  p.error_per_sample.end());
        o.sparsity_stage1_per_sample.insert(o.sparsity_stage1_per_sample.end(),
                                            p.sparsity_stage1_per_sample.begin(),
                                            p.sparsity_stage1_per_sample.end());
        o.sparsity_stage12_per_sample.insert(o.sparsity_stage12_per_sample.end(),
                                             p.sparsity_stage12_per_sample.begin(),
                                             p.sparsity_stage12_per_sample.end());
        o.group_size = static_cast<int>(p.error_per_sample.size());
        o.sparsity_stage1_mean += p.sparsity_stage1_mean / static_cast<double>(heads_.size());
        o.sparsity_stage12_mean += p.sparsity_stage12_mean / static_cast<double>(heads_.size());
      }
    }
    evaluated_ += static_cast<long>(cands.size());
    return out;
  }
  int num_samples() const override { return heads_.front()->num_samples(); }
  long evaluations() const override { return evaluated_; }

 private:
  std::vector<HeadOracle*> heads_;
  long evaluated_ = 0;
};

}  // namespace

std::unique_ptr<HeadOracle> make_combined_oracle(std::vector<HeadOracle*> heads) {
  return std::make_unique<CombinedOracle>(std::move(heads));
}

}  // namespace sparge::tune
