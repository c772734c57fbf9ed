// Shared test harness: per-process scratch directories and running the `sparge` binary.
//
// ctest runs every gtest case in its own process and in parallel (-j), so scratch files live in a
// directory keyed by the process id: two cases never share an output file or a generated dump.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace sparge::test_support {

// `<SPARGE_TEST_TMP or system temp>/<tag>.<pid>/`, created on first use.
inline std::filesystem::path scratch_dir(const std::string& tag) {
#ifdef SPARGE_TEST_TMP
  const std::filesystem::path root = SPARGE_TEST_TMP;
#else
  const std::filesystem::path root = std::filesystem::temp_directory_path() / "sparge_tests";
#endif
  auto d = root / (tag + "." + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct CliResult {
  int code = -1;  // exit status; -1 when killed by a signal
  std::string out, err;
};

// Runs `SPARGE_BIN args` through the shell with stdout/stderr captured in files under `dir`.
// `args` is passed verbatim (callers quote paths that may hold spaces).
inline CliResult run_sparge(const std::string& args, const std::filesystem::path& dir) {
  static int n = 0;
  const auto out = dir / ("run" + std::to_string(n) + ".out");
  const auto err = dir / ("run" + std::to_string(n) + ".err");
  ++n;
  const std::string cmd = std::string("'") + SPARGE_BIN + "' " + args + " >'" + out.string() +
                          "' 2>'" + err.string() + "'";
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

}  // namespace sparge::test_support
