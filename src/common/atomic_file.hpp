// Atomic output files: write to a temporary sibling, fsync, rename over the target.
// A crash or an exception never leaves a half-written config, report or dump behind.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace sparge {

// Writes `contents` to `path` atomically. Throws Error(kIoError) naming the path on failure.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

// For producers that need a file name (HDF5): calls `produce(tmp_path)`, then renames tmp_path to
// `path`. If `produce` throws, the temporary is removed and the exception propagates.
void produce_file_atomic(const std::filesystem::path& path,
                         const std::function<void(const std::filesystem::path&)>& produce);

// A temporary output file that SIGINT/SIGTERM/SIGHUP remove: while a TempFileGuard lives, a
// signal handler (installed on first use; async-signal-safe, it only unlinks) deletes the path
// and then lets the signal end the process as it would have. produce_file_atomic and DumpWriter
// use one for their temporaries, so an interrupted run leaves no `*.tmp.PID.*` behind.
class TempFileGuard {
 public:
  explicit TempFileGuard(const std::filesystem::path& path);
  ~TempFileGuard();
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;

 private:
  int slot_ = -1;  // -1: the path did not fit the table (it is then only removed by its owner)
};

}  // namespace sparge
