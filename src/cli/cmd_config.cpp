// `sparge config show|validate FILE`: inspect or check a tuned config (exit 78 when invalid).
#include <fmt/format.h>

#include <cmath>

#include "cli/commands.hpp"
#include "common/error.hpp"
#include "config/tuned.hpp"
#include "tune/table.hpp"

namespace sparge::cli {

void register_config(CLI::App& app, Context&) {
  auto* cfg =
      app.add_subcommand("config", "Inspect and validate tuned configs (sparge.tuned YAML)");
  cfg->require_subcommand(1);

  struct Args {
    std::string file, kernel, format = "text";
  };
  auto args = std::make_shared<Args>();

  auto* show = cfg->add_subcommand(
      "show", "Print a summary of a tuned config: provenance, kernel, budgets, per-layer sparsity");
  show->add_option("file", args->file, "Tuned config (YAML)")->required();
  show->add_option("--format", args->format, "Per-layer table format: text, md, csv")
      ->check(CLI::IsMember({"text", "md", "csv"}))
      ->capture_default_str();
  show->callback([args] {
    auto c = config::read_tuned(args->file);
    const auto& p = c.provenance;
    const auto& g = c.kernel.geometry;
    fmt::print("{}: {} v{}\n", args->file, config::kTunedSchema, c.schema_version);
    fmt::print("  tool {} {} (git {}), backend {} on {}\n", p.tool, p.version, p.git, p.backend,
               p.device);
    fmt::print("  dump {} ({}){}\n", p.dump, p.dump_hash,
               p.model_id.empty() ? "" : ", model " + p.model_id);
    fmt::print("  kernel {}: {}x{} blocks, warp rows {}, P.V {}, causal {}, sink {}\n", g.name,
               g.block_q, g.block_k, g.warp_rows, config::pv_numerics_name(g.pv), c.kernel.causal,
               c.kernel.sink);
    fmt::print("  budget {}: l1 {} l2 {}; granularity {}\n", c.budget.metric, c.budget.l1,
               c.budget.l2, c.search.granularity);
    tune::Table t;
    t.columns = {"layer",           "module",           "heads",        "sparse",
                 "stage1_sparsity", "stage12_sparsity", "worst_err_l1", "worst_err_l2"};
    for (const auto& l : c.layers) {
      int sparse = 0;
      for (bool b : l.sparse) sparse += b;
      auto mean = [](const std::vector<float>& v) {
        if (v.empty()) return std::string("-");
        double s = 0;
        for (float x : v) s += x;
        return fmt::format("{:.4f}", s / v.size());
      };
      auto worst = [](const std::vector<float>& v) {
        if (v.empty()) return std::string("-");
        float w = 0;
        for (float x : v) w = std::max(w, x);
        return fmt::format("{:.4f}", w);
      };
      t.rows.push_back({std::to_string(l.layer), l.module.empty() ? "-" : l.module,
                        std::to_string(l.heads()), std::to_string(sparse), mean(l.sparsity_stage1),
                        mean(l.sparsity_stage12), worst(l.error_stage1), worst(l.error_stage12)});
    }
    fmt::print("{}", t.render(args->format));
  });

  auto* validate = cfg->add_subcommand(
      "validate", "Check a tuned config's schema, ranges and array lengths (exit 78 if invalid)");
  validate->add_option("file", args->file, "Tuned config (YAML)")->required();
  validate
      ->add_option("--kernel", args->kernel,
                   "Also require it to be tuned for this kernel geometry (sm90, sm80)")
      ->check(CLI::IsMember({"sm90", "sm80"}));
  validate->callback([args] {
    std::optional<ref::Geometry> want;
    if (!args->kernel.empty()) want = ref::geometry_by_name(args->kernel);
    auto c = config::read_tuned(args->file, want);
    int heads = 0;
    for (const auto& l : c.layers) heads += l.heads();
    fmt::print("{}: valid ({} layers, {} heads, kernel {}){}\n", args->file, c.layers.size(), heads,
               c.kernel.geometry.name, c.imported ? "; imported SpargeAttn thresholds" : "");
  });
}

}  // namespace sparge::cli
