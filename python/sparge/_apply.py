"""sparge.apply: run a model's scaled_dot_product_attention calls through torch.ops.sparge."""

from __future__ import annotations

import contextlib

import torch

from sparge_capture import SdpaPatch

from ._config import Config, ConfigError, LayerConfig, load_config
from ._ops import load_library

_ACTIVE: "Applied | None" = None   # the latest apply() context, for sparge.stats()

# A layer whose realised sparsity exceeds what calibration saw by this much runs inputs the
# thresholds were not validated on: a fixed τ keeps fewer blocks where attention is more
# concentrated, and the error grows with it. On the DiT stack (reports/tune-real/holdout-dit.md)
# the held-out photograph that missed the budget on 54 of 192 heads ran every layer at 1.8-1.9x
# its tuned sparsity; the two that stayed within ran at 0.25x and 1.0x.
SPARSER_THAN_TUNED = 1.25


def _fold(t: torch.Tensor) -> torch.Tensor:
    """SDPA's [..., N, D] -> [B, H, N, D] (a missing batch dim becomes 1)."""
    if t.dim() == 3:
        return t.unsqueeze(0)
    if t.dim() > 4:
        return t.reshape(-1, *t.shape[-3:])
    return t


class Applied:
    """State of one apply() block: the config, the call position and the realised sparsity.

    Calls are matched to layers as sparge_capture recorded them: layer = call order within a
    forward of ``model`` (a forward pre-hook resets it), so the config must come from a capture
    of the same model.
    """

    def __init__(self, model: torch.nn.Module | None, config: Config):
        self.model = model
        self.config = config
        self.call = 0                   # next layer index within the current forward
        self.forwards = 0
        self._counts: dict[int, torch.Tensor] = {}   # layer -> int64 [2] (kept, valid), summed
        self._calls: dict[int, int] = {}
        self._thresholds: dict[tuple, tuple] = {}     # (layer, device) -> device tensors
        self._perm: dict[tuple, torch.Tensor] = {}    # device -> permutation
        self._module_stack: list[str] = []
        self._patch = SdpaPatch()

    # -- matching calls to layers ------------------------------------------------------------
    def _begin_forward(self, *_):
        self.call = 0
        self._module_stack.clear()

    def _end_forward(self, *_):
        self.forwards += 1
        n = len(self.config.layers)
        if self.call != n:
            raise ConfigError(f"{self.config.path}: the model made {self.call} attention calls in "
                              f"a forward, the config has {n} layers")

    def _layer(self, q: torch.Tensor, is_causal: bool) -> LayerConfig:
        idx = self.call
        cfg = self.config
        if idx >= len(cfg.layers):
            raise ConfigError(f"{cfg.path}: attention call {idx} of a forward, but the config "
                              f"has {len(cfg.layers)} layers")
        layer = cfg.layers[idx]
        where = f"{cfg.path}: layers[{idx}] (layer {layer.layer})"
        if q.shape[1] != layer.heads:
            raise ConfigError(f"{where}: {layer.heads} heads in the config, the call has "
                              f"{q.shape[1]}")
        if q.shape[-1] > 128:
            raise ConfigError(f"{where}: head dim {q.shape[-1]} > 128: no kernel runs it")
        if bool(is_causal) != cfg.causal:
            raise ConfigError(f"{where}: tuned with causal={cfg.causal}, the call has "
                              f"is_causal={bool(is_causal)}")
        module = self._module_stack[-1] if self._module_stack else ""
        if layer.module and module and layer.module != module:
            raise ConfigError(f"{where}: tuned for module {layer.module!r}, the call comes from "
                              f"{module!r}")
        return layer

    def _tensors(self, idx: int, layer: LayerConfig, device: torch.device):
        key = (idx, device)
        if key not in self._thresholds:
            to = lambda t: None if t is None else t.to(device)  # noqa: E731
            self._thresholds[key] = (to(layer.tau), to(layer.theta), to(layer.lam),
                                     to(layer.topk), to(layer.sparsity_cap))
        return self._thresholds[key]

    def _permutation(self, n: int, device: torch.device) -> torch.Tensor | None:
        # Sequences of another length (e.g. cross-attention to text) are not permuted.
        if self.config.hilbert_length() != n:
            return None
        if device not in self._perm:
            p = self.config.permutation
            t, h, w = p["grid"]
            self._perm[device] = torch.ops.sparge.hilbert_permutation(
                t, h, w, int(p.get("text_prefix", 0)), int(p.get("text_suffix", 0))).to(device)
        return self._perm[device]

    # -- the patched SDPA ----------------------------------------------------------------------
    def _sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
              scale=None, enable_gqa=False, **kwargs):
        if attn_mask is not None or kwargs:
            raise ConfigError(f"{self.config.path}: sparge.apply supports SDPA without attn_mask "
                              "(tuned attention is unmasked apart from is_causal)")
        if dropout_p:
            raise ConfigError(f"{self.config.path}: dropout_p={dropout_p}: call model.eval()")
        q, k, v = _fold(query), _fold(key), _fold(value)
        if k.shape[1] != q.shape[1] and not enable_gqa:
            raise ConfigError(f"{self.config.path}: {q.shape[1]} query heads, {k.shape[1]} KV "
                              "heads and enable_gqa=False")
        idx = self.call
        layer = self._layer(q, is_causal)
        tau, theta, lam, topk, cap = self._tensors(idx, layer, q.device)
        o, counts = torch.ops.sparge.attention(q, k, v, tau, theta, lam, topk, bool(is_causal),
                                               scale, self.config.kernel,
                                               self._permutation(q.shape[2], q.device), cap)
        self.call += 1
        self._calls[idx] = self._calls.get(idx, 0) + 1
        self._counts[idx] = counts if idx not in self._counts else self._counts[idx] + counts
        return o.reshape(query.shape[:-1] + (o.shape[-1],))

    # -- lifecycle ---------------------------------------------------------------------------
    def install(self) -> None:
        # Module paths the way sparge_capture recorded them.
        self._patch.install(self._sdpa, self.model, pre=self._begin_forward,
                            post=self._end_forward, stack=self._module_stack)

    def uninstall(self) -> None:
        self._patch.remove()

    def next_forward(self) -> None:
        """Without a model: marks the start of a new forward (layer order restarts at 0)."""
        self._begin_forward()

    def stats(self) -> list[dict]:
        """Realised stage-1 sparsity per layer over every call so far (one host sync), beside the
        sparsity the tuner measured on its calibration samples: ``sparser_than_tuned`` marks a
        layer that ran above SPARSER_THAN_TUNED x that, i.e. on inputs unlike the calibration
        ones, where its error may exceed the budget (check such inputs with `sparge eval`, or
        add them to the calibration samples)."""
        out = []
        for idx in sorted(self._counts):
            kept, valid = (int(x) for x in self._counts[idx].cpu())
            layer = self.config.layers[idx]
            sparsity = 1.0 - kept / valid if valid else 0.0
            tuned = layer.tuned_sparsity
            out.append({"layer": layer.layer, "module": layer.module, "calls": self._calls[idx],
                        "kept_blocks": kept, "valid_blocks": valid, "sparsity": sparsity,
                        "tuned_sparsity": tuned,
                        "sparser_than_tuned": tuned is not None and kept < valid
                        and sparsity > SPARSER_THAN_TUNED * tuned})
        return out


@contextlib.contextmanager
def apply(model: torch.nn.Module | None, config):
    """Runs every ``F.scaled_dot_product_attention`` call inside the block through
    ``torch.ops.sparge.attention`` with the thresholds of a tuned config (a path or a
    :class:`Config`).

    Layer i of the config serves the i-th attention call of each forward of ``model`` (how
    sparge_capture numbered them); without a model call ``ctx.next_forward()`` between forwards.
    Raises :class:`ConfigError` when the calls do not match the config (count per forward,
    heads, head dim, causal, module path where hooks give it) or use attn_mask / dropout.
    CUDA tensors run the GPU kernels; CPU tensors run the reference numerics (slow, exact to the
    numerics contract: for tests).
    """
    global _ACTIVE
    load_library()
    cfg = config if isinstance(config, Config) else load_config(config)
    ctx = Applied(model, cfg)
    ctx.install()
    _ACTIVE = ctx
    try:
        yield ctx
    finally:
        ctx.uninstall()


def stats() -> list[dict]:
    """Per-layer realised sparsity of the latest :func:`apply` block (see Applied.stats)."""
    if _ACTIVE is None:
        raise RuntimeError("sparge.stats(): no sparge.apply() block has run")
    return _ACTIVE.stats()


def attention(q, k, v, layer: LayerConfig, *, kernel: str = "auto", is_causal: bool = False,
              scale: float | None = None, perm: torch.Tensor | None = None) -> torch.Tensor:
    """One call of the op with a config layer's thresholds: q [B, H, N, D], k, v [B, Hkv, N, D]."""
    load_library()
    dev = q.device
    topk = None if layer.topk is None else layer.topk.to(dev)
    cap = None if layer.sparsity_cap is None else layer.sparsity_cap.to(dev)
    o, _ = torch.ops.sparge.attention(q, k, v, layer.tau.to(dev), layer.theta.to(dev),
                                      layer.lam.to(dev), topk, is_causal, scale, kernel, perm, cap)
    return o


__all__ = ["apply", "stats", "attention", "Applied"]
