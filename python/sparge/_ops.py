"""Loading libsparge_ops.so, which registers torch.ops.sparge (src/torch_op/sparge_ops.cpp)."""

from __future__ import annotations

import os

import torch

_LOADED: str | None = None


def _candidates() -> list[str]:
    env = os.environ.get("SPARGE_OPS_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    build = os.environ.get("SPARGE_BUILD_DIR", os.path.join(repo, "build"))
    return [os.path.join(build, "src", "libsparge_ops.so"), os.path.join(here, "libsparge_ops.so")]


def load_library() -> str:
    """Loads the operator library once and returns its path.

    Looked up in $SPARGE_OPS_LIBRARY, else the repository's build tree (build/src, or
    $SPARGE_BUILD_DIR/src: scripts/setup.sh builds it), else next to this package.
    """
    global _LOADED
    if _LOADED is not None:
        return _LOADED
    tried = _candidates()
    for path in tried:
        if os.path.isfile(path):
            torch.ops.load_library(path)
            _LOADED = path
            return path
    raise RuntimeError("sparge: libsparge_ops.so not found (looked in " + ", ".join(tried) +
                       "): run scripts/setup.sh, or set SPARGE_OPS_LIBRARY to its path")
