// Minimal leveled logging to stderr. stdout carries results only; everything else comes here.
#pragma once

#include <fmt/format.h>

#include <cstdio>

namespace sparge::log {

enum class Level { kTrace = 0, kDebug = 1, kInfo = 2, kWarn = 3, kError = 4, kOff = 5 };

Level level();
void set_level(Level level);

template <typename... Args>
void write(Level lvl, const char* tag, fmt::format_string<Args...> format, Args&&... args) {
  if (lvl < level()) return;
  fmt::print(stderr, "sparge: {}{}\n", tag, fmt::format(format, std::forward<Args>(args)...));
}

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... a) {
  write(Level::kDebug, "debug: ", f, std::forward<Args>(a)...);
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... a) {
  write(Level::kInfo, "", f, std::forward<Args>(a)...);
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... a) {
  write(Level::kWarn, "warning: ", f, std::forward<Args>(a)...);
}

}  // namespace sparge::log
