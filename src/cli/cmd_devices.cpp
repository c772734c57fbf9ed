// `sparge devices`: the visible CUDA devices and what this build's kernels were compiled for.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "common/error.hpp"
#include "kernels/device_info.h"

namespace sparge::cli {
namespace {

std::string cuda_version(int v) {
  return v > 0 ? fmt::format("{}.{}", v / 1000, (v % 1000) / 10) : "unknown";
}

// "800,900" (nvcc's __CUDA_ARCH_LIST__) -> ["sm_80", "sm_90"].
std::vector<std::string> archs() {
  std::vector<std::string> out;
  std::string list = kernels::compiled_cuda_archs();
  size_t pos = 0;
  while (pos < list.size()) {
    size_t comma = std::min(list.find(',', pos), list.size());
    const std::string item = list.substr(pos, comma - pos);
    if (!item.empty()) out.push_back(fmt::format("sm_{}", std::stoi(item) / 10));
    pos = comma + 1;
  }
  return out;
}

void run(const std::string& format) {
  const int n = kernels::device_info_count();
  nlohmann::ordered_json devices = nlohmann::ordered_json::array();
  std::string text;
  for (int i = 0; i < n; ++i) {
    kernels::DeviceInfo d;
    char err[256] = {};
    if (!kernels::query_device(i, &d, err, sizeof(err))) {
      fail(ExitCode::kSoftware, "CUDA device {}: {}", i, err);
    }
    devices.push_back({{"index", d.index},
                       {"name", d.name},
                       {"pci_bus_id", d.pci_bus_id},
                       {"sm", fmt::format("{}.{}", d.sm_major, d.sm_minor)},
                       {"multiprocessors", d.multiprocessors},
                       {"memory_bytes", d.total_memory_bytes},
                       {"l2_cache_bytes", d.l2_cache_bytes},
                       {"shared_memory_per_block_optin_bytes", d.max_shared_memory_per_block_optin},
                       {"sm_clock_mhz", d.clock_khz / 1000},
                       {"memory_clock_mhz", d.memory_clock_khz / 1000},
                       {"memory_bus_width_bits", d.memory_bus_width_bits},
                       {"ecc", d.ecc_enabled != 0}});
    text += fmt::format(
        "{}  {}  sm_{}{}  {} SMs  {:.1f} GiB  L2 {:.0f} MiB  SM clock {} MHz  memory {} MHz x {} "
        "bit  pci {}\n",
        d.index, d.name, d.sm_major, d.sm_minor, d.multiprocessors,
        static_cast<double>(d.total_memory_bytes) / (1 << 30),
        static_cast<double>(d.l2_cache_bytes) / (1 << 20), d.clock_khz / 1000,
        d.memory_clock_khz / 1000, d.memory_bus_width_bits, d.pci_bus_id);
  }
  const auto compiled = archs();
  if (format == "json") {
    nlohmann::ordered_json j = {{"schema", "sparge.devices"},
                                {"schema_version", 1},
                                {"cuda_driver", cuda_version(kernels::cuda_driver_version())},
                                {"cuda_runtime", cuda_version(kernels::cuda_runtime_version())},
                                {"compiled_archs", compiled},
                                {"devices", devices}};
    fmt::print("{}\n", j.dump(2));
  } else if (n > 0) {
    fmt::print("{}CUDA driver {}, runtime {}; kernels compiled for {}\n", text,
               cuda_version(kernels::cuda_driver_version()),
               cuda_version(kernels::cuda_runtime_version()), fmt::join(compiled, ", "));
  }
  if (n == 0) fail(ExitCode::kNoDevice, "no CUDA device visible");
}

}  // namespace

void register_devices(CLI::App& app, Context&) {
  auto format = std::make_shared<std::string>("text");
  auto* sub = app.add_subcommand(
      "devices",
      "List the visible CUDA GPUs (name, SM version, memory, SMs, L2, clocks), the CUDA driver\n"
      "and runtime versions, and the architectures the kernels were compiled for.\n"
      "Exit 69 when no CUDA device is visible (with --format json, the document is printed too).");
  sub->add_option("--format", *format, "text | json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  sub->callback([format] { run(*format); });
}

}  // namespace sparge::cli
