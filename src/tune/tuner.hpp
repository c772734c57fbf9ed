// Drivers behind `sparge tune` and `sparge eval`: read the calibration samples of each head from
// a dump, run the search (or evaluate given thresholds) on a backend's oracles, in parallel over
// heads, with a resumable journal.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/tuned.hpp"
#include "io/dump.hpp"
#include "tune/search.hpp"
#include "tune/token_order.hpp"

namespace sparge::tune {

struct TuneRequest {
  std::filesystem::path dump;
  std::filesystem::path output;                    // the tuned YAML (the journal lives beside it)
  std::optional<std::filesystem::path> state_dir;  // journal folder instead of beside the output
  std::optional<std::vector<int>> layers;          // default: every layer of the dump
  std::optional<std::vector<int>> samples;         // default: every sample of each layer
  // (i, n) with 0 <= i < n: only the layers at positions i, i + n, i + 2n, ... of the selected
  // layers, so n jobs of a job array split a model; `sparge merge` joins their YAMLs into the
  // single-run result. The CLI checks the range (cli::parse_shard); run_tune asserts it.
  std::optional<std::pair<int, int>> shard;
  SearchOptions search;
  std::string granularity = "head";  // "head" or "layer" (one set of thresholds per layer)
  std::string backend = "cpu";
  ref::Geometry geometry = ref::hopper_geometry();
  std::optional<bool> causal, sink;  // default: the dump's attributes
  // Reorder the visual tokens of a gridded, non-causal dump along the Hilbert curve before
  // prediction and kernel (tune/token_order.hpp); recorded in the config. --no-hilbert: false.
  bool hilbert = true;
  int jobs = 0;  // heads tuned concurrently; 0 = hardware concurrency
  // GPUs the backend spreads heads over (OracleBackend::use_devices); empty = the current one.
  // The default jobs count scales with them.
  std::vector<int> devices;
  bool resume = false;     // continue from the journal (must match inputs and flags)
  bool timestamp = false;  // add provenance.created_utc (breaks byte identity)
  bool progress = true;
};

struct TuneOutcome {
  config::TunedConfig config;
  std::vector<std::string> infeasible;  // "layer 3 head 5 (dense error 0.071 > l1 0.05)"
  long heads_resumed = 0;
  // Per head, layer-major: {layer, head, sparse, chosen {tau, theta, lambda}, expected_stage1,
  // expected_stage12, points: [every evaluated candidate: tau, theta, lambda (null = -inf),
  // stage, error (per calibration sample), error_worst, predicted, sparsity_stage1,
  // sparsity_stage12, sparsity_stage1_per_sample, pass]}. With --granularity layer the layer's
  // points are on its head 0. Schema in docs/tuned-config.md ("Search trace").
  nlohmann::json trace = nlohmann::json::array();
};

// Tunes, writes request.output atomically and removes the journal. Throws sparge::Error.
TuneOutcome run_tune(const TuneRequest& request);

// Path of the journal for a request (beside the output or in state_dir).
std::filesystem::path journal_path(const TuneRequest& request);

struct EvalRequest {
  std::filesystem::path dump;
  config::TunedConfig config;
  std::optional<std::vector<int>> layers;   // default: every layer of the config
  std::optional<std::vector<int>> samples;  // default: every sample of each layer
  std::string backend = "cpu";
  int jobs = 0;
  bool progress = true;
  // Names the config in errors (a token order the dump cannot provide: exit 78).
  std::string config_source = "tuned config";
};

struct EvalHead {
  int layer = 0, head = 0;
  bool sparse = true;
  Candidate candidate;
  double sparsity_stage1 = 0, sparsity_stage12 = 0;  // means over samples
  double error_stage1 = 0, error_stage12 = 0;        // worst over samples
  bool pass = true;                                  // error_stage1 <= l1 and error_stage12 <= l2
};

struct EvalOutcome {
  std::vector<EvalHead> heads;  // layer-major, head order
  std::vector<int> samples_used;
  bool all_pass = true;
};

EvalOutcome run_eval(const EvalRequest& request);

// Largest head dim a sparge kernel runs (kernels/api.h: 64 and 128 natively, smaller ones zero
// padded). Tune and eval refuse a layer with a larger one up front (exit 65): thresholds for a
// geometry no kernel has could never be used.
inline constexpr int kMaxHeadDim = 128;
void check_head_dim(const io::LayerInfo& layer, const std::filesystem::path& dump);

}  // namespace sparge::tune
