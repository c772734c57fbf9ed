"""scripts/holdout_sim.py re-applies the tuner's hold-out rule to a `sparge tune --trace` file, so
its copy of the rule must be the tuner's: on a real trace (one layer of the demo's real-image
dump, CPU backend, 3 samples) its predicted error equals the `predicted` the tuner wrote for every stage-1 point,
and with the trace's own K and floor on all samples it keeps a point no sparser than the
tuner's choice."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numpy")
pytest.importorskip("h5py")
pytest.importorskip("skimage")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SPARGE_BIN = os.environ.get("SPARGE_BIN", "")


def load_sim():
    spec = importlib.util.spec_from_file_location(
        "holdout_sim", os.path.join(ROOT, "scripts", "holdout_sim.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    if not SPARGE_BIN or not os.path.exists(SPARGE_BIN):
        pytest.skip("SPARGE_BIN not set")
    d = tmp_path_factory.mktemp("holdout_sim")
    dump, cfg, tr = d / "real.h5", d / "t.yaml", d / "trace.json"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    # One layer of the bundled demo's dump (data/make_demo.sh): heads that do get sparse.
    r = subprocess.run([sys.executable, "-m", "sparge_realdata", "-o", str(dump), "--images",
                        "astronaut,coffee,chelsea", "--layers", "1", "--heads", "4",
                        "--head-dim", "64", "--frames", "4", "--grid-h", "16", "--grid-w", "16",
                        "--text-prefix", "64", "--dtype", "float16", "--seed", "0"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([SPARGE_BIN, "--no-progress", "tune", str(dump), "--backend", "cpu",
                        "--samples", "0,1,2", "-o", str(cfg), "--trace", str(tr)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with open(tr) as f:
        return json.load(f), str(tr)


def test_rule_matches_the_tuners(trace):
    t, _ = trace
    sim = load_sim()
    k, floor = t["spread_k"], t["spread_floor"]
    assert floor == 0.2 and k == 3.0  # the defaults the trace was written with
    points = [p for h in t["heads"] for p in h["points"] if p["stage"] == "stage1"]
    assert len(points) > 10
    for p in points:
        assert sim.predicted(p["error"], k, floor) == pytest.approx(p["predicted"], rel=1e-12)
    # Where the floor binds (samples that agree), as TuneHoldout.SpreadFloorWhenSamplesAgree.
    assert sim.predicted([0.04, 0.04], 2.0, 0.2) == pytest.approx(0.056)
    assert sim.predicted([0.02, 0.04], 2.0, 0.2) == pytest.approx(0.08)


def test_keeps_what_the_tuner_kept(trace):
    t, path = trace
    sim = load_sim()
    assert any(h["sparse"] for h in t["heads"]), "a trace with no sparse head checks nothing"
    for h in t["heads"]:
        pts = [p for p in h["points"] if p["stage"] == "stage1"]
        kept = sim.keep(pts, (0, 1, 2), t["spread_k"], t["spread_floor"], t["budget"]["l1"],
                        t["min_sparsity"], t.get("tau_plateau", 0.0))
        if not h["sparse"]:
            continue  # dense heads: the tuner writes tau = theta = 1, not a trace point
        assert kept is not None
        assert kept["tau"] == h["chosen"]["tau"] and kept["theta"] == h["chosen"]["theta"]
    # The command line runs on it and names every rotation.
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "holdout_sim.py"), path,
                        "--floors", "0,0.2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("floor") == 2 and "0,1->2" in r.stdout and "1,2->0" in r.stdout
