// Random block masks of a given density, in the kernels' LUT form (kernels/params.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "bench/cases.hpp"

namespace sparge::bench {

struct BlockMask {
  at::Tensor mask;           // bool  [B, H, nq, nk]  true = the QK^T block product is computed
  at::Tensor lut;            // int32 [B, H, nq, nk]  kept K block indices, ascending; rest = nk - 1
  at::Tensor lut_len;        // int32 [B, H, nq]      kept entries per row, >= 1
  int64_t valid_blocks = 0;  // causally valid (q block, k block) pairs, over B and H
  int64_t kept_blocks = 0;
  double density() const { return valid_blocks ? double(kept_blocks) / double(valid_blocks) : 0; }
};

// Causally valid block pairs, bool [nq, nk]: block (i, j) is valid iff its first key is visible
// to its last query (key t_k visible to query t_q iff t_k <= t_q + Nk - Nq). All true when not
// causal. Own copy rather than ref::causal_block_mask so the bench does not depend on the CPU
// reference being linked; a test checks the two agree.
at::Tensor causal_valid_blocks(int64_t seq_q, int64_t seq_k, int block_q, int block_k, bool causal);

// Every (b, h, q block) row keeps max(1, round(density * valid)) of its valid blocks, chosen
// uniformly at random by `seed` (a fixed count per row, so rows cost the same and the realised
// density equals the requested one up to rounding). On the CPU; the caller moves it.
BlockMask random_block_mask(const Case& c, int block_q, int block_k, uint64_t seed);

// Builds the LUT form from any bool mask [B, H, nq, nk] (e.g. a predicted one). Rows with no
// kept block are an error (Error kSoftware): the predictor guarantees >= 1.
BlockMask mask_to_lut(const at::Tensor& mask, const at::Tensor& valid);

}  // namespace sparge::bench
