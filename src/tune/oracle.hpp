// The tuner's question, answered by a backend: "what error and sparsity does this head reach at
// these candidate thresholds on these calibration samples?" (docs/design.md, Calibration).
//
// The search (search.hpp) only talks to a HeadOracle, so it can be unit-tested on synthetic
// oracles and run unchanged on the CPU reference or the CUDA kernels. Calls are batched: the
// search asks for every θ of its grid at once (one candidate per θ per bisection step), so a GPU
// backend can launch them together.
//
// Backends are pluggable by name. "cpu" (the libtorch reference of src/reference/) is built in;
// another backend is registered by an explicit call of register_oracle_backend, e.g. the "cuda"
// one by runtime::register_cuda_oracle() (src/runtime/cuda_oracle.hpp), which the CLI's main()
// calls. `make_oracle_backend("cuda")` then finds it; without it: Error(kNoDevice) "backend cuda
// not available: built without GPU support or no device".
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "reference/reference.hpp"

namespace sparge::tune {

inline constexpr float kNoSkip =
    -std::numeric_limits<float>::infinity();  // λ that disables stage 2

// One point of the search space. tau in [0, 1], theta in [-1, 1] (sim > theta = similar),
// lambda <= 0 in natural-log units or -inf (stage 2 off).
//
// topk = true (SearchOptions::mode "topk", issue 16): `tau` is instead the fraction of causally
// valid K blocks each Q block row keeps (ref::Thresholds::topk), the same ordering (a larger
// value keeps a superset), so the search is unchanged. A fixed fraction fixes the blocks chosen
// by the predicted map, and a fixed TopCdf mass does not (it keeps more blocks of a flatter map),
// but the blocks θ forces on come on top in both and change with the input (held-out sparsity
// 0.019 to 0.249 for one top-k tune, reports/tune-real/holdout-dit.md).
struct Candidate {
  float tau = 1.0f;
  float theta = 1.0f;
  float lambda = kNoSkip;
  bool topk = false;
  // The most stage-1 sparsity the mask may reach (ref::Thresholds::sparsity_cap); 1 = none. The
  // search evaluates without it; `sparge eval` applies the tuned one.
  float sparsity_cap = 1.0f;
  friend bool operator==(const Candidate&, const Candidate&) = default;
};

// θ = 1 makes no block "similar" (sim > 1 is false), so every Q row and K column is forced on and
// the mask is dense whatever τ; τ = 1 as well. A head marked dense (`sparse: false`) carries
// exactly these values so that a consumer that ignores the flag still keeps every block.
inline constexpr Candidate kDenseCandidate{1.0f, 1.0f, kNoSkip};

// Error and sparsity of one candidate on all calibration samples of one head (or, for per-layer
// tuning, of all heads of a layer: then "worst" is over samples and heads, "mean" over both).
struct Evaluation {
  double error_worst = 0;                // max over samples of rel-L1 vs dense fp64 attention
  std::vector<double> error_per_sample;  // rel-L1 per calibration sample, in request order
  double sparsity_stage1_mean = 0;       // mean over samples of skipped QK^T / valid blocks
  double sparsity_stage12_mean = 0;      // mean over samples, stage 1 + stage-2 skipped P·V
  std::vector<double> sparsity_stage1_per_sample;
  std::vector<double> sparsity_stage12_per_sample;
  // 0: the per-sample vectors are one head's samples. n > 0: consecutive groups of n entries are
  // different heads (a per-layer combined oracle), and a spread is measured within a group.
  int group_size = 0;

  // Appends one calibration sample's outcome; error_worst follows.
  void add_sample(double error, double stage1, double stage12);
  // The means over the samples added so far (call once, after the last add_sample).
  void finish();
};

class HeadOracle {
 public:
  virtual ~HeadOracle() = default;
  // One Evaluation per candidate, in order. Must be deterministic (same candidate => same
  // result) and safe to call repeatedly; implementations may cache.
  virtual std::vector<Evaluation> evaluate(std::span<const Candidate> candidates) = 0;
  virtual int num_samples() const = 0;
  // Counts oracle work for reports: candidates evaluated (after caching) so far.
  virtual long evaluations() const { return 0; }
};

// The tensors of one query head on one calibration sample, as read from the dump:
//   q [B, 1, Nq, D] (this query head), k, v [B, 1, Nk, D] (its KV head, h / (H / Hkv)).
// One head at a time keeps the memory of a multi-GB layer bounded and matches the per-head
// thresholds; any dtype the dump holds (fp16/bf16/fp32), CPU tensors.
struct HeadSample {
  at::Tensor q, k, v;
};

struct HeadRequest {
  int layer = 0;
  int head = 0;                     // query head index in the layer
  std::vector<HeadSample> samples;  // calibration samples, in order
  ref::Geometry geometry;           // the kernel's block geometry (the predictor uses it)
  ref::AttentionOptions attention;  // causal, sink, scale
};

// A backend makes oracles. `make_oracles` receives several heads of one layer at once so a GPU
// backend can batch heads; the CPU backend builds one independent oracle per request. Oracles
// returned may be used from different threads concurrently (one thread per oracle).
class OracleBackend {
 public:
  virtual ~OracleBackend() = default;
  virtual std::string name() const = 0;
  virtual std::string device() const = 0;  // for provenance, e.g. "cpu (2 threads)" or GPU name
  // How many heads the driver should tune concurrently with this backend (0 = use --jobs).
  virtual int preferred_jobs() const { return 0; }
  // Spread the heads of later make_oracles calls over these GPU indices (`tune --devices`).
  // Backends that run on no GPU refuse any (Error(kUsage)).
  virtual void use_devices(const std::vector<int>& devices);
  virtual std::vector<std::unique_ptr<HeadOracle>> make_oracles(std::vector<HeadRequest> heads) = 0;
};

using OracleBackendFactory = std::function<std::unique_ptr<OracleBackend>()>;

// Registers a backend under `name` (a later registration of the same name replaces it). Returns
// true. A factory may throw Error(kNoDevice) when no device exists.
bool register_oracle_backend(const std::string& name, OracleBackendFactory factory);
// Names registered, sorted.
std::vector<std::string> oracle_backend_names();
// Throws Error(kNoDevice) "backend NAME not available: ..." when NAME is not registered.
std::unique_ptr<OracleBackend> make_oracle_backend(const std::string& name);

// The built-in CPU backend over the reference (also registered as "cpu"). Per head it
// precomputes once per sample: the dense fp64 reference output and the Q/K block statistics;
// each candidate then costs one mask prediction plus one quantised sparse attention, and
// candidates that yield an already evaluated (mask, λ) reuse its result.
std::unique_ptr<OracleBackend> make_cpu_backend();

}  // namespace sparge::tune
