// A one-line progress display on stderr. Shown only when stderr is a terminal, CI is not set and
// the user did not pass --quiet / --no-progress; otherwise it prints a plain log line every
// `log_every` steps so long jobs still show they are alive in CI logs.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

namespace sparge {

class Progress {
 public:
  Progress(std::string label, long total, bool enabled = true);
  ~Progress();
  // Thread-safe. `detail` is shown after the counter ("layer 3 head 7").
  void advance(long n = 1, const std::string& detail = {});
  void finish();

  static void set_globally_disabled(bool disabled);

 private:
  void render(const std::string& detail);
  std::string label_;
  long total_;
  long done_ = 0;
  bool tty_;
  bool enabled_;
  bool finished_ = false;
  long last_logged_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_render_;
  std::mutex mu_;
};

}  // namespace sparge
