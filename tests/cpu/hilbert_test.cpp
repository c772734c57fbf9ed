// Generalised 3-D Hilbert permutation: a permutation for any sizes, grid-neighbour steps where
// the curve guarantees them, text tokens in place, apply/invert round trip, and attention
// equivariance.
#include "reference/hilbert.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <set>

#include "common/error.hpp"
#include "reference/reference.hpp"

namespace ref = sparge::ref;

namespace {

uint64_t fresh_seed() { return std::random_device{}(); }

struct StepStats {
  int non_unit = 0;  // steps with Manhattan distance != 1
  int max_axis = 0;  // largest change of one coordinate in one step
};

StepStats steps(const std::vector<std::array<int, 3>>& c) {
  StepStats s;
  for (size_t i = 1; i < c.size(); ++i) {
    int manhattan = 0;
    for (int a = 0; a < 3; ++a) {
      const int d = std::abs(c[i][a] - c[i - 1][a]);
      manhattan += d;
      s.max_axis = std::max(s.max_axis, d);
    }
    s.non_unit += manhattan != 1;
  }
  return s;
}

bool even_or_one(int n) { return n == 1 || n % 2 == 0; }

}  // namespace

TEST(Hilbert, IsAPermutationOfTheGridForManySizes) {
  for (int T = 1; T <= 9; ++T) {
    for (int H = 1; H <= 11; ++H) {
      for (int W = 1; W <= 13; ++W) {
        const auto c = ref::hilbert_curve(T, H, W);
        ASSERT_EQ(c.size(), static_cast<size_t>(T * H * W)) << T << "x" << H << "x" << W;
        std::set<std::array<int, 3>> seen(c.begin(), c.end());
        ASSERT_EQ(seen.size(), c.size()) << T << "x" << H << "x" << W;
        for (const auto& p : c) {
          ASSERT_TRUE(p[0] >= 0 && p[0] < T && p[1] >= 0 && p[1] < H && p[2] >= 0 && p[2] < W);
        }
        EXPECT_EQ(c.front(), (std::array<int, 3>{0, 0, 0}));
      }
    }
  }
  // Real latent grids, primes and a long thin one.
  for (auto [T, H, W] : std::vector<std::array<int, 3>>{
           {13, 30, 45}, {16, 30, 44}, {1, 64, 64}, {7, 11, 13}, {2, 97, 3}, {31, 1, 1}}) {
    const auto perm = ref::hilbert_permutation(T, H, W, 0, 0);
    std::vector<int64_t> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i) ASSERT_EQ(sorted[i], static_cast<int64_t>(i));
  }
}

TEST(Hilbert, ConsecutivePointsAreNeighbours) {
  // Guarantee: with every dimension even (or 1), every step is a unit step. With odd sizes a
  // Hamiltonian path between the curve's corners may not exist (parity), so the generalised curve
  // takes a few diagonal steps; each coordinate still changes by at most 1.
  // 2-D (T = 1): a diagonal step occurs exactly when the longer side is odd and the shorter even.
  for (int T = 1; T <= 8; ++T) {
    for (int H = 1; H <= 12; ++H) {
      for (int W = 1; W <= 12; ++W) {
        const StepStats s = steps(ref::hilbert_curve(T, H, W));
        SCOPED_TRACE(::testing::Message() << T << "x" << H << "x" << W);
        EXPECT_LE(s.max_axis, 1);
        if (even_or_one(T) && even_or_one(H) && even_or_one(W)) EXPECT_EQ(s.non_unit, 0);
        if (T == 1 && H > 1 && W > 1) {
          const int lo = std::min(H, W), hi = std::max(H, W);
          EXPECT_EQ(s.non_unit > 0, hi % 2 == 1 && lo % 2 == 0);
        }
      }
    }
  }
  EXPECT_EQ(steps(ref::hilbert_curve(16, 30, 44)).non_unit, 0);
  // CogVideoX's 13 x 30 x 45 latent grid: diagonal steps stay rare (measured 175 of 17549 = 1 %).
  const StepStats cog = steps(ref::hilbert_curve(13, 30, 45));
  EXPECT_LE(cog.max_axis, 1);
  EXPECT_LT(cog.non_unit, 17549 / 50);
}

TEST(Hilbert, CurveIsLocal) {
  // A Hilbert order keeps blocks compact: 64 consecutive points of a 16^3 curve span a 4x4x4 box
  // (the curve visits aligned sub-cubes in turn), whereas row-major spans 1x4x16.
  const auto c = ref::hilbert_curve(16, 16, 16);
  for (size_t start = 0; start < c.size(); start += 64) {
    std::array<int, 3> lo{99, 99, 99}, hi{-1, -1, -1};
    for (size_t i = start; i < start + 64; ++i) {
      for (int a = 0; a < 3; ++a) {
        lo[a] = std::min(lo[a], c[i][a]);
        hi[a] = std::max(hi[a], c[i][a]);
      }
    }
    for (int a = 0; a < 3; ++a) EXPECT_EQ(hi[a] - lo[a], 3) << "block at " << start;
  }
}

TEST(Hilbert, TextTokensStayInPlaceAndInverseRoundTrips) {
  const int prefix = 5, suffix = 3, T = 3, H = 4, W = 5;
  const auto perm = ref::hilbert_permutation(T, H, W, prefix, suffix);
  const int64_t n = prefix + T * H * W + suffix;
  ASSERT_EQ(static_cast<int64_t>(perm.size()), n);
  for (int i = 0; i < prefix; ++i) EXPECT_EQ(perm[i], i);
  for (int i = 0; i < suffix; ++i) EXPECT_EQ(perm[n - 1 - i], n - 1 - i);
  for (int64_t k = prefix; k < n - suffix; ++k) {
    EXPECT_GE(perm[k], prefix);
    EXPECT_LT(perm[k], n - suffix);
  }
  // Visual index layout: the k-th curve point (t, h, w) maps to prefix + (t * H + h) * W + w.
  const auto curve = ref::hilbert_curve(T, H, W);
  for (size_t k = 0; k < curve.size(); ++k) {
    EXPECT_EQ(perm[prefix + k], prefix + (curve[k][0] * H + curve[k][1]) * W + curve[k][2]);
  }
  const auto inv = ref::inverse_permutation(perm);
  for (int64_t k = 0; k < n; ++k) EXPECT_EQ(inv[perm[k]], k);

  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  at::manual_seed(seed);
  at::Tensor x = at::randn({2, 3, n, 8});
  at::Tensor xp = ref::apply_permutation(x, perm);
  EXPECT_FALSE(at::equal(xp, x));
  EXPECT_TRUE(at::equal(xp.select(2, prefix + 1), x.select(2, perm[prefix + 1])));
  EXPECT_TRUE(at::equal(ref::invert_permutation(xp, perm), x));
  EXPECT_TRUE(at::equal(ref::apply_permutation(ref::invert_permutation(x, perm), perm), x));
}

TEST(Hilbert, AttentionIsEquivariantUnderThePermutation) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  at::manual_seed(seed);
  const auto perm = ref::hilbert_permutation(3, 6, 7, 4, 2);
  const int64_t n = perm.size();
  at::Tensor q = at::randn({1, 2, n, 16}, at::kDouble), k = at::randn({1, 2, n, 16}, at::kDouble);
  at::Tensor v = at::randn({1, 2, n, 16}, at::kDouble);
  at::Tensor o = ref::dense_attention(q, k, v, {});
  at::Tensor o_perm =
      ref::dense_attention(ref::apply_permutation(q, perm), ref::apply_permutation(k, perm),
                           ref::apply_permutation(v, perm), {});
  // Only the summation order of the softmax and P·V changes: fp64 rounding, ~1e-16 relative.
  EXPECT_TRUE(at::allclose(ref::invert_permutation(o_perm, perm), o, 1e-12, 1e-12));
}

TEST(Hilbert, BadArgumentsAreUsageErrors) {
  auto code = [](auto&& f) {
    try {
      f();
    } catch (const sparge::Error& e) {
      return e.code();
    }
    return sparge::ExitCode::kOk;
  };
  EXPECT_EQ(code([] { ref::hilbert_curve(0, 4, 4); }), sparge::ExitCode::kUsage);
  EXPECT_EQ(code([] { ref::hilbert_permutation(1, 4, 4, -1, 0); }), sparge::ExitCode::kUsage);
  EXPECT_EQ(code([] { ref::inverse_permutation({0, 0, 1}); }), sparge::ExitCode::kUsage);
  EXPECT_EQ(code([] {
              ref::apply_permutation(at::zeros({1, 1, 5, 2}), {0, 1, 2});
            }),
            sparge::ExitCode::kUsage);
}
