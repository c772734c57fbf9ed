#include "bench/results.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <fstream>
#include <sstream>

#include "common/error.hpp"
#include "common/json_fields.hpp"

namespace sparge::bench {

using nlohmann::json;

std::string Row::label() const { return data == "uniform" ? name : name + " [" + data + "]"; }

double Row::dense_flops() const {
  const Shape& s = shape;
  const double f = 4.0 * double(s.batch) * double(s.heads) * double(s.seq_q) * double(s.seq_k) *
                   double(s.head_dim);
  return causal ? f / 2.0 : f;
}

double Row::effective_tops() const {
  return time.median > 0 ? dense_flops() / (time.median * 1e-3) / 1e12 : 0.0;
}

std::optional<double> Row::actual_tops() const {
  if (valid_blocks <= 0 || kept_blocks <= 0 || time.median <= 0) return std::nullopt;
  // Executed share of the dense work; for causal rows the valid blocks already exclude the
  // masked half, so dense_flops (halved) is the matching denominator.
  const double kept = dense_flops() * double(kept_blocks) / double(valid_blocks);
  return kept / (time.median * 1e-3) / 1e12;
}

std::optional<double> Row::speedup_vs(const std::optional<double>& baseline_ms) const {
  if (!baseline_ms || time.median <= 0) return std::nullopt;
  return *baseline_ms / time.median;
}

std::optional<double> Row::e2e_speedup_vs_cudnn() const {
  if (!cudnn_ms || !end_to_end_ms || *end_to_end_ms <= 0) return std::nullopt;
  return *cudnn_ms / *end_to_end_ms;
}

namespace {

json opt(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

json stats_json(const SampleStats& s) {
  return {{"median", s.median},
          {"mean", s.mean},
          {"min", s.min},
          {"max", s.max},
          {"q1", s.q1},
          {"q3", s.q3},
          {"rel_spread", s.rel_spread()},
          {"samples", s.count}};
}

}  // namespace

json to_json(const Results& r) {
  json gpus = json::array();
  for (const GpuInfo& g : r.env.gpus) {
    gpus.push_back({{"index", g.index},
                    {"name", g.name},
                    {"sm", g.sm},
                    {"sm_count", g.sm_count},
                    {"l2_bytes", g.l2_bytes},
                    {"memory_bytes", g.memory_bytes},
                    {"clock_nominal_mhz", g.clock_nominal_mhz},
                    {"clock_measured_mhz", g.clock_measured_mhz},
                    {"memory_clock_mhz", g.memory_clock_mhz},
                    {"ecc", g.ecc}});
  }
  json env = {{"gpu", r.env.gpu_name()}, {"gpus", gpus},
              {"driver", r.env.driver},  {"cuda_runtime", r.env.cuda_runtime},
              {"torch", r.env.torch},    {"sparge", r.env.sparge_version},
              {"git", r.env.git},        {"host", r.env.host},
              {"date", r.env.date},      {"command", r.env.command}};
  if (!r.env.sm90_kernel.empty()) env["sm90_kernel"] = r.env.sm90_kernel;
  json rows = json::array();
  for (const Row& row : r.rows) {
    const Shape& s = row.shape;
    json j = {{"name", row.name},
              {"shape",
               {{"batch", s.batch},
                {"heads", s.heads},
                {"kv_heads", s.kv_heads},
                {"seq_q", s.seq_q},
                {"seq_k", s.seq_k},
                {"head_dim", s.head_dim}}},
              {"causal", row.causal},
              {"density", row.density},
              {"dtype", row.dtype},
              {"mask", row.mask},
              {"data", row.data},
              {"seed", row.seed},
              {"device", row.device},
              {"time_ms", stats_json(row.time)},
              {"tops", {{"effective", row.effective_tops()}, {"actual", opt(row.actual_tops())}}},
              {"sparsity",
               {{"stage1", opt(row.sparsity_stage1)},
                {"stage12", opt(row.sparsity_stage12)},
                {"valid_blocks", row.valid_blocks},
                {"kept_blocks", row.kept_blocks}}},
              {"split_ms",
               {{"prediction", opt(row.prediction_ms)},
                {"quantisation", opt(row.quantisation_ms)},
                {"prepare", opt(row.prepare_ms)},
                {"kernel", row.time.median},
                {"end_to_end", opt(row.end_to_end_ms)}}},
              {"split_spread", {{"prepare", opt(row.prepare_spread)}}},
              {"baselines_ms",
               {{"dense", opt(row.dense_ms)},
                {"sdpa_cudnn", opt(row.cudnn_ms)},
                {"sdpa_flash", opt(row.flash_ms)}}},
              {"speedup",
               {{"vs_dense", opt(row.speedup_vs(row.dense_ms))},
                {"vs_cudnn", opt(row.speedup_vs(row.cudnn_ms))},
                {"vs_flash", opt(row.speedup_vs(row.flash_ms))},
                {"e2e_vs_cudnn", opt(row.e2e_speedup_vs_cudnn())}}},
              {"clock_mhz", opt(row.clock_mhz)},
              {"notes", row.notes},
              {"command", row.command}};
    if (row.rel_l1 || row.cosine) {
      j["accuracy"] = {{"rel_l1", opt(row.rel_l1)},
                       {"cosine", opt(row.cosine)},
                       {"reference", row.accuracy_reference}};
      if (row.rel_l1_mean) j["accuracy"]["rel_l1_mean"] = *row.rel_l1_mean;
    }
    rows.push_back(std::move(j));
  }
  return {{"schema", kBenchSchema},
          {"schema_version", kBenchSchemaVersion},
          {"environment", env},
          {"rows", rows}};
}

std::string kernel_tag(const Environment& e) {
  return e.sm90_kernel.empty() ? std::string() : fmt::format(" (sm90.{})", e.sm90_kernel);
}

std::string sm90_kernel_of_variant(int variant) {
  switch (variant) {
    case 4:
      return "serial";
    case 6:
      return "grid";
    case 9:
      return "pingpong";
    case 12:
      return "warpgroup";
    default:
      return fmt::format("v{}", variant);
  }
}

std::string to_json_text(const Results& results) { return to_json(results).dump(2) + "\n"; }

namespace {

// Typed access with one-line errors naming the file and the JSON path (common/json_fields.hpp),
// plus the optional fields of a row.
struct Reader : JsonFields {
  using JsonFields::JsonFields;
  // Optional: absent or null -> nullopt; anything else must be a number.
  std::optional<double> opt_num(const json& j, const char* key, const std::string& path) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) bad(path + "." + key, "expected a number");
    return it->get<double>();
  }
  // The same for a member of the optional object j[obj].
  std::optional<double> opt_num(const json& j, const char* obj, const char* key,
                                const std::string& path) const {
    auto o = j.find(obj);
    if (o == j.end() || o->is_null()) return std::nullopt;
    if (!o->is_object()) bad(path + "." + obj, "expected an object");
    return opt_num(*o, key, path + "." + obj);
  }
  std::string opt_str(const json& j, const std::string& key, const std::string& fallback) const {
    auto it = j.find(key);
    return (it != j.end() && it->is_string()) ? it->get<std::string>() : fallback;
  }
};

}  // namespace

Results results_from_json(const json& j, const std::string& source) {
  Reader rd(source);
  if (!j.is_object()) rd.bad("document", "expected a JSON object");
  if (!j.contains("schema")) rd.bad("schema", "missing (not a sparge bench result?)");
  const std::string schema = rd.text(j, "schema", "");
  if (schema != kBenchSchema) {
    rd.bad("schema", fmt::format("'{}', expected '{}'", schema, kBenchSchema));
  }
  const int64_t version = rd.integer(j, "schema_version", "");
  if (version < kBenchSchemaOldestRead || version > kBenchSchemaVersion) {
    rd.bad("schema_version", fmt::format("{} not supported (this sparge reads {} to {})", version,
                                         kBenchSchemaOldestRead, kBenchSchemaVersion));
  }
  Results r;
  const json& env = rd.at(j, "environment", "");
  if (!env.is_object()) rd.bad("environment", "expected an object");
  r.env.driver = rd.opt_str(env, "driver", "");
  r.env.cuda_runtime = rd.opt_str(env, "cuda_runtime", "");
  r.env.torch = rd.opt_str(env, "torch", "");
  r.env.sparge_version = rd.opt_str(env, "sparge", "");
  r.env.git = rd.opt_str(env, "git", "unknown");
  r.env.host = rd.opt_str(env, "host", "");
  r.env.date = rd.opt_str(env, "date", "");
  r.env.command = rd.opt_str(env, "command", "");
  if (env.contains("sm90_kernel")) {
    r.env.sm90_kernel = rd.text(env, "sm90_kernel", "environment");
  } else if (env.contains("sm90_variant")) {  // schema 2 before the kernels had names
    const int v = static_cast<int>(rd.integer(env, "sm90_variant", "environment"));
    if (v > 0) r.env.sm90_kernel = sm90_kernel_of_variant(v);
  }
  const std::string gpu = rd.text(env, "gpu", "environment");
  if (auto g = env.find("gpus"); g != env.end() && g->is_array()) {
    for (size_t i = 0; i < g->size(); ++i) {
      const json& x = (*g)[i];
      const std::string p = fmt::format("environment.gpus[{}]", i);
      GpuInfo info;
      info.index = static_cast<int>(rd.integer(x, "index", p));
      info.name = rd.text(x, "name", p);
      info.sm = rd.opt_str(x, "sm", "");
      info.sm_count = x.value("sm_count", 0);
      info.l2_bytes = x.value("l2_bytes", int64_t{0});
      info.memory_bytes = x.value("memory_bytes", int64_t{0});
      info.clock_nominal_mhz = x.value("clock_nominal_mhz", 0.0);
      info.clock_measured_mhz = x.value("clock_measured_mhz", 0.0);
      info.memory_clock_mhz = x.value("memory_clock_mhz", 0.0);
      info.ecc = x.value("ecc", false);
      r.env.gpus.push_back(info);
    }
  }
  if (r.env.gpus.empty()) {
    GpuInfo only;
    only.name = gpu;
    r.env.gpus.push_back(only);
  }
  if (r.env.gpus[0].name != gpu) rd.bad("environment.gpu", "differs from environment.gpus[0]");

  const json& rows = rd.at(j, "rows", "");
  if (!rows.is_array()) rd.bad("rows", "expected an array");
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& x = rows[i];
    const std::string p = fmt::format("rows[{}]", i);
    Row row;
    // "variant" before the key was "name" (files written until issue 20 say so).
    row.name = !x.contains("name") && x.contains("variant") ? rd.text(x, "variant", p)
                                                            : rd.text(x, "name", p);
    const json& s = rd.at(x, "shape", p);
    const std::string sp = p + ".shape";
    row.shape.batch = rd.integer(s, "batch", sp);
    row.shape.heads = rd.integer(s, "heads", sp);
    row.shape.kv_heads = rd.integer(s, "kv_heads", sp);
    row.shape.seq_q = rd.integer(s, "seq_q", sp);
    row.shape.seq_k = rd.integer(s, "seq_k", sp);
    row.shape.head_dim = rd.integer(s, "head_dim", sp);
    row.causal = rd.boolean(x, "causal", p);
    row.density = rd.number(x, "density", p);
    row.dtype = rd.opt_str(x, "dtype", "fp16");
    row.mask = rd.opt_str(x, "mask", "random");
    row.data = rd.opt_str(x, "data", "uniform");  // absent in version 1: U(-1, 1) inputs
    row.seed = x.value("seed", uint64_t{0});
    row.device = x.value("device", 0);
    const json& t = rd.at(x, "time_ms", p);
    const std::string tp = p + ".time_ms";
    row.time.median = rd.number(t, "median", tp);
    if (!(row.time.median > 0)) rd.bad(tp + ".median", "must be > 0");
    row.time.count = static_cast<int>(rd.integer(t, "samples", tp));
    // The spread is stored as a ratio; keep quartiles consistent with it when absent.
    const double rel = rd.number(t, "rel_spread", tp);
    row.time.mean = t.value("mean", row.time.median);
    row.time.min = t.value("min", row.time.median);
    row.time.max = t.value("max", row.time.median);
    row.time.q1 = t.value("q1", row.time.median * (1 - rel / 2));
    row.time.q3 = t.value("q3", row.time.median * (1 + rel / 2));
    row.sparsity_stage1 = rd.opt_num(x, "sparsity", "stage1", p);
    row.sparsity_stage12 = rd.opt_num(x, "sparsity", "stage12", p);
    if (auto sp2 = x.find("sparsity"); sp2 != x.end() && sp2->is_object()) {
      row.valid_blocks = sp2->value("valid_blocks", int64_t{0});
      row.kept_blocks = sp2->contains("kept_blocks") ? sp2->value("kept_blocks", int64_t{0})
                                                     : sp2->value("executed_blocks", int64_t{0});
    }
    row.prediction_ms = rd.opt_num(x, "split_ms", "prediction", p);
    row.quantisation_ms = rd.opt_num(x, "split_ms", "quantisation", p);
    row.prepare_ms = rd.opt_num(x, "split_ms", "prepare", p);
    row.prepare_spread = rd.opt_num(x, "split_spread", "prepare", p);
    row.end_to_end_ms = rd.opt_num(x, "split_ms", "end_to_end", p);
    row.dense_ms = rd.opt_num(x, "baselines_ms", "dense", p);
    row.cudnn_ms = rd.opt_num(x, "baselines_ms", "sdpa_cudnn", p);
    row.flash_ms = rd.opt_num(x, "baselines_ms", "sdpa_flash", p);
    row.clock_mhz = rd.opt_num(x, "clock_mhz", p);
    row.rel_l1 = rd.opt_num(x, "accuracy", "rel_l1", p);
    row.cosine = rd.opt_num(x, "accuracy", "cosine", p);
    row.rel_l1_mean = rd.opt_num(x, "accuracy", "rel_l1_mean", p);
    if (auto acc = x.find("accuracy"); acc != x.end() && acc->is_object()) {
      row.accuracy_reference = rd.opt_str(*acc, "reference", "sdpa_cudnn");
    }
    if (auto n = x.find("notes"); n != x.end() && n->is_array()) {
      for (const auto& note : *n) {
        if (note.is_string()) row.notes.push_back(note.get<std::string>());
      }
    }
    row.command = rd.opt_str(x, "command", "");
    r.rows.push_back(std::move(row));
  }
  return r;
}

Results load_results(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) fail(ExitCode::kNoInput, "{}: cannot open bench results", path.string());
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    fail(ExitCode::kDataError, "{}: not valid JSON (byte {})", path.string(), e.byte);
  }
  return results_from_json(j, path.string());
}

namespace {

std::string fmt_opt(const std::optional<double>& v, const char* spec) {
  return v ? fmt::format(fmt::runtime(spec), *v) : std::string("-");
}

}  // namespace

namespace {

// Markdown or aligned text (first two columns left-aligned, the rest right-aligned).
std::string render_cells(const std::vector<std::string>& header,
                         const std::vector<std::vector<std::string>>& cells, TableFormat format) {
  std::string out;
  if (format == TableFormat::kMarkdown) {
    out += "| " + fmt::format("{}", fmt::join(header, " | ")) + " |\n|";
    for (size_t i = 0; i < header.size(); ++i) out += "---|";
    out += "\n";
    for (const auto& line : cells) out += "| " + fmt::format("{}", fmt::join(line, " | ")) + " |\n";
    return out;
  }
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& line : cells) {
    for (size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], line[i].size());
  }
  auto emit = [&](const std::vector<std::string>& line) {
    for (size_t i = 0; i < line.size(); ++i) {
      out += i < 2 ? fmt::format("{:<{}}", line[i], width[i])
                   : fmt::format("{:>{}}", line[i], width[i]);
      out += i + 1 < line.size() ? "  " : "\n";
    }
  };
  emit(header);
  for (const auto& line : cells) emit(line);
  return out;
}

// The accuracy rows (rel-L1 vs fp64 per (batch, head)): each real-data row beside its N(0, 1)
// twin (same name and shape), with the ratio of their worst heads.
std::string accuracy_section(const Results& r, TableFormat format) {
  std::vector<const Row*> rows;
  for (const Row& row : r.rows) {
    if (row.accuracy_reference == "fp64" && row.rel_l1) rows.push_back(&row);
  }
  if (rows.empty()) return "";
  auto twin = [&](const Row& x) -> const Row* {
    for (const Row* o : rows) {
      if (o->data == "normal" && o->name == x.name && o->shape == x.shape &&
          o->causal == x.causal) {
        return o;
      }
    }
    return nullptr;
  };
  const std::vector<std::string> header{"kernel", "data",          "shape B,H,Nq,Nk,D",
                                        "heads",  "rel-L1 worst",  "rel-L1 mean",
                                        "cosine", "worst x N(0,1)"};
  std::vector<std::vector<std::string>> cells;
  for (const Row* x : rows) {
    const Row* n = x->data == "normal" ? nullptr : twin(*x);
    cells.push_back({x->name, x->data, x->shape.str(),
                     std::to_string(x->shape.batch * x->shape.heads), fmt_opt(x->rel_l1, "{:.4f}"),
                     fmt_opt(x->rel_l1_mean, "{:.4f}"), fmt_opt(x->cosine, "{:.5f}"),
                     n && *n->rel_l1 > 0 ? fmt::format("{:.2f}", *x->rel_l1 / *n->rel_l1) : "-"});
  }
  const char* title =
      "accuracy at the dense mask: rel-L1 of the kernel vs dense fp64 attention per (sample, "
      "head), worst and mean over them";
  std::string out = format == TableFormat::kMarkdown ? fmt::format("\n### {}\n\n", title)
                                                     : fmt::format("\n# {}\n", title);
  return out + render_cells(header, cells, format);
}

}  // namespace

std::string format_table(const Results& r, TableFormat format) {
  const std::vector<std::string> header{
      "kernel", "shape B,H,Nq,Nk,D", "causal",   "density", "sparsity",    "ms",
      "spread", "eff TOPS",          "act TOPS", "pred ms", "quant ms",    "prep ms",
      "e2e ms", "x dense",           "x cudnn",  "x flash", "e2e x cudnn", "rel-L1"};
  std::vector<std::vector<std::string>> cells;
  for (const Row& row : r.rows) {
    cells.push_back(
        {row.label(), row.shape.str(), row.causal ? "yes" : "no", fmt::format("{:g}", row.density),
         fmt_opt(row.sparsity_stage1, "{:.3f}"), fmt::format("{:.4g}", row.time.median),
         fmt::format("{:.1f}%", 100 * row.time.rel_spread()),
         fmt::format("{:.0f}", row.effective_tops()), fmt_opt(row.actual_tops(), "{:.0f}"),
         fmt_opt(row.prediction_ms, "{:.3g}"), fmt_opt(row.quantisation_ms, "{:.3g}"),
         fmt_opt(row.prepare_ms, "{:.3g}"), fmt_opt(row.end_to_end_ms, "{:.4g}"),
         fmt_opt(row.speedup_vs(row.dense_ms), "{:.2f}"),
         fmt_opt(row.speedup_vs(row.cudnn_ms), "{:.2f}"),
         fmt_opt(row.speedup_vs(row.flash_ms), "{:.2f}"),
         fmt_opt(row.e2e_speedup_vs_cudnn(), "{:.2f}"), fmt_opt(row.rel_l1, "{:.4f}")});
  }
  std::string out;
  if (format == TableFormat::kCsv) {
    // One table (the accuracy rows are in it: rel-L1 = their worst head; JSON has the rest).
    auto csv_cell = [](const std::string& c) {
      if (c.find_first_of(",\"") == std::string::npos) return c;
      std::string quoted(1, '"');  // shapes contain commas
      quoted += c;
      quoted += '"';
      return quoted;
    };
    auto csv_line = [&](const std::vector<std::string>& line) {
      for (size_t i = 0; i < line.size(); ++i) {
        if (i) out += ',';
        out += csv_cell(line[i]);
      }
      out += '\n';
    };
    csv_line(header);
    for (const auto& line : cells) csv_line(line);
    return out;
  }
  if (format == TableFormat::kMarkdown) {
    out += fmt::format("## sparge bench — {} — git {}{} — {}\n\n", r.env.gpu_name(), r.env.git,
                       kernel_tag(r.env), r.env.date);
  } else {
    out += fmt::format("# {} | git {}{} | {}\n", r.env.gpu_name(), r.env.git, kernel_tag(r.env),
                       r.env.date);
  }
  out += render_cells(header, cells, format);
  out += accuracy_section(r, format);
  return out;
}

}  // namespace sparge::bench
