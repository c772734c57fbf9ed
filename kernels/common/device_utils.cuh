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

// Four fp32 -> int8 as the contract rounds them (round-half-to-even, clamped to the symmetric
// [-127, 127]), packed into a word, byte i = x_i. cvt.pack saturates to [-128, 127], so only the
// lower clamp is explicit; it also keeps -inf (x * 127 / amax with amax below ~4e-37, bf16) at
// -127 rather than -128. ptxas fuses cvt.rni and the cvt.pack pair into F2IP.S8 (float to packed
// int8): per four values 4 FMNMX + 2 F2IP where a clamp pair and byte shifts per value took ~4.
// A NaN, for which the contract defines no int8, becomes -127 here (0 through the clamp pair).
__device__ __forceinline__ uint32_t pack_int8x4(float x0, float x1, float x2, float x3) {
  const int v0 = __float2int_rn(fmaxf(x0, -127.f)), v1 = __float2int_rn(fmaxf(x1, -127.f));
  const int v2 = __float2int_rn(fmaxf(x2, -127.f)), v3 = __float2int_rn(fmaxf(x3, -127.f));
  uint32_t hi, w;
  // cvt.pack.sat.s8.s32.b32 d, a, b, c: d = c[15:0] << 16 | sat(a) << 8 | sat(b)
  asm("cvt.pack.sat.s8.s32.b32 %0, %1, %2, 0;" : "=r"(hi) : "r"(v3), "r"(v2));
  asm("cvt.pack.sat.s8.s32.b32 %0, %1, %2, %3;" : "=r"(w) : "r"(v1), "r"(v0), "r"(hi));
  return w;
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
