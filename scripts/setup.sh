#!/usr/bin/env bash
# Sets up and builds sparge on a fresh Debian 12 machine, or on the GPU machine (Ubuntu 24.04 with
# everything preinstalled and no network). Idempotent: installs only what is missing, then
# configures and builds incrementally into ./build (override with SPARGE_BUILD_DIR).
#
#   scripts/setup.sh            # deps + configure + build
#   SPARGE_SKIP_DEPS=1 scripts/setup.sh   # build only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${SPARGE_BUILD_DIR:-$ROOT/build}
TORCH_VERSION=2.11.0
say() { printf 'setup: %s\n' "$*" >&2; }

# --- Debian packages (only those missing) ---------------------------------------------------
APT_PKGS=(build-essential cmake ninja-build git libhdf5-dev hdf5-tools libyaml-cpp-dev
          libcli11-dev libfmt-dev libbenchmark-dev libgtest-dev libgmock-dev nlohmann-json3-dev
          clang-format)
if [[ -z "${SPARGE_SKIP_DEPS:-}" ]] && command -v dpkg-query >/dev/null; then
  missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi

# --- CUDA toolkit ----------------------------------------------------------------------------
if ! command -v nvcc >/dev/null; then
  if [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH=/usr/local/cuda/bin:$PATH
  else say "error: nvcc not found: install the CUDA Toolkit 13 (/usr/local/cuda)"; exit 1; fi
fi

# --- Python with torch==2.11.0 (its libtorch is what we link), h5py, numpy, pytest, scikit-image,
# pyyaml (python/sparge reads tuned configs)
PY=${SPARGE_PYTHON:-python3}
py_ok() {
  "$1" - <<PYEOF 2>/dev/null
import torch, h5py, numpy, pytest, skimage, yaml
assert torch.__version__.split("+")[0] == "$TORCH_VERSION", torch.__version__
PYEOF
}
if ! py_ok "$PY"; then
  [[ -n "${SPARGE_SKIP_DEPS:-}" ]] && { say "error: $PY lacks torch==$TORCH_VERSION/h5py/numpy/pytest/scikit-image/pyyaml"; exit 1; }
  PIP_ARGS=(-q --disable-pip-version-check install "torch==$TORCH_VERSION" h5py numpy pytest
            scikit-image pyyaml)
  if "$PY" -m pip "${PIP_ARGS[@]}" 2>/tmp/sparge-pip.err; then :
  else
    # Debian's own python3 refuses system-wide pip installs (PEP 668): use a project venv.
    say "using a virtual environment in .venv ($(head -c 200 /tmp/sparge-pip.err | tr '\n' ' '))"
    if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
      SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
      $SUDO apt-get install -y -qq python3-venv >/dev/null
    fi
    [[ -x .venv/bin/python3 ]] || "$PY" -m venv --system-site-packages .venv
    PY=$ROOT/.venv/bin/python3
    py_ok "$PY" || "$PY" -m pip "${PIP_ARGS[@]}"
  fi
  py_ok "$PY" || { say "error: could not install torch==$TORCH_VERSION"; exit 1; }
fi
PY=$(command -v "$PY" || echo "$PY")

# --- configure + build -----------------------------------------------------------------------
GEN=()
[[ -f "$BUILD_DIR/CMakeCache.txt" ]] || GEN=(-G Ninja)
cmake -S "$ROOT" -B "$BUILD_DIR" "${GEN[@]}" -DPython3_EXECUTABLE="$PY" \
  ${SPARGE_CMAKE_ARGS:-} >"$BUILD_DIR.configure.log" 2>&1 || {
  cat "$BUILD_DIR.configure.log" >&2; exit 1; }
cmake --build "$BUILD_DIR" -j "${SPARGE_JOBS:-$(nproc)}"
say "built $BUILD_DIR/src/sparge"
