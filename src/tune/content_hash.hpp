// Content hash of a (possibly multi-GB) dump for a tuned config's provenance, streamed in
// fixed-size pieces so memory stays bounded.
//
// "sha1x64m:<hex>" = SHA-1 of the text formed by the lowercase hex SHA-1 of every 64 MiB piece of
// the file followed by "\n" (the last piece may be shorter; an empty file has no piece). Any
// shell reproduces it:   split -b 64M --filter='sha1sum | cut -c1-40' DUMP | sha1sum
// (SHA-1 from libtorch's c10::sha1: this identifies content, it is not a security measure.)
//
// The pieces are hashed on several threads: c10::sha1 runs at roughly 100 MB/s on one core, so a
// full-model dump (17.5 GB) took 156 s of a 232 s tune when hashed serially (session 21, H100).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace sparge::tune {

// Throws Error(kNoInput) naming the file when it cannot be read or changes size while hashed.
std::string content_hash(const std::filesystem::path& path);

// The same digest scheme with another piece size (the name's "x64m" holds only for 64 MiB) and
// an explicit thread count; content_hash() is this with 64 MiB and the hardware threads (at most
// 16: each holds one piece in memory). Exposed for tests.
std::string content_hash(const std::filesystem::path& path, std::int64_t piece_bytes, int jobs);

}  // namespace sparge::tune
