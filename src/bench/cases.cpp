#include "bench/cases.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <charconv>
#include <fstream>
#include <sstream>

#include "common/error.hpp"
#include "common/io_guard.hpp"

namespace sparge::bench {

const char* const kDefaultSuiteYaml =
    R"(# The TARGETS.md shapes (H100 anchors), fp16, HND, random block masks.
schema: sparge.bench-suite
schema_version: 1
name: targets
dtype: fp16
densities: [1.0, 0.5, 0.25, 0.1]
cases:
  - {shape: [1, 32, 32768, 128]}
  - {shape: [1, 32, 32768, 64]}
  - {shape: [2, 30, 17776, 64]}
  - {shape: [1, 32, 8192, 128]}
  - {shape: [1, 32, 32768, 128], causal: true, densities: [1.0]}
  - {shape: [1, 32, 32768, 64], causal: true, densities: [1.0]}
  - {shape: [2, 30, 17776, 64], causal: true, densities: [1.0]}
  - {shape: [1, 32, 8192, 128], causal: true, densities: [1.0]}
# Accuracy of the kernel at the dense mask on real-image tensors (python -m sparge_realdata,
# needs scikit-image; `--no-real-data` skips) beside N(0, 1) tensors of the same shape.
real_data: {size: full, kind: video, images: [astronaut, coffee, chelsea], heads: 8,
            head_dims: [64, 128], seed: 0}
)";

std::string Shape::str() const {
  std::string s = fmt::format("{},{},{},{},{}", batch, heads, seq_q, seq_k, head_dim);
  if (kv_heads != heads) s += fmt::format(",Hkv={}", kv_heads);
  return s;
}

namespace {

Shape shape_from_values(const std::vector<int64_t>& v, const std::string& what) {
  if (v.size() != 4 && v.size() != 5) {
    fail(ExitCode::kUsage, "{}: expected B,H,N,D or B,H,Nq,Nk,D, got {} values", what, v.size());
  }
  for (int64_t x : v) {
    if (x <= 0) fail(ExitCode::kUsage, "{}: every dimension must be a positive integer", what);
  }
  Shape s;
  s.batch = v[0];
  s.heads = v[1];
  s.kv_heads = v[1];
  s.seq_q = v[2];
  s.seq_k = v.size() == 5 ? v[3] : v[2];
  s.head_dim = v.back();
  if (s.head_dim != 64 && s.head_dim != 128) {
    fail(ExitCode::kUsage, "{}: head dim {} not supported (the kernels take D = 64 or 128)", what,
         s.head_dim);
  }
  return s;
}

}  // namespace

Shape parse_shape(const std::string& text) {
  const std::string what = fmt::format("--shape '{}'", text);
  std::vector<int64_t> values;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    int64_t x = 0;
    const char* first = item.data();
    const char* last = item.data() + item.size();
    while (first < last && *first == ' ') ++first;
    auto [ptr, ec] = std::from_chars(first, last, x);
    if (ec != std::errc() || ptr != last || first == last) {
      fail(ExitCode::kUsage, "{}: '{}' is not an integer", what, item);
    }
    values.push_back(x);
  }
  if (!text.empty() && text.back() == ',') fail(ExitCode::kUsage, "{}: trailing comma", what);
  return shape_from_values(values, what);
}

double parse_density(const std::string& text) {
  double d = 0;
  const char* first = text.data();
  const char* last = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(first, last, d);
  if (ec != std::errc() || ptr != last || text.empty()) {
    fail(ExitCode::kUsage, "--density '{}': not a number", text);
  }
  if (!(d > 0.0 && d <= 1.0)) {
    fail(ExitCode::kUsage, "--density '{}': must be in (0, 1] (fraction of blocks kept)", text);
  }
  return d;
}

void validate_case(const Case& c) {
  const Shape& s = c.shape;
  if (s.kv_heads <= 0 || s.heads % s.kv_heads != 0) {
    fail(ExitCode::kUsage, "shape {}: H = {} is not a multiple of Hkv = {}", s.str(), s.heads,
         s.kv_heads);
  }
  if (c.causal && s.seq_q > s.seq_k) {
    fail(ExitCode::kUsage, "shape {}: causal attention needs Nq <= Nk", s.str());
  }
  if (!(c.density > 0.0 && c.density <= 1.0)) {
    fail(ExitCode::kUsage, "shape {}: density {} outside (0, 1]", s.str(), c.density);
  }
}

Suite suite_from_flags(const std::vector<Shape>& shapes, const std::vector<double>& densities,
                       bool causal) {
  Suite suite;
  for (const Shape& s : shapes) {
    for (double d : densities) {
      Case c{s, causal, d};
      validate_case(c);
      suite.cases.push_back(c);
    }
  }
  return suite;
}

Suite parse_suite(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail(ExitCode::kConfigError, "{}: not valid YAML: {}", source, e.what());
  }
  auto bad = [&](const std::string& where, const std::string& why) {
    fail(ExitCode::kConfigError, "{}: {}: {}", source, where, why);
  };
  try {
    if (!root.IsMap()) bad("document", "expected a mapping");
    if (!root["schema"] || root["schema"].as<std::string>() != "sparge.bench-suite") {
      bad("schema", "expected 'sparge.bench-suite'");
    }
    if (!root["schema_version"] || root["schema_version"].as<int>() != 1) {
      bad("schema_version", "unsupported (this sparge reads version 1)");
    }
    Suite suite;
    suite.name = root["name"] ? root["name"].as<std::string>() : source;
    suite.dtype = root["dtype"] ? root["dtype"].as<std::string>() : "fp16";
    if (suite.dtype != "fp16" && suite.dtype != "bf16") bad("dtype", "expected fp16 or bf16");
    std::vector<double> default_densities{1.0};
    auto read_densities = [&](const YAML::Node& n, const std::string& where) {
      if (!n.IsSequence() || n.size() == 0) bad(where, "expected a non-empty list of densities");
      std::vector<double> out;
      for (const auto& x : n) {
        const double d = x.as<double>();
        if (!(d > 0.0 && d <= 1.0)) bad(where, fmt::format("density {} outside (0, 1]", d));
        out.push_back(d);
      }
      return out;
    };
    if (root["densities"]) default_densities = read_densities(root["densities"], "densities");
    // A suite of accuracy rows alone (real_data, no cases) is allowed.
    const YAML::Node cases = root["cases"] ? root["cases"] : YAML::Node(YAML::NodeType::Sequence);
    if (!cases.IsSequence() || (cases.size() == 0 && !root["real_data"])) {
      bad("cases", "expected a list");
    }
    for (size_t i = 0; i < cases.size(); ++i) {
      const std::string where = fmt::format("cases[{}]", i);
      const YAML::Node& n = cases[i];
      if (!n.IsMap() || !n["shape"] || !n["shape"].IsSequence()) {
        bad(where, "expected {shape: [B, H, N, D]}");
      }
      std::vector<int64_t> dims;
      for (const auto& x : n["shape"]) dims.push_back(x.as<int64_t>());
      Shape shape;
      try {
        shape = shape_from_values(dims, "shape");
      } catch (const Error& e) {
        bad(where, e.what());
      }
      if (n["kv_heads"]) shape.kv_heads = n["kv_heads"].as<int64_t>();
      const bool causal = n["causal"] ? n["causal"].as<bool>() : false;
      const auto densities =
          n["densities"] ? read_densities(n["densities"], where + ".densities") : default_densities;
      for (double d : densities) {
        Case c{shape, causal, d};
        try {
          validate_case(c);
        } catch (const Error& e) {
          bad(where, e.what());
        }
        suite.cases.push_back(c);
      }
    }
    if (const YAML::Node rd = root["real_data"]) {
      if (!rd.IsMap()) bad("real_data", "expected a mapping {size: full, head_dims: [64, 128]}");
      RealDataSpec spec;
      for (const auto& kv : rd) {
        const std::string key = kv.first.as<std::string>();
        const YAML::Node& v = kv.second;
        const std::string where = "real_data." + key;
        if (key == "size") {
          spec.size = v.as<std::string>();
          if (spec.size != "tiny" && spec.size != "full") bad(where, "expected tiny or full");
        } else if (key == "kind") {
          spec.kind = v.as<std::string>();
          if (spec.kind != "video" && spec.kind != "text") bad(where, "expected video or text");
        } else if (key == "images") {
          if (!v.IsSequence() || v.size() == 0) bad(where, "expected a non-empty list of names");
          spec.images.clear();
          for (const auto& x : v) {
            const std::string name = x.as<std::string>();
            if (name.empty() || name.find_first_of(", /") != std::string::npos) {
              bad(where, fmt::format("'{}' is not an image name", name));
            }
            spec.images.push_back(name);
          }
        } else if (key == "heads") {
          spec.heads = v.as<int64_t>();
          if (spec.heads <= 0) bad(where, "expected a positive integer");
        } else if (key == "head_dims") {
          if (!v.IsSequence() || v.size() == 0) bad(where, "expected a list, e.g. [64, 128]");
          spec.head_dims.clear();
          for (const auto& x : v) {
            const int64_t d = x.as<int64_t>();
            if (d != 64 && d != 128) bad(where, fmt::format("head dim {}: expected 64 or 128", d));
            spec.head_dims.push_back(d);
          }
        } else if (key == "seed") {
          spec.seed = v.as<uint64_t>();
        } else {
          bad(where, "unknown key (size, kind, images, heads, head_dims, seed)");
        }
      }
      suite.real_data = spec;
    }
    return suite;
  } catch (const YAML::Exception& e) {
    fail(ExitCode::kConfigError, "{}: {}", source, e.what());
  }
}

Suite load_suite(const std::filesystem::path& path) {
  return parse_suite(read_text_file(path, "bench suite (YAML)"), path.string());
}

Suite default_suite() { return parse_suite(kDefaultSuiteYaml, "default"); }

RealDataSpec real_data_of_size(const std::string& size) {
  if (size != "tiny" && size != "full") {
    fail(ExitCode::kUsage, "--real-data '{}': expected tiny, full or an existing dump file", size);
  }
  RealDataSpec spec;
  spec.size = size;
  return spec;
}

}  // namespace sparge::bench
