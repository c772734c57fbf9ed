// Issue 19 (hardening) scenarios that need more than one command line: outputs that would
// replace an input through a symlink or hard link, incomplete shard sets, report gates, a full
// disk, SIGINT/SIGTERM mid-write, concurrent tunes, journals after bad data, and warnings.
// The one-line bad-input classes are the table in bad_input_test.cpp.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/error.hpp"
#include "config/tuned.hpp"
#include "io/dump.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
using sparge::test_support::slurp;

namespace {

fs::path dir() { return sparge::test_support::scratch_dir("hardening"); }

using Result = sparge::test_support::CliResult;
Result run(const std::string& args) {
  return sparge::test_support::run_sparge("--no-progress " + args, dir());
}

const std::string kCheap = "--samples 0-1 --theta-grid 0,0.5 --lambda-tol 1";

// 2-layer llm dump (causal), made once per process.
fs::path small_dump() {
  static const fs::path p = [] {
    const fs::path d = dir() / "small.h5";
    const Result r = run(fmt::format(
        "synth -o {} --kind llm --layers 2 --samples 2 --heads 2 --seq 64 --head-dim 32 "
        "--dtype fp32",
        d.string()));
    EXPECT_EQ(r.code, 0) << r.err;
    return d;
  }();
  return p;
}

std::vector<fs::path> temporaries_in(const fs::path& d) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(d)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) out.push_back(e.path());
  }
  return out;
}

TEST(Hardening, OutputNamingAnInputIsRefusedInEverySpelling) {
  const fs::path d = dir() / "d.h5";
  fs::copy_file(small_dump(), d, fs::copy_options::overwrite_existing);
  const std::string before = slurp(d);
  const fs::path sym = dir() / "sym.h5", hard = dir() / "hard.h5";
  fs::remove(sym);
  fs::remove(hard);
  fs::create_symlink(d, sym);
  fs::create_hard_link(d, hard);
  const std::string dot = (dir() / "." / "d.h5").string();
  for (const std::string out : {d.string(), sym.string(), hard.string(), dot}) {
    for (const std::string cmd : {fmt::format("tune {} -o {}", d.string(), out),
                                  fmt::format("inspect {} -o {}", d.string(), out)}) {
      const Result r = run(cmd);
      EXPECT_EQ(r.code, 2) << cmd << "\n" << r.err;
      EXPECT_NE(r.err.find("is the input"), std::string::npos) << r.err;
    }
  }
  EXPECT_EQ(slurp(d), before) << "the input dump was changed";
}

TEST(Hardening, MergeRefusesMissingAndForeignShards) {
  const fs::path p0 = dir() / "p0.yaml", p1 = dir() / "p1.yaml", q0 = dir() / "q0of3.yaml",
                 full = dir() / "full.yaml";
  const std::string dump = small_dump().string();
  ASSERT_EQ(run(fmt::format("tune {} -o {} {} --shard 0/2", dump, p0.string(), kCheap)).code, 0);
  ASSERT_EQ(run(fmt::format("tune {} -o {} {} --shard 1/2", dump, p1.string(), kCheap)).code, 0);
  ASSERT_EQ(run(fmt::format("tune {} -o {} {} --shard 0/3", dump, q0.string(), kCheap)).code, 0);
  ASSERT_EQ(run(fmt::format("tune {} -o {} {}", dump, full.string(), kCheap)).code, 0);
  const auto part = sparge::config::read_tuned(p1);
  ASSERT_TRUE(part.provenance.shard.has_value());
  EXPECT_EQ(part.provenance.shard->index, 1);
  EXPECT_EQ(part.provenance.shard->count, 2);
  EXPECT_EQ(part.provenance.shard->layers, (std::vector<int>{0, 1}));

  const fs::path m = dir() / "m.yaml";
  Result missing = run(fmt::format("merge {} -o {}", p0.string(), m.string()));
  EXPECT_EQ(missing.code, 78) << missing.err;
  EXPECT_NE(missing.err.find("shard(s) 1/2 missing"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(m));

  Result foreign = run(fmt::format("merge {} {} -o {}", q0.string(), p1.string(), m.string()));
  EXPECT_EQ(foreign.code, 78) << foreign.err;
  EXPECT_NE(foreign.err.find("different splits"), std::string::npos) << foreign.err;

  Result unrecorded = run(fmt::format("merge {} -o {}", full.string(), m.string()));
  EXPECT_EQ(unrecorded.code, 78) << unrecorded.err;
  EXPECT_NE(unrecorded.err.find("records no shard"), std::string::npos) << unrecorded.err;

  // --allow-partial merges with a warning, and eval then says which layers have no thresholds.
  Result partial = run(fmt::format("merge {} -o {} --allow-partial", p0.string(), m.string()));
  EXPECT_EQ(partial.code, 0) << partial.err;
  EXPECT_NE(partial.err.find("missing"), std::string::npos) << partial.err;
  Result ev = run(fmt::format("eval {} {}", dump, m.string()));
  EXPECT_NE(ev.err.find("have no thresholds"), std::string::npos) << ev.err;
  EXPECT_NE(ev.err.find("layers 1"), std::string::npos) << ev.err;

  // The complete set still merges to the single run, byte for byte.
  Result ok = run(fmt::format("merge {} {} -o {}", p1.string(), p0.string(), m.string()));
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(slurp(m), slurp(full));
}

TEST(Hardening, ReportGoneRowsAndLayersAreRegressions) {
  auto j =
      nlohmann::json::parse(slurp(fs::path(SPARGE_SOURCE_DIR) / "tests/fixtures/bench_base.json"));
  const fs::path base = dir() / "base.json", empty = dir() / "empty.json";
  std::ofstream(base) << j.dump();
  j["rows"] = nlohmann::json::array();
  std::ofstream(empty) << j.dump();
  EXPECT_EQ(run(fmt::format("report {} {}", base.string(), empty.string())).code, 1);
  EXPECT_EQ(run(fmt::format("report --allow-gone {} {}", base.string(), empty.string())).code, 0);

  // Tuned configs: a layer that disappeared fails too.
  const fs::path both = dir() / "both.yaml", one = dir() / "one.yaml";
  const std::string dump = small_dump().string();
  ASSERT_EQ(run(fmt::format("tune {} -o {} {}", dump, both.string(), kCheap)).code, 0);
  ASSERT_EQ(run(fmt::format("tune {} -o {} {} --layers 0", dump, one.string(), kCheap)).code, 0);
  EXPECT_EQ(run(fmt::format("report {} {}", both.string(), one.string())).code, 1);
  EXPECT_EQ(run(fmt::format("report --allow-gone {} {}", both.string(), one.string())).code, 0);
}

// RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG (SIGXFSZ ignored).
TEST(Hardening, SynthOnAFullDiskExits74WithoutCrashOrLeftovers) {
  const fs::path d = dir() / "full";
  fs::create_directories(d);
  const std::string cmd = fmt::format(
      "trap '' XFSZ; ulimit -f 2000; '{}' --no-progress synth -o '{}' --kind llm --layers 4 "
      "--samples 2 --heads 4 --seq 1024 --head-dim 64 --dtype fp32 2>'{}'",
      SPARGE_BIN, (d / "big.h5").string(), (d / "err.txt").string());
  const int status = std::system(fmt::format("sh -c \"{}\"", cmd).c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal (segfault at exit?)";
  EXPECT_EQ(WEXITSTATUS(status), 74) << slurp(d / "err.txt");
  EXPECT_NE(slurp(d / "err.txt").find("cannot write"), std::string::npos);
  EXPECT_FALSE(fs::exists(d / "big.h5"));
  EXPECT_TRUE(temporaries_in(d).empty());
}

// SIGINT / SIGTERM while a dump is being written remove its temporary.
TEST(Hardening, SignalsRemoveTemporaries) {
  for (int sig : {SIGTERM, SIGINT}) {
    const fs::path d = dir() / fmt::format("sig{}", sig);
    fs::create_directories(d);
    const std::string out = (d / "big.h5").string();
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);  // gtest's shell may have set it to ignored
      ::execl(SPARGE_BIN, SPARGE_BIN, "-q", "--no-progress", "synth", "-o", out.c_str(), "--kind",
              "llm", "--layers", "64", "--samples", "4", "--heads", "8", "--seq", "4096",
              "--head-dim", "64", "--dtype", "fp32", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    bool seen = false;
    for (int i = 0; i < 600 && !seen; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      seen = !temporaries_in(d).empty();
    }
    ASSERT_TRUE(seen) << "no temporary appeared";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << "status " << status;
    EXPECT_TRUE(temporaries_in(d).empty()) << "signal " << sig << " left " << temporaries_in(d)[0];
    EXPECT_FALSE(fs::exists(out));
  }
}

TEST(Hardening, SecondTuneOnALockedJournalIsRefused) {
  const fs::path out = dir() / "locked.yaml";
  const fs::path journal = dir() / "locked.yaml.partial.jsonl";
  std::ofstream(journal) << "{}\n";
  const int fd = ::open(journal.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);  // stands in for a running tune
  Result r = run(fmt::format("tune {} -o {} {}", small_dump().string(), out.string(), kCheap));
  EXPECT_EQ(r.code, 74) << r.err;
  EXPECT_NE(r.err.find("journal is locked"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(journal), "{}\n") << "the live journal was replaced";
  ::close(fd);
  EXPECT_EQ(run(fmt::format("tune {} -o {} {}", small_dump().string(), out.string(), kCheap)).code,
            0);
}

TEST(Hardening, JournalIsRemovedAfterBadData) {
  const fs::path nan_dump = dir() / "nan.h5";
  {
    sparge::io::DumpInfo info;
    info.producer = "hardening_test";
    sparge::io::DumpWriter w(nan_dump, info);
    for (int s = 0; s < 2; ++s) {
      at::Tensor q = at::randn({1, 2, 64, 32});
      if (s == 1) q[0][1][3][4] = std::numeric_limits<float>::quiet_NaN();
      w.write_sample(0, "", s, q, at::randn({1, 2, 64, 32}), at::randn({1, 2, 64, 32}));
    }
    w.close();
  }
  const fs::path out = dir() / "nan.yaml";
  Result r = run(fmt::format("tune {} -o {} {} --jobs 1", nan_dump.string(), out.string(), kCheap));
  EXPECT_EQ(r.code, 65) << r.err;
  EXPECT_FALSE(fs::exists(dir() / "nan.yaml.partial.jsonl")) << "journal left behind";
  EXPECT_FALSE(fs::exists(out));
}

// One query token: the padded rows of the only Q block are no P·V saving.
TEST(Hardening, SingleTokenDenseHeadsReportNoStage2Sparsity) {
  const fs::path d = dir() / "n1.h5", out = dir() / "n1.yaml";
  ASSERT_EQ(run(fmt::format("synth -o {} --kind llm --layers 1 --samples 2 --heads 2 --seq 1 "
                            "--head-dim 32",
                            d.string()))
                .code,
            0);
  ASSERT_EQ(run(fmt::format("tune {} -o {} --samples 0-1", d.string(), out.string())).code, 0);
  const auto cfg = sparge::config::read_tuned(out);
  for (float s : cfg.layers.at(0).sparsity_stage12) EXPECT_EQ(s, 0.0f);
}

TEST(Hardening, WarnsAboutConfigsFromOtherKindsOfModelOrDump) {
  // A causal (llm) config on a non-causal dump of the same layout.
  const fs::path img = dir() / "img.h5", cfg = dir() / "llm.yaml";
  ASSERT_EQ(run(fmt::format("synth -o {} --kind image --grid 8,8 --layers 2 --samples 2 --heads 2 "
                            "--head-dim 32 --dtype fp32",
                            img.string()))
                .code,
            0);
  ASSERT_EQ(run(fmt::format("tune {} -o {} {}", small_dump().string(), cfg.string(), kCheap)).code,
            0);
  Result ev = run(fmt::format("eval {} {}", img.string(), cfg.string()));
  EXPECT_NE(ev.err.find("tuned for causal attention"), std::string::npos) << ev.err;
  // report on configs of two dumps.
  const fs::path icfg = dir() / "img.yaml";
  ASSERT_EQ(
      run(fmt::format("tune {} -o {} {} --no-hilbert", img.string(), icfg.string(), kCheap)).code,
      0);
  Result rep = run(fmt::format("report {} {}", cfg.string(), icfg.string()));
  EXPECT_NE(rep.err.find("different dumps"), std::string::npos) << rep.err;
}

TEST(Hardening, HelpAndDefaults) {
  Result help = run("bench --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("Exit codes:"), std::string::npos);
  EXPECT_NE(help.out.find("SPARGE_KERNEL_EXPERIMENTS"), std::string::npos) << "own footer kept";
  const fs::path d = dir() / "default.h5";
  Result synth = run(fmt::format("synth -o {}", d.string()));
  EXPECT_EQ(synth.code, 0) << synth.err;
  EXPECT_TRUE(fs::exists(d));
  Result llm = run(fmt::format("synth -o {} --kind llm", (dir() / "default_llm.h5").string()));
  EXPECT_EQ(llm.code, 0) << llm.err;
}

TEST(Hardening, ErrorsStayOneLineWhateverTheyQuote) {
  const sparge::Error e(sparge::ExitCode::kConfigError, "x.yaml: 'a\nb\x01': bad");
  EXPECT_STREQ(e.what(), "x.yaml: 'a\\nb\\x01': bad");
}

}  // namespace
