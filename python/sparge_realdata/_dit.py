"""DiTStack: a DiT-shaped transformer stack whose attention sees the real-image structure.

A benchmark of a whole forward needs a model; a model with random weights has attention with no
structure (nothing to skip), and a real DiT checkpoint cannot be had offline. This stack is the
generator of ``_generate.py`` lifted into a model: the photograph's patch features f [N, F] are
embedded as x0 = f E with E [F, C] having orthonormal rows (E Eᵀ = I), and block l's fused qkv
weight [C, (H + 2 Hkv) D] is Eᵀ times layer l's generator projection. Block 0's q, k, v are
therefore exactly the generator's tensors of layer 0 (same weights, temperatures, 3-D rotary);
later blocks see the residual stream after the gated updates of the blocks before them.

Per block (DiT with adaLN-Zero's gates frozen at ``gate``):
    x += gate * Wo · attention(rope(x Wq), rope(x Wk), x Wv)
    x += gate * W2 · gelu(W1 · layer_norm(x))          (MLP ratio 4)
The attention input is not normalised: a per-token norm would rescale each query and blur the
locality the benchmark is about. Shapes: x [1, N, C], C = heads · head_dim; attention tensors
[1, H, N, D] (SDPA's HND layout), so sparge_capture and sparge.apply see ordinary SDPA calls.
"""

from __future__ import annotations

import math

import numpy as np

from . import _generate as g

_TAG_DIT = 6


def _rope_torch(x, tables):
    """Rotary on x [B, H, N, D] with ``tables`` = [(offset, half, cos [N, half], sin [N, half])]
    as torch tensors on x's device; returns a new tensor ("rotate half" per part, like
    _generate.apply_rope)."""
    import torch

    parts, last = [], 0
    for off, half, c, s in tables:
        a, b = x[..., off:off + half], x[..., off + half:off + 2 * half]
        parts += [a * c - b * s, b * c + a * s]
        last = off + 2 * half
    if last < x.shape[-1]:
        parts.append(x[..., last:])
    return torch.cat(parts, dim=-1)


def build_dit(o: "g.Options", blocks: int, *, gate: float = 0.1, device="cpu", dtype=None):
    """Returns (model, embed): the stack on ``device`` in ``dtype`` (default bfloat16) and
    ``embed(sample)`` -> x0 [1, N, C] of photograph ``o.images[sample]``."""
    import torch
    import torch.nn.functional as F

    o.resolve()
    if o.kind != "video":
        raise g.UsageError("DiTStack needs --kind video (an image grid)")
    dtype = dtype or torch.bfloat16
    h, hkv, d, f = o.heads, o.kv_heads, o.head_dim, o.feature_dim
    c = h * d
    if c < f:
        raise g.UsageError(f"heads x head_dim = {c} must be >= the feature dim {f}")
    rng = g._rng(o.seed, _TAG_DIT)
    # E [F, C] with orthonormal rows: the transpose of the Q factor of a Gaussian [C, F].
    e = np.linalg.qr(rng.standard_normal((c, f)))[0].T
    tables = g.rope_tables(g.rope_parts(o))

    class Block(torch.nn.Module):
        def __init__(self, layer: int):
            super().__init__()
            w = g.layer_weights(o, layer)
            wall = np.concatenate([t * wq for wq, t in zip(w.wq, w.temp)] + w.wk + w.wv, axis=1)
            self.qkv = torch.nn.Linear(c, (h + 2 * hkv) * d, bias=False)
            self.qkv.weight.data = torch.from_numpy((e.T @ wall).T.astype(np.float32))
            r = g._rng(o.seed, _TAG_DIT, layer)
            lin = lambda i, j: torch.from_numpy(  # noqa: E731
                (r.standard_normal((j, i)) / math.sqrt(i)).astype(np.float32))
            self.out = torch.nn.Linear(c, c, bias=False)
            self.out.weight.data = lin(h * d, c)
            self.norm = torch.nn.LayerNorm(c, elementwise_affine=False)
            self.fc1 = torch.nn.Linear(c, 4 * c, bias=False)
            self.fc1.weight.data = lin(c, 4 * c)
            self.fc2 = torch.nn.Linear(4 * c, c, bias=False)
            self.fc2.weight.data = lin(4 * c, c)

        def forward(self, x, rope):
            b, n, _ = x.shape
            qkv = self.qkv(x).view(b, n, h + 2 * hkv, d).transpose(1, 2)
            q = _rope_torch(qkv[:, :h], rope)
            k = _rope_torch(qkv[:, h:h + hkv], rope)
            v = qkv[:, h + hkv:]
            a = F.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != h)
            x = x + gate * self.out(a.transpose(1, 2).reshape(b, n, c))
            return x + gate * self.fc2(F.gelu(self.fc1(self.norm(x)), approximate="tanh"))

    class DiTStack(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(Block(i) for i in range(blocks))
            self._rope = [(off, half, torch.from_numpy(cs).float(), torch.from_numpy(sn).float())
                          for off, half, cs, sn in tables]

        def _apply(self, fn, *args, **kwargs):  # keeps the rotary tables on the model's device
            out = super()._apply(fn, *args, **kwargs)
            self._rope = [(off, half, fn(cs), fn(sn)) for off, half, cs, sn in self._rope]
            return out

        def forward(self, x):
            for blk in self.blocks:
                x = blk(x, self._rope)
            return x

    model = DiTStack().to(device=device, dtype=dtype).eval()
    vocab = g._vocabulary(o.seed, f)
    e_t = torch.from_numpy(e.astype(np.float32))

    def embed(sample: int):
        feats = torch.from_numpy(g.sample_features(o, sample, vocab).astype(np.float32))
        return (feats @ e_t).unsqueeze(0).to(device=device, dtype=dtype)

    return model, embed
