// `--backend cuda`: the tuner's HeadOracle on the real prediction and kernels (cuda_oracle.cpp).
#pragma once

namespace sparge::runtime {

// Registers the "cuda" oracle backend (tune::register_oracle_backend), so that
// tune::make_oracle_backend("cuda") finds it. The CLI calls it once in main(); a program that tunes
// or evaluates on the GPU through the library calls it itself. Calling it again re-registers the
// same factory. The backend's constructor throws Error(kNoDevice) when no CUDA device is visible.
void register_cuda_oracle();

}  // namespace sparge::runtime
