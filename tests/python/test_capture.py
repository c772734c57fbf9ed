"""sparge_capture: capture a small transformer's SDPA calls, then prove with the C++ reader
(`sparge inspect --format json`, whose per-tensor checksum is FNV-1a 64 of the bits it read)
that the dump holds exactly the bits the model passed to attention."""

from __future__ import annotations

import json
import os
import subprocess

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparge_capture

SPARGE_BIN = os.environ.get("SPARGE_BIN")


def sparge(*args: str) -> subprocess.CompletedProcess:
    assert SPARGE_BIN, "set SPARGE_BIN to the sparge executable (ctest does this)"
    return subprocess.run([SPARGE_BIN, *args], capture_output=True, text=True, timeout=120)


# Every SDPA call the model makes, as the model made it (the test's own record, independent of
# the capture package): (q, k, v, out).
SEEN: list[tuple[torch.Tensor, ...]] = []


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, causal: bool):
        super().__init__()
        self.heads, self.kv_heads, self.d = heads, kv_heads, dim // heads
        self.q = nn.Linear(dim, heads * self.d)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.d)
        self.proj = nn.Linear(heads * self.d, dim)
        self.causal = causal

    def forward(self, x):
        b, n, _ = x.shape
        # [B, N, H, D] projections viewed as [B, H, N, D]: non-contiguous inputs, as in real models.
        q = self.q(x).view(b, n, self.heads, self.d).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, self.kv_heads, self.d).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                             enable_gqa=self.kv_heads != self.heads)
        SEEN.append((q.detach().clone(), k.detach().clone(), v.detach().clone(),
                     out.detach().clone()))
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, dim, heads, kv_heads, causal):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, kv_heads, causal)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm(x))
        return x + self.mlp(x)


class TinyTransformer(nn.Module):
    def __init__(self, dim=64, heads=4, causal=True):
        super().__init__()
        # Layer 0: MHA (H = Hkv = 4); layer 1: GQA (Hkv = 2).
        self.blocks = nn.ModuleList([Block(dim, heads, heads, causal),
                                     Block(dim, heads, heads // 2, causal)])

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_capture_is_read_bit_exactly_by_sparge(tmp_path, dtype_name):
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    dtype = DTYPES[dtype_name]
    model = TinyTransformer().to(dtype).eval()
    SEEN.clear()
    path = tmp_path / "dump.h5"
    steps = [0, 5, 9]
    with torch.no_grad(), sparge_capture.capture(path, model_id="test/tiny", model=model,
                                                 with_o=True) as cap:
        for i, step in enumerate(steps):
            cap.next_sample(step=step, prompt=i % 2)
            model(torch.randn(2, 24 + 8 * i, 64, dtype=dtype))
    assert cap.calls == 6 and len(SEEN) == 6, f"seed {seed}"

    r = sparge("inspect", str(path), "--format", "json")
    assert r.returncode == 0, f"seed {seed}: {r.stderr}"
    report = json.loads(r.stdout)
    assert report["dump"]["model_id"] == "test/tiny"
    assert report["dump"]["causal"] is True
    assert report["dump"]["scale"] is None
    assert report["dump"]["attributes"]["producer"].startswith("sparge_capture")
    layers = report["layers"]
    assert [l["index"] for l in layers] == [0, 1]
    assert [l["module_path"] for l in layers] == ["blocks.0.attn", "blocks.1.attn"]
    assert [(l["num_q_heads"], l["num_kv_heads"], l["head_dim"]) for l in layers] == [
        (4, 4, 16), (4, 2, 16)]
    for i, step in enumerate(steps):
        for layer in (0, 1):
            sample = layers[layer]["samples"][i]
            assert (sample["index"], sample["step"], sample["prompt"]) == (i, step, i % 2)
            assert sample["dtype"] == NAMES[dtype]
            q, k, v, o = SEEN[2 * i + layer]
            for name, t in zip("qkvo", (q, k, v, o)):
                got = sample["tensors"][name]
                assert got["shape"] == list(t.shape), (name, seed)
                assert got["checksum"] == sparge_capture.fnv1a64(t), (
                    f"seed {seed}: layer {layer} sample {i} {name}: the C++ reader read other bits")
                assert got["nan"] == 0 and got["inf"] == 0


def test_hnd_and_nhd_records_are_stored_bhnd(tmp_path):
    seed = int.from_bytes(os.urandom(4), "little")
    g = torch.Generator().manual_seed(seed)
    q_nhd = torch.randn(1, 40, 6, 32, generator=g, dtype=torch.float16)  # [B, N, H, D]
    kv_hnd = torch.randn(1, 3, 40, 32, generator=g, dtype=torch.float16)  # [B, Hkv, N, D]
    path = tmp_path / "manual.h5"
    with sparge_capture.capture(path, layout="NHD", grid=(2, 4, 4), text_prefix=8) as cap:
        cap.record(q_nhd, kv_hnd.transpose(1, 2), kv_hnd.transpose(1, 2), module_path="m0")
        cap.record(q_nhd.transpose(1, 2), kv_hnd, kv_hnd, layout="HND", scale=0.5)
    report = json.loads(sparge("inspect", str(path), "--format", "json").stdout)
    assert report["dump"]["grid"] == [2, 4, 4] and report["dump"]["text_prefix"] == 8
    assert report["dump"]["scale"] == 0.5
    want_q = sparge_capture.fnv1a64(q_nhd.transpose(1, 2))
    want_k = sparge_capture.fnv1a64(kv_hnd)
    for layer in report["layers"]:
        t = layer["samples"][0]["tensors"]
        assert t["q"]["shape"] == [1, 6, 40, 32]
        assert (t["q"]["checksum"], t["k"]["checksum"], t["v"]["checksum"]) == (
            want_q, want_k, want_k), f"seed {seed}"
    assert report["layers"][0]["module_path"] == "m0"
    # h5py reads the fp16 custom type natively as float16 with the same values.
    with h5py.File(path) as f:
        d = f["layers/000/samples/0000/q"]
        assert d.dtype == np.float16 and d.attrs["sparge_dtype"] == "float16"
        assert d.chunks == (1, 1, 40, 32)
        assert np.array_equal(d[()].view(np.uint16),
                              q_nhd.transpose(1, 2).contiguous().view(torch.int16).numpy()
                              .view(np.uint16))


def test_failed_capture_leaves_no_file(tmp_path):
    path = tmp_path / "failed.h5"
    with pytest.raises(RuntimeError, match="boom"):
        with sparge_capture.capture(path) as cap:
            q = torch.randn(1, 2, 8, 16)
            F.scaled_dot_product_attention(q, q, q)
            raise RuntimeError("boom")
    assert F.scaled_dot_product_attention.__module__ != "sparge_capture._capture", "not unpatched"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="no attention calls"):
        with sparge_capture.capture(path):
            pass
    assert list(tmp_path.iterdir()) == []


def test_capture_restores_torch_and_removes_its_hooks(tmp_path, hook_count):
    """Inside the block SDPA is patched and the model's modules hooked (module paths); after it,
    on a normal exit and on an exception, torch's own function is back and no hook is left."""
    sdpa = F.scaled_dot_product_attention
    model = TinyTransformer().eval()
    assert hook_count(model) == 0
    with torch.no_grad(), sparge_capture.capture(tmp_path / "ok.h5", model=model):
        assert F.scaled_dot_product_attention is not sdpa and hook_count(model) > 0
        model(torch.randn(1, 16, 64))
    assert F.scaled_dot_product_attention is sdpa and hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with torch.no_grad(), sparge_capture.capture(tmp_path / "failed.h5", model=model):
            model(torch.randn(1, 16, 64))
            raise RuntimeError("boom")
    assert F.scaled_dot_product_attention is sdpa and hook_count(model) == 0


def test_sparge_rejects_what_the_writer_would_not_write(tmp_path):
    # The C++ reader and the Python writer agree on validity: NaN in a capture is stored, and
    # `sparge inspect` then fails with exit 65 naming the tensor.
    path = tmp_path / "nan.h5"
    q = torch.randn(1, 2, 8, 16)
    q[0, 1, 3, 4] = float("nan")
    with sparge_capture.capture(path) as cap:
        cap.record(q, q, q)
    r = sparge("inspect", str(path))
    assert r.returncode == 65
    assert "/layers/000/samples/0000/q: 1 NaN and 0 Inf" in r.stderr
