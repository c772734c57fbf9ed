#include "config/preset.hpp"

#include <yaml-cpp/yaml.h>

#include <cstdlib>

#include "common/error.hpp"
#include "common/io_guard.hpp"

namespace sparge::config {

std::filesystem::path preset_dir() {
  if (const char* env = std::getenv("SPARGE_PRESET_DIR"); env && *env) return env;
  return std::filesystem::path(SPARGE_SOURCE_DIR) / "configs" / "presets";
}

Preset load_preset(const std::string& arg) {
  std::filesystem::path path = arg;
  const bool is_path = arg.find('/') != std::string::npos || path.extension() == ".yaml";
  if (!is_path) path = preset_dir() / (arg + ".yaml");
  if (!std::filesystem::exists(path)) {
    std::string known;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(preset_dir(), ec)) {
      if (e.path().extension() == ".yaml")
        known += (known.empty() ? "" : ", ") + e.path().stem().string();
    }
    fail(ExitCode::kUsage, "--preset {}: no such preset ({} has: {})", arg, preset_dir().string(),
         known.empty() ? "none" : known);
  }
  const std::string src = path.string();
  auto bad = [&](const std::string& key, const std::string& fault) {
    fail(ExitCode::kConfigError, "{}: {}: {}", src, key, fault);
  };
  YAML::Node root;
  try {
    root = YAML::Load(read_text_file(path, "preset (sparge.search YAML)"));
  } catch (const YAML::Exception& e) {
    fail(ExitCode::kConfigError, "{}: line {}: {}", src, e.mark.line + 1, e.msg);
  }
  Preset p;
  try {
    if (!root.IsMap()) bad("(document)", "expected a mapping");
    if (!root["schema"] || root["schema"].as<std::string>() != "sparge.search") {
      bad("schema", "expected sparge.search");
    }
    if (!root["schema_version"] || root["schema_version"].as<int>() != 1) {
      bad("schema_version", "missing or not 1");
    }
    p.name = root["name"] ? root["name"].as<std::string>() : path.stem().string();
    if (root["description"]) p.description = root["description"].as<std::string>();
    if (auto b = root["budget"]) {
      if (b["l1"]) p.l1 = b["l1"].as<double>();
      if (b["l2"]) p.l2 = b["l2"].as<double>();
    }
    if (auto s = root["search"]) {
      if (s["theta_grid"]) p.theta_grid = s["theta_grid"].as<std::vector<float>>();
      if (s["tau_tol"]) p.tau_tol = s["tau_tol"].as<float>();
      if (s["lambda_range"]) {
        auto r = s["lambda_range"].as<std::vector<float>>();
        if (r.size() != 2) bad("search.lambda_range", "expected [min, max]");
        p.lambda_min = r[0];
        p.lambda_max = r[1];
      }
      if (s["lambda_tol"]) p.lambda_tol = s["lambda_tol"].as<float>();
      if (s["min_sparsity"]) p.min_sparsity = s["min_sparsity"].as<double>();
      if (s["margin"]) p.margin = s["margin"].as<double>();
      if (s["granularity"]) p.granularity = s["granularity"].as<std::string>();
    }
  } catch (const YAML::Exception& e) {
    fail(ExitCode::kConfigError, "{}: line {}: {}", src, e.mark.line + 1, e.msg);
  }
  return p;
}

}  // namespace sparge::config
