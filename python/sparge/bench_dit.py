"""A whole-model benchmark of torch.ops.sparge.attention: a DiT-shaped stack, end to end.

    python3 -m sparge.bench_dit -o OUT_DIR [--blocks 8 --heads 24 --head-dim 64 --runs 20]

What a user does, on one GPU, in one run:
  1. build the stack (sparge_realdata.build_dit: a DiT-shaped model whose attention sees
     real-image structure; N = 17776 tokens at --size full, CogVideoX's shape);
  2. capture its SDPA calls on three photographs with sparge_capture;
  3. `sparge tune` them on the first two (CUDA oracle, default flags);
  4. run the third photograph (held out) through the model with SDPA on cuDNN and with
     sparge.apply(model, tuned.yaml), eagerly and replayed from CUDA graphs (both sides), timing
     each whole forward with CUDA events in the same process, alternating the methods round by
     round in a rotating order, each timed forward right after an untimed one of its own.
It writes OUT_DIR/dit-stack.json and .md: the timings, the speed-up over cuDNN, the realised
sparsity per layer and the model output's error against the cuDNN forward. The C++ `sparge
bench` times kernels; a model forward needs torch, so this lives here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


# Where scripts/setup.sh builds the CLI, from this file's checkout (python/sparge/..).
DEFAULT_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "src",
                           "sparge")


def _args(argv):
    p = argparse.ArgumentParser(prog="python3 -m sparge.bench_dit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out-dir", required=True, help="directory for the dump, the tuned "
                   "config and the results (created; files in it are replaced)")
    p.add_argument("--blocks", type=int, default=8, help="transformer blocks (default 8)")
    p.add_argument("--heads", type=int, default=24, help="attention heads (default 24)")
    p.add_argument("--head-dim", type=int, default=64, help="head dim, 64 or 128 (default 64)")
    p.add_argument("--size", default="full", choices=["tiny", "full"],
                   help="token grid preset of sparge_realdata (full: 226 + 13x30x45 = 17776)")
    p.add_argument("--runs", type=int, default=20, help="timed forwards per method (median)")
    p.add_argument("--warmup", type=int, default=3, help="untimed forwards per method first")
    p.add_argument("--sparge-bin", default=os.environ.get("SPARGE_BIN", DEFAULT_BIN),
                   help="the sparge CLI used for `sparge tune` (default $SPARGE_BIN, else "
                   "this checkout's build/src/sparge)")
    p.add_argument("--tune-args", default="", help="extra arguments for `sparge tune`, e.g. "
                   "'--l1 0.08 --l2 0.1' (default: none, the default budget)")
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph timing")
    p.add_argument("--rotations", action="store_true", help="instead of timing, tune on every "
                   "pair of the three photographs and check the third (CUDA oracle, "
                   "--tune-args applied): OUT_DIR/holdout-rotations.{json,md}")
    return p.parse_args(argv)


def _rel_l1(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().sum() / b.abs().sum())


def _time_ms(fn, torch) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _tune(a, dump, samples, cfg, log_path):
    """`sparge tune` of the dump's samples (CUDA oracle) into cfg; (command, seconds). Raises
    CalledProcessError (its output printed) when the tune fails."""
    cmd = [a.sparge_bin, "--no-progress", "tune", dump, "--samples", samples, "--backend",
           "cuda", "-o", cfg] + a.tune_args.split()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        print(r.stdout + r.stderr, file=sys.stderr)
        raise subprocess.CalledProcessError(r.returncode, cmd)
    with open(log_path, "w") as f:
        f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
    return cmd, seconds


def holdout_summary(ev: dict, sample: int) -> dict:
    """The per-head `sparge eval --format json` report of one held-out sample, reduced to what
    the hold-out check asks: heads over budget, mean sparsity, worst errors."""
    heads = ev["heads"]
    return {
        "sample": sample, "heads": len(heads),
        "heads_over_budget": sum(1 for h in heads if not h["pass"]),
        "stage1_sparsity_mean": statistics.mean(h["sparsity_stage1"] for h in heads),
        "stage12_sparsity_mean": statistics.mean(h["sparsity_stage12"] for h in heads),
        "worst_error_stage1": max(h["error_stage1"] for h in heads),
        "worst_error_stage12": max(h["error_stage12"] for h in heads),
        "budget": ev["budget"],
    }


def _holdout(a, dump, cfg, sample):
    """holdout_summary of `sparge eval` of one held-out sample against cfg (CUDA backend)."""
    cmd = [a.sparge_bin, "--no-progress", "eval", dump, cfg, "--samples", str(sample),
           "--backend", "cuda", "--format", "json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 1):  # 1 = ran, some head over budget: reported, not fatal here
        print(r.stdout + r.stderr, file=sys.stderr)
        raise subprocess.CalledProcessError(r.returncode, cmd)
    ev = json.loads(r.stdout)
    return holdout_summary(ev, sample)


def rotations_markdown(images, rows, tune_args) -> str:
    """The table of holdout-rotations.md: one row per rotation (calibration photographs ->
    held-out one)."""
    lines = ["| rotation | heads over budget | held-out stage-1 / 1+2 sparsity | worst held-out "
             "error l1 / l2 | tune s |", "|---|---|---|---|---|"]
    for r in rows:
        h = r["holdout"]
        cal = ", ".join(images[int(i)] for i in r["calibration"].split(","))
        lines.append(f"| {cal} -> {images[h['sample']]} | {h['heads_over_budget']} of "
                     f"{h['heads']} | {h['stage1_sparsity_mean']:.3f} / "
                     f"{h['stage12_sparsity_mean']:.3f} | {h['worst_error_stage1']:.4f} / "
                     f"{h['worst_error_stage12']:.4f} | {r['tune_seconds']:.1f} |")
    over = sum(r["holdout"]["heads_over_budget"] for r in rows)
    heads = sum(r["holdout"]["heads"] for r in rows)
    mean = statistics.mean(r["holdout"]["stage1_sparsity_mean"] for r in rows) if rows else 0.0
    lines += ["", f"All rotations: {over} of {heads} heads over budget, mean held-out stage-1 "
              f"sparsity {mean:.3f}. `sparge tune --backend cuda` flags: "
              f"{tune_args or '(defaults)'}."]
    return "\n".join(lines) + "\n"


def _rotations(a, dump, images, log) -> int:
    """Every rotation of the three photographs: tune on two, eval the third."""
    rows = []
    for held in range(len(images)):
        cal = ",".join(str(i) for i in range(len(images)) if i != held)
        cfg = os.path.join(a.out_dir, f"tuned-{cal.replace(',', '')}.yaml")
        try:
            _, secs = _tune(a, dump, cal, cfg, cfg[:-5] + ".tune.txt")
            h = _holdout(a, dump, cfg, held)
        except subprocess.CalledProcessError as e:
            return e.returncode
        rows.append({"calibration": cal, "config": os.path.basename(cfg),
                     "tune_seconds": round(secs, 2), "holdout": h})
        log(f"{cal} -> {held}: {h['heads_over_budget']} of {h['heads']} heads over budget, "
            f"held-out stage-1 sparsity {h['stage1_sparsity_mean']:.4f} (tune {secs:.1f} s)")
    import torch
    res = {"schema": "sparge.holdout-rotations", "schema_version": 1,
           "device": torch.cuda.get_device_name(), "git": os.environ.get("SPARGE_GIT", ""),
           "model": {"blocks": a.blocks, "heads": a.heads, "head_dim": a.head_dim,
                     "images": images}, "tune_args": a.tune_args, "rotations": rows}
    with open(os.path.join(a.out_dir, "holdout-rotations.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = (f"# DiT stack hold-out rotations ({res['device']}, git {res['git'] or '-'})\n\n"
          + rotations_markdown(images, rows, a.tune_args))
    with open(os.path.join(a.out_dir, "holdout-rotations.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def main(argv=None) -> int:
    a = _args(argv)
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import sparge
    import sparge_capture
    import sparge_realdata

    if not torch.cuda.is_available():
        print("sparge.bench_dit: no CUDA device", file=sys.stderr)
        return 69
    if not os.path.isfile(a.sparge_bin):
        print(f"sparge.bench_dit: {a.sparge_bin} not found (--sparge-bin)", file=sys.stderr)
        return 66
    os.makedirs(a.out_dir, exist_ok=True)
    dev = torch.device("cuda")
    o = sparge_realdata.Options(output="", heads=a.heads, head_dim=a.head_dim, size=a.size,
                                layers=a.blocks).resolve()
    grid = (o.frames, o.grid_h, o.grid_w)
    model, embed = sparge_realdata.build_dit(o, a.blocks, device=dev)
    xs = [embed(s) for s in range(len(o.images))]
    n = xs[0].shape[1]
    log = lambda m: print(f"sparge.bench_dit: {m}", file=sys.stderr, flush=True)  # noqa: E731

    # 2. capture (the user's step 1)
    dump = os.path.join(a.out_dir, "dit.h5")
    t0 = time.perf_counter()
    with torch.no_grad(), sparge_capture.capture(dump, model=model, model_id="dit-stack",
                                                 grid=grid, text_prefix=o.text_prefix):
        for x in xs:
            model(x)
    log(f"captured {a.blocks} layers x {len(xs)} samples in {time.perf_counter() - t0:.1f} s")

    if a.rotations:
        return _rotations(a, dump, o.images, log)

    # 3. tune on the first two photographs
    cfg = os.path.join(a.out_dir, "tuned.yaml")
    try:
        cmd, tune_s = _tune(a, dump, "0,1", cfg, os.path.join(a.out_dir, "tune.txt"))
    except subprocess.CalledProcessError as e:
        return e.returncode
    log(f"tuned in {tune_s:.1f} s")

    # 3b. what `sparge eval` says of the held-out photograph, per head against the budget
    try:
        holdout = _holdout(a, dump, cfg, len(xs) - 1)
    except subprocess.CalledProcessError as e:
        return e.returncode
    log(f"held-out eval: {holdout['heads_over_budget']} of {holdout['heads']} heads over budget, "
        f"stage-1 sparsity {holdout['stage1_sparsity_mean']:.4f}")

    # 4. the held-out photograph through both forwards
    x = xs[-1]
    with torch.no_grad():
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            dense = model(x)
        with sparge.apply(model, cfg) as ctx:
            out = model(x)
            stats = ctx.stats()
    err = _rel_l1(out.float(), dense.float())

    def cudnn():
        with torch.no_grad(), sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            model(x)

    applied = sparge.apply(model, cfg)

    def op():
        with torch.no_grad():
            model(x)

    def capture(forward):
        """(graph, static output) of forward(static x), warmed up on a side stream as
        torch.cuda.graph asks."""
        static_x = x.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.no_grad():
            forward(static_x)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(g):
            static_out = forward(static_x)
        g.replay()
        torch.cuda.synchronize()
        return g, static_out

    def cudnn_forward(inp):
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return model(inp)

    methods = {"sdpa_cudnn": cudnn}
    graph = None
    if not a.no_graph:  # both sides graphed, so the comparison is graph against graph too
        cudnn_graph, _ = capture(cudnn_forward)
        methods["sdpa_cudnn_graph"] = cudnn_graph.replay
    with applied:
        methods["sparge_op"] = op
        if not a.no_graph:
            graph, static_out = capture(model)
            graph_err = _rel_l1(static_out.float(), out.float())
            methods["sparge_op_graph"] = graph.replay
        for fn in methods.values():
            for _ in range(a.warmup):
                fn()
        times = {k: [] for k in methods}
        names = list(methods)
        for r in range(a.runs):
            # Alternate, and rotate the order every round: with a fixed order each method always
            # followed the same one, and the GPU's clocks carry over from it (session 15: our
            # eager forward timed 3.4 ms slower than its graph behind cuDNN's graph, the same
            # within 0.6 ms when profiled alone). One untimed forward first, for the same reason.
            for k in names[r % len(names):] + names[:r % len(names)]:
                methods[k]()
                times[k].append(_time_ms(methods[k], torch))
    med = {k: statistics.median(v) for k, v in times.items()}
    kept = sum(s["kept_blocks"] for s in stats)
    valid = sum(s["valid_blocks"] for s in stats)
    res = {
        "schema": "sparge.bench-dit", "schema_version": 1,
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(), "host": platform.node(),
        "git": os.environ.get("SPARGE_GIT", ""),
        "model": {"blocks": a.blocks, "heads": a.heads, "head_dim": a.head_dim, "tokens": n,
                  "grid": list(grid), "text_prefix": o.text_prefix, "dtype": "bfloat16",
                  "images": o.images, "held_out": o.images[-1]},
        "tune": {"command": " ".join(cmd[1:]), "seconds": round(tune_s, 2)},
        "runs": a.runs, "ms_median": med, "ms_all": times,
        "speedup_vs_cudnn": {k: med["sdpa_cudnn"] / v for k, v in med.items()},
        # like against like: eager against eager, graph against graph
        "speedup_same_mode": {"eager": med["sdpa_cudnn"] / med["sparge_op"],
                              **({"graph": med["sdpa_cudnn_graph"] / med["sparge_op_graph"]}
                                 if graph is not None else {})},
        "sparsity": {"stage1_mean": 1.0 - kept / valid if valid else 0.0, "per_layer": stats},
        "output_rel_l1_vs_cudnn": err,
        "holdout_eval": holdout,
    }
    if graph is not None:
        res["graph_vs_eager_rel_l1"] = graph_err
    with open(os.path.join(a.out_dir, "dit-stack.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = [f"# DiT-shaped stack, whole forward: torch.ops.sparge.attention vs SDPA cuDNN",
             "", f"Device: {res['device']}; torch {res['torch']}, cuDNN {res['cudnn']}; git "
             f"{res['git'] or '-'}.", "",
             f"Model: {a.blocks} blocks, {a.heads} heads x D {a.head_dim}, {n} tokens (grid "
             f"{grid[0]}x{grid[1]}x{grid[2]} + {o.text_prefix} text), bf16, batch 1. Tuned with "
             f"`sparge tune` (CUDA oracle, {tune_s:.0f} s) on {o.images[0]}, {o.images[1]}; "
             f"timed on the held-out {o.images[-1]}.", "",
             "| method | forward ms (median of %d) | vs cuDNN |" % a.runs, "|---|---|---|"]
    for k, v in med.items():
        lines.append(f"| {k} | {v:.3f} | {med['sdpa_cudnn'] / v:.3f}x |")
    same = res["speedup_same_mode"]
    lines += ["", "Like against like: eager "
              + f"{same['eager']:.3f}x" + (f", CUDA graph {same['graph']:.3f}x" if "graph" in same
                                           else "") + " (sparge.apply vs SDPA cuDNN)."]
    lines += ["", f"Realised stage-1 sparsity (held-out, all layers): "
              f"{res['sparsity']['stage1_mean']:.4f}; per layer: "
              + ", ".join(f"{s['sparsity']:.3f}" for s in stats) + " (tuned: "
              + ", ".join(f"{s['tuned_sparsity']:.3f}" for s in stats if s["tuned_sparsity"]
                          is not None) + f"; {sum(s['sparser_than_tuned'] for s in stats)} "
              "layer(s) sparser than tuned).",
              f"Model output rel-L1 vs the cuDNN forward: {err:.4f}.",
              f"`sparge eval --backend cuda` of the held-out photograph: "
              f"{holdout['heads_over_budget']} of {holdout['heads']} heads over budget (l1 "
              f"{holdout['budget']['l1']}, l2 {holdout['budget']['l2']}; worst "
              f"{holdout['worst_error_stage1']:.4f} / {holdout['worst_error_stage12']:.4f}), "
              f"mean stage-1 sparsity {holdout['stage1_sparsity_mean']:.4f}, stage 1+2 "
              f"{holdout['stage12_sparsity_mean']:.4f}."]
    if graph is not None:
        lines.append(f"CUDA-graph replay vs eager op output rel-L1: {graph_err:.2e}.")
    with open(os.path.join(a.out_dir, "dit-stack.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
