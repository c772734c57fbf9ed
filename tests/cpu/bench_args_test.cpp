// `sparge bench` without a GPU: argument errors (exit 2), suite files (exit 66/78), the default
// suite, random block masks, sample statistics, and the "no CUDA device visible" exit 69.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "bench/cases.hpp"
#include "bench/masks.hpp"
#include "bench/runner.hpp"
#include "bench/stats.hpp"
#include "common/error.hpp"
#include "reference/reference.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
using namespace sparge;
using namespace sparge::bench;

namespace {

fs::path tmp_dir() { return sparge::test_support::scratch_dir("bench_args_test"); }

using RunResult = sparge::test_support::CliResult;
using sparge::test_support::slurp;

RunResult run_sparge(const std::string& args) {
  return sparge::test_support::run_sparge(args, tmp_dir());
}

uint64_t fresh_seed() { return std::random_device{}(); }

}  // namespace

TEST(BenchArgs, BadFlagsExitTwo) {
  const std::vector<std::string> bad{
      "--shape 1,32,x,128",   // not an integer
      "--shape 1,32,128",     // 3 values
      "--shape 1,32,128,96",  // unsupported head dim
      "--shape 1,0,128,64",   // zero dim
      "--shape 1,2,128,64 --density 1.5",
      "--shape 1,2,128,64 --density 0",
      "--shape 1,2,128,64 --density abc",
      "--shape 1,2,256,128,64 --causal",  // causal needs Nq <= Nk
      "--shape 1,6,128,64 --kv-heads 4",  // H % Hkv != 0
      "--shape 1,2,128,64 --suite default",
      "--density 0.5",  // density without --shape
      "--format xml",
      "--dtype fp8",
      "--kernel sm70",
      "--dump x.h5",  // --dump without --config
      "--shape 1,2,128,64 --min-samples 0",
  };
  for (const auto& args : bad) {
    const auto r = run_sparge("bench " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_FALSE(r.err.empty()) << args;
  }
}

TEST(BenchArgs, SuiteFileErrors) {
  EXPECT_EQ(run_sparge("bench --suite /nonexistent/suite.yaml").code, 66);
  const std::vector<std::pair<std::string, std::string>> bad{
      {"schema", "schema: other\nschema_version: 1\ncases: [{shape: [1, 2, 128, 64]}]\n"},
      {"version",
       "schema: sparge.bench-suite\nschema_version: 2\ncases: [{shape: [1,2,128,64]}]\n"},
      {"shape", "schema: sparge.bench-suite\nschema_version: 1\ncases: [{shape: [1, 2, 128]}]\n"},
      {"density",
       "schema: sparge.bench-suite\nschema_version: 1\ncases: [{shape: [1,2,128,64], "
       "densities: [2.0]}]\n"},
      {"yaml", "schema: [unclosed\n"},
  };
  for (const auto& [name, text] : bad) {
    const fs::path p = tmp_dir() / (name + ".yaml");
    std::ofstream(p) << text;
    const auto r = run_sparge("bench --list --suite " + p.string());
    EXPECT_EQ(r.code, 78) << name << ": " << r.err;
    EXPECT_NE(r.err.find(p.string()), std::string::npos) << "names the file: " << r.err;
  }
}

TEST(BenchArgs, ListPrintsReproducingCommands) {
  const auto r = run_sparge("bench --list --shape 1,2,1000,64 --density 1,0.5 --causal --seed 7");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("--shape 1,2,1000,1000,64 --density 1 --causal"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("--density 0.5 --causal --dtype fp16 --seed 7"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2);
}

TEST(BenchArgs, NoGpuExits69) {
  if (visible_devices() > 0) GTEST_SKIP() << "a GPU is visible: the 69 path cannot be taken";
  const auto r = run_sparge("bench --shape 1,2,128,64 --density 1");
  EXPECT_EQ(r.code, 69);
  EXPECT_NE(r.err.find("no CUDA device visible"), std::string::npos) << r.err;
}

TEST(BenchCases, ParseShapeForms) {
  const Shape a = parse_shape("1,32,32768,128");
  EXPECT_EQ(a.seq_q, 32768);
  EXPECT_EQ(a.seq_k, 32768);
  EXPECT_EQ(a.kv_heads, 32);
  const Shape b = parse_shape("2,30,1000,17776,64");
  EXPECT_EQ(b.seq_q, 1000);
  EXPECT_EQ(b.seq_k, 17776);
  EXPECT_EQ(b.head_dim, 64);
  EXPECT_EQ(parse_shape(b.str()), b);  // the canonical text parses back
}

TEST(BenchCases, DefaultSuiteMatchesConfigFileAndTargets) {
  const Suite builtin = default_suite();
  const Suite file = load_suite(fs::path(SPARGE_SOURCE_DIR) / "configs/bench/default.yaml");
  ASSERT_EQ(builtin.cases.size(), file.cases.size());
  for (size_t i = 0; i < builtin.cases.size(); ++i) {
    EXPECT_EQ(builtin.cases[i].shape, file.cases[i].shape) << i;
    EXPECT_EQ(builtin.cases[i].causal, file.cases[i].causal) << i;
    EXPECT_EQ(builtin.cases[i].density, file.cases[i].density) << i;
  }
  // TARGETS.md: 4 shapes x 4 densities + causal dense of each.
  EXPECT_EQ(builtin.cases.size(), 4u * 4u + 4u);
  EXPECT_EQ(std::count_if(builtin.cases.begin(), builtin.cases.end(),
                          [](const Case& c) { return c.causal; }),
            4);
}

TEST(BenchMasks, RandomMaskDensityRowsAndCausality) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  for (int trial = 0; trial < 6; ++trial) {
    const bool causal = trial % 2 == 1;
    const int64_t nq_tokens = std::uniform_int_distribution<int64_t>(1, 2000)(rng);
    const int64_t nk_tokens = causal
                                  ? nq_tokens + std::uniform_int_distribution<int64_t>(0, 700)(rng)
                                  : std::uniform_int_distribution<int64_t>(1, 2000)(rng);
    const double density = std::uniform_real_distribution<double>(0.05, 1.0)(rng);
    const Case c{Shape{2, 3, 3, nq_tokens, nk_tokens, 64}, causal, density};
    const BlockMask m = random_block_mask(c, 128, 64, rng());
    const auto valid = causal_valid_blocks(nq_tokens, nk_tokens, 128, 64, causal);
    // Causal validity matches the CPU reference's definition.
    EXPECT_TRUE(at::equal(
        valid, ref::causal_block_mask(nq_tokens, nk_tokens, ref::Geometry{128, 64, 16}, causal)));
    // Never a block outside causal validity, never an empty row.
    EXPECT_FALSE((m.mask & ~valid).any().item<bool>());
    EXPECT_GE(m.lut_len.min().item<int>(), 1);
    // Each row keeps round(density * valid) blocks (at least 1): at most half a block per row off.
    const auto per_row_valid = valid.sum(-1).to(at::kDouble);
    const auto expect = at::clamp_min(at::round(per_row_valid * density), 1);
    EXPECT_TRUE(at::equal(m.mask.sum(-1).to(at::kDouble), expect.expand({2, 3, -1})));
    // LUT rows: the kept indices, ascending.
    const auto lut = m.lut.accessor<int, 4>();
    const auto len = m.lut_len.accessor<int, 3>();
    const auto mask = m.mask.accessor<bool, 4>();
    for (int64_t i = 0; i < m.mask.size(2); ++i) {
      int prev = -1;
      for (int j = 0; j < len[1][2][i]; ++j) {
        EXPECT_GT(lut[1][2][i][j], prev);
        EXPECT_TRUE(mask[1][2][i][lut[1][2][i][j]]);
        prev = lut[1][2][i][j];
      }
    }
  }
}

TEST(BenchMasks, SeedDeterminesMask) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const Case c{Shape{1, 4, 4, 4096, 4096, 128}, false, 0.3};
  EXPECT_TRUE(at::equal(random_block_mask(c, 128, 128, seed).mask,
                        random_block_mask(c, 128, 128, seed).mask));
  EXPECT_FALSE(at::equal(random_block_mask(c, 128, 128, seed).mask,
                         random_block_mask(c, 128, 128, seed + 1).mask));
  EXPECT_EQ(case_seed(seed, c), case_seed(seed, c));
  EXPECT_NE(case_seed(seed, c), case_seed(seed, Case{c.shape, true, 0.3}));
}

TEST(BenchStats, SummaryMatchesDefinition) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::vector<double> v(2 * std::uniform_int_distribution<int>(15, 60)(rng) + 1);  // odd count
  for (auto& x : v) x = std::lognormal_distribution<double>(0.0, 0.3)(rng);
  const SampleStats s = summarize(v);
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(s.count, static_cast<int>(v.size()));
  EXPECT_DOUBLE_EQ(s.median, sorted[sorted.size() / 2]);  // odd count: the middle sample
  EXPECT_DOUBLE_EQ(s.min, sorted.front());
  EXPECT_DOUBLE_EQ(s.max, sorted.back());
  EXPECT_LE(s.q1, s.median);
  EXPECT_GE(s.q3, s.median);
  // About a quarter of the samples lie below q1 and above q3 (interpolated quartiles).
  const auto below = std::count_if(v.begin(), v.end(), [&](double x) { return x < s.q1; });
  EXPECT_NEAR(static_cast<double>(below) / v.size(), 0.25, 1.0 / v.size() + 1e-12);
  EXPECT_DOUBLE_EQ(s.rel_spread(), (s.q3 - s.q1) / s.median);
  EXPECT_THROW(summarize({}), Error);
}
