// The token order tune, eval and `eval --save-masks` run a dump in (issue 16): the generalised
// Hilbert order of ref::hilbert_permutation for gridded (video/image) dumps, or the dump's own.
//
// Applied where the calibration samples are read (tuner.cpp load_head), so every backend's
// oracle, and the kernel self-check built on run_eval, sees permuted Q/K/V: the block mask is
// predicted and the kernel runs on the permuted sequence, exactly as the inference side will.
// The dense fp64 reference is computed from the same permuted tensors; the error metric (rel-L1
// summed over every element) is invariant under a permutation of the rows applied to both
// outputs, and non-causal attention is permutation-equivariant (dense(Pq, Pk, Pv) = P dense(q,
// k, v): each output row is a function of its own query and the *set* of keys), so comparing in
// permuted order equals inverting the output and comparing in the original order up to fp64
// summation order (tests/cpu/token_order_test.cpp checks both ways agree to 1e-9).
// Causal attention is not equivariant (a permutation breaks causality): causal dumps are never
// permuted.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "config/tuned.hpp"
#include "io/dump.hpp"

namespace sparge::tune {

struct TokenOrder {
  config::Permutation record;  // what the config says ("none" or hilbert + grid)
  std::vector<int64_t> perm;   // perm[k] = original index of token k; empty: natural order
  bool active() const { return !perm.empty(); }
  int64_t tokens() const { return static_cast<int64_t>(perm.size()); }
};

// The order `sparge tune` uses for a dump: Hilbert when the dump has a grid, attention is not
// causal and `want_hilbert` (the default; --no-hilbert turns it off); else natural. `why` gets
// a one-line reason when Hilbert was wanted but cannot be used (empty otherwise).
TokenOrder tune_token_order(const io::DumpInfo& info, bool causal, bool want_hilbert,
                            std::string* why = nullptr);

// The order a tuned config asks for, checked against the dump: a config tuned with Hilbert
// needs a non-causal dump with the same grid and text tokens. Error(kConfigError) naming
// `config_source` otherwise.
TokenOrder config_token_order(const config::TunedConfig& cfg, const io::DumpInfo& info,
                              const std::string& config_source);

// The order of a recorded permutation (no dump check).
TokenOrder make_token_order(const config::Permutation& record);

// x [B, H, N, D]: x[:, :, perm, :] when N equals the permutation's length; unchanged otherwise
// (a sequence of another length, e.g. the text keys of a cross-attention layer, is not on the
// grid). unpermute_tokens is the inverse on the output side.
at::Tensor permute_tokens(const at::Tensor& x, const TokenOrder& order);
at::Tensor unpermute_tokens(const at::Tensor& x, const TokenOrder& order);

}  // namespace sparge::tune
