// `sparge synth`: write a synthetic Q/K/V dump with realistic attention structure (src/synth).
#include <charconv>
#include <memory>

#include "cli/commands.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "synth/synth.hpp"

namespace sparge::cli {
namespace {

struct SynthArgs {
  std::string output;
  std::string kind = "video";
  std::string grid;
  std::string dtype = "fp16";
  synth::Options options;
};

// "T,H,W" (or "H,W" = "1,H,W" for images; a video grid needs all three).
std::array<int, 3> parse_grid(const std::string& text, synth::Kind kind) {
  std::vector<int> v;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    int x = 0;
    auto [next, ec] = std::from_chars(p, end, x);
    if (ec != std::errc()) break;
    v.push_back(x);
    p = next;
    if (p < end && *p != ',') break;
    if (p < end) ++p;
  }
  if (p != end || (v.size() != 3 && v.size() != 2)) {
    fail(ExitCode::kUsage, "--grid '{}' is not T,H,W (or H,W)", text);
  }
  if (v.size() == 2 && kind == synth::Kind::kVideo)
    fail(ExitCode::kUsage, "--grid '{}': --kind video needs T,H,W (three sizes)", text);
  if (v.size() == 2) v.insert(v.begin(), 1);
  return {v[0], v[1], v[2]};
}

void run(SynthArgs& a) {
  synth::Options& o = a.options;
  o.kind = synth::parse_kind(a.kind);
  if (!a.grid.empty()) o.grid = parse_grid(a.grid, o.kind);
  synth::fill_defaults(o);
  o.dtype = a.dtype == "fp16" ? at::kHalf : a.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  synth::validate(o);
  synth::write_dump(o, a.output);
  log::info("wrote {}: {} dump, {} layers x {} samples, q [{}, {}, {}, {}], kv heads {} ({})",
            a.output, a.kind, o.layers, o.samples, o.batch, o.heads, synth::seq_len(o), o.head_dim,
            synth::kv_heads(o), fmt::join(synth::head_kinds(o), ", "));
}

}  // namespace

void register_synth(CLI::App& app, Context&) {
  auto args = std::make_shared<SynthArgs>();
  synth::Options& o = args->options;
  auto* sub = app.add_subcommand(
      "synth",
      "Write a synthetic Q/K/V dump (HDF5, docs/dump-format.md) with realistic attention\n"
      "structure, for demos, tests and benchmarks without a model. Same flags => same tensors.\n"
      "  video: tokens on a T x H x W grid (+ text prefix); heads local / striped (same place in\n"
      "         every frame) / frame-only / global\n"
      "  image: a 1 x H x W grid; heads local / column / wide / global\n"
      "  llm:   causal; attention sinks, local windows, heavy-hitter stripes, one global head\n"
      "  noise: N(0, 1) Q/K/V, nothing skippable\n"
      "Example: sparge synth -o demo.h5 --kind video --grid 4,16,16 --text-prefix 64 --heads 4");
  sub->add_option("-o,--output", args->output, "Output dump (.h5), written atomically")->required();
  sub->add_option("--kind", args->kind, "video | llm | image | noise")
      ->check(CLI::IsMember({"video", "llm", "image", "noise"}))
      ->capture_default_str();
  sub->add_option("--layers", o.layers, "Attention layers")->capture_default_str();
  sub->add_option("--samples", o.samples, "Samples per layer (diffusion steps / prompts)")
      ->capture_default_str();
  sub->add_option("--batch", o.batch, "Batch size B")->capture_default_str();
  sub->add_option("--heads", o.heads, "Query heads H")->capture_default_str();
  sub->add_option("--kv-heads", o.kv_heads, "KV heads Hkv (H % Hkv == 0; default H)");
  sub->add_option("--seq", o.seq, "Sequence length N (llm, noise) [default: 1024]");
  sub->add_option("--grid", args->grid,
                  "Token grid T,H,W (video) or H,W (image) [default: 4,16,16 video, 32,32 image]");
  sub->add_option("--text-prefix", o.text_prefix, "Text tokens before the grid (video, image)")
      ->capture_default_str();
  sub->add_option("--head-dim", o.head_dim, "Head dimension D")->capture_default_str();
  sub->add_option("--dtype", args->dtype, "fp16 | bf16 | fp32")
      ->check(CLI::IsMember({"fp16", "bf16", "fp32"}))
      ->capture_default_str();
  sub->add_option("--seed", o.seed, "Random seed (>= 0)")
      ->check(CLI::Validator(
          [](std::string& v) {
            // Parsed as unsigned, "-1" would silently wrap to 2^64 - 1.
            return v.find('-') == std::string::npos ? std::string() : "a seed is >= 0, got " + v;
          },
          "UINT"))
      ->capture_default_str();
  sub->add_flag("--with-o", o.with_o, "Also store o: dense fp32 attention cast to --dtype");
  sub->callback([args] { run(*args); });
}

}  // namespace sparge::cli
