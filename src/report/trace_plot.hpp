// `sparge report --trace TRACE.json --svg PLOT.svg [TUNED.yaml]`: the search trace of a tuned
// config (`sparge tune --trace`, schema "sparge.tune-trace") as small multiples, one panel per
// head: x = the error the held-out rule predicts (what a point passes or fails on), y = the
// sparsity of the point (stage 1 for λ = -inf points, stage 1+2 for λ points), the budget lines
// l1 and l2 (the search targets (1 - margin) x budget), passing and failing points, the chosen
// point ringed, dense heads shaded with the reason they stayed dense. A Markdown table on stdout
// gives per head the chosen sparsity, the predicted error and its headroom to the budget.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "config/tuned.hpp"

namespace sparge::report {

struct TraceDocPoint {
  float tau = 0, theta = 0;
  std::optional<float> lambda;      // empty: -inf (a stage-1 point)
  double error_worst = 0;           // worst calibration error
  double predicted = 0;             // the held-out rule's error (what `pass` is judged on)
  std::optional<double> increment;  // λ points: the error λ adds, as predicted (stage 2's share)
  double sparsity_stage1 = 0, sparsity_stage12 = 0;
  bool pass = false;
  bool stage12() const { return lambda.has_value(); }
};

struct TraceDocHead {
  int layer = 0, head = 0;
  bool sparse = true;
  std::string mode = "cdf";  // of the chosen point: cdf (tau = TopCdf mass) or topk
  float tau = 1, theta = 1;  // chosen
  std::optional<float> lambda;
  double expected_stage1 = 0, expected_stage12 = 0;
  std::vector<TraceDocPoint> points;  // evaluation order
};

struct TraceDoc {
  std::string dump, tuned, holdout, permutation;
  double l1 = 0.05, l2 = 0.06, spread_k = 0, margin = 0;
  double spread_floor = 0;     // absent in traces written before it existed: none
  double min_sparsity = 0.05;  // absent in traces written before it was recorded: the default
  std::vector<TraceDocHead> heads;
  double target_l1() const { return l1 * (1 - margin); }
  double target_l2() const { return l2 * (1 - margin); }
};

// Reads and validates a trace file. Missing/unreadable: Error(kNoInput); not JSON, another
// schema or schema_version, a missing or mistyped field: Error(kDataError) naming the file and
// the JSON path.
TraceDoc read_trace(const std::filesystem::path& path);

// The trace must describe `cfg`: the same budget and, for every head of the trace, a head of the
// config with the same sparse flag and thresholds. Error(kDataError) naming the first mismatch.
void check_trace_matches(const TraceDoc& trace, const config::TunedConfig& cfg,
                         const std::string& trace_name, const std::string& cfg_name);

// Why a head of the trace is dense (empty for a sparse head): the dense mask itself misses l1,
// no evaluated stage-1 point passes, or the best passing point is below min_sparsity.
std::string dense_reason(const TraceDocHead& head, const TraceDoc& doc);

struct TracePlotOptions {
  std::optional<std::vector<int>> layers;  // default: every layer of the trace
  int max_panels = 64;                     // heads beyond it are left out (named in `note`)
};

struct TracePlot {
  std::string svg;       // a standalone SVG document
  std::string markdown;  // per-head table (stdout)
  int plotted = 0;       // panels drawn
  int selected = 0;      // heads of the selected layers
  std::string note;      // non-empty when heads were left out: what and how to pick them
};

// Error(kUsage) when --layers selects no head of the trace.
TracePlot render_trace_plot(const TraceDoc& doc, const TracePlotOptions& options,
                            const std::string& trace_name);

}  // namespace sparge::report
