#!/usr/bin/env python3
"""Offline check of hold-out rules on a `sparge tune --trace` file of S >= 3 samples.

    python3 scripts/holdout_sim.py TRACE.json [--calib 2] [--floors 0,0.1,0.2,0.3] [--k 3]
                                  [--tau-plateau R]

For every choice of --calib calibration samples and every sample left out, and for every head:
among the stage-1 points the search evaluated, keep the one a rule would keep from the errors on
the calibration samples (the highest mean calibration sparsity whose predicted error is within
l1, as tune/search.cpp does), then read that point's error and sparsity on the held-out sample.
Prints, per rule, the heads over l1 on the held-out samples and their mean held-out stage-1
sparsity, per rotation and in total.

The rule is `sparge tune --holdout spread`: worst + K x max(worst - best, F x worst). With
--tau-plateau R (the τ plateau guard), the kept point (τ*, s*) then moves to the passing point of
largest τ whose mean sparsity is at least max(s* - R (τ - τ*), min_sparsity) among those
evaluated. The tuner then bisects up that point's θ line, and those points are in its trace, so
on a trace of its own samples it is the same point (up to exact ties in τ between θ lines).

Caveat: the trace comes from a search over all S samples, so it holds the points that search
evaluated; a search over fewer samples also reaches sparser points. The figures are then a
lower bound on the misses of a real tune (reports/tune-real/holdout-dit.md compares both).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics


def predicted(errors: list[float], k: float, floor: float) -> float:
    worst = max(errors)
    return worst + k * max(worst - min(errors), floor * worst)


def keep(points: list[dict], calib: tuple[int, ...], k: float, floor: float, l1: float,
         min_sparsity: float, tau_plateau: float = 0.0) -> dict | None:
    """The stage-1 point the rule keeps (None: the head is dense)."""
    def sparsity(p: dict) -> float:
        return statistics.mean(p["sparsity_stage1_per_sample"][s] for s in calib)

    def passes(p: dict) -> bool:
        return predicted([p["error"][s] for s in calib], k, floor) <= l1

    best, best_key = None, None
    for p in points:
        if not passes(p):
            continue
        key = (sparsity(p), -max(p["error"][s] for s in calib))
        if best_key is None or key > best_key:
            best, best_key = p, key
    if best is None or best_key[0] < min_sparsity:
        return None
    if tau_plateau > 0:
        s0, t0 = best_key[0], best["tau"]

        def acceptable(p: dict) -> bool:
            least = max(s0 - tau_plateau * (p["tau"] - t0), min_sparsity)
            return p["tau"] > t0 and passes(p) and sparsity(p) >= least

        cands = [p for p in points if acceptable(p)]
        if cands:
            best = max(cands, key=lambda p: (p["tau"], sparsity(p),
                                             -max(p["error"][s] for s in calib), -p["theta"]))
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="sparge tune --trace output of >= 3 samples")
    ap.add_argument("--calib", type=int, default=2, help="calibration samples per rotation")
    ap.add_argument("--k", type=float, default=3.0, help="K of the spread rule (default 3, as sparge tune)")
    ap.add_argument("--floors", default="0,0.1,0.2,0.3", help="spread floors F to compare")
    ap.add_argument("--tau-plateau", type=float, default=0.0,
                    help="R of the tau plateau guard (default 0: off)")
    a = ap.parse_args()
    with open(a.trace) as f:
        t = json.load(f)
    if t.get("schema") != "sparge.tune-trace":
        ap.error(f"{a.trace}: not a sparge tune --trace file")
    l1, min_sp = t["budget"]["l1"], t.get("min_sparsity", 0.05)
    heads = [[p for p in h["points"] if p["stage"] == "stage1"] for h in t["heads"]]
    n = len(heads[0][0]["error"])
    if not 0 < a.calib < n:
        ap.error(f"--calib {a.calib}: the trace has {n} samples")
    for floor in (float(x) for x in a.floors.split(",")):
        over = total = 0
        sparsity, rows = [], []
        for calib in itertools.combinations(range(n), a.calib):
            for held in (s for s in range(n) if s not in calib):
                o, sp = 0, []
                for pts in heads:
                    p = keep(pts, calib, a.k, floor, l1, min_sp, a.tau_plateau)
                    sp.append(0.0 if p is None else p["sparsity_stage1_per_sample"][held])
                    o += p is not None and p["error"][held] > l1
                over, total = over + o, total + len(heads)
                sparsity += sp
                rows.append(f"{','.join(map(str, calib))}->{held}: {o} over, "
                            f"{statistics.mean(sp):.3f}")
        print(f"K {a.k:g} floor {floor:g} tau plateau {a.tau_plateau:g}: {over} of {total} "
              f"held-out heads over l1, mean held-out stage-1 sparsity "
              f"{statistics.mean(sparsity):.4f}  [{'; '.join(rows)}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
