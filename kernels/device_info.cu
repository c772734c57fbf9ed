// Device queries through the CUDA runtime's attribute API (CUDA 13 removed clockRate and friends
// from cudaDeviceProp, so every clock comes from cudaDeviceGetAttribute).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include "kernels/api.h"
#include "kernels/device_info.h"

namespace sparge::kernels {
namespace {

#define SPARGE_STR2(...) #__VA_ARGS__
#define SPARGE_STR(...) SPARGE_STR2(__VA_ARGS__)
#ifdef __CUDA_ARCH_LIST__
// nvcc defines __CUDA_ARCH_LIST__ (e.g. 800,900) on host and device passes alike; /10 -> SM.
constexpr const char* kArchList = SPARGE_STR(__CUDA_ARCH_LIST__);
#else
constexpr const char* kArchList = "";
#endif

void set_error(char* error, size_t size, const char* what, cudaError_t rc) {
  if (error && size > 0) std::snprintf(error, size, "%s: %s", what, cudaGetErrorString(rc));
}

}  // namespace

int device_info_count() { return device_count(); }

bool query_device(int index, DeviceInfo* out, char* error, size_t error_size) {
  *out = DeviceInfo{};
  out->index = index;
  cudaDeviceProp prop{};
  cudaError_t rc = cudaGetDeviceProperties(&prop, index);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    set_error(error, error_size, "cudaGetDeviceProperties", rc);
    return false;
  }
  std::strncpy(out->name, prop.name, sizeof(out->name) - 1);
  out->sm_major = prop.major;
  out->sm_minor = prop.minor;
  out->multiprocessors = prop.multiProcessorCount;
  out->total_memory_bytes = prop.totalGlobalMem;
  out->l2_cache_bytes = prop.l2CacheSize;
  out->max_shared_memory_per_block_optin = static_cast<int>(prop.sharedMemPerBlockOptin);
  out->ecc_enabled = prop.ECCEnabled;
  struct {
    cudaDeviceAttr attr;
    int* dst;
  } attrs[] = {{cudaDevAttrClockRate, &out->clock_khz},
               {cudaDevAttrMemoryClockRate, &out->memory_clock_khz},
               {cudaDevAttrGlobalMemoryBusWidth, &out->memory_bus_width_bits}};
  for (auto& a : attrs) {
    if (cudaDeviceGetAttribute(a.dst, a.attr, index) != cudaSuccess) {
      cudaGetLastError();
      *a.dst = 0;  // not reported by this driver: shown as unknown
    }
  }
  if (cudaDeviceGetPCIBusId(out->pci_bus_id, sizeof(out->pci_bus_id), index) != cudaSuccess) {
    cudaGetLastError();
    out->pci_bus_id[0] = '\0';
  }
  return true;
}

int cuda_driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

int cuda_runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

const char* compiled_cuda_archs() { return kArchList; }

}  // namespace sparge::kernels
