// Search presets, schema "sparge.search" v1 (configs/presets/*.yaml): budgets and search space
// per model family, the paper's budgets (video 0.05/0.06, image 0.07/0.08, llm 0.08/0.09).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace sparge::config {

struct Preset {
  std::string name;
  std::string description;
  std::optional<double> l1, l2;
  std::optional<std::vector<float>> theta_grid;
  std::optional<float> tau_tol, lambda_min, lambda_max, lambda_tol;
  std::optional<double> min_sparsity;
  std::optional<double> margin;
  std::optional<std::string> granularity;
};

// NAME (looked up in SPARGE_PRESET_DIR, else <source>/configs/presets) or a path to a .yaml.
// Missing: Error(kUsage) listing the presets found; invalid: Error(kConfigError).
Preset load_preset(const std::string& name_or_path);
std::filesystem::path preset_dir();

// The preset -> search options merge of `sparge tune --preset`: sets each search field the preset
// names on `search` and leaves the others as they are; explicit flags are applied after it and win.
// `search` is a tune::SearchOptions (a template, so that config stays below tune); the preset's
// granularity is a tune request's, not a search option, and is left to the caller.
template <class SearchOptions>
void apply_preset(const Preset& p, SearchOptions& search) {
  if (p.l1) search.l1 = *p.l1;
  if (p.l2) search.l2 = *p.l2;
  if (p.theta_grid) search.theta_grid = *p.theta_grid;
  if (p.tau_tol) search.tau_tol = *p.tau_tol;
  if (p.lambda_min) search.lambda_min = *p.lambda_min;
  if (p.lambda_max) search.lambda_max = *p.lambda_max;
  if (p.lambda_tol) search.lambda_tol = *p.lambda_tol;
  if (p.min_sparsity) search.min_sparsity = *p.min_sparsity;
  if (p.margin) search.margin = *p.margin;
}

}  // namespace sparge::config
