#!/usr/bin/env bash
# Makes data/demo.h5, the small video-like Q/K/V dump the README's walkthrough tunes on:
# 2 layers x 3 samples (diffusion steps), 1 batch, 4 heads (local / striped / frame / global),
# a 4x16x16 token grid plus 64 text-prefix tokens (N = 1088), D = 64, fp16. About 10 MB; a CPU
# tune of all 8 heads takes well under a minute on 2 cores.
#
#   data/make_demo.sh [SPARGE_BIN]     # default: $SPARGE_BIN, else build/src/sparge
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-${SPARGE_BIN:-build/src/sparge}}
[[ -x "$BIN" ]] || { echo "make_demo: $BIN not found: build first (scripts/setup.sh)" >&2; exit 66; }
"$BIN" synth -o data/demo.h5 --kind video --grid 4,16,16 --text-prefix 64 \
  --layers 2 --samples 3 --batch 1 --heads 4 --head-dim 64 --dtype fp16 --seed 0
echo "make_demo: wrote data/demo.h5" >&2
