#include "common/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/error.hpp"

namespace sparge {
namespace fs = std::filesystem;

namespace {
fs::path temp_sibling(const fs::path& path) {
  std::random_device rd;
  return fs::path(path).concat(fmt::format(".tmp.{}.{:08x}", ::getpid(), rd()));
}

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

void produce_file_atomic(const fs::path& path,
                         const std::function<void(const fs::path&)>& produce) {
  const fs::path tmp = temp_sibling(path);
  try {
    produce(tmp);
    fsync_path(tmp);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) fail(ExitCode::kIoError, "{}: cannot write: {}", path.string(), ec.message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  produce_file_atomic(path, [&](const fs::path& tmp) {
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
      fail(ExitCode::kIoError, "{}: cannot write: {}", path.string(), std::strerror(errno));
    size_t off = 0;
    while (off < contents.size()) {
      ssize_t n = ::write(fd, contents.data() + off, contents.size() - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        fail(ExitCode::kIoError, "{}: cannot write: {}", path.string(), std::strerror(err));
      }
      off += static_cast<size_t>(n);
    }
    if (::close(fd) != 0)
      fail(ExitCode::kIoError, "{}: cannot write: {}", path.string(), std::strerror(errno));
  });
}

}  // namespace sparge
