// The host-visible kernel API: plain structs and launch functions. Included by src/runtime; no
// torch, fmt, yaml or HDF5 here. Attention launchers live in kernels/attention_api.h.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention_api.h"
#include "kernels/params.h"

namespace sparge::kernels {

// Number of visible CUDA devices; 0 when there is no driver or no device.
int device_count();

// A [B, H, N, D] input with element strides (last dimension contiguous): HND and NHD views of
// the caller's tensors are read in place, no copy.
//
// rows (optional, int64 [N], device memory): the token order the kernels see. Token n of that
// order is row rows[n] of the input, so a permuted sequence (the Hilbert order a config was tuned
// in) is gathered by the loads themselves instead of by a copy of the tensor. Must be a
// permutation of 0..N-1; not checked on the device (the runtime's callers build it with
// ref::hilbert_permutation). nullptr: the input's own order.
struct InputView {
  const void* ptr = nullptr;
  int64_t stride_b = 0, stride_h = 0, stride_n = 0;
  const int64_t* rows = nullptr;
};

// Prediction statistics + quantisation of Q, K, V (layouts in kernels/params.h).
struct QuantParams {
  DType dtype = DType::kFloat16;  // of q, k, v (fp16 or bf16)
  InputView q, k, v;
  int batch = 0, heads = 0, kv_heads = 0, seq_q = 0, seq_k = 0, head_dim = 0;  // D in {64, 128}
  int block_q = 128, block_k = 128;                                            // each in {64, 128}
  int num_q_blocks = 0, num_k_blocks = 0;

  // Outputs. Q: q8 [B,H,nq*bq,D], q_scale [B,H,nq*bq] (per row), q_sim [B,H,nq],
  // q_pooled [B,H,nq,D].
  int8_t* q8 = nullptr;
  float *q_scale = nullptr, *q_pooled = nullptr, *q_sim = nullptr;
  // K (smoothed): k8 [B,Hkv,nk*bk,D], k_scale/k_sim [B,Hkv,nk], k_pooled [B,Hkv,nk,D],
  // k_mean [B,Hkv,D].
  int8_t* k8 = nullptr;
  float *k_scale = nullptr, *k_pooled = nullptr, *k_sim = nullptr, *k_mean = nullptr;
  // V: v_fp8 ? v8 e4m3 [B,Hkv,D,nk*bk] + v_scale [B,Hkv,D] : vh [B,Hkv,nk*bk,D] (input dtype).
  // v_out == nullptr skips V.
  bool v_fp8 = true;
  void* v_out = nullptr;
  float* v_scale = nullptr;

  // Scratch of quant_workspace_floats(*this) floats (per-chunk partial sums and maxima).
  float* workspace = nullptr;
  // Benchmarking only: run a subset of the passes (kQuant* bits below).
  unsigned stages = ~0u;
};
inline constexpr unsigned kQuantColStats = 1, kQuantFinalize = 2, kQuantBlocks = 4, kQuantV = 8;
size_t quant_workspace_floats(const QuantParams& p);
// Four launches on `stream`: K/V column statistics, their finalisation (K mean, V scale), the
// fused Q/K block pass (pooling, self-similarity, INT8), and the V pass. Returns the first
// launch error (cudaSuccess otherwise).
cudaError_t launch_quantize(const QuantParams& p, cudaStream_t stream);

// Stage-1 prediction from block statistics -> LUT (+ optional bool mask).
struct PredictParams {
  const float *q_pooled = nullptr, *q_sim = nullptr;  // [B,H,nq,D], [B,H,nq]
  const float *k_pooled = nullptr, *k_sim = nullptr;  // [B,Hkv,nk,D], [B,Hkv,nk] (smoothed K)
  const float* tau = nullptr;                         // [H] TopCdf mass
  const float* theta = nullptr;  // [H] similarity threshold (sim > theta = similar)
  const float* topk = nullptr;   // [H] fraction of causally valid K blocks; nullptr = TopCdf
  int batch = 0, heads = 0, kv_heads = 0, seq_q = 0, seq_k = 0, head_dim = 0;
  int block_q = 128, block_k = 128, num_q_blocks = 0, num_k_blocks = 0;
  float scale = 0.f;  // softmax scale of the compressed map
  bool causal = false, sink = false;
  int32_t* lut = nullptr;      // [B,H,nq,nk]: kept K blocks ascending, zero after lut_len
  int32_t* lut_len = nullptr;  // [B,H,nq]
  uint8_t* mask = nullptr;     // optional bool [B,H,nq,nk]
};
constexpr int kMaxPredictKBlocks = 1024;  // nk limit of the prediction kernel (N = 128K at 128)
// Optional per-head sparsity cap (the reference's Thresholds::sparsity_cap): the most stage-1
// sparsity a (b, h) mask may reach. Kept apart from PredictParams: a larger parameter struct
// made the uncapped kernel spill (48 registers and a 16-byte stack frame instead of 40 and none).
struct PredictCap {
  const float* sparsity_cap = nullptr;  // [H]; nullptr = no cap
  void* scratch = nullptr;              // predict_cap_scratch_bytes(p) bytes
};
// Bytes of PredictCap::scratch for these dimensions (each row's cumulative p̂ and candidate
// order, its kept prefix, and per (b, h) the kept and valid counts and the selection).
size_t predict_cap_scratch_bytes(const PredictParams& p);
cudaError_t launch_predict(const PredictParams& p, cudaStream_t stream, const PredictCap& cap = {});

// A given bool/uint8 mask [B,H,nq,nk] (contiguous; nonzero = keep) -> LUT, after AND with causal
// validity; an empty row keeps its last causally valid block. Uses the geometry fields of p; the
// statistics and threshold pointers are ignored.
cudaError_t launch_mask_to_lut(const PredictParams& p, const uint8_t* mask, cudaStream_t stream);

}  // namespace sparge::kernels
