// `sparge report --across`: rows of several runs side by side, each normalised by its own run's
// SDPA cuDNN time of the same inputs.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bench/results.hpp"
#include "common/error.hpp"
#include "report/across.hpp"
#include "support/cli_harness.hpp"

using namespace sparge;

namespace {

bench::Row row(const std::string& name, double ms, double density = 1.0, bool causal = false) {
  bench::Row r;
  r.name = name;
  r.shape = {1, 32, 32, 32768, 32768, 64};
  r.density = density;
  r.causal = causal;
  r.time.median = ms;
  r.time.q1 = r.time.q3 = ms;
  r.time.count = 30;
  return r;
}

report::AcrossRun run(const std::string& gpu, std::vector<bench::Row> rows) {
  report::AcrossRun a;
  a.source = gpu + ".json";
  a.results.env.gpus.push_back({});
  a.results.env.gpus[0].name = gpu;
  a.results.env.git = "abc";
  a.results.rows = std::move(rows);
  return a;
}

// The table line of the row whose first cells start with `prefix`.
std::string line_of(const std::string& table, const std::string& prefix) {
  const size_t at = table.find("| " + prefix);
  if (at == std::string::npos) return {};
  return table.substr(at, table.find('\n', at) - at);
}

}  // namespace

TEST(ReportAcross, EachRunIsNormalisedByItsOwnCudnn) {
  const std::string ours = "sparge_fwd.sm90.hd64.i8f8";
  const auto table = report::across_table(
      {run("GPU-A", {row(ours, 10.0), row(ours, 2.0, 0.1), row("sdpa_cudnn", 12.0)}),
       run("GPU-B", {row(ours, 5.0), row("sdpa_cudnn", 4.0)})});
  EXPECT_NE(table.find("GPU-A @ abc × cuDNN"), std::string::npos) << table;
  EXPECT_NE(table.find("GPU-B @ abc eff TOPS"), std::string::npos) << table;
  // Dense: 12 / 10 on A, 4 / 5 on B; density 0.1 exists on A only.
  const std::string dense = line_of(table, ours + " | 1,32,32768,32768,64 | no | 1 |");
  ASSERT_FALSE(dense.empty()) << table;
  EXPECT_NE(dense.find("| 1.20 |"), std::string::npos) << dense;
  EXPECT_NE(dense.find("| 0.80 |"), std::string::npos) << dense;
  const std::string sparse = line_of(table, ours + " | 1,32,32768,32768,64 | no | 0.1 |");
  ASSERT_FALSE(sparse.empty()) << table;
  EXPECT_NE(sparse.find("| 6.00 |"), std::string::npos) << sparse;
  EXPECT_NE(sparse.find("| - | - |"), std::string::npos) << sparse;
  EXPECT_EQ(table.find("| sdpa_cudnn |"), std::string::npos) << "cuDNN rows are the unit";
}

TEST(ReportAcross, NoCudnnOfTheSameInputsGivesADash) {
  const std::string ours = "sparge_fwd.sm90.hd64.i8f8";
  auto causal_cudnn = row("sdpa_cudnn", 6.0, 1.0, /*causal=*/true);
  const auto table = report::across_table(
      {run("GPU-A", {row(ours, 10.0), causal_cudnn}), run("GPU-B", {row(ours, 5.0)})});
  const std::string dense = line_of(table, ours + " | 1,32,32768,32768,64 | no | 1 |");
  ASSERT_FALSE(dense.empty()) << table;
  EXPECT_EQ(dense.find("0.60"), std::string::npos) << "a causal baseline must not count";
  EXPECT_NE(dense.find("| - |"), std::string::npos) << dense;
}

TEST(ReportAcross, NeedsTwoRuns) {
  try {
    report::across_table({run("GPU-A", {})});
    FAIL() << "one run accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kUsage);
  }
}

// Through the CLI on the committed H100 baselines of two sessions: one table, exit 0; flags of
// the two-run comparison are refused with --across.
TEST(ReportAcross, CliOnCommittedBaselines) {
  const std::string root = SPARGE_SOURCE_DIR;
  const std::string a = root + "/reports/history/NVIDIA_H100_80GB_HBM3-session12.json";
  const std::string b = root + "/reports/baselines/NVIDIA_H100_80GB_HBM3.json";
  const auto dir = sparge::test_support::scratch_dir("report_across_test");
  const auto r = sparge::test_support::run_sparge("report --across " + a + " " + b, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  // The committed baseline changes with every new one: its commit is read, not written here.
  const std::string git = bench::load_results(b).env.git;
  EXPECT_NE(r.out.find("NVIDIA H100 80GB HBM3 @ " + git + " × cuDNN"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NVIDIA H100 80GB HBM3 @ session12 × cuDNN"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| sparge_fwd.sm90.hd64.i8f8 | 1,32,32768,32768,64 | no | 1 |"),
            std::string::npos)
      << r.out;
  const auto bad =
      sparge::test_support::run_sparge("report --across " + a + " " + b + " --html x", dir);
  EXPECT_EQ(bad.code, 2) << bad.err;
  const auto one = sparge::test_support::run_sparge("report --across " + a, dir);
  EXPECT_EQ(one.code, 2) << one.err;
}
