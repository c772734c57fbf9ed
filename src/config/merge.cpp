// merge_tuned: joins the per-shard configs of `sparge tune --shard i/n`.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "common/error.hpp"
#include "config/tuned.hpp"

namespace sparge::config {
namespace {

// Everything of a config but its layers, as written: two parts are compatible iff these agree.
std::string header_of(TunedConfig c) {
  c.layers.clear();
  return to_yaml(c);
}

// The first line where two headers differ, for the error message.
std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  while (true) {
    const bool ga = static_cast<bool>(std::getline(sa, la));
    const bool gb = static_cast<bool>(std::getline(sb, lb));
    if (!ga && !gb) return "(none)";
    if (la != lb || ga != gb) return fmt::format("'{}' vs '{}'", la, lb);
  }
}

}  // namespace

TunedConfig merge_tuned(const std::vector<TunedConfig>& parts,
                        const std::vector<std::string>& sources) {
  if (parts.empty()) fail(ExitCode::kUsage, "merge: no input configs");
  if (sources.size() != parts.size()) fail(ExitCode::kSoftware, "merge: sources/parts mismatch");
  const std::string header = header_of(parts[0]);
  std::map<int, size_t> owner;  // layer index -> part that holds it
  TunedConfig out = parts[0];
  out.layers.clear();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string h = header_of(parts[i]);
    if (h != header) {
      fail(ExitCode::kConfigError, "{}: not from the same tuning run as {}: {}", sources[i],
           sources[0], first_difference(header, h));
    }
    for (const auto& layer : parts[i].layers) {
      const auto [it, fresh] = owner.emplace(layer.layer, i);
      if (!fresh) {
        fail(ExitCode::kConfigError, "{}: layer {} is also in {} (overlapping shards)", sources[i],
             layer.layer, sources[it->second]);
      }
      out.layers.push_back(layer);
    }
  }
  std::sort(out.layers.begin(), out.layers.end(),
            [](const TunedLayer& a, const TunedLayer& b) { return a.layer < b.layer; });
  return out;
}

}  // namespace sparge::config
