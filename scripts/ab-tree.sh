#!/usr/bin/env bash
# The source tree of a commit or branch as a tar, for scripts/gpu-ab.sh's AB_SRC_A / AB_SRC_B:
# the GPU machine gets a copy of this tree's files without its history, so the other side of an
# A/B travels as a file (ab/ is ignored by git; pass it to the machine with the files it needs).
#
#   scripts/ab-tree.sh REF [OUT.tar]      # default OUT: ab/<ref>.tar
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
  echo "usage: scripts/ab-tree.sh REF [OUT.tar]" >&2
  exit 2
fi
ref=$1
out=${2:-ab/${ref//\//_}.tar}
git rev-parse --verify --quiet "$ref^{commit}" >/dev/null || {
  echo "ab-tree: no commit named '$ref'" >&2
  exit 2
}
mkdir -p "$(dirname "$out")"
# What a build needs (the layout of scripts/setup.sh's configure).
git archive --format=tar "$ref" CMakeLists.txt cmake src kernels python tests configs scripts \
  >"$out"
echo "$out ($(git rev-parse --short=12 "$ref"))"
