// `sparge report`: compares two bench runs (JSON) or two tuned configs (YAML); Markdown on
// stdout, optional HTML; exit 1 on a regression. With --trace, the search trace of one tuned
// config instead (per-head table, --svg: one panel per head; src/report/trace_plot.hpp).
#include <fstream>
#include <iostream>
#include <tuple>

#include "bench/results.hpp"
#include "cli/arg_lists.hpp"
#include "cli/commands.hpp"
#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "common/log.hpp"
#include "config/tuned.hpp"
#include "report/across.hpp"
#include "report/bench_compare.hpp"
#include "report/trace_plot.hpp"
#include "report/tuned_compare.hpp"

namespace sparge::cli {
namespace {

struct ReportArgs {
  std::string base, cur;
  std::string threshold = "5%";
  std::string accuracy_threshold = "10%,0.002";
  std::string html;
  std::string trace, svg, layers;   // --trace mode
  std::vector<std::string> across;  // --across mode
  int max_panels = 64;
  bool force = false;
  bool fail_on_noisy = false;
  bool allow_gone = false;
};

enum class Kind { kBench, kTuned };

// By extension; otherwise by the first non-blank byte ('{' = bench JSON).
Kind kind_of(const std::string& path) {
  auto ends = [&](const char* ext) {
    const std::string e(ext);
    return path.size() >= e.size() && path.compare(path.size() - e.size(), e.size(), e) == 0;
  };
  if (ends(".json")) return Kind::kBench;
  if (ends(".yaml") || ends(".yml")) return Kind::kTuned;
  std::ifstream in(path);
  if (!in) fail(ExitCode::kNoInput, "{}: cannot open", path);
  char ch = 0;
  while (in.get(ch) && std::isspace(static_cast<unsigned char>(ch))) {
  }
  return ch == '{' ? Kind::kBench : Kind::kTuned;
}

// --trace TRACE.json [TUNED.yaml] [--svg PLOT.svg]: the search trace of one tuned config.
void run_trace(const ReportArgs& a, const CLI::App& sub) {
  for (const char* flag : {"--html", "--threshold", "--accuracy-threshold", "--force",
                           "--fail-on-noisy", "--allow-gone"}) {
    if (sub.count(flag) > 0) fail(ExitCode::kUsage, "{} compares two runs; not with --trace", flag);
  }
  if (!a.cur.empty()) {
    fail(ExitCode::kUsage,
         "--trace plots one tuned config: give at most one TUNED.yaml (it is checked against the "
         "trace)");
  }
  refuse_output_over_input({"--svg", a.svg}, {a.trace, a.base});
  report::TracePlotOptions opt;
  opt.max_panels = a.max_panels;
  if (!a.layers.empty()) opt.layers = parse_index_list(a.layers, "--layers");
  const auto doc = report::read_trace(a.trace);
  if (!a.base.empty()) {
    report::check_trace_matches(doc, config::read_tuned(a.base), a.trace, a.base);
  }
  const auto plot = report::render_trace_plot(doc, opt, a.trace);
  if (!a.svg.empty()) write_file_atomic(a.svg, plot.svg);
  std::cout << plot.markdown;
  std::cout.flush();
  if (!plot.note.empty()) log::warn("{}", plot.note);
  if (!a.svg.empty()) log::info("wrote {} panel(s) to {}", plot.plotted, a.svg);
}

// --across A.json B.json ...: several bench runs side by side, each normalised by its own cuDNN.
void run_across(const ReportArgs& a, const CLI::App& sub) {
  for (const char* flag :
       {"--html", "--threshold", "--accuracy-threshold", "--force", "--fail-on-noisy",
        "--allow-gone", "--trace", "--svg", "--layers", "--max-panels"}) {
    if (sub.count(flag) > 0) fail(ExitCode::kUsage, "{} does not go with --across", flag);
  }
  if (!a.base.empty()) {
    fail(ExitCode::kUsage, "--across takes its bench JSONs as its own arguments: --across A B ...");
  }
  std::vector<report::AcrossRun> runs;
  for (const std::string& path : a.across) {
    if (kind_of(path) != Kind::kBench)
      fail(ExitCode::kUsage, "--across {}: not a bench JSON", path);
    runs.push_back({path, bench::load_results(path)});
  }
  std::cout << report::across_table(runs);
  std::cout.flush();
}

void run_report(const ReportArgs& a, const CLI::App& sub, Context& ctx) {
  if (!a.across.empty()) return run_across(a, sub);
  if (!a.trace.empty()) return run_trace(a, sub);
  for (const char* flag : {"--svg", "--layers", "--max-panels"}) {
    if (sub.count(flag) > 0) {
      fail(ExitCode::kUsage,
           "{} goes with --trace TRACE.json (the search trace of `sparge tune --trace`)", flag);
    }
  }
  if (a.base.empty() || a.cur.empty()) {
    fail(ExitCode::kUsage,
         "report needs BASE and NEW (two bench JSONs or two tuned YAMLs), or --trace TRACE.json");
  }
  refuse_output_over_input({"--html", a.html}, {a.base, a.cur});
  const double threshold = report::parse_threshold(a.threshold);
  report::parse_accuracy_threshold(a.accuracy_threshold);  // usage errors before any file
  const Kind kb = kind_of(a.base), kn = kind_of(a.cur);
  if (kb != kn) {
    fail(ExitCode::kUsage, "{} and {} are not the same kind (bench JSON vs tuned YAML)", a.base,
         a.cur);
  }
  if (kb == Kind::kTuned) {
    if (!a.html.empty()) fail(ExitCode::kUsage, "--html is for bench results (JSON)");
    const auto old_cfg = config::read_tuned(a.base);
    const auto new_cfg = config::read_tuned(a.cur);
    const auto cmp =
        report::compare_tuned(old_cfg, new_cfg, threshold, a.base, a.cur, a.allow_gone);
    std::cout << report::render_tuned_markdown(cmp, threshold);
    if (cmp.failures() > 0) ctx.exit_code = 1;
    return;
  }
  const auto base = bench::load_results(a.base);
  const auto cur = bench::load_results(a.cur);
  report::CompareOptions opt;
  opt.threshold = threshold;
  opt.force = a.force;
  opt.fail_on_noisy = a.fail_on_noisy;
  opt.allow_gone = a.allow_gone;
  std::tie(opt.accuracy_relative, opt.accuracy_absolute) =
      report::parse_accuracy_threshold(a.accuracy_threshold);
  const auto cmp = report::compare_bench(base, cur, opt, a.base, a.cur);
  if (!a.html.empty()) write_file_atomic(a.html, report::render_html(cmp, opt));
  std::cout << report::render_markdown(cmp, opt);
  std::cout.flush();
  if (cmp.failed(opt)) ctx.exit_code = 1;
}

}  // namespace

void register_report(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ReportArgs>();
  auto* sub = app.add_subcommand(
      "report",
      "Compare two runs: BASE.json NEW.json (sparge bench results; rows matched by kernel, "
      "shape, causal, density, inputs; noise-aware SLOW/FAST/SAME/NOISY; one 'prepare' row per "
      "shape compares prediction + quantisation; a row whose rel-L1 "
      "grew by more than max(10% of the base, 0.002) is LESS ACCURATE) or OLD.yaml NEW.yaml "
      "(tuned configs; per-layer sparsity and worst error). Markdown on stdout; exit 1 on a "
      "regression (a SLOW, LESS ACCURATE or GONE row, a layer over budget, less sparse or gone).\n"
      "--trace TRACE.json [TUNED.yaml] [--svg PLOT.svg]: the search of one tuned config instead "
      "(the trace of `sparge tune --trace`; a TUNED.yaml given must be the config it produced). "
      "Markdown table per head: chosen sparsity, predicted held-out error and its headroom to "
      "the budget, why a head stayed dense. --svg: one panel per head, x = predicted error, y = "
      "sparsity (stage 1 dots, stage 1+2 squares), budget lines l1 and l2, passing points "
      "coloured, failing grey, the chosen point ringed, dense heads shaded with their reason.\n"
      "--across A.json B.json ...: several bench runs (one per GPU model, or one GPU at several "
      "commits) in one table, each row as its run's own SDPA cuDNN time over the row's time (x "
      "cuDNN, comparable across GPUs) beside its effective TOPS.");
  sub->add_option("base", args->base,
                  "Baseline: bench JSON or tuned YAML (with --trace: the tuned YAML, optional)");
  sub->add_option("new", args->cur, "New run, same kind as the baseline");
  sub->add_option("--threshold", args->threshold,
                  "Change that counts (beyond the noise): 5% or 0.05 (default 5%)");
  sub->add_option("--accuracy-threshold", args->accuracy_threshold,
                  "REL[,ABS]: a bench row whose rel-L1 grows by more than max(REL x base, ABS) "
                  "is LESS ACCURATE, a regression (default 10%,0.002)");
  sub->add_option("--html", args->html, "Also write a self-contained HTML page with charts");
  sub->add_flag("--force", args->force, "Compare runs from different GPU models anyway");
  sub->add_flag("--fail-on-noisy", args->fail_on_noisy, "NOISY rows fail too (exit 1)");
  sub->add_flag("--allow-gone", args->allow_gone,
                "Rows (or tuned layers) of BASE missing from NEW are not a regression (by "
                "default a GONE row fails: exit 1)");
  sub->add_option("--trace", args->trace,
                  "Search trace of a tuned config (sparge tune --trace): per-head table on stdout");
  sub->add_option("--svg", args->svg,
                  "With --trace: write the trace as an SVG plot, one panel per head (atomically)");
  sub->add_option("--layers", args->layers,
                  "With --trace: layers to show, e.g. 0,2,5-7 [default: all in the trace]");
  sub->add_option("--max-panels", args->max_panels,
                  "With --trace: at most this many heads (panels); the rest are named and left out")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  sub->add_option("--across", args->across,
                  "Bench JSONs of several runs (>= 2): one table, each normalised by its own "
                  "run's SDPA cuDNN time (e.g. one per GPU model)")
      ->expected(2, -1);
  sub->callback([args, sub, &ctx] { run_report(*args, *sub, ctx); });
}

}  // namespace sparge::cli
