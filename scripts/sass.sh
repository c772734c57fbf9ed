#!/usr/bin/env bash
# SASS of one kernel translation unit on a machine without a GPU or a full CUDA toolkit: nvcc
# builds an sm_90a (or SASS_ARCH) cubin with ptxas' resource report, and cuobjdump/nvdisasm
# from the PyPI wheels (fetched once into .whl/cutools; they read nvcc 13.0's cubins) disassemble
# it. Prints ptxas' registers/spills per kernel and the opcode histogram of each kernel; the
# listing goes to OUT.sass. Used to count a block loop's instructions before a GPU run
# (kernels/NOTES.md, run 27).
#
#   scripts/sass.sh kernels/instances/attention_sm90_d64_warpgroup.cu /tmp/wg64
#   SASS_ARCH=80 scripts/sass.sh kernels/instances/attention_sm80_d64_fp16.cu /tmp/sm80
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: scripts/sass.sh KERNEL.cu [OUT_PREFIX]" >&2
  exit 2
fi
src=$1
out=${2:-/tmp/$(basename "$src" .cu)}
arch=${SASS_ARCH:-90a}
tools=$PWD/.whl/cutools
if [[ ! -x $tools/nvidia/cu13/bin/nvdisasm ]]; then
  mkdir -p "$tools/wheels"
  python3 -m pip download -q --no-deps -d "$tools/wheels" \
    "nvidia-cuda-cuobjdump==13.2.78" "nvidia-cuda-nvdisasm==13.2.78"
  for w in "$tools"/wheels/*.whl; do python3 -m zipfile -e "$w" "$tools"; done
  chmod +x "$tools"/nvidia/cu13/bin/*
fi
nvcc -I. -O3 -DNDEBUG --generate-code="arch=compute_$arch,code=[sm_$arch]" \
  --expt-relaxed-constexpr -lineinfo -std=c++20 -x cu -cubin "$src" -o "$out.cubin" \
  -Xptxas -v 2>&1 | grep -E "Compiling entry|spill|Used" | sed 's/ptxas info *: //'
PATH=$tools/nvidia/cu13/bin:$PATH cuobjdump -sass "$out.cubin" >"$out.sass"
python3 - "$out.sass" <<'PY'
import collections, re, sys
kernel, hist = None, collections.Counter()
def flush():
    if kernel:
        print(f"\n{kernel}: {sum(hist.values())} instructions")
        print("  " + ", ".join(f"{op} {n}" for op, n in hist.most_common(16)))
for line in open(sys.argv[1]):
    m = re.match(r"\s*Function : (\S+)", line)
    if m:
        flush()
        kernel, hist = m.group(1), collections.Counter()
        continue
    m = re.match(r"\s*/\*[0-9a-f]{4,6}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", line)
    if m:
        hist[m.group(1)] += 1
flush()
PY
echo "listing: $out.sass"
