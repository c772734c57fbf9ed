// Synthetic Q/K/V dumps with realistic attention structure (`sparge synth`).
//
// Real captures are large and private; tests, demos and benchmarks need dumps whose attention has
// the structure SpargeAttn exploits (most mass in a minority of 64-128-token blocks on structured
// heads, dense on others). Q and K are built from smooth positional features: for token position
// p (grid coordinates (t, h, w) for video/image, the index for LLMs) a head's feature map is a
// random-Fourier map phi(p) = sqrt(2/D) cos(omega p + b), omega ~ N(0, diag(1/l^2)), so that
// q(p).k(p') ~ a^2 exp(-|p - p'|^2 / 2l^2): tokens attend to neighbours within the head's length
// scales l. Choosing l per axis gives local, striped (same place in every frame / same column),
// frame-only and global heads; content noise, a query mean, a key offset (removed by SpargeAttn's
// K smoothing), text tokens and LLM attention sinks / heavy-hitter stripes complete the picture.
// "noise" is plain N(0, 1) Q/K/V: nothing to skip.
//
// Everything is a pure function of (options, layer, sample): each (layer, kv head) structure and
// each (layer, sample) content draw gets its own generator seeded from --seed, so the same flags
// give identical tensors regardless of order, and computations run in fp64 before the final cast.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/dump.hpp"

namespace sparge::synth {

enum class Kind { kVideo, kLlm, kImage, kNoise };
Kind parse_kind(const std::string& name);  // throws Error(kUsage) listing the kinds
const char* kind_name(Kind kind);

struct Options {
  Kind kind = Kind::kVideo;
  int layers = 2;
  int samples = 2;
  int batch = 1;
  int heads = 4;
  int kv_heads = 0;  // 0: same as heads
  int64_t seq = 0;   // llm/noise: sequence length; video/image: derived from grid + text
  std::optional<std::array<int, 3>> grid;  // video: (T, H, W); image: (1, H, W)
  int text_prefix = 0;
  int head_dim = 64;
  at::ScalarType dtype = at::kHalf;
  uint64_t seed = 0;
  bool with_o = false;
};

// Shapes the user left unset get a default, so `sparge synth -o x.h5` just works: video grid
// kDefaultVideoGrid, image grid kDefaultImageGrid, llm/noise sequence kDefaultSeq.
inline constexpr std::array<int, 3> kDefaultVideoGrid{4, 16, 16};
inline constexpr std::array<int, 3> kDefaultImageGrid{1, 32, 32};
inline constexpr int64_t kDefaultSeq = 1024;
void fill_defaults(Options& options);
// Largest head dim a sparge kernel runs (tune::kMaxHeadDim; synth writes nothing larger).
inline constexpr int kMaxHeadDim = 128;
// Throws Error(kUsage) naming the offending flag.
void validate(const Options& options);
// Tokens per sequence (grid tokens + text prefix for video/image).
int64_t seq_len(const Options& options);
int kv_heads(const Options& options);
// The attention pattern of each KV head (query heads of a group share it), e.g. "local".
std::vector<std::string> head_kinds(const Options& options);

struct Sample {
  at::Tensor q;                 // [B, H, N, D] in options.dtype
  at::Tensor k;                 // [B, Hkv, N, D]
  at::Tensor v;                 // [B, Hkv, N, D]
  std::optional<at::Tensor> o;  // [B, H, N, D]: dense fp32 attention of the stored q, k, v
};
Sample make_sample(const Options& options, int layer, int sample);

// Dense attention of [B, H, N, D] q with [B, Hkv, N, D] k, v (GQA by head groups), fp32
// accumulation, causal top-left aligned; returns fp32 [B, H, N, D].
at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           bool causal, double scale);

io::DumpInfo dump_info(const Options& options);
// Writes the whole dump atomically (io::DumpWriter), with a progress bar on stderr.
void write_dump(const Options& options, const std::filesystem::path& path);

}  // namespace sparge::synth
