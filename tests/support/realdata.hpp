// The real-image dump the GPU tests share (python/sparge_realdata): one photograph (astronaut)
// panned into a [1, heads, 17776, D] fp16 video-token sequence, 226 text tokens + a 13 x 30 x 45
// grid. Generated on first use into SPARGE_REALDATA_DIR (the generator writes atomically, so two
// test processes generating it at once both leave a whole file) and reused after. A missing
// generator or scikit-image throws: on a GPU machine the test fails instead of skipping.
// Needs the SPARGE_PYTHON, SPARGE_PYTHONPATH and SPARGE_REALDATA_DIR definitions of
// tests/CMakeLists.txt (the GPU tests have them).
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <stdexcept>
#include <string>

namespace sparge::test {

inline std::filesystem::path real_image_dump(int64_t head_dim, int heads = 4) {
  const std::filesystem::path dir = SPARGE_REALDATA_DIR;
  std::filesystem::create_directories(dir);
  const std::filesystem::path path =
      dir / fmt::format("astronaut_full_h{}_d{}.h5", heads, head_dim);
  if (std::filesystem::exists(path)) return path;
  const std::string cmd = fmt::format(
      "PYTHONPATH='{}' '{}' -m sparge_realdata -o '{}' --kind video --size full --images "
      "astronaut --heads {} --head-dim {} --dtype float16 --seed 0",
      SPARGE_PYTHONPATH, SPARGE_PYTHON, path.string(), heads, head_dim);
  if (std::system(cmd.c_str()) != 0 || !std::filesystem::exists(path)) {
    throw std::runtime_error("real-image generator failed (needs scikit-image): " + cmd);
  }
  return path;
}

// The parameter of the real-image suites: a kernel geometry ("sm90", "sm80") and a head dim.
struct KernelDim {
  const char* kernel;
  int64_t head_dim;
};
inline void PrintTo(const KernelDim& c, std::ostream* os) { *os << c.kernel << "_d" << c.head_dim; }
inline std::string kernel_dim_name(const ::testing::TestParamInfo<KernelDim>& i) {
  return fmt::format("{}_d{}", i.param.kernel, i.param.head_dim);
}
// Both geometries at both compiled head dims.
inline auto real_image_kernel_dims() {
  return ::testing::Values(KernelDim{"sm90", 64}, KernelDim{"sm90", 128}, KernelDim{"sm80", 64},
                           KernelDim{"sm80", 128});
}

}  // namespace sparge::test
