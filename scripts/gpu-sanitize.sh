#!/usr/bin/env bash
# On the GPU machine, after a build of gpu_test_attention_sm90, gpu_test_attention_sm80 and
# gpu_test_runtime: compute-sanitizer memcheck, racecheck and synccheck over the small-shape
# kernel tests (every compiled sm90 kernel, sm80, and the runtime's prepare/predict/quantise
# path). Logs under $OUT/sanitize-*.log; exit 1 if any tool reports an error.
#
#   GPU_TARGETS='gpu_test_attention_sm90 gpu_test_attention_sm80 gpu_test_runtime' \
#     GPU_EXTRA=scripts/gpu-sanitize.sh scripts/gpu-check.sh -R RejectsBadParams
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[[ -x $CS ]] || { echo "gpu-sanitize: compute-sanitizer not found" >&2; exit 1; }
rc=0
run() {  # tool, binary, gtest filter
  local log="$OUT/sanitize-$1-$(basename "$2").log"
  timeout 240 "$CS" --tool "$1" --error-exitcode 9 "$2" --gtest_filter="$3" >"$log" 2>&1
  local r=$?
  echo "gpu-sanitize: $1 $(basename "$2") '$3': exit $r; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)"
  [[ $r -eq 0 ]] || rc=1
}
for tool in memcheck racecheck synccheck; do
  run "$tool" build/tests/gpu_test_attention_sm90 '*DenseModeAndLambdaOffAreExact*:*OutputLayoutsAndDtypes*:*PersistentGrid*'
  run "$tool" build/tests/gpu_test_attention_sm80 '*SmallForSanitizer*'
done
run memcheck build/tests/gpu_test_runtime 'RuntimeStreams.*:RuntimeValidation.*'
exit $rc
