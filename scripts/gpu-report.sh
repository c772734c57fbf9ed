#!/usr/bin/env bash
# On the GPU machine, after a build (scripts/gpu-check.sh runs it through GPU_EXTRA): the H100
# baseline (default bench suite) and its rendering, and a tuning run at the TARGETS tuning shape
# with the CUDA oracle, then a held-out eval and a bench of its real predicted masks.
# Results under $OUT/r. SPARGE_GIT names the commit (it wins over the one recorded at build time: the GPU
# machine's copy of .git need not match the tree).
#
#   GPU_EXTRA=scripts/gpu-report.sh scripts/gpu-check.sh
#   TUNE_LAYERS=4 scripts/gpu-report.sh        # layers of the tuning case (default 4)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
R=$OUT/r
mkdir -p "$R"
SPARGE=build/src/sparge
name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '_')
rc=0

t0=$(date +%s)
"$SPARGE" bench --suite default --seed 0 -o "$R/$name.json" --format md >"$R/$name.md" || rc=1
"$SPARGE" report --force "$R/$name.json" "$R/$name.json" --html "$R/$name.html" >/dev/null || rc=1
echo "gpu-report: bench suite in $(($(date +%s) - t0)) s" | tee -a "$R/timings.txt"

# Tuning case: TARGETS' shape (N = 17776 = 226 text + 13x30x45 video tokens, 32 heads, D = 64),
# TUNE_LAYERS layers of 3 samples; tuned on samples 0,1 with the CUDA oracle, checked on 2.
layers=${TUNE_LAYERS:-4}
dump=/tmp/sparge-tune-case.h5
t0=$(date +%s)
"$SPARGE" --no-progress synth -o "$dump" --kind video --grid 13,30,45 --text-prefix 226 \
  --heads 32 --layers "$layers" --samples 3 --head-dim 64 --seed 11 2>&1 | tail -1
t1=$(date +%s)
echo "gpu-report: synth $layers layers x 3 samples in $((t1 - t0)) s" | tee -a "$R/timings.txt"
"$SPARGE" --no-progress tune "$dump" --samples 0,1 --backend cuda -o "$R/tune-case.yaml" \
  >"$R/tune-case.txt" 2>&1 || rc=1
t2=$(date +%s)
echo "gpu-report: tune (cuda oracle) $layers layers x 32 heads x 2 samples in $((t2 - t1)) s" \
  | tee -a "$R/timings.txt"
"$SPARGE" --no-progress eval "$dump" "$R/tune-case.yaml" --samples 2 --backend cuda \
  >>"$R/tune-case.txt" 2>&1
echo "gpu-report: held-out eval exit $? in $(($(date +%s) - t2)) s" | tee -a "$R/timings.txt"
"$SPARGE" --no-progress bench --dump "$dump" --config "$R/tune-case.yaml" --sample 2 \
  -o "$R/tune-case-bench.json" --format md >>"$R/tune-case.txt" 2>&1 || rc=1
exit $rc
