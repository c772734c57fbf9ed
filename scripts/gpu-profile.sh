#!/usr/bin/env bash
# On the GPU machine, after a build: Nsight Compute per-instruction profile of one sm90 attention
# launch per shape (dense, kernel only), summarised by scripts/ncu_hotspots.py into
# $OUT/prof/<shape>.txt (instruction mix per opcode, top stalled SASS lines), plus the SASS of the
# instance objects. Used for the kernels/NOTES.md runs.
#
#   GPU_EXTRA=scripts/gpu-profile.sh scripts/gpu-check.sh -R Sm90
#   PROFILE_SHAPES='1,32,8192,128 1,32,8192,64' scripts/gpu-profile.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out}
P=$OUT/prof
mkdir -p "$P"
rc=0
for shape in ${PROFILE_SHAPES:-1,32,8192,128 1,32,8192,64}; do
  tag=${shape//,/_}
  t0=$(date +%s)
  ncu --set full --import-source yes -k regex:attention_kernel -c 1 -f -o "$P/$tag" \
    build/src/sparge --no-progress bench --shape "$shape" --density 1 --no-baselines \
    --min-samples 1 --warmup-ms 0 >"$P/$tag.ncu.log" 2>&1 || { rc=1; tail -5 "$P/$tag.ncu.log"; }
  ncu -i "$P/$tag.ncu-rep" --page source --csv --print-source sass >"$P/$tag.sass.csv" 2>&1 || rc=1
  python3 scripts/ncu_hotspots.py "$P/$tag.sass.csv" >"$P/$tag.txt" 2>&1 || rc=1
  ncu -i "$P/$tag.ncu-rep" --page details --csv >"$P/$tag.details.csv" 2>&1 || rc=1
  echo "gpu-profile: $shape in $(($(date +%s) - t0)) s (rc so far $rc)"
  head -45 "$P/$tag.txt"
done
for o in build/kernels/CMakeFiles/sparge_kernels.dir/instances/attention_sm90_d*_v6.cu.o; do
  cuobjdump -sass "$o" >"$P/$(basename "$o" .cu.o).sass" 2>&1 || rc=1
done
exit $rc
