// Host launch of the Hopper attention kernels (attention_sm90_kernel.cuh: warp-specialised
// pingpong, grid, serial; attention_sm90_wg.cuh: warpgroup): shared-memory attribute, tensor maps,
// grid and, for the persistent kernel, its tile counter. Included by the generated instance files
// (kernels/instances/), which instantiate launch_kernel<D, kernel>;
// attention_sm90.cu dispatches to them.
#pragma once

#include <cuda.h>  // CUtensorMap and the driver enums only: libcuda is reached through cudart
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>

#include "kernels/attention_sm90.cuh"
#include "kernels/attention_sm90_kernel.cuh"
#include "kernels/attention_sm90_wg.cuh"
#include "kernels/params.h"

namespace sparge::kernels::sm90 {

// Defined in attention_sm90.cu.
[[noreturn]] void invalid(const std::string& what);
CUtensorMap make_map(const void* base, uint64_t rows, uint64_t cols, uint32_t box_rows,
                     uint32_t box_cols, CUtensorMapSwizzle swizzle, const char* name);
int sm_count();  // of the current device, queried once per device

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string("attention_sm90: ") + what + ": " + cudaGetErrorString(e));
  }
}

// The dynamic shared-memory limit of kernel kKernel raised to `bytes`, once per process (each
// kernel instantiation is its own template argument, so its own once-flag).
template <auto kKernel>
void allow_shared_memory(int bytes) {
  static std::once_flag once;
  static cudaError_t err = cudaSuccess;
  std::call_once(once, [&] {
    err = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  });
  check_cuda(err, "cudaFuncSetAttribute");
}

struct TensorMaps {
  CUtensorMap q, k, v;
};
// Q boxes of q_rows x D (128: a tile, 64: a warpgroup's half), K boxes of 128 x D, V8ᵀ boxes of
// D x 128. Q/K rows are D bytes: D = 128 fills the 128-byte swizzle, D = 64 uses the 64-byte one.
template <int kD>
TensorMaps tensor_maps(const AttentionParams& p, uint32_t q_rows) {
  const CUtensorMapSwizzle qk_swizzle =
      kD == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
  const uint64_t nq = p.num_q_blocks, nk = p.num_k_blocks;
  return {
      make_map(p.q8, uint64_t(p.batch) * p.heads * nq * kBlockQ, kD, q_rows, kD, qk_swizzle, "q8"),
      make_map(p.k8, uint64_t(p.batch) * p.kv_heads * nk * kBlockK, kD, kBlockK, kD, qk_swizzle,
               "k8"),
      make_map(p.v, uint64_t(p.batch) * p.kv_heads * kD, nk * kBlockK, kD, kBlockK,
               CU_TENSOR_MAP_SWIZZLE_128B, "v8")};
}

template <int kD>
void launch_wg(const AttentionParams& p, cudaStream_t stream) {
  constexpr auto kernel = attention_kernel_wg<kD>;
  using Plan = WgPlan<kD>;
  // The block list grows with num_k_blocks (6 bytes per K block): the limit is the opt-in
  // maximum, while occupancy follows what this launch asks for.
  constexpr int kMaxSmem = 227 * 1024;
  const int bytes = Plan::alloc(p.num_k_blocks);
  if (p.num_k_blocks > Plan::kMaxBlocks || bytes > kMaxSmem) {
    invalid("warpgroup kernel: " + std::to_string(p.num_k_blocks) +
            " K blocks need more shared memory than an SM has; use sm90.pingpong");
  }
  allow_shared_memory<kernel>(kMaxSmem);
  const TensorMaps m = tensor_maps<kD>(p, kWgRows);
  const dim3 grid(2 * p.num_q_blocks, p.heads, p.batch);
  kernel<<<grid, kWgThreads, bytes, stream>>>(m.q, m.k, m.v, p);
  check_cuda(cudaGetLastError(), "launch failed");
}

template <int kD, Sm90Kernel kKernel>
void launch_warp_specialised(const AttentionParams& p, cudaStream_t stream) {
  using Plan = SmemPlan<kD, stages_of(kKernel)>;
  constexpr auto kernel = attention_kernel<kD, kKernel>;
  allow_shared_memory<kernel>(Plan::kAlloc);
  const TensorMaps m = tensor_maps<kD>(p, kBlockQ);
  if constexpr (!is_persistent(kKernel)) {
    const dim3 grid(p.num_q_blocks, p.heads, p.batch);
    kernel<<<grid, kThreads, Plan::kAlloc, stream>>>(m.q, m.k, m.v, p, nullptr);
    check_cuda(cudaGetLastError(), "launch failed");
  } else {
    // One CTA per SM (the kernel holds a whole SM). The tile counter is the caller's
    // (AttentionParams::tile_counter, left zero by the kernel), else stream-ordered memory of
    // this launch alone.
    const int sms = sm_count();
    const int tiles = p.batch * p.heads * p.num_q_blocks;
    const int ctas = std::min(tiles, p.max_ctas > 0 ? std::min(p.max_ctas, sms) : sms);
    int* counter = p.tile_counter;
    if (counter == nullptr) {
      check_cuda(cudaMallocAsync(&counter, 2 * sizeof(int), stream),
                 "cudaMallocAsync (tile counter)");
      check_cuda(cudaMemsetAsync(counter, 0, 2 * sizeof(int), stream),
                 "cudaMemsetAsync (tile counter)");
    }
    kernel<<<ctas, kThreads, Plan::kAlloc, stream>>>(m.q, m.k, m.v, p, counter);
    const cudaError_t launch_err = cudaGetLastError();
    if (p.tile_counter == nullptr) {
      check_cuda(cudaFreeAsync(counter, stream), "cudaFreeAsync (tile counter)");
    }
    check_cuda(launch_err, "launch failed");
  }
}

template <int kD, Sm90Kernel kKernel>
void launch_kernel(const AttentionParams& p, cudaStream_t stream) {
  if constexpr (is_one_warpgroup(kKernel)) {
    launch_wg<kD>(p, stream);
  } else {
    launch_warp_specialised<kD, kKernel>(p, stream);
  }
}

}  // namespace sparge::kernels::sm90
