#!/usr/bin/env python3
"""Summarise an Nsight Compute source-page CSV (SASS level) of one kernel launch.

    ncu --set full --import-source yes -k regex:attention_kernel -c 1 -o prof <app>
    ncu -i prof.ncu-rep --page source --csv --print-source sass > sass.csv
    scripts/ncu_hotspots.py sass.csv [--top 40]

Prints (1) the dynamic instruction mix per opcode (executed warp instructions and warp-stall
samples), and (2) the instructions with the most stall samples, each with its dominant stall
reasons. Column names differ between ncu versions, so they are matched by substring; the header
is printed when a needed column is missing.
"""
import argparse
import collections
import csv
import sys


def find(header, *needles, avoid=()):
    for i, name in enumerate(header):
        low = name.lower()
        if all(n in low for n in needles) and not any(a in low for a in avoid):
            return i
    return None


def num(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.reader(f))
    start = next((i for i, r in enumerate(rows) if find(r, "source") is not None), None)
    if start is None:
        sys.exit("no header with a 'Source' column: " + repr(rows[:3]))
    header, body = rows[start], [r for r in rows[start + 1:] if len(r) == len(rows[start])]
    c_src = find(header, "source")
    c_exec = find(header, "instructions executed", avoid=("predicated", "thread"))
    c_samp = find(header, "warp stall sampling (all")
    if c_samp is None:
        c_samp = find(header, "sampling", "all")
    if c_exec is None or c_samp is None:
        print("columns:", header)
        sys.exit("missing 'Instructions Executed' or 'Warp Stall Sampling (All ...)' column")
    # Per-reason columns: the stall_* sampling columns, if this ncu version emits them.
    reasons = [(i, h) for i, h in enumerate(header) if "stall" in h.lower() and i != c_samp
               and "not issued" not in h.lower() and "sampling" not in h.lower()]

    total_exec = sum(num(r[c_exec]) for r in body) or 1.0
    total_samp = sum(num(r[c_samp]) for r in body) or 1.0
    mix = collections.defaultdict(lambda: [0.0, 0.0])
    for r in body:
        op = r[c_src].split()[0] if r[c_src].split() else "?"
        if op.startswith("@"):
            op = r[c_src].split()[1] if len(r[c_src].split()) > 1 else op
        op = op.split(".")[0]
        mix[op][0] += num(r[c_exec])
        mix[op][1] += num(r[c_samp])
    print(f"total executed warp instructions {total_exec:.0f}, stall samples {total_samp:.0f}")
    print(f"{'opcode':<14}{'exec %':>8}{'samples %':>11}")
    for op, (e, s) in sorted(mix.items(), key=lambda kv: -kv[1][1])[:30]:
        print(f"{op:<14}{100 * e / total_exec:>8.2f}{100 * s / total_samp:>11.2f}")

    print(f"\ntop {args.top} instructions by stall samples (reason columns: {len(reasons)})")
    for r in sorted(body, key=lambda r: -num(r[c_samp]))[:args.top]:
        top = sorted(((num(r[i]), h) for i, h in reasons), reverse=True)[:3]
        why = ", ".join(f"{h.split('(')[0].strip()} {v:.0f}" for v, h in top if v > 0)
        print(f"{100 * num(r[c_samp]) / total_samp:6.2f}%  exec {num(r[c_exec]):>10.0f}  "
              f"{r[c_src].strip()[:70]:<70}  {why}")


if __name__ == "__main__":
    main()
