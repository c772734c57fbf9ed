// The list-valued flags of the subcommands, parsed once here: index lists (--layers, --samples),
// --shard I/N, MIN,MAX ranges, the theta grid, --devices. Each throws Error(kUsage) naming the
// flag and the text.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace sparge::cli {

// "0,2,5-7" -> {0, 2, 5, 6, 7}: sorted, without repeats, at least one index.
std::vector<int> parse_index_list(const std::string& text, const std::string& flag);

// "I/N" -> (I, N) with 0 <= I < N (`--shard`).
std::pair<int, int> parse_shard(const std::string& text);

// "MIN,MAX" -> (MIN, MAX).
std::pair<float, float> parse_range(const std::string& text, const std::string& flag);

// "-1:1:0.125" (start inclusive, stop exclusive) or "0,0.25,0.5" (`--theta-grid`).
std::vector<float> parse_theta_grid(const std::string& text);

// "0,1" or "all" -> device indices, each once, every index < count (count 0: not checked).
std::vector<int> parse_devices(const std::string& text, int count);

}  // namespace sparge::cli
