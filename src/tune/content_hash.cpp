#include "tune/content_hash.hpp"

#include <c10/util/hash.h>

#include <algorithm>
#include <fstream>
#include <system_error>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "common/parallel.hpp"

namespace sparge::tune {

std::string content_hash(const std::filesystem::path& path) {
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  return content_hash(path, 64ll << 20, std::clamp(threads, 1, 16));
}

std::string content_hash(const std::filesystem::path& path, std::int64_t piece_bytes, int jobs) {
  SPARGE_ASSERT(piece_bytes > 0 && jobs >= 1, "content_hash: piece {} jobs {}", piece_bytes, jobs);
  std::error_code ec;
  const auto size = static_cast<std::int64_t>(std::filesystem::file_size(path, ec));
  if (ec || !std::ifstream(path, std::ios::binary)) {
    fail(ExitCode::kNoInput, "{}: cannot open for hashing", path.string());
  }
  // c10::sha1 leaves its state unset for an empty input: SHA-1("") is a known constant.
  if (size == 0) return "sha1x64m:da39a3ee5e6b4b0d3255bfef95601890afd80709";
  const std::int64_t pieces = (size + piece_bytes - 1) / piece_bytes;
  std::vector<std::string> digests(static_cast<size_t>(pieces));
  // Each thread reads its pieces through its own stream: a shared stream would serialise them.
  parallel_for(static_cast<int>(pieces), jobs, [&](int i) {
    const std::int64_t offset = i * piece_bytes;
    const std::int64_t want = std::min(piece_bytes, size - offset);
    std::ifstream in(path, std::ios::binary);
    std::string piece(static_cast<size_t>(want), '\0');
    in.seekg(offset);
    in.read(piece.data(), want);
    if (in.gcount() != want) {
      fail(ExitCode::kNoInput, "{}: read error while hashing (did the file change?)",
           path.string());
    }
    digests[static_cast<size_t>(i)] = c10::sha1(piece).str();
  });
  // A file that grew while it was hashed would get a digest of its first bytes only.
  if (static_cast<std::int64_t>(std::filesystem::file_size(path, ec)) != size || ec) {
    fail(ExitCode::kNoInput, "{}: changed size while hashing", path.string());
  }
  std::string all;
  all.reserve(digests.size() * 41);
  for (const auto& d : digests) {
    all += d;
    all += '\n';
  }
  return "sha1x64m:" + c10::sha1(all).str();
}

}  // namespace sparge::tune
