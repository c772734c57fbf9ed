"""torch.ops.sparge.attention and sparge.apply on a CUDA device (ctest label gpu; skipped without
one): the kernels through the op against the reference numerics (the CPU op) on real-image
tensors, both layouts and dtypes, GQA and causal; CUDA-graph replay and torch.compile; and the
user's path end to end on the GPU: capture a real-image DiT stack, tune it with the CUDA oracle,
apply the config, compare the model output with its dense forward."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")
pytest.importorskip("h5py")
pytest.importorskip("skimage")
import torch.nn.functional as F  # noqa: E402

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import sparge  # noqa: E402
import sparge_capture  # noqa: E402
import sparge_realdata  # noqa: E402
from sparge_realdata import _generate as gen  # noqa: E402

sparge.load_library()
SPARGE_BIN = os.environ.get("SPARGE_BIN", "")
KERNEL = "sm90" if torch.cuda.get_device_capability() == (9, 0) else "sm80"


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().sum() / b.abs().sum()).item()


def realdata_qkv(heads=4, kv_heads=None, head_dim=64, sample=0):
    """Real-image q, k, v [1, H(kv), N, D] float32 (CPU): 64 text + 4 x 16 x 24 image tokens
    (13 blocks of 128: enough for prediction to have choices, small enough for the CPU op)."""
    o = gen.Options(output="", heads=heads, kv_heads=kv_heads, head_dim=head_dim, size="tiny",
                    frames=4, grid_h=16, grid_w=24, text_prefix=64).resolve()
    feats = gen.sample_features(o, sample, gen._vocabulary(o.seed, o.feature_dim))
    q, k, v = gen.project(feats, gen.layer_weights(o, 0), gen.rope_tables(gen.rope_parts(o)))
    return tuple(torch.from_numpy(t) for t in (q, k, v))


def run_op(q, k, v, tau, theta, lam=-float("inf"), causal=False, kernel=KERNEL):
    h = q.shape[1]
    full = lambda x: torch.full((h,), x, dtype=torch.float32, device=q.device)  # noqa: E731
    return torch.ops.sparge.attention(q, k, v, full(tau), full(theta), full(lam), None, causal,
                                      None, kernel, None)


# Reference numerics vs kernel on the same inputs: the CUDA op and the CPU op (the contract)
# differ by the kernel's deviation from the contract (3-4e-4 measured on full-size real-image
# tensors, tests/gpu/real_data_test.cpp) plus fp16/bf16 output rounding; 0.003 leaves room for
# a block decision flipping on a tie while catching any layout, stride or scale mistake (those
# cost > 0.05).
CONTRACT_TOL = 0.003


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("thresholds", [(1.0, 1.0, -float("inf")), (0.9, -1.0, -4.0)])
def test_cuda_op_follows_the_contract_on_real_images(dtype, head_dim, thresholds):
    q, k, v = (t.to(dtype) for t in realdata_qkv(head_dim=head_dim))
    o_cpu, c_cpu = run_op(q, k, v, *thresholds)
    o_gpu, c_gpu = run_op(q.cuda(), k.cuda(), v.cuda(), *thresholds)
    assert o_gpu.dtype == dtype and o_gpu.shape == q.shape
    assert c_gpu.cpu().tolist() == c_cpu.tolist()  # GPU prediction = CPU prediction
    assert rel_l1(o_gpu.cpu(), o_cpu) < CONTRACT_TOL
    dense = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert rel_l1(o_gpu.cpu(), dense) < 0.05  # quantisation (+ tau 0.9) on real-image tensors


def test_nhd_views_gqa_and_causal_match_their_contiguous_twins():
    q, k, v = (t.half().cuda() for t in realdata_qkv(heads=8, kv_heads=2))
    for causal in (False, True):
        ref, _ = run_op(q, k, v, 0.95, -1.0, causal=causal)
        nhd = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)]
        assert not nhd[0].is_contiguous()
        o, _ = run_op(*nhd, 0.95, -1.0, causal=causal)
        assert torch.equal(o, ref)
        # laid out like q, so a model's o.transpose(1, 2).reshape(B, N, H * D) copies nothing
        assert o.transpose(1, 2).is_contiguous() and ref.is_contiguous()
    o_cpu, _ = run_op(q.cpu(), k.cpu(), v.cpu(), 0.95, -1.0, causal=True)
    assert rel_l1(ref.cpu(), o_cpu) < CONTRACT_TOL


def test_cuda_op_permutation_is_fused_and_exact():
    """perm on CUDA: the kernels read q, k, v and write o through it (no gathered copies). The
    result is bit-identical to gathering by hand, running without perm and scattering back, for
    keys on the grid and off it (Nk != Nq: only q permuted) and for NHD views; it follows the
    CPU op (which gathers copies) as every CUDA op does; a perm the runtime cannot use is
    refused with a one-line error."""
    q, k, v = (t.half() for t in realdata_qkv())
    n = q.shape[2]
    perm = torch.ops.sparge.hilbert_permutation(4, 16, 24, 64, 0)
    assert perm.numel() == n and not torch.equal(perm, torch.arange(n))
    pc, inv = perm.cuda(), torch.argsort(perm.cuda())
    th = (0.9, -1.0, -4.0)

    def op_perm(q, k, v, perm):
        full = lambda x: torch.full((q.shape[1],), x, dtype=torch.float32,  # noqa: E731
                                    device=q.device)
        return torch.ops.sparge.attention(q, k, v, *(full(x) for x in th), None, False, None,
                                          KERNEL, perm)

    qc, kc, vc = q.cuda(), k.cuda(), v.cuda()
    for keys in ((kc, vc), (kc[:, :, :333], vc[:, :, :333])):
        on_grid = keys[0].shape[2] == n
        o, counts = op_perm(qc, *keys, pc)
        gathered = [x[:, :, pc] if on_grid else x for x in keys]
        o_ref, counts_ref = run_op(qc[:, :, pc], *gathered, *th)
        assert torch.equal(o, o_ref[:, :, inv]) and torch.equal(counts, counts_ref), on_grid
    o, _ = op_perm(qc, kc, vc, pc)
    nhd = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (qc, kc, vc)]
    assert torch.equal(op_perm(*nhd, pc)[0], o)
    o_cpu, _ = op_perm(q, k, v, perm)
    assert rel_l1(o.cpu(), o_cpu) < CONTRACT_TOL
    for bad in (perm, pc.int(), pc[:-1], torch.stack([pc, pc], 1)[:, 0]):
        with pytest.raises(RuntimeError, match="perm|token order"):
            op_perm(qc, kc, vc, bad)


def test_cuda_graph_replay_equals_eager():
    q, k, v = (t.half().cuda() for t in realdata_qkv(sample=0))
    q2, k2, v2 = (t.half().cuda() for t in realdata_qkv(sample=1))
    eager2, _ = run_op(q2, k2, v2, 0.9, -1.0, -4.0)
    sq, sk, sv = q.clone(), k.clone(), v.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run_op(sq, sk, sv, 0.9, -1.0, -4.0)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, counts = run_op(sq, sk, sv, 0.9, -1.0, -4.0)
    for src in ((q2, k2, v2), (q, k, v)):  # new inputs copied in, replayed
        for dst, s in zip((sq, sk, sv), src):
            dst.copy_(s)
        graph.replay()
        want, want_counts = run_op(*src, 0.9, -1.0, -4.0)
        assert torch.equal(out, want) and torch.equal(counts, want_counts)
    assert not torch.equal(eager2, run_op(q, k, v, 0.9, -1.0, -4.0)[0])


def test_torch_compile_on_cuda():
    q, k, v = (t.half().cuda() for t in realdata_qkv())

    def f(q, k, v):
        return run_op(q * 1.0, k, v, 0.9, -1.0)[0].float().sum(-1)

    want = f(q, k, v)
    for backend in ("aot_eager", "inductor"):
        if backend == "inductor":
            pytest.importorskip("triton")
        got = torch.compile(f, backend=backend, fullgraph=True)(q, k, v)
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-3), backend


@pytest.fixture(scope="module")
def tuned_dit(tmp_path_factory):
    """A 3-block real-image DiT stack captured on 3 photographs (CUDA, bf16), tuned with the
    CUDA oracle on the first two."""
    if not SPARGE_BIN or not os.path.exists(SPARGE_BIN):
        pytest.skip("SPARGE_BIN not set")
    o = gen.Options(output="", heads=4, head_dim=64, size="tiny", frames=4, grid_h=16, grid_w=24,
                    text_prefix=64).resolve()
    model, embed = sparge_realdata.build_dit(o, 3, device="cuda")
    xs = [embed(s) for s in range(3)]
    d = tmp_path_factory.mktemp("apply_gpu")
    dump, cfg = d / "calib.h5", d / "tuned.yaml"
    with torch.no_grad(), sparge_capture.capture(dump, model=model, model_id="dit-gpu-test",
                                                 grid=(o.frames, o.grid_h, o.grid_w),
                                                 text_prefix=o.text_prefix):
        for x in xs:
            model(x)
    r = subprocess.run([SPARGE_BIN, "--no-progress", "tune", str(dump), "--samples", "0,1",
                        "--backend", "cuda", "-o", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return model, xs, cfg, dump


def test_end_to_end_on_the_gpu(tuned_dit):
    model, xs, cfg_path, dump = tuned_dit
    cfg = sparge.load_config(cfg_path)
    assert len(cfg.layers) == 3 and cfg.permutation is not None  # Hilbert order recorded
    with torch.no_grad():
        dense = model(xs[2])
        with sparge.apply(model, cfg_path) as ctx:
            out = model(xs[2])
            st = ctx.stats()
        ref = model.float()(xs[2].float())  # the model in fp32 with dense fp32 attention
        model.bfloat16()
    assert [s["calls"] for s in st] == [1, 1, 1]
    assert all(0.0 <= s["sparsity"] < 1.0 for s in st)
    # As on the CPU (test_apply.py): three layers' errors, each within its budget on tuned
    # inputs, add up through the residual stream to at most their sum. The bf16 model itself
    # is the floor (its dense forward against fp32).
    floor = rel_l1(dense.float(), ref)
    err = rel_l1(out.float(), ref)
    assert 0.0 < err <= floor + 3 * cfg.budget["l2"], (err, floor, st)


def test_held_out_photograph_within_budget(tuned_dit):
    """The tuner's default hold-out rule keeps a photograph it never saw inside the budget of
    every head (sparge eval exits 1 when a head misses it)."""
    _, _, cfg_path, dump = tuned_dit
    r = subprocess.run([SPARGE_BIN, "--no-progress", "eval", str(dump), str(cfg_path),
                        "--samples", "2", "--backend", "cuda"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
