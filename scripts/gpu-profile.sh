#!/usr/bin/env bash
# On the GPU machine, after a build: Nsight Compute profile of one sm90 attention launch per shape
# (dense, kernel only) into $OUT/prof/<shape>.*:
#   .pipes.txt  pipe utilisation, issue-slot use and the warp stall reasons per issued
#               instruction (a metrics-only pass, seconds: the first thing to read);
#   .txt        scripts/ncu_hotspots.py of the full per-instruction profile (instruction mix per
#               opcode, top stalled SASS lines), .details.csv, and the SASS of the instances.
# Used for the kernels/NOTES.md runs.
#
#   GPU_EXTRA=scripts/gpu-profile.sh scripts/gpu-check.sh -R Sm90
#   PROFILE_SHAPES='1,32,8192,128 1,32,8192,64' scripts/gpu-profile.sh
#   PROFILE_FULL=0 scripts/gpu-profile.sh      # the metrics pass only
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT=${OUT:-$PWD/out}
P=$OUT/prof
mkdir -p "$P"
rc=0
# Pipes (of peak over active cycles), issue slots, and stalls per issued instruction: session 23's
# reading of the D = 64 kernel (kernels/NOTES.md, "Profile of the D = 64 kernel after run 27").
PIPE_METRICS=$(
  IFS=,
  m=('regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active'
    'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio'
    smsp__issue_active.avg.pct_of_peak_sustained_active sm__warps_active.avg.per_cycle_active
    gpc__cycles_elapsed.max smsp__inst_executed.sum)
  echo "${m[*]}"
)
for shape in ${PROFILE_SHAPES:-1,32,8192,128 1,32,8192,64}; do
  tag=${shape//,/_}
  t0=$(date +%s)
  bench=(build/src/sparge --no-progress bench --shape "$shape" --density 1 --no-baselines
    --min-samples 1 --warmup-ms 0)
  ncu -k regex:attention_kernel -c 1 --metrics "$PIPE_METRICS" "${bench[@]}" 2>&1 |
    grep -E "attention_kernel|pct_of_peak|per_issue_active|per_cycle_active|cycles_elapsed|\.sum" |
    awk '$NF != "0" && $NF != "0.00"' >"$P/$tag.pipes.txt" || rc=1
  cat "$P/$tag.pipes.txt"
  [[ ${PROFILE_FULL:-1} == 1 ]] || continue
  ncu --set full --import-source yes -k regex:attention_kernel -c 1 -f -o "$P/$tag" \
    "${bench[@]}" >"$P/$tag.ncu.log" 2>&1 || { rc=1; tail -5 "$P/$tag.ncu.log"; }
  ncu -i "$P/$tag.ncu-rep" --page source --csv --print-source sass >"$P/$tag.sass.csv" 2>&1 || rc=1
  python3 scripts/ncu_hotspots.py "$P/$tag.sass.csv" >"$P/$tag.txt" 2>&1 || rc=1
  ncu -i "$P/$tag.ncu-rep" --page details --csv >"$P/$tag.details.csv" 2>&1 || rc=1
  echo "gpu-profile: $shape in $(($(date +%s) - t0)) s (rc so far $rc)"
  head -45 "$P/$tag.txt"
done
shopt -s nullglob
for o in build/kernels/CMakeFiles/sparge_kernels.dir/instances/attention_sm90_d*.cu.o; do
  cuobjdump -sass "$o" >"$P/$(basename "$o" .cu.o).sass" 2>&1 || rc=1
done
exit $rc
