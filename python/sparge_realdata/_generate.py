"""Q/K/V built from photographs (kind video) or from Zipf-distributed token streams (kind text).

Construction (docs/real-data.md):

- features f [N, F], F = patch*patch*3: text tokens first (a seeded embedding of Zipf token
  ids, plus half of the previous token's embedding), then the image tokens: patch x patch RGB
  patches of the frames of a slow camera pan over the photograph, row-major (t, h, w),
  standardised per feature over the sample's image tokens;
- per layer and KV head g: Wk = rho*B + sqrt(1 - rho^2)*W', Wv, with B, W', Wv Gaussian / sqrt(F)
  and rho in [0.5, 0.95]; per query head h of group g: Wq = B for the group's first head,
  c*B + sqrt(1 - c^2)*N (c in [0.7, 0.95]) for the others; so q.k is large for similar tokens;
- q = temp * rope(f Wq), k = rope(f Wk), v = f Wv; temp per query head, log-uniform in [0.5, 3];
  3-D rotary (t, h, w) for video, text tokens at position (0, 0, 0), i.e. not rotated, as
  CogVideoX does; 1-D rotary over the token index for text.

Weights depend on (seed, layer, head) only, never on the sample: every sample of a layer goes
through the same "model". Same arguments => same tensors.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import _images

PRODUCER = "sparge_realdata 0.1.0"
VOCAB = 8192
ZIPF_EXPONENT = 1.1
ROPE_THETA = 10000.0
RHO_RANGE = (0.5, 0.95)        # correlation of Wk with the group's query base
GROUP_RANGE = (0.7, 0.95)      # GQA: correlation of a further query head with the base
TEMP_RANGE = (0.5, 3.0)        # per query head, log-uniform
PREV_TOKEN_WEIGHT = 0.5        # text features: e(tok_i) + 0.5 e(tok_{i-1})
COPY_PROB = 0.02               # text: chance per token of starting a copied earlier span
COPY_SPAN = (4, 32)            # its length, inclusive

# Stream tags of the seeded generators (numpy SeedSequence entropy words).
_TAG_EMBED, _TAG_VOCAB, _TAG_TOKENS, _TAG_KV, _TAG_Q = 1, 2, 3, 4, 5

PRESETS = {
    "tiny": {"frames": 2, "grid_h": 4, "grid_w": 6, "text_prefix": 16, "text_len": 256},
    "full": {"frames": 13, "grid_h": 30, "grid_w": 45, "text_prefix": 226, "text_len": 2048},
}
DTYPES = ("float16", "bfloat16", "float32")


class UsageError(ValueError):
    """Bad arguments: the CLI prints the message as one line and exits 2."""


@dataclass
class Options:
    output: str
    kind: str = "video"
    images: list[str] = field(default_factory=lambda: ["astronaut", "coffee", "chelsea"])
    layers: int = 1
    heads: int = 8
    kv_heads: int | None = None
    head_dim: int = 64
    size: str = "full"
    frames: int | None = None
    grid_h: int | None = None
    grid_w: int | None = None
    patch: int = 8
    text_prefix: int | None = None
    dtype: str = "float16"
    seed: int = 0

    def resolve(self) -> "Options":
        """Fills unset shape fields from the --size preset and validates everything."""
        if self.size not in PRESETS:
            raise UsageError(f"--size must be tiny or full, got {self.size!r}")
        p = PRESETS[self.size]
        for name in ("frames", "grid_h", "grid_w"):
            if getattr(self, name) is None:
                setattr(self, name, p[name])
        if self.text_prefix is None:
            self.text_prefix = p["text_prefix"] if self.kind == "video" else p["text_len"]
        if self.kv_heads is None:
            self.kv_heads = self.heads
        if self.kind not in ("video", "text"):
            raise UsageError(f"--kind must be video or text, got {self.kind!r}")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.images or any(not n for n in self.images):
            raise UsageError("--images needs at least one image name (comma-separated)")
        try:
            _images.check_names(self.images)
        except _images.UnknownImage as e:
            raise UsageError(str(e)) from None
        for name in ("layers", "heads", "kv_heads", "frames", "grid_h", "grid_w", "patch"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if self.heads % self.kv_heads:
            raise UsageError(f"--kv-heads {self.kv_heads} must divide --heads {self.heads}")
        if self.head_dim < 6 or self.head_dim % 2:
            raise UsageError(f"--head-dim must be even and >= 6 (3-D rotary), got {self.head_dim}")
        if self.text_prefix < 0 or (self.kind == "text" and self.text_prefix < 1):
            raise UsageError("--text-prefix must be >= 0 (>= 1 for --kind text: the sequence)")
        if self.seed < 0:
            raise UsageError("--seed must be >= 0")
        return self

    @property
    def seq_len(self) -> int:
        if self.kind == "text":
            return self.text_prefix
        return self.text_prefix + self.frames * self.grid_h * self.grid_w

    @property
    def feature_dim(self) -> int:
        return self.patch * self.patch * 3


def _rng(*words: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


# -- tokens and features ---------------------------------------------------------------------
def _vocabulary(seed: int, feat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Zipf probabilities over ranks, rank -> token id, embedding table [VOCAB, feat] with unit
    std overall)."""
    ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
    p = ranks ** -ZIPF_EXPONENT
    p /= p.sum()
    perm = _rng(seed, _TAG_VOCAB).permutation(VOCAB)
    emb = _rng(seed, _TAG_EMBED).standard_normal((VOCAB, feat))
    emb /= emb.std()
    return p, perm, emb


def token_ids(n: int, rng: np.random.Generator, p: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """n token ids: Zipf draws, and now and then (COPY_PROB per token) a copy of a random
    earlier span (repeated phrases: the structure induction heads attend along)."""
    fresh = perm[rng.choice(VOCAB, size=n, p=p)]
    ids = np.empty(n, dtype=np.int64)
    i = j = 0
    while i < n:
        if i >= 2 * COPY_SPAN[0] and rng.random() < COPY_PROB:
            length = min(int(rng.integers(COPY_SPAN[0], COPY_SPAN[1] + 1)), n - i)
            start = int(rng.integers(0, i - COPY_SPAN[0] + 1))
            length = min(length, i - start)
            ids[i:i + length] = ids[start:start + length]
            i += length
        else:
            ids[i] = fresh[j]
            i += 1
            j += 1
    return ids


def text_features(ids: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """e(tok_i) + PREV_TOKEN_WEIGHT * e(tok_{i-1}), scaled to unit std overall."""
    f = emb[ids].copy()
    f[1:] += PREV_TOKEN_WEIGHT * emb[ids[:-1]]
    return f / f.std()


def image_features(o: Options, name: str) -> np.ndarray:
    """[T*gh*gw, F]: patches of the panned frames, standardised per feature."""
    img = _images.load_photo(name)
    frames = _images.pan_frames(img, o.frames, o.grid_h * o.patch, o.grid_w * o.patch, o.patch)
    x = _images.patch_tokens(frames, o.patch)
    x = x - x.mean(axis=0)
    return x / np.maximum(x.std(axis=0), 1e-6)


def sample_features(o: Options, sample: int, vocab) -> np.ndarray:
    p, perm, emb = vocab
    n_text = o.text_prefix
    ids = token_ids(n_text, _rng(o.seed, _TAG_TOKENS, sample), p, perm)
    text = text_features(ids, emb) if n_text else np.zeros((0, o.feature_dim))
    if o.kind == "text":
        return text
    return np.concatenate([text, image_features(o, o.images[sample])], axis=0)


# -- rotary ----------------------------------------------------------------------------------
def rope_parts(o: Options) -> list[tuple[int, np.ndarray]]:
    """(width, positions [N]) per rotary part, in channel order. Video: t, h, w with widths
    2*(D//8), 2*((D - that)//4), the rest (64 -> 16, 24, 24; 128 -> 32, 48, 48), text tokens at
    position 0; text: one part over all D channels, position = token index."""
    d, n = o.head_dim, o.seq_len
    if o.kind == "text":
        return [(d, np.arange(n, dtype=np.float64))]
    dt = 2 * max(1, d // 8)
    dh = 2 * ((d - dt) // 4)
    dw = d - dt - dh
    grid = np.indices((o.frames, o.grid_h, o.grid_w), dtype=np.float64).reshape(3, -1)
    pos = np.zeros((3, n))
    pos[:, o.text_prefix:] = grid
    return [(dt, pos[0]), (dh, pos[1]), (dw, pos[2])]


def rope_tables(parts) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(offset, half width, cos [N, half], sin [N, half]) per part."""
    out, off = [], 0
    for width, pos in parts:
        half = width // 2
        inv = ROPE_THETA ** (-np.arange(half, dtype=np.float64) / half)
        ang = pos[:, None] * inv[None, :]
        out.append((off, half, np.cos(ang), np.sin(ang)))
        off += width
    return out


def apply_rope(x: np.ndarray, tables) -> None:
    """In place on x [N, ..., D]: rotates channel pairs (i, i + half) of each part ("rotate
    half" convention)."""
    for off, half, c, s in tables:
        shape = (c.shape[0],) + (1,) * (x.ndim - 2) + (half,)
        c, s = c.reshape(shape).astype(x.dtype), s.reshape(shape).astype(x.dtype)
        a, b = x[..., off:off + half], x[..., off + half:off + 2 * half]
        a2 = a * c - b * s
        b *= c
        b += a * s
        a[...] = a2


# -- weights ---------------------------------------------------------------------------------
@dataclass
class LayerWeights:
    wq: list[np.ndarray]     # per query head [F, D]
    temp: list[float]        # per query head
    wk: list[np.ndarray]     # per KV head [F, D]
    wv: list[np.ndarray]
    rho: list[float]


def layer_weights(o: Options, layer: int) -> LayerWeights:
    f, d = o.feature_dim, o.head_dim
    group = o.heads // o.kv_heads
    bases, wk, wv, rho = [], [], [], []
    for g in range(o.kv_heads):
        r = _rng(o.seed, _TAG_KV, layer, g)
        base = r.standard_normal((f, d)) / math.sqrt(f)
        other = r.standard_normal((f, d)) / math.sqrt(f)
        wv.append(r.standard_normal((f, d)) / math.sqrt(f))
        rh = float(r.uniform(*RHO_RANGE))
        bases.append(base)
        wk.append(rh * base + math.sqrt(1 - rh * rh) * other)
        rho.append(rh)
    wq, temp = [], []
    for h in range(o.heads):
        r = _rng(o.seed, _TAG_Q, layer, h)
        temp.append(float(math.exp(r.uniform(math.log(TEMP_RANGE[0]), math.log(TEMP_RANGE[1])))))
        base = bases[h // group]
        if h % group == 0:
            wq.append(base)
        else:
            c = float(r.uniform(*GROUP_RANGE))
            wq.append(c * base + math.sqrt(1 - c * c) * r.standard_normal((f, d)) / math.sqrt(f))
    return LayerWeights(wq, temp, wk, wv, rho)


def project(feats: np.ndarray, w: LayerWeights, tables) -> tuple[np.ndarray, ...]:
    """float32 q [1, H, N, D], k, v [1, Hkv, N, D]: one float32 matmul for every head's
    projection (the temperature folded into Wq: rotary is linear), rotary on the q and k heads.
    """
    h, hkv, d = len(w.wq), len(w.wk), w.wq[0].shape[1]
    wall = np.concatenate([t * wq for wq, t in zip(w.wq, w.temp)] + w.wk + w.wv, axis=1)
    x = (feats.astype(np.float32) @ wall.astype(np.float32)).reshape(-1, h + 2 * hkv, d)
    apply_rope(x[:, :h + hkv], tables)
    x = x.transpose(1, 0, 2)[None]
    return (np.ascontiguousarray(x[:, :h]), np.ascontiguousarray(x[:, h:h + hkv]),
            np.ascontiguousarray(x[:, h + hkv:]))


def model_id(o: Options) -> str:
    """Model id: "realdata-video-astronaut,coffee,chelsea", or "realdata-text"."""
    return f"realdata-video-{','.join(o.images)}" if o.kind == "video" else "realdata-text"


# -- the dump --------------------------------------------------------------------------------
def generate(o: Options) -> dict:
    """Writes the dump (atomically, through sparge_capture's DumpFileWriter); returns a summary.

    Samples: one per entry of o.images (video: photograph s; text: token stream s, the names
    only count). Raises UsageError on bad options.
    """
    o.resolve()
    import torch

    from sparge_capture import DumpFileWriter

    start = time.perf_counter()
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16,
              "float32": torch.float32}[o.dtype]
    grid = (o.frames, o.grid_h, o.grid_w) if o.kind == "video" else None
    extra = {"realdata_kind": o.kind, "realdata_images": ",".join(o.images),
             "realdata_size": o.size}
    writer = DumpFileWriter(o.output, model_id=model_id(o), producer=PRODUCER,
                            capture_point="realdata", grid=grid,
                            text_prefix=o.text_prefix if o.kind == "video" else 0,
                            extra_attrs=extra)
    try:
        writer.set_root_attr("realdata_seed", np.int64(o.seed))
        writer.set_root_attr("realdata_patch", np.int64(o.patch))
        if o.kind == "text":
            writer.set_root_attr("causal", np.int64(1))
        vocab = _vocabulary(o.seed, o.feature_dim)
        tables = rope_tables(rope_parts(o))
        weights = [layer_weights(o, layer) for layer in range(o.layers)]
        for s in range(len(o.images)):
            feats = sample_features(o, s, vocab)
            assert feats.shape == (o.seq_len, o.feature_dim), feats.shape
            for layer, w in enumerate(weights):
                q, k, v = (torch.from_numpy(t).to(tdtype) for t in project(feats, w, tables))
                writer.write_sample(layer, f"realdata.layers.{layer}.attn", s, q, k, v,
                                    prompt=s)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"path": os.fspath(o.output), "kind": o.kind, "layers": o.layers,
            "samples": len(o.images), "q_shape": [1, o.heads, o.seq_len, o.head_dim],
            "kv_shape": [1, o.kv_heads, o.seq_len, o.head_dim], "dtype": o.dtype,
            "seconds": time.perf_counter() - start}
