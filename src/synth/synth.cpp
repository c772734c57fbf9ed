#include "synth/synth.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <numbers>

#include "common/error.hpp"
#include "common/progress.hpp"
#include "common/version.hpp"

namespace sparge::synth {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One KV head's attention pattern. Length scales are in grid cells (t, h, w) for video/image and
// tokens (first entry) for LLMs; infinity means "the axis does not matter" (stripes).
struct HeadSpec {
  const char* name;
  std::array<double, 3> length;
  double beta;          // logit gap between a token and its exact neighbour position
  double sink_logit;    // llm: extra logit of the first 4 keys (attention sinks)
  double stripe_logit;  // llm: extra logit of sparse heavy-hitter keys (vertical stripes)
  // Optional coarse component on half the channels (coarse_beta > 0): a longer-range kernel
  // that survives block mean-pooling, as the low-frequency content of real Q/K does, so the
  // pooled predictor sees the same locality as the token-level attention.
  std::array<double, 3> coarse_length = {kInf, kInf, kInf};
  double coarse_beta = 0;
};

// Pattern cycles (kv head g uses table[g % size]). Structured heads first, one diffuse head last:
// real models mix both, and the tuner must find the dense ones too.
std::vector<HeadSpec> head_table(const Options& o) {
  const double t = o.grid ? (*o.grid)[0] : 1, h = o.grid ? (*o.grid)[1] : 1,
               w = o.grid ? (*o.grid)[2] : 1;
  switch (o.kind) {
    case Kind::kVideo:
      return {{"local", {1.0, 2.0, 2.0}, 6.0, 0, 0, {1.5, 5.0, 8.0}, 6.0},
              {"striped", {kInf, 1.5, 1.5}, 10.0, 0, 0},  // same place in every frame
              {"frame", {0.25, 4.0, 4.0}, 8.0, 0, 0},     // within its own frame
              {"global", {t, h, w}, 3.0, 0, 0}};
    case Kind::kImage:
      return {{"local", {kInf, 2.0, 2.0}, 6.0, 0, 0, {kInf, 5.0, 8.0}, 6.0},
              {"column", {kInf, kInf, 1.5}, 10.0, 0, 0},  // same column in every row
              {"wide", {kInf, 5.0, 5.0}, 8.0, 0, 0},
              {"global", {kInf, h, w}, 3.0, 0, 0}};
    case Kind::kLlm: {
      const double n = static_cast<double>(o.seq);
      return {{"sink-local", {8.0, kInf, kInf}, 10.0, 8.0, 0},
              {"stripes", {4.0, kInf, kInf}, 9.0, 8.0, 8.0},
              {"sink-wide", {48.0, kInf, kInf}, 8.0, 5.0, 0},
              {"global", {n / 2, kInf, kInf}, 2.0, 2.0, 0}};
    }
    case Kind::kNoise:
      return {{"noise", {kInf, kInf, kInf}, 0, 0, 0}};
  }
  return {};
}

// splitmix64: decorrelates the seeds of the per-(layer, head) and per-(layer, sample) streams.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
at::Generator make_gen(uint64_t seed, uint64_t tag, uint64_t a, uint64_t b) {
  return at::make_generator<at::CPUGeneratorImpl>(mix(mix(mix(seed ^ mix(tag)) + a) + b));
}

const auto kF64 = at::TensorOptions().dtype(at::kDouble);

double uniform(at::Generator& g, double lo, double hi) {
  return at::empty({1}, kF64).uniform_(lo, hi, g).item<double>();
}

// Token positions [N, 3] in fp64: (t, h, w) on the grid for visual tokens after the text prefix;
// LLM/noise tokens use (n, 0, 0). Text tokens get position rows too but are overwritten.
at::Tensor positions(const Options& o) {
  const int64_t n = seq_len(o);
  at::Tensor idx = at::arange(n, kF64);
  if (!o.grid) return at::stack({idx, at::zeros_like(idx), at::zeros_like(idx)}, 1);
  const int64_t hw = int64_t{(*o.grid)[1]} * (*o.grid)[2];
  at::Tensor vis = at::clamp_min(at::arange(n, at::kLong) - o.text_prefix, 0);
  at::Tensor t = at::div(vis, hw, "floor");
  at::Tensor h = at::div(at::remainder(vis, hw), (*o.grid)[2], "floor");
  at::Tensor w = at::remainder(vis, (*o.grid)[2]);
  return at::stack({t, h, w}, 1).to(at::kDouble);
}

// The fixed part of one (layer, kv head): feature map phi [N, D-1] (unit norm on average),
// signal amplitude, and the extra key logits on the reserved channel.
struct HeadStructure {
  at::Tensor signal;    // [N, D - 1] fp64: a * phi(p), fine and coarse parts side by side
  double amplitude;     // a with scale * a^2 = total beta (scale = 1/sqrt(D))
  at::Tensor key_bias;  // [N] fp64: logit added to each key on the reserved channel
  at::Tensor k_offset;  // [D] fp64: constant key offset (softmax-invariant; K smoothing removes it)
};

// Query entry on the reserved last channel: every query has it, so a key with value x there gets
// logit c * x * scale. Kept small (4) so the keys carrying it stay within INT8 range of a block.
constexpr double kQueryChannel = 4.0;
constexpr double kNoiseStd = 0.5;  // content noise of q and k per entry

HeadStructure head_structure(const Options& o, const HeadSpec& spec, int layer, int g) {
  const int64_t n = seq_len(o);
  const int64_t d = o.head_dim;
  at::Generator gen = make_gen(o.seed, 1, static_cast<uint64_t>(layer), static_cast<uint64_t>(g));
  // Layers differ a little, as in real models: jitter length scales and sharpness.
  const double jl = std::exp(uniform(gen, -0.2, 0.2));
  const double jb = std::exp(uniform(gen, -0.15, 0.15));
  // Random Fourier features of one kernel on `dims` channels: a * phi(p), phi of unit norm on
  // average, so that scale * (a phi(p)).(a phi(p)) = beta.
  auto features = [&](const std::array<double, 3>& length, double beta, int64_t dims) {
    at::Tensor omega = at::randn({dims, 3}, gen, kF64);
    for (int axis = 0; axis < 3; ++axis) {
      const double l = length[axis] * jl;
      omega.select(1, axis).mul_(std::isinf(l) ? 0.0 : 1.0 / l);
    }
    at::Tensor phase = at::empty({dims}, kF64).uniform_(0, 2 * std::numbers::pi, gen);
    const double a = std::sqrt(beta * jb * std::sqrt(static_cast<double>(d)));
    return at::cos(at::matmul(positions(o), omega.t()) + phase) * (a * std::sqrt(2.0 / dims));
  };
  HeadStructure s;
  if (spec.coarse_beta > 0) {
    const int64_t fine = (d - 1) / 2;
    s.signal = at::cat({features(spec.length, spec.beta, fine),
                        features(spec.coarse_length, spec.coarse_beta, d - 1 - fine)},
                       1);
  } else {
    s.signal = features(spec.length, spec.beta, d - 1);
  }
  s.amplitude = std::sqrt((spec.beta + spec.coarse_beta) * jb * std::sqrt(static_cast<double>(d)));
  s.k_offset = at::randn({d}, gen, kF64);
  s.key_bias = at::zeros({n}, kF64);
  if (o.kind == Kind::kLlm) {
    s.key_bias.slice(0, 0, std::min<int64_t>(4, n)).fill_(spec.sink_logit);
    if (spec.stripe_logit > 0) {
      // Heavy hitters: about one key in 256 attracts every later query (a few vertical lines).
      at::Tensor perm = at::randperm(n, gen, at::kLong);
      s.key_bias.index_fill_(0, perm.slice(0, 0, std::max<int64_t>(1, n / 256)), spec.stripe_logit);
    }
  }
  if (o.grid && o.text_prefix > 0) {
    // Visual queries look at the text a little (cross-modal attention in joint-attention DiTs).
    s.key_bias.slice(0, 0, o.text_prefix).fill_(5.0);
  }
  return s;
}

}  // namespace

Kind parse_kind(const std::string& name) {
  if (name == "video") return Kind::kVideo;
  if (name == "llm") return Kind::kLlm;
  if (name == "image") return Kind::kImage;
  if (name == "noise") return Kind::kNoise;
  fail(ExitCode::kUsage, "--kind '{}' is not one of video, llm, image, noise", name);
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kVideo:
      return "video";
    case Kind::kLlm:
      return "llm";
    case Kind::kImage:
      return "image";
    case Kind::kNoise:
      return "noise";
  }
  return "?";
}

int kv_heads(const Options& o) { return o.kv_heads > 0 ? o.kv_heads : o.heads; }

int64_t seq_len(const Options& o) {
  if (o.grid) return int64_t{(*o.grid)[0]} * (*o.grid)[1] * (*o.grid)[2] + o.text_prefix;
  return o.seq;
}

void fill_defaults(Options& o) {
  const bool visual = o.kind == Kind::kVideo || o.kind == Kind::kImage;
  if (visual && !o.grid && o.seq == 0)
    o.grid = o.kind == Kind::kVideo ? kDefaultVideoGrid : kDefaultImageGrid;
  if (!visual && !o.grid && o.seq == 0) o.seq = kDefaultSeq;
}

void validate(const Options& o) {
  if (o.layers < 1) fail(ExitCode::kUsage, "--layers must be >= 1 (got {})", o.layers);
  if (o.samples < 1) fail(ExitCode::kUsage, "--samples must be >= 1 (got {})", o.samples);
  if (o.batch < 1) fail(ExitCode::kUsage, "--batch must be >= 1 (got {})", o.batch);
  if (o.heads < 1) fail(ExitCode::kUsage, "--heads must be >= 1 (got {})", o.heads);
  if (o.kv_heads < 0 || kv_heads(o) > o.heads || o.heads % kv_heads(o) != 0) {
    fail(ExitCode::kUsage, "--kv-heads {} must divide --heads {}", kv_heads(o), o.heads);
  }
  if (o.head_dim < 8 || o.head_dim > kMaxHeadDim) {
    fail(ExitCode::kUsage,
         "--head-dim must be in [8, {}] (got {}): no sparge kernel runs a larger one", kMaxHeadDim,
         o.head_dim);
  }
  if (o.dtype != at::kHalf && o.dtype != at::kBFloat16 && o.dtype != at::kFloat) {
    fail(ExitCode::kUsage, "--dtype must be fp16, bf16 or fp32");
  }
  if (o.text_prefix < 0) fail(ExitCode::kUsage, "--text-prefix must be >= 0");
  const bool visual = o.kind == Kind::kVideo || o.kind == Kind::kImage;
  if (visual) {
    if (!o.grid) fail(ExitCode::kUsage, "--kind {} needs --grid T,H,W", kind_name(o.kind));
    if (o.seq != 0)
      fail(ExitCode::kUsage, "--seq is derived from --grid for --kind {}; give only --grid",
           kind_name(o.kind));
    for (int g : *o.grid) {
      if (g < 1) fail(ExitCode::kUsage, "--grid sizes must be >= 1");
    }
    if (o.kind == Kind::kImage && (*o.grid)[0] != 1)
      fail(ExitCode::kUsage, "--kind image needs a grid 1,H,W (or H,W)");
  } else {
    if (o.grid)
      fail(ExitCode::kUsage, "--grid is for --kind video or image; use --seq for {}",
           kind_name(o.kind));
    if (o.text_prefix != 0) fail(ExitCode::kUsage, "--text-prefix is for --kind video or image");
    if (o.seq < 1) fail(ExitCode::kUsage, "--kind {} needs --seq N >= 1", kind_name(o.kind));
  }
  const int64_t n = seq_len(o);
  if (n > (1 << 20))
    fail(ExitCode::kUsage, "sequence length {} is too long for synthetic data (max 1048576)", n);
}

std::vector<std::string> head_kinds(const Options& o) {
  const auto table = head_table(o);
  std::vector<std::string> out;
  for (int g = 0; g < kv_heads(o); ++g) out.emplace_back(table[g % table.size()].name);
  return out;
}

at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           bool causal, double scale) {
  const int64_t heads = q.size(1), group = heads / k.size(1), n = q.size(2), nk = k.size(2);
  at::Tensor out = at::empty(q.sizes(), at::kFloat);
  at::Tensor mask;
  if (causal) mask = at::ones({n, nk}, at::kBool).triu(nk - n + 1);  // bottom-right aligned
  // One head at a time keeps the N x N scores small.
  for (int64_t h = 0; h < heads; ++h) {
    at::Tensor qh = q.select(1, h).to(at::kFloat);
    at::Tensor kh = k.select(1, h / group).to(at::kFloat);
    at::Tensor vh = v.select(1, h / group).to(at::kFloat);
    at::Tensor s = at::matmul(qh, kh.transpose(-1, -2)) * scale;
    if (causal) s.masked_fill_(mask, -std::numeric_limits<float>::infinity());
    out.select(1, h).copy_(at::matmul(at::softmax(s, -1), vh));
  }
  return out;
}

Sample make_sample(const Options& o, int layer, int sample) {
  validate(o);
  const int64_t b = o.batch, h = o.heads, hkv = kv_heads(o), n = seq_len(o), d = o.head_dim;
  const int64_t group = h / hkv;
  at::Generator gen =
      make_gen(o.seed, 2, static_cast<uint64_t>(layer), static_cast<uint64_t>(sample));
  // Content: drawn in a fixed order from one stream per (layer, sample).
  at::Tensor q = at::randn({b, h, n, d}, gen, kF64);
  at::Tensor k = at::randn({b, hkv, n, d}, gen, kF64);
  at::Tensor v = at::randn({b, hkv, n, d}, gen, kF64);

  if (o.kind != Kind::kNoise) {
    const auto table = head_table(o);
    q.mul_(kNoiseStd);
    k.mul_(kNoiseStd);
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    for (int64_t g = 0; g < hkv; ++g) {
      const HeadSpec& spec = table[g % table.size()];
      HeadStructure s = head_structure(o, spec, layer, static_cast<int>(g));
      // q, k = a * phi(p) + noise on the feature channels; the reserved last channel carries the
      // query constant and the key biases (sinks, stripes, text), in logits: c * x * scale.
      const at::Tensor& signal = s.signal;  // [N, D-1]
      at::Tensor kg = k.select(1, g);       // [B, N, D]
      kg.slice(2, 0, d - 1).add_(signal);
      kg.select(2, d - 1).add_(s.key_bias / (kQueryChannel * scale));
      kg.add_(s.k_offset);
      at::Tensor qg = q.slice(1, g * group, (g + 1) * group);  // [B, group, N, D]
      qg.slice(3, 0, d - 1).add_(signal);
      qg.select(3, d - 1).add_(kQueryChannel);
      if (o.grid && o.text_prefix > 0) {
        // Text tokens carry no positional signal: random directions of the same norm.
        const double text_std = s.amplitude / std::sqrt(static_cast<double>(d));
        auto text = [&](at::Tensor t, int64_t dim_n) {
          at::Tensor part = t.slice(dim_n, 0, o.text_prefix).narrow(-1, 0, d - 1);
          part.copy_(at::randn(part.sizes(), gen, kF64) * text_std);
        };
        text(kg, 1);
        text(qg, 2);
      }
    }
  }
  Sample out;
  out.q = q.to(o.dtype);
  out.k = k.to(o.dtype);
  out.v = v.to(o.dtype);
  if (o.with_o) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    out.o = dense_attention(out.q, out.k, out.v, o.kind == Kind::kLlm, scale).to(o.dtype);
  }
  return out;
}

io::DumpInfo dump_info(const Options& o) {
  io::DumpInfo info;
  info.producer = fmt::format("sparge synth {}", SPARGE_VERSION_STRING);
  info.model_id = fmt::format("synthetic-{}", kind_name(o.kind));
  info.capture_point = "synthetic";
  info.causal = o.kind == Kind::kLlm;
  info.grid = o.grid;
  info.text_prefix = o.grid ? o.text_prefix : 0;
  info.attributes["synth_kind"] = kind_name(o.kind);
  info.attributes["synth_seed"] = std::to_string(o.seed);
  info.attributes["synth_head_kinds"] = fmt::format("{}", fmt::join(head_kinds(o), ","));
  return info;
}

void write_dump(const Options& o, const std::filesystem::path& path) {
  validate(o);
  io::DumpWriter writer(path, dump_info(o));
  Progress progress("synth", static_cast<long>(o.layers) * o.samples);
  for (int l = 0; l < o.layers; ++l) {
    for (int s = 0; s < o.samples; ++s) {
      Sample smp = make_sample(o, l, s);
      std::optional<int> step, prompt;
      if (o.kind == Kind::kLlm || o.kind == Kind::kNoise) {
        prompt = s;
      } else {
        step = s;  // video/image: samples play the role of diffusion steps of one prompt
        prompt = 0;
      }
      writer.write_sample(l, fmt::format("synthetic.layers.{}.attn", l), s, smp.q, smp.k, smp.v,
                          smp.o, step, prompt);
      progress.advance(1, fmt::format("layer {} sample {}", l, s));
    }
  }
  progress.finish();
  writer.close();
}

}  // namespace sparge::synth
