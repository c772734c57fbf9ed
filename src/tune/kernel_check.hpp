// `sparge eval DUMP TUNED.yaml --check-kernel`: the kernel self-check (issue 15). Every (layer,
// head) of a config is evaluated on the selected samples twice with the same thresholds and
// block geometry: by the CPU reference (src/reference/, the numerics contract) and by the CUDA
// kernels (src/runtime/cuda_oracle.cpp). Both errors are rel-L1 against the same dense fp64
// attention, worst over the samples. A head passes when the kernel's error stays within
//
//   bound(cpu) = max(1.1 x cpu, cpu + 0.002)
//
// at stage 1 (tau, theta) and at stage 1+2 (with lambda): 10 % relative headroom for the kernel's
// other (but contract-conforming) rounding order, and 0.002 absolute so a head whose contract
// error is tiny is not failed by noise far below any budget. A kernel 3-5x off its contract (the
// Hopper bug that real photographs exposed, while N(0, 1) data hid it) fails by a wide margin.
//
// The stage-1 sparsities of the two backends are reported side by side: both predictors run
// the same algorithm on the same fp16 values, so their masks should agree; they are flagged when
// they differ by more than mask_sparsity_tolerance (see there). A mask difference is a warning,
// not a failure: the error bound is the verdict.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "tune/tuner.hpp"

namespace sparge::tune {

inline constexpr double kKernelBoundRelative = 0.10;   // the kernel may be 10 % worse ...
inline constexpr double kKernelBoundAbsolute = 0.002;  // ... or 0.002 worse, whichever is larger
inline constexpr double kMaskTolerance = 0.01;         // stage-1 sparsity, absolute

// max(1.1 x cpu, cpu + 0.002).
double kernel_error_bound(double cpu_error);
// cuda <= kernel_error_bound(cpu); false when either is NaN (a NaN output never passes).
bool kernel_within_bound(double cpu_error, double cuda_error);

// Tolerance on |stage-1 sparsity (cpu) - stage-1 sparsity (cuda)| for a head with
// `valid_blocks` causally valid blocks per (batch, head): max(1 %, one block). Both predictors
// pool and compare in fp32 but sum in different orders, so a block whose cumulative softmax mass
// sits within rounding of tau (or a Q/K block whose self-similarity sits at theta) may go either
// way: one block per tie. 1 % of the blocks allows such a tie in every query-block row at the
// TARGETS shape (N = 17776: 139 x 139 blocks of 128, 1 % = 193 blocks) and a whole row flipped by
// a theta tie (1/139 = 0.7 %), while a predictor that computes something else moves far more.
// On tiny inputs (a few blocks) one block is more than 1 %, hence the floor of one block.
double mask_sparsity_tolerance(int64_t valid_blocks);

struct KernelCheckRequest {
  EvalRequest eval;  // dump, config, layers, samples, jobs (eval.backend is ignored: both run)
  // Instead of eval.config: every head of the dump (or eval.layers) dense (tau = theta = 1, no
  // lambda), for the kernel geometry `kernel` ("sm90", "sm80"; empty = what runs on device 0).
  // This isolates the quantised attention's numerics from the prediction and needs no tuning.
  bool dense = false;
  std::string kernel;
  // The oracle backend under test. Always "cuda" from the CLI; tests substitute a registered
  // fake to run the whole check on the CPU (the device check applies to "cuda" only).
  std::string kernel_backend = "cuda";
};

struct KernelCheckStage {
  double cpu_error = 0, cuda_error = 0;  // rel-L1 vs dense fp64, worst over samples
  double bound = 0;                      // kernel_error_bound(cpu_error)
  bool pass = true;                      // kernel_within_bound(cpu_error, cuda_error)
};

struct KernelCheckHead {
  int layer = 0, head = 0;
  bool sparse = true;
  Candidate candidate;
  KernelCheckStage stage1, stage12;
  double cpu_sparsity_stage1 = 0, cuda_sparsity_stage1 = 0;  // means over samples
  double cpu_sparsity_stage12 = 0, cuda_sparsity_stage12 = 0;
  double mask_tolerance = kMaskTolerance;
  bool masks_agree = true;  // |cpu - cuda| stage-1 sparsity <= mask_tolerance
  bool pass = true;         // stage1.pass && stage12.pass
};

struct KernelCheckOutcome {
  std::vector<KernelCheckHead> heads;  // layer-major, head order
  std::vector<int> samples_used;
  std::string device;  // the GPU the kernels ran on
  std::string kernel;  // geometry name of the config
  bool all_pass = true;
  int failures = 0;         // heads over the bound
  int mask_mismatches = 0;  // heads whose stage-1 sparsities differ beyond the tolerance
};

// Throws Error(kNoDevice) "--check-kernel needs a CUDA device: ..." when none is visible.
void require_cuda_device();

// Every head dense, for the layers of `dump` (all, or `layers`), with the dump's causal and sink
// attributes and the given geometry. Shapes: the heads of each layer as the dump has them.
config::TunedConfig dense_config(const std::filesystem::path& dump,
                                 const std::optional<std::vector<int>>& layers,
                                 const ref::Geometry& geometry);

// Joins the two evaluations of the same request (same heads in the same order) into the check.
// `valid_blocks(layer)` gives the causally valid blocks per (batch, head) of a layer, for the mask
// tolerance. Pure: unit-tested on made-up numbers.
KernelCheckOutcome combine_kernel_check(const EvalOutcome& cpu, const EvalOutcome& cuda,
                                        const std::vector<int64_t>& valid_blocks_per_head);

// The check: device first (exit 69 before any CPU work), then the kernels' run, then the CPU
// reference's.
KernelCheckOutcome run_kernel_check(KernelCheckRequest request);

// The per-head table ("text", "md", "csv") or JSON document ("json"), with a summary line for
// "text". `tuned` names the config (empty with --dense).
std::string render_kernel_check(const KernelCheckOutcome& outcome, const std::string& format,
                                const std::string& dump, const std::string& tuned);

}  // namespace sparge::tune
