// CLI tests for `sparge synth`, `sparge inspect` and `sparge devices`, run through the real
// binary (SPARGE_BIN): every bad dump gives its documented exit code, one error line naming the
// file, and no output file; smoke tests check the reports' content.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/dump.hpp"
#include "io/h5.hpp"
#include "kernels/device_info.h"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
namespace h5 = sparge::io::h5;

namespace {

fs::path scratch(const std::string& name) {
  return sparge::test_support::scratch_dir("cli_io_test") / name;
}

using Result = sparge::test_support::CliResult;
using sparge::test_support::slurp;

Result sparge(const std::string& args) {
  return sparge::test_support::run_sparge(args, sparge::test_support::scratch_dir("cli_io_test"));
}

// A small valid dump: 2 layers x 2 samples, q [1, 4, 96, 32], k/v [1, 2, 96, 32], fp32 (so that
// replace_dataset's fp32 replacements differ from the original only in the intended way).
fs::path make_good(const std::string& name) {
  const fs::path p = scratch(name);
  const Result r = sparge(
      fmt::format("synth -o '{}' --kind llm --layers 2 --samples 2 --heads 4 --kv-heads 2 --seq 96 "
                  "--head-dim 32 --dtype fp32 --seed 5",
                  p.string()));
  EXPECT_EQ(r.code, 0) << r.err;
  return p;
}

// Opens a copy of a good dump read-write and lets `edit` break it with the HDF5 C API.
fs::path make_bad(const std::string& name, const std::function<void(hid_t)>& edit) {
  const fs::path p = scratch(name);
  fs::copy_file(make_good(name + ".src.h5"), p, fs::copy_options::overwrite_existing);
  h5::silence_errors();
  h5::Hid f(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
  EXPECT_TRUE(f.valid());
  edit(f.get());
  EXPECT_TRUE(f.close());
  return p;
}

// Replaces dataset `path` with a zero-filled fp32 one of shape `dims`.
void replace_dataset(hid_t file, const std::string& path, std::vector<hsize_t> dims) {
  ASSERT_GE(H5Ldelete(file, path.c_str(), H5P_DEFAULT), 0) << path;
  h5::Hid space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  h5::Hid ds(H5Dcreate2(file, path.c_str(), H5T_NATIVE_FLOAT, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                        H5P_DEFAULT));
  ASSERT_TRUE(ds.valid()) << path;
  size_t n = 1;
  for (auto d : dims) n *= d;
  std::vector<float> zeros(n, 0.f);
  ASSERT_GE(H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data()), 0);
}

struct BadCase {
  std::string name;
  std::function<fs::path()> make;
  int code;
  std::string fragment;  // expected in the error line
};

std::vector<BadCase> bad_cases() {
  const std::string s0 = "/layers/000/samples/0000";
  return {
      {"missing", [] { return scratch("missing.h5"); }, 66, "no such file"},
      {"not_hdf5",
       [] {
         const fs::path p = scratch("not_hdf5.h5");
         std::ofstream(p) << "q,k,v\n1,2,3\n";
         return p;
       },
       65, "not an HDF5 file"},
      {"empty",
       [] {
         const fs::path p = scratch("empty.h5");
         std::ofstream{p};
         return p;
       },
       65, "not an HDF5 file"},
      {"truncated",
       [] {
         const fs::path p = scratch("truncated.h5");
         fs::copy_file(make_good("trunc_src.h5"), p, fs::copy_options::overwrite_existing);
         fs::resize_file(p, fs::file_size(p) * 2 / 3);
         return p;
       },
       65, "truncated"},
      {"not_a_dump",
       [] {
         return make_bad("not_a_dump.h5", [](hid_t f) { ASSERT_GE(H5Adelete(f, "schema"), 0); });
       },
       65, "no 'schema' attribute"},
      {"unknown_schema_major",
       [] {
         return make_bad("v3.h5", [](hid_t f) { h5::write_int_attr(f, "schema_version", 3); });
       },
       65, "unknown schema_version 3"},
      {"missing_group",
       [] {
         return make_bad("no_layers.h5",
                         [](hid_t f) { ASSERT_GE(H5Ldelete(f, "/layers", H5P_DEFAULT), 0); });
       },
       65, "/layers: missing group"},
      {"missing_dataset",
       [s0] {
         return make_bad("no_k.h5", [s0](hid_t f) {
           ASSERT_GE(H5Ldelete(f, (s0 + "/k").c_str(), H5P_DEFAULT), 0);
         });
       },
       65, s0 + "/k: missing dataset"},
      {"wrong_rank",
       [s0] {
         return make_bad("rank3.h5", [s0](hid_t f) { replace_dataset(f, s0 + "/q", {4, 96, 32}); });
       },
       65, s0 + "/q: rank 3, expected 4"},
      {"head_dim_mismatch",
       [s0] {
         return make_bad("dim.h5", [s0](hid_t f) {
           replace_dataset(f, s0 + "/k", {1, 2, 96, 16});
           replace_dataset(f, s0 + "/v", {1, 2, 96, 16});
         });
       },
       65, "head dim mismatch"},
      {"heads_not_multiple",
       [s0] {
         return make_bad("gqa.h5", [s0](hid_t f) {
           replace_dataset(f, s0 + "/k", {1, 3, 96, 32});
           replace_dataset(f, s0 + "/v", {1, 3, 96, 32});
         });
       },
       65, "H % Hkv != 0"},
      {"nan_values",
       [] {
         const fs::path p = scratch("nan.h5");
         sparge::io::DumpInfo info;
         sparge::io::DumpWriter w(p, info);
         at::Tensor q = at::zeros({1, 2, 16, 8}, at::kBFloat16);
         q[0][1][5][0] = std::numeric_limits<float>::quiet_NaN();
         at::Tensor k = at::zeros({1, 2, 16, 8}, at::kBFloat16);
         k[0][0][0][0] = -std::numeric_limits<float>::infinity();
         w.write_sample(0, "", 0, q, k, k);
         w.close();
         return p;
       },
       65, "/q: 1 NaN and 0 Inf values (and 2 more tensors with NaN/Inf)"},  // q, then k and v
  };
}

class BadDump : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadDump, ExitCodeOneLineAndNoOutput) {
  const BadCase& c = GetParam();
  const fs::path input = c.make();
  const fs::path report = scratch(c.name + ".report.json");
  fs::remove(report);
  const Result r =
      sparge(fmt::format("-q inspect '{}' --format json -o '{}'", input.string(), report.string()));
  EXPECT_EQ(r.code, c.code) << r.err;
  EXPECT_FALSE(fs::exists(report)) << "a report was written for a bad dump";
  // One line, naming the file and the fault.
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("sparge: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(input.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(c.fragment), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Cases, BadDump, ::testing::ValuesIn(bad_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Inspect, JsonReportDescribesTheDump) {
  const fs::path p = scratch("video.h5");
  Result r = sparge(fmt::format(
      "synth -o '{}' --kind video --grid 2,8,8 --text-prefix 16 --layers 2 --samples 3 --heads 4 "
      "--kv-heads 2 --head-dim 32 --dtype bf16 --seed 11 --with-o",
      p.string()));
  ASSERT_EQ(r.code, 0) << r.err;
  r = sparge(fmt::format("inspect '{}' --format json", p.string()));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["schema"], "sparge.inspect");
  EXPECT_EQ(j["dump"]["num_layers"], 2);
  EXPECT_EQ(j["dump"]["grid"], nlohmann::json({2, 8, 8}));
  EXPECT_EQ(j["dump"]["text_prefix"], 16);
  EXPECT_EQ(j["dump"]["causal"], false);
  EXPECT_EQ(j["dump"]["attributes"]["synth_kind"], "video");
  ASSERT_EQ(j["layers"].size(), 2u);
  const auto& l1 = j["layers"][1];
  EXPECT_EQ(l1["num_q_heads"], 4);
  EXPECT_EQ(l1["num_kv_heads"], 2);
  ASSERT_EQ(l1["samples"].size(), 3u);
  const auto& s2 = l1["samples"][2];
  EXPECT_EQ(s2["step"], 2);
  EXPECT_EQ(s2["dtype"], "bfloat16");
  EXPECT_EQ(s2["tensors"]["q"]["shape"], nlohmann::json({1, 4, 2 * 8 * 8 + 16, 32}));
  EXPECT_EQ(s2["tensors"]["k"]["shape"], nlohmann::json({1, 2, 2 * 8 * 8 + 16, 32}));
  ASSERT_TRUE(s2["tensors"].contains("o"));
  for (const char* t : {"q", "k", "v", "o"}) {
    const auto& tj = s2["tensors"][t];
    EXPECT_GT(tj["std"].get<double>(), 0.0) << t;
    EXPECT_LE(tj["min"].get<double>(), tj["mean"].get<double>()) << t;
    EXPECT_GE(tj["max"].get<double>(), tj["mean"].get<double>()) << t;
    EXPECT_EQ(tj["absmax"].get<double>(),
              std::max(-tj["min"].get<double>(), tj["max"].get<double>()))
        << t;
    EXPECT_EQ(tj["nan"], 0);
    EXPECT_EQ(tj["checksum"].get<std::string>().size(), std::string("fnv1a64:").size() + 16);
  }
  // Checksums are of content: different samples differ.
  EXPECT_NE(l1["samples"][0]["tensors"]["q"]["checksum"], s2["tensors"]["q"]["checksum"]);

  r = sparge(fmt::format("inspect '{}' --layers 1 --no-stats", p.string()));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.find("layer 000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layer 001"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[1, 4, 144, 32]"), std::string::npos) << r.out;

  // A layer the dump lacks is a usage error, as in tune and eval (issue 19).
  EXPECT_EQ(sparge(fmt::format("inspect '{}' --layers 4", p.string())).code, 2);
  EXPECT_EQ(sparge(fmt::format("inspect '{}' --layers x", p.string())).code, 2);
}

TEST(Synth, UsageErrorsLeaveNoFile) {
  const fs::path p = scratch("never.h5");
  fs::remove(p);
  EXPECT_EQ(
      sparge(fmt::format("synth -o '{}' --kind llm --seq 64 --heads 4 --kv-heads 3", p.string()))
          .code,
      2);
  EXPECT_EQ(sparge(fmt::format("synth -o '{}' --kind video --seq 64", p.string())).code, 2);
  EXPECT_EQ(sparge(fmt::format("synth -o '{}' --kind video --grid 2,x,8", p.string())).code, 2);
  EXPECT_EQ(sparge(fmt::format("synth -o '{}' --kind llm --seq 64 --dtype fp64", p.string())).code,
            2);
  EXPECT_FALSE(fs::exists(p));
  const Result r = sparge("synth -o /nonexistent-dir/x.h5 --kind noise --seq 16");
  EXPECT_EQ(r.code, 74) << r.err;
  EXPECT_NE(r.err.find("/nonexistent-dir/x.h5"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists("/nonexistent-dir/x.h5"));
}

TEST(Synth, SameFlagsGiveIdenticalFiles) {
  const std::string flags =
      "--kind image --grid 12,12 --layers 2 --samples 2 --heads 2 --head-dim 16 --seed ";
  const fs::path a = scratch("a.h5"), b = scratch("b.h5"), c = scratch("c.h5");
  ASSERT_EQ(sparge(fmt::format("synth -o '{}' {}99", a.string(), flags)).code, 0);
  ASSERT_EQ(sparge(fmt::format("synth -o '{}' {}99", b.string(), flags)).code, 0);
  ASSERT_EQ(sparge(fmt::format("synth -o '{}' {}100", c.string(), flags)).code, 0);
  EXPECT_EQ(slurp(a), slurp(b)) << "same flags, different bytes";
  EXPECT_NE(slurp(a), slurp(c));
}

TEST(Devices, ReportsDevicesOrExits69) {
  const int n = sparge::kernels::device_info_count();
  Result r = sparge("devices");
  if (n == 0) {
    EXPECT_EQ(r.code, 69);
    EXPECT_EQ(r.err, "sparge: error: no CUDA device visible\n");
    EXPECT_TRUE(r.out.empty());
  } else {
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("sm_"), std::string::npos) << r.out;
  }
  r = sparge("devices --format json");
  EXPECT_EQ(r.code, n == 0 ? 69 : 0);
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["schema"], "sparge.devices");
  EXPECT_EQ(j["devices"].size(), static_cast<size_t>(n));
  EXPECT_FALSE(j["compiled_archs"].empty()) << "the kernels were built for at least one arch";
}

}  // namespace
