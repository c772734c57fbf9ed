"""The capture context manager: patches torch.nn.functional.scaled_dot_product_attention."""

from __future__ import annotations

import contextlib
import math
import os
import warnings

import torch
import torch.nn.functional as F

from ._h5 import DumpFileWriter

_PRODUCER = "sparge_capture 0.1.0"


def _to_bhnd(t: torch.Tensor, layout: str) -> torch.Tensor:
    """[B, H, N, D] (HND) or [B, N, H, D] (NHD) -> [B, H, N, D]; SDPA's [..., N, D] with any
    number of leading dims is folded to B, and a missing batch dim becomes B = 1."""
    if layout == "NHD":
        if t.dim() != 4:
            raise ValueError(f"NHD tensors must be [B, N, H, D], got shape {tuple(t.shape)}")
        return t.transpose(1, 2)
    if layout != "HND":
        raise ValueError(f"layout must be 'HND' or 'NHD', got {layout!r}")
    if t.dim() == 3:
        return t.unsqueeze(0)
    if t.dim() > 4:
        return t.reshape(-1, *t.shape[-3:])
    if t.dim() != 4:
        raise ValueError(f"attention tensors must be [B, H, N, D], got shape {tuple(t.shape)}")
    return t


def track_modules(model: torch.nn.Module, stack: list[str]) -> list:
    """Forward hooks on every submodule of ``model`` that keep ``stack`` = the paths of the modules
    being run ("blocks.3.attn" innermost last), so an attention call knows where it comes from.
    Returns the hook handles (remove them when done)."""
    # Hooks must return None: a value returned by a hook replaces the module's input (pre-hook)
    # or output (forward hook).
    def enter(name):
        def hook(_module, _args):
            stack.append(name)
        return hook

    def leave(_module, _args, _output):
        if stack:
            stack.pop()

    handles = []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))
    return handles


class SdpaPatch:
    """``torch.nn.functional.scaled_dot_product_attention`` routed to ``fn`` and, with a model,
    forward hooks on it (``pre`` / ``post`` on the model, ``track_modules`` keeping ``stack``),
    until :meth:`remove`. The one place capture and sparge.apply patch torch, so both restore
    it the same way. ``original`` is the function that was replaced (None when not installed)."""

    def __init__(self) -> None:
        self.original = None
        self._hooks: list = []

    def install(self, fn, model: torch.nn.Module | None = None, *, pre=None, post=None,
                stack: list[str] | None = None) -> None:
        self.original = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = fn
        if model is None:
            return
        if pre is not None:
            self._hooks.append(model.register_forward_pre_hook(pre))
        if post is not None:
            self._hooks.append(model.register_forward_hook(post))
        if stack is not None:
            self._hooks.extend(track_modules(model, stack))

    def remove(self) -> None:
        if self.original is not None:
            F.scaled_dot_product_attention = self.original
            self.original = None
        for h in self._hooks:
            h.remove()
        self._hooks.clear()


class Capture:
    """Records the q, k, v (and optionally o) of attention calls into a sparge dump.

    Use through :func:`capture`. Attributes you may read: ``path``, ``sample`` (index of the
    sample being recorded), ``calls`` (attention calls recorded so far).
    """

    def __init__(self, path, *, model_id: str = "", model: torch.nn.Module | None = None,
                 grid=None, text_prefix: int = 0, text_suffix: int = 0, layout: str = "HND",
                 with_o: bool = False, capture_point: str = "sdpa_inputs"):
        if layout not in ("HND", "NHD"):
            raise ValueError(f"layout must be 'HND' or 'NHD', got {layout!r}")
        self.path = os.fspath(path)
        self.layout = layout
        self.with_o = with_o
        self.calls = 0
        self.sample = 0
        self._layer = 0           # next layer index within the current sample
        self._meta: dict = {}     # step / prompt of the current sample
        self._causal = None       # is_causal of the first call (the dump's root attribute)
        self._scale = None        # explicit softmax scale of the first call, if any
        self._module_stack: list[str] = []
        self._patch = SdpaPatch()
        self._model = model
        self._writer = DumpFileWriter(self.path, model_id=model_id, producer=_PRODUCER,
                                      capture_point=capture_point, grid=grid,
                                      text_prefix=text_prefix, text_suffix=text_suffix)
        self._warned: set[str] = set()

    # -- samples ---------------------------------------------------------------------------
    def next_sample(self, step: int | None = None, prompt: int | None = None) -> None:
        """Starts a new sample (unless the current one has no calls yet) and labels it."""
        if self._layer > 0:
            self.sample += 1
            self._layer = 0
        self._meta = {"step": step, "prompt": prompt}

    def _begin_forward(self, *_):
        # Top-level forward of the given model: one sample per forward.
        self._module_stack.clear()
        if self._layer > 0:
            self.sample += 1
            self._layer = 0
            self._meta = {}

    # -- recording -------------------------------------------------------------------------
    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"sparge_capture: {message}", stacklevel=3)

    def record(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               o: torch.Tensor | None = None, *, layout: str | None = None,
               is_causal: bool = False, scale: float | None = None,
               module_path: str | None = None) -> None:
        """Records one attention call made outside SDPA (e.g. a flash-attn kernel).

        ``layout`` (default: the capture's) says how q, k, v, o are laid out: "HND" =
        [B, H, N, D], "NHD" = [B, N, H, D]. They are always stored [B, H, N, D].
        """
        layout = layout or self.layout
        q, k, v = (_to_bhnd(t, layout) for t in (q, k, v))
        if o is not None:
            o = _to_bhnd(o, layout)
        if self._causal is None:
            self._causal = bool(is_causal)
            self._writer.set_root_attr("causal", int(self._causal))
        elif bool(is_causal) != self._causal:
            self._warn_once("causal", "attention calls disagree on is_causal; the dump records "
                            f"causal={int(self._causal)} from the first call")
        if scale is not None:
            default = 1.0 / math.sqrt(q.shape[-1])
            if self._scale is None and not math.isclose(scale, default, rel_tol=1e-6):
                self._scale = float(scale)
                self._writer.set_root_attr("scale", self._scale)
            elif self._scale is not None and not math.isclose(scale, self._scale, rel_tol=1e-6):
                self._warn_once("scale", "attention calls use different softmax scales; the dump "
                                f"records scale={self._scale} from the first explicit one")
        if module_path is None:
            module_path = self._module_stack[-1] if self._module_stack else ""
        self._writer.write_sample(self._layer, module_path, self.sample, q, k, v,
                                  o if self.with_o else None, step=self._meta.get("step"),
                                  prompt=self._meta.get("prompt"))
        self._layer += 1
        self.calls += 1

    def _sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
              scale=None, enable_gqa=False, **kwargs):
        out = self._patch.original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                   is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
                                   **kwargs)
        if attn_mask is not None:
            self._warn_once("mask", "attn_mask is not stored in the dump; tuning will assume "
                            "unmasked attention")
        if dropout_p:
            self._warn_once("dropout", "dropout_p > 0 during capture (call model.eval())")
        self.record(query, key, value, out, layout="HND", is_causal=is_causal, scale=scale)
        return out

    # -- lifecycle -------------------------------------------------------------------------
    def _install(self) -> None:
        self._patch.install(self._sdpa, self._model, pre=self._begin_forward,
                            stack=self._module_stack)

    def _uninstall(self) -> None:
        self._patch.remove()

    def close(self) -> None:
        if self._writer.num_layers == 0:
            self._writer.abort()
            raise RuntimeError(f"{self.path}: no attention calls were captured (does the model "
                               "call torch.nn.functional.scaled_dot_product_attention?)")
        self._writer.close()

    def abort(self) -> None:
        self._writer.abort()


@contextlib.contextmanager
def capture(path, *, model_id: str = "", model: torch.nn.Module | None = None, grid=None,
            text_prefix: int = 0, text_suffix: int = 0, layout: str = "HND",
            with_o: bool = False, capture_point: str = "sdpa_inputs"):
    """Context manager recording every SDPA call inside the block into the dump at ``path``.

    - ``model``: if given, each top-level ``model(...)`` call starts a new sample and module
      paths ("blocks.3.attn") are recorded; otherwise call ``cap.next_sample()`` between forwards.
    - ``grid`` = (T, H, W) and ``text_prefix`` / ``text_suffix``: the visual token grid, for the
      Hilbert permutation (video/image models).
    - ``layout``: default layout for :meth:`Capture.record` ("HND" or "NHD").
    - ``with_o``: also store each call's output as ``o`` (free ground truth for `sparge eval`).

    The file appears only when the block exits normally (written to a temporary, then renamed).
    """
    cap = Capture(path, model_id=model_id, model=model, grid=grid, text_prefix=text_prefix,
                  text_suffix=text_suffix, layout=layout, with_o=with_o,
                  capture_point=capture_point)
    cap._install()
    try:
        yield cap
    except BaseException:
        cap._uninstall()
        cap.abort()
        raise
    cap._uninstall()
    cap.close()
