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

}  // namespace sparge
