// The persistent sm90 kernel's tile counter lives in the Prepared inputs (runtime::quantize
// allocates it zeroed once) and each launch leaves it zero again: a second launch on the same
// Prepared must claim every tile again, so its output equals the first, and the counter reads
// zero after both. (Were the reset missing, the second launch's CTAs would claim tiles past the
// end and leave most of the output unwritten.)
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

#include "kernels/api.h"
#include "runtime/runtime.hpp"

namespace rt = sparge::runtime;
namespace ref = sparge::ref;

TEST(TileCounter, ReusedAcrossLaunchesAndLeftZero) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) GTEST_SKIP() << "no CUDA device";
  if (!sparge::kernels::attention_sm90_available()) GTEST_SKIP() << "no sm90 kernel here";
  at::manual_seed(7);
  // D = 128 runs the persistent kernel (pingpong); 4 x 40 = 160 tiles > 132 SMs, so CTAs claim
  // tiles from the counter.
  const auto opts = at::TensorOptions(at::kHalf).device(at::kCUDA);
  const at::Tensor q = at::randn({1, 4, 5000, 128}, opts), k = at::randn({1, 4, 5000, 128}, opts),
                   v = at::randn({1, 4, 5000, 128}, opts);
  const ref::Geometry g = ref::geometry_by_name("sm90");
  const rt::Prepared p =
      rt::prepare(q, k, v, g, rt::Thresholds::uniform(4, 0.9f, -1.0f, q.device()), rt::Options{});
  ASSERT_TRUE(p.tile_counter.defined());
  std::vector<at::Tensor> outs;
  for (int launch = 0; launch < 3; ++launch) {
    outs.push_back(at::empty({1, 4, 5000, 128}, opts));
    rt::run_attention(p, outs.back(), at::Tensor(), "sm90");
  }
  EXPECT_EQ(p.tile_counter.cpu().abs().sum().item<int>(), 0);
  EXPECT_TRUE(at::equal(outs[0], outs[1]));
  EXPECT_TRUE(at::equal(outs[0], outs[2]));
  EXPECT_TRUE(outs[0].isfinite().all().item<bool>());
  EXPECT_GT(outs[0].abs().sum().item<float>(), 0.f);
}
