// `sparge report --across A.json B.json ...`: several bench runs (one per GPU model, or one GPU
// at several commits) in one table. Timings of different GPUs are not comparable as such, so
// each row is normalised by its own run's SDPA cuDNN time of the same (shape, causal, data):
// "× cuDNN" says how our kernel fares against the dense attention a user of that GPU has, which
// is the comparison that carries across models. Effective TOPS are shown beside it.
#pragma once

#include <string>
#include <vector>

#include "bench/results.hpp"

namespace sparge::report {

struct AcrossRun {
  std::string source;  // file name, for the column header
  bench::Results results;
};

// Markdown: one row per (name, shape, causal, density, data) present in any run (in the order
// first seen), per run (headed by its GPU and git) a "× cuDNN" and an "eff TOPS" column; "-" where
// a run lacks the row or its cuDNN baseline. SDPA cuDNN rows themselves are left out (1.00 by
// definition). Throws Error(kUsage) with fewer than two runs.
std::string across_table(const std::vector<AcrossRun>& runs);

}  // namespace sparge::report
