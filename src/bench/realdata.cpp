#include "bench/realdata.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "io/dump.hpp"

namespace sparge::bench {
namespace fs = std::filesystem;

namespace {

fs::path python_dir() { return fs::path(SPARGE_SOURCE_DIR) / "python"; }

// Runs argv with PYTHONPATH = <source>/python[:$PYTHONPATH], stdout and stderr into `log`.
// Returns the exit status (127 when argv[0] cannot be executed, -1 on a signal).
int run_logged(const std::vector<std::string>& argv, const fs::path& log) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::string pythonpath = python_dir().string();
  if (const char* old = std::getenv("PYTHONPATH"); old && *old)
    pythonpath += ":" + std::string(old);
  const pid_t pid = fork();
  if (pid < 0) fail(ExitCode::kSoftware, "cannot start {}: fork failed", argv[0]);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::close(fd);
    }
    ::setenv("PYTHONPATH", pythonpath.c_str(), 1);
    ::execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail(ExitCode::kSoftware, "waiting for {} failed", argv[0]);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The last non-blank line of a log (Python's exception line), for one-line errors.
std::string last_line(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
  }
  return last.empty() ? std::string("(no output)") : last;
}

// FNV-1a over the generator's sources: a changed generator gets a new cache file.
std::string generator_hash() {
  const fs::path dir = python_dir() / "sparge_realdata";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return "nosrc";
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.is_regular_file() && e.path().extension() == ".py") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  uint64_t h = 1469598103934665603ull;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << f.lexically_relative(dir).string() << '\0' << in.rdbuf();
    for (unsigned char ch : ss.str()) h = (h ^ ch) * 1099511628211ull;
  }
  return fmt::format("{:08x}", h & 0xffffffffull);
}

}  // namespace

std::string python_interpreter() {
  if (const char* p = std::getenv("SPARGE_PYTHON"); p && *p) return p;
#ifdef SPARGE_PYTHON_EXECUTABLE
  return SPARGE_PYTHON_EXECUTABLE;
#else
  const fs::path venv = fs::path(SPARGE_SOURCE_DIR) / ".venv" / "bin" / "python3";
  std::error_code ec;
  if (fs::exists(venv, ec)) return venv.string();
  return "python3";
#endif
}

fs::path realdata_cache_dir() {
  if (const char* d = std::getenv("SPARGE_CACHE_DIR"); d && *d) return d;
  return fs::temp_directory_path() / "sparge-realdata";
}

std::vector<std::string> generator_args(const RealDataSpec& spec, int64_t head_dim,
                                        const fs::path& out) {
  return {"-m",         "sparge_realdata",
          "-o",         out.string(),
          "--kind",     spec.kind,
          "--images",   fmt::format("{}", fmt::join(spec.images, ",")),
          "--layers",   "1",
          "--heads",    std::to_string(spec.heads),
          "--head-dim", std::to_string(head_dim),
          "--size",     spec.size,
          "--seed",     std::to_string(spec.seed)};
}

fs::path real_dump_path(const RealDataSpec& spec, int64_t head_dim, const fs::path& cache_dir) {
  return cache_dir / fmt::format("realdata-{}-{}-h{}-d{}-s{}-{}-{}.h5", spec.kind, spec.size,
                                 spec.heads, head_dim, spec.seed, fmt::join(spec.images, "+"),
                                 generator_hash());
}

fs::path ensure_real_dump(const RealDataSpec& spec, int64_t head_dim, const fs::path& cache_dir) {
  const fs::path path = real_dump_path(spec, head_dim, cache_dir);
  std::error_code ec;
  if (fs::exists(path, ec)) {
    io::DumpReader check(path);  // a damaged cache file is an error naming it, not a silent skip
    log::info("bench: real-image tensors (cached) {}", path.string());
    return path;
  }
  fs::create_directories(cache_dir, ec);
  if (ec)
    fail(ExitCode::kIoError, "{}: cannot create the cache dir: {}", cache_dir.string(),
         ec.message());
  const std::string py = python_interpreter();
  const fs::path log = cache_dir / fmt::format("generator.{}.log", ::getpid());
  // Each missing piece is named on its own, so the fix is obvious from the one line.
  const int probe = run_logged({py, "-c", "import sys"}, log);
  if (probe != 0) {
    fail(ExitCode::kNoDevice,
         "real data: Python interpreter '{}' not usable (exit {}); set SPARGE_PYTHON to one with "
         "numpy, h5py and scikit-image",
         py, probe);
  }
  if (run_logged({py, "-c", "import skimage"}, log) != 0) {
    fail(ExitCode::kNoDevice,
         "real data: scikit-image is missing for {} (pip install scikit-image): the real-image "
         "generator needs its photographs ({})",
         py, last_line(log));
  }
  if (run_logged({py, "-c", "import sparge_realdata"}, log) != 0) {
    fail(ExitCode::kNoDevice,
         "real data: the generator sparge_realdata cannot be imported by {} from {} ({})", py,
         python_dir().string(), last_line(log));
  }
  const auto rest = generator_args(spec, head_dim, path);
  log::info("bench: generating real-image tensors: {} {}", py, fmt::join(rest, " "));
  produce_file_atomic(path, [&](const fs::path& tmp) {
    std::vector<std::string> a{py};
    for (const auto& x : generator_args(spec, head_dim, tmp)) a.push_back(x);
    const int rc = run_logged(a, log);
    if (rc != 0) {
      fail(ExitCode::kSoftware, "real data: generator failed (exit {}): {} (log {})", rc,
           last_line(log), log.string());
    }
    io::DumpReader check(tmp);  // what the generator wrote must be a valid dump
  });
  fs::remove(log, ec);
  return path;
}

std::string real_data_command(const RealDataSpec& spec, uint64_t seed, const std::string& kernel) {
  return fmt::format("sparge bench --real-data {} --seed {} --kernel {}", spec.size, seed, kernel);
}

std::vector<AccuracyInput> real_data_inputs(const RealDataSpec& spec, const fs::path& cache_dir) {
  std::vector<AccuracyInput> out;
  for (int64_t d : spec.head_dims) {
    AccuracyInput in;
    in.dump = ensure_real_dump(spec, d, cache_dir);
    in.data = "real-" + spec.kind;
    in.source = fmt::format("python -m sparge_realdata {}",
                            fmt::join(generator_args(spec, d, in.dump.filename()), " "));
    in.seed = spec.seed;
    out.push_back(std::move(in));
  }
  return out;
}

AccuracyInput dump_input(const fs::path& dump) {
  std::error_code ec;
  if (!fs::exists(dump, ec))
    fail(ExitCode::kNoInput, "--real-data {}: no such file", dump.string());
  AccuracyInput in;
  in.dump = dump;
  in.data = "dump:" + dump.filename().string();
  in.source = dump.string();
  return in;
}

}  // namespace sparge::bench
