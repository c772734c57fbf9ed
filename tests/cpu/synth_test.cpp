// Synthetic dumps (src/synth): determinism, shapes, options validation, and the property the
// generator exists for: structured heads concentrate attention mass in few blocks, noise does not.
#include "synth/synth.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>

#include "common/error.hpp"

using sparge::ExitCode;
namespace synth = sparge::synth;

namespace {

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || !a.sizes().equals(b.sizes())) return false;
  const auto int_type = a.element_size() == 2 ? at::kShort : at::kInt;
  return at::equal(a.contiguous().view(int_type), b.contiguous().view(int_type));
}

synth::Options video() {
  synth::Options o;
  o.kind = synth::Kind::kVideo;
  o.grid = std::array<int, 3>{4, 16, 16};
  o.text_prefix = 64;
  o.heads = 4;
  o.head_dim = 64;
  return o;
}

synth::Options llm() {
  synth::Options o;
  o.kind = synth::Kind::kLlm;
  o.seq = 1024;
  o.heads = 4;
  o.head_dim = 64;
  return o;
}

// Mean over query rows of the fraction of (causally valid) key blocks needed to hold `mass` of
// the row's attention: [B, H, N, D] q, [B, Hkv, N, D] k -> one number per query head. This is
// the sparsity an ideal block predictor could reach at TopCdf tau = mass.
std::vector<double> needed_block_fraction(const at::Tensor& q, const at::Tensor& k, bool causal,
                                          int64_t block, double mass) {
  const int64_t heads = q.size(1), group = heads / k.size(1), n = q.size(2);
  const int64_t nk = (n + block - 1) / block;
  std::vector<double> out;
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor qh = q[0][h].to(at::kDouble), kh = k[0][h / group].to(at::kDouble);
    at::Tensor s = at::matmul(qh, kh.t()) / std::sqrt(static_cast<double>(q.size(3)));
    if (causal) s.masked_fill_(at::ones({n, n}, at::kBool).triu(1), -INFINITY);
    at::Tensor p = at::softmax(s, -1);
    // [N, nk] block masses, sorted descending per row; count blocks until the cumsum >= mass.
    at::Tensor blocks = at::constant_pad_nd(p, {0, nk * block - n}).view({n, nk, block}).sum(-1);
    at::Tensor sorted = std::get<0>(blocks.sort(-1, true));
    at::Tensor needed = (sorted.cumsum(-1) < mass).sum(-1) + 1;
    at::Tensor valid = causal ? (at::arange(n, at::kLong) / block + 1).to(at::kDouble)
                              : at::full({n}, static_cast<double>(nk), at::kDouble);
    out.push_back((needed.to(at::kDouble) / valid).mean().item<double>());
  }
  return out;
}

TEST(Synth, DeterministicPerSeed) {
  synth::Options o = video();
  o.kv_heads = 2;
  o.with_o = true;
  const auto a = synth::make_sample(o, 1, 2);
  const auto b = synth::make_sample(o, 1, 2);
  EXPECT_TRUE(same_bits(a.q, b.q));
  EXPECT_TRUE(same_bits(a.k, b.k));
  EXPECT_TRUE(same_bits(a.v, b.v));
  EXPECT_TRUE(same_bits(*a.o, *b.o));
  o.seed = 1;
  const auto c = synth::make_sample(o, 1, 2);
  EXPECT_FALSE(at::equal(a.q, c.q));
  EXPECT_FALSE(at::equal(a.k, c.k));
  EXPECT_FALSE(at::equal(a.v, c.v));
  // Samples and layers are different draws too.
  o.seed = 0;
  EXPECT_FALSE(at::equal(synth::make_sample(o, 1, 3).q, a.q));
  EXPECT_FALSE(at::equal(synth::make_sample(o, 0, 2).q, a.q));
}

TEST(Synth, ShapesDtypesAndOutput) {
  synth::Options o = llm();
  o.seq = 200;
  o.batch = 2;
  o.heads = 6;
  o.kv_heads = 2;
  o.head_dim = 32;
  o.dtype = at::kBFloat16;
  o.with_o = true;
  const auto s = synth::make_sample(o, 0, 0);
  EXPECT_EQ(s.q.sizes(), (std::vector<int64_t>{2, 6, 200, 32}));
  EXPECT_EQ(s.k.sizes(), (std::vector<int64_t>{2, 2, 200, 32}));
  EXPECT_EQ(s.v.sizes(), (std::vector<int64_t>{2, 2, 200, 32}));
  EXPECT_EQ(s.q.scalar_type(), at::kBFloat16);
  ASSERT_TRUE(s.o.has_value());
  // o is the causal dense attention of the stored (rounded) q, k, v.
  const at::Tensor ref =
      synth::dense_attention(s.q, s.k, s.v, true, 1.0 / std::sqrt(32.0)).to(at::kBFloat16);
  EXPECT_TRUE(same_bits(*s.o, ref));
  // First query row attends only to key 0 (causal): o[.., 0, :] = v[.., 0, :] up to bf16 rounding.
  EXPECT_TRUE(at::allclose(s.o->select(2, 0).to(at::kFloat),
                           s.v.select(2, 0).repeat_interleave(3, 1).to(at::kFloat), 0, 1e-2));
  EXPECT_TRUE(at::isfinite(s.q).all().item<bool>());
}

TEST(Synth, StructuredHeadsAreBlockSparseAndNoiseIsNot) {
  // 64-token blocks, the smallest geometry SpargeAttn uses; tau = 0.95 of each row's mass.
  const auto v = synth::make_sample(video(), 0, 0);
  const auto kinds = synth::head_kinds(video());
  const auto fv = needed_block_fraction(v.q, v.k, false, 64, 0.95);
  for (size_t h = 0; h < fv.size(); ++h) {
    const std::string what =
        fmt::format("video head {} ({}) needs {:.2f} of the blocks", h, kinds[h], fv[h]);
    std::printf("%s\n", what.c_str());
    SCOPED_TRACE(what);
    if (kinds[h] == "global") {
      EXPECT_GT(fv[h], 0.5);
    } else {
      EXPECT_LT(fv[h], 0.4);
    }
  }
  const auto l = synth::make_sample(llm(), 0, 0);
  const auto lk = synth::head_kinds(llm());
  const auto fl = needed_block_fraction(l.q, l.k, true, 64, 0.95);
  for (size_t h = 0; h < fl.size(); ++h) {
    const std::string what =
        fmt::format("llm head {} ({}) needs {:.2f} of the blocks", h, lk[h], fl[h]);
    std::printf("%s\n", what.c_str());
    SCOPED_TRACE(what);
    if (lk[h] != "global") EXPECT_LT(fl[h], 0.5);
  }
  synth::Options no = llm();
  no.kind = synth::Kind::kNoise;
  no.seq = 1024;
  const auto n = synth::make_sample(no, 0, 0);
  for (double f : needed_block_fraction(n.q, n.k, false, 64, 0.95)) {
    EXPECT_GT(f, 0.8) << "noise heads must not look sparse";
  }
}

TEST(Synth, StructureIsStableAcrossSamples) {
  // Calibration on some samples must transfer to others: the same head keeps its pattern.
  const auto a = synth::make_sample(video(), 1, 0);
  const auto b = synth::make_sample(video(), 1, 1);
  auto scores = [](const synth::Sample& s) {
    return at::matmul(s.q[0][0].to(at::kFloat), s.k[0][0].to(at::kFloat).t()).flatten();
  };
  const double corr = at::corrcoef(at::stack({scores(a), scores(b)})).index({0, 1}).item<double>();
  EXPECT_GT(corr, 0.8);
}

TEST(Synth, InvalidOptionsAreUsageErrors) {
  auto code = [](const synth::Options& o) {
    try {
      synth::validate(o);
    } catch (const sparge::Error& e) {
      return e.code();
    }
    return ExitCode::kOk;
  };
  synth::Options o = llm();
  EXPECT_EQ(code(o), ExitCode::kOk);
  o.kv_heads = 3;
  EXPECT_EQ(code(o), ExitCode::kUsage);
  o = llm();
  o.seq = 0;
  EXPECT_EQ(code(o), ExitCode::kUsage);
  o = video();
  o.grid.reset();
  EXPECT_EQ(code(o), ExitCode::kUsage);
  o = video();
  o.kind = synth::Kind::kImage;  // image grids have T = 1
  EXPECT_EQ(code(o), ExitCode::kUsage);
  EXPECT_THROW(synth::parse_kind("audio"), sparge::Error);
}

}  // namespace
