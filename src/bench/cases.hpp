// Benchmark cases: shapes and densities from flags or a suite YAML (schema "sparge.bench-suite"),
// and the built-in default suite (the TARGETS.md shapes). Pure host code, CPU-tested.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace sparge::bench {

// One attention problem, HND layout: q [B, H, Nq, D], k/v [B, Hkv, Nk, D].
struct Shape {
  int64_t batch = 1, heads = 1, kv_heads = 1, seq_q = 1, seq_k = 1, head_dim = 64;
  bool operator==(const Shape&) const = default;
  // "B,H,Nq,Nk,D" (plus ",Hkv=N" when GQA): the canonical text used in tables and commands.
  std::string str() const;
};

struct Case {
  Shape shape;
  bool causal = false;
  double density = 1.0;  // requested fraction of causally valid blocks kept (1 = dense mask)
};

// Parses "B,H,N,D" (Nq = Nk = N) or "B,H,Nq,Nk,D". Every value must be a positive integer and
// D in {64, 128}; Nq <= Nk when causal is checked by validate_case. Throws Error(kUsage) with
// a message that names the offending text.
Shape parse_shape(const std::string& text);
// Parses one density in (0, 1]. Throws Error(kUsage).
double parse_density(const std::string& text);
// Throws Error(kUsage) when the case cannot run (causal with Nq > Nk, H % Hkv != 0).
void validate_case(const Case& c);

// Accuracy rows on real-image tensors (docs/bench.md, "Accuracy on real data"): for each head
// dim, a dump made by the generator `python -m sparge_realdata` (photographs -> Q/K/V [1, H, N,
// D] per image, one sample per image) and N(0, 1) tensors of the same shape; the kernel runs at
// the dense mask and its rel-L1 vs dense fp64 attention is reported per (image, head).
struct RealDataSpec {
  std::string size = "full";   // generator --size: tiny (a few hundred tokens) or full (17776)
  std::string kind = "video";  // generator --kind: video or text
  std::vector<std::string> images{"astronaut", "coffee", "chelsea"};  // one sample per image
  int64_t heads = 8;
  std::vector<int64_t> head_dims{64, 128};
  uint64_t seed = 0;
  bool operator==(const RealDataSpec&) const = default;
};

struct Suite {
  std::string name = "custom";
  std::string dtype = "fp16";
  std::vector<Case> cases;
  std::optional<RealDataSpec> real_data;  // suite key `real_data:` (absent: no accuracy rows)
};

// Cross product of shapes x densities, non-causal or causal per `causal`.
Suite suite_from_flags(const std::vector<Shape>& shapes, const std::vector<double>& densities,
                       bool causal);

// Suite YAML (docs/bench.md):
//   schema: sparge.bench-suite
//   schema_version: 1
//   name: h100-targets
//   dtype: fp16
//   densities: [1.0, 0.5, 0.25, 0.1]          # default for entries that list none
//   cases:
//     - {shape: [1, 32, 32768, 128]}           # B,H,N,D or B,H,Nq,Nk,D; optional kv_heads
//     - {shape: [1, 32, 32768, 128], causal: true, densities: [1.0]}
//   real_data: {size: full, kind: video, images: [astronaut, coffee, chelsea], heads: 8,
//               head_dims: [64, 128], seed: 0}   # optional; every key optional
// Throws Error(kNoInput) when the file is missing, Error(kConfigError) naming the file and the
// entry for anything malformed (unknown schema or major version, bad shape, bad density).
Suite load_suite(const std::filesystem::path& path);
Suite parse_suite(const std::string& yaml_text, const std::string& source_name);
// `--real-data tiny|full`: the default spec at that size. Error(kUsage) otherwise.
RealDataSpec real_data_of_size(const std::string& size);

// The default suite: the TARGETS.md shapes 1,32,32768,128; 1,32,32768,64; 2,30,17776,64;
// 1,32,8192,128 at densities 1/0.5/0.25/0.1, plus each shape causal with a dense mask, plus the
// real-data accuracy rows (full size, D = 64 and 128).
// Identical to configs/bench/default.yaml (a test keeps them in sync).
Suite default_suite();
extern const char* const kDefaultSuiteYaml;

}  // namespace sparge::bench
