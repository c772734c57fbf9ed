#include "common/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "common/log.hpp"

namespace sparge {
namespace {
std::atomic<bool> g_disabled{false};

std::string hms(double seconds) {
  long s = static_cast<long>(seconds + 0.5);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}
}  // namespace

void Progress::set_globally_disabled(bool disabled) { g_disabled = disabled; }

Progress::Progress(std::string label, long total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      tty_(::isatty(STDERR_FILENO) && std::getenv("CI") == nullptr),
      enabled_(enabled && !g_disabled && log::level() <= log::Level::kInfo),
      start_(std::chrono::steady_clock::now()),
      last_render_(start_) {}

Progress::~Progress() { finish(); }

void Progress::advance(long n, const std::string& detail) {
  std::lock_guard lock(mu_);
  done_ += n;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (tty_) {
    if (now - last_render_ > std::chrono::milliseconds(100) || done_ == total_) {
      last_render_ = now;
      render(detail);
    }
  } else {
    long step = total_ >= 10 ? total_ / 10 : 1;
    if (done_ - last_logged_ >= step || done_ == total_) {
      last_logged_ = done_;
      double el = std::chrono::duration<double>(now - start_).count();
      fmt::print(stderr, "sparge: [{}] {}/{} {} ({})\n", label_, done_, total_, detail, hms(el));
    }
  }
}

void Progress::render(const std::string& detail) {
  double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 1.0;
  int width = 24;
  int filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar.append(width - filled, '.');
  std::string eta = done_ > 0 ? hms(el / frac - el) : "--:--";
  fmt::print(stderr, "\r\033[K[{}] [{}] {}/{} {} {} ETA {}", label_, bar, done_, total_, detail,
             hms(el), eta);
  std::fflush(stderr);
}

void Progress::finish() {
  std::lock_guard lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (enabled_ && tty_) fmt::print(stderr, "\n");
}

}  // namespace sparge
