#!/usr/bin/env bash
# On the GPU machine: a same-machine A/B of two CMake configurations of this tree (a kernel
# experiment behind an option against the shipped code). Builds build-a and build-b, runs the
# GPU tests matching AB_TESTS on B, then `sparge bench ARGS` A B A B ... (AB_ROUNDS rounds, so
# that a drift of the machine shows as a trend, not as a difference), and `sparge report` of
# each round's A against its B. Results under $OUT/ab.
#
#   AB_B='-DSPARGE_KERNEL_EXPERIMENTS=ON' scripts/gpu-ab.sh \
#     --shape 1,32,32768,128 --shape 2,30,17776,64 --density 0.1 --no-baselines
#
# AB_A / AB_B: extra CMake arguments of each side (default none: A is the shipped build).
# AB_SRC_A / AB_SRC_B: build that side from another source tree: a tar of it, which
# scripts/ab-tree.sh makes from a commit or branch (the GPU machine's copy of this tree has no
# history), or a directory. E.g. main against a branch (kernels/NOTES.md runs 27-31 ran so):
#
#   scripts/ab-tree.sh main ab/a.tar && scripts/ab-tree.sh quant-pack-sat ab/b.tar   # here
#   AB_SRC_A=ab/a.tar AB_SRC_B=ab/b.tar AB_TESTS=Quant scripts/gpu-ab.sh --shape ...  # GPU
#
# AB_ROUNDS (default 2), AB_TESTS (ctest -R regex of GPU tests to run on B; empty: none) and
# AB_TEST_TARGETS (the test executables B builds for them; default quant, predict and runtime),
# SPARGE_CUDA_ARCHS (default 90a: the Hopper kernels only, to halve the build).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/out}
R=$OUT/ab
mkdir -p "$R"
if [[ $# -eq 0 ]]; then
  echo "usage: [AB_A=...] AB_B=... scripts/gpu-ab.sh SPARGE_BENCH_ARGS..." >&2
  exit 2
fi
rounds=${AB_ROUNDS:-2}
# The tests run on B only, so only B builds them.
targets_b=sparge
[[ -n "${AB_TESTS:-}" ]] &&
  targets_b="sparge ${AB_TEST_TARGETS:-gpu_test_quant gpu_test_predict gpu_test_runtime}"

# The source tree of a side: this one, AB_SRC_<SIDE>'s directory, or its tar unpacked.
src_of() {
  local var="AB_SRC_${1^^}"
  local src=${!var:-}
  if [[ -z $src ]]; then
    echo .
  elif [[ -d $src ]]; then
    echo "$src"
  else
    rm -rf "ab-src-$1" && mkdir -p "ab-src-$1" && tar -xf "$src" -C "ab-src-$1" && echo "ab-src-$1"
  fi
}

# build <side> <targets> <extra cmake args...>; targets and arguments are word lists on purpose.
# shellcheck disable=SC2086
build() {
  local side=$1 targets=$2 src
  shift 2
  src=$(src_of "$side") || return 1
  cmake -S "$src" -B "build-$side" -G Ninja -DPython3_EXECUTABLE="$(command -v python3)" \
    -DSPARGE_CUDA_ARCHS="${SPARGE_CUDA_ARCHS:-90a}" "$@" >"$R/configure-$side.log" 2>&1 &&
    cmake --build "build-$side" -j "$(nproc)" --target $targets >"$R/build-$side.log" 2>&1
}
t0=$(date +%s)
# shellcheck disable=SC2086
build a sparge ${AB_A:-} || { tail -20 "$R/build-a.log"; exit 1; }
# shellcheck disable=SC2086
build b "$targets_b" ${AB_B:-} || { tail -20 "$R/build-b.log"; exit 1; }
side_a="${AB_SRC_A:-this tree} ${AB_A:-}" side_b="${AB_SRC_B:-this tree} ${AB_B:-}"
echo "gpu-ab: built A ($side_a) and B ($side_b) in $(($(date +%s) - t0)) s" | tee "$R/summary.txt"

rc=0
if [[ -n "${AB_TESTS:-}" ]]; then
  ctest --test-dir build-b -L gpu -R "$AB_TESTS" --output-on-failure --timeout 300 \
    >"$R/ctest-b.log" 2>&1 || rc=1
  tail -3 "$R/ctest-b.log" | tee -a "$R/summary.txt"
fi

for r in $(seq 1 "$rounds"); do
  for side in a b; do
    build-$side/src/sparge --no-progress bench "$@" -o "$R/$side$r.json" --format md \
      >"$R/$side$r.md" 2>&1 || rc=1
  done
  # exit 1 of report means "B slower somewhere": a finding, not a failure of this script
  build-a/src/sparge report "$R/a$r.json" "$R/b$r.json" >"$R/report$r.md" 2>&1
  echo "gpu-ab: round $r (report exit $?)" | tee -a "$R/summary.txt"
  grep -E "^\|" "$R/report$r.md" | head -20 | tee -a "$R/summary.txt"
done
exit $rc
