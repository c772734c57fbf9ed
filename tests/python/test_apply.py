"""torch.ops.sparge and sparge.apply on the CPU (reference numerics): the op against dense SDPA,
the Hilbert permutation round trip, torch.compile through the fake implementation, config
mismatches, and the end-to-end path a user takes: capture -> tune -> apply -> compare."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")
pytest.importorskip("h5py")
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import sparge  # noqa: E402
import sparge_capture  # noqa: E402

try:
    sparge.load_library()
except RuntimeError as e:  # built with -DSPARGE_BUILD_TORCH_OPS=OFF; ctest names the library
    if os.environ.get("SPARGE_OPS_LIBRARY"):
        raise
    pytest.skip(str(e), allow_module_level=True)

SPARGE_BIN = os.environ.get("SPARGE_BIN", "")


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().sum() / b.abs().sum()).item()


def smooth(*shape, gen) -> torch.Tensor:
    """Tokens with locality (a random walk along N), so attention has blocks to skip."""
    x = torch.randn(*shape, generator=gen).cumsum(-2) / 8.0
    return x + 0.3 * torch.randn(*shape, generator=gen)


def op(q, k, v, tau, theta, lam=-float("inf"), topk=None, causal=False, perm=None):
    h = q.shape[1]
    full = lambda x: torch.full((h,), x, dtype=torch.float32)  # noqa: E731
    return torch.ops.sparge.attention(q, k, v, full(tau), full(theta), full(lam),
                                      None if topk is None else full(topk), causal, None, "sm90",
                                      perm)


def test_dense_thresholds_match_sdpa_at_quantisation_floor():
    g = torch.Generator().manual_seed(0)
    q, k, v = (smooth(1, 2, 384, 64, gen=g).half() for _ in range(3))
    o, counts = op(q, k, v, 1.0, 1.0)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert o.dtype == torch.float16 and o.shape == q.shape
    assert counts.tolist() == [2 * 3 * 3, 2 * 3 * 3]  # every block of 3 x 3, 2 heads
    assert rel_l1(o, ref) < 0.05  # INT8 Q/K + FP8 P/V floor on these inputs


def test_sparse_thresholds_skip_blocks_and_stay_close():
    g = torch.Generator().manual_seed(1)
    q, k, v = (smooth(1, 2, 1024, 64, gen=g).half() for _ in range(3))
    o, counts = op(q, k, v, 0.5, -1.0)
    kept, valid = counts.tolist()
    assert kept < valid
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert rel_l1(o, ref) < 0.5


def test_sparsity_cap_limits_the_realised_sparsity():
    """The op takes the YAML's per-head cap: a head may skip at most floor(cap x valid) of its
    blocks, so a cap of half the uncapped sparsity halves what is skipped (and only adds blocks,
    so the output moves towards dense)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (smooth(1, 2, 1024, 64, gen=g).half() for _ in range(3))
    h = q.shape[1]
    full = lambda x: torch.full((h,), x, dtype=torch.float32)  # noqa: E731
    args = (full(0.5), full(-1.0), full(-float("inf")), None, False, None, "sm90", None)
    _, free = torch.ops.sparge.attention(q, k, v, *args)
    kept, valid = free.tolist()
    cap = 0.5 * (valid - kept) / valid  # half the uncapped sparsity (both heads alike)
    _, capped = torch.ops.sparge.attention(q, k, v, *args, full(cap))
    kept_c, valid_c = capped.tolist()
    assert valid_c == valid
    per_head_valid = valid // h
    assert valid - kept_c <= h * int(cap * per_head_valid)  # at most floor(cap x valid) per head
    assert kept_c > kept
    with pytest.raises(RuntimeError, match="sparsity_cap must be"):
        torch.ops.sparge.attention(q, k, v, *args, torch.zeros(h + 1))


def test_head_dim_over_128_is_refused():
    q = torch.randn(1, 1, 128, 192).half()
    with pytest.raises(RuntimeError, match="head dim 192 > 128"):
        op(q, q, q, 1.0, 1.0)


def test_permutation_is_applied_and_undone():
    g = torch.Generator().manual_seed(2)
    perm = torch.ops.sparge.hilbert_permutation(2, 8, 8, 16, 0)
    assert sorted(perm.tolist()) == list(range(16 + 128))
    assert perm[:16].tolist() == list(range(16)) and perm[16:].tolist() != list(range(16, 144))
    q, k, v = (smooth(1, 2, 144, 64, gen=g).half() for _ in range(3))
    o, _ = op(q, k, v, 0.6, -1.0, perm=perm)
    o_manual, _ = op(q[:, :, perm], k[:, :, perm], v[:, :, perm], 0.6, -1.0)
    back = torch.empty_like(o_manual)
    back[:, :, perm] = o_manual
    assert torch.equal(o, back)


def test_permutation_with_keys_off_the_grid_permutes_queries_only():
    """Cross-attention: queries on the grid, 77 text keys; the tuner permutes only the queries."""
    g = torch.Generator().manual_seed(5)
    perm = torch.ops.sparge.hilbert_permutation(2, 8, 8, 16, 0)
    q = smooth(1, 2, 144, 64, gen=g).half()
    k, v = (smooth(1, 2, 77, 64, gen=g).half() for _ in range(2))
    o, _ = op(q, k, v, 1.0, 1.0, perm=perm)
    o_manual, _ = op(q[:, :, perm], k, v, 1.0, 1.0)
    back = torch.empty_like(o_manual)
    back[:, :, perm] = o_manual
    assert torch.equal(o, back)


def test_torch_compile_traces_the_fake_implementation():
    g = torch.Generator().manual_seed(3)
    q, k, v = (smooth(1, 2, 256, 64, gen=g).half() for _ in range(3))

    def f(q, k, v):
        return op(q, k, v, 0.9, -1.0)[0] * 2

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(q, k, v), f(q, k, v))


def test_output_is_laid_out_like_q():
    """An NHD view in gives o as [B, N, H, D] in memory (a model's o.transpose(1, 2).reshape(B,
    N, H * D) is then a view, not a copy per layer), equal to its contiguous twin's; the fake
    implementation promises the same strides to torch.compile, and a padded head dim too."""
    g = torch.Generator().manual_seed(6)
    for d in (64, 40):
        q, k, v = (smooth(1, 2, 256, d, gen=g).half() for _ in range(3))
        nhd = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]
        o, _ = op(*nhd, 0.9, -1.0)
        assert o.shape == q.shape and o.transpose(1, 2).is_contiguous()
        o_hnd, _ = op(q, k, v, 0.9, -1.0)
        assert o_hnd.is_contiguous() and torch.equal(o, o_hnd)
        compiled = torch.compile(lambda q, k, v: op(q, k, v, 0.9, -1.0)[0], backend="aot_eager",
                                 fullgraph=True)
        out = compiled(*nhd)
        assert out.stride() == o.stride() and torch.equal(out, o)


class Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(o.transpose(1, 2).reshape(b, n, d))


class Model(torch.nn.Module):
    def __init__(self, dim=128, heads=2, depth=3):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(dim, heads) for _ in range(depth))

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return x


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A 3-block model captured on 3 inputs and tuned (CPU oracle) on the first two."""
    if not SPARGE_BIN or not os.path.exists(SPARGE_BIN):
        pytest.skip("SPARGE_BIN not set")
    torch.manual_seed(0)
    model = Model().eval()
    g = torch.Generator().manual_seed(4)
    xs = [smooth(1, 1024, 128, gen=g) * 4 for _ in range(3)]
    d = tmp_path_factory.mktemp("apply")
    dump, cfg = d / "calib.h5", d / "tuned.yaml"
    with torch.no_grad(), sparge_capture.capture(dump, model=model, model_id="test-apply"):
        for x in xs:
            model(x)
    r = subprocess.run([SPARGE_BIN, "--no-progress", "tune", str(dump), "--samples", "0,1",
                        "--backend", "cpu", "-o", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return model, xs, cfg


def test_end_to_end_capture_tune_apply(tuned):
    model, xs, cfg_path = tuned
    cfg = sparge.load_config(cfg_path)
    assert len(cfg.layers) == 3
    with torch.no_grad():
        dense = model(xs[2])
        with sparge.apply(model, cfg_path):
            out = model(xs[2])
        st = sparge.stats()
    assert [s["calls"] for s in st] == [1, 1, 1]
    assert all(0.0 <= s["sparsity"] < 1.0 for s in st)
    # Each layer's attention error is within its budget on tuned inputs; through the residual
    # stream three such errors can add up but not exceed their sum.
    err = rel_l1(out, dense)
    assert 0.0 < err <= 3 * cfg.budget["l2"], (err, st)


def test_stats_flag_layers_sparser_than_tuned(tuned):
    """stats() puts each layer's realised sparsity beside the tuner's calibration figure and
    marks a layer that ran well above it (inputs unlike the calibration samples)."""
    model, xs, cfg_path = tuned
    cfg = sparge.load_config(cfg_path)
    assert all(layer.tuned_sparsity is not None for layer in cfg.layers)
    with torch.no_grad(), sparge.apply(model, cfg):
        model(xs[2])
        st = sparge.stats()
    for s, layer in zip(st, cfg.layers):
        assert s["tuned_sparsity"] == layer.tuned_sparsity
        assert s["sparser_than_tuned"] == (s["kept_blocks"] < s["valid_blocks"] and s["sparsity"]
                                           > sparge.SPARSER_THAN_TUNED * layer.tuned_sparsity)
    # The same calls against a config that claims calibration kept every block: every layer
    # that skipped anything is flagged; against one that claims near-total sparsity, none is.
    skipped = [s["kept_blocks"] < s["valid_blocks"] for s in st]
    assert any(skipped), st
    for claimed, expect in ((0.0, skipped), (0.99, [False] * len(st))):
        for layer in cfg.layers:
            layer.tuned_sparsity = claimed
        with torch.no_grad(), sparge.apply(model, cfg):
            model(xs[2])
            assert [s["sparser_than_tuned"] for s in sparge.stats()] == expect


def test_mismatched_model_is_refused(tuned):
    _, xs, cfg_path = tuned
    other = Model(depth=2).eval()
    with torch.no_grad(), sparge.apply(other, cfg_path):
        with pytest.raises(sparge.ConfigError, match="2 attention calls in a forward, the config "
                                                     "has 3 layers"):
            other(xs[2])
    wide = Model(heads=4).eval()
    with torch.no_grad(), sparge.apply(wide, cfg_path):
        with pytest.raises(sparge.ConfigError, match="2 heads in the config, the call has 4"):
            wide(xs[2])
    assert F.scaled_dot_product_attention.__module__ != "sparge._apply"  # patch undone


def test_apply_restores_torch_and_removes_its_hooks(tuned, hook_count):
    """As capture: after the block, on a normal exit and on an exception, torch's own SDPA is
    back and none of the model, forward and module-path hooks is left on the model."""
    model, xs, cfg_path = tuned
    sdpa = F.scaled_dot_product_attention
    assert hook_count(model) == 0
    with torch.no_grad(), sparge.apply(model, cfg_path):
        assert F.scaled_dot_product_attention is not sdpa and hook_count(model) > 0
        model(xs[2])
    assert F.scaled_dot_product_attention is sdpa and hook_count(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with torch.no_grad(), sparge.apply(model, cfg_path):
            raise RuntimeError("boom")
    assert F.scaled_dot_product_attention is sdpa and hook_count(model) == 0
