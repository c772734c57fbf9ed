// `sparge report`: compares two bench runs (JSON) or two tuned configs (YAML); Markdown on
// stdout, optional HTML; exit 1 on a regression.
#include <fstream>
#include <iostream>
#include <tuple>

#include "bench/results.hpp"
#include "cli/commands.hpp"
#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "config/tuned.hpp"
#include "report/bench_compare.hpp"
#include "report/tuned_compare.hpp"

namespace sparge::cli {
namespace {

struct ReportArgs {
  std::string base, cur;
  std::string threshold = "5%";
  std::string accuracy_threshold = "10%,0.002";
  std::string html;
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

void run_report(const ReportArgs& a, Context& ctx) {
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
      "Compare two runs: BASE.json NEW.json (sparge bench results; rows matched by variant, "
      "shape, causal, density, inputs; noise-aware SLOW/FAST/SAME/NOISY; a row whose rel-L1 "
      "grew by more than max(10% of the base, 0.002) is LESS ACCURATE) or OLD.yaml NEW.yaml "
      "(tuned configs; per-layer sparsity and worst error). Markdown on stdout; exit 1 on a "
      "regression (a SLOW, LESS ACCURATE or GONE row, a layer over budget, less sparse or gone).");
  sub->add_option("base", args->base, "Baseline: bench JSON or tuned YAML")->required();
  sub->add_option("new", args->cur, "New run, same kind as the baseline")->required();
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
  sub->callback([args, &ctx] { run_report(*args, ctx); });
}

}  // namespace sparge::cli
