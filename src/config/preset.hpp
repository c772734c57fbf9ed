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

}  // namespace sparge::config
