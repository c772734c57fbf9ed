// Which attention kernel runs (see runtime.hpp): the names the CLI and the op accept, what this
// device and build offer, and the choice between them with a distinct error for each way it can
// fail. The launches that run the chosen kernel are in runtime.cpp.
#include "runtime/kernel_choice.hpp"

#include <ATen/cuda/CUDAContext.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "common/error.hpp"
#include "kernels/api.h"
#include "runtime/runtime.hpp"

namespace sparge::runtime {

DeviceKernels current_device_kernels() {
  DeviceKernels here;
  if (kernels::device_count() == 0) return here;
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  here.device = true;
  here.major = prop->major;
  here.minor = prop->minor;
  here.sm90_image = kernels::attention_sm90_available();
  here.sm90_kernels = kernels::sm90_kernels_compiled();
  return here;
}

std::vector<std::string> available_kernels(const DeviceKernels& here) {
  std::vector<std::string> out;
  if (!here.device) return out;
  if (here.major >= 8) out.push_back("sm80");
  if (here.sm90_image) out.push_back("sm90");
  return out;
}

std::vector<std::string> available_kernels() { return available_kernels(current_device_kernels()); }

std::string kernel_geometry(const std::string& kernel) {
  return kernel.substr(0, kernel.find('.'));
}

std::vector<std::string> kernel_names() {
  std::vector<std::string> out{"auto", "sm90", "sm80"};
  for (kernels::Sm90Kernel k : kernels::sm90_kernels_compiled())
    out.push_back(fmt::format("sm90.{}", kernels::sm90_kernel_name(k)));
  return out;
}

namespace detail {
kernels::Sm90Kernel hopper_kernel(const std::string& kernel) {
  kernels::Sm90Kernel k = kernels::Sm90Kernel::kDefault;
  const size_t dot = kernel.find('.');
  if (dot == std::string::npos) return k;
  if (kernel_geometry(kernel) != "sm90" ||
      !kernels::parse_sm90_kernel(kernel.substr(dot + 1).c_str(), &k) ||
      k == kernels::Sm90Kernel::kDefault)
    fail(ExitCode::kUsage,
         "unknown kernel '{}' (known: auto, sm90, sm80, sm90.pingpong, sm90.warpgroup, and the "
         "experiments sm90.serial, sm90.grid)",
         kernel);
  return k;
}
}  // namespace detail

std::string choose_kernel(const std::string& kernel, const DeviceKernels& here) {
  const std::string geometry = kernel_geometry(kernel);
  if (geometry != "auto" && geometry != "sm90" && geometry != "sm80")
    fail(ExitCode::kUsage, "unknown kernel '{}' (known: auto, sm90, sm80, sm90.NAME)", kernel);
  const kernels::Sm90Kernel hopper = detail::hopper_kernel(kernel);
  if (!here.device) fail(ExitCode::kNoDevice, "kernel {}: no CUDA device", kernel);
  const auto avail = available_kernels(here);
  auto has = [&](const char* v) { return std::find(avail.begin(), avail.end(), v) != avail.end(); };
  if (kernel == "auto") {
    if (here.major == 9 && here.minor == 0 && has("sm90")) return "sm90";
    if (has("sm80")) return "sm80";
  } else if (has(geometry.c_str())) {
    if (hopper != kernels::Sm90Kernel::kDefault &&
        std::find(here.sm90_kernels.begin(), here.sm90_kernels.end(), hopper) ==
            here.sm90_kernels.end())
      fail(ExitCode::kNoDevice,
           "kernel {} is not compiled into this build (an experiment: configure with "
           "-DSPARGE_KERNEL_EXPERIMENTS=ON)",
           kernel);
    return kernel;
  }
  const std::string have = avail.empty() ? "none" : fmt::format("{}", fmt::join(avail, ", "));
  // A kernel the GPU itself cannot run is the caller's choice to change (use another kernel);
  // one this GPU could run but the build lacks is missing software.
  const bool gpu_can = geometry == "sm90" ? here.major == 9 && here.minor == 0 : here.major >= 8;
  if (kernel != "auto" && !gpu_can)
    fail(ExitCode::kUsage,
         "kernel {} cannot run on this GPU (compute capability {}.{}; available: {})", kernel,
         here.major, here.minor, have);
  fail(ExitCode::kNoDevice, "kernel {} not available on this device/build (available: {})", kernel,
       have);
}

std::string resolve_kernel(const std::string& kernel) {
  return choose_kernel(kernel, current_device_kernels());
}

}  // namespace sparge::runtime
