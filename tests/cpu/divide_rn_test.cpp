// kernels::DivideRn, the V pass's division by a channel scale, against the IEEE division it
// replaces: the fp32 quotient for fp16 values, and its e4m3 rounding (what v8 stores) for bf16.
#include "kernels/common/divide_rn.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "reference/reference.hpp"

using sparge::kernels::DivideRn;

namespace {

// Every finite value of a 16-bit format, as fp32 (exact), in order of magnitude.
std::vector<float> all_values(at::ScalarType t) {
  at::Tensor bits = at::arange(65536, at::kInt).to(at::kShort);
  at::Tensor v = bits.view(t).to(at::kFloat);
  v = v.index({at::isfinite(v)});
  v = v.index({at::argsort(v.abs())});
  return {v.data_ptr<float>(), v.data_ptr<float>() + v.numel()};
}

// The V pass's domain: channel amax a positive value of the format, scale = amax / 448 in fp32
// (kv_finalize), dividends |x| <= amax. Every `step`-th amax, plus the 64 smallest (the tiny
// divisors of bf16, below the 2^-100 rescale); every amax with SPARGE_EXHAUSTIVE set (the whole
// domain: ~2 billion pairs, minutes).
template <class Check>
void for_each_channel(const std::vector<float>& v, int step, Check check) {
  if (std::getenv("SPARGE_EXHAUSTIVE") != nullptr) step = 1;
  std::vector<float> amaxes;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] <= 0.f) continue;
    if (amaxes.size() < 64 || i % step == 0) amaxes.push_back(v[i]);
  }
  for (float amax : amaxes) {
    std::vector<float> x;
    for (float a : v) {
      if (std::fabs(a) > amax) break;
      x.push_back(a);
    }
    check(amax / 448.f, x);
  }
}

}  // namespace

TEST(DivideRn, Fp16QuotientsAreTheDivisions) {
  const std::vector<float> v = all_values(at::kHalf);
  int64_t pairs = 0, wrong = 0;
  for_each_channel(v, 7, [&](float b, const std::vector<float>& x) {
    const DivideRn div(b);
    for (float a : x) {
      ++pairs;
      if (std::bit_cast<uint32_t>(div(a)) != std::bit_cast<uint32_t>(a / b)) {
        if (++wrong <= 5) ADD_FAILURE() << std::hexfloat << a << " / " << b;
      }
    }
  });
  EXPECT_GT(pairs, 50'000'000);  // the check covers the domain, not a corner of it
  EXPECT_EQ(wrong, 0);
}

TEST(DivideRn, Bf16QuotientsRoundToTheDivisionsE4m3) {
  const std::vector<float> v = all_values(at::kBFloat16);
  int64_t pairs = 0, fp32_off = 0;
  for_each_channel(v, 97, [&](float b, const std::vector<float>& x) {
    const DivideRn div(b);
    std::vector<float> got(x.size()), want(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      got[i] = div(x[i]);
      want[i] = x[i] / b;
      fp32_off += std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i]);
    }
    pairs += static_cast<int64_t>(x.size());
    const at::Tensor g = sparge::ref::round_e4m3(at::from_blob(got.data(), {(int64_t)got.size()}));
    const at::Tensor w =
        sparge::ref::round_e4m3(at::from_blob(want.data(), {(int64_t)want.size()}));
    // Bitwise, so that a sign of zero counts: -0 and +0 are different e4m3 bytes.
    ASSERT_TRUE(at::equal(g.view(at::kInt), w.view(at::kInt))) << std::hexfloat << "b = " << b;
  });
  EXPECT_GT(pairs, 5'000'000);
  // Subnormal dividends leave an inexact residual: their quotients, all far below e4m3's
  // smallest value, can be an ulp off in fp32 (2 million of the 2 billion pairs of the whole
  // domain). That is why this test compares e4m3.
  RecordProperty("fp32_ulp_off", std::to_string(fp32_off));
}

TEST(DivideRn, SignedZerosAndTinyDivisors) {
  const DivideRn one(1.f);
  EXPECT_TRUE(std::signbit(one(-0.f)));
  EXPECT_FALSE(std::signbit(one(0.f)));
  // bf16's smallest amax gives a subnormal fp32 scale: rescaled by 2^64, still exact.
  const float b = std::ldexp(1.f, -133) / 448.f;
  const DivideRn tiny(b);
  EXPECT_EQ(tiny(std::ldexp(1.f, -133)), std::ldexp(1.f, -133) / b);
  EXPECT_EQ(tiny(-std::ldexp(3.f, -135)), -std::ldexp(3.f, -135) / b);
}
