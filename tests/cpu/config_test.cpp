// Tuned YAML v1: round trip, shortest floats, byte identity, validation errors, SpargeAttn
// spelling.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>

#include "common/error.hpp"
#include "config/tuned.hpp"
#include "support/cli_harness.hpp"

namespace sparge::config {
namespace {

TunedConfig random_config(uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f), um1(-1.0f, 1.0f), lam(-30.0f, 0.0f);
  TunedConfig c;
  c.provenance.version = "0.1.0";
  c.provenance.git = "abc123";
  c.provenance.backend = "cpu";
  c.provenance.device = "cpu";
  c.provenance.dump = "data/with \"quotes\": and, commas.h5";
  c.provenance.dump_hash = "sha1x64m:0123";
  c.provenance.model_id = "test-model";
  c.provenance.samples = {0, 2};
  c.kernel.geometry = ref::hopper_geometry();
  c.budget.l1 = 0.05;
  c.budget.l2 = 0.06;
  c.search.theta_grid = {-1.0f, -0.5f, 0.0f, 0.125f};
  c.search.margin = 0.1;
  for (int l = 0; l < 3; ++l) {
    TunedLayer tl;
    tl.layer = l * 2;
    tl.module = fmt::format("blocks.{}.attn1", l);
    for (int h = 0; h < 5; ++h) {
      tl.tau.push_back(u01(g));
      tl.theta.push_back(um1(g));
      // Every other head without stage 2, and one value that prints in exponent form.
      tl.lambda.push_back(h % 2 ? -std::numeric_limits<float>::infinity() : lam(g));
      tl.sparse.push_back(h != 3);
      tl.sparsity_stage1.push_back(u01(g));
      tl.sparsity_stage12.push_back(u01(g));
      tl.error_stage1.push_back(u01(g) * 1e-5f);
      tl.error_stage12.push_back(u01(g) * 0.06f);
    }
    c.layers.push_back(tl);
  }
  return c;
}

void expect_bits_equal(const std::vector<float>& a, const std::vector<float>& b, uint32_t seed) {
  ASSERT_EQ(a.size(), b.size()) << "seed " << seed;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(a[i]), std::bit_cast<uint32_t>(b[i]))
        << "seed " << seed << " index " << i << ": " << a[i] << " vs " << b[i];
  }
}

TEST(TunedConfig, RoundTripIsExactAndByteIdentical) {
  const uint32_t seed = std::random_device{}();
  TunedConfig c = random_config(seed);
  const std::string y1 = to_yaml(c);
  TunedConfig r = parse_tuned(y1, "mem.yaml", ref::hopper_geometry());
  ASSERT_EQ(r.layers.size(), c.layers.size()) << "seed " << seed;
  for (size_t l = 0; l < c.layers.size(); ++l) {
    expect_bits_equal(r.layers[l].tau, c.layers[l].tau, seed);
    expect_bits_equal(r.layers[l].theta, c.layers[l].theta, seed);
    expect_bits_equal(r.layers[l].lambda, c.layers[l].lambda, seed);
    expect_bits_equal(r.layers[l].sparsity_stage1, c.layers[l].sparsity_stage1, seed);
    expect_bits_equal(r.layers[l].error_stage1, c.layers[l].error_stage1, seed);
    EXPECT_EQ(r.layers[l].sparse, c.layers[l].sparse);
    EXPECT_EQ(r.layers[l].module, c.layers[l].module);
    EXPECT_EQ(r.layers[l].layer, c.layers[l].layer);
  }
  EXPECT_EQ(r.provenance.dump, c.provenance.dump);
  EXPECT_EQ(r.provenance.samples, c.provenance.samples);
  EXPECT_EQ(r.budget.l1, c.budget.l1);
  EXPECT_EQ(r.search.theta_grid, c.search.theta_grid);
  EXPECT_FALSE(r.imported);
  EXPECT_EQ(to_yaml(r), y1) << "rewrite is not byte-identical (seed " << seed << ")";
}

TEST(TunedConfig, FloatsAreShortestAndYaml11Readable) {
  EXPECT_EQ(format_float(0.1f), "0.1");
  EXPECT_EQ(format_float(1.0f), "1");
  EXPECT_EQ(format_float(-std::numeric_limits<float>::infinity()), "-.inf");
  // PyYAML needs a '.' in exponent floats.
  EXPECT_EQ(format_float(1e-5f), "1.0e-05");
  const std::string y = to_yaml(random_config(7));
  EXPECT_EQ(y.find("0.10000000"), std::string::npos);
  EXPECT_NE(y.find("budget: {metric: rel_l1, l1: 0.05, l2: 0.06}"), std::string::npos) << y;
}

TEST(TunedConfig, WriteIsAtomicAndReadable) {
  const auto path = sparge::test_support::scratch_dir("config_test") / "write.yaml";
  auto c = random_config(3);
  write_tuned(path, c);
  auto r = read_tuned(path);
  EXPECT_EQ(to_yaml(r), to_yaml(c));
  for (const auto& e : std::filesystem::directory_iterator(path.parent_path())) {
    EXPECT_EQ(e.path().filename().string().find("write.yaml."), std::string::npos)
        << "temporary left behind: " << e.path();
  }
}

// Replaces the first occurrence of `from` in the YAML and expects exit 78 with `needle` in the
// message.
void expect_invalid(const std::string& from, const std::string& to, const std::string& needle,
                    const std::optional<ref::Geometry>& kernel = std::nullopt) {
  std::string y = to_yaml(random_config(11));
  auto pos = y.find(from);
  ASSERT_NE(pos, std::string::npos) << from;
  y.replace(pos, from.size(), to);
  try {
    parse_tuned(y, "bad.yaml", kernel);
    FAIL() << "accepted: " << to;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kConfigError) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.yaml: "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Same with the fault made in the config before writing it (to_yaml writes what it is given).
void expect_invalid_cfg(const std::function<void(TunedConfig&)>& mutate,
                        const std::string& needle) {
  TunedConfig c = random_config(11);
  mutate(c);
  try {
    parse_tuned(to_yaml(c), "bad.yaml");
    FAIL() << "accepted a config with: " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kConfigError) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TunedConfig, RejectsBadFiles) {
  expect_invalid("schema: sparge.tuned", "schema: sparge.search", "schema: 'sparge.search'");
  expect_invalid("schema_version: 1", "schema_version: 2", "schema_version: 2 is not supported");
  expect_invalid("    heads: 5", "    heads: 6", "layers[0].tau: 5 values, expected 6");
  expect_invalid("    theta: [", "    theta: [0.5, ", "layers[0].theta: 6 values, expected 5");
  expect_invalid_cfg([](TunedConfig& c) { c.layers[0].tau[0] = 1.5f; },
                     "bad.yaml: layers[0].tau[0]: 1.5 is outside [0, 1]");
  expect_invalid_cfg([](TunedConfig& c) { c.layers[1].theta[2] = -1.25f; },
                     "bad.yaml: layers[1].theta[2]: -1.25 is outside [-1, 1]");
  expect_invalid_cfg([](TunedConfig& c) { c.layers[0].lambda[0] = 0.5f; },
                     "bad.yaml: layers[0].lambda[0]: 0.5 must be <= 0");
  expect_invalid_cfg([](TunedConfig& c) { c.layers[2].sparse.pop_back(); },
                     "bad.yaml: layers[2].sparse: 4 values, expected 5 (heads)");
  expect_invalid("kernel: {name: \"sm90\", block_q: 128, block_k: 128, warp_rows: 16, pv: fp8",
                 "kernel: {name: \"sm80\", block_q: 128, block_k: 64, warp_rows: 16, pv: half",
                 "tuned for sm80", ref::hopper_geometry());
  expect_invalid("kernel: {", "kernelx: {", "kernel: missing");
  expect_invalid("margin: 0.1,", "margin: 0.7,",
                 "search.margin: 0.7: expected a number in [0, 0.5]");
  expect_invalid("layers:\n  - layer: 0", "layers:\n  - layer: 2", "layer 2 appears twice");
  expect_invalid("    tau: [", "    tau: [nope, ", "is not a number");
  expect_invalid("schema_version: 1\n", "schema_version: 1\n  bad: [\n", "line ");
}

TEST(TunedConfig, TauPlateauRoundTripsAndIsOffWhenAbsent) {
  TunedConfig c = random_config(5);
  c.search.holdout = "spread";
  c.search.tau_plateau = 0.02;
  std::string y = to_yaml(c);
  const std::string key = ", tau_plateau: 0.02";
  const auto pos = y.find(key);
  ASSERT_NE(pos, std::string::npos) << y;
  EXPECT_EQ(parse_tuned(y, "mem.yaml").search.tau_plateau, 0.02);
  // A config tuned before the guard existed has no key: the sparsest passing point (off).
  y.erase(pos, key.size());
  EXPECT_EQ(parse_tuned(y, "old.yaml").search.tau_plateau, 0.0);
  EXPECT_EQ(TunedConfig{}.search.tau_plateau, 0.0);
  c.search.tau_plateau = 0.25;
  y = to_yaml(c);
  const auto at = y.find("tau_plateau: 0.25");
  ASSERT_NE(at, std::string::npos);
  y.replace(at, 17, "tau_plateau: -1");
  try {
    parse_tuned(y, "bad.yaml");
    FAIL() << "accepted tau_plateau -1";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kConfigError);
    EXPECT_NE(std::string(e.what()).find("search.tau_plateau: -1"), std::string::npos) << e.what();
  }
}

TEST(TunedConfig, SparsityCapRoundTripsPerHeadAndIsAbsentInOldConfigs) {
  TunedConfig c = random_config(5);
  c.search.sparsity_cap = 1.25;
  for (auto& l : c.layers) {
    l.sparsity_cap.clear();
    for (int h = 0; h < l.heads(); ++h) l.sparsity_cap.push_back(0.1f * static_cast<float>(h % 10));
  }
  std::string y = to_yaml(c);
  ASSERT_NE(y.find(", sparsity_cap: 1.25"), std::string::npos) << y;
  const TunedConfig back = parse_tuned(y, "mem.yaml");
  EXPECT_EQ(back.search.sparsity_cap, 1.25);
  ASSERT_EQ(back.layers.size(), c.layers.size());
  for (size_t i = 0; i < c.layers.size(); ++i)
    EXPECT_EQ(back.layers[i].sparsity_cap, c.layers[i].sparsity_cap) << "layer " << i;
  EXPECT_EQ(to_yaml(back), y) << "not byte-identical";
  // Without the per-layer key a layer has no cap (configs tuned before it, or with it off).
  for (auto& l : c.layers) l.sparsity_cap.clear();
  EXPECT_TRUE(parse_tuned(to_yaml(c), "old.yaml").layers.front().sparsity_cap.empty());
  // A value outside [0, 1] names the head.
  c.layers.front().sparsity_cap.assign(c.layers.front().heads(), 0.5f);
  c.layers.front().sparsity_cap[1] = 1.5f;
  try {
    parse_tuned(to_yaml(c), "bad.yaml");
    FAIL() << "accepted a sparsity cap of 1.5";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kConfigError);
    EXPECT_NE(std::string(e.what()).find("sparsity_cap[1]: 1.5"), std::string::npos) << e.what();
  }
}

TEST(TunedConfig, AcceptsSpargeAttnSpelling) {
  const std::string y = R"(schema: sparge.tuned
schema_version: 1
kernel: {name: sm90, block_q: 128, block_k: 128, warp_rows: 16, pv: fp8}
budget: {l1: 0.06, l2: 0.07}
layers:
  - layer: 7
    module: transformer_blocks.7.attn1
    cdfthreshd: [0.985, 1.0]
    simthreshd1: [-0.9375, 1.0]
    pvthreshd: [9.41, 0]
    is_sparse: [true, false]
)";
  auto c = parse_tuned(y, "imported.yaml");
  EXPECT_TRUE(c.imported);
  ASSERT_EQ(c.layers.size(), 1u);
  const auto& l = c.layers[0];
  EXPECT_FLOAT_EQ(l.tau[0], 0.985f);
  EXPECT_FLOAT_EQ(l.theta[0], -0.9375f);
  // λ = -pvthreshd · ln 2 (log2 units to natural log).
  EXPECT_NEAR(l.lambda[0], -9.41 * std::log(2.0), 1e-5);
  EXPECT_EQ(l.lambda[1], 0.0f);
  EXPECT_EQ(l.sparse, (std::vector<bool>{true, false}));
  // Written back in sparge's spelling.
  EXPECT_NE(to_yaml(c).find("lambda: ["), std::string::npos);

  std::string mixed = y;
  mixed.replace(mixed.find("    pvthreshd"), 0, "    tau: [0.5, 0.5]\n");
  EXPECT_THROW(parse_tuned(mixed, "mixed.yaml"), Error);
  std::string neg = y;
  neg.replace(neg.find("9.41"), 4, "-1.0");
  EXPECT_THROW(parse_tuned(neg, "neg.yaml"), Error);
}

}  // namespace
}  // namespace sparge::config
