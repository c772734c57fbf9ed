#include "report/tuned_compare.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "common/log.hpp"

namespace sparge::report {

namespace {

std::optional<double> mean_of(const std::vector<float>& v) {
  if (v.empty()) return std::nullopt;
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}
std::optional<double> max_of(const std::vector<float>& v) {
  if (v.empty()) return std::nullopt;
  return static_cast<double>(*std::max_element(v.begin(), v.end()));
}
std::string pair_text(const std::optional<double>& a, const std::optional<double>& b,
                      const char* spec) {
  auto one = [&](const std::optional<double>& x) {
    return x ? fmt::format(fmt::runtime(spec), *x) : std::string("-");
  };
  return one(a) + "→" + one(b);
}

}  // namespace

std::string LayerComparison::status() const {
  if (!new_layer) return "⚫ GONE";
  if (!old_layer) return over_budget ? "🔴 OVER BUDGET" : "🆕 NEW";
  if (over_budget) return "🔴 OVER BUDGET";
  if (less_sparse) return "🔴 LESS SPARSE";
  return "⚪ OK";
}

int TunedComparison::failures() const {
  return static_cast<int>(std::count_if(layers.begin(), layers.end(),
                                        [](const LayerComparison& l) { return l.failed(); }));
}

TunedComparison compare_tuned(const config::TunedConfig& old_cfg,
                              const config::TunedConfig& new_cfg, double threshold,
                              const std::string& old_name, const std::string& new_name,
                              bool allow_gone) {
  const auto& oh = old_cfg.provenance.dump_hash;
  const auto& nh = new_cfg.provenance.dump_hash;
  if (!oh.empty() && !nh.empty() && oh != nh) {
    log::warn(
        "{} and {} were tuned on different dumps ({} {}, {} {}): their sparsity and error "
        "measure different data",
        old_name, new_name, old_cfg.provenance.dump, oh, new_cfg.provenance.dump, nh);
  }
  TunedComparison cmp;
  cmp.old_cfg = &old_cfg;
  cmp.new_cfg = &new_cfg;
  cmp.old_name = old_name;
  cmp.new_name = new_name;
  std::map<int, LayerComparison> by_layer;
  for (const auto& l : old_cfg.layers) {
    auto& c = by_layer[l.layer];
    c.layer = l.layer;
    c.module = l.module;
    c.old_layer = &l;
    c.old_sparsity = mean_of(l.sparsity_stage1);
    c.old_sparsity12 = mean_of(l.sparsity_stage12);
    c.old_error = max_of(l.error_stage1);
    c.old_error12 = max_of(l.error_stage12);
  }
  for (const auto& l : new_cfg.layers) {
    auto& c = by_layer[l.layer];
    c.layer = l.layer;
    if (c.module.empty()) c.module = l.module;
    c.new_layer = &l;
    c.new_sparsity = mean_of(l.sparsity_stage1);
    c.new_sparsity12 = mean_of(l.sparsity_stage12);
    c.new_error = max_of(l.error_stage1);
    c.new_error12 = max_of(l.error_stage12);
    for (int h = 0; h < l.heads(); ++h) {
      const bool e1 =
          h < static_cast<int>(l.error_stage1.size()) && l.error_stage1[h] > new_cfg.budget.l1;
      const bool e12 =
          h < static_cast<int>(l.error_stage12.size()) && l.error_stage12[h] > new_cfg.budget.l2;
      if (e1 || e12) ++c.heads_over_budget;
    }
    c.over_budget = c.heads_over_budget > 0;
  }
  for (auto& [idx, c] : by_layer) {
    c.gone_fails = !c.new_layer && !allow_gone;
    if (c.old_sparsity && c.new_sparsity && *c.old_sparsity > 0) {
      c.less_sparse = (*c.old_sparsity - *c.new_sparsity) / *c.old_sparsity > threshold;
    }
    cmp.layers.push_back(c);
  }
  std::stable_sort(
      cmp.layers.begin(), cmp.layers.end(),
      [](const LayerComparison& a, const LayerComparison& b) { return a.failed() > b.failed(); });
  return cmp;
}

std::string render_tuned_markdown(const TunedComparison& cmp, double threshold) {
  auto prov = [](const config::TunedConfig& c) {
    return fmt::format("git {} · backend {} · device {} · kernel {} · budget l1 {:g} / l2 {:g}",
                       c.provenance.git, c.provenance.backend, c.provenance.device,
                       c.kernel.geometry.name, c.budget.l1, c.budget.l2);
  };
  std::string out =
      fmt::format("## sparge report (tuned) — {} vs {}\n\n", cmp.new_name, cmp.old_name);
  out += fmt::format("- old `{}`: {}\n", cmp.old_name, prov(*cmp.old_cfg));
  out += fmt::format("- new `{}`: {}\n\n", cmp.new_name, prov(*cmp.new_cfg));
  out += fmt::format(
      "Rule: a layer fails when a head of the new config exceeds its budget (stage-1 rel-L1 > l1 "
      "or stage 1+2 > l2), or its mean stage-1 sparsity fell by more than {:g}% of the old "
      "value.\n\n",
      100 * threshold);
  out += fmt::format("**{} layers · {} failing**\n\n", cmp.layers.size(), cmp.failures());
  out +=
      "| layer | module | heads over budget | worst rel-L1 s1 old→new | worst rel-L1 s1+2 old→new "
      "| mean sparsity s1 old→new | Δ s1 | mean sparsity s1+2 old→new | status |\n"
      "|---|---|---|---|---|---|---|---|---|\n";
  for (const auto& l : cmp.layers) {
    std::string delta = "-";
    if (l.old_sparsity && l.new_sparsity) {
      delta = fmt::format("{:+.3f}", *l.new_sparsity - *l.old_sparsity);
    }
    out += fmt::format(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", l.layer,
        l.module.empty() ? "-" : l.module,
        l.new_layer ? fmt::format("{}/{}", l.heads_over_budget, l.new_layer->heads()) : "-",
        pair_text(l.old_error, l.new_error, "{:.4f}"),
        pair_text(l.old_error12, l.new_error12, "{:.4f}"),
        pair_text(l.old_sparsity, l.new_sparsity, "{:.3f}"), delta,
        pair_text(l.old_sparsity12, l.new_sparsity12, "{:.3f}"), l.status());
  }
  return out;
}

}  // namespace sparge::report
