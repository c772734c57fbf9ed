// Oracle backend registry and the built-in CPU backend over the reference.
#include "tune/oracle.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>

#include "common/error.hpp"

namespace sparge::tune {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, OracleBackendFactory> factories;
};
Registry& registry() {
  static Registry r;  // function-local: safe from other files' static initialisers
  return r;
}

// One query head on its calibration samples, with everything that does not depend on the
// candidate computed once.
class CpuHeadOracle final : public HeadOracle {
 public:
  explicit CpuHeadOracle(HeadRequest req) : geometry_(req.geometry), attention_(req.attention) {
    SPARGE_ASSERT(!req.samples.empty(), "layer {} head {}: no calibration samples", req.layer,
                  req.head);
    for (auto& s : req.samples) {
      SPARGE_ASSERT(s.q.dim() == 4 && s.q.size(1) == 1 && s.k.dim() == 4 && s.k.size(1) == 1,
                    "layer {} head {}: expected one-head [B, 1, N, D] tensors", req.layer,
                    req.head);
      State st;
      st.q = s.q;
      st.k = s.k;
      st.v = s.v;
      st.nq_tokens = s.q.size(2);
      st.nk_tokens = s.k.size(2);
      st.ref = ref::dense_attention(s.q, s.k, s.v, attention_, at::kDouble);
      st.q_stats = ref::q_block_stats(s.q, geometry_.block_q);
      st.k_stats = ref::k_block_stats(s.k, geometry_.block_k);
      states_.push_back(std::move(st));
    }
  }

  std::vector<Evaluation> evaluate(std::span<const Candidate> cands) override {
    std::vector<Evaluation> out;
    out.reserve(cands.size());
    for (const auto& c : cands) {
      Evaluation e;
      for (auto& st : states_) {
        const Outcome& o = outcome(st, c);
        e.add_sample(o.error, o.s1, o.s12);
      }
      e.finish();
      out.push_back(std::move(e));
    }
    return out;
  }
  int num_samples() const override { return static_cast<int>(states_.size()); }
  long evaluations() const override { return attention_calls_; }

 private:
  struct Outcome {
    double error = 0, s1 = 0, s12 = 0;
  };
  struct State {
    at::Tensor q, k, v, ref;
    int64_t nq_tokens = 0, nk_tokens = 0;
    ref::BlockStats q_stats, k_stats;
    // Keyed by (mask bytes, λ bits): many τ of a bisection give the same mask, and the
    // attention (the expensive part) only depends on the mask and λ.
    std::unordered_map<std::string, Outcome> cache;
  };

  const Outcome& outcome(State& st, const Candidate& c) {
    auto thr = ref::Thresholds::uniform(1, c.tau, c.theta, c.lambda);
    if (c.topk) thr.topk = {c.tau};
    if (c.sparsity_cap < 1.0f) thr.sparsity_cap = {c.sparsity_cap};
    at::Tensor mask = ref::predict_block_mask(st.q_stats, st.k_stats, st.nq_tokens, st.nk_tokens,
                                              geometry_, thr, attention_)
                          .to(at::kBool)
                          .contiguous();
    std::string key(static_cast<size_t>(mask.numel()) + sizeof(float), '\0');
    std::memcpy(key.data(), mask.data_ptr<bool>(), static_cast<size_t>(mask.numel()));
    const uint32_t lbits = std::bit_cast<uint32_t>(c.lambda);
    std::memcpy(key.data() + mask.numel(), &lbits, sizeof lbits);
    auto it = st.cache.find(key);
    if (it != st.cache.end()) return it->second;
    auto res = ref::sparse_attention(st.q, st.k, st.v, mask, {c.lambda}, geometry_, attention_);
    ++attention_calls_;
    Outcome o;
    o.error = ref::compare(res.o.to(at::kDouble), st.ref).rel_l1;
    o.s1 = res.sparsity_stage1();
    o.s12 = res.sparsity_stage12();
    return st.cache.emplace(std::move(key), o).first->second;
  }

  ref::Geometry geometry_;
  ref::AttentionOptions attention_;
  std::vector<State> states_;
  long attention_calls_ = 0;
};

class CpuBackend final : public OracleBackend {
 public:
  std::string name() const override { return "cpu"; }
  // No thread count or host name: the tuned YAML must be byte-identical across runs.
  std::string device() const override { return "cpu"; }
  std::vector<std::unique_ptr<HeadOracle>> make_oracles(std::vector<HeadRequest> heads) override {
    std::vector<std::unique_ptr<HeadOracle>> out;
    for (auto& h : heads) out.push_back(std::make_unique<CpuHeadOracle>(std::move(h)));
    return out;
  }
};

}  // namespace

void Evaluation::add_sample(double error, double stage1, double stage12) {
  error_per_sample.push_back(error);
  sparsity_stage1_per_sample.push_back(stage1);
  sparsity_stage12_per_sample.push_back(stage12);
  error_worst = std::max(error_worst, error);
}

void Evaluation::finish() {
  auto mean = [](const std::vector<double>& v) {
    double sum = 0;
    for (double x : v) sum += x;
    return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
  };
  sparsity_stage1_mean = mean(sparsity_stage1_per_sample);
  sparsity_stage12_mean = mean(sparsity_stage12_per_sample);
}

bool register_oracle_backend(const std::string& name, OracleBackendFactory factory) {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  r.factories[name] = std::move(factory);
  return true;
}

std::vector<std::string> oracle_backend_names() {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<std::string> names{"cpu"};
  for (const auto& [n, f] : r.factories) {
    if (n != "cpu") names.push_back(n);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::unique_ptr<OracleBackend> make_oracle_backend(const std::string& name) {
  OracleBackendFactory factory;
  {
    auto& r = registry();
    std::lock_guard lock(r.mu);
    auto it = r.factories.find(name);
    if (it != r.factories.end()) factory = it->second;
  }
  if (factory) return factory();
  if (name == "cpu") return make_cpu_backend();
  fail(ExitCode::kNoDevice, "backend {} not available: built without GPU support or no device",
       name);
}

void OracleBackend::use_devices(const std::vector<int>& devices) {
  if (!devices.empty()) {
    fail(ExitCode::kUsage, "--devices: backend {} does not run on GPUs (use --backend cuda)",
         name());
  }
}

std::unique_ptr<OracleBackend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace sparge::tune
