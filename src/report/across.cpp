#include "report/across.hpp"

#include <fmt/format.h>

#include <map>
#include <optional>
#include <tuple>

#include "common/error.hpp"

namespace sparge::report {

namespace {

using bench::Row;

// What identifies a case in every run: the row's name and its inputs.
using RowKey = std::tuple<std::string, std::string, bool, double, std::string>;
RowKey key_of(const Row& r) { return {r.name, r.shape.str(), r.causal, r.density, r.data}; }

// The cuDNN baseline of a case is the sdpa_cudnn row of the same inputs (any density).
using BaseKey = std::tuple<std::string, bool, std::string>;
BaseKey base_key_of(const Row& r) { return {r.shape.str(), r.causal, r.data}; }

}  // namespace

std::string across_table(const std::vector<AcrossRun>& runs) {
  if (runs.size() < 2) fail(ExitCode::kUsage, "--across needs at least two bench JSON files");
  std::vector<RowKey> order;
  std::map<RowKey, const Row*> first;
  std::vector<std::map<RowKey, const Row*>> rows(runs.size());
  std::vector<std::map<BaseKey, double>> cudnn(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    for (const Row& r : runs[i].results.rows) {
      if (r.name == "sdpa_cudnn") {
        cudnn[i][base_key_of(r)] = r.time.median;
        continue;
      }
      const RowKey k = key_of(r);
      if (first.emplace(k, &r).second) order.push_back(k);
      rows[i][k] = &r;
    }
  }
  std::string out = "## sparge report --across\n\n";
  for (const AcrossRun& run : runs) {
    const bench::Environment& e = run.results.env;
    out += fmt::format("- `{}`: {} · git {}{} · {}\n", run.source, e.gpu_name(),
                       e.git.empty() ? "-" : e.git, bench::kernel_tag(e), e.date);
  }
  out +=
      "\n× cuDNN = the run's own SDPA cuDNN time for the same shape, causality and inputs over the "
      "row's time (> 1: faster than the dense attention of that GPU).\n\n";
  std::string header = "| row | shape B,H,Nq,Nk,D | causal | density |";
  std::string rule = "|---|---|---|---|";
  for (const AcrossRun& run : runs) {
    const bench::Environment& e = run.results.env;
    const std::string gpu = e.git.empty() ? e.gpu_name() : e.gpu_name() + " @ " + e.git;
    header += fmt::format(" {} × cuDNN | {} eff TOPS |", gpu, gpu);
    rule += "---|---|";
  }
  out += header + "\n" + rule + "\n";
  for (const RowKey& k : order) {
    const Row& any = *first.at(k);
    std::string line = fmt::format("| {} | {} | {} | {:g} |", any.label(), any.shape.str(),
                                   any.causal ? "yes" : "no", any.density);
    for (size_t i = 0; i < runs.size(); ++i) {
      const auto it = rows[i].find(k);
      if (it == rows[i].end()) {
        line += " - | - |";
        continue;
      }
      const Row& r = *it->second;
      const auto b = cudnn[i].find(base_key_of(r));
      const std::string ratio = b == cudnn[i].end() || r.time.median <= 0
                                    ? std::string("-")
                                    : fmt::format("{:.2f}", b->second / r.time.median);
      line += fmt::format(" {} | {:.0f} |", ratio, r.effective_tops());
    }
    out += line + "\n";
  }
  return out;
}

}  // namespace sparge::report
