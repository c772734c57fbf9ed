#include "runtime/permute.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.hpp"
#include "reference/hilbert.hpp"

namespace sparge::runtime {

TokenPermutation TokenPermutation::from_host(const std::vector<int64_t>& perm, at::Device device) {
  const std::vector<int64_t> inv = ref::inverse_permutation(perm);  // validates perm
  const auto host = at::TensorOptions(at::kLong);
  TokenPermutation p;
  p.index = at::tensor(perm, host).to(device);
  p.inverse = at::tensor(inv, host).to(device);
  return p;
}

TokenPermutation TokenPermutation::hilbert(int T, int H, int W, int text_prefix, int text_suffix,
                                           at::Device device) {
  return from_host(ref::hilbert_permutation(T, H, W, text_prefix, text_suffix), device);
}

TokenPermutation TokenPermutation::from_device(const at::Tensor& index) {
  if (index.dim() != 1 || index.scalar_type() != at::kLong) {
    fail(ExitCode::kUsage, "token permutation: index must be int64 [N]");
  }
  TokenPermutation p;
  p.index = index;
  p.inverse = at::argsort(index);  // inverse[index[k]] = k for a permutation
  return p;
}

namespace {
void check(const at::Tensor& x, const TokenPermutation& p, const char* what) {
  if (x.dim() != 4 || x.size(2) != p.tokens()) {
    fail(ExitCode::kUsage, "{}: permutation of {} tokens applied to a tensor of shape {}", what,
         p.tokens(), fmt::join(x.sizes(), "x"));
  }
  if (x.device() != p.index.device()) {
    fail(ExitCode::kUsage, "{}: tensor on {}, permutation index on {}", what, x.device().str(),
         p.index.device().str());
  }
}
}  // namespace

at::Tensor permute_tokens(const at::Tensor& x, const TokenPermutation& p) {
  check(x, p, "permute_tokens");
  return x.index_select(2, p.index);
}

at::Tensor unpermute_tokens(const at::Tensor& o_perm, const TokenPermutation& p) {
  check(o_perm, p, "unpermute_tokens");
  return o_perm.index_select(2, p.inverse);
}

}  // namespace sparge::runtime
