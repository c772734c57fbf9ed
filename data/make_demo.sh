#!/usr/bin/env bash
# The demo dump: Q/K/V built from three real photographs (python/sparge_realdata: a camera pan
# cut into patch tokens behind a text prefix), 2 layers x 4 heads, D = 64, 64 text + 4 x 16 x 16
# image tokens, one sample per photograph (tune on two, check on the third). Real-structured
# data, so the demo's figures mean something for a user; small enough for the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${SPARGE_PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python3 ]]; then PY=.venv/bin/python3; else PY=python3; fi
fi
PYTHONPATH=python "$PY" -m sparge_realdata -o data/demo.h5 --images astronaut,coffee,chelsea \
  --layers 2 --heads 4 --head-dim 64 --frames 4 --grid-h 16 --grid-w 16 --text-prefix 64 \
  --dtype float16 --seed 0
echo "make_demo: wrote data/demo.h5" >&2
