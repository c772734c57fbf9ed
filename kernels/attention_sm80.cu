// Host side of the portable sm_80+ attention kernel (kernels/attention_sm80.cuh): parameter
// checks and dispatch over the compiled (head dim, V dtype) instances (kernels/instances/).
#include <stdexcept>
#include <string>

#include "kernels/attention_api.h"
#include "kernels/attention_sm80.cuh"  // constants only; kernels live in instances/
#include "kernels/instances/attention_sm80_instances.h"

namespace sparge::kernels {
namespace {

[[noreturn]] void bad(const std::string& what) {
  throw std::invalid_argument("attention_sm80: " + what);
}

void check(const AttentionParams& p) {
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

}  // namespace

void launch_attention_sm80(const AttentionParams& params, cudaStream_t stream) {
  check(params);
  for (const sm80::Instance& inst : sm80::kInstances) {
    if (inst.head_dim == params.head_dim && inst.v_dtype == params.v_dtype)
      return inst.launch(params, stream);
  }
  std::string compiled;
  for (const sm80::Instance& inst : sm80::kInstances) {
    compiled += (compiled.empty() ? "" : ", ") + std::string(inst.name);
  }
  bad("head_dim " + std::to_string(params.head_dim) + " with V " +
      (params.v_dtype == DType::kBFloat16 ? "bf16" : "fp16") +
      " is not compiled (compiled: " + compiled + ")");
}

}  // namespace sparge::kernels
