// `sparge report`: golden Markdown from stored fixtures, the noise-aware regression rule,
// JSON validation errors and exit codes, HTML output, tuned-config comparison.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>

#include "bench/results.hpp"
#include "common/error.hpp"
#include "config/tuned.hpp"
#include "report/bench_compare.hpp"
#include "report/tuned_compare.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
using namespace sparge;

namespace {

const fs::path kFixtures = fs::path(SPARGE_SOURCE_DIR) / "tests" / "fixtures";

fs::path tmp_dir() { return sparge::test_support::scratch_dir("report_test"); }

using RunResult = sparge::test_support::CliResult;
using sparge::test_support::slurp;

RunResult run_sparge(const std::string& args) {
  return sparge::test_support::run_sparge(args, tmp_dir());
}

std::string fixture(const char* name) { return (kFixtures / name).string(); }

bench::Row make_row(int i, double median, double spread) {
  bench::Row r;
  r.name = "sparge_fwd.sm90.hd128.i8f8";
  r.shape = {1, 32, 32, 4096 * (1 + i % 3), 4096 * (1 + i % 3), 128};
  r.density = std::array<double, 4>{1.0, 0.5, 0.25, 0.1}[i % 4];
  r.causal = (i / 4) % 2 == 1;
  r.time.median = median;
  r.time.q1 = median * (1 - spread / 2);
  r.time.q3 = median * (1 + spread / 2);
  r.time.count = 30;
  return r;
}

}  // namespace

TEST(ReportGolden, FixturesMatchGoldenMarkdownAndExitOne) {
  // The golden file is the reviewed rendering of the fixtures (tests/fixtures/README.md says how
  // to regenerate it after an intended format change).
  const auto r =
      run_sparge("report " + fixture("bench_base.json") + " " + fixture("bench_new.json"));
  EXPECT_EQ(r.code, 1) << r.err;  // the planted 10% slowdown is SLOW
  const std::string golden = slurp(kFixtures / "report_base_vs_new.md");
  ASSERT_FALSE(golden.empty());
  // File names in the header are as given on the command line: normalise to the fixture names.
  std::string out = r.out;
  for (const std::string dir : {kFixtures.string() + "/"}) {
    for (size_t pos; (pos = out.find(dir)) != std::string::npos;) out.erase(pos, dir.size());
  }
  EXPECT_EQ(out, golden);
}

TEST(ReportRule, PlantedSlowdownFastNoisyNewGone) {
  const auto base = bench::load_results(fixture("bench_base.json"));
  const auto cur = bench::load_results(fixture("bench_new.json"));
  report::CompareOptions opt;
  const auto cmp = report::compare_bench(base, cur, opt, "base", "new");
  EXPECT_EQ(cmp.count(report::Status::kSlow), 1);
  EXPECT_EQ(cmp.count(report::Status::kFast), 1);
  EXPECT_EQ(cmp.count(report::Status::kNoisy), 1);
  EXPECT_EQ(cmp.count(report::Status::kNew), 1);
  EXPECT_EQ(cmp.count(report::Status::kGone), 1);
  ASSERT_FALSE(cmp.rows.empty());
  EXPECT_EQ(cmp.rows.front().status, report::Status::kSlow);  // regressions first
  EXPECT_NEAR(cmp.rows.front().delta, 0.10, 1e-9);            // fixture: exactly x1.10
  EXPECT_TRUE(cmp.failed(opt));
  opt.threshold = 0.15;   // a 10% change inside a 15% threshold is no longer a regression ...
  opt.allow_gone = true;  // ... and the GONE row is accepted (by default it fails: issue 19)
  EXPECT_FALSE(report::compare_bench(base, cur, opt, "b", "n").failed(opt));
}

TEST(ReportRule, IdenticalRerunIsAllSameExitZero) {
  const auto r =
      run_sparge("report " + fixture("bench_base.json") + " " + fixture("bench_base.json"));
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find("🔴 SLOW"), std::string::npos);  // (the rule line names SLOW)
  const auto base = bench::load_results(fixture("bench_base.json"));
  const auto cmp = report::compare_bench(base, base, {}, "a", "a");
  // The fixture's one row with 12% spread is NOISY even against itself (noise > threshold);
  // every other row is SAME.
  EXPECT_EQ(cmp.count(report::Status::kSame) + cmp.count(report::Status::kNoisy),
            static_cast<int>(base.rows.size()));
  EXPECT_EQ(cmp.count(report::Status::kNoisy), 1);
}

TEST(ReportRule, RandomRowsClassifiedByThresholdAndNoise) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> ms(0.05, 50.0), small(0.001, 0.02), big(0.2, 0.4);
  bench::Results base, cur;
  base.env.gpus.push_back({});
  base.env.gpus[0].name = "GPU";
  cur.env = base.env;
  // Rows 0..9: quiet (spread <= 2%), 10% slower -> SLOW. Rows 10..19: quiet, 10% faster -> FAST.
  // Rows 20..29: quiet, +-2% -> SAME. Rows 30..39: spread 20-40%, +10% -> NOISY.
  for (int i = 0; i < 40; ++i) {
    const double m = ms(rng);
    const bool noisy = i >= 30;
    const double sb = noisy ? big(rng) : small(rng), sn = noisy ? big(rng) : small(rng);
    const double factor = i < 10 ? 1.10 : i < 20 ? 0.90 : i < 30 ? (i % 2 ? 1.02 : 0.98) : 1.10;
    bench::Row b = make_row(i, m, sb);
    b.name += std::to_string(i);  // unique keys
    bench::Row n = b;
    n.time.median = m * factor;
    n.time.q1 = n.time.median * (1 - sn / 2);
    n.time.q3 = n.time.median * (1 + sn / 2);
    base.rows.push_back(b);
    cur.rows.push_back(n);
  }
  const auto cmp = report::compare_bench(base, cur, {}, "b", "n");
  EXPECT_EQ(cmp.count(report::Status::kSlow), 10);
  EXPECT_EQ(cmp.count(report::Status::kFast), 10);
  EXPECT_EQ(cmp.count(report::Status::kSame), 10);
  EXPECT_EQ(cmp.count(report::Status::kNoisy), 10);
  for (size_t i = 1; i < cmp.rows.size(); ++i) {
    EXPECT_LE(static_cast<int>(cmp.rows[i - 1].status), static_cast<int>(cmp.rows[i].status));
  }
}

TEST(ReportRule, PrepareTimeIsComparedOncePerShape) {
  // Two densities of one shape share one prepare time: a prepare slowdown with unchanged kernel
  // times is one SLOW "prepare" row (a regression: exit 1), not one per density, and the kernel
  // rows stay SAME. Without prepare times there is no such row.
  bench::Results base, cur;
  for (int i = 0; i < 2; ++i) {
    bench::Row r = make_row(0, 10.0, 0.01);
    r.density = i == 0 ? 1.0 : 0.5;  // two densities of one shape
    r.prepare_ms = 0.60;
    base.rows.push_back(r);
    r.prepare_ms = 0.72;  // +20 %
    cur.rows.push_back(r);
  }
  report::CompareOptions opt;
  auto cmp = report::compare_bench(base, cur, opt, "base", "new");
  ASSERT_EQ(cmp.rows.size(), 3u);
  EXPECT_EQ(cmp.count(report::Status::kSlow), 1);
  EXPECT_EQ(cmp.count(report::Status::kSame), 2);
  EXPECT_TRUE(cmp.rows.front().prepare);  // regressions first
  EXPECT_NEAR(cmp.rows.front().delta, 0.20, 1e-9);
  EXPECT_TRUE(cmp.failed(opt));
  const std::string md = report::render_markdown(cmp, opt);
  EXPECT_NE(md.find("sparge_fwd.sm90.hd128.i8f8 · prepare"), std::string::npos) << md;
  EXPECT_NE(md.find("| 0.6 | 0.72 | +20.0% |"), std::string::npos) << md;

  for (auto& r : cur.rows) r.prepare_ms = 0.61;  // inside the 5 % threshold
  cmp = report::compare_bench(base, cur, opt, "base", "new");
  EXPECT_EQ(cmp.count(report::Status::kSame), 3);
  EXPECT_FALSE(cmp.failed(opt));

  for (auto& r : cur.rows) r.prepare_ms.reset();  // one side without: nothing to compare
  EXPECT_EQ(report::compare_bench(base, cur, opt, "base", "new").rows.size(), 2u);
}

TEST(ReportRule, PrepareSpreadIsItsNoise) {
  // With the spread of its samples in both runs, a prepare change is weighed against it like a
  // kernel row: +8 % at 10 % noise is NOISY (no regression), at 1 % SLOW. A run without the
  // spread (files before it was recorded) falls back to the threshold alone: SLOW.
  bench::Results base, cur;
  bench::Row r = make_row(0, 10.0, 0.01);
  r.prepare_ms = 0.60;
  r.prepare_spread = 0.07;
  base.rows.push_back(r);
  r.prepare_ms = 0.648;  // +8 %
  r.prepare_spread = 0.07;
  cur.rows.push_back(r);
  report::CompareOptions opt;
  auto prepare_row = [&] {
    const auto cmp = report::compare_bench(base, cur, opt, "base", "new");
    for (const auto& row : cmp.rows)
      if (row.prepare) return row;
    ADD_FAILURE() << "no prepare row";
    return report::RowComparison{};
  };
  report::RowComparison p = prepare_row();
  EXPECT_NEAR(p.noise, std::hypot(0.07, 0.07), 1e-12);
  EXPECT_EQ(p.status, report::Status::kNoisy);
  const std::string md =
      report::render_markdown(report::compare_bench(base, cur, opt, "base", "new"), opt);
  EXPECT_NE(md.find("| 0.6 | 0.648 | +8.0% | 9.9% |"), std::string::npos) << md;

  base.rows[0].prepare_spread = cur.rows[0].prepare_spread = 0.01;
  EXPECT_EQ(prepare_row().status, report::Status::kSlow);

  base.rows[0].prepare_spread.reset();
  cur.rows[0].prepare_spread = 0.5;
  p = prepare_row();
  EXPECT_EQ(p.noise, 0.0);
  EXPECT_EQ(p.status, report::Status::kSlow);
}

TEST(ReportRule, ClassifyBoundaries) {
  EXPECT_EQ(report::classify(0.06, 0.01, 0.05), report::Status::kSlow);
  EXPECT_EQ(report::classify(-0.06, 0.01, 0.05), report::Status::kFast);
  EXPECT_EQ(report::classify(0.04, 0.01, 0.05), report::Status::kSame);
  EXPECT_EQ(report::classify(0.06, 0.08, 0.05), report::Status::kNoisy);  // hidden by noise
  EXPECT_EQ(report::classify(0.09, 0.08, 0.05), report::Status::kSlow);   // beyond the noise
}

TEST(ReportArgs, ThresholdParsing) {
  EXPECT_DOUBLE_EQ(report::parse_threshold("5%"), 0.05);
  EXPECT_DOUBLE_EQ(report::parse_threshold("0.05"), 0.05);
  EXPECT_DOUBLE_EQ(report::parse_threshold("7"), 0.07);
  for (const char* bad : {"", "x", "5%%", "-1", "150%"}) {
    try {
      report::parse_threshold(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ExitCode::kUsage) << bad;
    }
  }
  const auto r = run_sparge("report --threshold abc " + fixture("bench_base.json") + " " +
                            fixture("bench_base.json"));
  EXPECT_EQ(r.code, 2);
}

TEST(ReportValidation, BadJsonFilesGiveOneLineErrors) {
  const nlohmann::json good = nlohmann::json::parse(slurp(kFixtures / "bench_base.json"));
  struct Case {
    const char* name;
    std::function<void(nlohmann::json&)> edit;
    const char* expect;  // in the message
  };
  const std::vector<Case> cases{
      {"no_median", [](auto& j) { j["rows"][3]["time_ms"].erase("median"); },
       "rows[3].time_ms.median: missing"},
      {"wrong_schema", [](auto& j) { j["schema"] = "sparge.tuned"; }, "schema"},
      {"future_major", [](auto& j) { j["schema_version"] = 3; }, "schema_version"},
      {"no_rows", [](auto& j) { j.erase("rows"); }, "rows: missing"},
      {"bad_type", [](auto& j) { j["rows"][0]["causal"] = "no"; }, "rows[0].causal"},
  };
  for (const auto& c : cases) {
    nlohmann::json j = good;
    c.edit(j);
    const fs::path p = tmp_dir() / (std::string(c.name) + ".json");
    std::ofstream(p) << j.dump();
    const auto r = run_sparge("report " + p.string() + " " + fixture("bench_base.json"));
    EXPECT_EQ(r.code, 65) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(p.string()), std::string::npos) << "names the file: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  }
  {
    const fs::path p = tmp_dir() / "not_json.json";
    std::ofstream(p) << "{ not json";
    EXPECT_EQ(run_sparge("report " + p.string() + " " + fixture("bench_base.json")).code, 65);
  }
  EXPECT_EQ(run_sparge("report /nonexistent/x.json " + fixture("bench_base.json")).code, 66);
}

TEST(ReportValidation, DifferentGpuModelsRefusedUnlessForced) {
  const auto r =
      run_sparge("report " + fixture("bench_base.json") + " " + fixture("bench_h200.json"));
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("NVIDIA H200"), std::string::npos) << r.err;
  const auto f =
      run_sparge("report --force " + fixture("bench_base.json") + " " + fixture("bench_h200.json"));
  EXPECT_EQ(f.code, 0) << f.err;
}

TEST(ReportHtml, SelfContainedWithCharts) {
  const fs::path html = tmp_dir() / "report.html";
  fs::remove(html);
  const auto r = run_sparge("report --html " + html.string() + " " + fixture("bench_base.json") +
                            " " + fixture("bench_new.json"));
  EXPECT_EQ(r.code, 1);
  const std::string page = slurp(html);
  EXPECT_NE(page.find("<svg"), std::string::npos);
  EXPECT_NE(page.find("<polyline"), std::string::npos);  // TOPS vs density
  EXPECT_NE(page.find("<rect"), std::string::npos);      // speedup bars
  EXPECT_EQ(page.find("<script src"), std::string::npos);
  EXPECT_EQ(page.find("<link"), std::string::npos);
  EXPECT_NE(page.find("</html>"), std::string::npos);
}

// A forced Hopper kernel (--kernel sm90.NAME) survives the JSON, names the build in the table
// headers, and a report between two kernels says it compares two kernels. Results written before
// the kernels had names carry the variant number, read as today's name.
TEST(ResultsJson, ForcedHopperKernelIsRecordedAndReported) {
  auto base = bench::load_results(fixture("bench_base.json"));
  EXPECT_EQ(base.env.sm90_kernel, "");  // older results do not record it
  EXPECT_EQ(bench::format_table(base, bench::TableFormat::kMarkdown).find("(sm90."),
            std::string::npos);
  EXPECT_FALSE(bench::to_json(base)["environment"].contains("sm90_kernel"));

  auto cur = base;
  base.env.sm90_kernel = "pingpong";
  cur.env.sm90_kernel = "warpgroup";
  const auto back = bench::results_from_json(bench::to_json(cur), "roundtrip");
  EXPECT_EQ(back.env.sm90_kernel, "warpgroup");
  EXPECT_NE(bench::format_table(back, bench::TableFormat::kMarkdown).find("(sm90.warpgroup)"),
            std::string::npos);
  EXPECT_NE(bench::format_table(back, bench::TableFormat::kText).find("(sm90.warpgroup)"),
            std::string::npos);

  const std::string note = "Hopper kernels differ";
  const auto ab = report::compare_bench(base, cur, {}, "pp.json", "wg.json");
  const std::string md = report::render_markdown(ab, {});
  EXPECT_NE(md.find(note), std::string::npos) << md.substr(0, 600);
  EXPECT_NE(md.find("base sm90.pingpong, new sm90.warpgroup"), std::string::npos);
  cur.env.sm90_kernel = "pingpong";
  const auto same = report::compare_bench(base, cur, {}, "a.json", "b.json");
  EXPECT_EQ(report::render_markdown(same, {}).find(note), std::string::npos);
  cur.env.sm90_kernel = "";  // defaults against a forced kernel: two kernels at some head dim
  const auto mixed = report::compare_bench(base, cur, {}, "a.json", "b.json");
  EXPECT_NE(report::render_markdown(mixed, {}).find("new each head dim's default"),
            std::string::npos);

  // Schema 2 before the names: "sm90_variant": 9 (fixture) and 12 read as today's names.
  EXPECT_EQ(bench::load_results(fixture("bench_acc_base.json")).env.sm90_kernel, "pingpong");
  auto legacy = bench::to_json(base);
  legacy["environment"].erase("sm90_kernel");
  legacy["environment"]["sm90_variant"] = 12;
  EXPECT_EQ(bench::results_from_json(legacy, "old.json").env.sm90_kernel, "warpgroup");
  legacy["environment"]["sm90_variant"] = 10;
  EXPECT_EQ(bench::results_from_json(legacy, "old.json").env.sm90_kernel, "v10");
  legacy["environment"]["sm90_variant"] = "ten";
  EXPECT_THROW(bench::results_from_json(legacy, "bad.json"), Error);
  auto bad = bench::to_json(cur);
  bad["environment"]["sm90_kernel"] = 9;
  EXPECT_THROW(bench::results_from_json(bad, "bad.json"), Error);
}

TEST(ResultsJson, RoundTripKeepsEveryField) {
  const auto a = bench::load_results(fixture("bench_new.json"));
  const auto b = bench::results_from_json(bench::to_json(a), "roundtrip");
  ASSERT_EQ(a.rows.size(), b.rows.size());
  EXPECT_EQ(a.env.gpu_name(), b.env.gpu_name());
  EXPECT_EQ(a.env.git, b.env.git);
  for (size_t i = 0; i < a.rows.size(); ++i) {
    EXPECT_EQ(a.rows[i].name, b.rows[i].name);
    EXPECT_EQ(a.rows[i].shape, b.rows[i].shape);
    EXPECT_EQ(a.rows[i].density, b.rows[i].density);
    EXPECT_DOUBLE_EQ(a.rows[i].time.median, b.rows[i].time.median);
    EXPECT_NEAR(a.rows[i].time.rel_spread(), b.rows[i].time.rel_spread(), 1e-12);
    EXPECT_EQ(a.rows[i].rel_l1.has_value(), b.rows[i].rel_l1.has_value());
    EXPECT_EQ(a.rows[i].end_to_end_ms.has_value(), b.rows[i].end_to_end_ms.has_value());
  }
  // Effective TOPS follow the convention 4 B H Nq Nk D / t, halved when causal.
  for (const auto& r : a.rows) {
    const auto& s = r.shape;
    const double f = 4.0 * s.batch * s.heads * s.seq_q * s.seq_k * s.head_dim / (r.causal ? 2 : 1);
    EXPECT_NEAR(r.effective_tops(), f / (r.time.median * 1e-3) / 1e12, 1e-9 * r.effective_tops());
  }
}

namespace {

config::TunedConfig make_tuned(std::mt19937_64& rng, int layers, int heads) {
  config::TunedConfig c;
  c.provenance.backend = "cpu";
  c.provenance.git = "abc";
  c.kernel.geometry = ref::hopper_geometry();
  std::uniform_real_distribution<float> sp(0.2f, 0.6f), err(0.01f, 0.04f);
  for (int l = 0; l < layers; ++l) {
    config::TunedLayer t;
    t.layer = l;
    t.module = "blocks." + std::to_string(l) + ".attn";
    for (int h = 0; h < heads; ++h) {
      t.tau.push_back(0.9f);
      t.theta.push_back(0.5f);
      t.lambda.push_back(-10.f);
      t.sparse.push_back(true);
      t.sparsity_stage1.push_back(sp(rng));
      t.sparsity_stage12.push_back(sp(rng));
      t.error_stage1.push_back(err(rng));           // < l1 = 0.05
      t.error_stage12.push_back(err(rng) + 0.01f);  // < l2 = 0.06
    }
    c.layers.push_back(t);
  }
  return c;
}

}  // namespace

TEST(TunedReport, OverBudgetAndSparsityDropFail) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const auto old_cfg = make_tuned(rng, 3, 4);
  {
    const auto cmp = report::compare_tuned(old_cfg, old_cfg, 0.05, "a", "a");
    EXPECT_EQ(cmp.failures(), 0);
  }
  auto over = old_cfg;
  over.layers[1].error_stage1[2] = static_cast<float>(over.budget.l1) * 1.2f;
  auto less = old_cfg;
  for (auto& s : less.layers[2].sparsity_stage1) s *= 0.8f;  // 20% relative drop
  const auto c1 = report::compare_tuned(old_cfg, over, 0.05, "a", "b");
  EXPECT_EQ(c1.failures(), 1);
  EXPECT_EQ(c1.layers.front().layer, 1);
  EXPECT_EQ(c1.layers.front().heads_over_budget, 1);
  const auto c2 = report::compare_tuned(old_cfg, less, 0.05, "a", "b");
  EXPECT_EQ(c2.failures(), 1);
  EXPECT_TRUE(c2.layers.front().less_sparse);
  EXPECT_FALSE(report::compare_tuned(old_cfg, less, 0.25, "a", "b").failures());

  // Through the CLI, with the tuner's own writer.
  const fs::path a = tmp_dir() / "old.yaml", b = tmp_dir() / "over.yaml";
  config::write_tuned(a, old_cfg);
  config::write_tuned(b, over);
  const auto same = run_sparge("report " + a.string() + " " + a.string());
  EXPECT_EQ(same.code, 0) << same.err;
  const auto bad = run_sparge("report " + a.string() + " " + b.string());
  EXPECT_EQ(bad.code, 1) << bad.err;
  EXPECT_NE(bad.out.find("OVER BUDGET"), std::string::npos) << bad.out;
}

TEST(ReportRule, ClockApartIsMarkedNotReclassified) {
  // Two runs of one build at SM clocks 5 % apart: the row keeps its status by the timing rule,
  // and the report says that the clock moved (status cell and the rule line). Clocks within
  // kClockApart, a prepare row and files without clocks are not marked.
  bench::Results base, cur;
  bench::Row r = make_row(0, 10.0, 0.01);
  r.clock_mhz = 1980;
  r.prepare_ms = 0.6;
  base.rows.push_back(r);
  r.time.median = 10.6;  // +6 %
  r.time.q1 = 10.6 * 0.995;
  r.time.q3 = 10.6 * 1.005;
  r.clock_mhz = 1881;  // -5 %
  r.prepare_ms = 0.6;
  cur.rows.push_back(r);
  report::CompareOptions opt;
  auto cmp = report::compare_bench(base, cur, opt, "base", "new");
  const report::RowComparison* kernel_row = nullptr;
  for (const auto& row : cmp.rows) {
    if (!row.prepare) kernel_row = &row;
    if (row.prepare) EXPECT_FALSE(report::clock_change(row).has_value());
  }
  ASSERT_NE(kernel_row, nullptr);
  EXPECT_EQ(kernel_row->status, report::Status::kSlow);
  ASSERT_TRUE(report::clock_change(*kernel_row).has_value());
  EXPECT_NEAR(*report::clock_change(*kernel_row), -0.05, 1e-12);
  std::string md = report::render_markdown(cmp, opt);
  EXPECT_NE(md.find("SLOW · SM clock -5.0%"), std::string::npos) << md;
  EXPECT_NE(md.find("1 row ran at SM clocks more than 2% apart"), std::string::npos) << md;

  cur.rows[0].clock_mhz = 1960;  // -1 %: within the boost clock's steps
  md = report::render_markdown(report::compare_bench(base, cur, opt, "base", "new"), opt);
  EXPECT_EQ(md.find("SM clock"), std::string::npos) << md;

  cur.rows[0].clock_mhz = 1881;
  base.rows[0].clock_mhz.reset();  // a file from before clocks were recorded
  md = report::render_markdown(report::compare_bench(base, cur, opt, "base", "new"), opt);
  EXPECT_EQ(md.find("SM clock"), std::string::npos) << md;
}
