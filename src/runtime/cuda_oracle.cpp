// `--backend cuda`: the tuner's HeadOracle (src/tune/oracle.hpp) on the real kernels.
//
// Per head and calibration sample, once: the block statistics and INT8/FP8 quantisation
// (runtime::quantize), the dense fp64 reference output and its L1 norm, on the GPU. Per batch of
// candidates: the candidates become the "heads" of one launch (each candidate's thresholds are a
// head's thresholds over the same statistics, kv heads = 1), so one prediction launch and one
// attention launch evaluate up to kBatch candidates; candidates giving an already evaluated
// (mask, λ) reuse its result. Errors and sparsities are reduced on the GPU; only masks (for the
// cache key), per-candidate sums and the stage-2 counts (stage2_kept) come back.
//
// Inputs of fp32 dumps are rounded to fp16 for the kernels (as SpargeAttn does); fp16/bf16 are
// used as stored.
#include "runtime/cuda_oracle.hpp"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "common/error.hpp"
#include "kernels/api.h"
#include "runtime/runtime.hpp"
#include "tune/oracle.hpp"

namespace sparge::runtime {

namespace {

constexpr int64_t kBatch = 32;  // candidates per launch (bounds the replicated q8 / output)

// softmax(q kᵀ s) v in fp64 on the GPU, [B, 1, Nq, D]; query rows in chunks to bound memory.
at::Tensor dense_fp64(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                      bool causal) {
  const int64_t nq = q.size(2), nk = k.size(2);
  at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  at::Tensor out = at::empty_like(qd);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 26) / std::max<int64_t>(nk, 1));
  for (int64_t r0 = 0; r0 < nq; r0 += chunk) {
    const int64_t rn = std::min(chunk, nq - r0);
    at::Tensor s = at::matmul(qd.narrow(2, r0, rn), kd.transpose(2, 3)) * scale;
    if (causal) {
      at::Tensor tq = at::arange(r0, r0 + rn, s.options().dtype(at::kLong)).view({-1, 1});
      at::Tensor tk = at::arange(nk, s.options().dtype(at::kLong)).view({1, -1});
      s.masked_fill_(tk > tq + (nk - nq), -INFINITY);
    }
    out.narrow(2, r0, rn).copy_(at::matmul(at::softmax(s, -1), vd));
  }
  return out;
}

// The per-candidate replica of a one-head Prepared: `heads` copies of the Q side.
Prepared replicate(const Prepared& base, int64_t heads) {
  Prepared p = base;
  p.heads = heads;
  auto rep = [&](const at::Tensor& t) {
    std::vector<int64_t> sizes(t.sizes().begin(), t.sizes().end());
    sizes[1] = heads;
    return t.expand(sizes).contiguous();
  };
  p.q8 = rep(base.q8);
  p.q_scale = rep(base.q_scale);
  p.q_pooled = rep(base.q_pooled);
  p.q_sim = rep(base.q_sim);
  return p;
}

class CudaHeadOracle final : public tune::HeadOracle {
 public:
  // All of this head's tensors and launches live on GPU `device`.
  CudaHeadOracle(tune::HeadRequest req, std::string kernel, int device)
      : geometry_(req.geometry), kernel_(std::move(kernel)), device_(at::kCUDA, device) {
    opts_.causal = req.attention.causal;
    opts_.sink = req.attention.sink;
    opts_.scale = req.attention.scale;
    SPARGE_ASSERT(!req.samples.empty(), "layer {} head {}: no calibration samples", req.layer,
                  req.head);
    const c10::cuda::CUDAGuard guard(device_);
    for (auto& s : req.samples) {
      auto up = [](const at::Tensor& t) {
        const at::ScalarType dt = t.scalar_type() == at::kBFloat16 ? at::kBFloat16 : at::kHalf;
        return t.to(at::kCUDA, dt).contiguous();
      };
      State st;
      at::Tensor q = up(s.q), k = up(s.k), v = up(s.v);
      st.base = quantize(q, k, v, geometry_, opts_);
      // The budget metric is against full-precision attention of the stored values.
      st.ref = dense_fp64(s.q.to(at::kCUDA), s.k.to(at::kCUDA), s.v.to(at::kCUDA), st.base.scale,
                          opts_.causal);
      st.ref_l1 = st.ref.abs().sum().item<double>();
      const at::Tensor valid =
          ref::causal_block_mask(st.base.seq_q, st.base.seq_k, geometry_, opts_.causal);
      st.valid_blocks = valid.sum().item<int64_t>() * st.base.batch;
      states_.push_back(std::move(st));
    }
  }

  std::vector<tune::Evaluation> evaluate(std::span<const tune::Candidate> cands) override {
    const c10::cuda::CUDAGuard guard(device_);
    std::vector<tune::Evaluation> out(cands.size());
    for (auto& st : states_) {
      for (size_t c0 = 0; c0 < cands.size(); c0 += kBatch) {
        const size_t cn = std::min<size_t>(kBatch, cands.size() - c0);
        const std::vector<Outcome> res = run_batch(st, cands.subspan(c0, cn));
        for (size_t i = 0; i < cn; ++i) out[c0 + i].add_sample(res[i].error, res[i].s1, res[i].s12);
      }
    }
    for (tune::Evaluation& e : out) e.finish();
    return out;
  }
  int num_samples() const override { return static_cast<int>(states_.size()); }
  long evaluations() const override { return evaluations_; }

 private:
  struct Outcome {
    double error = 0, s1 = 0, s12 = 0;
  };
  struct State {
    Prepared base;
    at::Tensor ref;
    double ref_l1 = 0;
    int64_t valid_blocks = 0;
    std::unordered_map<std::string, Outcome> cache;
  };

  std::vector<Outcome> run_batch(State& st, std::span<const tune::Candidate> cands) {
    const int64_t n = static_cast<int64_t>(cands.size());
    const auto dev = st.base.q8.device();
    std::vector<float> tau(n), theta(n), lambda(n), cap(n);
    bool capped = false;
    for (int64_t i = 0; i < n; ++i) {
      tau[i] = cands[i].tau;
      theta[i] = cands[i].theta;
      lambda[i] = cands[i].lambda;
      cap[i] = cands[i].sparsity_cap;
      capped = capped || cap[i] < 1.0f;
    }
    auto vec = [&](const std::vector<float>& x) {
      return at::tensor(at::ArrayRef<float>(x), at::kFloat).to(dev);
    };
    Prepared p = replicate(st.base, n);
    Options o = opts_;
    o.return_mask = true;
    // Top-k candidates carry the kept fraction in tau (tune::Candidate); a batch is one mode.
    const bool topk = n > 0 && cands[0].topk;
    for (int64_t i = 0; i < n; ++i) {
      SPARGE_ASSERT(cands[i].topk == topk, "cuda oracle: top-k and TopCdf candidates in one batch");
    }
    predict(p,
            Thresholds{vec(tau), vec(theta), at::Tensor(), topk ? vec(tau) : at::Tensor(),
                       capped ? vec(cap) : at::Tensor()},
            o);
    const at::Tensor mask = p.mask.cpu().contiguous();  // [B, n, nq, nk]
    const int64_t per = mask.numel() / mask.size(0) / n;

    // Cache keys: the candidate's mask (all batches) and λ bits.
    std::vector<std::string> keys(n);
    std::vector<int64_t> todo;
    std::vector<Outcome> res(n);
    const bool* mp = mask.data_ptr<bool>();
    for (int64_t i = 0; i < n; ++i) {
      std::string& key = keys[i];
      key.reserve(static_cast<size_t>(per * mask.size(0)) + 4);
      for (int64_t b = 0; b < mask.size(0); ++b) {
        const bool* row = mp + (b * n + i) * per;
        key.append(reinterpret_cast<const char*>(row), static_cast<size_t>(per));
      }
      const uint32_t lb = std::bit_cast<uint32_t>(lambda[i]);
      key.append(reinterpret_cast<const char*>(&lb), sizeof lb);
      auto it = st.cache.find(key);
      if (it != st.cache.end()) {
        res[i] = it->second;
      } else if (std::find_if(todo.begin(), todo.end(),
                              [&](int64_t j) { return keys[j] == key; }) == todo.end()) {
        todo.push_back(i);
      }
    }
    if (!todo.empty()) {
      const int64_t u = static_cast<int64_t>(todo.size());
      const at::Tensor idx = at::tensor(at::ArrayRef<int64_t>(todo), at::kLong).to(dev);
      Prepared a = replicate(st.base, u);
      a.causal = opts_.causal;
      a.lut = p.lut.index_select(1, idx).contiguous();
      a.lut_len = p.lut_len.index_select(1, idx).contiguous();
      std::vector<float> lam(u);
      for (int64_t t = 0; t < u; ++t) lam[t] = lambda[todo[t]];
      at::Tensor o_t =
          at::empty({a.batch, u, a.seq_q, a.head_dim}, at::TensorOptions(a.dtype).device(dev));
      const int64_t groups = geometry_.block_q / geometry_.warp_rows;
      at::Tensor stage2_kept =
          at::zeros({a.batch, u, a.num_q_blocks, groups}, at::TensorOptions(at::kInt).device(dev));
      try {
        run_attention(a, o_t, vec(lam), kernel_, stage2_kept);
      } catch (const Error& e) {  // a failure here is ours, not the user's input
        fail(ExitCode::kSoftware, "cuda oracle: {}", e.what());
      }
      evaluations_ += u;
      // Per candidate: rel-L1 (fp64), kept blocks, kept blocks stage 2 did not skip (block units).
      at::Tensor od = o_t.narrow(3, 0, st.base.head_dim_in).to(at::kDouble);
      at::Tensor err = (od - st.ref).abs().sum(at::IntArrayRef{0, 2, 3}) / st.ref_l1;
      at::Tensor kept = a.lut_len.sum(at::IntArrayRef{0, 2}).to(at::kDouble);
      at::Tensor kept2 =
          stage2_kept.sum(at::IntArrayRef{0, 2, 3}).to(at::kDouble) / static_cast<double>(groups);
      at::Tensor stats = at::stack({err, kept, kept2}).cpu();
      const auto sa = stats.accessor<double, 2>();
      for (int64_t t = 0; t < u; ++t) {
        Outcome oc;
        const double valid = static_cast<double>(st.valid_blocks);
        oc.error = sa[0][t];
        oc.s1 = valid > 0 ? 1.0 - sa[1][t] / valid : 0.0;
        oc.s12 = stage12_sparsity(valid, sa[1][t], sa[2][t]);
        st.cache.emplace(keys[todo[t]], oc);
      }
      for (int64_t i = 0; i < n; ++i) res[i] = st.cache.at(keys[i]);
    }
    return res;
  }

  ref::Geometry geometry_;
  std::string kernel_;
  Options opts_;
  at::Device device_;
  std::vector<State> states_;
  long evaluations_ = 0;
};

class CudaBackend final : public tune::OracleBackend {
 public:
  CudaBackend() {
    if (kernels::device_count() == 0)
      fail(ExitCode::kNoDevice, "backend cuda not available: no CUDA device");
  }
  std::string name() const override { return "cuda"; }
  std::string device() const override {
    if (devices_.size() <= 1) {
      return at::cuda::getDeviceProperties(devices_.empty() ? current() : devices_[0])->name;
    }
    std::string names;
    for (int d : devices_) names += (names.empty() ? "" : ", ") + std::to_string(d);
    return fmt::format("{} x {} (GPUs {})", devices_.size(),
                       at::cuda::getDeviceProperties(devices_[0])->name, names);
  }
  void use_devices(const std::vector<int>& devices) override {
    const int n = kernels::device_count();
    for (int d : devices) {
      if (d < 0 || d >= n)
        fail(ExitCode::kUsage, "--devices: GPU {} does not exist ({} visible)", d, n);
    }
    devices_ = devices;
  }
  // Each oracle fills the GPU with batched candidates, but between launches a head waits on
  // host work (HDF5 reads, the search's bookkeeping, result copies); 8 heads in flight hide it.
  // Measured on the H100 (2 layers x 32 heads x 2 samples, N = 17776, D = 64): jobs 1 / 2 / 4 /
  // 8 took 15.1 / 14.9 / 13.6 / 11.9 s, with byte-identical YAMLs.
  int preferred_jobs() const override { return 8; }
  std::vector<std::unique_ptr<tune::HeadOracle>> make_oracles(
      std::vector<tune::HeadRequest> heads) override {
    std::vector<std::unique_ptr<tune::HeadOracle>> out;
    for (auto& h : heads) {
      // Heads go round the devices in the order the driver asks for them; each head's result
      // depends only on its inputs (same kernels on the same GPU model), not on which GPU ran it.
      const int device =
          devices_.empty() ? current() : devices_[next_.fetch_add(1) % devices_.size()];
      const c10::cuda::CUDAGuard guard(device);
      const std::string kernel = resolve_kernel(h.geometry.name);
      out.push_back(std::make_unique<CudaHeadOracle>(std::move(h), kernel, device));
    }
    return out;
  }

 private:
  static int current() { return static_cast<int>(c10::cuda::current_device()); }
  std::vector<int> devices_;  // empty: the current device
  std::atomic<size_t> next_{0};
};

}  // namespace

void register_cuda_oracle() {
  tune::register_oracle_backend(
      "cuda", [] { return std::unique_ptr<tune::OracleBackend>(new CudaBackend()); });
}

}  // namespace sparge::runtime
