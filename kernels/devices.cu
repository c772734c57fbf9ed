// Device enumeration lives beside the kernels so the host library needs only this plain API.
#include <cuda_runtime.h>

#include "kernels/api.h"

namespace sparge::kernels {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

}  // namespace sparge::kernels
