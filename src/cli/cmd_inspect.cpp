// `sparge inspect`: validate a Q/K/V dump and show its layout, attributes and value statistics.
#include <fmt/format.h>

#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/commands.hpp"
#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "common/progress.hpp"
#include "io/dump.hpp"
#include "io/tensor_stats.hpp"

namespace sparge::cli {
namespace {

using nlohmann::ordered_json;

struct InspectArgs {
  std::string file;
  std::string format = "text";
  std::string layers;
  std::string output;
  bool no_stats = false;
};

// "0,2-4" -> {0, 2, 3, 4}.
std::set<int> parse_layers(const std::string& spec) {
  std::set<int> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    const size_t comma = std::min(spec.find(',', pos), spec.size());
    const std::string item = spec.substr(pos, comma - pos);
    const size_t dash = item.find('-');
    int lo = 0, hi = 0;
    auto num = [&](const std::string& s, int& v) {
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      return ec == std::errc() && p == s.data() + s.size() && !s.empty() && v >= 0;
    };
    bool ok = dash == std::string::npos
                  ? (num(item, lo) && ((hi = lo), true))
                  : num(item.substr(0, dash), lo) && num(item.substr(dash + 1), hi) && lo <= hi;
    if (!ok) fail(ExitCode::kUsage, "--layers '{}': '{}' is not N or A-B", spec, item);
    for (int i = lo; i <= hi; ++i) out.insert(i);
    pos = comma + 1;
  }
  return out;
}

const char* dtype_name(at::ScalarType t) {
  return t == at::kHalf ? "float16" : t == at::kBFloat16 ? "bfloat16" : "float32";
}

ordered_json stats_json(const io::TensorStats& s) {
  return {{"mean", s.mean},     {"std", s.std}, {"min", s.min}, {"max", s.max},
          {"absmax", s.absmax}, {"nan", s.nan}, {"inf", s.inf}, {"checksum", s.checksum}};
}

// Builds the whole report as JSON (the text format renders it), and counts non-finite values.
ordered_json build_report(const io::DumpReader& dump, const InspectArgs& a,
                          std::string* nonfinite) {
  const io::DumpInfo& info = dump.info();
  ordered_json root = {
      {"schema", "sparge.inspect"}, {"schema_version", 1}, {"file", dump.path().string()}};
  ordered_json attrs = ordered_json::object();
  for (const auto& [k, v] : info.attributes) attrs[k] = v;
  root["dump"] = {{"schema_version", info.schema_version},
                  {"producer", info.producer},
                  {"model_id", info.model_id},
                  {"capture_point", info.capture_point},
                  {"causal", info.causal},
                  {"scale", info.scale ? ordered_json(*info.scale) : ordered_json(nullptr)},
                  {"grid", info.grid ? ordered_json(*info.grid) : ordered_json(nullptr)},
                  {"text_prefix", info.text_prefix},
                  {"text_suffix", info.text_suffix},
                  {"num_layers", info.layers.size()},
                  {"attributes", attrs}};
  std::set<int> wanted;
  if (!a.layers.empty()) {
    wanted = parse_layers(a.layers);
    // A missing layer is a usage error (exit 2, as in tune and eval), not an empty report.
    for (int l : wanted) {
      bool found = false;
      for (const auto& li : info.layers) found |= li.index == l;
      if (!found) fail(ExitCode::kUsage, "--layers: {} has no layer {}", dump.path().string(), l);
    }
  }
  long work = 0;
  for (const auto& l : info.layers) {
    if (wanted.empty() || wanted.count(l.index)) work += static_cast<long>(l.samples.size());
  }
  Progress progress("inspect", work, !a.no_stats);
  int64_t bad_tensors = 0;
  ordered_json layers = ordered_json::array();
  for (const auto& l : info.layers) {
    if (!wanted.empty() && !wanted.count(l.index)) continue;
    ordered_json lj = {{"index", l.index},
                       {"module_path", l.module_path},
                       {"num_q_heads", l.num_q_heads},
                       {"num_kv_heads", l.num_kv_heads},
                       {"head_dim", l.head_dim}};
    ordered_json samples = ordered_json::array();
    for (const auto& s : l.samples) {
      ordered_json sj = {{"index", s.index},
                         {"step", s.step ? ordered_json(*s.step) : ordered_json(nullptr)},
                         {"prompt", s.prompt ? ordered_json(*s.prompt) : ordered_json(nullptr)},
                         {"dtype", dtype_name(s.dtype)}};
      ordered_json tensors = ordered_json::object();
      std::vector<std::string> names = {"q", "k", "v"};
      if (s.has_o) names.push_back("o");
      for (const auto& n : names) {
        ordered_json tj = {{"shape", n == "q" || n == "o" ? s.q_shape : s.kv_shape}};
        if (!a.no_stats) {
          const io::TensorStats st =
              io::tensor_stats(dump.read(l.index, s.index, n, std::nullopt, false));
          tj.update(stats_json(st));
          if (st.nan + st.inf > 0) {
            if (bad_tensors++ == 0) {
              *nonfinite = fmt::format("/layers/{:03d}/samples/{:04d}/{}: {} NaN and {} Inf values",
                                       l.index, s.index, n, st.nan, st.inf);
            }
          }
        }
        tensors[n] = tj;
      }
      sj["tensors"] = tensors;
      samples.push_back(sj);
      progress.advance(1, fmt::format("layer {} sample {}", l.index, s.index));
    }
    lj["samples"] = samples;
    layers.push_back(lj);
  }
  progress.finish();
  if (bad_tensors > 1)
    *nonfinite += fmt::format(" (and {} more tensors with NaN/Inf)", bad_tensors - 1);
  root["layers"] = layers;
  return root;
}

std::string num(const ordered_json& j) {
  if (j.is_number_integer()) return fmt::format("{}", j.get<int64_t>());
  return fmt::format("{:.4g}", j.get<double>());
}

std::string render_text(const ordered_json& r) {
  const auto& d = r["dump"];
  std::string out =
      fmt::format("{}: sparge.qkv-dump v{}, {} layer(s)\n", r["file"].get<std::string>(),
                  num(d["schema_version"]), num(d["num_layers"]));
  std::string grid = "none";
  if (!d["grid"].is_null()) {
    grid = fmt::format("{}x{}x{} + text {}/{}", num(d["grid"][0]), num(d["grid"][1]),
                       num(d["grid"][2]), num(d["text_prefix"]), num(d["text_suffix"]));
  }
  out += fmt::format("  model_id {}  producer \"{}\"  capture_point {}\n",
                     d["model_id"].get<std::string>(), d["producer"].get<std::string>(),
                     d["capture_point"].get<std::string>());
  out += fmt::format("  causal {}  scale {}  grid {}\n", d["causal"].get<bool>() ? "yes" : "no",
                     d["scale"].is_null() ? "1/sqrt(D)" : num(d["scale"]), grid);
  // The standard attributes are shown above; list the others (e.g. synth_seed).
  static const std::set<std::string> kShown = {
      "schema", "schema_version", "producer", "model_id",    "capture_point", "layout",
      "causal", "scale",          "grid",     "text_prefix", "text_suffix",   "num_layers"};
  std::string extra;
  for (const auto& [k, v] : d["attributes"].items()) {
    if (!kShown.count(k)) extra += fmt::format(" {}={}", k, v.get<std::string>());
  }
  if (!extra.empty()) out += "  other attributes:" + extra + "\n";
  for (const auto& l : r["layers"]) {
    out += fmt::format(
        "\nlayer {:03d}  module \"{}\"  heads {} q / {} kv  head_dim {}  samples {}\n",
        l["index"].get<int>(), l["module_path"].get<std::string>(), num(l["num_q_heads"]),
        num(l["num_kv_heads"]), num(l["head_dim"]), l["samples"].size());
    out += fmt::format(
        "  {:<6} {:<5} {:<3} {:<22} {:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5} {:>5}\n",
        "sample", "step", "t", "shape [B,H,N,D]", "dtype", "mean", "std", "min", "max", "absmax",
        "nan", "inf");
    for (const auto& s : l["samples"]) {
      for (const auto& [name, t] : s["tensors"].items()) {
        std::string shape =
            fmt::format("[{}]", fmt::join(t["shape"].get<std::vector<int64_t>>(), ", "));
        auto col = [&](const char* k) { return t.contains(k) ? num(t[k]) : std::string("-"); };
        out += fmt::format(
            "  {:<6} {:<5} {:<3} {:<22} {:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>5} {:>5}\n",
            fmt::format("{:04d}", s["index"].get<int>()),
            s["step"].is_null() ? "-" : num(s["step"]), name, shape, s["dtype"].get<std::string>(),
            col("mean"), col("std"), col("min"), col("max"), col("absmax"), col("nan"), col("inf"));
      }
    }
  }
  return out;
}

void run(const InspectArgs& a) {
  refuse_output_over_input({"-o", a.output}, {a.file});
  io::DumpReader dump(a.file);
  std::string nonfinite;
  const ordered_json report = build_report(dump, a, &nonfinite);
  // A dump with NaN/Inf is bad input: the report still goes to stdout (it shows where), but no
  // -o file is written, so a pipeline never picks up a report of unusable data.
  if (!nonfinite.empty() && !a.output.empty()) {
    fail(ExitCode::kDataError, "{}: {}", a.file, nonfinite);
  }
  const std::string text = a.format == "json" ? report.dump(2) + "\n" : render_text(report);
  if (a.output.empty()) {
    fmt::print("{}", text);
    std::fflush(stdout);
  } else {
    write_file_atomic(a.output, text);
  }
  if (!nonfinite.empty()) fail(ExitCode::kDataError, "{}: {}", a.file, nonfinite);
}

}  // namespace

void register_inspect(CLI::App& app, Context&) {
  auto args = std::make_shared<InspectArgs>();
  auto* sub = app.add_subcommand(
      "inspect",
      "Validate a Q/K/V dump and print its layers, samples, shapes, dtypes, attributes and\n"
      "per-tensor statistics (mean, std, min, max, absmax, NaN/Inf counts, content checksum).\n"
      "Exit 65 for a malformed dump or NaN/Inf values, 66 when the file is missing.");
  sub->add_option("file", args->file, "Dump file (.h5)")->required();
  sub->add_option("--format", args->format, "text | json")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  sub->add_option("--layers", args->layers, "Only these layers, e.g. 0,2-5");
  sub->add_flag("--no-stats", args->no_stats, "Structure only: read no tensor data");
  sub->add_option("-o,--output", args->output, "Write the report to this file (atomically)");
  sub->callback([args] { run(*args); });
}

}  // namespace sparge::cli
