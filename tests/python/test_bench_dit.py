"""sparge.bench_dit's parts that need no GPU: where it finds the CLI by default, and the
reduction of `sparge eval` reports into the hold-out rotation table (--rotations)."""

from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("yaml")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "python"))
from sparge import bench_dit  # noqa: E402

SPARGE_BIN = os.environ.get("SPARGE_BIN", "")


def test_default_cli_is_the_one_setup_builds(monkeypatch):
    # It was "build/sparge" relative to the working directory: a path CMake never writes, so a
    # user who followed the README got "not found (--sparge-bin)".
    if not SPARGE_BIN or not os.path.exists(SPARGE_BIN):
        pytest.skip("SPARGE_BIN not set (ctest sets it to the built CLI)")
    if not os.path.exists(os.path.join(ROOT, "build", "src", "sparge")):
        pytest.skip("this checkout was not built into build/ (scripts/setup.sh does)")
    monkeypatch.delenv("SPARGE_BIN", raising=False)
    monkeypatch.chdir(os.path.join(ROOT, "tests"))  # anywhere but the checkout's root
    a = bench_dit._args(["-o", "out"])
    assert os.path.samefile(a.sparge_bin, os.path.join(ROOT, "build", "src", "sparge"))
    monkeypatch.setenv("SPARGE_BIN", "/some/where/sparge")
    assert bench_dit._args(["-o", "out"]).sparge_bin == "/some/where/sparge"


def _head(ok, s1, s12, e1, e12):
    return {"pass": ok, "sparsity_stage1": s1, "sparsity_stage12": s12, "error_stage1": e1,
            "error_stage12": e12}


EVAL = {"budget": {"l1": 0.05, "l2": 0.06},
        "heads": [_head(True, 0.10, 0.20, 0.030, 0.040), _head(False, 0.30, 0.35, 0.052, 0.058),
                  _head(True, 0.00, 0.05, 0.010, 0.020), _head(True, 0.20, 0.30, 0.040, 0.061)]}


def test_holdout_summary_counts_heads_over_budget_and_worst_errors():
    h = bench_dit.holdout_summary(EVAL, 2)
    assert h["sample"] == 2 and h["heads"] == 4
    assert h["heads_over_budget"] == 1  # the eval's own verdict per head, not recomputed here
    assert h["stage1_sparsity_mean"] == pytest.approx(0.15)
    assert h["stage12_sparsity_mean"] == pytest.approx(0.225)
    assert h["worst_error_stage1"] == pytest.approx(0.052)
    assert h["worst_error_stage12"] == pytest.approx(0.061)
    assert h["budget"] == {"l1": 0.05, "l2": 0.06}


def test_rotations_markdown_names_photographs_and_totals():
    images = ["astronaut", "coffee", "chelsea"]
    rows = [{"calibration": "0,1", "tune_seconds": 38.5,
             "holdout": bench_dit.holdout_summary(EVAL, 2)},
            {"calibration": "1,2", "tune_seconds": 40.0,
             "holdout": bench_dit.holdout_summary({**EVAL, "heads": EVAL["heads"][2:]}, 0)}]
    md = bench_dit.rotations_markdown(images, rows, "--spread-k 2")
    lines = md.splitlines()
    assert lines[2].startswith("| astronaut, coffee -> chelsea | 1 of 4 | 0.150 / 0.225 |")
    assert lines[3].startswith("| coffee, chelsea -> astronaut | 0 of 2 | 0.100 / 0.175 |")
    assert "All rotations: 1 of 6 heads over budget, mean held-out stage-1 sparsity 0.125" in md
    assert "--spread-k 2" in md
