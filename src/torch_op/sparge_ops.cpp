// torch.ops.sparge: the inference side of a tuned config, as PyTorch custom operators
// (libsparge_ops.so, loaded by python/sparge). Thin: the work is src/runtime (CUDA tensors: GPU
// prediction + quantisation + the block-sparse kernels on the current stream) or src/reference
// (CPU tensors: the numerics contract, slow and exact to it). The fake (Meta) implementation
// gives torch.compile the output shapes without running anything.
//
//   attention(q, k, v, tau, theta, lam, topk?, is_causal, scale?, kernel, perm?, sparsity_cap?)
//     -> (o, counts)
//     q [B, H, N, D], k, v [B, Hkv, N', D] (any strides with a contiguous last dim, so SDPA's
//     HND tensors and NHD views alike), fp16/bf16 (CPU also fp32); tau, theta, lam [H] fp32 per
//     query head (lam in natural-log units, -inf = stage 2 off), topk [H] or None (TopCdf),
//     sparsity_cap [H] or None (the YAML's per-head cap, ref::Thresholds::sparsity_cap).
//     perm [Nq] int64 or None (on q's device, contiguous): the token order the config was tuned
//     in (Hilbert); q (and k, v when Nk = Nq) are read in it and o is put back in the input
//     order, so the caller never sees it. On CUDA the kernels gather and scatter through it
//     (runtime::Options::token_order); the CPU path gathers copies.
//     o is q's shape and dtype, laid out like q (see out_like); counts int64 [2] on q's device =
//     (kept, causally valid) block pairs of this call, summed over B and H, for realised
//     sparsity without a host sync.
//   hilbert_permutation(T, H, W, text_prefix, text_suffix) -> int64 [text_prefix + T·H·W +
//     text_suffix]: perm[k] = original index of the k-th token (src/reference/hilbert.hpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.hpp"
#include "reference/hilbert.hpp"
#include "reference/reference.hpp"
#include "runtime/permute.hpp"
#include "runtime/runtime.hpp"

namespace {

namespace ref = sparge::ref;
namespace rt = sparge::runtime;
using sparge::ExitCode;

// Errors reach Python as RuntimeError with sparge's one-line message.
[[noreturn]] void usage(const std::string& what) { throw sparge::Error(ExitCode::kUsage, what); }

struct Checked {
  int64_t heads = 0, seq_q = 0, seq_k = 0;
};

// Shapes the op promises (the runtime and the reference check the rest again).
Checked check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& tau,
              const at::Tensor& theta, const at::Tensor& lam, const std::optional<at::Tensor>& topk,
              const std::optional<at::Tensor>& perm,
              const std::optional<at::Tensor>& sparsity_cap) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4) {
    usage("sparge.attention: q, k, v must be [B, H, N, D]");
  }
  if (q.size(3) > 128) {
    usage("sparge.attention: head dim " + std::to_string(q.size(3)) +
          " > 128: no kernel runs it (split the head dim or keep this layer on SDPA)");
  }
  Checked c{q.size(1), q.size(2), k.size(2)};
  for (const at::Tensor* t : {&tau, &theta, &lam}) {
    if (t->dim() != 1 || t->size(0) != c.heads) {
      usage("sparge.attention: tau, theta, lam must be [H] = [" + std::to_string(c.heads) + "]");
    }
  }
  if (topk && (topk->dim() != 1 || topk->size(0) != c.heads)) {
    usage("sparge.attention: topk must be [H]");
  }
  if (sparsity_cap && (sparsity_cap->dim() != 1 || sparsity_cap->size(0) != c.heads)) {
    usage("sparge.attention: sparsity_cap must be [H]");
  }
  if (perm) {
    if (perm->dim() != 1 || perm->size(0) != c.seq_q || perm->scalar_type() != at::kLong) {
      usage("sparge.attention: perm must be int64 [N] = [" + std::to_string(c.seq_q) + "]");
    }
  }
  return c;
}

// An output [B, H, N, d] laid out like q: [B, N, H, d] in memory when q's head stride is below
// its token stride (SDPA's callers mostly hold q as a transposed [B, N, H, D] projection), so that
// the caller's o.transpose(1, 2).reshape(B, N, H·d) is a view and not a copy of o per layer.
// Every backend (CUDA, CPU, Meta) returns this layout, so torch.compile's fake tensors match.
at::Tensor out_like(const at::Tensor& q, int64_t d, const at::TensorOptions& options) {
  const int64_t b = q.size(0), h = q.size(1), n = q.size(2);
  if (q.stride(1) < q.stride(2)) return at::empty({b, n, h, d}, options).transpose(1, 2);
  return at::empty({b, h, n, d}, options);
}

// The CPU path's q, k, v [B, H(kv), N, D] in the token order the thresholds were tuned in:
// gathered copies by perm when one is given, as they are otherwise; restore() writes an output
// back into `out` in the input order. (The CUDA path gathers and scatters inside the kernels.)
struct Ordered {
  at::Tensor q, k, v;
  std::optional<at::Tensor> perm;
  at::Tensor restore(const at::Tensor& o, at::Tensor out) const {
    if (!perm) return out.copy_(o);                             // converts the dtype
    return out.index_copy_(2, *perm, o.to(out.scalar_type()));  // out[:, :, perm] = o_perm
  }
};
Ordered in_tuned_order(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const std::optional<at::Tensor>& perm) {
  if (!perm) return {q, k, v, std::nullopt};
  rt::check_token_order(*perm, q.size(2), q.device());
  // Keys of another length (cross-attention to text) are not on the grid; softmax over keys does
  // not depend on their order, and the tuner left them in place too (tune/token_order.hpp).
  const bool kv_on_grid = k.size(2) == q.size(2);
  auto gather = [&](const at::Tensor& x) { return x.index_select(2, *perm); };
  return {gather(q), kv_on_grid ? gather(k) : k, kv_on_grid ? gather(v) : v, perm};
}

std::tuple<at::Tensor, at::Tensor> attention_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& tau,
    const at::Tensor& theta, const at::Tensor& lam, const std::optional<at::Tensor>& topk,
    bool is_causal, std::optional<double> scale, const std::string& kernel,
    const std::optional<at::Tensor>& perm, const std::optional<at::Tensor>& sparsity_cap) {
  check(q, k, v, tau, theta, lam, topk, perm, sparsity_cap);
  const at::Device dev = q.device();
  const std::string var = rt::resolve_kernel(kernel);
  const ref::Geometry geometry = ref::geometry_by_name(rt::kernel_geometry(var));
  rt::Options opts;
  opts.causal = is_causal;
  opts.scale = scale.value_or(0.0);
  if (perm) opts.token_order = *perm;  // checked by the runtime (device, contiguity)
  auto f32 = [&](const at::Tensor& t) { return t.to(dev, at::kFloat).contiguous(); };
  const rt::Thresholds th{f32(tau), f32(theta), f32(lam), topk ? f32(*topk) : at::Tensor(),
                          sparsity_cap ? f32(*sparsity_cap) : at::Tensor()};
  const rt::Prepared prep = rt::prepare(q, k, v, geometry, th, opts);
  at::Tensor o = out_like(q, prep.head_dim, q.options());  // head dim padded to the kernel's
  rt::run_attention(prep, o, th.lambda, var);  // o in the input order (token_order scatters)
  if (prep.head_dim != prep.head_dim_in) {
    o = out_like(q, prep.head_dim_in, q.options()).copy_(o.narrow(3, 0, prep.head_dim_in));
  }
  const int64_t valid =
      ref::causal_block_mask(prep.seq_q, prep.seq_k, geometry, is_causal).sum().item<int64_t>() *
      prep.batch * prep.heads;
  at::Tensor counts =
      at::stack({prep.lut_len.sum().to(at::kLong),
                 at::scalar_tensor(valid, prep.lut_len.options().dtype(at::kLong))});
  return {o, counts};
}

std::tuple<at::Tensor, at::Tensor> attention_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& tau,
    const at::Tensor& theta, const at::Tensor& lam, const std::optional<at::Tensor>& topk,
    bool is_causal, std::optional<double> scale, const std::string& kernel,
    const std::optional<at::Tensor>& perm, const std::optional<at::Tensor>& sparsity_cap) {
  check(q_in, k_in, v_in, tau, theta, lam, topk, perm, sparsity_cap);
  const Ordered in = in_tuned_order(q_in, k_in, v_in, perm);
  const at::Tensor &q = in.q, &k = in.k, &v = in.v;
  // The CPU has no kernel: "auto" means the Hopper geometry, whose numerics the reference
  // emulates (a config names its kernel explicitly).
  const ref::Geometry geometry =
      ref::geometry_by_name(kernel == "auto" ? std::string("sm90") : rt::kernel_geometry(kernel));
  auto vec = [](const at::Tensor& t) {
    const at::Tensor f = t.to(at::kCPU, at::kFloat).contiguous();
    return std::vector<float>(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  };
  ref::Thresholds th;
  th.tau = vec(tau);
  th.theta = vec(theta);
  th.lambda = vec(lam);
  if (topk) th.topk = vec(*topk);
  if (sparsity_cap) th.sparsity_cap = vec(*sparsity_cap);
  ref::AttentionOptions opts;
  opts.causal = is_causal;
  opts.scale = scale.value_or(0.0);
  const at::Tensor mask = ref::predict_block_mask(q, k, geometry, th, opts);
  const ref::SparseResult r = ref::sparse_attention(q, k, v, mask, th.lambda, geometry, opts);
  return {in.restore(r.o, out_like(q_in, r.o.size(3), q_in.options())),
          at::tensor({r.kept_blocks, r.valid_blocks}, at::kLong)};
}

std::tuple<at::Tensor, at::Tensor> attention_meta(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& tau,
    const at::Tensor& theta, const at::Tensor& lam, const std::optional<at::Tensor>& topk,
    bool is_causal, std::optional<double> scale, const std::string& kernel,
    const std::optional<at::Tensor>& perm, const std::optional<at::Tensor>& sparsity_cap) {
  (void)is_causal, (void)scale, (void)kernel;
  check(q, k, v, tau, theta, lam, topk, perm, sparsity_cap);
  return {out_like(q, q.size(3), q.options()), at::empty({2}, q.options().dtype(at::kLong))};
}

at::Tensor hilbert_permutation(int64_t t, int64_t h, int64_t w, int64_t text_prefix,
                               int64_t text_suffix) {
  const std::vector<int64_t> perm =
      ref::hilbert_permutation(static_cast<int>(t), static_cast<int>(h), static_cast<int>(w),
                               static_cast<int>(text_prefix), static_cast<int>(text_suffix));
  return at::tensor(perm, at::kLong);
}

}  // namespace

TORCH_LIBRARY(sparge, m) {
  m.def(
      "attention(Tensor q, Tensor k, Tensor v, Tensor tau, Tensor theta, Tensor lam, "
      "Tensor? topk=None, bool is_causal=False, float? scale=None, str kernel='auto', "
      "Tensor? perm=None, Tensor? sparsity_cap=None) -> (Tensor, Tensor)");
  m.def("hilbert_permutation(int t, int h, int w, int text_prefix=0, int text_suffix=0) -> Tensor",
        &hilbert_permutation);
}

TORCH_LIBRARY_IMPL(sparge, CUDA, m) { m.impl("attention", &attention_cuda); }
TORCH_LIBRARY_IMPL(sparge, CPU, m) { m.impl("attention", &attention_cpu); }
TORCH_LIBRARY_IMPL(sparge, Meta, m) { m.impl("attention", &attention_meta); }
