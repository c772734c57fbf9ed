#include "common/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <mutex>
#include <random>

#include "common/error.hpp"

namespace sparge {
namespace fs = std::filesystem;

namespace {
fs::path temp_sibling(const fs::path& path) {
  std::random_device rd;
  return fs::path(path).concat(fmt::format(".tmp.{}.{:08x}", ::getpid(), rd()));
}

// Live temporaries, for the signal handler. A slot is 0 (free), 1 (being filled or emptied) or
// 2 (live: the handler unlinks its path). Fixed storage: the handler may not allocate.
constexpr int kSlots = 64;
std::atomic<int> g_state[kSlots];
char g_paths[kSlots][PATH_MAX];

// The handlers in place before ours (SIG_DFL in the CLI; a host process's own, e.g. Python's,
// when the library runs inside one): after the cleanup the signal goes on to them.
constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP};
struct sigaction g_previous[3];

extern "C" void remove_temporaries_and_reraise(int sig) {
  for (int i = 0; i < kSlots; ++i) {
    if (g_state[i].load() == 2) ::unlink(g_paths[i]);
  }
  for (int i = 0; i < 3; ++i) {
    if (kSignals[i] == sig) ::sigaction(sig, &g_previous[i], nullptr);
  }
  ::raise(sig);
}

void install_handlers_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int i = 0; i < 3; ++i) {
      struct sigaction& old = g_previous[i];
      if (::sigaction(kSignals[i], nullptr, &old) != 0) continue;
      if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) continue;  // nohup
      struct sigaction sa {};
      sa.sa_handler = remove_temporaries_and_reraise;
      sigemptyset(&sa.sa_mask);
      ::sigaction(kSignals[i], &sa, nullptr);
    }
  });
}

void fsync_path(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}
}  // namespace

TempFileGuard::TempFileGuard(const fs::path& path) {
  install_handlers_once();
  const std::string& s = path.native();
  if (s.size() >= PATH_MAX) return;
  for (int i = 0; i < kSlots; ++i) {
    int expected = 0;
    if (g_state[i].compare_exchange_strong(expected, 1)) {
      std::memcpy(g_paths[i], s.c_str(), s.size() + 1);
      g_state[i].store(2);
      slot_ = i;
      return;
    }
  }
}

TempFileGuard::~TempFileGuard() {
  if (slot_ >= 0) g_state[slot_].store(0);
}

void produce_file_atomic(const fs::path& path,
                         const std::function<void(const fs::path&)>& produce) {
  const fs::path tmp = temp_sibling(path);
  TempFileGuard guard(tmp);
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
