#include "common/io_guard.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "common/error.hpp"

namespace sparge {
namespace fs = std::filesystem;

namespace {

struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
};

std::optional<FileId> file_id(const fs::path& p) {
  struct stat st {};
  if (p.empty() || ::stat(p.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

bool same(const std::optional<FileId>& a, const std::optional<FileId>& b) {
  return a && b && a->dev == b->dev && a->ino == b->ino;
}

}  // namespace

void refuse_output_over_input(const std::vector<OutputPath>& outputs,
                              const std::vector<fs::path>& inputs) {
  std::vector<std::optional<FileId>> in_ids;
  for (const auto& in : inputs) in_ids.push_back(file_id(in));
  for (size_t o = 0; o < outputs.size(); ++o) {
    const auto& out = outputs[o];
    if (out.path.empty()) continue;
    const auto id = file_id(out.path);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (same(id, in_ids[i])) {
        fail(ExitCode::kUsage,
             "{} {}: is the input {}; writing it would destroy the input: choose another path",
             out.flag, out.path.string(), inputs[i].string());
      }
    }
    for (size_t p = 0; p < o; ++p) {
      const auto& prev = outputs[p];
      if (prev.path.empty()) continue;
      // Also by spelling: neither may exist yet.
      const bool twice = same(id, file_id(prev.path)) ||
                         fs::weakly_canonical(prev.path) == fs::weakly_canonical(out.path);
      if (twice) {
        fail(ExitCode::kUsage, "{} {}: is also the output of {}: choose another path", out.flag,
             out.path.string(), prev.flag);
      }
    }
  }
}

std::string read_text_file(const fs::path& path, std::string_view what) {
  std::error_code ec;
  if (fs::is_directory(path, ec))
    fail(ExitCode::kNoInput, "{}: is a directory, not a {}", path.string(), what);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ExitCode::kNoInput, "{}: cannot open {}", path.string(), what);
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail(ExitCode::kNoInput, "{}: cannot read {}", path.string(), what);
  std::string text = ss.str();
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 && c != '\n' && c != '\r' && c != '\t') {
      fail(ExitCode::kConfigError, "{}: not a text file (binary data at byte {}), expected a {}",
           path.string(), i, what);
    }
  }
  return text;
}

void flush_stdout_or_fail() {
  std::cout.flush();
  const bool cpp_ok = static_cast<bool>(std::cout);
  errno = 0;
  const int rc = std::fflush(stdout);
  const int err = errno;
  if (rc != 0 || std::ferror(stdout) || !cpp_ok) {
    fail(ExitCode::kIoError, "stdout: cannot write the result: {}",
         err ? std::strerror(err) : "write error");
  }
}

}  // namespace sparge
