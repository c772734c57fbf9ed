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

void check_token_order(const at::Tensor& index, int64_t tokens, at::Device device) {
  if (!index.defined()) fail(ExitCode::kUsage, "token order: undefined index tensor");
  if (index.dim() != 1 || index.size(0) != tokens || index.scalar_type() != at::kLong) {
    fail(ExitCode::kUsage, "token order: index {} [{}], expected int64 [{}] (one per query token)",
         c10::toString(index.scalar_type()), fmt::join(index.sizes(), "x"), tokens);
  }
  if (index.device() != device) {
    fail(ExitCode::kUsage, "token order: index on {}, q on {} (keep one index per device)",
         index.device().str(), device.str());
  }
  if (!index.is_contiguous()) {
    fail(ExitCode::kUsage, "token order: index is not contiguous (stride {})", index.stride(0));
  }
}

}  // namespace sparge::runtime
