#!/usr/bin/env bash
# On the GPU machine: a job longer than one device call (10 minutes), e.g. a many-sided
# scripts/gpu-ab.sh or the default bench suite after a build. `start` runs the command in its own
# process session (the device tool ends a call's other processes when it returns) with OUT set to
# a folder that outlives the call; `wait`, in the same and in later calls, waits for it and packs
# that folder into $OUT, every 20 s, so that a call stopped at its limit still brings back what
# the job has written so far.
#
#   scripts/gpu-detach.sh start CMD [ARGS...]   # returns at once
#   scripts/gpu-detach.sh wait [SECONDS]        # at most SECONDS (default 540); exit 0 once the
#                                               # job has ended (its exit status in job/rc),
#                                               # 3 while it still runs: call again
#
#   run: scripts/gpu-detach.sh start scripts/gpu-ab.sh --shape ... && scripts/gpu-detach.sh wait
#   run: scripts/gpu-detach.sh wait             # next call, within the machine's idle timeout
#
# The machine is given back about 30 s after a call ends, and the job with it: chain the calls.
# Results: $OUT/job.tgz (the job's OUT folder, its log and rc).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
JOB=${SPARGE_JOB_DIR:-/tmp/sparge-job}
OUT=${OUT:-$PWD/out}

pack() {
  mkdir -p "$OUT"
  tar -czf "$OUT/job.tgz.tmp" -C "$(dirname "$JOB")" "$(basename "$JOB")" 2>/dev/null &&
    mv "$OUT/job.tgz.tmp" "$OUT/job.tgz"
}

case "${1:-}" in
  start)
    shift
    if [[ $# -eq 0 ]]; then
      echo "gpu-detach: start needs a command" >&2
      exit 2
    fi
    if [[ -f $JOB/pid && ! -f $JOB/rc ]] && kill -0 "$(cat "$JOB/pid")" 2>/dev/null; then
      echo "gpu-detach: a job is still running ($JOB); wait for it first" >&2
      exit 2
    fi
    rm -rf "$JOB" && mkdir -p "$JOB/out"
    printf '%q ' "$@" >"$JOB/command"
    # The inner shell records the exit status; setsid keeps the job alive past this call.
    # shellcheck disable=SC2016  # expanded by the inner shell, on purpose
    OUT=$JOB/out setsid nohup bash -c '"$@" >"$0/log" 2>&1; echo $? >"$0/rc"' "$JOB" "$@" \
      </dev/null >/dev/null 2>&1 &
    echo $! >"$JOB/pid"
    echo "gpu-detach: started $(cat "$JOB/command")"
    ;;
  wait)
    limit=${2:-540}
    if [[ ! -f $JOB/command ]]; then
      echo "gpu-detach: no job in $JOB (this machine is fresh, or none was started)" >&2
      exit 2
    fi
    t0=$(date +%s)
    while [[ ! -f $JOB/rc ]] && (($(date +%s) - t0 < limit)); do
      pack
      sleep 20
    done
    pack
    tail -20 "$JOB/log"
    if [[ -f $JOB/rc ]]; then
      echo "gpu-detach: the job ended with exit status $(cat "$JOB/rc")"
      exit 0
    fi
    echo "gpu-detach: still running after ${limit} s; call 'scripts/gpu-detach.sh wait' again"
    exit 3
    ;;
  *)
    echo "usage: scripts/gpu-detach.sh start CMD [ARGS...] | wait [SECONDS]" >&2
    exit 2
    ;;
esac
