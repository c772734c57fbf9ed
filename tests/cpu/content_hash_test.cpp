// The dump content hash of tuned configs' provenance: the documented scheme (SHA-1 of the pieces'
// hex SHA-1 lines), the same digest whatever the thread count, and clear errors.
#include "tune/content_hash.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.hpp"

namespace fs = std::filesystem;
using sparge::Error;
using sparge::ExitCode;
using sparge::tune::content_hash;

namespace {

fs::path write_file(const std::string& name, const std::string& bytes) {
  fs::path dir = fs::path(SPARGE_TEST_TMP) / "content_hash";
  fs::create_directories(dir);
  fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

// 2560 bytes: 0, 1, ..., 255 ten times.
std::string pattern() {
  std::string s;
  for (int r = 0; r < 10; ++r) {
    for (int b = 0; b < 256; ++b) s += static_cast<char>(b);
  }
  return s;
}

}  // namespace

// Expected digests computed independently with Python's hashlib:
//   h = lambda b: hashlib.sha1(b).hexdigest(); h((h(b"abc") + "\n").encode())
TEST(ContentHash, OnePieceMatchesTheDocumentedScheme) {
  EXPECT_EQ(content_hash(write_file("abc", "abc")),
            "sha1x64m:a857a8b66443d636bc8ae23f90ac0e7f5ef8ab30");
}

TEST(ContentHash, EmptyFileIsSha1OfNothing) {
  EXPECT_EQ(content_hash(write_file("empty", "")),
            "sha1x64m:da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

// Pieces of 1000 bytes: two full ones and a short last one, hashed on 1, 2 and 4 threads
// (more threads than pieces too). hashlib: h("".join(h(data[i:i+1000]) + "\n" for i in
// range(0, 2560, 1000)).encode())
TEST(ContentHash, PiecesInAnyThreadCountGiveOneDigest) {
  const fs::path p = write_file("pattern", pattern());
  for (int jobs : {1, 2, 4}) {
    EXPECT_EQ(content_hash(p, 1000, jobs), "sha1x64m:cff42ad5c0c511eecb81823a472b9b09a675db3a")
        << jobs << " threads";
  }
  // A piece boundary elsewhere is another digest: the piece size is part of the scheme.
  EXPECT_NE(content_hash(p, 1024, 2), content_hash(p, 1000, 2));
}

TEST(ContentHash, MissingFileIsNoInput) {
  try {
    content_hash(fs::path(SPARGE_TEST_TMP) / "content_hash" / "no-such-file");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kNoInput);
    EXPECT_NE(std::string(e.what()).find("no-such-file"), std::string::npos) << e.what();
  }
}
