"""python3 -m sparge_realdata -o OUT.h5 [options]: see --help and docs/real-data.md."""

from __future__ import annotations

import argparse
import os
import sys

# Run as `python3 -m sparge_realdata` from python/ or with PYTHONPATH=python: sparge_capture is
# a sibling package; make it importable when only this package's directory is on the path.
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _HERE not in sys.path:
    sys.path.append(_HERE)

from sparge_realdata import PHOTOS, Options, UsageError, generate  # noqa: E402

PROG = "python3 -m sparge_realdata"


def parse_args(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Write a sparge Q/K/V dump built from real photographs (kind video: a "
                    "camera pan over each photograph behind a text prefix) or from Zipf token "
                    "streams with repeated phrases (kind text, causal). Sample s comes from "
                    "image s of --images. Same flags => same tensors.",
        epilog=f"images: {', '.join(PHOTOS)} (bundled with scikit-image, no download). "
               "Presets: --size tiny = frames 2, grid 4x6, text prefix 16 (text kind: 256 "
               "tokens); full = frames 13, grid 30x45, text prefix 226 (N = 17776, CogVideoX; "
               "text kind: 2048 tokens). Explicit flags override the preset. Exit codes: 0 ok, "
               "2 bad arguments, 74 cannot write the output.")
    p.add_argument("-o", "--output", required=True, help="output dump (.h5), written atomically")
    p.add_argument("--kind", choices=("video", "text"), default="video")
    p.add_argument("--images", default="astronaut,coffee,chelsea",
                   help="comma-separated photographs, one sample each (default: %(default)s)")
    p.add_argument("--layers", type=int, default=1, help="attention layers (default: 1)")
    p.add_argument("--heads", type=int, default=8, help="query heads H (default: 8)")
    p.add_argument("--kv-heads", type=int, default=None, help="KV heads, divides H (default: H)")
    p.add_argument("--head-dim", type=int, default=64, help="head dimension D (default: 64)")
    p.add_argument("--frames", type=int, default=None, help="video frames T (preset)")
    p.add_argument("--grid-h", type=int, default=None, help="patch rows per frame (preset)")
    p.add_argument("--grid-w", type=int, default=None, help="patch columns per frame (preset)")
    p.add_argument("--patch", type=int, default=8, help="patch side in pixels (default: 8)")
    p.add_argument("--text-prefix", type=int, default=None,
                   help="text tokens before the image tokens; kind text: the sequence length "
                        "(preset)")
    p.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    p.add_argument("--seed", type=int, default=0, help="weights and text seed (default: 0)")
    p.add_argument("--size", choices=("tiny", "full"), default="full",
                   help="shape preset (default: full)")
    a = p.parse_args(argv)
    return Options(output=a.output, kind=a.kind, images=a.images.split(","), layers=a.layers,
                   heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim, size=a.size,
                   frames=a.frames, grid_h=a.grid_h, grid_w=a.grid_w, patch=a.patch,
                   text_prefix=a.text_prefix, dtype=a.dtype, seed=a.seed)


def main(argv: list[str] | None = None) -> int:
    o = parse_args(argv)
    try:
        r = generate(o)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {o.output}: cannot write: {e}", file=sys.stderr)
        return 74
    print(f"sparge_realdata: wrote {r['path']}: {r['kind']}, {r['layers']} layer(s) x "
          f"{r['samples']} sample(s), q {r['q_shape']} k/v {r['kv_shape']} {r['dtype']}, "
          f"{r['seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
