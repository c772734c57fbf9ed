// Content hash of a (possibly multi-GB) dump for a tuned config's provenance, streamed in
// fixed-size pieces so memory stays bounded.
//
// "sha1x64m:<hex>" = SHA-1 of the text formed by the lowercase hex SHA-1 of every 64 MiB piece of
// the file followed by "\n" (the last piece may be shorter; an empty file has no piece). Any
// shell reproduces it:   split -b 64M --filter='sha1sum | cut -c1-40' DUMP | sha1sum
// (SHA-1 from libtorch's c10::sha1: this identifies content, it is not a security measure.)
#pragma once

#include <filesystem>
#include <string>

namespace sparge::tune {

// Throws Error(kNoInput) naming the file when it cannot be read.
std::string content_hash(const std::filesystem::path& path);

}  // namespace sparge::tune
