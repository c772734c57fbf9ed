// `sparge report OLD.yaml NEW.yaml`: per-layer comparison of two tuned configs (schema
// "sparge.tuned"): mean achieved sparsity and worst error, old vs new.
//
// A layer fails when, in the new config, a head's error exceeds the new budget (stage 1 error >
// l1 or stage 1+2 error > l2), or when its mean stage-1 sparsity dropped by more than the
// threshold relative to the old one ((old - new) / old > threshold), or when it is gone (in the
// old config, not in the new one) unless `allow_gone`. Configs tuned on different dumps
// (provenance.dump_hash) are compared with a warning: their numbers measure different data.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/tuned.hpp"

namespace sparge::report {

struct LayerComparison {
  int layer = 0;
  std::string module;
  const config::TunedLayer* old_layer = nullptr;
  const config::TunedLayer* new_layer = nullptr;
  std::optional<double> old_sparsity, new_sparsity;      // mean stage-1 over heads
  std::optional<double> old_sparsity12, new_sparsity12;  // mean stage 1+2
  std::optional<double> old_error, new_error;            // worst stage-1 rel-L1 over heads
  std::optional<double> old_error12, new_error12;        // worst stage 1+2
  int heads_over_budget = 0;                             // in the new config
  bool over_budget = false, less_sparse = false;
  bool gone_fails = false;  // in the old config only, and gone layers are not allowed
  std::string status() const;
  bool failed() const { return over_budget || less_sparse || gone_fails; }
};

struct TunedComparison {
  const config::TunedConfig* old_cfg = nullptr;
  const config::TunedConfig* new_cfg = nullptr;
  std::string old_name, new_name;
  std::vector<LayerComparison> layers;  // failures first, then by layer index
  int failures() const;
};

TunedComparison compare_tuned(const config::TunedConfig& old_cfg,
                              const config::TunedConfig& new_cfg, double threshold,
                              const std::string& old_name, const std::string& new_name,
                              bool allow_gone = false);
std::string render_tuned_markdown(const TunedComparison& cmp, double threshold);

}  // namespace sparge::report
