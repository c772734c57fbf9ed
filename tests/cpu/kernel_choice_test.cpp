// The runtime's choice of kernel (runtime::choose_kernel) and its one sm80/sm90 dispatch
// (runtime::launch_attention): which exit code each refusal carries. Runs without a GPU: the
// device is described by a DeviceKernels, and the launches are refused before touching one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "kernels/api.h"
#include "kernels/params.h"
#include "runtime/runtime.hpp"

namespace {

using sparge::ExitCode;
namespace rt = sparge::runtime;

// The exit code of the sparge::Error f throws (kOk if none).
template <typename F>
ExitCode code_of(F&& f) {
  try {
    f();
  } catch (const sparge::Error& e) {
    return e.code();
  }
  return ExitCode::kOk;
}

rt::DeviceKernels device(int major, int minor, bool sm90_image) {
  return {true, major, minor, sm90_image};
}

TEST(KernelChoice, AutoPicksTheDevicesPath) {
  EXPECT_EQ(rt::choose_kernel("auto", device(9, 0, true)), "sm90");
  EXPECT_EQ(rt::choose_kernel("auto", device(9, 0, false)), "sm80") << "build without sm_90a";
  EXPECT_EQ(rt::choose_kernel("auto", device(8, 0, false)), "sm80");
  EXPECT_EQ(rt::choose_kernel("auto", device(12, 0, false)), "sm80");
  EXPECT_EQ(rt::choose_kernel("sm80", device(9, 0, true)), "sm80");
  EXPECT_EQ(rt::choose_kernel("sm90", device(9, 0, true)), "sm90");
}

TEST(KernelChoice, KernelTheGpuCannotRunIsAUsageError) {
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm90", device(8, 0, false)); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm90", device(8, 9, false)); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm80", device(7, 5, false)); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm70", device(9, 0, true)); }), ExitCode::kUsage);
  try {
    rt::choose_kernel("sm90", device(8, 0, false));
  } catch (const sparge::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cannot run on this GPU (compute capability 8.0; available: sm80)"),
              std::string::npos)
        << what;
  }
}

TEST(KernelChoice, MissingDeviceOrBuildIsNoDevice) {
  EXPECT_EQ(code_of([] { rt::choose_kernel("auto", rt::DeviceKernels{}); }), ExitCode::kNoDevice);
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm80", rt::DeviceKernels{}); }), ExitCode::kNoDevice);
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm90", device(9, 0, false)); }), ExitCode::kNoDevice)
      << "an H100, but a build without sm_90a";
  EXPECT_EQ(code_of([] { rt::choose_kernel("auto", device(7, 5, false)); }), ExitCode::kNoDevice)
      << "no kernel for this GPU at all";
}

// "sm90.NAME" forces one Hopper kernel: its geometry is sm90's, it is refused like sm90 where
// sm90 cannot run, an unknown NAME is a usage error and a known one this build did not compile
// (an experiment) is missing software.
TEST(KernelChoice, HopperKernelsByName) {
  const rt::DeviceKernels h100 = device(9, 0, true);
  EXPECT_EQ(rt::choose_kernel("sm90.warpgroup", h100), "sm90.warpgroup");
  EXPECT_EQ(rt::choose_kernel("sm90.pingpong", h100), "sm90.pingpong");
  EXPECT_EQ(rt::kernel_geometry("sm90.pingpong"), "sm90");
  EXPECT_EQ(rt::kernel_geometry("sm80"), "sm80");
  EXPECT_EQ(rt::kernel_geometry("auto"), "auto");
  EXPECT_EQ(code_of([&] { rt::choose_kernel("sm90.v9", h100); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([&] { rt::choose_kernel("sm90.default", h100); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([&] { rt::choose_kernel("sm80.warpgroup", h100); }), ExitCode::kUsage);
  EXPECT_EQ(code_of([&] { rt::choose_kernel("sm90.serial", h100); }), ExitCode::kNoDevice)
      << "an experiment this build did not compile";
  rt::DeviceKernels with_experiments = h100;
  with_experiments.sm90_kernels.push_back(sparge::kernels::Sm90Kernel::kSerial);
  EXPECT_EQ(rt::choose_kernel("sm90.serial", with_experiments), "sm90.serial");
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm90.warpgroup", device(8, 0, false)); }),
            ExitCode::kUsage);
  EXPECT_EQ(code_of([] { rt::choose_kernel("sm90.warpgroup", device(9, 0, false)); }),
            ExitCode::kNoDevice);
  const std::vector<std::string> names = rt::kernel_names();
  for (const char* want : {"auto", "sm90", "sm80", "sm90.pingpong", "sm90.warpgroup"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
}

TEST(KernelChoice, AvailableKernelsOfADevice) {
  EXPECT_TRUE(rt::available_kernels(rt::DeviceKernels{}).empty());
  EXPECT_EQ(rt::available_kernels(device(8, 6, false)), (std::vector<std::string>{"sm80"}));
  EXPECT_EQ(rt::available_kernels(device(9, 0, true)), (std::vector<std::string>{"sm80", "sm90"}));
}

// Consistent 128 x 128 (sm90) or 128 x 64 (sm80) problems with dummy, never dereferenced
// pointers: the launchers refuse them before any GPU work.
sparge::kernels::AttentionParams params(int block_k, int head_dim) {
  alignas(16) static int8_t dummy[64];
  static float fdummy[4];
  sparge::kernels::AttentionParams p;
  p.q8 = p.k8 = dummy;
  p.v = dummy;
  p.o = dummy;
  p.q_scale = p.k_scale = p.v_scale = fdummy;
  p.batch = p.heads = p.kv_heads = 1;
  p.seq_q = 200;
  p.seq_k = 300;
  p.num_q_blocks = 2;
  p.num_k_blocks = (300 + block_k - 1) / block_k;
  p.head_dim = head_dim;
  return p;
}

TEST(KernelDispatchErrors, ParametersTheKernelCannotRunAreUsageErrors) {
  for (const char* kernel : {"sm80", "sm90"}) {
    sparge::kernels::AttentionParams p = params(std::string(kernel) == "sm90" ? 128 : 64, 64);
    p.num_k_blocks += 1;  // inconsistent with seq_k
    EXPECT_EQ(code_of([&] { rt::launch_attention(kernel, p, nullptr); }), ExitCode::kUsage)
        << kernel;
  }
  EXPECT_EQ(code_of([] { rt::launch_attention("sm80", params(64, 96), nullptr); }),
            ExitCode::kUsage)
      << "head dim not compiled";
}

// Valid parameters for sm90 on a machine that cannot run it: classed as the kernel choice is
// (no device here: kNoDevice; an sm80 GPU: kUsage), never as an internal error.
TEST(KernelDispatchErrors, Sm90WhereItCannotRunIsClassedAsTheChoice) {
  if (sparge::kernels::attention_sm90_available()) GTEST_SKIP() << "sm90 runs here";
  const ExitCode want = code_of([] { rt::choose_kernel("sm90", rt::current_device_kernels()); });
  EXPECT_NE(want, ExitCode::kOk);
  EXPECT_EQ(code_of([] { rt::launch_attention("sm90", params(128, 64), nullptr); }), want);
}

}  // namespace
