#include "bench/masks.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "common/error.hpp"

namespace sparge::bench {

at::Tensor causal_valid_blocks(int64_t seq_q, int64_t seq_k, int block_q, int block_k,
                               bool causal) {
  const int64_t nq = (seq_q + block_q - 1) / block_q;
  const int64_t nk = (seq_k + block_k - 1) / block_k;
  if (!causal) return at::ones({nq, nk}, at::kBool);
  const int64_t offset = seq_k - seq_q;
  // Last query of block i: min((i + 1) * bq, Nq) - 1; first key of block j: j * bk.
  auto last_q =
      at::minimum(at::arange(1, nq + 1, at::kLong) * block_q, at::scalar_tensor(seq_q)) - 1;
  auto first_k = at::arange(nk, at::kLong) * block_k;
  return first_k.unsqueeze(0) <= (last_q + offset).unsqueeze(1);
}

BlockMask mask_to_lut(const at::Tensor& mask, const at::Tensor& valid) {
  SPARGE_ASSERT(mask.dim() == 4 && mask.scalar_type() == at::kBool, "mask must be bool 4-D");
  const int64_t nk = mask.size(3);
  BlockMask out;
  out.mask = mask.contiguous();
  auto len = out.mask.sum(-1, false, at::kInt);
  SPARGE_ASSERT(len.min().item<int>() >= 1, "a mask row keeps no block");
  // Sort keys: kept blocks by index first, dropped ones after (key nk + j), so the first lut_len
  // entries are the kept indices in ascending order.
  auto idx = at::arange(nk, at::kInt).expand_as(out.mask);
  auto key = at::where(out.mask, idx, idx + static_cast<int>(nk));
  auto sorted = std::get<0>(at::sort(key, -1));
  out.lut = at::where(sorted < nk, sorted, at::full({}, static_cast<int>(nk - 1), at::kInt))
                .to(at::kInt)
                .contiguous();
  out.lut_len = len.contiguous();
  out.kept_blocks = len.sum().item<int64_t>();
  out.valid_blocks = valid.sum().item<int64_t>() * mask.size(0) * mask.size(1);
  return out;
}

BlockMask random_block_mask(const Case& c, int block_q, int block_k, uint64_t seed) {
  const Shape& s = c.shape;
  auto valid = causal_valid_blocks(s.seq_q, s.seq_k, block_q, block_k, c.causal);
  const int64_t nq = valid.size(0), nk = valid.size(1);
  auto gen = at::detail::createCPUGenerator(seed);
  auto scores = at::rand({s.batch, s.heads, nq, nk}, gen, at::kFloat);
  // Invalid blocks sort last; keep the `want` highest-scoring valid blocks of each row.
  scores = at::where(valid, scores, at::full({}, -1.0f));
  auto valid_per_row = valid.sum(-1).to(at::kDouble);  // [nq]
  auto want = at::clamp_min(at::round(valid_per_row * c.density), 1).to(at::kLong);
  auto order = std::get<1>(at::sort(scores, -1, /*descending=*/true));
  auto rank = at::empty_like(order);
  rank.scatter_(-1, order, at::arange(nk, at::kLong).expand_as(order));
  auto mask = rank < want.view({1, 1, nq, 1});
  return mask_to_lut(mask, valid);
}

}  // namespace sparge::bench
