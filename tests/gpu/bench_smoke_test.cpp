// GPU smoke test of the bench path: the timer on a bandwidth-bound memset, then a tiny
// `sparge bench` run end to end (JSON written, rows complete) and `sparge report` on it; the
// accuracy rows of `--real-data FILE` and `sparge eval --check-kernel --dense`.
// Skips without a CUDA device.
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bench/results.hpp"
#include "bench/runner.hpp"
#include "bench/timer.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
using namespace sparge::bench;

namespace {

bool have_gpu() { return visible_devices() > 0; }

fs::path tmp_dir() { return sparge::test_support::scratch_dir("bench_smoke"); }

int run(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

using sparge::test_support::slurp;

}  // namespace

TEST(GpuTimer, MemsetTimeScalesWithBytes) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible";
  auto stream = c10::cuda::getStreamFromPool();
  TimerOptions opt;
  opt.min_samples = 30;
  GpuTimer timer(stream.stream(), opt);
  const size_t bytes = size_t{1} << 30;  // 1 GiB: far beyond L2, bandwidth bound
  void* buf = nullptr;
  ASSERT_EQ(cudaMalloc(&buf, 2 * bytes), cudaSuccess);
  const Timing one = timer.measure([&] { cudaMemsetAsync(buf, 1, bytes, stream.stream()); });
  const Timing two = timer.measure([&] { cudaMemsetAsync(buf, 1, 2 * bytes, stream.stream()); });
  cudaFree(buf);
  EXPECT_GE(one.stats.count, 30);
  EXPECT_GT(one.stats.median, 0.0);
  EXPECT_LE(one.stats.min, one.stats.median);
  // Twice the bytes of a bandwidth-bound memset take about twice as long; 1.6-2.4 leaves room for
  // launch overhead and clock noise, and still fails if the L2 flush or the events are wrong.
  const double ratio = two.stats.median / one.stats.median;
  EXPECT_GT(ratio, 1.6) << "ratio " << ratio;
  EXPECT_LT(ratio, 2.4) << "ratio " << ratio;
  // Achieved SM clock: positive, not above the nominal boost clock by more than 10% (probe error).
  const double mhz = timer.measure_clock_mhz();
  EXPECT_GT(mhz, 100.0);
  EXPECT_LT(mhz, 1.1 * timer.nominal_clock_mhz()) << mhz << " vs " << timer.nominal_clock_mhz();
}

TEST(BenchSmoke, TinyBenchWritesCompleteJsonAndReports) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible";
  const fs::path json = tmp_dir() / "smoke.json";
  fs::remove(json);
  const std::string bin = SPARGE_BIN;
  const int rc = run(bin + " bench --shape 1,4,2048,128 --density 1,0.25 --min-samples 10 " +
                     "--warmup-ms 2 --format md -o " + json.string());
  ASSERT_EQ(rc, 0);
  const Results r = load_results(json);
  EXPECT_FALSE(r.env.gpu_name().empty());
  EXPECT_FALSE(r.env.driver.empty());
  int kernel_rows = 0, baselines = 0;
  for (const Row& row : r.rows) {
    EXPECT_GT(row.time.median, 0.0) << row.name;
    EXPECT_GE(row.time.count, 10) << row.name;
    EXPECT_FALSE(row.command.empty());
    if (row.mask == "random") {
      ++kernel_rows;
      ASSERT_TRUE(row.sparsity_stage1.has_value());
      // 16 q blocks x 16 k blocks at 128: rows keep round(0.25 * 16) = 4 of 16 exactly.
      EXPECT_NEAR(*row.sparsity_stage1, 1.0 - row.density, 1e-9) << row.density;
      EXPECT_TRUE(row.end_to_end_ms && row.prediction_ms && row.quantisation_ms);
      EXPECT_GE(*row.end_to_end_ms, 0.5 * row.time.median);
      EXPECT_TRUE(row.dense_ms.has_value());
      if (row.density == 1.0 && row.rel_l1) {
        // Quantised dense vs SDPA fp16 on U(-1, 1): INT8/FP8 error is a few percent, far from 1.
        EXPECT_LT(*row.rel_l1, 0.1);
      }
    } else {
      ++baselines;
    }
  }
  EXPECT_EQ(kernel_rows, 2);
  EXPECT_GE(baselines, 1);  // at least our dense mode
  // Comparing a run with itself never reports a regression.
  EXPECT_EQ(run(bin + " report " + json.string() + " " + json.string() + " >/dev/null"), 0);
}

// `sparge bench --real-data FILE`: the accuracy rows on a dump (a synthetic one here, so the test
// needs no scikit-image) and their N(0, 1) twin: rel-L1 vs fp64 per (sample, head), worst >= mean,
// a quantisation-sized error, and a report of the run against itself passes.
TEST(BenchSmoke, RealDataAccuracyRowsFromADump) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible";
  const fs::path dump = tmp_dir() / "acc.h5";
  const fs::path json = tmp_dir() / "acc.json";
  fs::remove(json);
  const std::string bin = SPARGE_BIN;
  ASSERT_EQ(run(bin + " -q synth -o " + dump.string() +
                " --kind video --grid 2,16,16 --text-prefix 32 --layers 1 --heads 4 --samples 2 "
                "--seed 5"),
            0);
  ASSERT_EQ(run(bin + " bench --real-data " + dump.string() +
                " --min-samples 10 --warmup-ms 2 --format md -o " + json.string()),
            0);
  const Results r = load_results(json);
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].data, "dump:acc.h5");
  EXPECT_EQ(r.rows[1].data, "normal");
  for (const Row& row : r.rows) {
    EXPECT_EQ(row.accuracy_reference, "fp64");
    EXPECT_EQ(row.mask, "dense");
    EXPECT_EQ(row.shape.batch, 2);  // the two samples stacked
    EXPECT_EQ(row.shape.seq_q, 2 * 16 * 16 + 32);
    ASSERT_TRUE(row.rel_l1 && row.rel_l1_mean && row.cosine);
    EXPECT_GE(*row.rel_l1, *row.rel_l1_mean);
    EXPECT_GT(*row.rel_l1_mean, 0.0);  // quantised: never exact
    EXPECT_LT(*row.rel_l1, 0.1);       // INT8/FP8 error is a few percent
    EXPECT_GT(*row.cosine, 0.99);
    EXPECT_GT(row.time.median, 0.0);
    // The preparation on these inputs, at the shape rows' thresholds, and the sparsity it gave.
    ASSERT_TRUE(row.quantisation_ms && row.prediction_ms && row.prepare_ms && row.prepare_spread);
    EXPECT_GT(*row.prediction_ms, 0.0);
    EXPECT_GT(*row.prepare_ms, *row.prediction_ms);
    EXPECT_TRUE(std::any_of(row.notes.begin(), row.notes.end(), [](const std::string& n) {
      return n.rfind("prepare at tau 0.9, theta -1: stage-1 sparsity ", 0) == 0;
    })) << (row.notes.empty() ? std::string("no notes") : row.notes.back());
  }
  EXPECT_EQ(run(bin + " report " + json.string() + " " + json.string() + " >/dev/null"), 0);
}

// `sparge eval --check-kernel --dense`: the kernels of this GPU within max(1.1 x cpu, cpu + 0.002)
// of the CPU reference on every head, and (dense) both masks keep every block. One layer of 4
// heads (synth's default is 2 layers: the first GPU run found 8 heads where 4 were expected).
TEST(CheckKernel, DenseHeadsWithinTheBoundOnThisGpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device visible";
  const fs::path dump = tmp_dir() / "check.h5";
  const fs::path out = tmp_dir() / "check.json";
  const std::string bin = SPARGE_BIN;
  ASSERT_EQ(run(bin + " -q synth -o " + dump.string() +
                " --kind video --grid 2,16,16 --text-prefix 32 --layers 1 --heads 4 --samples 2 "
                "--seed 5"),
            0);
  const int rc = run(bin + " --no-progress eval " + dump.string() +
                     " --check-kernel --dense --format json > " + out.string());
  const auto j = nlohmann::json::parse(slurp(out));
  EXPECT_EQ(rc, j["pass"].get<bool>() ? 0 : 1);
  EXPECT_EQ(rc, 0) << slurp(out);
  ASSERT_EQ(j["heads"].size(), 4u);
  for (const auto& h : j["heads"]) {
    const double cpu = h["stage1"]["cpu_error"], cuda = h["stage1"]["cuda_error"];
    EXPECT_GT(cpu, 0.0);
    EXPECT_LE(cuda, std::max(1.1 * cpu, cpu + 0.002)) << h.dump();
    EXPECT_EQ(h["sparsity_stage1"]["cpu"], 0.0);
    EXPECT_EQ(h["sparsity_stage1"]["cuda"], 0.0);
    EXPECT_TRUE(h["masks_agree"].get<bool>());
  }
}
