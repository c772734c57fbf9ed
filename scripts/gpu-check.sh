#!/usr/bin/env bash
# One call on the GPU machine: configure against the preinstalled libraries and torch, build with
# all cores, run the GPU-labelled tests, then optional extra commands; logs go to $OUT.
#
#   scripts/gpu-check.sh                      # build + all GPU tests
#   scripts/gpu-check.sh -R 'Predict|Attn'    # only matching GPU tests (ctest -R)
#   GPU_EXTRA='build/src/sparge bench ...' scripts/gpu-check.sh   # then run these commands
#   GPU_TARGETS='gpu_test_attention sparge' scripts/gpu-check.sh  # build only these targets
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
t0=$(date +%s)
{
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv
  nvcc --version | tail -2
  cmake --version | head -1
} 2>&1 | tee "$OUT/env.txt"

export SPARGE_SKIP_DEPS=1 SPARGE_BUILD_DIR=$PWD/build
if [[ -n "${GPU_TARGETS:-}" ]]; then
  cmake -S . -B build -G Ninja -DPython3_EXECUTABLE="$(command -v python3)" \
    -DSPARGE_CUDA_ARCHS="${SPARGE_CUDA_ARCHS:-90a;80}" >"$OUT/configure.log" 2>&1 ||
    { tail -40 "$OUT/configure.log"; exit 1; }
  # shellcheck disable=SC2086
  cmake --build build -j "$(nproc)" --target $GPU_TARGETS 2>&1 | tee "$OUT/build.log" | tail -30
  build_rc=${PIPESTATUS[0]}
else
  SPARGE_CMAKE_ARGS="-DSPARGE_CUDA_ARCHS=${SPARGE_CUDA_ARCHS:-90a;80}" scripts/setup.sh \
    2>&1 | tee "$OUT/build.log" | tail -30
  build_rc=${PIPESTATUS[0]}
fi
t1=$(date +%s)
echo "gpu-check: build rc=$build_rc in $((t1 - t0)) s" | tee -a "$OUT/summary.txt"
[[ $build_rc -eq 0 ]] || exit 1

ctest_args=(--test-dir build -L gpu --output-on-failure --timeout 300)
[[ $# -gt 0 ]] && ctest_args+=("$@")
ctest "${ctest_args[@]}" 2>&1 | tee "$OUT/ctest-gpu.log" | tail -40
test_rc=${PIPESTATUS[0]}
t2=$(date +%s)
echo "gpu-check: gpu tests rc=$test_rc in $((t2 - t1)) s" | tee -a "$OUT/summary.txt"

if [[ -n "${GPU_EXTRA:-}" ]]; then
  bash -c "$GPU_EXTRA" 2>&1 | tee "$OUT/extra.log" | tail -60
  echo "gpu-check: extra rc=${PIPESTATUS[0]} in $(($(date +%s) - t2)) s" | tee -a "$OUT/summary.txt"
fi
exit "$test_rc"
