// merge_tuned: joins the per-shard configs of `sparge tune --shard i/n`.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "common/error.hpp"
#include "common/log.hpp"
#include "config/tuned.hpp"

namespace sparge::config {
namespace {

// Everything of a config but its layers, as written: two parts are compatible iff these agree.
std::string header_of(TunedConfig c) {
  c.layers.clear();
  c.provenance.shard.reset();  // differs by design; checked on its own
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

namespace {

// The parts must be shards 0..N-1 of one selection of layers, each once: anything else is a
// merge that silently lacks layers. Returns the problem, or "" when the set is complete.
std::string shard_problem(const std::vector<TunedConfig>& parts,
                          const std::vector<std::string>& sources) {
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!parts[i].provenance.shard) {
      return fmt::format(
          "{} records no shard (not written by `sparge tune --shard I/N`, or by an older "
          "sparge), so the set cannot be checked for completeness",
          sources[i]);
    }
  }
  const Shard& first = *parts[0].provenance.shard;
  std::map<int, size_t> seen;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Shard& s = *parts[i].provenance.shard;
    if (s.count != first.count || s.layers != first.layers) {
      return fmt::format(
          "{} is shard {}/{} of {} layers, {} shard {}/{} of {} layers: parts of "
          "different splits",
          sources[i], s.index, s.count, s.layers.size(), sources[0], first.index, first.count,
          first.layers.size());
    }
    const auto [it, fresh] = seen.emplace(s.index, i);
    if (!fresh) {
      return fmt::format("{} and {} are both shard {}/{}", sources[it->second], sources[i], s.index,
                         s.count);
    }
  }
  std::vector<std::string> missing;
  for (int k = 0; k < first.count; ++k) {
    if (!seen.count(k)) missing.push_back(fmt::format("{}/{}", k, first.count));
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    return fmt::format("shard(s) {} missing: the merged config would lack their layers", list);
  }
  return "";
}

}  // namespace

TunedConfig merge_tuned(const std::vector<TunedConfig>& parts,
                        const std::vector<std::string>& sources, bool allow_partial) {
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
  const std::string problem = shard_problem(parts, sources);
  if (!problem.empty()) {
    if (!allow_partial) {
      fail(ExitCode::kConfigError, "merge: {}; pass --allow-partial to merge them anyway", problem);
    }
    log::warn("merge: {} (--allow-partial)", problem);
  } else {
    std::vector<int> got;
    for (const auto& l : out.layers) got.push_back(l.layer);
    std::vector<int> want = parts[0].provenance.shard->layers;
    std::sort(want.begin(), want.end());
    if (got != want) {
      fail(ExitCode::kConfigError,
           "merge: the parts hold {} layers, but their shards split {} layers (edited parts?)",
           got.size(), want.size());
    }
  }
  out.provenance.shard.reset();  // the whole: what a single run writes
  return out;
}

}  // namespace sparge::config
