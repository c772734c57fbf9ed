// `sparge eval --check-kernel` without a GPU: the bound and its boundary cases, the pass/fail
// and mask-agreement decisions on made-up numbers, the rendering, the CLI (options, help, exit
// 69 with no device, usage errors), and the whole check end to end on the CPU with a fake
// kernel backend (the CPU reference with its errors scaled), registered under its own name.
#include "tune/kernel_check.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.hpp"
#include "kernels/api.h"
#include "support/cli_harness.hpp"
#include "tune/oracle.hpp"

namespace fs = std::filesystem;
using namespace sparge;
using namespace sparge::tune;

namespace {

fs::path tmp_dir() { return test_support::scratch_dir("kernel_check_test"); }

test_support::CliResult run_sparge(const std::string& args) {
  return test_support::run_sparge(args, tmp_dir());
}

// A small video-like dump: 2 layers x 2 heads x 2 samples of 144 tokens, D = 64.
fs::path small_dump() {
  const fs::path p = tmp_dir() / "small.h5";
  if (!fs::exists(p)) {
    const auto r = run_sparge("synth -o " + p.string() +
                              " --kind video --grid 2,8,8 --text-prefix 16 --heads 2 --samples 2 "
                              "--layers 2 --seed 3");
    EXPECT_EQ(r.code, 0) << r.err;
  }
  return p;
}

EvalHead head(int layer, int h, double e1, double e12, double s1, double s12 = 0.0) {
  EvalHead e;
  e.layer = layer;
  e.head = h;
  e.error_stage1 = e1;
  e.error_stage12 = e12;
  e.sparsity_stage1 = s1;
  e.sparsity_stage12 = s12;
  return e;
}

// The CPU reference under another name, its errors multiplied by `factor`: a "kernel" that is
// exactly the contract (factor 1) or a given amount off it.
class ScaledOracle final : public HeadOracle {
 public:
  ScaledOracle(std::unique_ptr<HeadOracle> inner, double factor)
      : inner_(std::move(inner)), factor_(factor) {}
  std::vector<Evaluation> evaluate(std::span<const Candidate> c) override {
    auto out = inner_->evaluate(c);
    for (auto& e : out) {
      e.error_worst *= factor_;
      for (auto& x : e.error_per_sample) x *= factor_;
    }
    return out;
  }
  int num_samples() const override { return inner_->num_samples(); }

 private:
  std::unique_ptr<HeadOracle> inner_;
  double factor_;
};

class ScaledBackend final : public OracleBackend {
 public:
  explicit ScaledBackend(double factor) : factor_(factor) {}
  std::string name() const override { return "scaled"; }
  std::string device() const override { return "fake device"; }
  std::vector<std::unique_ptr<HeadOracle>> make_oracles(std::vector<HeadRequest> heads) override {
    std::vector<std::unique_ptr<HeadOracle>> out;
    for (auto& o : cpu_->make_oracles(std::move(heads))) {
      out.push_back(std::make_unique<ScaledOracle>(std::move(o), factor_));
    }
    return out;
  }

 private:
  double factor_;
  std::unique_ptr<OracleBackend> cpu_ = make_cpu_backend();
};

const bool kRegistered =
    register_oracle_backend("test-exact", [] { return std::make_unique<ScaledBackend>(1.0); }) &&
    register_oracle_backend("test-3x", [] { return std::make_unique<ScaledBackend>(3.0); });

}  // namespace

TEST(KernelCheckBound, RelativeAboveAbsoluteBelowTheCrossover) {
  // Above cpu = 0.02, 10 % is more than 0.002; below it, 0.002 is; at 0.02 both give 0.022.
  EXPECT_DOUBLE_EQ(kernel_error_bound(0.05), 1.1 * 0.05);
  EXPECT_DOUBLE_EQ(kernel_error_bound(0.01), 0.01 + 0.002);
  EXPECT_NEAR(kernel_error_bound(0.02), 0.022, 1e-15);
  EXPECT_DOUBLE_EQ(kernel_error_bound(0.0), 0.002);
  EXPECT_NE(kernel_error_bound(0.05), 0.05 + 0.002);  // the larger of the two, not the sum
}

TEST(KernelCheckBound, PassFailAtTheBoundary) {
  for (double cpu : {0.0, 0.001, 0.01, 0.02, 0.03, 0.05, 0.2}) {
    const double b = kernel_error_bound(cpu);
    EXPECT_TRUE(kernel_within_bound(cpu, b)) << cpu;                        // at the bound: pass
    EXPECT_FALSE(kernel_within_bound(cpu, std::nextafter(b, 1.0))) << cpu;  // just over: fail
    EXPECT_TRUE(kernel_within_bound(cpu, cpu)) << cpu;
    EXPECT_TRUE(kernel_within_bound(cpu, 0.5 * cpu)) << cpu;  // better than the contract
  }
  // Made-up figures: the 3-5x Hopper fault fails, rounding noise passes.
  EXPECT_FALSE(kernel_within_bound(0.031, 0.12));
  EXPECT_TRUE(kernel_within_bound(0.031, 0.033));
  EXPECT_FALSE(kernel_within_bound(0.031, 0.0342));  // 1.1 x 0.031 = 0.0341
  EXPECT_TRUE(kernel_within_bound(0.004, 0.0059));   // absolute floor: 0.004 + 0.002
  EXPECT_FALSE(kernel_within_bound(0.004, 0.0061));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(kernel_within_bound(0.03, nan));
  EXPECT_FALSE(kernel_within_bound(nan, 0.03));
}

TEST(KernelCheckMasks, ToleranceIsOnePercentOrOneBlock) {
  EXPECT_DOUBLE_EQ(mask_sparsity_tolerance(139 * 139), 0.01);  // N = 17776, 128 x 128 blocks
  EXPECT_DOUBLE_EQ(mask_sparsity_tolerance(9), 1.0 / 9);       // tiny input: one block
  EXPECT_DOUBLE_EQ(mask_sparsity_tolerance(100), 0.01);        // both equal
  EXPECT_DOUBLE_EQ(mask_sparsity_tolerance(0), kMaskTolerance);
}

TEST(KernelCheckCombine, PerHeadDecisionsAndCounts) {
  EvalOutcome cpu, cuda;
  cpu.samples_used = {0, 2};
  // head 0: identical; head 1: stage 1 over the bound; head 2: only stage 1+2 over; head 3:
  // within the bound but masks differ by 0.05 (tolerance 0.01); head 4: better than the cpu.
  cpu.heads = {head(0, 0, 0.03, 0.04, 0.50), head(0, 1, 0.03, 0.04, 0.50),
               head(0, 2, 0.03, 0.04, 0.50), head(1, 0, 0.01, 0.01, 0.30),
               head(1, 1, 0.02, 0.03, 0.40)};
  cuda.heads = {head(0, 0, 0.03, 0.04, 0.50), head(0, 1, 0.12, 0.04, 0.50),
                head(0, 2, 0.03, 0.045, 0.50), head(1, 0, 0.011, 0.011, 0.35),
                head(1, 1, 0.015, 0.02, 0.405)};
  const auto out = combine_kernel_check(cpu, cuda, std::vector<int64_t>(5, 139 * 139));
  ASSERT_EQ(out.heads.size(), 5u);
  EXPECT_TRUE(out.heads[0].pass);
  EXPECT_FALSE(out.heads[1].pass);
  EXPECT_FALSE(out.heads[1].stage1.pass);
  EXPECT_TRUE(out.heads[1].stage12.pass);
  EXPECT_FALSE(out.heads[2].pass);
  EXPECT_TRUE(out.heads[2].stage1.pass);
  EXPECT_FALSE(out.heads[2].stage12.pass);  // 0.045 > max(0.044, 0.042)
  EXPECT_TRUE(out.heads[3].pass);
  EXPECT_FALSE(out.heads[3].masks_agree);  // a warning, not a failure
  EXPECT_TRUE(out.heads[4].pass);
  EXPECT_TRUE(out.heads[4].masks_agree);  // 0.005 apart
  EXPECT_DOUBLE_EQ(out.heads[1].stage1.bound, kernel_error_bound(0.03));
  EXPECT_EQ(out.failures, 2);
  EXPECT_EQ(out.mask_mismatches, 1);
  EXPECT_FALSE(out.all_pass);
  EXPECT_EQ(out.samples_used, (std::vector<int>{0, 2}));

  cuda.heads[1].error_stage1 = 0.03;
  cuda.heads[2].error_stage12 = 0.04;
  EXPECT_TRUE(combine_kernel_check(cpu, cuda, {}).all_pass);

  cuda.heads[3].layer = 7;  // the two runs must describe the same heads
  try {
    combine_kernel_check(cpu, cuda, {});
    ADD_FAILURE() << "mismatched heads accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kSoftware);
  }
}

TEST(KernelCheckRender, FormatsCarryTheBoundAndTheVerdict) {
  EvalOutcome cpu, cuda;
  cpu.heads = {head(0, 0, 0.03, 0.04, 0.5), head(0, 1, 0.03, 0.04, 0.5)};
  cuda.heads = {head(0, 0, 0.031, 0.04, 0.5), head(0, 1, 0.09, 0.12, 0.2)};
  auto out = combine_kernel_check(cpu, cuda, {});
  out.device = "NVIDIA H100 80GB HBM3";
  out.kernel = "sm90";
  const auto j = nlohmann::json::parse(render_kernel_check(out, "json", "d.h5", "t.yaml"));
  EXPECT_EQ(j["pass"], false);
  EXPECT_EQ(j["failures"], 1);
  EXPECT_EQ(j["mask_mismatches"], 1);
  EXPECT_EQ(j["bound"]["rule"], "cuda_error <= max(1.1 x cpu_error, cpu_error + 0.002)");
  EXPECT_EQ(j["heads"][1]["pass"], false);
  EXPECT_DOUBLE_EQ(j["heads"][1]["stage1"]["cuda_error"].get<double>(), 0.09);
  EXPECT_EQ(j["tuned"], "t.yaml");
  const std::string text = render_kernel_check(out, "text", "d.h5", "t.yaml");
  EXPECT_NE(text.find("FAIL\n"), std::string::npos) << text;
  EXPECT_NE(text.find("max(1.1 x cpu, cpu + 0.002)"), std::string::npos) << text;
  EXPECT_NE(text.find("DIFFER"), std::string::npos) << text;
  EXPECT_NE(text.find("worst cuda/cpu 3.000 (layer 0 head 1)"), std::string::npos) << text;
  const std::string csv = render_kernel_check(out, "csv", "d.h5", "t.yaml");
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "layer,head,sparse,s1_err_cpu,s1_err_cuda,s1_bound,s12_err_cpu,s12_err_cuda,s12_bound,"
            "s1_sparsity_cpu,s1_sparsity_cuda,masks,status");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3);
  const std::string md = render_kernel_check(out, "md", "d.h5", "");
  EXPECT_NE(md.find("| 0 | 1 |"), std::string::npos) << md;
}

TEST(KernelCheckCli, HelpTeachesTheBound) {
  const auto r = run_sparge("eval --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--check-kernel"), std::string::npos);
  EXPECT_NE(r.out.find("max(1.1 x cpu, cpu + 0.002)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("69 without a CUDA device"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--dense"), std::string::npos);
}

TEST(KernelCheckCli, UsageErrorsExitTwo) {
  const std::string d = small_dump().string();
  for (const std::string args : {
           "eval " + d + " --dense",                                   // --dense alone
           "eval " + d + " --check-kernel",                            // no config, no --dense
           "eval " + d + " x.yaml --check-kernel --dense",             // both
           "eval " + d + " --check-kernel --dense --backend cuda",     // both backends run
           "eval " + d + " --check-kernel --dense --save-masks m.h5",  // not in this mode
       }) {
    const auto r = run_sparge(args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
  }
}

TEST(KernelCheckCli, NoGpuExits69WithOneLine) {
  if (kernels::device_count() > 0) GTEST_SKIP() << "a GPU is visible: the 69 path cannot be taken";
  const std::string d = small_dump().string();
  // With --dense (no config), and with a config: the option parses, the device is checked
  // before any CPU work.
  const fs::path cfg = tmp_dir() / "dense.yaml";
  config::write_tuned(cfg, dense_config(d, std::nullopt, ref::hopper_geometry()));
  for (const std::string args : {"eval " + d + " --check-kernel --dense --format json",
                                 "eval " + d + " " + cfg.string() + " --check-kernel"}) {
    const auto r = run_sparge(args);
    EXPECT_EQ(r.code, 69) << args << "\n" << r.err;
    EXPECT_NE(r.err.find("--check-kernel needs a CUDA device"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  // The library says the same (exit code carried by the error).
  KernelCheckRequest rq;
  rq.eval.dump = d;
  rq.dense = true;
  rq.kernel = "sm90";
  try {
    run_kernel_check(rq);
    ADD_FAILURE() << "no device, no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kNoDevice);
  }
}

TEST(KernelCheckDense, ConfigHasEveryHeadDenseWithTheDumpsAttributes) {
  const auto cfg = dense_config(small_dump(), std::vector<int>{1}, ref::portable_geometry());
  ASSERT_EQ(cfg.layers.size(), 1u);
  EXPECT_EQ(cfg.layers[0].layer, 1);
  EXPECT_EQ(cfg.layers[0].heads(), 2);
  for (int h = 0; h < 2; ++h) {
    EXPECT_FALSE(cfg.layers[0].sparse[h]);
    EXPECT_EQ(cfg.layers[0].tau[h], 1.0f);
    EXPECT_EQ(cfg.layers[0].theta[h], 1.0f);
    EXPECT_TRUE(std::isinf(cfg.layers[0].lambda[h]));
  }
  EXPECT_EQ(cfg.kernel.geometry.name, "sm80");
  EXPECT_FALSE(cfg.kernel.causal);  // synth video
  try {
    dense_config(small_dump(), std::vector<int>{5}, ref::hopper_geometry());
    ADD_FAILURE() << "missing layer accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kUsage);
  }
}

// The whole check on the CPU: the kernel backend is the reference itself (must pass, masks
// identical), then the reference with 3x its error (must fail every head: the synthetic dump's
// quantisation error is ~0.03, so 3x is far over max(1.1 x, + 0.002)).
TEST(KernelCheckEndToEnd, FakeKernelsExactPassThreeTimesOffFail) {
  ASSERT_TRUE(kRegistered);
  KernelCheckRequest rq;
  rq.eval.dump = small_dump();
  rq.eval.progress = false;
  rq.eval.jobs = 2;
  rq.dense = true;
  rq.kernel = "sm90";
  rq.kernel_backend = "test-exact";
  const auto ok = run_kernel_check(rq);
  ASSERT_EQ(ok.heads.size(), 4u);  // 2 layers x 2 heads
  EXPECT_TRUE(ok.all_pass);
  EXPECT_EQ(ok.mask_mismatches, 0);
  EXPECT_EQ(ok.device, "fake device");
  EXPECT_EQ(ok.kernel, "sm90");
  EXPECT_EQ(ok.samples_used, (std::vector<int>{0, 1}));
  for (const auto& h : ok.heads) {
    EXPECT_GT(h.stage1.cpu_error, 0.001);  // quantisation error is measured, not zero
    EXPECT_DOUBLE_EQ(h.stage1.cuda_error, h.stage1.cpu_error);
    EXPECT_DOUBLE_EQ(h.cpu_sparsity_stage1, 0.0);  // dense
    EXPECT_DOUBLE_EQ(h.mask_tolerance, 1.0 / 4);   // 144 tokens: 2 x 2 blocks of 128
  }
  rq.kernel_backend = "test-3x";
  rq.eval.samples = std::vector<int>{1};
  const auto bad = run_kernel_check(rq);
  EXPECT_FALSE(bad.all_pass);
  EXPECT_EQ(bad.failures, 4);
  EXPECT_EQ(bad.samples_used, (std::vector<int>{1}));
  for (const auto& h : bad.heads) {
    EXPECT_NEAR(h.stage1.cuda_error, 3 * h.stage1.cpu_error, 1e-12);
    EXPECT_FALSE(h.pass);
  }
}
