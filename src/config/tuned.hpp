// Tuned config, schema "sparge.tuned" v1 (documented in docs/tuned-config.md): the
// per-layer, per-head thresholds a tuning run found, with provenance, kernel geometry, budgets
// and search space. Written by `sparge tune`, read by `sparge eval`, `sparge config`, the
// runtime and the Python loader.
#pragma once

#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "reference/reference.hpp"

namespace sparge::config {

inline constexpr const char* kTunedSchema = "sparge.tuned";
inline constexpr int kTunedSchemaVersion = 1;

// The part of a job array a `tune --shard I/N` config holds: the layers at positions index,
// index + count, ... of `layers` (every layer the run selected). `sparge merge` checks that its
// parts are exactly shards 0..count-1 of one selection; a single run has none.
struct Shard {
  int index = 0, count = 1;
  std::vector<int> layers;
  friend bool operator==(const Shard&, const Shard&) = default;
};

struct Provenance {
  std::string tool = "sparge";
  std::string version;    // SPARGE_VERSION_STRING
  std::string git;        // SPARGE_GIT_SHA
  std::string backend;    // "cpu" or "cuda"
  std::string device;     // what the backend ran on
  std::string dump;       // dump path as given on the command line
  std::string dump_hash;  // "<algorithm>:<hex>", see io_hash.hpp
  std::string model_id;
  std::vector<int> samples;                // calibration sample indices (empty: all)
  std::optional<Shard> shard;              // only in the part of a `tune --shard` run
  std::optional<std::string> created_utc;  // only with `tune --timestamp`: breaks byte identity
};

struct Budget {
  std::string metric = "rel_l1";
  double l1 = 0.05;  // stage 1 (SpargeAttn l1)
  double l2 = 0.06;  // stage 1 + 2 (SpargeAttn pv_l1)
};

struct SearchSpace {
  std::string granularity = "head";  // "head" or "layer"
  std::vector<float> theta_grid;
  float tau_tol = 0.001f;
  float lambda_min = -32.0f, lambda_max = 0.0f, lambda_tol = 0.125f;
  bool tune_lambda = true;
  double min_sparsity = 0.05;
  double margin = 0.0;  // the search targeted (1 - margin) x budget (see tune/search.hpp)
  // Held-out rule (tune/search.hpp SearchOptions::holdout): "spread" or "edge". Configs written
  // before issue 16 have no key: they were tuned at the edge.
  std::string holdout = "edge";
  double spread_k = 0.0;
  double spread_floor = 0.0;  // absent before it existed: the samples' own spread only
  double tau_plateau = 0.0;   // τ plateau guard (SearchOptions::tau_plateau); absent: off
  double sparsity_cap = 0.0;  // SearchOptions::sparsity_cap; absent: off
  // Stage-1 parametrisation: "cdf" (TopCdf mass τ) or "topk" (kept fraction per row, the
  // layers' `topk` arrays). Absent before issue 16: cdf.
  std::string mode = "cdf";
};

// Token order the thresholds were tuned in (issue 16): "hilbert" = the visual tokens of a
// T x H x W grid reordered along ref::hilbert_permutation (text tokens in place) before
// prediction and kernel, the output put back after; "none" = the dump's order. A mask predicted
// in one order means other blocks in the other, so a run in the other order rejects the config.
struct Permutation {
  std::string order = "none";  // "none" or "hilbert"
  std::array<int, 3> grid{0, 0, 0};
  int text_prefix = 0, text_suffix = 0;
  bool hilbert() const { return order == "hilbert"; }
  friend bool operator==(const Permutation&, const Permutation&) = default;
};
// "hilbert grid 6x16x24, text 64+0" / "none", for messages.
std::string describe(const Permutation& p);
// Throws Error(kConfigError) "<source>: permutation: tuned with X, but this run uses Y: ..."
// when `run` differs from what the config records.
void check_permutation(const Permutation& tuned, const Permutation& run, const std::string& source);

struct Kernel {
  ref::Geometry geometry;  // name, block_q, block_k, warp_rows, pv
  bool causal = false;
  bool sink = false;
};

struct TunedLayer {
  int layer = 0;
  std::string module;
  // One entry per query head.
  std::vector<float> tau;  // [0, 1]; 1 for every head when topk is given
  // Top-k mode (search.mode topk): fraction of K blocks each Q block row keeps, in [0, 1];
  // empty = TopCdf mode. A consumer that ignores it sees τ = 1 and keeps every block.
  std::vector<float> topk;
  std::vector<float> theta;   // [-1, 1]
  std::vector<float> lambda;  // <= 0 or -inf
  std::vector<bool> sparse;   // false: run the head dense (tau = 1, theta = 1 are written too)
  std::vector<float> sparsity_stage1, sparsity_stage12;  // achieved on the calibration samples
  std::vector<float> error_stage1, error_stage12;        // worst rel-L1 over those samples
  // Held-out error the tuner predicts at these thresholds (SearchSpace::holdout); empty in
  // configs written before issue 16.
  std::vector<float> expected_stage1, expected_stage12;
  // Per head, the most stage-1 sparsity the prediction may reach (ref::Thresholds::sparsity_cap;
  // 1 for dense heads); empty: none (configs tuned before it, or with the cap off).
  std::vector<float> sparsity_cap;
  int heads() const { return static_cast<int>(tau.size()); }
};

struct TunedConfig {
  int schema_version = kTunedSchemaVersion;
  Provenance provenance;
  Kernel kernel;
  Budget budget;
  SearchSpace search;
  Permutation permutation;  // absent in configs written before issue 16: "none"
  std::vector<TunedLayer> layers;
  bool imported = false;  // read from SpargeAttn spellings (cdfthreshd, ...): not yet evaluated
  const TunedLayer* find_layer(int layer) const;
};

// Shortest round-trip text of a float ("0.1", "1.0e-05", ".inf", "-.inf"), always readable as a
// float by YAML 1.1 and 1.2 parsers (a '.' is added where the shortest form has none).
std::string format_float(float v);
std::string format_float(double v) = delete;  // thresholds are float: say so at the call site

// Deterministic text: same config => same bytes.
std::string to_yaml(const TunedConfig& cfg);
// Atomic write (temp + rename). Throws Error(kIoError).
void write_tuned(const std::filesystem::path& path, const TunedConfig& cfg);

// Parses and validates. `source` names the file in error messages. If `expected_kernel` is given
// the file's geometry must equal it. Throws Error(kConfigError) "<source>: <key>: <fault>".
TunedConfig parse_tuned(const std::string& text, const std::string& source,
                        const std::optional<ref::Geometry>& expected_kernel = std::nullopt);
// Missing file: Error(kNoInput).
TunedConfig read_tuned(const std::filesystem::path& path,
                       const std::optional<ref::Geometry>& expected_kernel = std::nullopt);

std::string pv_numerics_name(ref::PvNumerics pv);

// Joins the configs of `sparge tune --shard i/n` runs: every part must have been tuned with the
// same inputs, kernel, budget and search (everything but the layers identical), and no layer may
// appear twice; layers come out in ascending order. The result equals a single-machine run over
// the union of the layers. `sources` name the parts in errors (Error kConfigError). The parts
// must be shards 0..N-1 of one split (provenance.shard): a missing, foreign or unrecorded shard is
// refused unless `allow_partial` (then only warned about).
TunedConfig merge_tuned(const std::vector<TunedConfig>& parts,
                        const std::vector<std::string>& sources, bool allow_partial = false);

}  // namespace sparge::config
