// `sparge bench` real-data accuracy rows without a GPU: the suite's real_data section (and the
// default suite carrying it), --real-data flags, the generator invocation and its cache (a
// missing interpreter, scikit-image or generator is a clear error, never a skip), results JSON
// v2 (data, fp64 accuracy) while v1 files still read, and the accuracy table.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "bench/cases.hpp"
#include "bench/realdata.hpp"
#include "bench/results.hpp"
#include "bench/runner.hpp"
#include "common/error.hpp"
#include "io/dump.hpp"
#include "support/cli_harness.hpp"

namespace fs = std::filesystem;
using namespace sparge;
using namespace sparge::bench;

namespace {

fs::path tmp_dir() { return test_support::scratch_dir("bench_realdata_test"); }

test_support::CliResult run_sparge(const std::string& args) {
  return test_support::run_sparge(args, tmp_dir());
}

const fs::path kFixtures = fs::path(SPARGE_SOURCE_DIR) / "tests" / "fixtures";

// A stand-in interpreter: a shell script that fails `-c "import MODULE"` for one module.
fs::path fake_python(const std::string& missing_module) {
  const fs::path p = tmp_dir() / ("python-without-" + missing_module);
  std::ofstream(p) << "#!/bin/sh\n"
                   << "if [ \"$1\" = -c ] && [ \"$2\" = \"import " << missing_module
                   << "\" ]; then\n"
                   << "  echo \"ModuleNotFoundError: No module named '" << missing_module
                   << "'\" >&2; exit 1\nfi\nexit 0\n";
  fs::permissions(p, fs::perms::owner_all);
  return p;
}

ExitCode error_of(const std::function<void()>& f, std::string* message) {
  try {
    f();
  } catch (const Error& e) {
    *message = e.what();
    return e.code();
  }
  return ExitCode::kOk;
}

// Sets an environment variable for one test and restores it after.
struct EnvGuard {
  std::string name;
  std::optional<std::string> old;
  EnvGuard(std::string n, const std::string& value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~EnvGuard() {
    if (old) {
      ::setenv(name.c_str(), old->c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
};

}  // namespace

TEST(RealDataSuite, DefaultSuiteCarriesRealDataLikeTheFile) {
  const Suite builtin = default_suite();
  const Suite file = load_suite(fs::path(SPARGE_SOURCE_DIR) / "configs/bench/default.yaml");
  ASSERT_TRUE(builtin.real_data.has_value());
  ASSERT_TRUE(file.real_data.has_value());
  EXPECT_EQ(*builtin.real_data, *file.real_data);
  EXPECT_EQ(builtin.real_data->size, "full");
  EXPECT_EQ(builtin.real_data->head_dims, (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(*builtin.real_data, real_data_of_size("full"));  // so --real-data full reproduces it
}

TEST(RealDataSuite, ParsesEveryKeyAndRejectsBadOnes) {
  const Suite s = parse_suite(
      "schema: sparge.bench-suite\nschema_version: 1\n"
      "real_data: {size: tiny, kind: text, images: [rocket, coffee], heads: 4, head_dims: [128], "
      "seed: 7}\n",
      "only-real.yaml");
  EXPECT_TRUE(s.cases.empty());  // accuracy rows alone are a valid suite
  ASSERT_TRUE(s.real_data);
  EXPECT_EQ(s.real_data->size, "tiny");
  EXPECT_EQ(s.real_data->kind, "text");
  EXPECT_EQ(s.real_data->images, (std::vector<std::string>{"rocket", "coffee"}));
  EXPECT_EQ(s.real_data->heads, 4);
  EXPECT_EQ(s.real_data->head_dims, (std::vector<int64_t>{128}));
  EXPECT_EQ(s.real_data->seed, 7u);
  for (const char* bad :
       {"real_data: {size: huge}", "real_data: {head_dims: [96]}", "real_data: {images: []}",
        "real_data: {colour: red}", "real_data: {kind: audio}", "real_data: [tiny]",
        "real_data: {heads: 0}"}) {
    std::string msg;
    const auto code = error_of(
        [&] {
          parse_suite(std::string("schema: sparge.bench-suite\nschema_version: 1\n") + bad + "\n",
                      "bad.yaml");
        },
        &msg);
    EXPECT_EQ(code, ExitCode::kConfigError) << bad;
    EXPECT_NE(msg.find("bad.yaml: real_data"), std::string::npos) << msg;
  }
  // No cases and no real data is still an error.
  std::string msg;
  EXPECT_EQ(
      error_of([&] { parse_suite("schema: sparge.bench-suite\nschema_version: 1\n", "x"); }, &msg),
      ExitCode::kConfigError);
}

TEST(RealDataArgs, FlagsListAndUsageErrors) {
  {
    const auto r = run_sparge("bench --list --real-data tiny");
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2) << r.out;  // D = 64 and 128
    EXPECT_NE(r.out.find("sparge bench --real-data tiny --seed 0 --kernel auto"), std::string::npos)
        << r.out;
  }
  {
    const auto r = run_sparge("bench --list");  // the default suite lists its accuracy rows
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("--real-data full"), std::string::npos) << r.out;
    const auto n = run_sparge("bench --list --no-real-data");
    EXPECT_EQ(n.out.find("--real-data"), std::string::npos) << n.out;
    EXPECT_EQ(std::count(n.out.begin(), n.out.end(), '\n') + 2,
              std::count(r.out.begin(), r.out.end(), '\n'));
  }
  {
    const auto r = run_sparge("bench --list --shape 1,2,128,64 --density 1");
    EXPECT_EQ(r.out.find("--real-data"), std::string::npos) << "shape runs add no accuracy rows";
  }
  for (const std::string args :
       {"--real-data tiny --no-real-data", "--real-data tiny --real-data full",
        "--real-data /nonexistent/real.h5", "--real-data huge",
        "--real-data tiny --dump a.h5 --config b.yaml"}) {
    const auto r = run_sparge("bench " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
  }
}

TEST(RealDataArgs, NoGpuExits69BeforeGenerating) {
  if (visible_devices() > 0) GTEST_SKIP() << "a GPU is visible: the 69 path cannot be taken";
  const EnvGuard cache("SPARGE_CACHE_DIR", (tmp_dir() / "cache-nogpu").string());
  const auto r = run_sparge("bench --real-data tiny");
  EXPECT_EQ(r.code, 69);
  EXPECT_NE(r.err.find("no CUDA device visible"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp_dir() / "cache-nogpu")) << "nothing generated without a GPU";
}

TEST(RealDataGenerator, ArgumentsAndCacheNames) {
  RealDataSpec spec = real_data_of_size("tiny");
  const auto args = generator_args(spec, 128, "/c/out.h5");
  const std::string joined = [&] {
    std::string s;
    for (const auto& a : args) s += a + " ";
    return s;
  }();
  EXPECT_EQ(joined,
            "-m sparge_realdata -o /c/out.h5 --kind video --images astronaut,coffee,chelsea "
            "--layers 1 --heads 8 --head-dim 128 --size tiny --seed 0 ");
  const fs::path a = real_dump_path(spec, 64, "/c"), b = real_dump_path(spec, 128, "/c");
  EXPECT_NE(a, b);
  EXPECT_EQ(a.parent_path(), fs::path("/c"));
  spec.seed = 1;
  EXPECT_NE(real_dump_path(spec, 64, "/c"), a);  // every flag is in the name
  spec.seed = 0;
  spec.images = {"rocket"};
  EXPECT_NE(real_dump_path(spec, 64, "/c"), a);
  {
    const EnvGuard g("SPARGE_PYTHON", "/opt/py/bin/python3");
    EXPECT_EQ(python_interpreter(), "/opt/py/bin/python3");
  }
  {
    const EnvGuard g("SPARGE_CACHE_DIR", "/var/cache/sparge");
    EXPECT_EQ(realdata_cache_dir(), fs::path("/var/cache/sparge"));
  }
}

TEST(RealDataGenerator, MissingPiecesAreNamedNeverSkipped) {
  const RealDataSpec spec = real_data_of_size("tiny");
  const fs::path cache = tmp_dir() / "cache-missing";
  struct Case {
    std::string python, expect;
  };
  const std::vector<Case> cases{
      {(tmp_dir() / "no-such-python").string(), "not usable"},
      {fake_python("skimage").string(), "scikit-image is missing"},
      {fake_python("sparge_realdata").string(), "sparge_realdata cannot be imported"},
  };
  for (const auto& c : cases) {
    const EnvGuard g("SPARGE_PYTHON", c.python);
    std::string msg;
    EXPECT_EQ(error_of([&] { ensure_real_dump(spec, 64, cache); }, &msg), ExitCode::kNoDevice)
        << c.python;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    EXPECT_FALSE(fs::exists(real_dump_path(spec, 64, cache)));
  }
  // The interpreter runs but the generator does nothing useful: its failure is reported, and
  // no half file is left as the cache entry.
  {
    const fs::path py = tmp_dir() / "python-silent";
    std::ofstream(py) << "#!/bin/sh\necho 'generator exploded' >&2\n"
                         "case \"$1\" in -m) exit 3;; esac\nexit 0\n";
    fs::permissions(py, fs::perms::owner_all);
    const EnvGuard g("SPARGE_PYTHON", py.string());
    std::string msg;
    EXPECT_EQ(error_of([&] { ensure_real_dump(spec, 64, cache); }, &msg), ExitCode::kSoftware);
    EXPECT_NE(msg.find("generator failed (exit 3): generator exploded"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(real_dump_path(spec, 64, cache)));
  }
}

TEST(RealDataGenerator, CachedDumpIsReusedWithoutPython) {
  const RealDataSpec spec = real_data_of_size("tiny");
  const fs::path cache = tmp_dir() / "cache-hit";
  fs::create_directories(cache);
  const fs::path target = real_dump_path(spec, 64, cache);
  const auto r = run_sparge("synth -o " + target.string() +
                            " --kind video --grid 1,4,4 --heads 2 --samples 1 --head-dim 64");
  ASSERT_EQ(r.code, 0) << r.err;
  const EnvGuard g("SPARGE_PYTHON", (tmp_dir() / "no-such-python").string());
  EXPECT_EQ(ensure_real_dump(spec, 64, cache), target);
  // A damaged cache entry is an error naming it, not a silent regeneration or skip.
  std::ofstream(target, std::ios::trunc) << "not hdf5";
  std::string msg;
  EXPECT_EQ(error_of([&] { ensure_real_dump(spec, 64, cache); }, &msg), ExitCode::kDataError);
  EXPECT_NE(msg.find(target.string()), std::string::npos) << msg;
}

// The real generator, when this machine has it (scikit-image and python/sparge_realdata):
// tiny tensors for D = 64 and 128, one sample per photograph, cached on the second call.
TEST(RealDataGenerator, GeneratesTinyDumpsOnce) {
  const std::string probe = python_interpreter() + " -c 'import skimage, h5py, numpy' 2>/dev/null";
  if (std::system(probe.c_str()) != 0) {
    GTEST_SKIP() << python_interpreter() << " lacks scikit-image/h5py: generator not run here";
  }
  const fs::path cache = tmp_dir() / "cache-gen";
  const auto inputs = real_data_inputs(real_data_of_size("tiny"), cache);
  ASSERT_EQ(inputs.size(), 2u);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const int64_t d = i == 0 ? 64 : 128;
    EXPECT_EQ(inputs[i].data, "real-video");
    io::DumpReader dump(inputs[i].dump);
    const auto& L = dump.info().layers.at(0);
    EXPECT_EQ(L.samples.size(), 3u);  // astronaut, coffee, chelsea
    EXPECT_EQ(L.num_q_heads, 8);
    EXPECT_EQ(L.head_dim, d);
    EXPECT_NE(inputs[i].source.find("--head-dim " + std::to_string(d)), std::string::npos);
  }
  const auto mtime = fs::last_write_time(inputs[0].dump);
  const EnvGuard g("SPARGE_PYTHON", (tmp_dir() / "no-such-python").string());
  const auto again = real_data_inputs(real_data_of_size("tiny"), cache);  // no Python needed
  EXPECT_EQ(again[0].dump, inputs[0].dump);
  EXPECT_EQ(fs::last_write_time(again[0].dump), mtime);
}

TEST(RealDataResults, Version2RoundTripsAndVersion1StillReads) {
  const Results v1 = load_results(kFixtures / "bench_base.json");
  for (const Row& r : v1.rows) {
    EXPECT_EQ(r.data, "uniform");
    EXPECT_EQ(r.accuracy_reference, "sdpa_cudnn");
    EXPECT_FALSE(r.rel_l1_mean.has_value());
  }
  const Results v2 = load_results(kFixtures / "bench_acc_base.json");
  int real = 0, normal = 0;
  for (const Row& r : v2.rows) {
    if (r.data == "real-video") ++real;
    if (r.data == "normal") ++normal;
    if (r.data != "uniform") {
      EXPECT_EQ(r.accuracy_reference, "fp64");
      EXPECT_TRUE(r.rel_l1_mean && r.rel_l1 && *r.rel_l1_mean <= *r.rel_l1);
      EXPECT_EQ(r.label(), r.name + " [" + r.data + "]");
    }
  }
  EXPECT_EQ(real, 2);
  EXPECT_EQ(normal, 2);
  const nlohmann::json j = to_json(v2);
  EXPECT_EQ(j["schema_version"], 2);
  const Results back = results_from_json(j, "roundtrip");
  ASSERT_EQ(back.rows.size(), v2.rows.size());
  for (size_t i = 0; i < back.rows.size(); ++i) {
    EXPECT_EQ(back.rows[i].data, v2.rows[i].data);
    EXPECT_EQ(back.rows[i].accuracy_reference, v2.rows[i].accuracy_reference);
    EXPECT_EQ(back.rows[i].rel_l1_mean, v2.rows[i].rel_l1_mean);
  }
  for (int version : {0, 3}) {
    nlohmann::json bad = j;
    bad["schema_version"] = version;
    std::string msg;
    EXPECT_EQ(error_of([&] { results_from_json(bad, "x.json"); }, &msg), ExitCode::kDataError);
    EXPECT_NE(msg.find("reads 1 to 2"), std::string::npos) << msg;
  }
}

TEST(RealDataResults, AccuracyTableSetsRealBesideNormal) {
  const Results r = load_results(kFixtures / "bench_acc_base.json");
  const std::string text = format_table(r, TableFormat::kText);
  const size_t at = text.find("# accuracy at the dense mask");
  ASSERT_NE(at, std::string::npos) << text;
  const std::string acc = text.substr(at);
  // real-video D = 64: worst 0.0450 vs N(0, 1) 0.0370 -> 1.22; D = 128: 0.0480 / 0.0375 = 1.28.
  EXPECT_NE(acc.find("real-video"), std::string::npos);
  EXPECT_NE(acc.find("1.22"), std::string::npos) << acc;
  EXPECT_NE(acc.find("1.28"), std::string::npos) << acc;
  EXPECT_EQ(std::count(acc.begin(), acc.end(), '\n'), 1 + 1 + 4) << acc;  // title, header, rows
  EXPECT_NE(text.find("sparge_fwd.sm90.hd64.i8f8 [real-video]"), std::string::npos);
  const std::string md = format_table(r, TableFormat::kMarkdown);
  EXPECT_NE(md.find("### accuracy at the dense mask"), std::string::npos);
  // v1 results have no such rows and no such section.
  EXPECT_EQ(format_table(load_results(kFixtures / "bench_base.json"), TableFormat::kText)
                .find("# accuracy"),
            std::string::npos);
}
