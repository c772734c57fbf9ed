#!/usr/bin/env bash
# The main job on bundled data: synthesise the demo dump (first run only), tune it on the CPU,
# then check the tuned thresholds on a held-out sample. Outputs land in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
SPARGE=${SPARGE:-build/src/sparge}
[[ -x $SPARGE ]] || { echo "demo: $SPARGE not built; run scripts/setup.sh first" >&2; exit 1; }
mkdir -p out
[[ -f data/demo.h5 ]] || data/make_demo.sh
"$SPARGE" inspect data/demo.h5 | head -20
"$SPARGE" tune data/demo.h5 --samples 0,1 -o out/demo-tuned.yaml
"$SPARGE" eval data/demo.h5 out/demo-tuned.yaml --samples 2
