// Device helpers shared by the kernels (read-only for everyone but the prediction/quantisation
// owner): 16-byte vector loads of fp16/bf16, fp8 e4m3 conversion, warp reductions, CUDA checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace sparge::kernels::dev {

// Eight fp16/bf16 values packed in a 16-byte word -> fp32 (exact).
template <typename T>
__device__ __forceinline__ void unpack8(const uint4 raw, float (&x)[8]) {
  const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (std::is_same_v<T, __half>) {
      const __half2 h = *reinterpret_cast<const __half2*>(&w[i]);
      const float2 f = __half22float2(h);
      x[2 * i] = f.x;
      x[2 * i + 1] = f.y;
    } else {
      const __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162*>(&w[i]);
      const float2 f = __bfloat1622float2(h);
      x[2 * i] = f.x;
      x[2 * i + 1] = f.y;
    }
  }
}

// Eight consecutive fp16/bf16 values as one 16-byte word: the unit of every coalesced load.
template <typename T>
__device__ __forceinline__ void load8(const T* __restrict__ p, float (&x)[8]) {
  unpack8<T>(__ldg(reinterpret_cast<const uint4*>(p)), x);
}

// Raw 16 bytes (no conversion), for plain copies.
__device__ __forceinline__ uint4 load16(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// fp32 -> e4m3, round to nearest even, saturating at +-448 (the FP8 P·V operand format).
__device__ __forceinline__ uint8_t to_e4m3(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

// fp32 -> int8 with round-half-to-even (cvt.rni), clamped to the symmetric range [-127, 127].
__device__ __forceinline__ int8_t to_int8(float x) {
  const int v = __float2int_rn(x);
  return static_cast<int8_t>(max(-127, min(127, v)));
}

template <int kWidth = 32>
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int kWidth = 32>
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Causal visibility at block level: some key of block j is visible to some query of block i
// (key t_k visible to query t_q iff t_k <= t_q + offset, offset = Nk - Nq >= 0).
__device__ __forceinline__ bool block_causally_valid(int i, int j, int block_q, int block_k,
                                                     int seq_q, int offset) {
  const int last_q = min((i + 1) * block_q, seq_q) - 1;
  return static_cast<long long>(j) * block_k <= static_cast<long long>(last_q) + offset;
}

}  // namespace sparge::kernels::dev
