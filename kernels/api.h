// The host-visible kernel API: plain structs and launch functions. Included by src/runtime; no
// torch, fmt, yaml or HDF5 here.
#pragma once

namespace sparge::kernels {

// Number of visible CUDA devices; 0 when there is no driver or no device.
int device_count();

}  // namespace sparge::kernels
