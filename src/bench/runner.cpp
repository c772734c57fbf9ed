#include "bench/runner.hpp"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>
#include <torch/headeronly/version.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "bench/masks.hpp"
#include "common/error.hpp"
#include "common/log.hpp"
#include "common/parallel.hpp"
#include "common/utc_time.hpp"
#include "common/version.hpp"
#include "config/tuned.hpp"
#include "io/dump.hpp"
#include "kernels/attention_api.h"
#include "kernels/device_info.h"
#include "runtime/permute.hpp"
#include "runtime/runtime.hpp"

namespace sparge::bench {

int visible_devices() { return sparge::kernels::device_info_count(); }

namespace {

std::string version_text(int v) { return v ? fmt::format("{}.{}", v / 1000, (v % 1000) / 10) : ""; }

}  // namespace

Environment capture_environment(const std::vector<int>& devices, const std::string& command,
                                const std::string& kernel) {
  Environment env;
  for (int d : devices) {
    sparge::kernels::DeviceInfo info;
    char err[256] = {};
    if (!sparge::kernels::query_device(d, &info, err, sizeof err)) {
      fail(ExitCode::kSoftware, "device {}: query failed: {}", d, err);
    }
    GpuInfo g;
    g.index = d;
    g.name = info.name;
    g.sm = fmt::format("{}.{}", info.sm_major, info.sm_minor);
    g.sm_count = info.multiprocessors;
    g.l2_bytes = info.l2_cache_bytes;
    g.memory_bytes = static_cast<int64_t>(info.total_memory_bytes);
    g.clock_nominal_mhz = info.clock_khz / 1000.0;
    g.memory_clock_mhz = info.memory_clock_khz / 1000.0;
    g.ecc = info.ecc_enabled != 0;
    env.gpus.push_back(g);
  }
  env.driver = version_text(sparge::kernels::cuda_driver_version());
  env.cuda_runtime = version_text(sparge::kernels::cuda_runtime_version());
  env.torch = TORCH_VERSION;
  env.sparge_version = SPARGE_VERSION_STRING;
  env.git = SPARGE_GIT_SHA;
  // The caller may name the commit (the GPU machines build from a copy of the tree whose .git,
  // if any, need not match it): an explicit SPARGE_GIT wins over the recorded one.
  if (const char* git = std::getenv("SPARGE_GIT"); git && *git) env.git = git;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) env.host = host;
  env.date = utc_now();
  env.command = command;
  // A forced Hopper kernel is other code than the default: recorded, so that an A/B run does not
  // read as the default kernel.
  if (runtime::kernel_geometry(kernel) == "sm90" && kernel != "sm90")
    env.sm90_kernel = kernel.substr(kernel.find('.') + 1);
  return env;
}

uint64_t case_seed(uint64_t base, const Case& c) {
  // FNV-1a over the case's canonical text: stable across runs, platforms and suite order.
  const std::string key = fmt::format("{}|{}|{}|{:.6f}", base, c.shape.str(), c.causal, c.density);
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : key) h = (h ^ ch) * 1099511628211ull;
  return h;
}

std::string repro_command(const Case& c, const std::string& dtype, uint64_t seed,
                          const std::string& kernel) {
  const Shape& s = c.shape;
  std::string cmd = fmt::format("sparge bench --shape {},{},{},{},{}", s.batch, s.heads, s.seq_q,
                                s.seq_k, s.head_dim);
  if (s.kv_heads != s.heads) cmd += fmt::format(" --kv-heads {}", s.kv_heads);
  cmd += fmt::format(" --density {:g}", c.density);
  if (c.causal) cmd += " --causal";
  cmd += fmt::format(" --dtype {} --seed {} --kernel {}", dtype, seed, kernel);
  return cmd;
}

namespace {

std::string kernel_name(const ref::Geometry& g, int64_t head_dim) {
  return fmt::format("sparge_fwd.{}.hd{}.{}", g.name, head_dim,
                     g.pv == ref::PvNumerics::kFp8 ? "i8f8" : "i8f16");
}

struct Group {
  Shape shape;
  bool causal = false;
  std::vector<size_t> case_indices;  // into suite.cases
};

// rel-L1 of o against ref in fp32 (o and ref [B, H, Nq, D]).
std::pair<double, double> accuracy(const at::Tensor& o, const at::Tensor& ref) {
  auto a = o.to(at::kFloat), b = ref.to(at::kFloat);
  const double l1 = ((a - b).abs().sum() / b.abs().sum()).item<double>();
  const double cos = (at::sum(a * b) / (a.norm() * b.norm()).clamp_min(1e-30)).item<double>();
  return {l1, cos};
}

// The notes and the probe's SM clock of the row's own timed region.
void add_notes(Row& row, const Timing& t) {
  row.notes.insert(row.notes.end(), t.notes.begin(), t.notes.end());
  if (t.clock_mhz > 0) row.clock_mhz = t.clock_mhz;
}

// Quantisation (block statistics + INT8/FP8) and prediction (compressed map + TopCdf + LUT),
// timed separately and together (runtime::prepare, as end-to-end overlaps them): the overhead
// end-to-end pays on top of the kernel. `predicted` is the inputs quantised and predicted once.
struct PrepareTimes {
  runtime::Prepared predicted;
  Timing quantisation, prediction, prepare;
  void set(Row& r) const {
    r.quantisation_ms = quantisation.stats.median;
    r.prediction_ms = prediction.stats.median;
    r.prepare_ms = prepare.stats.median;
    r.prepare_spread = prepare.stats.rel_spread();
  }
};
PrepareTimes time_prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const ref::Geometry& geom, const runtime::Thresholds& th,
                          const runtime::Options& ropt, GpuTimer& timer) {
  PrepareTimes t;
  t.predicted = runtime::quantize(q, k, v, geom, ropt);
  t.quantisation = timer.measure([&] { runtime::quantize(q, k, v, geom, ropt); });
  runtime::predict(t.predicted, th, ropt);
  t.prediction = timer.measure([&] { runtime::predict(t.predicted, th, ropt); });
  t.prepare = timer.measure([&] { runtime::prepare(q, k, v, geom, th, ropt); });
  return t;
}

// Kernel-only launches: the parameters are filled once (as a deployed op would cache them), so
// the timed region holds the kernel launch alone. dense = lut nullptr, the kernels' dense mode
// (every causally valid block; the runtime always passes a LUT, so this sets the parameters).
class KernelLaunch {
 public:
  KernelLaunch(const runtime::Prepared& p, const at::Tensor& o, const at::Tensor& lambda,
               std::string kernel, bool dense)
      : kernel_(std::move(kernel)) {
    params_ = runtime::attention_params(p, o, lambda, lambda_log2_);
    if (dense) {
      params_.lut = nullptr;
      params_.lut_len = nullptr;
    }
  }
  void operator()() const {
    runtime::launch_attention(kernel_, params_, at::cuda::getCurrentCUDAStream().stream());
  }

 private:
  std::string kernel_;
  at::Tensor lambda_log2_;
  sparge::kernels::AttentionParams params_;
};

// Runs one (shape, causal) group on the current device; returns its rows in case order.
std::vector<Row> run_group(const Suite& suite, const Group& g, const RunOptions& opt, int device,
                           GpuTimer& timer) {
  const Shape& s = g.shape;
  const at::ScalarType dtype = suite.dtype == "bf16" ? at::kBFloat16 : at::kHalf;
  const auto dev = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device));
  const Case group_case{s, g.causal, 1.0};
  const uint64_t data_seed = case_seed(opt.seed, group_case);

  // Inputs uniform in [-1, 1] (never zeros: they hide bugs and run faster than real data).
  auto gen = at::cuda::detail::createCUDAGenerator(static_cast<c10::DeviceIndex>(device));
  gen.set_current_seed(data_seed);
  auto opts = at::TensorOptions().dtype(dtype).device(dev);
  auto q = at::empty({s.batch, s.heads, s.seq_q, s.head_dim}, opts).uniform_(-1, 1, gen);
  auto k = at::empty({s.batch, s.kv_heads, s.seq_k, s.head_dim}, opts).uniform_(-1, 1, gen);
  auto v = at::empty({s.batch, s.kv_heads, s.seq_k, s.head_dim}, opts).uniform_(-1, 1, gen);

  const std::string kernel = runtime::resolve_kernel(opt.kernel);
  const ref::Geometry geom = ref::geometry_by_name(runtime::kernel_geometry(kernel));
  const std::string kname = kernel_name(geom, s.head_dim);
  runtime::Options ropt;
  ropt.causal = g.causal;

  auto base_row = [&](const std::string& name, double density, const char* mask) {
    Row r;
    r.name = name;
    r.shape = s;
    r.causal = g.causal;
    r.density = density;
    r.dtype = suite.dtype;
    r.mask = mask;
    r.device = device;
    return r;
  };
  std::vector<Row> baseline_rows;
  std::optional<double> cudnn_ms, flash_ms, dense_ms;
  at::Tensor ref_out;  // SDPA output for the accuracy of the dense-mask rows
  if (opt.baselines) {
    // The private SDPA backends want H == Hkv: GQA inputs are expanded once, outside the timing.
    auto ke = k, ve = v;
    if (s.kv_heads != s.heads) {
      ke = k.repeat_interleave(s.heads / s.kv_heads, 1);
      ve = v.repeat_interleave(s.heads / s.kv_heads, 1);
    }
    struct Sdpa {
      const char* name;
      std::function<at::Tensor()> call;
      std::optional<double>* out;
    };
    const std::vector<Sdpa> sdpas{
        {"sdpa_cudnn",
         [&] {
           return std::get<0>(at::_scaled_dot_product_cudnn_attention(q, ke, ve, std::nullopt,
                                                                      false, 0.0, g.causal));
         },
         &cudnn_ms},
        {"sdpa_flash",
         [&] {
           return std::get<0>(at::_scaled_dot_product_flash_attention(q, ke, ve, 0.0, g.causal));
         },
         &flash_ms}};
    for (const Sdpa& b : sdpas) {
      Row r = base_row(b.name, 1.0, "dense");
      r.seed = data_seed;
      try {
        auto out = b.call();
        if (!ref_out.defined()) ref_out = out;
        Timing t = timer.measure([&] { b.call(); });
        r.time = t.stats;
        add_notes(r, t);
        *b.out = t.stats.median;
        r.command = repro_command(group_case, suite.dtype, opt.seed, opt.kernel);
        baseline_rows.push_back(std::move(r));
      } catch (const c10::Error& e) {
        const std::string what = e.what_without_backtrace();
        log::warn("{} {}{}: {} unavailable: {}", kname, s.str(), g.causal ? " causal" : "", b.name,
                  what.substr(0, what.find('\n')));
      }
    }
  }

  auto th = runtime::Thresholds::uniform(s.heads, opt.predict_tau, opt.predict_theta, dev);
  const PrepareTimes prep = time_prepare(q, k, v, geom, th, ropt, timer);
  const runtime::Prepared& predicted = prep.predicted;

  auto o = at::empty({s.batch, s.heads, s.seq_q, s.head_dim}, opts);
  const at::Tensor no_lambda;

  // Our dense mode: lut == nullptr visits every causally valid block.
  if (opt.baselines) {
    const KernelLaunch dense(predicted, o, no_lambda, kernel, /*dense=*/true);
    Row r = base_row(kname + ".dense", 1.0, "dense");
    r.seed = data_seed;
    dense();
    Timing t = timer.measure(dense);
    r.time = t.stats;
    add_notes(r, t);
    dense_ms = t.stats.median;
    auto valid = causal_valid_blocks(s.seq_q, s.seq_k, geom.block_q, geom.block_k, g.causal);
    r.valid_blocks = valid.sum().item<int64_t>() * s.batch * s.heads;
    r.kept_blocks = r.valid_blocks;
    r.sparsity_stage1 = 0.0;
    if (ref_out.defined()) {
      auto [l1, cos] = accuracy(o, ref_out);
      r.rel_l1 = l1;
      r.cosine = cos;
    }
    r.command = repro_command(group_case, suite.dtype, opt.seed, opt.kernel);
    baseline_rows.push_back(std::move(r));
  }

  std::vector<Row> rows;
  for (size_t idx : g.case_indices) {
    const Case& c = suite.cases[idx];
    const uint64_t mseed = case_seed(opt.seed, c);
    BlockMask bm = random_block_mask(c, geom.block_q, geom.block_k, mseed);
    runtime::Prepared masked = runtime::prepare_with_mask(q, k, v, bm.mask.to(dev), geom, ropt);
    Row r = base_row(kname, c.density, "random");
    r.seed = mseed;
    const KernelLaunch launch(masked, o, no_lambda, kernel, /*dense=*/false);
    launch();
    Timing t = timer.measure(launch);
    r.time = t.stats;
    add_notes(r, t);
    if (c.density == 1.0 && ref_out.defined()) {
      auto [l1, cos] = accuracy(o, ref_out);
      r.rel_l1 = l1;
      r.cosine = cos;
    }
    // The prediction's LUT is computed as end-to-end would and then not used: the kernel runs
    // this case's random mask, whose density is the one being measured.
    Timing t_e2e = timer.measure([&] {
      runtime::Prepared p = runtime::prepare(q, k, v, geom, th, ropt);
      launch();
    });
    r.valid_blocks = bm.valid_blocks;
    r.kept_blocks = bm.kept_blocks;
    r.sparsity_stage1 = 1.0 - bm.density();
    prep.set(r);
    r.end_to_end_ms = t_e2e.stats.median;
    r.command = repro_command(c, suite.dtype, opt.seed, opt.kernel);
    rows.push_back(std::move(r));
  }
  rows.insert(rows.end(), std::make_move_iterator(baseline_rows.begin()),
              std::make_move_iterator(baseline_rows.end()));
  for (Row& r : rows) {
    r.dense_ms = dense_ms;
    r.cudnn_ms = cudnn_ms;
    r.flash_ms = flash_ms;
  }
  return rows;
}

// softmax(q kᵀ · scale) v in fp64 for one (batch, head): q [Nq, D], k, v [Nk, D] on the GPU, any
// float dtype -> [Nq, D] fp64. Query rows in chunks so one score block stays <= 512 MiB.
at::Tensor dense_fp64_head(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, bool causal) {
  const int64_t nq = q.size(0), nk = k.size(0);
  const at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  at::Tensor out = at::empty_like(qd);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 26) / std::max<int64_t>(nk, 1));
  for (int64_t r0 = 0; r0 < nq; r0 += chunk) {
    const int64_t rn = std::min(chunk, nq - r0);
    at::Tensor sc = at::matmul(qd.narrow(0, r0, rn), kd.transpose(0, 1)) * scale;
    if (causal) {
      const at::Tensor tq = at::arange(r0, r0 + rn, sc.options().dtype(at::kLong)).view({-1, 1});
      const at::Tensor tk = at::arange(nk, sc.options().dtype(at::kLong)).view({1, -1});
      sc.masked_fill_(tk > tq + (nk - nq), -INFINITY);
    }
    out.narrow(0, r0, rn).copy_(at::matmul(at::softmax(sc, -1), vd));
  }
  return out;
}

struct HeadErrors {
  at::Tensor rel_l1;  // fp64 [B, H] on the CPU: sum |o - ref| / sum |ref| per (batch, head)
  double cosine = 0;  // over the whole tensor
};

// Per (batch, head) rel-L1 of o [B, H, Nq, D] against dense fp64 attention of q [B, H, Nq, D],
// k, v [B, Hkv, Nk, D] (query head h reads kv head h / (H / Hkv)). One head at a time: the fp64
// reference of a 17776-token head is 9 MB, of all heads at once gigabytes.
HeadErrors head_errors(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& o, double scale, bool causal) {
  const int64_t B = q.size(0), H = q.size(1), group = H / k.size(1);
  HeadErrors e;
  e.rel_l1 = at::zeros({B, H}, at::kDouble);
  auto acc = e.rel_l1.accessor<double, 2>();
  double dot = 0, oo = 0, rr = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const at::Tensor ref =
          dense_fp64_head(q[b][h], k[b][h / group], v[b][h / group], scale, causal);
      const at::Tensor od = o[b][h].to(at::kDouble);
      const at::Tensor s = at::stack({(od - ref).abs().sum(), ref.abs().sum(), (od * ref).sum(),
                                      (od * od).sum(), (ref * ref).sum()})
                               .cpu();
      const auto a = s.accessor<double, 1>();
      acc[b][h] = a[1] > 0 ? a[0] / a[1] : 0.0;
      dot += a[2];
      oo += a[3];
      rr += a[4];
    }
  }
  e.cosine = dot / std::max(std::sqrt(oo * rr), 1e-300);
  return e;
}

// The accuracy rows of one input: every sample of the dump's first layer stacked on the batch
// axis (q [S, H, N, D], k/v [S, Hkv, N, D]), run by the kernel at the dense mask (the sparse
// kernel with every block in its LUT, as the density-1 rows), then N(0, 1) tensors of the same
// shape. Per row: the kernel-only time and the per-(sample, head) rel-L1 vs dense fp64
// attention, worst (rel_l1) and mean; and the preparation's times (quantisation, prediction,
// prepare) at the shape rows' thresholds, with the stage-1 sparsity they give in a note. The
// prediction's work depends on the maps it sorts (how peaked the rows are), which N(0, 1)
// inputs do not have: these are its figures on real-structured data, beside the twin's.
std::vector<Row> run_accuracy(const AccuracyInput& in, const RunOptions& opt, int device,
                              GpuTimer& timer) {
  io::DumpReader dump(in.dump);
  const io::DumpInfo& info = dump.info();
  if (info.layers.empty() || info.layers.front().samples.empty()) {
    fail(ExitCode::kDataError, "{}: no layer with samples", in.dump.string());
  }
  const io::LayerInfo& L = info.layers.front();
  std::vector<at::Tensor> qs, ks, vs;
  for (const io::SampleInfo& si : L.samples) {
    const io::SampleInfo& s0 = L.samples.front();
    if (si.q_shape != s0.q_shape || si.kv_shape != s0.kv_shape) {
      fail(ExitCode::kDataError,
           "{}: layer {} sample {} has another shape than sample {} (the accuracy rows stack the "
           "samples of the first layer on the batch axis)",
           in.dump.string(), L.index, si.index, s0.index);
    }
    qs.push_back(dump.read(L.index, si.index, "q"));
    ks.push_back(dump.read(L.index, si.index, "k"));
    vs.push_back(dump.read(L.index, si.index, "v"));
  }
  const auto dev = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device));
  // fp32 dumps run as fp16 (as the CUDA oracle does); fp16 / bf16 as stored.
  const at::ScalarType dtype =
      qs.front().scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kHalf;
  const at::Tensor q_real = at::cat(qs, 0).to(dev, dtype).contiguous();
  const at::Tensor k_real = at::cat(ks, 0).to(dev, dtype).contiguous();
  const at::Tensor v_real = at::cat(vs, 0).to(dev, dtype).contiguous();
  const Shape shape{q_real.size(0), q_real.size(1), k_real.size(1),
                    q_real.size(2), k_real.size(2), q_real.size(3)};

  const std::string kernel = runtime::resolve_kernel(opt.kernel);
  const ref::Geometry geom = ref::geometry_by_name(runtime::kernel_geometry(kernel));
  runtime::Options ropt;
  ropt.causal = info.causal;
  if (info.scale) ropt.scale = *info.scale;
  const int64_t nq = (shape.seq_q + geom.block_q - 1) / geom.block_q;
  const int64_t nk = (shape.seq_k + geom.block_k - 1) / geom.block_k;
  const int64_t valid =
      causal_valid_blocks(shape.seq_q, shape.seq_k, geom.block_q, geom.block_k, ropt.causal)
          .sum()
          .item<int64_t>() *
      shape.batch * shape.heads;

  auto measure = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::string& data, uint64_t seed, const std::string& inputs) {
    const at::Tensor mask =
        at::ones({shape.batch, shape.heads, nq, nk}, at::TensorOptions(at::kBool).device(dev));
    const runtime::Prepared p = runtime::prepare_with_mask(q, k, v, mask, geom, ropt);
    at::Tensor o = at::empty({shape.batch, shape.heads, shape.seq_q, p.head_dim}, q.options());
    const KernelLaunch launch(p, o, at::Tensor(), kernel, /*dense=*/false);
    launch();
    const HeadErrors err =
        head_errors(q, k, v, o.narrow(3, 0, shape.head_dim), p.scale, ropt.causal);
    Row r;
    r.name = kernel_name(geom, p.head_dim);
    r.shape = shape;
    r.causal = ropt.causal;
    r.density = 1.0;
    r.dtype = dtype == at::kBFloat16 ? "bf16" : "fp16";
    r.mask = "dense";
    r.data = data;
    r.seed = seed;
    r.device = device;
    const Timing t = timer.measure(launch);
    r.time = t.stats;
    add_notes(r, t);
    r.sparsity_stage1 = 0.0;
    r.valid_blocks = valid;
    r.kept_blocks = valid;
    const int64_t worst = err.rel_l1.argmax().item<int64_t>();
    r.rel_l1 = err.rel_l1.max().item<double>();
    r.rel_l1_mean = err.rel_l1.mean().item<double>();
    r.cosine = err.cosine;
    r.accuracy_reference = "fp64";
    const auto th =
        runtime::Thresholds::uniform(shape.heads, opt.predict_tau, opt.predict_theta, dev);
    const PrepareTimes prep = time_prepare(q, k, v, geom, th, ropt, timer);
    prep.set(r);
    const double kept = static_cast<double>(prep.predicted.lut_len.sum().item<int64_t>());
    r.notes.push_back(fmt::format("prepare at tau {:g}, theta {:g}: stage-1 sparsity {:.3f}",
                                  opt.predict_tau, opt.predict_theta,
                                  1.0 - kept / static_cast<double>(std::max<int64_t>(1, valid))));
    r.notes.push_back("inputs: " + inputs);
    r.notes.push_back(fmt::format("worst head: sample {} head {} of {}", worst / shape.heads,
                                  worst % shape.heads, shape.batch * shape.heads));
    r.command = in.command;
    return r;
  };

  std::vector<Row> rows;
  rows.push_back(measure(q_real, k_real, v_real, in.data, in.seed,
                         fmt::format("{} (layer {} of {})", in.source, L.index, in.dump.string())));
  // The N(0, 1) twin: what random-input accuracy figures show for the same shape and kernel.
  const uint64_t nseed = case_seed(opt.seed ^ 0x6e6f726d616cull, Case{shape, ropt.causal, 1.0});
  auto gen = at::cuda::detail::createCUDAGenerator(static_cast<c10::DeviceIndex>(device));
  gen.set_current_seed(nseed);
  const at::TensorOptions topts = q_real.options();
  const at::Tensor qn = at::empty(q_real.sizes(), topts).normal_(0.0, 1.0, gen);
  const at::Tensor kn = at::empty(k_real.sizes(), topts).normal_(0.0, 1.0, gen);
  const at::Tensor vn = at::empty(v_real.sizes(), topts).normal_(0.0, 1.0, gen);
  rows.push_back(measure(qn, kn, vn, "normal", nseed,
                         fmt::format("N(0, 1), seed {}, the shape of {}", nseed, in.data)));
  return rows;
}

void require_devices(const std::vector<int>& devices) {
  const int count = visible_devices();
  if (count == 0) fail(ExitCode::kNoDevice, "no CUDA device visible");
  for (int d : devices) {
    if (d >= count) fail(ExitCode::kUsage, "device {} not visible ({} device(s))", d, count);
  }
}

}  // namespace

Results run_suite(const Suite& suite, const RunOptions& opt) {
  require_devices(opt.devices);
  std::vector<Group> groups;
  for (size_t i = 0; i < suite.cases.size(); ++i) {
    const Case& c = suite.cases[i];
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
      return g.shape == c.shape && g.causal == c.causal;
    });
    if (it == groups.end()) {
      groups.push_back(Group{c.shape, c.causal, {}});
      it = groups.end() - 1;
    }
    it->case_indices.push_back(i);
  }
  Results results;
  results.env = capture_environment(opt.devices, opt.command, opt.kernel);
  std::vector<std::vector<Row>> per_group(groups.size());
  std::mutex log_mutex;
  // One thread per device; device slot takes groups slot, slot + devices, ...
  const int slots = static_cast<int>(opt.devices.size());
  parallel_for(slots, slots, [&](int slot_index) {
    const size_t slot = static_cast<size_t>(slot_index);
    const int device = opt.devices[slot];
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    auto stream = c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device));
    c10::cuda::CUDAStreamGuard stream_guard(stream);
    GpuTimer timer(stream.stream(), opt.timer);
    if (slot == 0) results.env.gpus[0].clock_measured_mhz = timer.measure_clock_mhz();
    for (size_t gi = slot; gi < groups.size(); gi += opt.devices.size()) {
      {
        std::lock_guard<std::mutex> lock(log_mutex);
        log::info("bench: device {}: {}{} ({} densities)", device, groups[gi].shape.str(),
                  groups[gi].causal ? " causal" : "", groups[gi].case_indices.size());
      }
      per_group[gi] = run_group(suite, groups[gi], opt, device, timer);
    }
    if (slot > 0) results.env.gpus[slot].clock_measured_mhz = timer.measure_clock_mhz();
  });
  for (auto& rows : per_group) {
    for (auto& r : rows) results.rows.push_back(std::move(r));
  }
  if (!opt.accuracy.empty()) {
    const int device = opt.devices[0];
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    auto stream = c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device));
    c10::cuda::CUDAStreamGuard stream_guard(stream);
    GpuTimer timer(stream.stream(), opt.timer);
    for (const AccuracyInput& in : opt.accuracy) {
      log::info("bench: device {}: accuracy on {} ({})", device, in.data, in.dump.string());
      for (auto& r : run_accuracy(in, opt, device, timer)) results.rows.push_back(std::move(r));
    }
  }
  return results;
}

Results run_predicted(const RunOptions& opt) {
  require_devices(opt.devices);
  SPARGE_ASSERT(opt.dump && opt.config, "run_predicted needs --dump and --config");
  io::DumpReader dump(*opt.dump);
  const config::TunedConfig cfg = config::read_tuned(*opt.config);
  const std::string kernel = runtime::resolve_kernel(opt.kernel);
  const ref::Geometry geom = ref::geometry_by_name(runtime::kernel_geometry(kernel));
  if (geom.block_q != cfg.kernel.geometry.block_q || geom.block_k != cfg.kernel.geometry.block_k) {
    fail(ExitCode::kConfigError, "{}: tuned for {} ({}x{}), but the kernel is {} ({}x{})",
         opt.config->string(), cfg.kernel.geometry.name, cfg.kernel.geometry.block_q,
         cfg.kernel.geometry.block_k, geom.name, geom.block_q, geom.block_k);
  }
  Results results;
  results.env = capture_environment({opt.devices[0]}, opt.command, opt.kernel);
  const int device = opt.devices[0];
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  auto stream = c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device));
  c10::cuda::CUDAStreamGuard stream_guard(stream);
  GpuTimer timer(stream.stream(), opt.timer);
  results.env.gpus[0].clock_measured_mhz = timer.measure_clock_mhz();
  const auto dev = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device));
  std::vector<int> layers = opt.layers;
  if (layers.empty()) {
    for (const auto& l : cfg.layers) layers.push_back(l.layer);
  }
  // A config tuned in the Hilbert order runs in it: Q/K/V gathered before prediction, the output
  // put back after, both on the device and inside the timed prepare / end-to-end figures.
  std::optional<runtime::TokenPermutation> order;
  if (cfg.permutation.hilbert()) {
    const io::DumpInfo& info = dump.info();
    config::Permutation have;
    if (info.grid && !info.causal) {
      have.order = "hilbert";
      have.grid = *info.grid;
      have.text_prefix = info.text_prefix;
      have.text_suffix = info.text_suffix;
    }
    config::check_permutation(cfg.permutation, have, opt.config->string());
    const auto& g = cfg.permutation.grid;
    order = runtime::TokenPermutation::hilbert(g[0], g[1], g[2], cfg.permutation.text_prefix,
                                               cfg.permutation.text_suffix, dev);
  }
  for (int li : layers) {
    const config::TunedLayer* tl = cfg.find_layer(li);
    if (!tl) fail(ExitCode::kConfigError, "{}: no layer {}", opt.config->string(), li);
    // q, k, v [B, H(kv), N, D] in the dump's order; a tuned token order is applied inside the
    // kernels (Options::token_order: quantisation reads through it, the epilogue scatters back),
    // as the op runs it, so the prepare and end-to-end times include it.
    const auto q = dump.read(li, opt.sample, "q").to(dev);
    const auto k = dump.read(li, opt.sample, "k").to(dev);
    const auto v = dump.read(li, opt.sample, "v").to(dev);
    const bool permuted = order && q.size(2) == order->tokens() && k.size(2) == q.size(2);
    ref::Thresholds rt;
    rt.tau = tl->tau;
    rt.theta = tl->theta;
    rt.lambda = tl->lambda;
    rt.topk = tl->topk;
    rt.sparsity_cap = tl->sparsity_cap;
    auto th = runtime::Thresholds::from_ref(rt, dev);
    runtime::Options ropt;
    ropt.causal = cfg.kernel.causal;
    ropt.sink = cfg.kernel.sink;
    ropt.return_mask = true;
    if (dump.info().scale) ropt.scale = *dump.info().scale;
    if (permuted) ropt.token_order = order->index;
    const PrepareTimes prep = time_prepare(q, k, v, geom, th, ropt, timer);
    const runtime::Prepared& p = prep.predicted;
    Shape s{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
    auto valid = causal_valid_blocks(s.seq_q, s.seq_k, geom.block_q, geom.block_k, ropt.causal);
    Row r;
    r.name = kernel_name(geom, p.head_dim);
    r.shape = s;
    r.causal = ropt.causal;
    r.dtype = q.scalar_type() == at::kBFloat16 ? "bf16" : "fp16";
    r.mask = "predicted";
    r.device = device;
    r.valid_blocks = valid.sum().item<int64_t>() * s.batch * s.heads;
    r.kept_blocks = p.lut_len.sum().item<int64_t>();
    r.density = double(r.kept_blocks) / double(std::max<int64_t>(1, r.valid_blocks));
    r.sparsity_stage1 = 1.0 - r.density;
    auto o = at::empty_like(q);
    const KernelLaunch launch(p, o, th.lambda, kernel, /*dense=*/false);
    Timing t = timer.measure(launch);
    r.time = t.stats;
    add_notes(r, t);
    {
      // Realised stage-1+2 sparsity: one more (untimed) launch with the kernel's stage-2 counts.
      const int64_t groups = geom.block_q / geom.warp_rows;
      at::Tensor stage2_kept = at::zeros({s.batch, s.heads, p.num_q_blocks, groups},
                                         at::TensorOptions(at::kInt).device(dev));
      runtime::run_attention(p, o, th.lambda, kernel, stage2_kept);
      const double kept2 = stage2_kept.sum().item<double>() / static_cast<double>(groups);
      r.sparsity_stage12 = runtime::stage12_sparsity(static_cast<double>(r.valid_blocks),
                                                     static_cast<double>(r.kept_blocks), kept2);
    }
    prep.set(r);
    r.end_to_end_ms = timer
                          .measure([&] {
                            runtime::Prepared x = runtime::prepare(q, k, v, geom, th, ropt);
                            runtime::run_attention(x, o, th.lambda, kernel);
                          })
                          .stats.median;
    try {
      r.cudnn_ms = timer
                       .measure([&] {
                         at::_scaled_dot_product_cudnn_attention(q, k, v, std::nullopt, false, 0.0,
                                                                 ropt.causal);
                       })
                       .stats.median;
    } catch (const c10::Error&) {
      r.notes.push_back("sdpa_cudnn unavailable for this shape");
    }
    r.notes.push_back(fmt::format("layer {} sample {} of {}", li, opt.sample, opt.dump->string()));
    if (permuted) r.notes.push_back("hilbert token order (in prepare and end-to-end times)");
    r.command = fmt::format("sparge bench --dump {} --config {} --layer {} --sample {} --kernel {}",
                            opt.dump->string(), opt.config->string(), li, opt.sample, opt.kernel);
    results.rows.push_back(std::move(r));
  }
  return results;
}

}  // namespace sparge::bench
