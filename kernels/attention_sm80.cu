// Host side of the portable sm_80+ attention kernel (kernels/attention_sm80.cuh): parameter
// checks, dispatch over (head dim, V dtype), launch.
#include <stdexcept>
#include <string>

#include "kernels/attention_api.h"
#include "kernels/attention_sm80.cuh"

namespace sparge::kernels {
namespace {

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("attention_sm80: " + what);
}

void check(const AttentionParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128)
    bad("head_dim " + std::to_string(p.head_dim) + " is not compiled (64, 128)");
  if (p.batch < 1 || p.heads < 1 || p.kv_heads < 1 || p.heads % p.kv_heads != 0)
    bad("batch/heads/kv_heads " + std::to_string(p.batch) + "/" + std::to_string(p.heads) + "/" +
        std::to_string(p.kv_heads) + ": need >= 1 and heads % kv_heads == 0");
  if (p.seq_q < 1 || p.seq_k < 1) bad("empty sequence");
  const int nq = (p.seq_q + sm80::kBlockQ - 1) / sm80::kBlockQ;
  const int nk = (p.seq_k + sm80::kBlockK - 1) / sm80::kBlockK;
  if (p.num_q_blocks != nq || p.num_k_blocks != nk)
    bad("num_q_blocks/num_k_blocks " + std::to_string(p.num_q_blocks) + "/" +
        std::to_string(p.num_k_blocks) + " do not match the 128x64 geometry (" +
        std::to_string(nq) + "/" + std::to_string(nk) + ")");
  if (!p.q8 || !p.k8 || !p.v || !p.q_scale || !p.k_scale || !p.o)
    bad("a required pointer (q8, k8, v, q_scale, k_scale, o) is null");
  if (p.lut && !p.lut_len) bad("lut without lut_len");
  if (p.v_dtype != DType::kFloat16 && p.v_dtype != DType::kBFloat16)
    bad("v_dtype must be fp16 or bf16");
  if (p.causal && (p.causal_offset != p.seq_k - p.seq_q || p.causal_offset < 0))
    bad("causal needs seq_q <= seq_k and causal_offset == seq_k - seq_q");
  if (p.num_q_blocks > 2147483647 || p.heads > 65535 || p.batch > 65535) bad("grid too large");
}

template <int D, typename VT>
void launch(const AttentionParams& p, cudaStream_t stream) {
  constexpr int smem = sm80::SmemLayout<D>::kTotal;
  auto* kernel = sm80::attention_kernel<D, VT>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err == cudaSuccess) {
    kernel<<<dim3(p.num_q_blocks, p.heads, p.batch), sm80::kThreads, smem, stream>>>(p);
    err = cudaGetLastError();
  }
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("attention_sm80: launch failed: ") +
                             cudaGetErrorString(err));
}

}  // namespace

void launch_attention_sm80(const AttentionParams& params, cudaStream_t stream) {
  check(params);
  const bool bf16 = params.v_dtype == DType::kBFloat16;
  if (params.head_dim == 64) {
    bf16 ? launch<64, __nv_bfloat16>(params, stream) : launch<64, __half>(params, stream);
  } else {
    bf16 ? launch<128, __nv_bfloat16>(params, stream) : launch<128, __half>(params, stream);
  }
}

}  // namespace sparge::kernels
