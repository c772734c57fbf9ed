// libFuzzer target for every reader of untrusted input (built when the compiler is clang and
// SPARGE_BUILD_FUZZ is on; tests/CMakeLists.txt). The first byte picks the reader, the rest is
// its input: 0 tuned-config YAML, 1 bench-suite YAML, 2 bench-results JSON, 3 HDF5 dump bytes.
// A reader may accept its input or throw sparge::Error; any other exception or a crash is a bug.
//
//   build-fuzz/tests/fuzz_readers -max_total_time=60 corpus/ tests/fixtures/
//
// tests/cpu/fuzz_readers_test.cpp runs the same contract as seeded mutations in every CI run.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "bench/cases.hpp"
#include "bench/results.hpp"
#include "common/error.hpp"
#include "config/tuned.hpp"
#include "io/dump.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 4) {
      case 0:
        sparge::config::parse_tuned(text, "fuzz.yaml");
        break;
      case 1:
        sparge::bench::parse_suite(text, "fuzz.yaml");
        break;
      case 2: {
        const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (!j.is_discarded()) sparge::bench::results_from_json(j, "fuzz.json");
        break;
      }
      default: {
        static const std::filesystem::path p =
            std::filesystem::temp_directory_path() /
            ("sparge_fuzz_" + std::to_string(::getpid()) + ".h5");
        std::ofstream(p, std::ios::binary | std::ios::trunc) << text;
        sparge::io::DumpReader r(p);
        for (const auto& l : r.info().layers) {
          for (const auto& s : l.samples) {
            for (const char* t : {"q", "k", "v"}) r.read(l.index, s.index, t);
          }
        }
        break;
      }
    }
  } catch (const sparge::Error&) {
    // The documented outcome for bad input.
  }
  return 0;
}
