// Host entry points of the block-sparse quantised attention kernels. Plain C++ (no torch, fmt,
// yaml or HDF5): src/runtime fills an AttentionParams (kernels/params.h) and calls one of these.
//
// Shared conventions of both paths:
//   - Inputs follow the layouts in kernels/params.h, padded with zeros to whole blocks of the
//     kernel's geometry ("sm80": block_q 128, block_k 64; "sm90": 128 x 128, see
//     attention_sm90.cuh).
//   - params.lut == nullptr selects the dense mode: every causally valid K block is visited, in
//     ascending order (the same result as a full LUT, without building it).
//   - A launch with parameters the kernel cannot run (head dim not compiled, inconsistent sizes,
//     missing pointers) throws std::invalid_argument; a CUDA launch failure throws
//     std::runtime_error with the CUDA error string. Both messages start with the kernel's name.
//   - Launches are asynchronous on `stream`; nothing is synchronised.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "kernels/params.h"

namespace sparge::kernels {

// Portable path (sm_80+, mma.sync, "i8f16": INT8 QK^T, fp16/bf16 P·V with fp32 accumulation).
void launch_attention_sm80(const AttentionParams& params, cudaStream_t stream);

// Hopper path (sm_90a, wgmma). Implemented in kernels/attention_sm90.cu.
void launch_attention_sm90(const AttentionParams& params, cudaStream_t stream);
// True when the sm_90a kernels are compiled into this build and the current device can run them.
bool attention_sm90_available();
// Name of a Hopper kernel ("default", "pingpong", "warpgroup", "serial", "grid").
const char* sm90_kernel_name(Sm90Kernel kernel);
// The kernel a name denotes; false for a name that is no Hopper kernel.
bool parse_sm90_kernel(const char* name, Sm90Kernel* kernel);
// The Hopper kernels compiled into this build (kDefault excluded), in the order of the enum.
// Needs no device.
std::vector<Sm90Kernel> sm90_kernels_compiled();
// The kernel kDefault runs at head dim `head_dim`.
Sm90Kernel sm90_default_kernel(int head_dim);

}  // namespace sparge::kernels
