// Plain CUDA device query for `sparge devices` and bench environment records. No torch, fmt,
// yaml or HDF5 here: src/ formats what this returns.
#pragma once

#include <cstddef>

namespace sparge::kernels {

struct DeviceInfo {
  int index = 0;
  char name[256] = {};
  char pci_bus_id[32] = {};  // "0000:01:00.0"
  int sm_major = 0, sm_minor = 0;
  int multiprocessors = 0;
  size_t total_memory_bytes = 0;
  int l2_cache_bytes = 0;
  int max_shared_memory_per_block_optin = 0;  // bytes; what a kernel may opt into
  int clock_khz = 0;                          // peak SM clock
  int memory_clock_khz = 0;                   // peak memory clock
  int memory_bus_width_bits = 0;
  int ecc_enabled = 0;
};

// Number of visible CUDA devices; 0 when there is no driver or no device (never throws).
int device_info_count();
// Fills `out` for device `index`; returns false (and leaves a message in `error`, if given, of
// up to `error_size` bytes) when the query fails.
bool query_device(int index, DeviceInfo* out, char* error = nullptr, size_t error_size = 0);
// CUDA driver / runtime versions as 1000 * major + 10 * minor (13000 = 13.0); 0 when unknown.
int cuda_driver_version();
int cuda_runtime_version();
// Comma-separated list of the SM architectures the kernels were compiled for, e.g. "80,90".
const char* compiled_cuda_archs();

}  // namespace sparge::kernels
