// `sparge report`: an accuracy regression fails like a speed regression. The rule's boundary
// cases, the --accuracy-threshold flag, and the fixtures bench_acc_base.json / bench_acc_new.json
// (identical timings; one real-image row's rel-L1 25 % worse, another 3 % worse) through the CLI.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>

#include "bench/results.hpp"
#include "common/error.hpp"
#include "report/bench_compare.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
using namespace sparge;

namespace {

const fs::path kFixtures = fs::path(SPARGE_SOURCE_DIR) / "tests" / "fixtures";

std::string fixture(const char* name) { return (kFixtures / name).string(); }

test_support::CliResult run_sparge(const std::string& args) {
  return test_support::run_sparge(args, test_support::scratch_dir("report_accuracy_test"));
}

// The table line of a row whose kernel cell starts with `label` (first match).
std::string line_of(const std::string& md, const std::string& label) {
  const size_t at = md.find("| " + label + " |");
  if (at == std::string::npos) return "";
  return md.substr(at, md.find('\n', at) - at);
}

}  // namespace

TEST(ReportAccuracyRule, BoundaryOfMaxRelativeAbsolute) {
  using report::less_accurate;
  // base 0.05: 10 % (0.005) is the larger allowance.
  EXPECT_FALSE(less_accurate(0.05, 0.05 + 0.0049, 0.10, 0.002));
  EXPECT_TRUE(less_accurate(0.05, 0.05 + 0.0051, 0.10, 0.002));
  // base 0.01: the absolute 0.002 is the larger allowance (10 % would be 0.001).
  EXPECT_FALSE(less_accurate(0.01, 0.0119, 0.10, 0.002));
  EXPECT_TRUE(less_accurate(0.01, 0.0121, 0.10, 0.002));
  // Better, or equal, is never a regression.
  EXPECT_FALSE(less_accurate(0.05, 0.03, 0.10, 0.002));
  EXPECT_FALSE(less_accurate(0.05, 0.05, 0.0, 0.0));
  EXPECT_TRUE(less_accurate(0.05, 0.0501, 0.0, 0.0));
}

TEST(ReportAccuracyRule, ThresholdFlagParsing) {
  EXPECT_EQ(report::parse_accuracy_threshold("10%,0.002"), std::make_pair(0.10, 0.002));
  EXPECT_EQ(report::parse_accuracy_threshold("15%"), std::make_pair(0.15, 0.002));
  EXPECT_EQ(report::parse_accuracy_threshold("0.2,0.01"), std::make_pair(0.2, 0.01));
  for (const char* bad : {"", "x", "10%,", "10%,-1", "10%,abc", "150%,0.002"}) {
    try {
      report::parse_accuracy_threshold(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ExitCode::kUsage) << bad;
    }
  }
  const auto r = run_sparge("report --accuracy-threshold nope " + fixture("bench_acc_base.json") +
                            " " + fixture("bench_acc_base.json"));
  EXPECT_EQ(r.code, 2) << r.err;
}

TEST(ReportAccuracy, LessAccurateRowFailsAndIsShown) {
  const auto base = bench::load_results(fixture("bench_acc_base.json"));
  const auto cur = bench::load_results(fixture("bench_acc_new.json"));
  report::CompareOptions opt;
  const auto cmp = report::compare_bench(base, cur, opt, "base", "new");
  EXPECT_EQ(cmp.count(report::Status::kSlow), 0);  // timings are identical
  EXPECT_EQ(cmp.count_less_accurate(), 1);         // D = 128 real: 0.048 -> 0.060
  EXPECT_TRUE(cmp.failed(opt));
  ASSERT_FALSE(cmp.rows.empty());
  const auto& first = cmp.rows.front();  // regressions first
  EXPECT_TRUE(first.less_accurate);
  EXPECT_EQ(first.any().data, "real-video");
  EXPECT_EQ(first.any().shape.head_dim, 128);

  const auto r =
      run_sparge("report " + fixture("bench_acc_base.json") + " " + fixture("bench_acc_new.json"));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.out.find("1 less accurate** — regression"), std::string::npos) << r.out;
  const std::string bad = line_of(r.out, "sparge_fwd.sm90.hd128.i8f8 [real-video]");
  EXPECT_NE(bad.find("0.0480→0.0600 (+25%)"), std::string::npos) << bad;
  EXPECT_NE(bad.find("🔴 LESS ACCURATE"), std::string::npos) << bad;
  // D = 64 real: 0.0450 -> 0.0465 is +3 % and +0.0015: within max(10 %, 0.002).
  const std::string ok = line_of(r.out, "sparge_fwd.sm90.hd64.i8f8 [real-video]");
  EXPECT_NE(ok.find("0.0450→0.0465"), std::string::npos) << ok;
  EXPECT_EQ(ok.find("LESS ACCURATE"), std::string::npos) << ok;
  EXPECT_NE(r.out.find("is LESS ACCURATE"), std::string::npos) << "the rule is printed";

  // Without a regression: the same run against itself, or a wider threshold, passes.
  EXPECT_EQ(
      run_sparge("report " + fixture("bench_acc_base.json") + " " + fixture("bench_acc_base.json"))
          .code,
      0);
  EXPECT_EQ(run_sparge("report --accuracy-threshold 30% " + fixture("bench_acc_base.json") + " " +
                       fixture("bench_acc_new.json"))
                .code,
            0);
  // ... and a tighter one catches the D = 64 change too (0.0015 > max(2 %, 0.001)).
  opt.accuracy_relative = 0.02;
  opt.accuracy_absolute = 0.001;
  EXPECT_EQ(report::compare_bench(base, cur, opt, "b", "n").count_less_accurate(), 2);
}

TEST(ReportAccuracy, RowsOfOtherInputsOrReferencesNeverCompare) {
  auto base = bench::load_results(fixture("bench_acc_base.json"));
  auto cur = base;
  // The same kernel and shape on other inputs is another row (NEW/GONE), not a regression.
  for (auto& r : cur.rows) {
    if (r.data == "real-video") {
      r.data = "real-text";
      *r.rel_l1 *= 3;
    }
  }
  auto cmp = report::compare_bench(base, cur, {}, "b", "n");
  EXPECT_EQ(cmp.count_less_accurate(), 0);
  EXPECT_EQ(cmp.count(report::Status::kNew), 2);
  EXPECT_EQ(cmp.count(report::Status::kGone), 2);
  // An error against cuDNN never compares with one against fp64.
  cur = base;
  for (auto& r : cur.rows) {
    if (r.data == "normal") {
      r.accuracy_reference = "sdpa_cudnn";
      *r.rel_l1 *= 3;
    }
  }
  EXPECT_EQ(report::compare_bench(base, cur, {}, "b", "n").count_less_accurate(), 0);
  // A version-1 baseline against a version-2 run: old rows match, accuracy rows are NEW.
  const auto v1 = bench::load_results(fixture("bench_base.json"));
  cmp = report::compare_bench(v1, base, {}, "v1", "v2");
  EXPECT_EQ(cmp.count(report::Status::kNew), 4);
  EXPECT_EQ(cmp.count(report::Status::kGone), 0);
  EXPECT_FALSE(cmp.failed({}));
}
