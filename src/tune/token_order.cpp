#include "tune/token_order.hpp"

#include <fmt/format.h>

#include "common/error.hpp"
#include "reference/hilbert.hpp"

namespace sparge::tune {

TokenOrder make_token_order(const config::Permutation& record) {
  TokenOrder o;
  o.record = record;
  if (record.hilbert()) {
    o.perm = ref::hilbert_permutation(record.grid[0], record.grid[1], record.grid[2],
                                      record.text_prefix, record.text_suffix);
  }
  return o;
}

TokenOrder tune_token_order(const io::DumpInfo& info, bool causal, bool want_hilbert,
                            std::string* why) {
  if (why) why->clear();
  if (!want_hilbert || !info.grid) return {};
  if (causal) {
    if (why) *why = "causal attention: a token permutation would break causality";
    return {};
  }
  config::Permutation p;
  p.order = "hilbert";
  p.grid = *info.grid;
  p.text_prefix = info.text_prefix;
  p.text_suffix = info.text_suffix;
  return make_token_order(p);
}

TokenOrder config_token_order(const config::TunedConfig& cfg, const io::DumpInfo& info,
                              const std::string& config_source) {
  const auto& want = cfg.permutation;
  if (!want.hilbert()) return {};
  if (cfg.kernel.causal || info.causal) {
    fail(ExitCode::kConfigError,
         "{}: permutation: tuned with token order '{}', but attention is causal here: a "
         "permutation breaks causality; retune with --no-hilbert",
         config_source, config::describe(want));
  }
  config::Permutation have;
  if (info.grid) {
    have.order = "hilbert";
    have.grid = *info.grid;
    have.text_prefix = info.text_prefix;
    have.text_suffix = info.text_suffix;
  }
  config::check_permutation(want, have, config_source);
  return make_token_order(want);
}

namespace {
bool applies(const at::Tensor& x, const TokenOrder& order) {
  if (!order.active()) return false;
  if (x.dim() != 4) {
    fail(ExitCode::kSoftware, "token permutation: expected a [B, H, N, D] tensor, got rank {}",
         x.dim());
  }
  return x.size(2) == order.tokens();
}
}  // namespace

at::Tensor permute_tokens(const at::Tensor& x, const TokenOrder& order) {
  return applies(x, order) ? ref::apply_permutation(x, order.perm) : x;
}

at::Tensor unpermute_tokens(const at::Tensor& x, const TokenOrder& order) {
  return applies(x, order) ? ref::invert_permutation(x, order.perm) : x;
}

}  // namespace sparge::tune
