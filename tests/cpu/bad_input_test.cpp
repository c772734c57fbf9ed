// Every bad-input class of the issue-19 audit as one table: each row is a command line (with
// placeholders for generated inputs), the exit code it must give and a fragment of its one-line
// error. The next audit starts from here: add a row per new fault class.
//
// Placeholders, each made once per test process on first use:
//   {bin}  the sparge binary          {dir}   this process's scratch directory
//   {dump} small llm dump (2 layers, 2 heads, N 64, D 32, fp32, causal)
//   {img}  small non-causal image dump (2 layers)        {d256}  a D = 256 dump (DumpWriter)
//   {cfg}  tuned config of {dump}     {badcausal} {dump} with root attribute causal = 5
//   {sm70} {cfg} with kernel name sm70    {bk32} {cfg} with block_k 32 under sm90
//   {json} bench results, {empty} the same with rows: []
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "io/dump.hpp"
#include "io/h5.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
namespace h5 = sparge::io::h5;
using sparge::test_support::slurp;

namespace {

fs::path dir() { return sparge::test_support::scratch_dir("bad_input"); }

struct Shell {
  int code = -1;
  std::string out, err;
};

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
    s.replace(pos, from.size(), to);
  return s;
}

// Runs a shell line; stdout/stderr go to files unless the line redirects them itself.
Shell shell(const std::string& line) {
  static int n = 0;
  const fs::path out = dir() / fmt::format("sh{}.out", n), err = dir() / fmt::format("sh{}.err", n);
  ++n;
  const std::string redirect_out =
      line.find('>') == std::string::npos ? fmt::format(" >'{}'", out.string()) : std::string();
  const std::string cmd = fmt::format("{}{} 2>'{}'", line, redirect_out, err.string());
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
}

std::string bin() { return fmt::format("'{}' -q --no-progress", SPARGE_BIN); }

const std::string kCheap = "--samples 0-1 --theta-grid 0,0.5 --lambda-tol 1";

// Generated inputs, made on first use.
std::string input(const std::string& name) {
  static std::map<std::string, std::string> made;
  if (auto it = made.find(name); it != made.end()) return it->second;
  const fs::path p = dir() / name;
  std::string result = p.string();
  auto must = [&](const std::string& line) {
    const Shell r = shell(line);
    if (r.code != 0) ADD_FAILURE() << line << ": " << r.err;
  };
  auto edit_cfg = [&](const std::string& from, const std::string& to) {
    std::string y = slurp(input("cfg"));
    const auto pos = y.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    if (pos != std::string::npos) y.replace(pos, from.size(), to);
    std::ofstream(result) << y;
  };
  if (name == "dump") {
    result += ".h5";
    must(
        fmt::format("{} synth -o '{}' --kind llm --layers 2 --samples 2 --heads 2 --seq 64 "
                    "--head-dim 32 --dtype fp32",
                    bin(), result));
  } else if (name == "img") {
    result += ".h5";
    must(
        fmt::format("{} synth -o '{}' --kind image --grid 8,8 --layers 2 --samples 2 --heads 2 "
                    "--head-dim 32 --dtype fp32",
                    bin(), result));
  } else if (name == "cfg") {
    result += ".yaml";
    must(fmt::format("{} tune '{}' -o '{}' {}", bin(), input("dump"), result, kCheap));
  } else if (name == "d256") {
    result += ".h5";
    sparge::io::DumpInfo info;
    info.producer = "bad_input_test";
    sparge::io::DumpWriter w(result, info);
    for (int l = 0; l < 2; ++l) {
      for (int s = 0; s < 2; ++s) {
        at::Tensor q = at::randn({1, 2, 64, 256});
        w.write_sample(l, "", s, q, at::randn({1, 2, 64, 256}), at::randn({1, 2, 64, 256}));
      }
    }
    w.close();
  } else if (name == "badcausal") {
    result += ".h5";
    fs::copy_file(input("dump"), result, fs::copy_options::overwrite_existing);
    h5::silence_errors();
    h5::Hid f(H5Fopen(result.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    EXPECT_TRUE(f.valid());
    H5Adelete(f.get(), "causal");
    EXPECT_TRUE(h5::write_int_attr(f.get(), "causal", 5));
    EXPECT_TRUE(f.close());
  } else if (name == "sm70") {
    result += ".yaml";
    edit_cfg("name: \"sm90\"", "name: \"sm70\"");
  } else if (name == "bk32") {
    result += ".yaml";
    edit_cfg("block_k: 128", "block_k: 32");
  } else if (name == "json" || name == "empty") {
    result += ".json";
    auto j = nlohmann::json::parse(
        slurp(fs::path(SPARGE_SOURCE_DIR) / "tests/fixtures/bench_base.json"));
    if (name == "empty") j["rows"] = nlohmann::json::array();
    std::ofstream(result) << j.dump(1);
  } else if (name == "garbage_journal") {
    // A tune output whose journal is not JSON: --resume must say so, not blame the flags.
    result += ".yaml";
    std::ofstream(dir() / (name + ".yaml.partial.jsonl")) << "\x01\x02 not json\n";
  } else {
    ADD_FAILURE() << "unknown input " << name;
  }
  made[name] = result;
  return result;
}

std::string expand(std::string line) {
  line = replace_all(line, "{bin}", bin());
  line = replace_all(line, "{dir}", dir().string());
  for (const char* name : {"dump", "img", "cfg", "d256", "badcausal", "sm70", "bk32", "json",
                           "empty", "garbage_journal"}) {
    const std::string ph = fmt::format("{{{}}}", name);
    if (line.find(ph) != std::string::npos) line = replace_all(line, ph, input(name));
  }
  return line;
}

struct Case {
  const char* name;
  const char* line;      // after expansion, run by /bin/sh
  int code;              // expected exit status
  const char* fragment;  // expected in stderr ("" = any)
};

// clang-format off
const Case kCases[] = {
  // Outputs over inputs (symlink / hard link / ./ spellings: hardening_test.cpp).
  {"tune_output_is_dump", "{bin} tune {dump} -o {dump}", 2, "is the input"},
  {"inspect_output_is_dump", "{bin} inspect {dump} -o {dump}", 2, "is the input"},
  {"eval_masks_over_dump", "{bin} eval {dump} {cfg} --save-masks {dump}", 2, "is the input"},
  {"eval_masks_over_config", "{bin} eval {dump} {cfg} --save-masks {cfg}", 2, "is the input"},
  {"merge_output_is_part", "{bin} merge {cfg} -o {cfg}", 2, "is the input"},
  {"report_html_over_input", "{bin} report {json} {json} --html {json}", 2, "is the input"},
  {"bench_output_over_suite", "{bin} bench --suite {cfg} -o {cfg}", 2, "is the input"},
  {"tune_trace_is_output", "{bin} tune {dump} -o {dir}/t.yaml --trace {dir}/t.yaml", 2,
   "also the output of -o"},
  // Report gates.
  {"report_every_row_gone", "{bin} report {json} {empty}", 1, ""},
  // D > 128.
  {"tune_head_dim_256", "{bin} tune {d256} -o {dir}/d256.yaml", 65, "head dim 256"},
  {"eval_head_dim_256", "{bin} eval {d256} {cfg}", 65, "head dim 256"},
  {"synth_head_dim_300", "{bin} synth -o {dir}/x.h5 --head-dim 300", 2, "--head-dim"},
  {"synth_head_dim_256", "{bin} synth -o {dir}/x.h5 --head-dim 256", 2, "--head-dim"},
  // Write errors on stdout.
  {"eval_json_to_dev_full", "{bin} eval {dump} {cfg} --format json >/dev/full", 74, "stdout"},
  {"inspect_to_dev_full", "{bin} inspect {dump} >/dev/full", 74, "stdout"},
  {"config_show_to_dev_full", "{bin} config show {cfg} >/dev/full", 74, "stdout"},
  {"report_to_dev_full", "{bin} report {json} {json} >/dev/full", 74, "stdout"},
  // Config validation.
  {"validate_kernel_sm70", "{bin} config validate {sm70}", 78, "no such kernel"},
  {"eval_kernel_sm70", "{bin} eval {dump} {sm70}", 78, "no such kernel"},
  {"validate_block_k_32", "{bin} config validate {bk32}", 78, "no kernel has that geometry"},
  {"config_is_directory", "{bin} config validate {dir}", 66, "is a directory"},
  {"config_is_binary", "{bin} config validate {bin_path}", 78, "not a text file"},
  {"eval_config_is_directory", "{bin} eval {dump} {dir}", 66, "is a directory"},
  // Numbers and enums.
  {"tune_jobs_0", "{bin} tune {dump} -o {dir}/j.yaml --jobs 0", 2, "--jobs"},
  {"tune_jobs_negative", "{bin} tune {dump} -o {dir}/j.yaml --jobs -3", 2, "--jobs"},
  {"eval_jobs_0", "{bin} eval {dump} {cfg} --jobs 0", 2, "--jobs"},
  {"synth_seed_negative", "{bin} synth -o {dir}/s.h5 --seed -1", 2, "--seed"},
  {"synth_video_grid_2d", "{bin} synth -o {dir}/g.h5 --kind video --grid 4,16", 2, "T,H,W"},
  {"dump_causal_5", "{bin} inspect {badcausal}", 65, "causal is 5"},
  {"tune_backend_tpu", "{bin} tune {dump} -o {dir}/b.yaml --backend tpu", 2, "--backend"},
  {"eval_backend_tpu", "{bin} eval {dump} {cfg} --backend tpu", 2, "--backend"},
  // Command line.
  {"unknown_command", "{bin} frobnicate", 2, "sparge: error: unknown command 'frobnicate'"},
  {"cli11_errors_prefixed", "{bin} tune", 2, "sparge: error: "},
  {"inspect_layers_99", "{bin} inspect {dump} --layers 99", 2, "no layer 99"},
  {"tune_layers_99", "{bin} tune {dump} -o {dir}/l.yaml --layers 99", 2, "no layer 99"},
  {"eval_layers_99", "{bin} eval {dump} {cfg} --layers 99", 2, "no layer 99"},
  // Journal.
  {"garbage_journal", "{bin} tune {dump} -o {garbage_journal} --resume", 65,
   "not a sparge tune journal"},
};
// clang-format on

class BadInput : public ::testing::TestWithParam<Case> {};

TEST_P(BadInput, ExitCodeAndOneLineError) {
  const Case& c = GetParam();
  const std::string line =
      replace_all(expand(c.line), "{bin_path}", fmt::format("'{}'", SPARGE_BIN));
  const Shell r = shell(line);
  EXPECT_EQ(r.code, c.code) << line << "\n" << r.err;
  EXPECT_NE(r.err.find(c.fragment), std::string::npos) << line << "\n" << r.err;
  if (c.code != 0 && c.code != 1) {
    // One error line, the last one (warnings may come before it).
    size_t n_errors = 0;
    for (size_t pos = 0; (pos = r.err.find("sparge: error: ", pos)) != std::string::npos; ++pos)
      ++n_errors;
    EXPECT_EQ(n_errors, 1u) << r.err;
    const size_t last = r.err.rfind('\n', r.err.size() >= 2 ? r.err.size() - 2 : 0);
    const std::string last_line = last == std::string::npos ? r.err : r.err.substr(last + 1);
    EXPECT_EQ(last_line.rfind("sparge: error: ", 0), 0u) << r.err;
  }
}

INSTANTIATE_TEST_SUITE_P(Table, BadInput, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

}  // namespace
