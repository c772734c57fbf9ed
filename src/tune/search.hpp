// The per-head threshold search (docs/design.md, Calibration), written against HeadOracle so it
// runs on any backend and can be tested with synthetic oracles.
//
// Per head:
//  1. Stage 1. For every θ of the grid, bisection on τ in [0, 1] for the sparsest mask whose
//     rel-L1 on *every* calibration sample is <= l1. The θ lines advance in lockstep (one batched
//     oracle call per step). A θ whose τ = 1 point fails is dropped; a θ line whose best
//     reachable sparsity (the sparsity at its failing lower end: a larger τ only keeps more
//     blocks) is below the best passing point found so far (less the τ plateau guard's reach,
//     step 2b) stops early.
//  2. The stage-1 point kept is the best *evaluated and passing* point over all θ lines: highest
//     mean stage-1 sparsity; ties: lower worst error, then smaller θ, then larger τ. Bisection
//     midpoints are never written untested, and a non-monotone oracle can cost sparsity but
//     never makes a failing point win.
//  2b. τ plateau guard (SearchOptions::tau_plateau = R), from the point of step 2 (τ*, s*).
//     Acceptable: τ > τ*, passes, and mean stage-1 sparsity >= max(s* - R (τ - τ*),
//     min_sparsity). Kept instead, if any: the acceptable evaluated point of largest τ over all
//     θ lines (ties as in 2), then the largest acceptable τ of its θ line, by bisection between
//     that τ and the smallest unacceptable τ evaluated above it. Where lowering τ bought less
//     than R calibration sparsity per unit of τ, τ stays up.
//  3. If no point passes, or the best mean stage-1 sparsity is < min_sparsity, the head is dense:
//     kDenseCandidate (τ = 1, θ = 1: nothing is "similar", so every block is forced on).
//  4. Stage 2 at the kept (τ, θ): bisection on λ in [lambda_min, lambda_max] (natural log, <= 0)
//     for the most stage-1+2 sparsity whose predicted error is <= l2 and, under the spread
//     rule, whose predicted *increment* over the stage-1 point (the error λ adds, per sample)
//     is <= l2 - l1 (stage2_passes); λ = -inf (no skipping, whose error is the stage-1 error
//     <= l1 <= l2) is kept when nothing passes. Ties: smaller λ.
//  5. A head whose dense mask already misses l1 (quantisation error alone) is reported with
//     meets_budget = false and written dense with λ = -inf.
// Deterministic: the sequence of oracle calls depends only on the oracle's answers.
#pragma once

#include <string>
#include <vector>

#include "tune/oracle.hpp"

namespace sparge::tune {

struct SearchOptions {
  double l1 = 0.05;  // stage-1 budget, rel-L1 (worst sample)
  double l2 = 0.06;  // stage-1+2 budget, must be >= l1
  std::vector<float> theta_grid = default_theta_grid();
  float tau_tol = 0.001f;      // stop the τ bisection when the interval is <= this wide
  float lambda_min = -32.0f;   // λ bisection range (natural log); SpargeAttn's pvthreshd range
  float lambda_max = 0.0f;     //   [0, 50] (log2) is about [-34.7, 0] here
  float lambda_tol = 0.125f;   // stop the λ bisection when the interval is <= this wide
  bool tune_lambda = true;     // false: λ = -inf for every head
  double min_sparsity = 0.05;  // below this mean stage-1 sparsity a head is marked dense
  // Headroom for samples the tuner never saw: candidates must pass (1 - margin) x l1 / l2. The
  // budget written to the YAML (and checked by `sparge eval`) stays l1 / l2; the dense fallback
  // is judged against l1 itself, since no threshold can do better than keeping every block.
  double margin = 0.0;
  // How a candidate's error on unseen samples is predicted from its calibration samples (the
  // point must keep the *prediction* within target_l1 / target_l2):
  //   "spread" (default): worst + spread_k x max(worst - best, spread_floor x worst) over the
  //     samples: a head whose error at a threshold differs between the calibration samples is
  //     expected to differ as much again on a new one, so it keeps that much headroom (issue
  //     16: edge-of-budget thresholds missed the budget on held-out samples). With one sample it
  //     is the worst error (nothing to measure a spread on; the tuner warns). Stage 1+2 points
  //     also keep the error λ adds within l2 - l1 (stage2_passes).
  //   "edge": the worst calibration error (the sparsest point that passes every sample, right at
  //     the edge of the budget, λ up to l2; the behaviour before issue 16).
  std::string holdout = "spread";
  // Stage-1 parametrisation: "cdf" (τ = TopCdf mass, SpargeAttn's) or "topk" (the bisected
  // value is the kept fraction of K blocks per row, Candidate::topk). See docs/tuned-config.md.
  std::string mode = "cdf";
  bool topk() const { return mode == "topk"; }
  // K = 3: on the CPU real-image set (8 heads, 4 photographs, all 12 rotations of 2
  // calibration photographs and 1 held out) K = 2 left 2 of 96 heads over, K = 3 none, at
  // held-out stage-1 sparsity 0.077 instead of 0.094 (reports/tune-real/holdout-dit.md, session
  // 19). The misses were an l1 error per kept block above the prediction and an l2 miss from
  // λ; K widens the prediction of both, a tighter sparsity cap only the first.
  double spread_k = 3.0;
  // The spread is taken as at least spread_floor x the worst error: calibration samples that
  // happen to agree say little about a new one, and a new image can be harder for every head at
  // once (issue 16, DiT stack, 192 heads x 3 rotations of 2 photographs + 1 held out, errors read
  // off a 3-sample search trace: held-out misses 61 of 576 with no floor, 16 at 0.2, 8 at 0.3;
  // held-out sparsity 0.185 / 0.175 / 0.164; reports/tune-real/holdout-dit.md). 0 = the samples'
  // own spread only.
  double spread_floor = 0.2;
  // τ plateau guard (search step 2b): R, the least mean stage-1 sparsity (a fraction of the
  // blocks) that each unit of τ lowered must buy. The stage-1 point kept becomes the passing
  // point of largest τ (over all θ lines, then refined up its θ line) whose sparsity is at most
  // R x (its τ - τ*) below the sparsest passing point's (τ*). Where θ forces most blocks on for
  // the calibration samples, the error hardly depends on τ, and the bisection drives τ to the
  // lowest value that still passes, for almost no sparsity; on a held-out sample with fewer
  // forced blocks that τ decides, and the head missed the budget 3x (issue 16, rocket held out,
  // reports/tune-real/holdout-dit.md: R = 0.02 took it from τ 0.336, θ 0.375 to τ 0.966, θ 0.25
  // for 0.012 of calibration sparsity, and it passed; where τ decides, a unit of τ is worth 0.35
  // to 138 of sparsity, median 4.3, over 84 heads). A larger τ bounds the predicted mass a row
  // may drop. Costs at most R x (1 - τ*) of calibration stage-1 sparsity
  // per head: next to nothing for a head whose τ* is near 1 already. 0 = off (the sparsest
  // passing point; configs tuned before it existed). The edge rule ignores it.
  double tau_plateau = 0.02;
  // Sparsity cap (not part of the search; written to the YAML and applied by the prediction):
  // each sparse head may reach at most c x its mean calibration stage-1 sparsity on any input.
  // An input that TopCdf sparsifies far more than the calibration samples (an image harder for
  // every head) is what made held-out photographs miss; capping at 1.25 x removed every miss of
  // the CPU real-image set's failing rotations (reports/tune-real/holdout-dit.md, capping).
  // Costs calibration sparsity only on the sparser calibration sample. 0 = off; the edge rule
  // ignores it.
  double sparsity_cap = 1.25;

  double target_l1() const { return l1 * (1.0 - margin); }
  double target_l2() const { return l2 * (1.0 - margin); }

  // -1, -0.875, ..., 0.875 (step 1/8): SpargeAttn sweeps step 1/16 but then bins its results by
  // 1/8 and keeps the max θ of a bin, so 1/8 loses nothing it actually uses, at half the cost.
  static std::vector<float> default_theta_grid();
  // Throws Error(kUsage) naming the option at fault.
  void validate() const;
};

// The held-out error the rule predicts for an evaluation (see SearchOptions::holdout).
double predicted_error(const Evaluation& e, const SearchOptions& options);
// The error λ adds, predicted for a held-out sample by the same rule: per sample the stage-1+2
// error minus the stage-1 error at the same (τ, θ), then worst (edge) or worst + spread_k x
// spread (per head within a group).
double predicted_increment(const Evaluation& stage12, const Evaluation& stage1,
                           const SearchOptions& options);
// Whether a stage-1+2 point passes: predicted error <= target l2 and, unless the rule is edge,
// predicted increment <= target l2 - target l1. Stage 2 gets its own share of the budget (l2 -
// l1) on top of the stage-1 error, not whatever l2 leaves: measured on real-image tensors
// (reports/tune-real/holdout-cpu.md), the error λ adds varies more between images than the
// stage-1 error (1.4-2.3x the worst calibration increment on a held-out photograph), so heads
// with a small stage-1 error (a dense head: 0.005) that spent the rest of l2 on λ missed l2 on
// a held-out photograph; with the share no head did, in 4 of 4 rotations.
bool stage2_passes(double predicted, double increment, const SearchOptions& options);

// One candidate the search evaluated, for `sparge tune --trace` / `--format json`.
struct TracePoint {
  Candidate c;
  Evaluation e;
  double predicted = 0;  // predicted_error(e)
  double increment = 0;  // stage-1+2 points: predicted_increment over its stage-1 point
  // Stage 1 (λ = -inf): predicted <= target l1; stage 1+2: stage2_passes.
  bool pass = false;
};

struct HeadResult {
  Candidate chosen = kDenseCandidate;  // what is written (λ from stage 2)
  bool sparse = false;                 // false: dense head (chosen τ = 1, θ = 1)
  bool meets_budget = true;            // false: even the dense mask misses l1
  double sparsity_stage1 = 0;          // mean over samples at (τ, θ)
  double sparsity_stage12 = 0;         // mean over samples at (τ, θ, λ)
  double error_stage1 = 0;             // worst over samples at (τ, θ, λ = -inf)
  double error_stage12 = 0;            // worst over samples at (τ, θ, λ)
  long evaluations = 0;                // distinct candidates evaluated
  // Predicted held-out error at the chosen point (stage 1 at λ = -inf, stage 1+2 at λ).
  double expected_stage1 = 0, expected_stage12 = 0;
  std::vector<TracePoint> trace;  // every distinct candidate evaluated, in evaluation order
};

HeadResult search_head(HeadOracle& oracle, const SearchOptions& options);

// Per-layer granularity: one oracle over several heads. error_worst is the worst over heads and
// samples; sparsities are the mean over heads of their means. Per-sample vectors are
// concatenated head after head.
std::unique_ptr<HeadOracle> make_combined_oracle(std::vector<HeadOracle*> heads);

}  // namespace sparge::tune
