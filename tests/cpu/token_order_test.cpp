// Hilbert token order end to end (issue 16): tune records it, eval applies it (permute Q/K/V,
// predict and run on the permuted sequence), the result equals the honest computation (permute,
// attend, invert the output, compare in the original order), mismatches are refused, causal
// dumps are never permuted, and the device-side permutation of the runtime matches the
// reference one.
#include "tune/token_order.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/error.hpp"
#include "config/tuned.hpp"
#include "io/dump.hpp"
#include "reference/hilbert.hpp"
#include "reference/reference.hpp"
#include "runtime/permute.hpp"
#include "support/cli_harness.hpp"
#include "synth/synth.hpp"
#include "tune/tuner.hpp"

namespace fs = std::filesystem;

namespace sparge {
namespace {

fs::path tmp_dir() { return test_support::scratch_dir("token_order"); }

// A tiny real-image dump (python/sparge_realdata, --size tiny: 2 frames of 4 x 6 patches behind
// 16 text tokens, N = 64) with a larger grid so a few 128-token blocks exist: 2 x 12 x 16 + 16 =
// 400 tokens, 4 blocks at block 128 and 7 at block 64 (sm80). Skips when the generator
// or scikit-image is missing (the python test label covers the generator itself).
fs::path real_dump() {
  static const fs::path path = [] {
    fs::path p = tmp_dir() / "real_tiny.h5";
    const char* py = std::getenv("SPARGE_PYTHON");
    const std::string cmd = fmt::format(
        "PYTHONPATH='{}/python' '{}' -m sparge_realdata -o '{}' --size tiny --frames 2 "
        "--grid-h 12 --grid-w 16 --text-prefix 16 --heads 2 --head-dim 64 --images "
        "astronaut,coffee,chelsea >'{}' 2>&1",
        SPARGE_SOURCE_DIR, py ? py : "python3", p.string(), (tmp_dir() / "gen.log").string());
    if (std::system(cmd.c_str()) != 0) return fs::path();
    return p;
  }();
  return path;
}

#define NEED_REAL_DUMP()                                                                  \
  const fs::path dump = real_dump();                                                      \
  if (dump.empty())                                                                       \
  GTEST_SKIP() << "python3 -m sparge_realdata unavailable (see " << tmp_dir() / "gen.log" \
               << ")"

tune::TuneRequest quick_tune(const fs::path& dump, const fs::path& out) {
  tune::TuneRequest rq;
  rq.dump = dump;
  rq.output = out;
  rq.geometry = ref::portable_geometry();  // 128 x 64: several K blocks at N = 400
  rq.samples = std::vector<int>{0, 1};
  rq.search.tau_tol = 0.01f;
  rq.search.lambda_tol = 1.0f;
  rq.search.min_sparsity = 0.0;           // keep the heads sparse so the mask matters
  rq.search.theta_grid = {-1.0f, 0.25f};  // two lines: enough to exercise θ, fast
  rq.jobs = 1;
  rq.progress = false;
  return rq;
}

TEST(TokenOrder, RuntimePermutationMatchesReference) {
  const auto perm = ref::hilbert_permutation(3, 4, 6, 5, 2);
  const int64_t n = static_cast<int64_t>(perm.size());
  at::Tensor x = at::randn({2, 3, n, 8});
  auto p = runtime::TokenPermutation::from_host(perm, x.device());
  EXPECT_EQ(p.tokens(), n);
  at::Tensor y = x.index_select(2, p.index);
  EXPECT_TRUE(at::equal(y, ref::apply_permutation(x, perm)));
  EXPECT_TRUE(at::equal(y.index_select(2, p.inverse), x));
  // Text tokens stay in place.
  EXPECT_TRUE(at::equal(y.narrow(2, 0, 5), x.narrow(2, 0, 5)));
  EXPECT_TRUE(at::equal(y.narrow(2, n - 2, 2), x.narrow(2, n - 2, 2)));
  EXPECT_FALSE(at::equal(y, x));
  std::vector<int64_t> not_a_permutation = perm;
  not_a_permutation[0] = not_a_permutation[1];
  EXPECT_THROW(runtime::TokenPermutation::from_host(not_a_permutation, x.device()), Error);
}

// The runtime's checks of a token-order index (Options::token_order, the op's perm): each fault
// is a one-line usage error that names it; a well-formed index passes.
TEST(TokenOrder, IndexValidation) {
  const int64_t n = 64;
  const at::Tensor idx = at::arange(n, at::kLong).flip(0);
  auto message = [&](const at::Tensor& index, at::Device device = at::kCPU) -> std::string {
    try {
      runtime::check_token_order(index, n, device);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ExitCode::kUsage);
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(message(idx), "");
  EXPECT_NE(message(idx.to(at::kInt)).find("expected int64 [64]"), std::string::npos);
  EXPECT_NE(message(idx.narrow(0, 0, n - 1)).find("[63], expected int64 [64]"), std::string::npos);
  EXPECT_NE(message(idx.view({1, n})).find("expected int64 [64]"), std::string::npos);
  EXPECT_NE(message(at::Tensor()).find("undefined"), std::string::npos);
  EXPECT_NE(message(at::cat({idx, idx}).view({n, 2}).select(1, 0)).find("not contiguous"),
            std::string::npos);
  // Only device identity is compared, so a CUDA device can stand for q's without a GPU.
  EXPECT_NE(message(idx, at::Device(at::kCUDA, 0)).find("index on cpu, q on cuda:0"),
            std::string::npos);
}

TEST(TokenOrder, TuneRecordsHilbertAndNoHilbert) {
  NEED_REAL_DUMP();
  const auto on = tune::run_tune(quick_tune(dump, tmp_dir() / "on.yaml"));
  io::DumpReader reader(dump);
  ASSERT_TRUE(reader.info().grid.has_value());
  EXPECT_EQ(on.config.permutation.order, "hilbert");
  EXPECT_EQ(on.config.permutation.grid, *reader.info().grid);
  EXPECT_EQ(on.config.permutation.text_prefix, reader.info().text_prefix);
  const std::string yaml = test_support::slurp(tmp_dir() / "on.yaml");
  EXPECT_NE(yaml.find("permutation: {order: hilbert, grid: [2, 12, 16], text_prefix: 16"),
            std::string::npos)
      << yaml;
  EXPECT_EQ(config::read_tuned(tmp_dir() / "on.yaml").permutation, on.config.permutation);

  auto rq = quick_tune(dump, tmp_dir() / "off.yaml");
  rq.hilbert = false;
  const auto off = tune::run_tune(rq);
  EXPECT_EQ(off.config.permutation.order, "none");
  EXPECT_NE(test_support::slurp(tmp_dir() / "off.yaml").find("permutation: {order: none}"),
            std::string::npos);
}

// The heart of it: eval's numbers on a Hilbert config equal permute -> predict -> attend ->
// invert -> compare with dense attention in the dump's order; and differ from the same
// thresholds run in the dump's order (so the permutation really is applied).
TEST(TokenOrder, EvalEqualsPermuteAttendInvert) {
  NEED_REAL_DUMP();
  const auto tuned = tune::run_tune(quick_tune(dump, tmp_dir() / "eq.yaml")).config;
  ASSERT_TRUE(tuned.permutation.hilbert());
  tune::EvalRequest erq;
  erq.dump = dump;
  erq.config = tuned;
  erq.samples = std::vector<int>{2};  // held out
  erq.jobs = 1;
  erq.progress = false;
  const auto ev = tune::run_eval(erq);

  io::DumpReader reader(dump);
  const auto perm = ref::hilbert_permutation(2, 12, 16, 16, 0);
  const auto& g = tuned.kernel.geometry;
  ref::AttentionOptions opt;
  bool differs_unpermuted = false;
  for (const auto& e : ev.heads) {
    const auto& tl = *tuned.find_layer(e.layer);
    const size_t h = static_cast<size_t>(e.head);
    at::Tensor q = reader.read(e.layer, 2, "q", std::make_pair(e.head, e.head + 1));
    at::Tensor k = reader.read(e.layer, 2, "k", std::make_pair(e.head, e.head + 1));
    at::Tensor v = reader.read(e.layer, 2, "v", std::make_pair(e.head, e.head + 1));
    const at::Tensor dense = ref::dense_attention(q, k, v, opt, at::kDouble);  // original order
    const float tau = tl.sparse[h] ? tl.tau[h] : 1.0f, theta = tl.sparse[h] ? tl.theta[h] : 1.0f;
    auto thr = ref::Thresholds::uniform(1, tau, theta);
    at::Tensor qp = ref::apply_permutation(q, perm), kp = ref::apply_permutation(k, perm),
               vp = ref::apply_permutation(v, perm);
    at::Tensor mask = ref::predict_block_mask(qp, kp, g, thr, opt);
    auto res = ref::sparse_attention(qp, kp, vp, mask, {tune::kNoSkip}, g, opt);
    at::Tensor o = ref::invert_permutation(res.o, perm).to(at::kDouble);
    const double err = ref::compare(o, dense).rel_l1;
    EXPECT_NEAR(e.error_stage1, err, 1e-9) << "layer " << e.layer << " head " << e.head;
    EXPECT_DOUBLE_EQ(e.sparsity_stage1, res.sparsity_stage1());

    // Control: the same thresholds in the dump's order give another mask or error.
    at::Tensor mask_nat = ref::predict_block_mask(q, k, g, thr, opt);
    auto nat = ref::sparse_attention(q, k, v, mask_nat, {tune::kNoSkip}, g, opt);
    const double err_nat = ref::compare(nat.o.to(at::kDouble), dense).rel_l1;
    differs_unpermuted |= std::abs(err_nat - err) > 1e-9;
  }
  EXPECT_TRUE(differs_unpermuted) << "eval gave the unpermuted numbers on every head";
}

TEST(TokenOrder, MismatchIsRejected) {
  NEED_REAL_DUMP();
  auto cfg = tune::run_tune(quick_tune(dump, tmp_dir() / "mm.yaml")).config;
  io::DumpReader reader(dump);
  // Another grid (same token count) -> config error.
  auto other = cfg;
  other.permutation.grid = {2, 16, 12};
  try {
    tune::config_token_order(other, reader.info(), "mm.yaml");
    FAIL() << "a config tuned on another grid was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ExitCode::kConfigError);
    EXPECT_NE(std::string(e.what()).find("permutation"), std::string::npos) << e.what();
  }
  // A run without the permutation (the runtime's check) rejects a Hilbert config and vice versa.
  config::Permutation none;
  EXPECT_THROW(config::check_permutation(cfg.permutation, none, "mm.yaml"), Error);
  EXPECT_THROW(config::check_permutation(none, cfg.permutation, "mm.yaml"), Error);
  EXPECT_NO_THROW(config::check_permutation(cfg.permutation, cfg.permutation, "mm.yaml"));

  // CLI: eval of the edited config exits 78 with one line naming the permutation.
  config::write_tuned(tmp_dir() / "other_grid.yaml", other);
  auto r = test_support::run_sparge(fmt::format("--no-progress eval '{}' '{}'", dump.string(),
                                                (tmp_dir() / "other_grid.yaml").string()),
                                    tmp_dir());
  EXPECT_EQ(r.code, 78) << r.err;
  EXPECT_NE(r.err.find("permutation"), std::string::npos) << r.err;
}

TEST(TokenOrder, DumpWithoutGridOrCausalIsNotPermuted) {
  io::DumpInfo info;
  EXPECT_FALSE(tune::tune_token_order(info, false, true).active());
  info.grid = std::array<int, 3>{2, 4, 4};
  info.text_prefix = 3;
  EXPECT_TRUE(tune::tune_token_order(info, false, true).active());
  EXPECT_FALSE(tune::tune_token_order(info, false, false).active());
  std::string why;
  EXPECT_FALSE(tune::tune_token_order(info, true, true, &why).active());
  EXPECT_NE(why.find("causal"), std::string::npos);

  // A Hilbert config on a dump without a grid: config error.
  config::TunedConfig cfg;
  cfg.permutation.order = "hilbert";
  cfg.permutation.grid = {2, 4, 4};
  cfg.permutation.text_prefix = 3;
  io::DumpInfo flat;
  EXPECT_THROW(tune::config_token_order(cfg, flat, "x.yaml"), Error);
  EXPECT_TRUE(tune::config_token_order(cfg, info, "x.yaml").active());
  cfg.kernel.causal = true;
  EXPECT_THROW(tune::config_token_order(cfg, info, "x.yaml"), Error);
}

}  // namespace
}  // namespace sparge
