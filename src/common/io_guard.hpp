// Guards shared by every command around its inputs and outputs: an output path must never name
// one of the command's inputs (the atomic rename would replace the input), text inputs must be
// text, and results written to stdout must really have been written.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace sparge {

// One output of a command and the flag that named it, e.g. {"-o", "tuned.yaml"}.
struct OutputPath {
  std::string flag;
  std::filesystem::path path;
};

// Throws Error(kUsage) "<flag> <out>: is the input <in> ..." when an output names the same file
// as an input (same device and inode: symlinks, hard links and "./" spellings included) or as
// another output. Empty paths are skipped; an output that does not exist yet never matches.
void refuse_output_over_input(const std::vector<OutputPath>& outputs,
                              const std::vector<std::filesystem::path>& inputs);
inline void refuse_output_over_input(const OutputPath& output,
                                     const std::vector<std::filesystem::path>& inputs) {
  refuse_output_over_input(std::vector<OutputPath>{output}, inputs);
}

// Reads a text input (config, preset, suite) whole. Error(kNoInput) when it is missing,
// unreadable or a directory; Error(kConfigError) "<path>: not a text file (binary data at byte N)"
// when it holds NUL bytes or other control characters a YAML/JSON text never has. `what` names
// the kind of file in messages ("tuned config").
std::string read_text_file(const std::filesystem::path& path, std::string_view what);

// Flushes stdout (C stdio and std::cout) and throws Error(kIoError) "stdout: cannot write: ..."
// when any result written to it was lost (a full disk, a closed pipe, /dev/full).
void flush_stdout_or_fail();

}  // namespace sparge
