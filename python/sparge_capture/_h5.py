"""Writing the sparge Q/K/V dump format v1 with h5py (docs/dump-format.md).

fp16 and bf16 tensors are stored as custom 16-bit HDF5 float types built exactly like the C++
writer's (src/io/h5.cpp): copy IEEE_F32LE, set the fields, size 2, the exponent bias. The raw
16-bit patterns are written with that type as the memory type, so HDF5 copies bits without any
conversion: what the C++ reader returns is bit-identical to the torch tensor that was captured.
"""

from __future__ import annotations

import os
import secrets

import h5py
import numpy as np
import torch

SCHEMA = "sparge.qkv-dump"
SCHEMA_VERSION = 1

_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def _sixteen_bit_float(exponent_bits: int, mantissa_bits: int) -> h5py.h5t.TypeFloatID:
    """A 16-bit little-endian IEEE-style float: sign at bit 15, then exponent, then mantissa."""
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, mantissa_bits, exponent_bits, 0, mantissa_bits)
    t.set_size(2)
    t.set_ebias(2 ** (exponent_bits - 1) - 1)
    return t


def _raw(t: torch.Tensor) -> tuple[np.ndarray, h5py.h5t.TypeID]:
    """A contiguous CPU tensor -> (numpy array of its bits, HDF5 type of the dataset)."""
    if t.dtype == torch.float32:
        return t.numpy(), h5py.h5t.IEEE_F32LE
    if t.dtype == torch.float16:
        return t.view(torch.int16).numpy().view(np.uint16), _sixteen_bit_float(5, 10)
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), _sixteen_bit_float(8, 7)
    raise TypeError(f"unsupported dtype {t.dtype} (expected float16, bfloat16 or float32)")


def fnv1a64(t: torch.Tensor) -> str:
    """The checksum `sparge inspect` reports: FNV-1a 64 of the tensor's bytes, row-major."""
    t = t.detach().to("cpu").contiguous()
    if t.dtype in (torch.float16, torch.bfloat16):
        data = t.view(torch.int16).numpy().tobytes()
    else:
        data = t.numpy().tobytes()
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"fnv1a64:{h:016x}"


class DumpFileWriter:
    """Low-level writer: one file, written under a temporary name and renamed by close().

    abort() (or an exception in the owner) removes the temporary, so a failed capture never
    leaves a half-written dump behind.
    """

    def __init__(self, path: str | os.PathLike, *, model_id: str = "", producer: str = "",
                 capture_point: str = "sdpa_inputs", grid=None, text_prefix: int = 0,
                 text_suffix: int = 0, extra_attrs: dict | None = None):
        self.path = os.fspath(path)
        self._tmp = f"{self.path}.tmp.{os.getpid()}.{secrets.token_hex(4)}"
        self._file = h5py.File(self._tmp, "w", track_order=True)
        a = self._file.attrs
        a["schema"] = SCHEMA
        a["schema_version"] = np.int64(SCHEMA_VERSION)
        a["producer"] = producer
        a["model_id"] = model_id
        a["capture_point"] = capture_point
        a["layout"] = "BHND"
        a["causal"] = np.int64(0)
        a["text_prefix"] = np.int64(text_prefix)
        a["text_suffix"] = np.int64(text_suffix)
        if grid is not None:
            grid = [int(g) for g in grid]
            if len(grid) != 3 or min(grid) < 1:
                raise ValueError(f"grid must be three positive sizes (T, H, W), got {grid}")
            a["grid"] = np.asarray(grid, dtype=np.int64)
        for k, v in (extra_attrs or {}).items():
            a[k] = str(v)
        self._layers = self._file.create_group("layers", track_order=True)
        self._layer_meta: dict[int, tuple] = {}

    def set_root_attr(self, name: str, value) -> None:
        self._file.attrs[name] = value

    def _dataset(self, group: h5py.Group, name: str, t: torch.Tensor) -> None:
        t = t.detach().to("cpu").contiguous()
        data, htype = _raw(t)
        dims = tuple(int(d) for d in t.shape)
        space = h5py.h5s.create_simple(dims)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((1, 1, dims[2], dims[3]))  # one chunk per (batch, head)
        dcpl.set_obj_track_times(False)
        dsid = h5py.h5d.create(group.id, name.encode(), htype, space, dcpl=dcpl)
        dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, data, mtype=htype)
        h5py.Dataset(dsid).attrs["sparge_dtype"] = _DTYPE_NAMES[t.dtype]

    def write_sample(self, layer: int, module_path: str, sample: int, q: torch.Tensor,
                     k: torch.Tensor, v: torch.Tensor, o: torch.Tensor | None = None,
                     step: int | None = None, prompt: int | None = None) -> None:
        """q, o: [B, H, N, D]; k, v: [B, Hkv, N, D] with H % Hkv == 0; one dtype."""
        where = f"{self.path}: /layers/{layer:03d}/samples/{sample:04d}"
        for t in (q, k, v):
            if t.dim() != 4:
                raise ValueError(f"{where}: tensor of rank {t.dim()}, expected 4 [B, H, N, D]")
            if t.dtype != q.dtype:
                raise ValueError(f"{where}: q, k, v have different dtypes")
        if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or k.shape != v.shape:
            raise ValueError(f"{where}: inconsistent shapes q {tuple(q.shape)} "
                             f"k {tuple(k.shape)} v {tuple(v.shape)}")
        if q.shape[1] % k.shape[1]:
            raise ValueError(f"{where}: q heads not a multiple of kv heads (H % Hkv != 0)")
        meta = (int(q.shape[1]), int(k.shape[1]), int(q.shape[3]))
        name = f"{layer:03d}"
        if layer not in self._layer_meta:
            g = self._layers.create_group(name, track_order=True)
            g.attrs["layer_index"] = np.int64(layer)
            g.attrs["module_path"] = module_path
            g.attrs["num_q_heads"], g.attrs["num_kv_heads"], g.attrs["head_dim"] = (
                np.int64(m) for m in meta)
            g.create_group("samples", track_order=True)
            self._layer_meta[layer] = meta
        elif self._layer_meta[layer] != meta:
            raise ValueError(f"{where}: (heads, kv heads, head dim) {meta} differ from the layer's "
                             f"earlier samples {self._layer_meta[layer]}: the model's attention "
                             "calls do not happen in the same order in every forward")
        sg = self._layers[name]["samples"].create_group(f"{sample:04d}", track_order=True)
        sg.attrs["sample_index"] = np.int64(sample)
        if step is not None:
            sg.attrs["step_index"] = np.int64(step)
        if prompt is not None:
            sg.attrs["prompt_index"] = np.int64(prompt)
        self._dataset(sg, "q", q)
        self._dataset(sg, "k", k)
        self._dataset(sg, "v", v)
        if o is not None:
            if o.shape != q.shape or o.dtype != q.dtype:
                raise ValueError(f"{where}: o differs from q in shape or dtype")
            self._dataset(sg, "o", o)

    @property
    def num_layers(self) -> int:
        return len(self._layer_meta)

    def close(self) -> None:
        self._file.attrs["num_layers"] = np.int64(len(self._layer_meta))
        self._file.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)
