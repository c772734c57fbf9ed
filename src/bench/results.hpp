// Bench results: the rows and environment of one `sparge bench` run, their JSON form (schema
// "sparge.bench", version 2, docs/bench.md) and the text / Markdown / CSV tables.
//
// Version 2 added rows on other inputs than U(-1, 1) (`data`: the real-image accuracy rows and
// their N(0, 1) twins) and rows are matched with `data` in their key, so a version-1 reader
// would pair them wrongly: hence a major bump, which such a reader refuses with a clear error.
// This reader reads version 1 too (every v1 row is `data: uniform`, accuracy vs cuDNN).
//
// A row's key `name` and its count `sparsity.kept_blocks` were `variant` and `executed_blocks` in
// files written before issue 20 (reports/, tests/fixtures/); the reader takes either spelling.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "bench/stats.hpp"

namespace sparge::bench {

inline constexpr const char* kBenchSchema = "sparge.bench";
inline constexpr int kBenchSchemaVersion = 2;
inline constexpr int kBenchSchemaOldestRead = 1;

struct GpuInfo {
  int index = 0;
  std::string name;  // e.g. "NVIDIA H100 80GB HBM3"
  std::string sm;    // compute capability, "9.0"
  int sm_count = 0;
  int64_t l2_bytes = 0;
  int64_t memory_bytes = 0;
  double clock_nominal_mhz = 0;   // cudaDevAttrClockRate (max boost)
  double clock_measured_mhz = 0;  // probe kernel, after the first warm-up (0 = not measured)
  double memory_clock_mhz = 0;
  bool ecc = false;
};

struct Environment {
  std::vector<GpuInfo> gpus;  // devices that ran cases
  std::string driver;         // "13.0"
  std::string cuda_runtime;
  std::string torch;
  std::string sparge_version;
  std::string git;
  std::string host;
  std::string date;  // ISO 8601 UTC
  std::string command;
  // The Hopper kernel --kernel sm90.NAME forced at every head dim ("warpgroup", ...); empty:
  // each head dim ran its default. Results of older builds name a numbered variant ("v9").
  std::string sm90_kernel;
  std::string gpu_name() const { return gpus.empty() ? std::string("unknown") : gpus[0].name; }
};

// " (sm90.NAME)" when e records a forced Hopper kernel, else "". Appended to the git commit
// wherever a result names its build: a forced kernel is other code than the default.
std::string kernel_tag(const Environment& e);
// The name a numbered Hopper variant of older results has now (9 -> "pingpong", 12 ->
// "warpgroup", 4 -> "serial", 6 -> "grid"; others "vN", removed since).
std::string sm90_kernel_of_variant(int variant);

struct Timing {
  SampleStats stats;
  std::vector<std::string> notes;  // "spread 7.2% > 5%", "SM clock 1410 MHz < 75% of 1980"
  double clock_mhz = 0;            // SM clock by the probe right after the samples (0: none)
};

struct Row {
  std::string name;  // what ran: our kernel ("sparge_fwd.sm90.hd128.i8f8"), "sdpa_cudnn", ...
  Shape shape;
  bool causal = false;
  double density = 1.0;  // requested
  std::string dtype = "fp16";
  std::string mask = "random";  // "random" | "dense" | "predicted"
  // Inputs: "uniform" (U(-1, 1), every shape case), "normal" (N(0, 1)), "real-video" /
  // "real-text" (generated from photographs), "dump:<file>" (a user's dump, --real-data FILE).
  std::string data = "uniform";
  uint64_t seed = 0;
  int device = 0;
  SampleStats time;  // of the row's own timed region (kernel only, or the SDPA call)
  // Realised sparsity: stage 1 = 1 - kept/valid blocks; stage 1+2 counts skipped P.V products
  // too (absent when the kernel did not report them).
  std::optional<double> sparsity_stage1, sparsity_stage12;
  // Causally valid block pairs and the pairs the kernel visited (the LUT's kept pairs, whose QKᵀ
  // ran; stage-2 skips are not subtracted), summed over B and H.
  int64_t valid_blocks = 0, kept_blocks = 0;
  std::optional<double> prediction_ms, quantisation_ms, end_to_end_ms;
  // runtime::prepare (quantisation and prediction overlapped as end-to-end runs them), and the
  // relative spread (IQR / median) of its samples, so that `sparge report` can tell a change of
  // the preparation from its noise (absent in files written before it was recorded).
  std::optional<double> prepare_ms, prepare_spread;
  std::optional<double> dense_ms, cudnn_ms, flash_ms;  // baselines of the same (shape, causal)
  // The SM clock (MHz) a probe kernel measured right after the row's own samples: two runs of
  // the same code at clocks a few % apart differ by that much, which `sparge report` points out
  // (absent in files written before it was recorded, and when the probe is off).
  std::optional<double> clock_mhz;
  // Accuracy of our output (dense-mask rows only) against `accuracy_reference`: "sdpa_cudnn"
  // (the cuDNN output on the same fp16 inputs; rel_l1 over the whole tensor) or "fp64" (dense
  // attention in fp64 of the stored values; rel_l1 = worst over (batch, head) of the per-head
  // rel-L1, rel_l1_mean = their mean: the accuracy rows).
  std::optional<double> rel_l1, cosine, rel_l1_mean;
  std::string accuracy_reference = "sdpa_cudnn";
  std::vector<std::string> notes;
  std::string command;  // `sparge bench ...` that reproduces the row

  // Dense-equivalent FLOPs: 4 B H Nq Nk D, halved when causal (the usual convention).
  // The name, with " [data]" for inputs other than U(-1, 1): how tables name the row.
  std::string label() const;
  double dense_flops() const;
  double effective_tops() const;              // dense_flops / time
  std::optional<double> actual_tops() const;  // over kept blocks (sparse rows)
  std::optional<double> speedup_vs(const std::optional<double>& baseline_ms) const;
  std::optional<double> e2e_speedup_vs_cudnn() const;
};

struct Results {
  Environment env;
  std::vector<Row> rows;
};

nlohmann::json to_json(const Results& results);
std::string to_json_text(const Results& results);  // pretty, trailing newline

// Parses and validates a bench JSON. `source` names the file in errors. Throws Error(kDataError)
// with one line naming the file and the fault: not JSON, wrong schema, unknown major version,
// missing key ("rows[3].time_ms.median: missing"), wrong type.
Results results_from_json(const nlohmann::json& j, const std::string& source);
Results load_results(const std::filesystem::path& path);  // + kNoInput when missing

enum class TableFormat { kText, kMarkdown, kCsv };
std::string format_table(const Results& results, TableFormat format);

}  // namespace sparge::bench
