// `sparge eval --save-masks OUT.h5`: the stage-1 block masks a tuned config predicts, per layer
// and sample, for inspection (h5py) and for benchmarking kernels at real densities.
//
//   /layers/NNN/samples/NNNN/mask   uint8 [B, H, nq, nk]  (1 = the Q·Kᵀ block product is computed)
//   root attributes: schema "sparge.masks", schema_version 1, block_q, block_k, kernel, causal,
//   permutation ("hilbert": blocks of the Hilbert-ordered sequence, as the kernel sees them;
//   "none": of the dump's order)
//   each mask: attributes block_q, block_k
#pragma once

#include <filesystem>
#include <optional>
#include <vector>

#include "config/tuned.hpp"

namespace sparge::tune {

// Writes atomically (temp + rename). Reads q, k of every listed layer/sample of `dump`.
void save_masks(const std::filesystem::path& dump, const config::TunedConfig& cfg,
                const std::vector<int>& layers, const std::optional<std::vector<int>>& samples,
                const std::filesystem::path& out);

}  // namespace sparge::tune
