// Real-image tensors for the bench's accuracy rows: the generator `python -m sparge_realdata`
// (python/sparge_realdata: photographs -> Q/K/V, one sample per image, written as a sparge dump)
// run once per spec and head dim, its dump cached in a temp dir; or a dump the user gives.
// Host code only (no GPU), CPU-tested.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "bench/cases.hpp"

namespace sparge::bench {

// Real tensors to measure accuracy on: every sample of the dump's first layer, stacked on the
// batch axis ([S, H, N, D]; all samples must have the same shape).
struct AccuracyInput {
  std::filesystem::path dump;
  std::string data;     // the rows' data label: "real-video", "real-text" or "dump:<file name>"
  std::string source;   // how the tensors were made, for the rows' notes
  std::string command;  // `sparge bench ...` that reproduces the rows
  uint64_t seed = 0;    // generator seed (0 for a user dump); also seeds the N(0, 1) twin
};

// The Python that runs the generator: $SPARGE_PYTHON, else the interpreter CMake found
// (SPARGE_PYTHON_EXECUTABLE, when defined at build time), else <source>/.venv/bin/python3 when
// it exists (scripts/setup.sh installs there when the system Python refuses pip), else python3.
std::string python_interpreter();

// $SPARGE_CACHE_DIR, else <temp dir>/sparge-realdata.
std::filesystem::path realdata_cache_dir();

// The generator's arguments after the interpreter: -m sparge_realdata -o OUT --kind ... .
std::vector<std::string> generator_args(const RealDataSpec& spec, int64_t head_dim,
                                        const std::filesystem::path& out);

// Cache file of (spec, head dim): every generator flag in the name plus a hash of the
// generator's sources (python/sparge_realdata/*.py), so an edited generator regenerates.
std::filesystem::path real_dump_path(const RealDataSpec& spec, int64_t head_dim,
                                     const std::filesystem::path& cache_dir);

// The cached dump, generated first when absent (into a temporary, validated, then renamed, so
// concurrent runs never read half a file). Never skips: a missing interpreter, generator or
// scikit-image is Error(kNoDevice) (69: a component the run needs is unavailable) naming what
// is missing and how to fix it; a generator that fails is Error(kSoftware) with its last
// stderr line and the log file.
std::filesystem::path ensure_real_dump(const RealDataSpec& spec, int64_t head_dim,
                                       const std::filesystem::path& cache_dir);

// One input per head dim of the spec (generated or cached).
std::vector<AccuracyInput> real_data_inputs(const RealDataSpec& spec,
                                            const std::filesystem::path& cache_dir);
// A dump given on the command line (`--real-data FILE`); Error(kNoInput) when missing.
AccuracyInput dump_input(const std::filesystem::path& dump);

// `sparge bench --real-data ...` reproducing the rows of a spec at one size.
std::string real_data_command(const RealDataSpec& spec, uint64_t seed, const std::string& kernel);

}  // namespace sparge::bench
