// CPU reference: block statistics (pooling, self-similarity, INT8) and FP8 e4m3 quantisation
// against hand-computed cases.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/params.h"
#include "reference/reference.hpp"

namespace ref = sparge::ref;

namespace {

// [1, 1, N, D] fp32 tensor from rows.
at::Tensor rows(std::vector<std::vector<float>> r) {
  const int64_t n = r.size(), d = r[0].size();
  at::Tensor t = at::empty({1, 1, n, d}, at::kFloat);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) t[0][0][i][j] = r[i][j];
  return t;
}

uint64_t fresh_seed() { return std::random_device{}(); }

}  // namespace

TEST(ReferenceQuant, Int8RoundsHalfToEvenAfterMultiplyingByTheInverse) {
  // Q takes one scale per token row. Row 0 (amax 127, inv = 1): 62.5 -> 62 (half to even).
  // Row 2 (amax 3): x = 0.0590551198f; x * float(127/3) is exactly 2.5 in fp32 -> 2, although
  // the exact quotient 2.50000007 would round to 3: the contract multiplies by the fp32 inverse.
  at::Tensor q = rows({{127.f, 62.5f}, {-0.5f, 2.5f}, {3.f, 0.0590551198f}, {-1.5f, 0.f}});
  ref::BlockStats s = ref::q_block_stats(q, 2);
  ASSERT_EQ(s.values.scalar_type(), at::kChar);
  ASSERT_EQ(s.values.sizes(), q.sizes());
  // Row 1: -0.5 * 50.8 = -25.4 -> -25; row 3: -1.5 * 84.666664f = -127.
  const std::vector<int> want = {127, 62, -25, 127, 127, 2, -127, 0};
  at::Tensor flat = s.values.flatten();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(flat[i].item<int>(), want[i]) << "element " << i;
  ASSERT_EQ(s.scale.sizes(), (std::vector<int64_t>{1, 1, 4}));  // one per row
  const std::vector<float> want_scale = {127.f / 127.f, 2.5f / 127.f, 3.f / 127.f, 1.5f / 127.f};
  for (int r = 0; r < 4; ++r) EXPECT_FLOAT_EQ(s.scale[0][0][r].item<float>(), want_scale[r]);
}

// K keeps one scale per block: the block's largest row sets the step of both rows. Row 0 is zero,
// so the smoothing mean (tokens 0, 16, ...: row 0 alone here) is zero and K' = K.
TEST(ReferenceQuant, KKeepsOneInt8ScalePerBlock) {
  at::Tensor k = rows({{0.f, 0.f}, {-0.5f, 2.5f}, {127.f, 62.5f}, {-1.5f, 0.f}});
  ref::BlockStats s = ref::k_block_stats(k, 2);
  ASSERT_EQ(s.scale.sizes(), (std::vector<int64_t>{1, 1, 2}));  // one per block
  EXPECT_FLOAT_EQ(s.scale[0][0][0].item<float>(), 2.5f / 127.f);
  EXPECT_FLOAT_EQ(s.scale[0][0][1].item<float>(), 1.f);
  // Row 3 at block 1's step of 1: -1.5 -> -2 (half to even), where a row scale would give -127.
  const std::vector<int> want = {0, 0, -25, 127, 127, 62, -2, 0};
  at::Tensor flat = s.values.flatten();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(flat[i].item<int>(), want[i]) << "element " << i;
}

TEST(ReferenceQuant, Int8ZeroBlockHasUnitScaleAndPartialBlockIgnoresPadding) {
  // Block 0 is all zeros; block 1 is partial (one valid row of a block of 4).
  at::Tensor q = rows({{0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {-2.f, 1.f}});
  ref::BlockStats s = ref::q_block_stats(q, 4);
  ASSERT_EQ(s.scale.size(2), 8);  // one per row of the two padded blocks
  for (int r = 0; r < 4; ++r) EXPECT_EQ(s.scale[0][0][r].item<float>(), 1.f) << "zero row " << r;
  EXPECT_EQ(s.values.narrow(2, 0, 4).abs().sum().item<int64_t>(), 0);
  EXPECT_FLOAT_EQ(s.scale[0][0][4].item<float>(), 2.f / 127.f);
  for (int r = 5; r < 8; ++r) EXPECT_EQ(s.scale[0][0][r].item<float>(), 1.f) << "padded row " << r;
  EXPECT_EQ(s.values[0][0][4][0].item<int>(), -127);
  // 1 * 63.5 = 63.5 -> 64 (half to even)
  EXPECT_EQ(s.values[0][0][4][1].item<int>(), 64);
  // pooled and sim use the valid row only: mean = the row, sim of one row = 1.
  EXPECT_FLOAT_EQ(s.pooled[0][0][1][0].item<float>(), -2.f);
  EXPECT_FLOAT_EQ(s.pooled[0][0][1][1].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(s.sim[0][0][1].item<float>(), 1.f);
}

TEST(ReferenceQuant, SelfSimilarityHandCases) {
  // Blocks of 2 rows: orthogonal rows -> ||(1,1)||^2 / 4 = 0.5; parallel rows of different norms
  // -> 1; a zero row stays zero -> ||(1,0)||^2 / 4 = 0.25; opposite rows -> 0.
  at::Tensor q = rows({{1, 0}, {0, 1}, {1, 0}, {2, 0}, {0, 0}, {3, 0}, {1, 1}, {-1, -1}, {5, 5}});
  ref::BlockStats s = ref::q_block_stats(q, 2);
  ASSERT_EQ(s.sim.size(2), 5);
  EXPECT_FLOAT_EQ(s.sim[0][0][0].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ(s.sim[0][0][1].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(s.sim[0][0][2].item<float>(), 0.25f);
  EXPECT_NEAR(s.sim[0][0][3].item<float>(), 0.f, 1e-7f);  // 1/sqrt(2) - 1/sqrt(2) in fp32
  EXPECT_FLOAT_EQ(s.sim[0][0][4].item<float>(), 1.f);     // partial block: one valid row
  EXPECT_FLOAT_EQ(s.pooled[0][0][1][0].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(s.pooled[0][0][4][1].item<float>(), 5.f);  // divided by 1 valid row, not 2
}

TEST(ReferenceQuant, KIsSmoothedByTheMeanOfEverySixteenthToken) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  at::manual_seed(seed);
  at::Tensor k = at::randn({2, 3, 100, 16});
  // Shifting every token of a head by the same vector changes nothing after smoothing (up to
  // fp32 rounding of the mean: the shift is O(10), values O(1), so ~1e-5 absolute).
  at::Tensor shift = at::randn({2, 3, 1, 16}) * 10;
  ref::BlockStats a = ref::k_block_stats(k, 32), b = ref::k_block_stats(k + shift, 32);
  EXPECT_TRUE(at::allclose(a.pooled, b.pooled, 0, 1e-4));
  EXPECT_TRUE(at::allclose(a.sim, b.sim, 0, 1e-4));
  // The mean is taken over tokens 0, 16, ..., 96 only (sparge::kernels::kKMeanStride): with every
  // other token of a head offset by +5, K' = K - mean(sampled tokens) keeps that offset, so the
  // pooled means weighted by valid rows (32, 32, 32, 4) sum to 5 x (100 - 7) per channel, not 0
  // (the full mean would give 0).
  at::Tensor sampled = at::zeros({100}, at::kBool);
  sampled.slice(0, 0, 100, sparge::kernels::kKMeanStride).fill_(true);
  at::Tensor offset = at::where(sampled, 0.f, 5.f).view({1, 1, 100, 1});
  ref::BlockStats c = ref::k_block_stats(k + offset, 32);
  at::Tensor w = at::tensor({32.f, 32.f, 32.f, 4.f}).view({1, 1, 4, 1});
  at::Tensor ksum = (k - k.slice(2, 0, 100, sparge::kernels::kKMeanStride).mean(2, true)).sum(2);
  EXPECT_TRUE(at::allclose((c.pooled * w).sum(2), ksum + 5.f * 93.f, 1e-5, 1e-3));
  EXPECT_EQ(sparge::kernels::kKMeanStride, 16);  // the sample the docs and the 93 above describe
}

TEST(ReferenceQuant, E4m3RoundsToNearestEvenAndSaturates) {
  // Hand-computed e4m3 (fn) values: spacing 0.125 in [1, 2), 16 in [128, 256), 32 in [256, 448];
  // subnormal step 2^-9.
  struct Case {
    float in, out;
  } cases[] = {
      {448.f, 448.f},
      {500.f, 448.f},
      {-1000.f, -448.f},
      {1.f, 1.f},
      {1.0625f, 1.f},
      {1.1875f, 1.25f},
      {1.06f, 1.f},
      {1.07f, 1.125f},
      {232.f, 224.f},
      {248.f, 256.f},
      {240.f, 240.f},
      {-3.3f, -3.25f},
      {0.f, 0.f},
      {std::ldexp(1.f, -10), 0.f},
      {3 * std::ldexp(1.f, -10), std::ldexp(1.f, -8)},
      {std::ldexp(1.f, -9), std::ldexp(1.f, -9)},
      {432.f, 448.f},
      {416.f, 416.f},
  };
  std::vector<float> in;
  for (const auto& c : cases) in.push_back(c.in);
  at::Tensor out = ref::round_e4m3(at::tensor(in));
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i].item<float>(), cases[i].out) << "input " << cases[i].in;
  }
}

TEST(ReferenceQuant, VFp8UsesPerChannelScaleOverAllTokens) {
  // Channel 0: amax 2 -> scale 2/448, values 1 -> 224, -2 -> -448, 0.5 -> 112.
  // Channel 1: all zero -> scale 1, values 0.
  at::Tensor v = rows({{1.f, 0.f}, {-2.f, 0.f}, {0.5f, 0.f}});
  ref::VFp8 q = ref::quantize_v_fp8(v);
  ASSERT_EQ(q.scale.sizes(), (std::vector<int64_t>{1, 1, 2}));
  EXPECT_FLOAT_EQ(q.scale[0][0][0].item<float>(), 2.f / 448.f);
  EXPECT_EQ(q.scale[0][0][1].item<float>(), 1.f);
  EXPECT_EQ(q.values[0][0][0][0].item<float>(), 224.f);
  EXPECT_EQ(q.values[0][0][1][0].item<float>(), -448.f);
  EXPECT_EQ(q.values[0][0][2][0].item<float>(), 112.f);
  EXPECT_EQ(q.values.select(3, 1).abs().sum().item<float>(), 0.f);
}
