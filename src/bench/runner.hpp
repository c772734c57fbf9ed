// Runs a bench suite on one or more GPUs: our kernels (kernel only, prediction, quantisation,
// end to end, dense mode) and the PyTorch SDPA baselines (cuDNN, flash) on the same inputs, in
// the same run, each timed by GpuTimer.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "bench/cases.hpp"
#include "bench/realdata.hpp"
#include "bench/results.hpp"
#include "bench/timer.hpp"

namespace sparge::bench {

struct RunOptions {
  // auto | sm90 | sm90.NAME | sm80 (`--kernel`, runtime::resolve_kernel)
  std::string kernel = "auto";
  uint64_t seed = 0;  // inputs and masks derive from it and the case
  TimerOptions timer;
  bool baselines = true;  // SDPA cuDNN + flash and our dense mode
  // Thresholds used to time the prediction on random inputs (its cost barely depends on them;
  // theta = -1 sends every row through TopCdf, the expensive path).
  float predict_tau = 0.9f, predict_theta = -1.0f;
  std::vector<int> devices{0};
  std::string command;  // the whole command line, recorded in the environment
  // Real predicted masks instead of random ones: layers of a dump with a tuned config.
  std::optional<std::filesystem::path> dump, config;
  std::vector<int> layers;  // empty = every layer in the config
  int sample = 0;
  // Accuracy rows (after the suite's cases, on the first device): per input, the kernel at the
  // dense mask on its real tensors and on N(0, 1) tensors of the same shape.
  std::vector<AccuracyInput> accuracy;
};

// Visible CUDA devices (0 without a driver). Never throws.
int visible_devices();

// kernel: the --kernel asked for (a forced Hopper kernel, "sm90.NAME", is recorded).
Environment capture_environment(const std::vector<int>& devices, const std::string& command,
                                const std::string& kernel = "auto");

// Throws Error(kNoDevice) without a GPU, the errors of runtime::resolve_kernel when the kernel
// cannot run here, Error(kSoftware) on CUDA failures. Rows come back in suite order whatever the
// device split.
Results run_suite(const Suite& suite, const RunOptions& options);  // + options.accuracy rows
Results run_predicted(const RunOptions& options);                  // --dump + --config

// The `sparge bench ...` command that reproduces one case (no --devices, no -o).
std::string repro_command(const Case& c, const std::string& dtype, uint64_t seed,
                          const std::string& kernel);
// Deterministic per-case seeds, so a one-case rerun draws the same inputs and mask.
uint64_t case_seed(uint64_t base, const Case& c);

}  // namespace sparge::bench
