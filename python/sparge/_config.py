"""Reading a tuned config (docs/tuned-config.md, schema sparge.tuned v1) for the inference side."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import yaml

SCHEMA = "sparge.tuned"


class ConfigError(ValueError):
    """A config that is malformed, or that does not match the model it is applied to."""


@dataclass
class LayerConfig:
    """One layer's per-query-head thresholds (float32 CPU tensors of [heads])."""
    layer: int
    module: str
    heads: int
    tau: torch.Tensor
    theta: torch.Tensor
    lam: torch.Tensor                  # natural-log units, -inf = stage 2 off
    topk: torch.Tensor | None          # search.mode topk: kept fraction per head
    sparse: list[bool]
    # The most stage-1 sparsity the prediction may reach per head (the YAML's sparsity_cap);
    # None where the file has none (tuned before it, or with --sparsity-cap 0).
    sparsity_cap: torch.Tensor | None = None
    # Mean over heads of the stage-1 sparsity the tuner measured on its calibration samples
    # (the YAML's sparsity.stage1); None where the file has none (SpargeAttn's spelling).
    tuned_sparsity: float | None = None


@dataclass
class Config:
    path: str
    kernel: str                        # "sm90" or "sm80": the geometry the thresholds fit
    causal: bool
    budget: dict
    permutation: dict                  # {"order": "none"} or {"order": "hilbert", grid, ...}
    layers: list[LayerConfig] = field(default_factory=list)

    def hilbert_length(self) -> int | None:
        """Sequence length the Hilbert order applies to (None: no permutation)."""
        p = self.permutation
        if p.get("order", "none") != "hilbert":
            return None
        t, h, w = p["grid"]
        return int(p.get("text_prefix", 0)) + t * h * w + int(p.get("text_suffix", 0))


def _floats(path: str, where: str, values, heads: int) -> torch.Tensor:
    if not isinstance(values, list) or len(values) != heads:
        raise ConfigError(f"{path}: {where}: expected {heads} values (heads)")
    try:
        return torch.tensor([float(x) for x in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: {where}: non-numeric value") from None


def load_config(path) -> Config:
    """Reads and checks a tuned YAML; raises ConfigError with one line naming file and key."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ConfigError(f"{path}: schema: expected {SCHEMA}")
    if int(doc.get("schema_version", 0)) != 1:
        raise ConfigError(f"{path}: schema_version: expected 1")
    kernel = doc.get("kernel") or {}
    if kernel.get("name") not in ("sm90", "sm80"):
        raise ConfigError(f"{path}: kernel.name: expected sm90 or sm80")
    mode = (doc.get("search") or {}).get("mode", "cdf")
    cfg = Config(path=path, kernel=kernel["name"], causal=bool(kernel.get("causal", False)),
                 budget=doc.get("budget") or {},
                 permutation=doc.get("permutation") or {"order": "none"})
    if cfg.permutation.get("order", "none") not in ("none", "hilbert"):
        raise ConfigError(f"{path}: permutation.order: expected none or hilbert")
    for i, entry in enumerate(doc.get("layers") or []):
        where = f"layers[{i}]"
        heads = int(entry.get("heads", 0))
        if heads < 1:
            raise ConfigError(f"{path}: {where}.heads: expected >= 1")
        if "cdfthreshd" in entry:  # SpargeAttn's spelling
            tau = _floats(path, f"{where}.cdfthreshd", entry["cdfthreshd"], heads)
            theta = _floats(path, f"{where}.simthreshd1", entry["simthreshd1"], heads)
            lam = -_floats(path, f"{where}.pvthreshd", entry["pvthreshd"], heads) * math.log(2)
            sparse = [bool(x) for x in entry.get("is_sparse", [True] * heads)]
        else:
            tau = _floats(path, f"{where}.tau", entry.get("tau"), heads)
            theta = _floats(path, f"{where}.theta", entry.get("theta"), heads)
            lam = _floats(path, f"{where}.lambda", entry.get("lambda"), heads)
            sparse = [bool(x) for x in entry.get("sparse", [True] * heads)]
        topk = None
        if mode == "topk":
            topk = _floats(path, f"{where}.topk", entry.get("topk"), heads)
        cap = None
        if entry.get("sparsity_cap") is not None:
            cap = _floats(path, f"{where}.sparsity_cap", entry["sparsity_cap"], heads)
            if bool(((cap < 0) | (cap > 1)).any()):
                raise ConfigError(f"{path}: {where}.sparsity_cap: values must be in [0, 1]")
        tuned = None
        if isinstance(entry.get("sparsity"), dict) and "stage1" in entry["sparsity"]:
            tuned = float(_floats(path, f"{where}.sparsity.stage1", entry["sparsity"]["stage1"],
                                  heads).mean())
        cfg.layers.append(LayerConfig(layer=int(entry.get("layer", i)),
                                      module=str(entry.get("module", "") or ""), heads=heads,
                                      tau=tau, theta=theta, lam=lam, topk=topk, sparse=sparse,
                                      tuned_sparsity=tuned, sparsity_cap=cap))
    if not cfg.layers:
        raise ConfigError(f"{path}: layers: empty")
    return cfg
