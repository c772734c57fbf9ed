// Q/K/V dump format v1 (schema "sparge.qkv-dump"): reader and writer over the HDF5 C API.
// Layout and attributes are documented in docs/dump-format.md.
//
//   /layers/NNN/samples/NNNN/{q,k,v[,o]}   each [B, H, N, D] (q, o: H query heads; k, v: Hkv)
//
// Tensors are stored in their capture dtype (fp16/bf16 as custom HDF5 float types, fp32 native)
// with one chunk per (batch, head), so one head can be read without touching the others; nothing
// is read until asked for (multi-GB dumps are never loaded whole).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sparge::io {

struct SampleInfo {
  int index = 0;                  // NNNN
  std::vector<int64_t> q_shape;   // [B, H, Nq, D]
  std::vector<int64_t> kv_shape;  // [B, Hkv, Nk, D]
  at::ScalarType dtype = at::kHalf;
  bool has_o = false;
  std::optional<int> step;    // diffusion step, when captured
  std::optional<int> prompt;  // prompt index, when captured
};

struct LayerInfo {
  int index = 0;            // NNN
  std::string module_path;  // e.g. "transformer_blocks.7.attn1" (may be empty)
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  std::vector<SampleInfo> samples;
};

struct DumpInfo {
  int schema_version = 1;
  std::string model_id;
  std::string capture_point;  // e.g. "sdpa_inputs"
  std::string producer;       // "sparge synth", "sparge_capture 0.1", ...
  bool causal = false;
  std::optional<double> scale;  // softmax scale; default 1/sqrt(D)
  // Visual token grid (T, H, W) for the Hilbert permutation, and text tokens kept in place.
  std::optional<std::array<int, 3>> grid;
  int text_prefix = 0;
  int text_suffix = 0;
  std::vector<LayerInfo> layers;
  std::map<std::string, std::string> attributes;  // every root attribute, as text
};

// A boolean root attribute: the first of `keys` present, true when "1" or "true" (any case
// spelling writers use); absent = false. E.g. {"sink", "attention_sink"}.
bool attribute_true(const DumpInfo& info, std::initializer_list<const char*> keys);

// Opens and validates the structure (schema, groups, ranks, head-dim agreement, H % Hkv) without
// reading tensor data. Throws sparge::Error: kNoInput (missing/unreadable), kDataError (not HDF5,
// corrupt, missing group/dataset, wrong rank, mismatched dims, H % Hkv != 0, unknown schema major).
class DumpReader {
 public:
  explicit DumpReader(const std::filesystem::path& path);
  ~DumpReader();
  DumpReader(DumpReader&&) noexcept;
  DumpReader& operator=(DumpReader&&) noexcept;

  const DumpInfo& info() const;
  const std::filesystem::path& path() const;
  const LayerInfo& layer(int layer_index) const;  // by NNN, throws kDataError if absent

  // Reads tensor `which` ("q", "k", "v" or "o") of one sample as [B, H, N, D] in its stored dtype
  // on the CPU. `heads` = [first, last) restricts the read to those heads (chunk-aligned).
  // Throws kDataError naming file and dataset on NaN/Inf or a read failure. `check_finite` =
  // false skips the NaN/Inf check (for `sparge inspect`, which counts them instead).
  at::Tensor read(int layer_index, int sample_index, const std::string& which,
                  std::optional<std::pair<int, int>> heads = std::nullopt,
                  bool check_finite = true) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes a dump atomically: created under a temporary name, renamed by close(). If the writer is
// destroyed without close() (an exception), the temporary is removed and nothing is left behind.
class DumpWriter {
 public:
  DumpWriter(const std::filesystem::path& path, const DumpInfo& root_info);
  ~DumpWriter();

  // Tensors are [B, H, N, D], fp16/bf16/fp32, any device/strides (copied to contiguous CPU).
  void write_sample(int layer_index, const std::string& module_path, int sample_index,
                    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const std::optional<at::Tensor>& o = std::nullopt,
                    std::optional<int> step = std::nullopt,
                    std::optional<int> prompt = std::nullopt);
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sparge::io
