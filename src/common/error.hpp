// Errors and exit codes shared by the whole host library.
//
// Library code throws sparge::Error carrying the exit code the CLI should return; the CLI maps
// exceptions to exit codes in exactly one place (src/cli/main.cpp). Messages are one line and name
// the file / object and the fault, e.g. "dump.h5: /layers/000/samples/0000/q: rank 3, expected 4".
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sparge {

// Documented in README.md ("Exit codes") and printed by `sparge --help`.
enum class ExitCode : int {
  kOk = 0,
  kCheckFailed = 1,   // ran correctly, but a budget was missed or a regression was found
  kUsage = 2,         // bad command line
  kDataError = 65,    // input file exists but is malformed (corrupt, wrong shapes, NaN/Inf, schema)
  kNoInput = 66,      // input file missing or unreadable
  kNoDevice = 69,     // no CUDA device, or the requested kernel is not compiled in
  kSoftware = 70,     // internal error, CUDA error
  kIoError = 74,      // cannot write an output
  kConfigError = 78,  // invalid tuned/suite YAML or unknown schema_version
};

// Messages stay one line whatever they quote from the input: control characters (a newline in a
// YAML scalar, a byte of a binary file) are written as \n, \r, \t or \xNN.
inline std::string one_line(const std::string& message) {
  std::string out;
  out.reserve(message.size());
  for (unsigned char c : message) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

class Error : public std::runtime_error {
 public:
  Error(ExitCode code, const std::string& message)
      : std::runtime_error(one_line(message)), code_(code) {}
  ExitCode code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

template <typename... Args>
[[noreturn]] void fail(ExitCode code, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(code, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace sparge

// Internal invariant: a violation is a bug in sparge, not bad input.
#define SPARGE_ASSERT(cond, ...)                                                             \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      ::sparge::fail(::sparge::ExitCode::kSoftware, "internal error at {}:{}: {}", __FILE__, \
                     __LINE__, fmt::format(__VA_ARGS__));                                    \
    }                                                                                        \
  } while (0)
