#!/usr/bin/env bash
# On the GPU machine: a same-machine A/B of two or more builds of sparge: CMake configurations of
# this tree (a kernel experiment behind an option against the shipped code) or other commits.
# Builds build-<side> for each side, runs the GPU tests matching AB_TESTS on every side but a,
# then `sparge bench ARGS` a b c ... a b c ... (AB_ROUNDS rounds, so that a drift of the machine
# shows as a trend, not as a difference), and `sparge report` of each round's a against each
# other side. Results under $OUT/ab.
#
#   AB_B='-DSPARGE_KERNEL_EXPERIMENTS=ON' scripts/gpu-ab.sh \
#     --shape 1,32,32768,128 --shape 2,30,17776,64 --density 0.1 --no-baselines
#
# AB_SIDES: the sides, in bench order (default "a b"; the first is the reference).
# AB_<SIDE> (AB_A, AB_B, ...): extra CMake arguments of that side (default none).
# AB_SRC_<SIDE>: build that side from another source tree: a tar of it, which
# scripts/ab-tree.sh makes from a commit or branch (the GPU machine's copy of this tree has no
# history), or a directory. E.g. main against two branches (kernels/NOTES.md runs 27-31 ran so):
#
#   scripts/ab-tree.sh main ab/a.tar; scripts/ab-tree.sh BR1 ab/b.tar; ...  # here
#   AB_SIDES="a b c" AB_SRC_A=ab/a.tar AB_SRC_B=ab/b.tar AB_SRC_C=ab/c.tar \
#     AB_TESTS=Quant scripts/gpu-ab.sh --shape ...                           # GPU, carry ["ab"]
#
# AB_ROUNDS (default 2), AB_TESTS (ctest -R regex of GPU tests; empty: none) and
# AB_TEST_TARGETS (the test executables those sides build for them; default quant, predict and
# runtime), AB_TEST_REF=1 (run the tests on the first side too: e.g. main after a merge that has
# not met some test yet), SPARGE_CUDA_ARCHS (default 90a: the Hopper kernels only, to halve the
# build).
# AB_EXTRA: a command run once per side after the benches, with BUILD set to the side's build
# directory, output in $OUT/ab/extra-<side>.log; e.g. the per-pass timing of the preparation:
#   AB_EXTRA='$BUILD/tests/gpu_test_runtime --gtest_also_run_disabled_tests
#             --gtest_filter=*PrepareTiming*'   (with gpu_test_runtime in AB_TEST_TARGETS)
# AB_BUDGET_S: seconds this script may take (default: no limit). Builds that would not leave time
# for the benches, or a bench that would not end in time, are skipped and say so, so that a call
# never ends with nothing. The sides build together (one alone takes about 50 s on the 16-core
# GPU machine); a bench of a few shapes takes seconds. Build and source directories are named
# build-* (ignored by git), so a warm machine keeps them between calls and a second call
# rebuilds nothing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/out}
R=$OUT/ab
mkdir -p "$R"
if [[ $# -eq 0 ]]; then
  echo "usage: [AB_SIDES='a b ...'] [AB_<SIDE>=...] [AB_SRC_<SIDE>=...] scripts/gpu-ab.sh" \
    "SPARGE_BENCH_ARGS..." >&2
  exit 2
fi
read -r -a sides <<<"${AB_SIDES:-a b}"
if [[ ${#sides[@]} -lt 2 ]]; then
  echo "gpu-ab: AB_SIDES needs two sides or more (got '${AB_SIDES:-}')" >&2
  exit 2
fi
rounds=${AB_ROUNDS:-2}
t_start=$(date +%s)
deadline=$((t_start + ${AB_BUDGET_S:-1000000}))
left() { echo $((deadline - $(date +%s))); }
log() { echo "gpu-ab: $*" | tee -a "$R/summary.txt"; }

# The source tree of a side: this one, AB_SRC_<SIDE>'s directory, or its tar unpacked.
src_of() {
  local var="AB_SRC_${1^^}"
  local src=${!var:-}
  if [[ -z $src ]]; then
    echo .
  elif [[ -d $src ]]; then
    echo "$src"
  else
    local dir="build-src-$1"
    rm -rf "$dir" && mkdir -p "$dir" && tar -xf "$src" -C "$dir" && echo "$dir"
  fi
}

# build <side> <jobs>: sparge, and the test executables when there are tests or an extra command
# (the reference side too, for the extra command).
build() {
  local side=$1 jobs=$2 src var targets=sparge
  [[ -n "${AB_TESTS:-}${AB_EXTRA:-}" ]] &&
    targets="sparge ${AB_TEST_TARGETS:-gpu_test_quant gpu_test_predict gpu_test_runtime}"
  src=$(src_of "$side") || return 1
  var="AB_${side^^}"
  # Targets and extra arguments are word lists on purpose.
  # shellcheck disable=SC2086
  cmake -S "$src" -B "build-$side" -G Ninja -DPython3_EXECUTABLE="$(command -v python3)" \
    -DSPARGE_CUDA_ARCHS="${SPARGE_CUDA_ARCHS:-90a}" ${!var:-} >"$R/configure-$side.log" 2>&1 &&
    cmake --build "build-$side" -j "$jobs" --target $targets >"$R/build-$side.log" 2>&1
}

# All sides build at once: one build is bound by its longest file (predict.cu, quant.cu, the
# attention kernels, each one nvcc process), so building them one after another leaves most cores
# idle. Each side gets a share of the cores, at least two.
need_build=$((60 + 10 * rounds * ${#sides[@]}))
jobs=$(($(nproc) * 2 / ${#sides[@]}))
((jobs < 2)) && jobs=2
if (($(left) < need_build)); then
  log "skipped the builds: $(left) s left"
  exit 1
fi
t0=$(date +%s)
for side in "${sides[@]}"; do
  (
    var="AB_SRC_${side^^}" args="AB_${side^^}"
    if build "$side" "$jobs"; then
      log "built $side (${!var:-this tree} ${!args:-}) in $(($(date +%s) - t0)) s"
      touch "$R/.built-$side"
    else
      log "build of $side failed: $(tail -20 "$R/build-$side.log")"
    fi
  ) &
done
wait
built=()
for side in "${sides[@]}"; do
  [[ -f "$R/.built-$side" ]] && built+=("$side") && rm -f "$R/.built-$side"
done
if [[ ${#built[@]} -lt 2 || ${built[0]} != "${sides[0]}" ]]; then
  log "nothing to compare: built ${built[*]:-none}"
  exit 1
fi

rc=0
if [[ -n "${AB_TESTS:-}" ]]; then
  tested=("${built[@]:1}")
  [[ ${AB_TEST_REF:-0} == 1 ]] && tested=("${built[@]}")
  for side in "${tested[@]}"; do
    # The tests must end before the benches start (they share the GPU).
    if (($(left) < 60)); then
      log "skipped the tests of $side: $(left) s left"
      rc=1
      continue
    fi
    timeout $(($(left) - 40)) ctest --test-dir "build-$side" -L gpu -R "$AB_TESTS" \
      --output-on-failure --timeout 300 >"$R/ctest-$side.log" 2>&1 || rc=1
    log "tests of $side: $(grep -E 'tests passed|tests failed' "$R/ctest-$side.log" ||
      echo 'did not finish')"
  done
fi

for r in $(seq 1 "$rounds"); do
  for side in "${built[@]}"; do
    if (($(left) < 20)); then
      log "skipped bench $side round $r: $(left) s left"
      rc=1
      continue
    fi
    "build-$side/src/sparge" --no-progress bench "$@" -o "$R/$side$r.json" --format md \
      >"$R/$side$r.md" 2>&1 || rc=1
  done
  ref=${built[0]}
  for side in "${built[@]:1}"; do
    [[ -f "$R/$ref$r.json" && -f "$R/$side$r.json" ]] || continue
    # exit 1 of report means "this side slower somewhere": a finding, not a failure of this script
    "build-$ref/src/sparge" report "$R/$ref$r.json" "$R/$side$r.json" >"$R/report-$side$r.md" 2>&1
    log "round $r, $side against $ref (report exit $?)"
    grep -E "^\|" "$R/report-$side$r.md" | head -20 | tee -a "$R/summary.txt"
  done
done
if [[ -n "${AB_EXTRA:-}" ]]; then
  for side in "${built[@]}"; do
    if (($(left) < 30)); then
      log "skipped the extra command of $side: $(left) s left"
      continue
    fi
    BUILD=build-$side timeout $(($(left) - 10)) bash -c "$AB_EXTRA" >"$R/extra-$side.log" 2>&1
    log "extra command of $side: exit $?"
  done
fi
log "done in $(($(date +%s) - t_start)) s"
exit $rc
