// GPU runtime: validation, allocation and launches (see runtime.hpp).
#include "runtime/runtime.hpp"

#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <stdexcept>

#include "common/error.hpp"
#include "common/log.hpp"
#include "kernels/api.h"
#include "runtime/kernel_choice.hpp"
#include "runtime/permute.hpp"

namespace sparge::runtime {

namespace {

constexpr double kLog2e = 1.4426950408889634;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    fail(ExitCode::kSoftware, "{}: CUDA error: {}", what, cudaGetErrorString(e));
}

std::string shape_str(const at::Tensor& t) { return fmt::format("{}", fmt::join(t.sizes(), "x")); }

// Accepts any strides with a contiguous last dimension; copies only when the 16-byte vector loads
// would be misaligned (base pointer or a b/h/n stride not a multiple of 8 elements).
at::Tensor aligned(const at::Tensor& t, const char* name) {
  const bool ok = reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(0) % 8 == 0 &&
                  t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0;
  if (ok) return t;
  log::debug("runtime: {} {} strides [{}] not 16-byte aligned: copying", name, shape_str(t),
             fmt::join(t.strides(), ","));
  return t.contiguous();
}

struct Inputs {
  at::Tensor q, k, v;  // possibly padded / realigned
  int64_t batch, heads, kv_heads, seq_q, seq_k, head_dim, head_dim_in;
};

Inputs check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal,
                    bool need_v) {
  const std::pair<const at::Tensor*, const char*> all[] = {{&q, "q"}, {&k, "k"}, {&v, "v"}};
  for (auto [t, name] : all) {
    if (!t->defined()) fail(ExitCode::kUsage, "attention input {}: undefined tensor", name);
    if (t->dim() != 4)
      fail(ExitCode::kUsage, "attention input {}: shape {}, expected rank 4 [B, H, N, D]", name,
           shape_str(*t));
    if (!t->is_cuda())
      fail(ExitCode::kUsage, "attention input {}: on {}, expected a CUDA tensor", name,
           t->device().str());
    if (t->device() != q.device())
      fail(ExitCode::kUsage, "attention input {}: on {}, q on {}", name, t->device().str(),
           q.device().str());
    if (t->scalar_type() != at::kHalf && t->scalar_type() != at::kBFloat16)
      fail(ExitCode::kUsage, "attention input {}: dtype {}, expected float16 or bfloat16", name,
           c10::toString(t->scalar_type()));
    if (t->scalar_type() != q.scalar_type())
      fail(ExitCode::kUsage, "attention input {}: dtype {} differs from q's {}", name,
           c10::toString(t->scalar_type()), c10::toString(q.scalar_type()));
    if (t->size(3) > 1 && t->stride(3) != 1)
      fail(ExitCode::kUsage, "attention input {}: last-dimension stride {}, expected 1", name,
           t->stride(3));
  }
  if (k.sizes() != v.sizes() || q.size(0) != k.size(0) || q.size(3) != k.size(3))
    fail(ExitCode::kUsage,
         "attention inputs: q {}, k {}, v {}: B and D must agree and k, v have equal shapes",
         shape_str(q), shape_str(k), shape_str(v));
  Inputs in;
  in.batch = q.size(0);
  in.heads = q.size(1);
  in.kv_heads = k.size(1);
  in.seq_q = q.size(2);
  in.seq_k = k.size(2);
  in.head_dim_in = q.size(3);
  if (in.batch < 1 || in.heads < 1 || in.kv_heads < 1 || in.seq_q < 1 || in.seq_k < 1 ||
      in.head_dim_in < 1 || in.heads % in.kv_heads != 0)
    fail(ExitCode::kUsage,
         "attention inputs: q {}, k {}: need B, N, D >= 1 and query heads a multiple of kv heads",
         shape_str(q), shape_str(k));
  if (in.head_dim_in > 128)
    fail(ExitCode::kUsage,
         "attention inputs: head dim {} not supported (64 and 128 natively, smaller ones zero "
         "padded; no kernel for D > 128)",
         in.head_dim_in);
  if (causal && in.seq_q > in.seq_k)
    fail(ExitCode::kUsage, "causal attention with Nq = {} > Nk = {} is not supported", in.seq_q,
         in.seq_k);
  in.head_dim = in.head_dim_in <= 64 ? 64 : 128;
  auto pad = [&](const at::Tensor& t) {
    return in.head_dim == in.head_dim_in
               ? t
               : at::constant_pad_nd(t, {0, in.head_dim - in.head_dim_in});
  };
  in.q = aligned(pad(q), "q");
  in.k = aligned(pad(k), "k");
  in.v = need_v ? aligned(pad(v), "v") : v;
  return in;
}

kernels::InputView view(const at::Tensor& t, const at::Tensor& rows = {}) {
  return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2),
          rows.defined() ? rows.data_ptr<int64_t>() : nullptr};
}

kernels::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return kernels::DType::kFloat16;
    case at::kBFloat16:
      return kernels::DType::kBFloat16;
    case at::kFloat:
      return kernels::DType::kFloat32;
    default:
      fail(ExitCode::kUsage, "dtype {} has no kernel", c10::toString(t));
  }
}

void check_geometry(const ref::Geometry& g) {
  const bool ok = (g.block_q == 64 || g.block_q == 128) && (g.block_k == 64 || g.block_k == 128);
  if (!ok)
    fail(ExitCode::kUsage, "geometry {}: blocks {}x{} not supported (64 or 128 each)", g.name,
         g.block_q, g.block_k);
}

kernels::PredictParams predict_params(const Prepared& p, bool causal, bool sink) {
  kernels::PredictParams k;
  k.batch = static_cast<int>(p.batch);
  k.heads = static_cast<int>(p.heads);
  k.kv_heads = static_cast<int>(p.kv_heads);
  k.seq_q = static_cast<int>(p.seq_q);
  k.seq_k = static_cast<int>(p.seq_k);
  k.head_dim = static_cast<int>(p.head_dim);
  k.block_q = p.geometry.block_q;
  k.block_k = p.geometry.block_k;
  k.num_q_blocks = static_cast<int>(p.num_q_blocks);
  k.num_k_blocks = static_cast<int>(p.num_k_blocks);
  k.scale = static_cast<float>(p.scale);
  k.causal = causal;
  k.sink = sink;
  return k;
}

void alloc_lut(Prepared& p, bool want_mask) {
  const auto dev = p.q8.device();
  p.lut = at::empty({p.batch, p.heads, p.num_q_blocks, p.num_k_blocks},
                    at::TensorOptions(at::kInt).device(dev));
  p.lut_len =
      at::empty({p.batch, p.heads, p.num_q_blocks}, at::TensorOptions(at::kInt).device(dev));
  p.mask = want_mask ? at::empty({p.batch, p.heads, p.num_q_blocks, p.num_k_blocks},
                                 at::TensorOptions(at::kBool).device(dev))
                     : at::Tensor();
}

at::Tensor head_vector(const at::Tensor& t, const char* name, int64_t heads, at::Device dev) {
  if (!t.defined()) return t;
  if (t.numel() != heads)
    fail(ExitCode::kUsage, "thresholds: {} has {} entries, expected {} (query heads)", name,
         t.numel(), heads);
  return t.to(dev, at::kFloat).contiguous().view({heads});
}

}  // namespace

Thresholds Thresholds::uniform(int64_t heads, float tau, float theta, at::Device device,
                               float lambda) {
  const auto opts = at::TensorOptions(at::kFloat).device(device);
  return {at::full({heads}, tau, opts), at::full({heads}, theta, opts),
          at::full({heads}, lambda, opts), at::Tensor(), at::Tensor()};
}

Thresholds Thresholds::from_ref(const ref::Thresholds& t, at::Device device) {
  auto vec = [&](const std::vector<float>& v) {
    if (v.empty()) return at::Tensor();
    return at::tensor(at::ArrayRef<float>(v), at::kFloat).to(device);
  };
  return {vec(t.tau), vec(t.theta), vec(t.lambda), vec(t.topk), vec(t.sparsity_cap)};
}

namespace {

// The quantisation of quantize: allocates `p`'s outputs and fills the launch parameters.
// `workspace` keeps the column-statistics scratch alive until the caller's last launch.
kernels::QuantParams quant_setup(Prepared& p, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const ref::Geometry& geometry,
                                 const Options& options, at::Tensor& workspace) {
  check_geometry(geometry);
  const Inputs in = check_inputs(q, k, v, options.causal, /*need_v=*/true);
  p.geometry = geometry;
  p.dtype = q.scalar_type();
  p.batch = in.batch;
  p.heads = in.heads;
  p.kv_heads = in.kv_heads;
  p.seq_q = in.seq_q;
  p.seq_k = in.seq_k;
  p.head_dim = in.head_dim;
  p.head_dim_in = in.head_dim_in;
  p.num_q_blocks = ceil_div(in.seq_q, geometry.block_q);
  p.num_k_blocks = ceil_div(in.seq_k, geometry.block_k);
  p.scale =
      options.scale > 0 ? options.scale : 1.0 / std::sqrt(static_cast<double>(in.head_dim_in));
  p.causal = options.causal;
  if (options.token_order.defined()) {
    check_token_order(options.token_order, in.seq_q, q.device());
    p.token_order = options.token_order;
  }
  // Keys of another length than the queries are not on the token grid: read in place.
  const at::Tensor kv_rows = in.seq_k == in.seq_q ? p.token_order : at::Tensor();

  const int64_t B = p.batch, H = p.heads, Hkv = p.kv_heads, D = p.head_dim;
  const int64_t nq = p.num_q_blocks, nk = p.num_k_blocks;
  const auto f32 = at::TensorOptions(at::kFloat).device(q.device());
  const auto i8 = at::TensorOptions(at::kChar).device(q.device());
  p.q8 = at::empty({B, H, nq * geometry.block_q, D}, i8);
  p.q_scale = at::empty({B, H, nq * geometry.block_q}, f32);  // one per token row
  p.q_pooled = at::empty({B, H, nq, D}, f32);
  p.q_sim = at::empty({B, H, nq}, f32);
  p.k8 = at::empty({B, Hkv, nk * geometry.block_k, D}, i8);
  p.k_scale = at::empty({B, Hkv, nk}, f32);
  p.k_pooled = at::empty({B, Hkv, nk, D}, f32);
  p.k_sim = at::empty({B, Hkv, nk}, f32);
  p.k_mean = at::empty({B, Hkv, D}, f32);
  const bool fp8 = geometry.pv == ref::PvNumerics::kFp8;
  if (fp8) {
    p.v = at::empty({B, Hkv, D, nk * geometry.block_k},
                    at::TensorOptions(at::kFloat8_e4m3fn).device(q.device()));
    p.v_scale = at::empty({B, Hkv, D}, f32);
    p.tile_counter = at::zeros({2}, q.options().dtype(at::kInt));
  } else {
    p.v = at::empty({B, Hkv, nk * geometry.block_k, D},
                    q.options().memory_format(at::MemoryFormat::Contiguous));
  }

  kernels::QuantParams k8;
  k8.dtype = kernel_dtype(p.dtype);
  k8.q = view(in.q, p.token_order);
  k8.k = view(in.k, kv_rows);
  k8.v = view(in.v, kv_rows);
  k8.batch = static_cast<int>(B);
  k8.heads = static_cast<int>(H);
  k8.kv_heads = static_cast<int>(Hkv);
  k8.seq_q = static_cast<int>(p.seq_q);
  k8.seq_k = static_cast<int>(p.seq_k);
  k8.head_dim = static_cast<int>(D);
  k8.block_q = geometry.block_q;
  k8.block_k = geometry.block_k;
  k8.num_q_blocks = static_cast<int>(nq);
  k8.num_k_blocks = static_cast<int>(nk);
  k8.q8 = p.q8.data_ptr<int8_t>();
  k8.q_scale = p.q_scale.data_ptr<float>();
  k8.q_pooled = p.q_pooled.data_ptr<float>();
  k8.q_sim = p.q_sim.data_ptr<float>();
  k8.k8 = p.k8.data_ptr<int8_t>();
  k8.k_scale = p.k_scale.data_ptr<float>();
  k8.k_pooled = p.k_pooled.data_ptr<float>();
  k8.k_sim = p.k_sim.data_ptr<float>();
  k8.k_mean = p.k_mean.data_ptr<float>();
  k8.v_fp8 = fp8;
  k8.v_out = p.v.data_ptr();
  k8.v_scale = fp8 ? p.v_scale.data_ptr<float>() : nullptr;
  workspace = at::empty({static_cast<int64_t>(kernels::quant_workspace_floats(k8))}, f32);
  k8.workspace = workspace.data_ptr<float>();
  k8.stages = options.quant_stages;
  return k8;
}

void launch_quant(const kernels::QuantParams& k8, cudaStream_t stream) {
  check_cuda(kernels::launch_quantize(k8, stream), "quantisation kernels");
}

// The prediction's launch on `stream`; its outputs and threshold vectors are allocated on the
// current stream (the caller's), so the attention that reads the LUT there needs no extra
// stream bookkeeping. The thresholds are copied to the device here and freed on return: when
// `stream` is not the current one they are marked as used on it, so the caching allocator does
// not hand their memory out again before the prediction has read them.
void predict_on(Prepared& p, const Thresholds& t, const Options& options,
                const at::cuda::CUDAStream& stream) {
  if (options.causal && p.seq_q > p.seq_k)
    fail(ExitCode::kUsage, "causal attention with Nq = {} > Nk = {} is not supported", p.seq_q,
         p.seq_k);
  if (p.num_k_blocks > kernels::kMaxPredictKBlocks)
    fail(ExitCode::kUsage, "prediction: {} K blocks (Nk = {}) exceed the kernel's limit of {}",
         p.num_k_blocks, p.seq_k, kernels::kMaxPredictKBlocks);
  const auto dev = p.q8.device();
  const c10::cuda::CUDAGuard guard(dev);
  const at::Tensor theta = head_vector(t.theta, "theta", p.heads, dev);
  const at::Tensor tau = head_vector(t.tau, "tau", p.heads, dev);
  const at::Tensor topk = head_vector(t.topk, "topk", p.heads, dev);
  const at::Tensor cap = head_vector(t.sparsity_cap, "sparsity_cap", p.heads, dev);
  if (!theta.defined() || (!tau.defined() && !topk.defined()))
    fail(ExitCode::kUsage, "thresholds: theta and one of tau / topk are required");
  p.causal = options.causal;
  alloc_lut(p, options.return_mask);
  kernels::PredictParams k = predict_params(p, options.causal, options.sink);
  k.q_pooled = p.q_pooled.data_ptr<float>();
  k.q_sim = p.q_sim.data_ptr<float>();
  k.k_pooled = p.k_pooled.data_ptr<float>();
  k.k_sim = p.k_sim.data_ptr<float>();
  k.theta = theta.data_ptr<float>();
  k.tau = tau.defined() ? tau.data_ptr<float>() : nullptr;
  k.topk = topk.defined() ? topk.data_ptr<float>() : nullptr;
  k.lut = p.lut.data_ptr<int32_t>();
  k.lut_len = p.lut_len.data_ptr<int32_t>();
  k.mask = p.mask.defined() ? reinterpret_cast<uint8_t*>(p.mask.data_ptr<bool>()) : nullptr;
  at::Tensor scratch;
  kernels::PredictCap pc;
  if (cap.defined()) {
    scratch = at::empty({static_cast<int64_t>(kernels::predict_cap_scratch_bytes(k))},
                        at::TensorOptions(at::kByte).device(dev));
    pc.sparsity_cap = cap.data_ptr<float>();
    pc.scratch = scratch.data_ptr();
  }
  check_cuda(kernels::launch_predict(k, stream.stream(), pc), "prediction kernel");
  if (stream != at::cuda::getCurrentCUDAStream(dev.index())) {
    const at::Tensor* used[] = {&theta, &tau, &topk, &cap, &scratch};
    for (const at::Tensor* x : used)
      if (x->defined()) x->record_stream(stream.unwrap());
  }
}

}  // namespace

Prepared quantize(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const ref::Geometry& geometry, const Options& options) {
  Prepared p;
  at::Tensor ws;
  const kernels::QuantParams k8 = quant_setup(p, q, k, v, geometry, options, ws);
  const c10::cuda::CUDAGuard guard(q.device());  // after quant_setup's checks: q may be on the CPU
  launch_quant(k8, at::cuda::getCurrentCUDAStream().stream());
  return p;  // ws is freed to the caching allocator, stream-ordered: safe
}

void predict(Prepared& p, const Thresholds& t, const Options& options) {
  predict_on(p, t, options, at::cuda::getCurrentCUDAStream(p.q8.device().index()));
}

Prepared prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const ref::Geometry& geometry, const Thresholds& thresholds,
                 const Options& options) {
  Prepared p;
  at::Tensor ws;
  kernels::QuantParams k8 = quant_setup(p, q, k, v, geometry, options, ws);
  const c10::cuda::CUDAGuard guard(q.device());  // after quant_setup's checks: q may be on the CPU
  const unsigned stages = k8.stages;
  const at::cuda::CUDAStream caller = at::cuda::getCurrentCUDAStream(q.device().index());
  k8.stages = stages & ~kernels::kQuantV;
  launch_quant(k8, caller.stream());
  // The prediction needs only the Q/K block statistics, the V pass only the V scale: they are
  // independent. The prediction (shared-memory bound, one wave) runs on a high-priority stream
  // so that its CTAs are placed first and the bandwidth-bound V pass fills the SMs around them
  // (kernels/NOTES.md, prediction/quantisation run 7: −3.5 % at D = 128, −9 % at D = 64; the V
  // pass beside the Q/K block pass instead was slower than serial).
  const at::cuda::CUDAStream side =
      at::cuda::getStreamFromPool(/*isHighPriority=*/true, q.device().index());
  at::cuda::CUDAEvent stats_ready, predicted;
  stats_ready.record(caller);
  stats_ready.block(side);
  predict_on(p, thresholds, options, side);
  k8.stages = stages & kernels::kQuantV;
  if (k8.stages != 0) launch_quant(k8, caller.stream());
  predicted.record(side);
  predicted.block(caller);
  return p;
}

Prepared prepare_with_mask(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& mask, const ref::Geometry& geometry,
                           const Options& options) {
  Prepared p = quantize(q, k, v, geometry, options);
  const std::vector<int64_t> want{p.batch, p.heads, p.num_q_blocks, p.num_k_blocks};
  if (!mask.defined() || mask.sizes() != at::IntArrayRef(want))
    fail(ExitCode::kUsage, "block mask: shape {}, expected {} for geometry {}",
         mask.defined() ? shape_str(mask) : "undefined", fmt::join(want, "x"), geometry.name);
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor m = mask.to(q.device()).ne(0).to(at::kByte).contiguous();
  alloc_lut(p, options.return_mask);
  kernels::PredictParams kp = predict_params(p, options.causal, options.sink);
  kp.lut = p.lut.data_ptr<int32_t>();
  kp.lut_len = p.lut_len.data_ptr<int32_t>();
  kp.mask = p.mask.defined() ? reinterpret_cast<uint8_t*>(p.mask.data_ptr<bool>()) : nullptr;
  check_cuda(kernels::launch_mask_to_lut(kp, m.data_ptr<uint8_t>(),
                                         at::cuda::getCurrentCUDAStream().stream()),
             "mask-to-LUT kernel");
  return p;
}

kernels::AttentionParams attention_params(const Prepared& p, const at::Tensor& o,
                                          const at::Tensor& lambda,
                                          at::Tensor& lambda_log2_storage) {
  if (!p.lut.defined())
    fail(ExitCode::kSoftware, "attention: prepared inputs have no LUT (call predict first)");
  const std::vector<int64_t> want{p.batch, p.heads, p.seq_q, p.head_dim};
  if (!o.defined() || o.sizes() != at::IntArrayRef(want) || o.stride(3) != 1 ||
      o.scalar_type() != p.dtype || o.device() != p.q8.device())
    fail(ExitCode::kUsage, "attention output: {} {}, expected {} {} with a contiguous last dim",
         o.defined() ? shape_str(o) : "undefined",
         o.defined() ? c10::toString(o.scalar_type()) : "", fmt::join(want, "x"),
         c10::toString(p.dtype));
  kernels::AttentionParams a;
  a.q8 = p.q8.data_ptr<int8_t>();
  a.k8 = p.k8.data_ptr<int8_t>();
  a.v = p.v.data_ptr();
  a.q_scale = p.q_scale.data_ptr<float>();
  a.k_scale = p.k_scale.data_ptr<float>();
  a.v_scale = p.v_scale.defined() ? p.v_scale.data_ptr<float>() : nullptr;
  a.lut = p.lut.data_ptr<int32_t>();
  a.lut_len = p.lut_len.data_ptr<int32_t>();
  if (p.tile_counter.defined()) a.tile_counter = p.tile_counter.data_ptr<int32_t>();
  if (lambda.defined()) {
    lambda_log2_storage =
        (head_vector(lambda, "lambda", p.heads, p.q8.device()) * static_cast<float>(kLog2e))
            .contiguous();
    a.lambda_log2 = lambda_log2_storage.data_ptr<float>();
  }
  a.o = o.data_ptr();
  a.o_stride_b = o.stride(0);
  a.o_stride_h = o.stride(1);
  a.o_stride_n = o.stride(2);
  a.o_rows = p.token_order.defined() ? p.token_order.data_ptr<int64_t>() : nullptr;
  a.o_dtype = kernel_dtype(o.scalar_type());
  a.v_dtype = kernel_dtype(p.dtype);
  a.batch = static_cast<int>(p.batch);
  a.heads = static_cast<int>(p.heads);
  a.kv_heads = static_cast<int>(p.kv_heads);
  a.seq_q = static_cast<int>(p.seq_q);
  a.seq_k = static_cast<int>(p.seq_k);
  a.head_dim = static_cast<int>(p.head_dim);
  a.num_q_blocks = static_cast<int>(p.num_q_blocks);
  a.num_k_blocks = static_cast<int>(p.num_k_blocks);
  a.sm_scale_log2 = static_cast<float>(p.scale * kLog2e);
  a.causal = p.causal;
  a.causal_offset = p.causal ? static_cast<int>(p.seq_k - p.seq_q) : 0;
  return a;
}

void launch_attention(const std::string& kernel, const kernels::AttentionParams& params,
                      cudaStream_t stream) {
  const bool hopper = kernel_geometry(kernel) == "sm90";
  try {
    if (hopper) {
      kernels::AttentionParams a = params;
      a.sm90_kernel = detail::hopper_kernel(kernel);
      kernels::launch_attention_sm90(a, stream);
    } else {
      kernels::launch_attention_sm80(params, stream);
    }
  } catch (const std::invalid_argument& e) {
    fail(ExitCode::kUsage, "attention {}: {}", kernel, e.what());
  } catch (const std::runtime_error& e) {
    // The sm90 launcher refuses a device without sm_90a code for it: classed as resolve_kernel
    // classes that choice. Anything else is a failed launch.
    if (hopper && !kernels::attention_sm90_available())
      choose_kernel(kernel, current_device_kernels());
    fail(ExitCode::kSoftware, "attention {}: {}", kernel, e.what());
  }
}

void run_attention(const Prepared& p, const at::Tensor& o, const at::Tensor& lambda,
                   const std::string& kernel, const at::Tensor& stage2_kept) {
  const std::string v = resolve_kernel(kernel);
  if (kernel_geometry(v) != p.geometry.name)
    fail(ExitCode::kUsage, "attention: inputs prepared for geometry {} cannot run kernel {}",
         p.geometry.name, v);
  const c10::cuda::CUDAGuard guard(p.q8.device());
  at::Tensor lambda_log2;
  kernels::AttentionParams a = attention_params(p, o, lambda, lambda_log2);
  if (stage2_kept.defined()) {
    const std::vector<int64_t> want{p.batch, p.heads, p.num_q_blocks,
                                    p.geometry.block_q / p.geometry.warp_rows};
    if (stage2_kept.scalar_type() != at::kInt || !stage2_kept.is_cuda() ||
        !stage2_kept.is_contiguous() || stage2_kept.sizes() != at::IntArrayRef(want))
      fail(ExitCode::kUsage, "attention: stage2_kept must be a contiguous int32 CUDA tensor {}",
           fmt::join(want, "x"));
    a.stage2_kept = stage2_kept.data_ptr<int32_t>();
  }
  launch_attention(v, a, at::cuda::getCurrentCUDAStream().stream());
  check_cuda(cudaGetLastError(), "attention kernel launch");
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const Thresholds& thresholds, const Options& options,
                     const std::string& kernel) {
  const std::string name = resolve_kernel(kernel);
  const ref::Geometry geometry = ref::geometry_by_name(kernel_geometry(name));
  Options opts = options;
  opts.return_mask = false;
  const Prepared p = prepare(q, k, v, geometry, thresholds, opts);
  // Output laid out like q: [B, N, H, D] in memory when q's head stride is below its token stride.
  const bool nhd = q.stride(1) < q.stride(2);
  at::Tensor o =
      nhd ? at::empty({p.batch, p.seq_q, p.heads, p.head_dim}, q.options()).transpose(1, 2)
          : at::empty({p.batch, p.heads, p.seq_q, p.head_dim}, q.options());
  run_attention(p, o, thresholds.lambda, name);
  if (p.head_dim != p.head_dim_in) o = o.narrow(3, 0, p.head_dim_in).clone();
  return o;
}

}  // namespace sparge::runtime
