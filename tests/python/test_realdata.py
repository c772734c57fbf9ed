"""sparge_realdata: Q/K/V built from photographs. The dump has the promised shapes and attributes,
is deterministic, carries the structure real activations have and Gaussian tensors lack
(similar neighbouring and consecutive-frame keys, concentrated attention), and `sparge inspect`
(the C++ reader) accepts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

np = pytest.importorskip("numpy")
h5py = pytest.importorskip("h5py")
torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

PYTHON_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python")
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

import sparge_capture  # noqa: E402
from sparge_realdata import _generate  # noqa: E402
from sparge_realdata.__main__ import main  # noqa: E402

SPARGE_BIN = os.environ.get("SPARGE_BIN")
IMAGES = "astronaut,coffee,chelsea"


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PYTHON_DIR, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "sparge_realdata", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def generate(path, *args: str) -> None:
    assert main(["-o", str(path), *args]) == 0


def tensors(path, layer: int = 0, sample: int = 0) -> dict:
    """q, k, v of one (layer, sample) as raw numpy arrays (fp16 as stored)."""
    with h5py.File(path) as f:
        g = f[f"layers/{layer:03d}/samples/{sample:04d}"]
        return {n: g[n][()] for n in "qkv"}


def bits_equal(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[n].view(np.uint16), b[n].view(np.uint16)) for n in "qkv")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("realdata") / "tiny.h5"
    r = cli("-o", str(path), "--size", "tiny", "--images", IMAGES, "--layers", "2",
            "--heads", "4", "--kv-heads", "2", "--head-dim", "32")
    assert r.returncode == 0, r.stderr
    return path, r


def test_tiny_dump_has_the_promised_shapes_and_attributes(tiny):
    path, r = tiny
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "3 sample(s)" in lines[0], r.stderr
    n = 16 + 2 * 4 * 6
    with h5py.File(path) as f:
        a = f.attrs
        assert a["schema"] == "sparge.qkv-dump" and a["schema_version"] == 1
        assert list(a["grid"]) == [2, 4, 6]
        assert a["text_prefix"] == 16 and a["causal"] == 0
        assert a["model_id"] == f"realdata-video-{IMAGES}"
        assert a["num_layers"] == 2 and list(f["layers"]) == ["000", "001"]
        for layer in ("000", "001"):
            g = f["layers"][layer]
            assert (g.attrs["num_q_heads"], g.attrs["num_kv_heads"], g.attrs["head_dim"]) == (
                4, 2, 32)
            assert list(g["samples"]) == ["0000", "0001", "0002"]  # one per image
            for s in g["samples"].values():
                assert s["q"].shape == (1, 4, n, 32)
                assert s["k"].shape == s["v"].shape == (1, 2, n, 32)
                for name in "qkv":
                    assert s[name].dtype == np.float16
                    assert s[name].attrs["sparge_dtype"] == "float16"
                    assert np.isfinite(s[name][()]).all()
    # Layers are different "model layers"; samples different photographs.
    assert not np.array_equal(tensors(path, 0, 0)["q"], tensors(path, 1, 0)["q"])
    assert not np.array_equal(tensors(path, 0, 0)["k"], tensors(path, 0, 1)["k"])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_dtype_flag(tmp_path, dtype):
    path = tmp_path / "d.h5"
    generate(path, "--size", "tiny", "--images", "rocket", "--heads", "2", "--dtype", dtype)
    with h5py.File(path) as f:
        s = f["layers/000/samples"]
        assert list(s) == ["0000"]
        assert s["0000/q"].attrs["sparge_dtype"] == dtype
        assert s["0000/q"].shape == (1, 2, 64, 64)
        assert np.isfinite(s["0000/q"][()]).all()


def test_text_kind_is_causal_with_repeated_phrases(tmp_path):
    path = tmp_path / "text.h5"
    generate(path, "--kind", "text", "--size", "tiny", "--images", "astronaut,coffee",
             "--heads", "4", "--kv-heads", "1")
    with h5py.File(path) as f:
        assert f.attrs["causal"] == 1 and "grid" not in f.attrs
        assert f.attrs["model_id"] == "realdata-text"
        s = f["layers/000/samples"]
        assert list(s) == ["0000", "0001"]
        assert s["0000/q"].shape == (1, 4, 256, 64) and s["0000/k"].shape == (1, 1, 256, 64)
    # The token streams repeat earlier spans (induction-like structure) and are Zipf-skewed.
    p, perm, _ = _generate._vocabulary(0, 192)
    ids = _generate.token_ids(2048, _generate._rng(0, _generate._TAG_TOKENS, 0), p, perm)
    grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
    assert len(set(grams)) < 0.9 * len(grams), "no repeated 4-grams: copies missing"
    _, counts = np.unique(ids, return_counts=True)
    assert counts.max() > 50, "the most frequent token should be very frequent (Zipf)"


def test_same_flags_same_tensors_other_seed_other_tensors(tmp_path):
    args = ["--size", "tiny", "--images", "chelsea,coffee", "--heads", "2", "--head-dim", "16"]
    generate(tmp_path / "a.h5", *args)
    generate(tmp_path / "b.h5", *args)
    generate(tmp_path / "c.h5", *args, "--seed", "1")
    for sample in (0, 1):
        a, b, c = (tensors(tmp_path / f"{x}.h5", 0, sample) for x in "abc")
        assert bits_equal(a, b), f"sample {sample}: two runs with the same flags differ"
        assert not np.array_equal(a["q"], c["q"]) and not np.array_equal(a["k"], c["k"])
    ta, tb = (torch.from_numpy(tensors(tmp_path / f"{x}.h5", 0, 1)["v"]) for x in "ab")
    assert sparge_capture.fnv1a64(ta) == sparge_capture.fnv1a64(tb)


def _cos(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _entropy(q, k):
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    return -(p * np.log(np.maximum(p, 1e-30))).sum(-1)


def test_image_tokens_have_real_structure(tmp_path):
    t, gh, gw, prefix, d = 3, 12, 18, 16, 64
    path = tmp_path / "s.h5"
    generate(path, "--size", "tiny", "--frames", str(t), "--grid-h", str(gh), "--grid-w",
             str(gw), "--images", IMAGES, "--heads", "4", "--head-dim", str(d))
    rng = np.random.default_rng(0)
    adjacent, temporal, random_pair, ent, ent_gauss = [], [], [], [], []
    for sample in range(3):
        x = tensors(path, 0, sample)
        q, k = x["q"][0].astype(np.float64), x["k"][0].astype(np.float64)
        img = k[:, prefix:].reshape(-1, t, gh, gw, d)                     # [H, T, gh, gw, D]
        adjacent.append(np.concatenate([_cos(img[:, :, :, :-1], img[:, :, :, 1:]).ravel(),
                                        _cos(img[:, :, :-1], img[:, :, 1:]).ravel()]).mean())
        temporal.append(_cos(img[:, :-1], img[:, 1:]).mean())
        flat = img.reshape(img.shape[0], -1, d)
        i, j = rng.integers(0, flat.shape[1], (2, 4000))
        random_pair.append(_cos(flat[:, i], flat[:, j]).mean())
        queries = q[:, prefix + rng.choice(t * gh * gw, 256, replace=False)]
        ent.append(_entropy(queries, k).mean())
        ent_gauss.append(_entropy(rng.standard_normal(queries.shape),
                                  rng.standard_normal(k.shape)).mean())
    adjacent, temporal, random_pair = np.mean(adjacent), np.mean(temporal), np.mean(random_pair)
    msg = f"adjacent {adjacent:.3f} temporal {temporal:.3f} random {random_pair:.3f}"
    assert adjacent > random_pair + 0.25, msg
    assert temporal > 0.4 and temporal > random_pair + 0.3, msg
    ent, ent_gauss = np.mean(ent), np.mean(ent_gauss)
    assert ent < ent_gauss - 0.5, f"attention entropy {ent:.2f} vs N(0, 1) {ent_gauss:.2f}"


def test_gqa_query_heads_match_their_own_kv_head(tmp_path):
    # Every query head's projection is correlated with its group's key projection (that is what
    # makes q.k large for similar tokens), and not with another group's.
    path = tmp_path / "g.h5"
    generate(path, "--size", "tiny", "--grid-h", "8", "--grid-w", "12", "--images", "astronaut",
             "--heads", "8", "--kv-heads", "2")
    x = tensors(path)
    q, k = x["q"][0].astype(np.float64), x["k"][0].astype(np.float64)
    for h in range(8):
        own, other = _cos(q[h], k[h // 4]).mean(), _cos(q[h], k[1 - h // 4]).mean()
        assert own > 0.25 and abs(other) < 0.15, f"head {h}: own {own:.3f} other {other:.3f}"


def test_unknown_image_is_a_usage_error(tmp_path):
    out = tmp_path / "x.h5"
    r = cli("-o", str(out), "--images", "astronaut,nosuchphoto")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "nosuchphoto" in lines[0] and "astronaut" in lines[0] and "chelsea" in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_shape_flags_are_usage_errors(tmp_path, capsys):
    for flags in (["--heads", "8", "--kv-heads", "3"], ["--head-dim", "7"], ["--frames", "0"]):
        assert main(["-o", str(tmp_path / "x.h5"), "--size", "tiny", *flags]) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "error" in err[0], (flags, err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not SPARGE_BIN or not os.path.exists(SPARGE_BIN),
                    reason="SPARGE_BIN not set or missing")
def test_sparge_inspect_reads_the_dump(tiny, tmp_path):
    path, _ = tiny
    r = subprocess.run([SPARGE_BIN, "inspect", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([SPARGE_BIN, "inspect", str(path), "--format", "json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["dump"]["grid"] == [2, 4, 6] and report["dump"]["text_prefix"] == 16
    assert report["dump"]["model_id"] == f"realdata-video-{IMAGES}"
    # The C++ reader read exactly the bits h5py reads.
    for layer in (0, 1):
        for sample in (0, 1, 2):
            got = report["layers"][layer]["samples"][sample]["tensors"]
            for name, arr in tensors(path, layer, sample).items():
                assert got[name]["checksum"] == sparge_capture.fnv1a64(torch.from_numpy(arr))
    text = tmp_path / "text.h5"
    generate(text, "--kind", "text", "--size", "tiny", "--images", "coffee", "--heads", "2")
    r = subprocess.run([SPARGE_BIN, "inspect", str(text), "--format", "json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["dump"]["causal"] is True


def test_dit_stack_block0_attention_is_the_generators_layer0(monkeypatch):
    """build_dit lifts the generator into a model: block 0's SDPA inputs are exactly the
    generator's q, k, v of layer 0 (same photograph), and later blocks see a residual stream
    that the gated updates moved but did not replace."""
    import torch.nn.functional as F

    from sparge_realdata import build_dit

    o = _generate.Options(output="", heads=4, head_dim=64, size="tiny", frames=2, grid_h=8,
                          grid_w=12).resolve()
    model, embed = build_dit(o, 2, dtype=torch.float32)
    seen = []
    orig = F.scaled_dot_product_attention

    def record(q, k, v, **kw):
        seen.append((q, k, v))
        return orig(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", record)
    x0 = embed(1)
    with torch.no_grad():
        y = model(x0)
    assert len(seen) == 2 and y.shape == x0.shape
    feats = _generate.sample_features(o, 1, _generate._vocabulary(o.seed, o.feature_dim))
    want = _generate.project(feats, _generate.layer_weights(o, 0),
                             _generate.rope_tables(_generate.rope_parts(o)))
    for got, w in zip(seen[0], want):
        w = torch.from_numpy(w)
        assert got.shape == w.shape
        assert (got - w).abs().max() <= 1e-5 * w.abs().max()  # float32 matmul order only
    drift = ((y - x0).abs().mean() / x0.abs().mean()).item()
    assert 0.01 < drift < 1.0
