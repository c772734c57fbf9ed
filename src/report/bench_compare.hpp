// `sparge report BASE.json NEW.json`: noise-aware comparison of two bench runs, rendered as
// Markdown (stdout) and optionally as a self-contained HTML page with inline SVG charts.
//
// Rule (docs/bench.md): rows match on (kernel, shape, causal, density). Δ = new/base - 1 of the
// median times; noise = sqrt(spread_base² + spread_new²) with spread = IQR/median of each run.
// |Δ| > max(threshold, noise) is SLOW or FAST; otherwise SAME, or NOISY when the noise alone
// exceeds the threshold (the run cannot resolve a change of threshold size). SLOW fails the
// report (exit 1), and so does a GONE row (in the base, not in the new run) unless
// --allow-gone; NOISY fails only with --fail-on-noisy.
//
// Accuracy is checked like speed: a matched row whose rel-L1 (against the same reference in
// both runs) grew by more than max(accuracy_relative x base, accuracy_absolute) is LESS
// ACCURATE and fails the report too, whatever its timing. The absolute floor keeps changes far
// below any budget (quantisation rounding moving 0.0005) from failing; 10 % of the error is
// what a numerics change that matters (the 3-5x Hopper bug) exceeds by far.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bench/results.hpp"

namespace sparge::report {

enum class Status { kSlow, kNoisy, kFast, kSame, kNew, kGone };
const char* status_label(Status s);  // "🔴 SLOW", ...

struct CompareOptions {
  double threshold = 0.05;  // relative
  bool force = false;       // compare across GPU models
  bool fail_on_noisy = false;
  double accuracy_relative = 0.10;   // rel-L1 may grow by 10 % of the base value ...
  double accuracy_absolute = 0.002;  // ... or by 0.002, whichever is larger
  // A base row missing from the new run (GONE) is a regression: a case that stopped running
  // must not pass the gate silently. --allow-gone accepts removed cases.
  bool allow_gone = false;
};

struct RowComparison {
  std::optional<bench::Row> base, cur;
  double delta = 0;  // new/base - 1
  double noise = 0;  // combined relative spread
  Status status = Status::kSame;
  bool less_accurate = false;  // rel-L1 grew beyond the accuracy threshold (a regression)
  // Compares the rows' prepare_ms (prediction + quantisation, runtime::prepare) instead of their
  // kernel time: one such comparison per kernel, shape, causal flag and inputs.
  bool prepare = false;
  const bench::Row& any() const { return cur ? *cur : *base; }
};

// SM clocks further apart than this (relative) are marked on a kernel row: the probe reads to
// well under 0.1 %, and the H100's boost clock moves in steps of ~15 MHz (0.8 %), so 2 % is a
// change of state (power, temperature), not of reading.
inline constexpr double kClockApart = 0.02;
// new/base - 1 of the SM clocks a matched kernel row recorded in both runs; nullopt for a
// prepare row (the clock belongs to the kernel's samples), a row of one run, or a file without
// clocks.
std::optional<double> clock_change(const RowComparison& r);

struct BenchComparison {
  bench::Environment base_env, new_env;
  std::string base_name, new_name;  // file names, for the header
  std::vector<RowComparison> rows;  // regressions first
  int count(Status s) const;
  int count_less_accurate() const;
  bool failed(const CompareOptions& o) const;
  bool has_accuracy() const;
};

// "5%", "5", "0.05" -> 0.05 ("5" means percent; a bare value < 1 is a ratio). Error(kUsage).
double parse_threshold(const std::string& text);
// --accuracy-threshold "REL[,ABS]": "10%,0.002" -> {0.10, 0.002}; REL as parse_threshold, ABS a
// rel-L1 difference >= 0 (default 0.002 when omitted). Error(kUsage).
std::pair<double, double> parse_accuracy_threshold(const std::string& text);
// cur > base + max(relative x base, absolute): the accuracy regression rule.
bool less_accurate(double base_rel_l1, double cur_rel_l1, double relative, double absolute);

// Error(kUsage) when the GPU models differ and !options.force.
BenchComparison compare_bench(const bench::Results& base, const bench::Results& cur,
                              const CompareOptions& options, const std::string& base_name,
                              const std::string& new_name);
Status classify(double delta, double noise, double threshold);

std::string render_markdown(const BenchComparison& cmp, const CompareOptions& options);
std::string render_html(const BenchComparison& cmp, const CompareOptions& options);

}  // namespace sparge::report
