// `sparge bench`: times our block-sparse kernels against dense baselines (our dense mode, PyTorch
// SDPA cuDNN and flash) on shapes x densities, or on masks predicted from a dump + tuned config.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>
#include <optional>
#include <sstream>

#include "bench/cases.hpp"
#include "bench/realdata.hpp"
#include "bench/results.hpp"
#include "bench/runner.hpp"
#include "cli/commands.hpp"
#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "common/log.hpp"
#include "runtime/runtime.hpp"

namespace sparge::cli {
namespace {

struct BenchArgs {
  std::vector<std::string> shapes;
  int64_t kv_heads = 0;
  std::vector<std::string> densities;
  bool causal = false;
  std::string suite;
  std::string dtype = "fp16";
  std::string kernel = "auto";
  uint64_t seed = 0;
  std::string devices = "0";
  std::string format = "text";
  std::string output;
  int min_samples = 30;
  double warmup_ms = 25.0;
  double max_seconds = 10.0;
  bool no_baselines = false;
  bool list = false;
  std::string dump, config;
  std::vector<int> layers;
  int sample = 0;
  std::vector<std::string> real_data;  // tiny | full | dump files ("" = full)
  bool no_real_data = false;
};

std::vector<std::string> split_commas(const std::vector<std::string>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    std::stringstream ss(item);
    std::string part;
    while (std::getline(ss, part, ',')) out.push_back(part);
    if (!item.empty() && item.back() == ',') out.push_back("");
  }
  return out;
}

// The canonical command line of this run, recorded in the JSON environment.
std::string command_text(const BenchArgs& a) {
  std::string c = "sparge bench";
  if (!a.dump.empty()) {
    c += fmt::format(" --dump {} --config {}", a.dump, a.config);
    for (int l : a.layers) c += fmt::format(" --layer {}", l);
    c += fmt::format(" --sample {}", a.sample);
  } else if (!a.shapes.empty()) {
    for (const auto& s : a.shapes) c += " --shape " + s;
    if (a.kv_heads) c += fmt::format(" --kv-heads {}", a.kv_heads);
    if (!a.densities.empty()) c += " --density " + fmt::format("{}", fmt::join(a.densities, ","));
    if (a.causal) c += " --causal";
    c += " --dtype " + a.dtype;
  } else if (!a.suite.empty() || a.real_data.empty()) {
    c += " --suite " + (a.suite.empty() ? std::string("default") : a.suite);
  }
  for (const auto& r : a.real_data) c += " --real-data " + (r.empty() ? std::string("full") : r);
  if (a.no_real_data) c += " --no-real-data";
  c += fmt::format(" --kernel {} --seed {} --devices {}", a.kernel, a.seed, a.devices);
  if (a.min_samples != 30) c += fmt::format(" --min-samples {}", a.min_samples);
  if (a.no_baselines) c += " --no-baselines";
  return c;
}

// --real-data arguments: at most one size (tiny / full; a bare flag is full), any number of dump
// files. The size replaces the suite's real_data spec, files add dumps of real tensors.
struct RealDataArgs {
  std::optional<bench::RealDataSpec> spec;
  std::vector<std::filesystem::path> dumps;
};

RealDataArgs parse_real_data(const std::vector<std::string>& items) {
  RealDataArgs out;
  for (const auto& item : items) {
    const std::string v = item.empty() ? std::string("full") : item;
    if (v == "tiny" || v == "full") {
      if (out.spec) fail(ExitCode::kUsage, "--real-data: give one size (tiny or full), not two");
      out.spec = bench::real_data_of_size(v);
    } else if (std::filesystem::exists(v)) {
      out.dumps.push_back(v);
    } else {
      fail(ExitCode::kUsage, "--real-data '{}': expected tiny, full or an existing dump file", v);
    }
  }
  return out;
}

void run_bench(const BenchArgs& a) {
  using namespace sparge::bench;
  // Everything about the arguments is checked before the GPU, so usage errors exit 2 anywhere.
  {
    std::vector<std::filesystem::path> inputs{a.suite, a.dump, a.config};
    for (const auto& r : a.real_data) inputs.emplace_back(r);
    refuse_output_over_input({"-o", a.output}, inputs);
  }
  if (!a.suite.empty() && !a.shapes.empty()) {
    fail(ExitCode::kUsage, "--suite and --shape are exclusive (a suite lists its own shapes)");
  }
  if (a.dump.empty() != a.config.empty()) {
    fail(ExitCode::kUsage, "--dump and --config go together (predicted masks need both)");
  }
  if (!a.dump.empty() && (!a.shapes.empty() || !a.suite.empty() || !a.densities.empty())) {
    fail(ExitCode::kUsage, "--dump/--config replace --shape/--suite/--density");
  }
  if (a.shapes.empty() && (a.causal || a.kv_heads || !a.densities.empty())) {
    fail(ExitCode::kUsage, "--density/--causal/--kv-heads apply to --shape cases");
  }
  if (a.min_samples < 1) fail(ExitCode::kUsage, "--min-samples must be >= 1");
  if (!a.real_data.empty() && a.no_real_data) {
    fail(ExitCode::kUsage, "--real-data and --no-real-data are exclusive");
  }
  if (!a.dump.empty() && (!a.real_data.empty() || a.no_real_data)) {
    fail(ExitCode::kUsage,
         "--real-data does not go with --dump/--config (--real-data FILE takes a dump of real "
         "tensors for the accuracy rows)");
  }
  const RealDataArgs real = parse_real_data(a.real_data);

  Suite suite;
  if (a.dump.empty()) {
    if (a.shapes.empty() && a.suite.empty() && !a.real_data.empty()) {
      suite.name = "real-data";  // --real-data alone: the accuracy rows only
    } else if (!a.shapes.empty()) {
      std::vector<Shape> shapes;
      for (const auto& text : a.shapes) {
        Shape s = parse_shape(text);
        if (a.kv_heads) s.kv_heads = a.kv_heads;
        shapes.push_back(s);
      }
      std::vector<double> densities;
      for (const auto& d : split_commas(a.densities)) densities.push_back(parse_density(d));
      if (densities.empty()) densities = {1.0, 0.5, 0.25, 0.1};
      suite = suite_from_flags(shapes, densities, a.causal);
      suite.dtype = a.dtype;
    } else if (a.suite.empty() || a.suite == "default") {
      suite = default_suite();
    } else {
      suite = load_suite(a.suite);
    }
    if (!a.real_data.empty()) suite.real_data = real.spec;  // the flag replaces the suite's
    if (a.no_real_data) suite.real_data.reset();
  }
  // The command that reproduces the accuracy rows of the suite's spec.
  const bool spec_is_default_of_size =
      suite.real_data && *suite.real_data == real_data_of_size(suite.real_data->size);
  const std::string spec_command =
      !suite.real_data ? std::string()
      : spec_is_default_of_size
          ? real_data_command(*suite.real_data, a.seed, a.kernel)
          : fmt::format("sparge bench --suite {} --seed {} --kernel {}", a.suite, a.seed, a.kernel);
  if (a.list) {
    for (const Case& c : suite.cases) {
      fmt::print("{}\n", repro_command(c, suite.dtype, a.seed, a.kernel));
    }
    if (suite.real_data) {
      for (int64_t d : suite.real_data->head_dims) {
        fmt::print("{}  # accuracy, D = {}: {} kind {} images {} and N(0, 1)\n", spec_command, d,
                   suite.real_data->size, suite.real_data->kind,
                   fmt::join(suite.real_data->images, ","));
      }
    }
    for (const auto& f : real.dumps) {
      fmt::print(
          "sparge bench --real-data {} --seed {} --kernel {}  # accuracy on {} and "
          "N(0, 1)\n",
          f.string(), a.seed, a.kernel, f.string());
    }
    return;
  }
  const int count = visible_devices();
  if (count == 0) fail(ExitCode::kNoDevice, "no CUDA device visible");

  RunOptions opt;
  opt.kernel = a.kernel;
  opt.seed = a.seed;
  opt.timer.min_samples = a.min_samples;
  opt.timer.max_samples = std::max(a.min_samples, 4 * a.min_samples);
  opt.timer.warmup_ms = a.warmup_ms;
  opt.timer.max_seconds = a.max_seconds;
  opt.baselines = !a.no_baselines;
  opt.devices = parse_devices(a.devices, count);
  opt.command = command_text(a);
  // Real tensors after the device check (generating them takes a while) and before any case.
  if (suite.real_data) {
    for (AccuracyInput in : real_data_inputs(*suite.real_data, realdata_cache_dir())) {
      in.command = spec_command;
      opt.accuracy.push_back(std::move(in));
    }
  }
  for (const auto& f : real.dumps) {
    AccuracyInput in = dump_input(f);
    in.command = fmt::format("sparge bench --real-data {} --seed {} --kernel {}", f.string(),
                             a.seed, a.kernel);
    opt.accuracy.push_back(std::move(in));
  }
  Results results;
  if (!a.dump.empty()) {
    opt.dump = a.dump;
    opt.config = a.config;
    opt.layers = a.layers;
    opt.sample = a.sample;
    results = run_predicted(opt);
  } else {
    log::info("bench: {} case(s) of suite '{}' and {} accuracy input(s) on device(s) {}",
              suite.cases.size(), suite.name, opt.accuracy.size(), a.devices);
    results = run_suite(suite, opt);
  }
  if (!a.output.empty()) {
    write_file_atomic(a.output, to_json_text(results));
    log::info("bench: wrote {}", a.output);
  }
  if (a.format == "json") {
    std::cout << to_json_text(results);
  } else {
    const TableFormat f = a.format == "md"    ? TableFormat::kMarkdown
                          : a.format == "csv" ? TableFormat::kCsv
                                              : TableFormat::kText;
    std::cout << format_table(results, f);
  }
  std::cout.flush();
}

}  // namespace

void register_bench(CLI::App& app, Context&) {
  auto args = std::make_shared<BenchArgs>();
  auto* sub = app.add_subcommand(
      "bench",
      "Time the block-sparse kernels against dense baselines on one GPU or several.\n"
      "Without --shape/--suite it runs the default suite (the TARGETS.md shapes, densities "
      "1/0.5/0.25/0.1, causal dense, and the real-data accuracy rows). Per case: kernel-only time "
      "(inputs already quantised, LUT "
      "prebuilt), quantisation and prediction time, end-to-end time, and in the same run our "
      "dense mode, PyTorch SDPA cuDNN and flash; effective TOPS = 4*B*H*Nq*Nk*D / time (/2 "
      "causal). Tables on stdout, progress on stderr; -o writes the JSON (docs/bench.md).");
  sub->add_option("--shape", args->shapes,
                  "Case shape B,H,N,D or B,H,Nq,Nk,D (repeatable), e.g. 1,32,32768,128")
      ->type_name("B,H,N,D");
  sub->add_option("--kv-heads", args->kv_heads, "KV heads for GQA/MQA --shape cases (default H)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--density", args->densities,
                  "Fractions of blocks kept, comma separated (default 1,0.5,0.25,0.1)")
      ->type_name("D,...");
  sub->add_flag("--causal", args->causal, "Causal --shape cases (token mask inside blocks)");
  sub->add_option("--suite", args->suite,
                  "Suite YAML (configs/bench/*.yaml) or 'default'; exclusive with --shape");
  sub->add_option("--dtype", args->dtype, "Input dtype of --shape cases")
      ->check(CLI::IsMember({"fp16", "bf16"}));
  sub->add_option("--kernel", args->kernel,
                  "Kernel: auto, sm90 (Hopper i8f8, each head dim's fastest), sm90.pingpong or "
                  "sm90.warpgroup (that Hopper kernel at every head dim, for A/B runs), sm80 "
                  "(i8f16)")
      ->check(CLI::IsMember(runtime::kernel_names()));
  sub->add_option("--seed", args->seed, "Seed of inputs and random masks (per case derived)");
  sub->add_option("--devices", args->devices, "GPUs to spread cases over: 0,1,... or all");
  sub->add_option("--format", args->format, "stdout format")
      ->check(CLI::IsMember({"text", "json", "csv", "md"}));
  sub->add_option("-o,--output", args->output, "Write the JSON results here (atomically)");
  sub->add_option("--min-samples", args->min_samples,
                  "Timed samples per measurement (>= 30 "
                  "for reported numbers)");
  sub->add_option("--warmup-ms", args->warmup_ms,
                  "Warm-up per measurement, ms (also >= 10 "
                  "launches)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max-seconds", args->max_seconds, "Sampling time limit per measurement")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--no-baselines", args->no_baselines, "Skip SDPA cuDNN/flash and dense mode");
  sub->add_flag("--list", args->list, "Print the cases (as reproducing commands) and exit");
  sub->add_option("--dump", args->dump, "Q/K/V dump (HDF5): bench its predicted masks");
  sub->add_option("--config", args->config, "Tuned YAML for --dump");
  sub->add_option("--layer", args->layers, "Layers of --dump to bench (repeatable; default all)");
  sub->add_option("--sample", args->sample, "Sample of each layer to bench")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--real-data", args->real_data,
                  "Accuracy rows on real-image tensors: tiny or full (generated once by python -m "
                  "sparge_realdata, cached) or a dump FILE of real tensors (repeatable); per head "
                  "dim, rel-L1 vs dense fp64 of the kernel at the dense mask, worst and mean over "
                  "(sample, head), beside N(0, 1) of the same shape. Replaces the suite's "
                  "real_data; alone, runs only these rows")
      ->type_name("SIZE|FILE")
      ->expected(0, 1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_flag("--no-real-data", args->no_real_data,
                "Skip the suite's real-data accuracy rows (they need scikit-image)");
  sub->footer(
      "Hopper kernels: sm90 runs warpgroup (one warpgroup of 64 rows per CTA, four CTAs per "
      "SM) at D = 64 and pingpong (a producer and two consumer warpgroups taking turns, "
      "persistent grid) at D = 128, the fastest of each measured. --kernel sm90.NAME forces one "
      "at every head dim; the JSON and the table headers record it, and `sparge report` says so "
      "when two results differ in it. Experiments (sm90.serial, sm90.grid) exist only in a build "
      "configured with -DSPARGE_KERNEL_EXPERIMENTS=ON (kernels/attention_sm90.cuh).\n"
      "Real data: the generator runs with $SPARGE_PYTHON, else <source>/.venv/bin/python3 when "
      "present, else python3, with PYTHONPATH=<source>/python; it needs numpy, h5py, torch and "
      "scikit-image. Dumps are cached in $SPARGE_CACHE_DIR (default "
      "<tmp>/sparge-realdata). A missing interpreter, generator or scikit-image stops the run "
      "(exit 69) and says which; nothing is skipped silently.");
  sub->callback([args] { run_bench(*args); });
}

}  // namespace sparge::cli
