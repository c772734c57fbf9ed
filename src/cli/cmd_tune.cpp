// `sparge tune DUMP.h5 -o tuned.yaml`: per-head τ/θ/λ within an error budget (docs/design.md,
// Calibration).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <tuple>

#include "cli/arg_lists.hpp"
#include "cli/commands.hpp"
#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "common/log.hpp"
#include "config/preset.hpp"
#include "kernels/api.h"
#include "tune/table.hpp"
#include "tune/tuner.hpp"

namespace sparge::cli {
namespace {

// The search options' defaults come from tune::SearchOptions itself, so --help and the search
// cannot drift apart.
inline const tune::SearchOptions kSearchDefaults{};

struct TuneArgs {
  std::string dump, output, preset, theta_grid, lambda_range, layers, samples, shard,
      granularity = "head", backend = "cpu", kernel = "sm90", state_dir, format = "text", devices,
      holdout = kSearchDefaults.holdout, trace, mode = kSearchDefaults.mode;
  double l1 = kSearchDefaults.l1, l2 = kSearchDefaults.l2,
         min_sparsity = kSearchDefaults.min_sparsity, margin = kSearchDefaults.margin,
         spread_k = kSearchDefaults.spread_k, spread_floor = kSearchDefaults.spread_floor,
         tau_plateau = kSearchDefaults.tau_plateau, sparsity_cap = kSearchDefaults.sparsity_cap;
  bool no_hilbert = false;
  float tau_tol = kSearchDefaults.tau_tol, lambda_tol = kSearchDefaults.lambda_tol;
  bool no_lambda = !kSearchDefaults.tune_lambda, resume = false, timestamp = false;
  std::optional<bool> causal, sink;
  int jobs = 0;
};

}  // namespace

void register_tune(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<TuneArgs>();
  auto* sub = app.add_subcommand(
      "tune",
      "Calibrate per-head SpargeAttn thresholds (tau, theta, lambda) on a Q/K/V dump within an "
      "error budget, and write a tuned YAML.\n"
      "Per head: theta on a grid; for each theta, bisection on tau for the sparsest mask whose "
      "relative L1 error on every calibration sample is <= l1; then bisection on lambda for the "
      "most P.V skipping with error <= l2. Only evaluated, passing points are written.\n"
      "Generalisation (--holdout spread, default): a point passes when its worst calibration "
      "error plus K x its spread across the samples is within the budget, so held-out samples "
      "keep headroom, and lambda may add at most l2 - l1 to the stage-1 error (the added error, "
      "per sample, predicted the same way): the error lambda adds varies most between inputs. "
      "--holdout edge is the sparsest point that passes the calibration samples, lambda using "
      "all of l2 (held-out samples can miss the budget).\n"
      "tau plateau guard (--tau-plateau R, spread rule only): from the sparsest passing point "
      "(tau*, s*), the stage-1 point kept then becomes the passing one of largest tau (any "
      "theta) whose mean stage-1 sparsity is >= s* - R x (tau - tau*): where lowering tau bought "
      "less than R sparsity per unit of tau on the calibration samples (theta forced most blocks "
      "on), a held-out input with fewer forced blocks would be cut by that low tau.\n"
      "Token order: a dump with a token grid (video/image) is tuned in Hilbert order (text tokens "
      "in place; the YAML records it and eval follows it); --no-hilbert keeps the dump's order. "
      "Causal dumps are never permuted.\n"
      "Prints a per-layer summary on stdout. Exit 1 if some head misses l1 even with a dense "
      "mask (quantisation error alone).");
  sub->add_option("dump", args->dump, "Q/K/V dump (HDF5, sparge.qkv-dump)")->required();
  sub->add_option("-o,--output", args->output, "Tuned config to write (YAML, written atomically)")
      ->required();
  auto* o_preset = sub->add_option("--preset", args->preset,
                                   "Budgets and search space of a model family: video, image, "
                                   "llm (configs/presets/NAME.yaml) or a preset file; explicit "
                                   "flags override it");
  auto* o_l1 = sub->add_option("--l1", args->l1, "Stage-1 budget, relative L1 (worst sample)")
                   ->capture_default_str();
  auto* o_l2 =
      sub->add_option("--l2", args->l2, "Stage 1+2 budget (lambda), >= l1")->capture_default_str();
  auto* o_grid = sub->add_option("--theta-grid", args->theta_grid,
                                 "theta values: START:STOP:STEP (stop excluded) or a,b,c "
                                 "[default -1:1:0.125]");
  auto* o_tau = sub->add_option("--tau-tol", args->tau_tol, "Width at which tau bisection stops")
                    ->capture_default_str();
  auto* o_lrange = sub->add_option("--lambda-range", args->lambda_range,
                                   "lambda bisection range MIN,MAX (natural log, <= 0) "
                                   "[default -32,0]");
  auto* o_ltol =
      sub->add_option("--lambda-tol", args->lambda_tol, "Width at which lambda bisection stops")
          ->capture_default_str();
  sub->add_flag("--no-lambda", args->no_lambda, "Do not tune lambda (write -inf: no P.V skipping)");
  auto* o_mins = sub->add_option("--min-sparsity", args->min_sparsity,
                                 "Heads below this mean stage-1 sparsity are marked dense")
                     ->capture_default_str();
  auto* o_margin =
      sub->add_option("--margin", args->margin,
                      "Headroom for unseen inputs: search within (1 - MARGIN) x l1/l2 while the "
                      "YAML keeps l1/l2 as the budget `sparge eval` checks, e.g. 0.1")
          ->check(CLI::Range(0.0, 0.5))
          ->capture_default_str();
  sub->add_option("--holdout", args->holdout,
                  "How held-out error is predicted from the calibration samples: spread = worst "
                  "+ K x (worst - best) per head, kept within the budget (needs >= 2 samples), "
                  "and the error lambda adds over the stage-1 point, predicted the same way, "
                  "within l2 - l1; edge = the worst calibration error, lambda up to l2 "
                  "(sparsest, at the edge of the budget: held-out samples can miss it)")
      ->check(CLI::IsMember({"spread", "edge"}))
      ->capture_default_str();
  sub->add_option("--mode", args->mode,
                  "Stage-1 parametrisation: cdf (tau = TopCdf mass, SpargeAttn's) or topk (the "
                  "fraction of K blocks each row keeps by the predicted map; the blocks theta "
                  "forces on come on top and still vary with the input)")
      ->check(CLI::IsMember({"cdf", "topk"}))
      ->capture_default_str();
  sub->add_option("--spread-k", args->spread_k,
                  "K of --holdout spread (for the error and for the error lambda adds)")
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  sub->add_option("--spread-floor", args->spread_floor,
                  "F of --holdout spread: the spread is taken as at least F x the worst error, "
                  "since calibration samples that agree by chance say little about a new one")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  sub->add_option("--tau-plateau", args->tau_plateau,
                  "R of the tau plateau guard (--holdout spread): the least mean stage-1 "
                  "sparsity a unit of tau lowered must buy, else the larger tau is kept; costs "
                  "at most R x (1 - tau*) of calibration sparsity per head; 0 = off (the "
                  "sparsest passing point)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  sub->add_option("--sparsity-cap", args->sparsity_cap,
                  "C of the sparsity cap (--holdout spread): on any input the prediction keeps "
                  "each sparse head at most C x its mean calibration stage-1 sparsity, raising "
                  "tau for that head where TopCdf would skip more (an input unlike the "
                  "calibration samples); written to the YAML per head; 0 = off")
      ->capture_default_str();
  sub->add_flag("--no-hilbert", args->no_hilbert,
                "Keep the dump's token order (default for a dump with a token grid: reorder the "
                "visual tokens along a Hilbert curve before prediction; recorded in the YAML)");
  sub->add_option("--trace", args->trace,
                  "Write every candidate the search evaluated, per head (tau, theta, lambda, "
                  "error per sample, sparsity, pass) as JSON to this file; plot it with `sparge "
                  "report TUNED.yaml --trace FILE --svg PLOT.svg`");
  sub->add_option("--layers", args->layers, "Layers to tune, e.g. 0,2,5-7 [default: all]");
  sub->add_option("--shard", args->shard,
                  "I/N: tune only every N-th selected layer starting at I (one task of a job "
                  "array); join the parts with `sparge merge`");
  sub->add_option("--samples", args->samples,
                  "Calibration samples, e.g. 0-1 [default: all samples of each layer]");
  auto* o_gran = sub->add_option("--granularity", args->granularity,
                                 "head: thresholds per head; layer: one set per layer (its worst "
                                 "head bounds the error)")
                     ->check(CLI::IsMember({"head", "layer"}))
                     ->capture_default_str();
  sub->add_option("--backend", args->backend, "Oracle: cpu (reference) or cuda (the kernels)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_option("--kernel", args->kernel,
                  "Kernel geometry the thresholds are for: sm90 (128x128) or sm80 (128x64)")
      ->check(CLI::IsMember({"sm90", "sm80"}))
      ->capture_default_str();
  sub->add_option("--jobs", args->jobs,
                  "Heads tuned in parallel, >= 1 [default: hardware threads on cpu, 8 on cuda]")
      ->check(CLI::Range(1, 4096));
  sub->add_option("--devices", args->devices,
                  "With --backend cuda: GPUs to spread the heads over, 0,1,... or all "
                  "[default: the current GPU]; the default --jobs scales with their number");
  sub->add_option("--causal", args->causal, "Override the dump's causal attribute (true/false)");
  sub->add_option("--sink", args->sink,
                  "Attention sink: first K block always kept (true/false) [default: dump attr]");
  sub->add_flag("--resume", args->resume,
                "Continue a killed run from its journal (OUTPUT.partial.jsonl); the inputs and "
                "flags must be the same");
  sub->add_option("--state-dir", args->state_dir, "Folder for the journal [default: beside -o]");
  sub->add_flag("--timestamp", args->timestamp,
                "Record the creation time (the YAML is then no longer byte-identical across runs)");
  sub->add_option("--format", args->format, "Summary format: text, json, md, csv")
      ->check(CLI::IsMember({"text", "json", "md", "csv"}))
      ->capture_default_str();

  sub->callback([args, &ctx, o_preset, o_l1, o_l2, o_grid, o_tau, o_lrange, o_ltol, o_mins, o_gran,
                 o_margin] {
    const auto& a = *args;
    refuse_output_over_input({{"-o", a.output}, {"--trace", a.trace}}, {a.dump, a.preset});
    tune::TuneRequest rq;
    rq.dump = a.dump;
    rq.output = a.output;
    auto& s = rq.search;
    rq.granularity = a.granularity;
    if (o_preset->count()) {
      auto p = config::load_preset(a.preset);
      config::apply_preset(p, s);
      if (p.granularity && !o_gran->count()) rq.granularity = *p.granularity;
      log::info("preset {}: l1 {} l2 {}", p.name, s.l1, s.l2);
    }
    if (o_l1->count() || !o_preset->count()) s.l1 = a.l1;
    if (o_l2->count() || !o_preset->count()) s.l2 = a.l2;
    if (o_grid->count()) s.theta_grid = parse_theta_grid(a.theta_grid);
    if (o_tau->count()) s.tau_tol = a.tau_tol;
    if (o_lrange->count())
      std::tie(s.lambda_min, s.lambda_max) = parse_range(a.lambda_range, "--lambda-range");
    if (o_ltol->count()) s.lambda_tol = a.lambda_tol;
    if (o_mins->count()) s.min_sparsity = a.min_sparsity;
    if (o_margin->count()) s.margin = a.margin;
    s.tune_lambda = !a.no_lambda;
    s.holdout = a.holdout;
    s.mode = a.mode;
    s.spread_k = a.spread_k;
    s.spread_floor = a.spread_floor;
    s.tau_plateau = a.tau_plateau;
    s.sparsity_cap = a.sparsity_cap;
    rq.hilbert = !a.no_hilbert;
    if (!a.layers.empty()) rq.layers = parse_index_list(a.layers, "--layers");
    if (!a.samples.empty()) rq.samples = parse_index_list(a.samples, "--samples");
    if (!a.shard.empty()) rq.shard = parse_shard(a.shard);
    rq.backend = a.backend;
    rq.geometry = ref::geometry_by_name(a.kernel);
    rq.causal = a.causal;
    rq.sink = a.sink;
    rq.jobs = a.jobs;
    if (!a.devices.empty()) {
      if (a.backend == "cpu") {
        fail(ExitCode::kUsage, "--devices applies to --backend cuda (the cpu backend uses no GPU)");
      }
      rq.devices = parse_devices(a.devices, kernels::device_count());
      if (rq.devices.empty())
        fail(ExitCode::kNoDevice, "--devices {}: no CUDA device visible", a.devices);
    }
    rq.resume = a.resume;
    if (!a.state_dir.empty()) rq.state_dir = a.state_dir;
    rq.timestamp = a.timestamp;

    auto out = tune::run_tune(rq);

    // Per-layer summary.
    const auto& cfg = out.config;
    tune::Table t;
    t.columns = {"layer",           "module",           "heads",        "dense_heads",
                 "stage1_sparsity", "stage12_sparsity", "worst_err_l1", "worst_err_l2",
                 "expect_l1",       "expect_l2"};
    nlohmann::json j = nlohmann::json::array();
    for (const auto& l : cfg.layers) {
      double s1 = 0, s12 = 0, e1 = 0, e12 = 0, x1 = 0, x12 = 0;
      std::vector<int> dense;
      for (int h = 0; h < l.heads(); ++h) {
        s1 += l.sparsity_stage1[h] / l.heads();
        s12 += l.sparsity_stage12[h] / l.heads();
        e1 = std::max<double>(e1, l.error_stage1[h]);
        e12 = std::max<double>(e12, l.error_stage12[h]);
        x1 = std::max<double>(x1, l.expected_stage1[h]);
        x12 = std::max<double>(x12, l.expected_stage12[h]);
        if (!l.sparse[h]) dense.push_back(h);
      }
      std::string dense_txt = dense.empty() ? "-" : fmt::format("{}", fmt::join(dense, " "));
      t.rows.push_back({std::to_string(l.layer), l.module.empty() ? "-" : l.module,
                        std::to_string(l.heads()), dense_txt, fmt::format("{:.4f}", s1),
                        fmt::format("{:.4f}", s12), fmt::format("{:.4f}", e1),
                        fmt::format("{:.4f}", e12), fmt::format("{:.4f}", x1),
                        fmt::format("{:.4f}", x12)});
      j.push_back({{"layer", l.layer},
                   {"module", l.module},
                   {"heads", l.heads()},
                   {"dense_heads", dense},
                   {"sparsity_stage1_mean", s1},
                   {"sparsity_stage12_mean", s12},
                   {"error_stage1_worst", e1},
                   {"error_stage12_worst", e12},
                   {"expected_heldout_stage1_worst", x1},
                   {"expected_heldout_stage12_worst", x12}});
    }
    if (a.format == "json") {
      nlohmann::json doc = {{"output", a.output},
                            {"budget", {{"l1", cfg.budget.l1}, {"l2", cfg.budget.l2}}},
                            {"holdout", cfg.search.holdout},
                            {"permutation", cfg.permutation.order},
                            {"layers", j},
                            {"heads", out.trace},
                            {"infeasible", out.infeasible}};
      fmt::print("{}\n", doc.dump(2));
    } else {
      fmt::print("{}", t.render(a.format));
      if (a.format == "text") {
        fmt::print(
            "expect_l1/l2: the worst held-out error predicted per layer ({}); check with "
            "`sparge eval {} {} --samples <held-out>`\n",
            cfg.search.holdout == "edge"
                ? "--holdout edge: the calibration error itself, no headroom"
                : fmt::format("calibration worst + {} x spread across samples, the spread at "
                              "least {} x the worst; lambda adds at most l2 - l1; tau plateau "
                              "guard {}",
                              cfg.search.spread_k, cfg.search.spread_floor, cfg.search.tau_plateau),
            a.dump, a.output);
      }
    }
    if (!a.trace.empty()) {
      nlohmann::json doc = {{"schema", "sparge.tune-trace"},
                            {"schema_version", 1},
                            {"dump", a.dump},
                            {"tuned", a.output},
                            {"budget", {{"l1", cfg.budget.l1}, {"l2", cfg.budget.l2}}},
                            {"holdout", cfg.search.holdout},
                            {"spread_k", cfg.search.spread_k},
                            {"spread_floor", cfg.search.spread_floor},
                            {"tau_plateau", cfg.search.tau_plateau},
                            {"sparsity_cap", cfg.search.sparsity_cap},
                            {"margin", cfg.search.margin},
                            {"min_sparsity", cfg.search.min_sparsity},
                            {"mode", cfg.search.mode},
                            {"permutation", cfg.permutation.order},
                            {"heads", out.trace}};
      write_file_atomic(a.trace, doc.dump(1) + "\n");
      log::info("wrote the search trace to {}", a.trace);
    }
    log::info("wrote {}", a.output);
    if (!out.infeasible.empty()) {
      for (const auto& f : out.infeasible) log::warn("budget missed even dense: {}", f);
      log::warn(
          "{} head(s) cannot meet l1 {} even with every block kept (quantisation error); "
          "they are written dense",
          out.infeasible.size(), cfg.budget.l1);
      ctx.exit_code = 1;
    }
  });
}

}  // namespace sparge::cli
