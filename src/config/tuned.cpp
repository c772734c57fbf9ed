#include "config/tuned.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "common/atomic_file.hpp"
#include "common/error.hpp"
#include "common/io_guard.hpp"
#include "common/log.hpp"

namespace sparge::config {

const TunedLayer* TunedConfig::find_layer(int layer) const {
  for (const auto& l : layers) {
    if (l.layer == layer) return &l;
  }
  return nullptr;
}

std::string describe(const Permutation& p) {
  if (!p.hilbert()) return p.order;
  return fmt::format("{} grid {}x{}x{}, text {}+{}", p.order, p.grid[0], p.grid[1], p.grid[2],
                     p.text_prefix, p.text_suffix);
}

void check_permutation(const Permutation& tuned, const Permutation& run,
                       const std::string& source) {
  if (tuned == run) return;
  fail(ExitCode::kConfigError,
       "{}: permutation: tuned with token order '{}', but this run uses '{}': masks do not "
       "transfer between token orders; retune (sparge tune{})",
       source, describe(tuned), describe(run), tuned.hilbert() ? "" : " --no-hilbert");
}

std::string pv_numerics_name(ref::PvNumerics pv) {
  return pv == ref::PvNumerics::kFp8 ? "fp8" : "half";
}

namespace {

// fmt "{}" is the shortest text that reads back to the same value. YAML 1.1 (PyYAML) only takes
// "1e-05" as a float with a '.', and spells infinity ".inf".
std::string yaml_number(std::string s) {
  if (s == "inf") return ".inf";
  if (s == "-inf") return "-.inf";
  if (s == "nan") return ".nan";
  if (s.find_first_of(".") == std::string::npos) {
    auto e = s.find_first_of("eE");
    if (e != std::string::npos) s.insert(e, ".0");
  }
  return s;
}
std::string format_double(double v) { return yaml_number(fmt::format("{}", v)); }

std::string quote(const std::string& s) {
  YAML::Emitter e;
  e << YAML::DoubleQuoted << s;
  return e.c_str();
}

template <typename T, typename F>
std::string flow(const std::vector<T>& v, F&& f) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    out += f(v[i]);
  }
  return out + "]";
}
std::string floats(const std::vector<float>& v) {
  return flow(v, [](float x) { return format_float(x); });
}
std::string bools(const std::vector<bool>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i)
    out += (i ? ", " : "") + std::string(v[i] ? "true" : "false");
  return out + "]";
}

}  // namespace

std::string format_float(float v) { return yaml_number(fmt::format("{}", v)); }

std::string to_yaml(const TunedConfig& c) {
  const auto& p = c.provenance;
  std::string y;
  auto line = [&y](std::string_view s) {
    y.append(s);
    y.push_back('\n');
  };
  line("# sparge tuned SpargeAttn thresholds; format: docs/tuned-config.md");
  line(fmt::format("schema: {}", kTunedSchema));
  line(fmt::format("schema_version: {}", c.schema_version));
  std::string prov = fmt::format(
      "provenance: {{tool: {}, version: {}, git: {}, backend: {}, device: {}, dump: {}, "
      "dump_hash: {}, model_id: {}, samples: {}",
      quote(p.tool), quote(p.version), quote(p.git), quote(p.backend), quote(p.device),
      quote(p.dump), quote(p.dump_hash), quote(p.model_id),
      flow(p.samples, [](int i) { return std::to_string(i); }));
  if (p.shard) {
    prov +=
        fmt::format(", shard: {{index: {}, count: {}, layers: {}}}", p.shard->index, p.shard->count,
                    flow(p.shard->layers, [](int i) { return std::to_string(i); }));
  }
  if (p.created_utc) prov += fmt::format(", created_utc: {}", quote(*p.created_utc));
  line(prov + "}");
  const auto& g = c.kernel.geometry;
  line(fmt::format(
      "kernel: {{name: {}, block_q: {}, block_k: {}, warp_rows: {}, pv: {}, causal: {}, sink: {}}}",
      quote(g.name), g.block_q, g.block_k, g.warp_rows, pv_numerics_name(g.pv), c.kernel.causal,
      c.kernel.sink));
  line(fmt::format("budget: {{metric: {}, l1: {}, l2: {}}}", c.budget.metric,
                   format_double(c.budget.l1), format_double(c.budget.l2)));
  const auto& s = c.search;
  line(fmt::format(
      "search: {{granularity: {}, theta_grid: {}, tau_tol: {}, lambda_range: [{}, {}], "
      "lambda_tol: {}, tune_lambda: {}, min_sparsity: {}, margin: {}, holdout: {}, spread_k: "
      "{}, spread_floor: {}, tau_plateau: {}, sparsity_cap: {}, mode: {}}}",
      s.granularity, floats(s.theta_grid), format_float(s.tau_tol), format_float(s.lambda_min),
      format_float(s.lambda_max), format_float(s.lambda_tol), s.tune_lambda,
      format_double(s.min_sparsity), format_double(s.margin), s.holdout, format_double(s.spread_k),
      format_double(s.spread_floor), format_double(s.tau_plateau), format_double(s.sparsity_cap),
      s.mode));
  const auto& perm = c.permutation;
  if (perm.hilbert()) {
    line(
        fmt::format("permutation: {{order: hilbert, grid: [{}, {}, {}], text_prefix: {}, "
                    "text_suffix: {}}}",
                    perm.grid[0], perm.grid[1], perm.grid[2], perm.text_prefix, perm.text_suffix));
  } else {
    line("permutation: {order: none}");
  }
  line("layers:");
  for (const auto& l : c.layers) {
    line(fmt::format("  - layer: {}", l.layer));
    line(fmt::format("    module: {}", quote(l.module)));
    line(fmt::format("    heads: {}", l.heads()));
    line(fmt::format("    tau: {}", floats(l.tau)));
    if (!l.topk.empty()) line(fmt::format("    topk: {}", floats(l.topk)));
    line(fmt::format("    theta: {}", floats(l.theta)));
    line(fmt::format("    lambda: {}", floats(l.lambda)));
    line(fmt::format("    sparse: {}", bools(l.sparse)));
    line(fmt::format("    sparsity: {{stage1: {}, stage12: {}}}", floats(l.sparsity_stage1),
                     floats(l.sparsity_stage12)));
    line(fmt::format("    error: {{stage1: {}, stage12: {}}}", floats(l.error_stage1),
                     floats(l.error_stage12)));
    if (!l.sparsity_cap.empty()) line(fmt::format("    sparsity_cap: {}", floats(l.sparsity_cap)));
    if (!l.expected_stage1.empty() || !l.expected_stage12.empty()) {
      line(fmt::format("    expected: {{stage1: {}, stage12: {}}}", floats(l.expected_stage1),
                       floats(l.expected_stage12)));
    }
  }
  return y;
}

void write_tuned(const std::filesystem::path& path, const TunedConfig& cfg) {
  write_file_atomic(path, to_yaml(cfg));
}

namespace {

class Parser {
 public:
  explicit Parser(std::string source) : src_(std::move(source)) {}

  [[noreturn]] void bad(const std::string& key, const std::string& fault) const {
    fail(ExitCode::kConfigError, "{}: {}: {}", src_, key, fault);
  }

  YAML::Node need(const YAML::Node& parent, const std::string& key, const std::string& path) {
    YAML::Node n = parent[key];
    if (!n) bad(path.empty() ? key : path + "." + key, "missing");
    return n;
  }

  template <typename T>
  T scalar(const YAML::Node& n, const std::string& key, const char* what) {
    if (!n.IsScalar()) bad(key, fmt::format("expected {}", what));
    try {
      return n.as<T>();
    } catch (const YAML::Exception&) {
      bad(key, fmt::format("'{}' is not {}", n.Scalar(), what));
    }
  }

  template <typename T>
  std::vector<T> seq(const YAML::Node& n, const std::string& key, const char* what) {
    if (!n.IsSequence()) bad(key, "expected a list");
    std::vector<T> out;
    for (size_t i = 0; i < n.size(); ++i) {
      out.push_back(scalar<T>(n[i], fmt::format("{}[{}]", key, i), what));
    }
    return out;
  }

  const std::string& source() const { return src_; }

 private:
  std::string src_;
};

ref::PvNumerics pv_from(Parser& p, const std::string& s) {
  if (s == "fp8") return ref::PvNumerics::kFp8;
  if (s == "half") return ref::PvNumerics::kHalf;
  p.bad("kernel.pv", fmt::format("'{}': expected fp8 or half", s));
}

}  // namespace

TunedConfig parse_tuned(const std::string& text, const std::string& source,
                        const std::optional<ref::Geometry>& expected_kernel) {
  Parser p(source);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    fail(ExitCode::kConfigError, "{}: line {}: {}", source, e.mark.line + 1, e.msg);
  }
  if (!root.IsMap()) p.bad("(document)", "expected a mapping with schema: sparge.tuned");
  TunedConfig c;
  auto schema = p.scalar<std::string>(p.need(root, "schema", ""), "schema", "a string");
  if (schema != kTunedSchema)
    p.bad("schema", fmt::format("'{}', expected {}", schema, kTunedSchema));
  c.schema_version =
      p.scalar<int>(p.need(root, "schema_version", ""), "schema_version", "an integer");
  if (c.schema_version != kTunedSchemaVersion) {
    p.bad("schema_version", fmt::format("{} is not supported (this sparge reads {})",
                                        c.schema_version, kTunedSchemaVersion));
  }

  if (auto n = root["provenance"]) {
    if (!n.IsMap()) p.bad("provenance", "expected a mapping");
    auto str = [&](const char* k, std::string& dst) {
      if (n[k]) dst = p.scalar<std::string>(n[k], std::string("provenance.") + k, "a string");
    };
    str("tool", c.provenance.tool);
    str("version", c.provenance.version);
    str("git", c.provenance.git);
    str("backend", c.provenance.backend);
    str("device", c.provenance.device);
    str("dump", c.provenance.dump);
    str("dump_hash", c.provenance.dump_hash);
    str("model_id", c.provenance.model_id);
    if (n["samples"])
      c.provenance.samples = p.seq<int>(n["samples"], "provenance.samples", "an integer");
    if (auto sh = n["shard"]) {
      if (!sh.IsMap()) p.bad("provenance.shard", "expected {index: I, count: N, layers: [...]}");
      Shard s;
      s.index = p.scalar<int>(p.need(sh, "index", "provenance.shard"), "provenance.shard.index",
                              "an integer");
      s.count = p.scalar<int>(p.need(sh, "count", "provenance.shard"), "provenance.shard.count",
                              "an integer");
      s.layers = p.seq<int>(p.need(sh, "layers", "provenance.shard"), "provenance.shard.layers",
                            "an integer");
      if (s.count < 1 || s.index < 0 || s.index >= s.count)
        p.bad("provenance.shard", fmt::format("{}/{}: need 0 <= index < count", s.index, s.count));
      c.provenance.shard = std::move(s);
    }
    if (n["created_utc"]) {
      c.provenance.created_utc =
          p.scalar<std::string>(n["created_utc"], "provenance.created_utc", "a string");
    }
  }

  {
    auto k = p.need(root, "kernel", "");
    if (!k.IsMap()) p.bad("kernel", "expected a mapping");
    auto& g = c.kernel.geometry;
    g.name = p.scalar<std::string>(p.need(k, "name", "kernel"), "kernel.name", "a string");
    g.block_q = p.scalar<int>(p.need(k, "block_q", "kernel"), "kernel.block_q", "an integer");
    g.block_k = p.scalar<int>(p.need(k, "block_k", "kernel"), "kernel.block_k", "an integer");
    g.warp_rows = p.scalar<int>(p.need(k, "warp_rows", "kernel"), "kernel.warp_rows", "an integer");
    g.pv = pv_from(p, p.scalar<std::string>(p.need(k, "pv", "kernel"), "kernel.pv", "a string"));
    if (g.block_q <= 0 || g.block_k <= 0 || g.warp_rows <= 0 || g.block_q % g.warp_rows != 0) {
      p.bad("kernel", fmt::format("block_q {} / block_k {} / warp_rows {}: need positive sizes "
                                  "with block_q a multiple of warp_rows",
                                  g.block_q, g.block_k, g.warp_rows));
    }
    // Thresholds only mean something for a geometry a kernel has: the name must be a known
    // kernel and the sizes its sizes.
    {
      std::optional<ref::Geometry> known;
      for (const auto& kg : {ref::hopper_geometry(), ref::portable_geometry()}) {
        if (kg.name == g.name) known = kg;
      }
      if (!known) {
        p.bad("kernel.name", fmt::format("'{}': no such kernel (sm90, sm80)", g.name));
      }
      if (g.block_q != known->block_q || g.block_k != known->block_k ||
          g.warp_rows != known->warp_rows || g.pv != known->pv) {
        p.bad("kernel",
              fmt::format("{} is {}x{} blocks, warp rows {}, pv {}, but this config says {}x{}, "
                          "warp rows {}, pv {}: no kernel has that geometry",
                          known->name, known->block_q, known->block_k, known->warp_rows,
                          pv_numerics_name(known->pv), g.block_q, g.block_k, g.warp_rows,
                          pv_numerics_name(g.pv)));
      }
    }
    if (k["causal"]) c.kernel.causal = p.scalar<bool>(k["causal"], "kernel.causal", "a boolean");
    if (k["sink"]) c.kernel.sink = p.scalar<bool>(k["sink"], "kernel.sink", "a boolean");
    if (expected_kernel) {
      const auto& e = *expected_kernel;
      if (g.name != e.name || g.block_q != e.block_q || g.block_k != e.block_k ||
          g.warp_rows != e.warp_rows || g.pv != e.pv) {
        p.bad("kernel",
              fmt::format("tuned for {} ({}x{}, warp rows {}, pv {}), but the kernel is "
                          "{} ({}x{}, warp rows {}, pv {}): retune for this kernel",
                          g.name, g.block_q, g.block_k, g.warp_rows, pv_numerics_name(g.pv), e.name,
                          e.block_q, e.block_k, e.warp_rows, pv_numerics_name(e.pv)));
      }
    }
  }

  {
    auto b = p.need(root, "budget", "");
    if (!b.IsMap()) p.bad("budget", "expected a mapping");
    if (b["metric"])
      c.budget.metric = p.scalar<std::string>(b["metric"], "budget.metric", "a string");
    if (c.budget.metric != "rel_l1")
      p.bad("budget.metric", fmt::format("'{}': only rel_l1 is supported", c.budget.metric));
    c.budget.l1 = p.scalar<double>(p.need(b, "l1", "budget"), "budget.l1", "a number");
    c.budget.l2 = p.scalar<double>(p.need(b, "l2", "budget"), "budget.l2", "a number");
    if (!(c.budget.l1 > 0) || !(c.budget.l2 >= c.budget.l1)) {
      p.bad("budget", fmt::format("l1 {} / l2 {}: need 0 < l1 <= l2", c.budget.l1, c.budget.l2));
    }
  }

  if (auto s = root["search"]) {
    if (!s.IsMap()) p.bad("search", "expected a mapping");
    auto& ss = c.search;
    if (s["granularity"])
      ss.granularity = p.scalar<std::string>(s["granularity"], "search.granularity", "a string");
    if (ss.granularity != "head" && ss.granularity != "layer")
      p.bad("search.granularity", fmt::format("'{}': expected head or layer", ss.granularity));
    if (s["theta_grid"])
      ss.theta_grid = p.seq<float>(s["theta_grid"], "search.theta_grid", "a number");
    if (s["tau_tol"]) ss.tau_tol = p.scalar<float>(s["tau_tol"], "search.tau_tol", "a number");
    if (s["lambda_range"]) {
      auto r = p.seq<float>(s["lambda_range"], "search.lambda_range", "a number");
      if (r.size() != 2) p.bad("search.lambda_range", "expected [min, max]");
      ss.lambda_min = r[0];
      ss.lambda_max = r[1];
    }
    if (s["lambda_tol"])
      ss.lambda_tol = p.scalar<float>(s["lambda_tol"], "search.lambda_tol", "a number");
    if (s["tune_lambda"])
      ss.tune_lambda = p.scalar<bool>(s["tune_lambda"], "search.tune_lambda", "a boolean");
    if (s["min_sparsity"])
      ss.min_sparsity = p.scalar<double>(s["min_sparsity"], "search.min_sparsity", "a number");
    if (s["margin"]) ss.margin = p.scalar<double>(s["margin"], "search.margin", "a number");
    if (s["mode"]) ss.mode = p.scalar<std::string>(s["mode"], "search.mode", "a string");
    if (ss.mode != "cdf" && ss.mode != "topk")
      p.bad("search.mode", fmt::format("'{}': expected cdf or topk", ss.mode));
    if (s["holdout"])
      ss.holdout = p.scalar<std::string>(s["holdout"], "search.holdout", "a string");
    if (ss.holdout != "spread" && ss.holdout != "edge")
      p.bad("search.holdout", fmt::format("'{}': expected spread or edge", ss.holdout));
    // An optional number of the rule, kept at its default when absent, within [lo, hi].
    auto ranged = [&](const char* key, double& field, double lo, double hi) {
      const std::string where = fmt::format("search.{}", key);
      if (s[key]) field = p.scalar<double>(s[key], where, "a number");
      if (!(field >= lo && field <= hi))
        p.bad(where, fmt::format("{}: expected a number in [{}, {}]", field, lo, hi));
    };
    ranged("spread_k", ss.spread_k, 0, 10);
    ranged("spread_floor", ss.spread_floor, 0, 1);
    ranged("tau_plateau", ss.tau_plateau, 0, 1);
    ranged("sparsity_cap", ss.sparsity_cap, 0, 10);
    if (!(ss.margin >= 0 && ss.margin <= 0.5))
      p.bad("search.margin", fmt::format("{}: expected a number in [0, 0.5]", ss.margin));
  }

  if (auto n = root["permutation"]) {
    if (!n.IsMap()) p.bad("permutation", "expected a mapping {order: hilbert|none, ...}");
    auto& pm = c.permutation;
    pm.order =
        p.scalar<std::string>(p.need(n, "order", "permutation"), "permutation.order", "a string");
    if (pm.order != "none" && pm.order != "hilbert")
      p.bad("permutation.order", fmt::format("'{}': expected hilbert or none", pm.order));
    if (pm.hilbert()) {
      auto g = p.seq<int>(p.need(n, "grid", "permutation"), "permutation.grid", "an integer");
      if (g.size() != 3 || g[0] < 1 || g[1] < 1 || g[2] < 1)
        p.bad("permutation.grid", "expected [T, H, W] with every size >= 1");
      pm.grid = {g[0], g[1], g[2]};
      if (n["text_prefix"])
        pm.text_prefix = p.scalar<int>(n["text_prefix"], "permutation.text_prefix", "an integer");
      if (n["text_suffix"])
        pm.text_suffix = p.scalar<int>(n["text_suffix"], "permutation.text_suffix", "an integer");
      if (pm.text_prefix < 0 || pm.text_suffix < 0)
        p.bad("permutation", "text_prefix / text_suffix must be >= 0");
    }
  }

  auto layers = p.need(root, "layers", "");
  if (!layers.IsSequence()) p.bad("layers", "expected a list");
  std::set<int> seen;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& n = layers[i];
    const std::string at = fmt::format("layers[{}]", i);
    if (!n.IsMap()) p.bad(at, "expected a mapping");
    TunedLayer l;
    l.layer = p.scalar<int>(p.need(n, "layer", at), at + ".layer", "an integer");
    if (l.layer < 0) p.bad(at + ".layer", fmt::format("{} is negative", l.layer));
    if (!seen.insert(l.layer).second)
      p.bad(at + ".layer", fmt::format("layer {} appears twice", l.layer));
    if (n["module"]) l.module = p.scalar<std::string>(n["module"], at + ".module", "a string");

    const bool ours = n["tau"] || n["theta"] || n["lambda"];
    const bool theirs = n["cdfthreshd"] || n["simthreshd1"] || n["pvthreshd"];
    if (ours && theirs) {
      p.bad(at, "mixes tau/theta/lambda with SpargeAttn's cdfthreshd/simthreshd1/pvthreshd");
    }
    if (theirs) {
      // SpargeAttn spelling: cdfthreshd = τ, simthreshd1 = θ, pvthreshd (log2, >= 0):
      // λ = -pvthreshd · ln 2. Its TopCdf keeps one block fewer (docs/design.md, Stage 1), so
      // these values are a starting point to re-evaluate, never a result to trust.
      c.imported = true;
      l.tau = p.seq<float>(p.need(n, "cdfthreshd", at), at + ".cdfthreshd", "a number");
      l.theta = p.seq<float>(p.need(n, "simthreshd1", at), at + ".simthreshd1", "a number");
      auto pv = p.seq<float>(p.need(n, "pvthreshd", at), at + ".pvthreshd", "a number");
      for (size_t h = 0; h < pv.size(); ++h) {
        if (!(pv[h] >= 0))
          p.bad(fmt::format("{}.pvthreshd[{}]", at, h), fmt::format("{} is negative", pv[h]));
        l.lambda.push_back(static_cast<float>(-static_cast<double>(pv[h]) * std::log(2.0)));
      }
    } else {
      l.tau = p.seq<float>(p.need(n, "tau", at), at + ".tau", "a number");
      l.theta = p.seq<float>(p.need(n, "theta", at), at + ".theta", "a number");
      l.lambda = p.seq<float>(p.need(n, "lambda", at), at + ".lambda", "a number");
    }
    const size_t heads = l.tau.size();
    if (heads == 0) p.bad(at + ".tau", "empty");
    if (n["heads"]) {
      int h = p.scalar<int>(n["heads"], at + ".heads", "an integer");
      if (h != static_cast<int>(heads)) {
        p.bad(at + (theirs ? ".cdfthreshd" : ".tau"),
              fmt::format("{} values, expected {} (heads)", heads, h));
      }
    }
    auto check_len = [&](size_t got, const std::string& key) {
      if (got != heads)
        p.bad(at + "." + key, fmt::format("{} values, expected {} (heads)", got, heads));
    };
    check_len(l.theta.size(), theirs ? "simthreshd1" : "theta");
    if (n["topk"]) {
      if (theirs) p.bad(at + ".topk", "not with SpargeAttn's spelling");
      l.topk = p.seq<float>(n["topk"], at + ".topk", "a number");
      check_len(l.topk.size(), "topk");
      for (size_t h = 0; h < heads; ++h) {
        if (!(l.topk[h] >= 0.0f && l.topk[h] <= 1.0f))
          p.bad(fmt::format("{}.topk[{}]", at, h), fmt::format("{} is outside [0, 1]", l.topk[h]));
      }
    }
    check_len(l.lambda.size(), theirs ? "pvthreshd" : "lambda");
    const char* sparse_key = n["sparse"] ? "sparse" : (n["is_sparse"] ? "is_sparse" : nullptr);
    if (sparse_key) {
      for (bool b : p.seq<bool>(n[sparse_key], at + "." + sparse_key, "a boolean"))
        l.sparse.push_back(b);
      check_len(l.sparse.size(), sparse_key);
    } else {
      l.sparse.assign(heads, true);
    }
    auto opt_pair = [&](const char* key, std::vector<float>& a, std::vector<float>& b) {
      if (!n[key]) return;
      const std::string k = at + "." + key;
      if (!n[key].IsMap()) p.bad(k, "expected {stage1: [...], stage12: [...]}");
      a = p.seq<float>(p.need(n[key], "stage1", k), k + ".stage1", "a number");
      b = p.seq<float>(p.need(n[key], "stage12", k), k + ".stage12", "a number");
      check_len(a.size(), std::string(key) + ".stage1");
      check_len(b.size(), std::string(key) + ".stage12");
    };
    opt_pair("sparsity", l.sparsity_stage1, l.sparsity_stage12);
    opt_pair("error", l.error_stage1, l.error_stage12);
    opt_pair("expected", l.expected_stage1, l.expected_stage12);
    if (n["sparsity_cap"]) {
      l.sparsity_cap = p.seq<float>(n["sparsity_cap"], at + ".sparsity_cap", "a number");
      check_len(l.sparsity_cap.size(), "sparsity_cap");
      for (size_t h = 0; h < heads; ++h) {
        if (!(l.sparsity_cap[h] >= 0.0f && l.sparsity_cap[h] <= 1.0f))
          p.bad(fmt::format("{}.sparsity_cap[{}]", at, h),
                fmt::format("{} is outside [0, 1]", l.sparsity_cap[h]));
      }
    }
    for (size_t h = 0; h < heads; ++h) {
      if (!(l.tau[h] >= 0.0f && l.tau[h] <= 1.0f)) {
        p.bad(fmt::format("{}.{}[{}]", at, theirs ? "cdfthreshd" : "tau", h),
              fmt::format("{} is outside [0, 1]", l.tau[h]));
      }
      if (!(l.theta[h] >= -1.0f && l.theta[h] <= 1.0f)) {
        p.bad(fmt::format("{}.{}[{}]", at, theirs ? "simthreshd1" : "theta", h),
              fmt::format("{} is outside [-1, 1]", l.theta[h]));
      }
      if (!(l.lambda[h] <= 0.0f)) {  // also rejects NaN; -inf allowed
        p.bad(fmt::format("{}.lambda[{}]", at, h),
              fmt::format("{} must be <= 0 or -.inf", l.lambda[h]));
      }
    }
    c.layers.push_back(std::move(l));
  }
  if (c.imported) {
    log::warn(
        "{}: SpargeAttn thresholds (cdfthreshd/simthreshd1/pvthreshd) imported; their TopCdf "
        "keeps one block fewer than sparge's, so they are re-evaluated, not trusted: run "
        "`sparge eval` before use",
        source);
  }
  return c;
}

TunedConfig read_tuned(const std::filesystem::path& path,
                       const std::optional<ref::Geometry>& expected_kernel) {
  return parse_tuned(read_text_file(path, "tuned config"), path.string(), expected_kernel);
}

}  // namespace sparge::config
