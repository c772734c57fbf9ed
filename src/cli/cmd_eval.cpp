// `sparge eval DUMP.h5 TUNED.yaml`: error and sparsity of a tuned config per layer and head on
// (possibly held-out) samples; exit 1 when a head misses its budget. With --check-kernel, the
// kernel self-check instead (src/tune/kernel_check.hpp): CPU reference vs CUDA kernels per head.
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cli/arg_lists.hpp"
#include "cli/commands.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "common/log.hpp"
#include "config/tuned.hpp"
#include "tune/kernel_check.hpp"
#include "tune/masks.hpp"
#include "tune/table.hpp"
#include "tune/tuner.hpp"

namespace sparge::cli {
namespace {

struct EvalArgs {
  std::string dump, tuned, samples, layers, format = "text", save_masks, backend = "cpu", kernel;
  int jobs = 0;
  bool check_kernel = false, dense = false;
};

// --check-kernel: both backends on the same heads, kernel error against the contract's bound.
void run_check(const EvalArgs& a, const CLI::App& sub, Context& ctx) {
  if (sub.count("--backend") > 0) {
    fail(ExitCode::kUsage, "--check-kernel runs both backends (cpu and cuda): drop --backend");
  }
  if (!a.save_masks.empty())
    fail(ExitCode::kUsage, "--save-masks does not apply to --check-kernel");
  if (a.dense != a.tuned.empty()) {
    fail(ExitCode::kUsage, "{}",
         a.dense ? "--dense replaces TUNED.yaml: give one or the other"
                 : "--check-kernel needs TUNED.yaml, or --dense (every head dense, no config)");
  }
  tune::KernelCheckRequest rq;
  rq.eval.dump = a.dump;
  rq.eval.jobs = a.jobs;
  rq.dense = a.dense;
  rq.kernel = a.kernel;
  if (!a.samples.empty()) rq.eval.samples = parse_index_list(a.samples, "--samples");
  if (!a.layers.empty()) rq.eval.layers = parse_index_list(a.layers, "--layers");
  if (!a.dense) {
    std::optional<ref::Geometry> want;
    if (!a.kernel.empty()) want = ref::geometry_by_name(a.kernel);
    rq.eval.config = config::read_tuned(a.tuned, want);
  }
  const auto out = tune::run_kernel_check(std::move(rq));
  fmt::print("{}", tune::render_kernel_check(out, a.format, a.dump, a.tuned));
  if (!out.all_pass) ctx.exit_code = 1;
}

std::string num(double v) { return fmt::format("{:.4f}", v); }

}  // namespace

void register_eval(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<EvalArgs>();
  auto* sub = app.add_subcommand(
      "eval",
      "Check a tuned config on a dump: per layer and head, stage-1 sparsity and error (tau, "
      "theta) and stage 1+2 (with lambda), worst over the samples, against the config's budgets.\n"
      "Use held-out samples (--samples) to see how the thresholds generalise. Exit 1 if any "
      "head misses l1 at stage 1 or l2 at stage 1+2.\n"
      "--check-kernel: the kernel self-check, to trust a new GPU, driver or build on your own "
      "dump. Every head is evaluated with the same thresholds and block geometry by the CPU "
      "reference (the numerics contract) and by the CUDA kernels; both errors are rel-L1 vs "
      "dense fp64 attention, worst over the samples. A head passes when the kernel's error is "
      "<= max(1.1 x cpu, cpu + 0.002) at stage 1 and at stage 1+2; the stage-1 sparsities of "
      "both are shown and flagged (DIFFER, a warning) when they differ by more than max(0.01, "
      "one block). Exit 1 if any head fails, 69 without a CUDA device. The budget is not "
      "checked in this mode. --dense checks every head of the dump dense without a config (the "
      "quantised attention alone).");
  sub->add_option("dump", args->dump, "Q/K/V dump (HDF5)")->required();
  sub->add_option("tuned", args->tuned,
                  "Tuned config (YAML, schema sparge.tuned); not with --check-kernel --dense");
  sub->add_option("--samples", args->samples, "Samples to evaluate, e.g. 2 or 0-3 [default: all]");
  sub->add_option("--layers", args->layers, "Layers to evaluate [default: all in the config]");
  sub->add_option("--format", args->format, "Output: text, json, md, csv")
      ->check(CLI::IsMember({"text", "json", "md", "csv"}))
      ->capture_default_str();
  sub->add_option("--save-masks", args->save_masks,
                  "Also write the predicted stage-1 block masks (uint8 [B, H, nq, nk] per layer "
                  "and sample) to this HDF5 file");
  sub->add_option("--backend", args->backend, "Oracle: cpu (reference) or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  sub->add_option("--kernel", args->kernel,
                  "Require the config to be tuned for this kernel geometry (sm90, sm80)")
      ->check(CLI::IsMember({"sm90", "sm80"}));
  sub->add_option("--jobs", args->jobs,
                  "Heads evaluated in parallel, >= 1 [default: hardware threads]")
      ->check(CLI::Range(1, 4096));
  sub->add_flag("--check-kernel", args->check_kernel,
                "Kernel self-check: CPU reference vs CUDA kernels per head; FAIL when the "
                "kernel's rel-L1 > max(1.1 x cpu, cpu + 0.002) (exit 1; 69 without a GPU)");
  sub->add_flag("--dense", args->dense,
                "With --check-kernel and no TUNED.yaml: every head dense (--kernel picks the "
                "geometry, default the one that runs on this GPU)");

  sub->callback([args, sub, &ctx] {
    const auto& a = *args;
    refuse_output_over_input({"--save-masks", a.save_masks}, {a.dump, a.tuned});
    if (a.check_kernel) return run_check(a, *sub, ctx);
    if (a.dense) fail(ExitCode::kUsage, "--dense goes with --check-kernel");
    if (a.tuned.empty()) fail(ExitCode::kUsage, "eval needs DUMP and TUNED.yaml");
    std::optional<ref::Geometry> want;
    if (!a.kernel.empty()) want = ref::geometry_by_name(a.kernel);
    tune::EvalRequest rq;
    rq.dump = a.dump;
    rq.config = config::read_tuned(a.tuned, want);
    rq.config_source = a.tuned;
    rq.backend = a.backend;
    rq.jobs = a.jobs;
    if (!a.samples.empty()) rq.samples = parse_index_list(a.samples, "--samples");
    if (!a.layers.empty()) rq.layers = parse_index_list(a.layers, "--layers");
    auto out = tune::run_eval(rq);
    const auto& b = rq.config.budget;
    // The stage-1 sparsity the tuner measured on its calibration samples for this head (NaN:
    // not in the file). A miss at a sparsity well above it means a sample unlike the
    // calibration ones (reports/tune-real/holdout-dit.md).
    auto tuned_sparsity = [&](int layer, int head) {
      const config::TunedLayer* l = rq.config.find_layer(layer);
      return l && head < static_cast<int>(l->sparsity_stage1.size())
                 ? static_cast<double>(l->sparsity_stage1[head])
                 : std::nan("");
    };

    if (a.format == "json") {
      nlohmann::json rows = nlohmann::json::array();
      for (const auto& e : out.heads) {
        const double tuned = tuned_sparsity(e.layer, e.head);
        rows.push_back(
            {{"layer", e.layer},
             {"head", e.head},
             {"sparse", e.sparse},
             {"tau", e.candidate.tau},
             {"theta", e.candidate.theta},
             {"lambda", std::isinf(e.candidate.lambda) ? nlohmann::json(nullptr)
                                                       : nlohmann::json(e.candidate.lambda)},
             {"sparsity_stage1", e.sparsity_stage1},
             {"tuned_sparsity_stage1",
              std::isnan(tuned) ? nlohmann::json(nullptr) : nlohmann::json(tuned)},
             {"sparsity_stage12", e.sparsity_stage12},
             {"error_stage1", e.error_stage1},
             {"error_stage12", e.error_stage12},
             {"pass", e.pass}});
      }
      nlohmann::json doc = {{"dump", a.dump},
                            {"tuned", a.tuned},
                            {"samples", out.samples_used},
                            {"budget", {{"l1", b.l1}, {"l2", b.l2}}},
                            {"pass", out.all_pass},
                            {"heads", rows}};
      fmt::print("{}\n", doc.dump(2));
    } else {
      tune::Table t;
      t.columns = {"layer",  "head",   "sparse", "stage1_sparsity", "stage12_sparsity",
                   "err_l1", "err_l2", "status"};
      for (const auto& e : out.heads) {
        t.rows.push_back({std::to_string(e.layer), std::to_string(e.head),
                          e.sparse ? "yes" : "dense", num(e.sparsity_stage1),
                          num(e.sparsity_stage12), num(e.error_stage1), num(e.error_stage12),
                          e.pass ? "ok" : "MISS"});
      }
      fmt::print("{}", t.render(a.format));
      if (a.format == "text") {
        double s1 = 0, s12 = 0, e1 = 0, e12 = 0;
        for (const auto& e : out.heads) {
          s1 += e.sparsity_stage1 / out.heads.size();
          s12 += e.sparsity_stage12 / out.heads.size();
          e1 = std::max(e1, e.error_stage1);
          e12 = std::max(e12, e.error_stage12);
        }
        fmt::print(
            "mean sparsity stage1 {:.4f} stage12 {:.4f}; worst error l1 {:.4f} (budget "
            "{}) l2 {:.4f} (budget {}); {}\n",
            s1, s12, e1, b.l1, e12, b.l2, out.all_pass ? "PASS" : "FAIL");
      }
    }
    if (!a.save_masks.empty()) {
      std::vector<int> layers;
      for (const auto& e : out.heads) {
        if (layers.empty() || layers.back() != e.layer) layers.push_back(e.layer);
      }
      tune::save_masks(a.dump, rq.config, layers, rq.samples, a.save_masks);
      log::info("wrote masks to {}", a.save_masks);
    }
    if (!out.all_pass) {
      for (const auto& e : out.heads) {
        if (!e.pass) {
          const double tuned = tuned_sparsity(e.layer, e.head);
          log::warn(
              "layer {} head {} misses its budget: error l1 {:.4f} (budget {}), l2 {:.4f} "
              "(budget {}); stage-1 sparsity {:.3f}{}",
              e.layer, e.head, e.error_stage1, b.l1, e.error_stage12, b.l2, e.sparsity_stage1,
              std::isnan(tuned)
                  ? std::string()
                  : fmt::format(" (tuned on the calibration samples: {:.3f})", tuned));
        }
      }
      ctx.exit_code = 1;
    }
  });
}

}  // namespace sparge::cli
