// GPU runtime: at::Tensor in -> validated kernel parameters -> launches on torch's current CUDA
// stream. Prediction + quantisation (kernels/quant.cu, kernels/predict.cu) and the block-sparse
// attention kernels (kernels/attention_api.h). Nothing here synchronises the stream.
//
// Shapes: q [B, H, Nq, D], k and v [B, Hkv, Nk, D] (H % Hkv == 0; query head h uses kv head
// h / (H / Hkv)), any strides with a contiguous last dimension (HND or NHD views alike), fp16 or
// bf16, on one CUDA device. D in {64, 128} natively; other D <= 128 are zero padded to the next
// of those (padding changes no dot product; the softmax scale stays 1/sqrt(D)). Outputs follow
// kernels/params.h.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include <limits>
#include <string>
#include <vector>

#include "kernels/params.h"
#include "reference/reference.hpp"

namespace sparge::runtime {

// Per query head thresholds as fp32 device tensors [H] on the inputs' device. lambda and topk are
// optional (undefined: stage 2 off / TopCdf mode with tau).
struct Thresholds {
  at::Tensor tau, theta, lambda, topk;
  at::Tensor sparsity_cap;  // optional [H]: ref::Thresholds::sparsity_cap
  static Thresholds uniform(int64_t heads, float tau, float theta, at::Device device,
                            float lambda = -std::numeric_limits<float>::infinity());
  static Thresholds from_ref(const ref::Thresholds& t, at::Device device);
};

struct Options {
  bool causal = false;       // key tk visible to query tq iff tk <= tq + (Nk - Nq); Nq <= Nk
  bool sink = false;         // first K block always kept
  double scale = 0.0;        // softmax scale; 0 = 1/sqrt(D) of the unpadded head dim
  bool return_mask = false;  // also produce the bool block mask [B, H, nq, nk]
  // Benchmarking only: quantisation passes to run (kernels::kQuant* bits; default all).
  unsigned quant_stages = ~0u;
  // The token order the thresholds were tuned in (the Hilbert order, issue 16): int64 [Nq],
  // contiguous, on q's device; token n of that order is row token_order[n] of q (checked by
  // check_token_order in runtime/permute.hpp). quantize reads q through it, and k and v too when
  // Nk == Nq (keys of another length, e.g. text in cross-attention, are not on the grid and stay
  // in place, as the tuner left them); run_attention writes output row n to row token_order[n].
  // So the caller's tensors stay in their own order and no gathered copy is made; the prediction
  // statistics, LUT and mask are in the tuned order. Undefined: the inputs' own order.
  at::Tensor token_order;
};

// Everything the attention kernels need, plus the prediction statistics (for tests and tuning).
struct Prepared {
  ref::Geometry geometry;
  at::ScalarType dtype = at::kHalf;  // of the inputs and of the output
  int64_t batch = 0, heads = 0, kv_heads = 0, seq_q = 0, seq_k = 0;
  int64_t head_dim = 0;     // as run (64 or 128)
  int64_t head_dim_in = 0;  // as given (<= head_dim; the rest is zero padding)
  int64_t num_q_blocks = 0, num_k_blocks = 0;
  double scale = 0.0;  // softmax scale actually used
  bool causal = false;

  at::Tensor q8, q_scale, q_pooled, q_sim;  // [B,H,nq*bq,D] i8, [B,H,nq*bq], [B,H,nq,D], [B,H,nq]
  at::Tensor k8, k_scale, k_pooled, k_sim,
      k_mean;               // same for smoothed K (Hkv, nk); k_mean [B,Hkv,D]
  at::Tensor v;             // FP8 geometry: e4m3 [B,Hkv,D,nk*bk]; half: [B,Hkv,nk*bk,D] input dtype
  at::Tensor v_scale;       // [B,Hkv,D] fp32 (FP8 only)
  at::Tensor lut, lut_len;  // int32 [B,H,nq,nk], [B,H,nq]
  // int32 [2], zero: the persistent sm90 kernel's tile claims (kernels/params.h tile_counter),
  // which each launch leaves zero again, so no launch allocates or clears one. Hence two
  // launches of one Prepared must not overlap (keep them on one stream).
  at::Tensor tile_counter;
  at::Tensor mask;  // bool [B,H,nq,nk] when asked for
  // Options::token_order as quantised (undefined: none): the attention output of row n goes to
  // row token_order[n] of o (kernels/params.h o_rows).
  at::Tensor token_order;
};

// Block statistics + INT8/FP8 quantisation only (no LUT yet): 4 launches.
Prepared quantize(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const ref::Geometry& geometry, const Options& options);
// Stage-1 prediction from `prepared`'s statistics: fills lut, lut_len (and mask if asked). Can be
// called repeatedly with different thresholds (the tuner). 1 launch.
void predict(Prepared& prepared, const Thresholds& thresholds, const Options& options);
// quantize + predict (5 launches): the prediction runs on a high-priority stream of torch's pool
// beside the V pass, joined back into the current stream before this returns (so everything
// after it on the current stream sees the whole result, and CUDA graph capture follows the fork).
Prepared prepare(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const ref::Geometry& geometry, const Thresholds& thresholds,
                 const Options& options);
// A given block mask (any dtype, nonzero = keep, [B, H, nq, nk] of the geometry) instead of the
// prediction; ANDed with causal validity, an empty row keeps its last causally valid block.
Prepared prepare_with_mask(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& mask, const ref::Geometry& geometry,
                           const Options& options);

// The kernel to run: "sm90" (Hopper, i8f8: each head dim's fastest Hopper kernel), "sm90.NAME"
// (that Hopper kernel at every head dim: NAME = pingpong, warpgroup, or an experiment compiled
// with SPARGE_KERNEL_EXPERIMENTS; kernels/attention_sm90.cuh says what each does) or "sm80"
// (portable, i8f16). The part before the dot names the block geometry (kernel_geometry). "auto"
// picks sm90 on a compute capability 9.0 device when compiled in, else sm80. Errors
// (choose_kernel): an unknown name or a kernel this GPU cannot run (sm90 on an sm80 GPU) is
// Error(kUsage); no CUDA device, no kernel for this GPU under "auto", sm90 on a 9.0 GPU in a
// build without sm_90a, or a Hopper kernel this build did not compile is Error(kNoDevice).
std::string resolve_kernel(const std::string& kernel);
std::vector<std::string> available_kernels();
// The geometry name of a kernel name ("sm90.warpgroup" -> "sm90"); "auto" stays "auto".
std::string kernel_geometry(const std::string& kernel);
// Every kernel name this build knows: auto, sm90, sm80 and sm90.NAME of the compiled Hopper
// kernels (for --kernel's choices). Needs no device.
std::vector<std::string> kernel_names();

// What resolve_kernel knows of the current device, so the choice can be tested without one.
struct DeviceKernels {
  bool device = false;       // a CUDA device is visible
  int major = 0, minor = 0;  // its compute capability
  bool sm90_image = false;   // kernels::attention_sm90_available(): sm_90a code that runs on it
  // Hopper kernels compiled into the build (kernels::sm90_kernels_compiled()).
  std::vector<kernels::Sm90Kernel> sm90_kernels = {kernels::Sm90Kernel::kPingPong,
                                                   kernels::Sm90Kernel::kWarpgroup};
};
DeviceKernels current_device_kernels();
std::vector<std::string> available_kernels(const DeviceKernels& here);
std::string choose_kernel(const std::string& kernel, const DeviceKernels& here);

// Fills the attention kernels' parameters for `prepared`, writing into `o` ([B, H, Nq, head_dim]
// with any strides, contiguous last dim; rows in the inputs' order when prepared has a
// token_order). lambda: fp32 [H] device tensor in natural-log units or undefined (stage 2 off);
// its log2 copy is returned through `lambda_log2_storage`.
kernels::AttentionParams attention_params(const Prepared& prepared, const at::Tensor& o,
                                          const at::Tensor& lambda,
                                          at::Tensor& lambda_log2_storage);
// The one sm80/sm90 dispatch: launches the kernel `kernel` (as resolve_kernel names it) on filled
// parameters, asynchronously on `stream`, and turns the kernel API's exceptions into sparge
// errors: parameters the kernel cannot run (std::invalid_argument) are Error(kUsage), sm90 where
// it cannot run is classed as choose_kernel classes that choice, a failed launch is
// Error(kSoftware).
void launch_attention(const std::string& kernel, const kernels::AttentionParams& params,
                      cudaStream_t stream);
// Runs the kernel `kernel` (a resolve_kernel name whose geometry is prepared.geometry) into o
// (in the inputs' order: prepared.token_order scatters the rows back).
// stage2_kept: optional int32 [B, H, nq, block_q / warp_rows] device tensor (contiguous). The
// kernel overwrites each entry with the number of kept K blocks that row group did not skip in
// stage 2 (one plain store per group at the end; nothing accumulates across launches). On sm80
// that is the P·V products it ran; the default sm90 kernel issues P·V for every kept block and
// zeroes P for a skipping group, so there it counts skip decisions, not tensor-core work saved
// (docs/design.md, Stage 2).
void run_attention(const Prepared& prepared, const at::Tensor& o, const at::Tensor& lambda,
                   const std::string& kernel, const at::Tensor& stage2_kept = {});

// Sparsity over both stages in units of half a block pair: a block skipped by stage 1 saves
// QKᵀ and P·V (2 halves), a block whose P·V stage 2 skipped saves 1 half. `valid`: causally valid
// block pairs, `kept`: pairs the LUT kept, `stage2_kept`: kept pairs stage 2 did not skip (block
// units: the sum of run_attention's stage2_kept / (block_q / warp_rows)).
// Written as stage 1's 1 - kept / valid plus stage 2's share, so that it is never an ulp below
// the stage-1 figure.
inline double stage12_sparsity(double valid, double kept, double stage2_kept) {
  return valid > 0 ? (1.0 - kept / valid) + (kept - stage2_kept) / (2.0 * valid) : 0.0;
}

// The whole pipeline: predict + quantise + block-sparse attention. Returns [B, H, Nq, D] in the
// input dtype, laid out like q (HND or NHD strides), in q's token order (options.token_order
// only changes the order the prediction and the kernel see).
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const Thresholds& thresholds, const Options& options,
                     const std::string& kernel = "auto");

}  // namespace sparge::runtime
