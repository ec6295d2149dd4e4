"""FlexAttention-style block masks: cuattn.create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN,
block_size=...) and attention(..., block_mask=bm) against the oracle with the dense mask."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (DEVICES, assert_close, assert_empty_rows_zero, assert_lse,
                      device_dtype_params, make_input, to_host)


def _like(a: np.ndarray, x):
    """`a` (a NumPy lookup table) in the framework of the index array `x`, so that the mask_mods
    below work whether the library evaluates them with NumPy, CuPy or torch."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        return torch.as_tensor(a, device=x.device)
    if mod.startswith("cupy"):
        import cupy as cp

        return cp.asarray(a)
    return a


def make_mask_mod(kind, rng, B, H, q_len, kv_len):
    o = kv_len - q_len  # bottom-right aligned diagonal, as the library's causal
    if kind == "causal":
        return lambda b, h, q, kv: q + o >= kv
    if kind == "sliding":
        w = 13
        return lambda b, h, q, kv: (q + o >= kv) & (q + o - kv <= w)
    if kind == "document":
        # documents of random lengths (some length 1), shared by q and kv positions
        n = max(q_len, kv_len)
        cuts = np.sort(rng.choice(np.arange(1, n), size=min(6, n - 1), replace=False))
        doc = np.zeros(n, np.int32)
        doc[cuts] = 1
        doc = np.cumsum(doc).astype(np.int32)
        return lambda b, h, q, kv: (_like(doc, q)[q] == _like(doc, kv)[kv]) & (q + o >= kv)
    if kind == "prefix_lm":
        prefix = kv_len // 3
        return lambda b, h, q, kv: (kv < prefix) | (q + o >= kv)
    if kind == "per_batch_len":  # needs B
        lens = rng.integers(0, kv_len + 1, size=B).astype(np.int32)
        lens[0] = 0  # a batch entry whose rows are all empty
        return lambda b, h, q, kv: kv < _like(lens, kv)[b]
    if kind == "per_head_window":  # needs H
        win = rng.integers(0, 40, size=H).astype(np.int32)
        return lambda b, h, q, kv: (q + o >= kv) & (q + o - kv <= _like(win, q)[h])
    if kind == "empty_rows":  # the first 70 query rows see nothing
        return lambda b, h, q, kv: (q >= 70) & (kv <= q + o)
    if kind == "none":
        return lambda b, h, q, kv: kv < 0
    if kind == "all":
        return lambda b, h, q, kv: kv >= 0
    raise ValueError(kind)


@dataclass(frozen=True)
class MaskCase:
    kind: str
    B: int | None
    H: int | None
    q_len: int
    kv_len: int
    block_size: object = 128

    def __str__(self):
        bs = self.block_size if isinstance(self.block_size, int) else "x".join(map(str, self.block_size))
        return f"{self.kind}-B{self.B}-H{self.H}-q{self.q_len}-k{self.kv_len}-bs{bs}"


CASES = [
    MaskCase("causal", None, None, 129, 129),
    MaskCase("causal", None, None, 200, 333, block_size=64),
    MaskCase("causal", None, None, 1, 300, block_size=(16, 64)),
    MaskCase("sliding", None, None, 257, 257, block_size=32),
    MaskCase("sliding", None, None, 100, 150, block_size=(64, 32)),
    MaskCase("document", None, None, 300, 300, block_size=64),
    MaskCase("document", None, None, 77, 77, block_size=(16, 16)),
    MaskCase("prefix_lm", None, None, 150, 150),
    MaskCase("prefix_lm", None, None, 96, 96, block_size=(32, 64)),
    MaskCase("per_batch_len", 3, None, 65, 190, block_size=64),
    MaskCase("per_head_window", None, 4, 130, 130, block_size=(64, 128)),
    MaskCase("per_head_window", 2, 4, 64, 64, block_size=16),
    MaskCase("empty_rows", None, None, 200, 200, block_size=64),
    MaskCase("none", None, None, 40, 50, block_size=16),
    MaskCase("all", None, None, 129, 65, block_size=64),
    MaskCase("document", None, None, 333, 333),
    MaskCase("sliding", None, None, 300, 300, block_size=(128, 64)),
    MaskCase("empty_rows", 2, 2, 200, 257, block_size=(128, 128)),
    MaskCase("per_batch_len", 3, None, 129, 190),
]


def _skip_gpu_block_size(case, device):
    """create_block_mask's docstring: the GPU kernels need block sizes that are multiples of
    128 (q) and 64 (kv). The API does not restrict block_size; other sizes run on the CPU."""
    if device != "cuda":
        return
    bs = case.block_size
    bq, bkv = (bs, bs) if isinstance(bs, int) else bs
    if bq % 128 or bkv % 64:
        pytest.skip(f"block_size {bs}: the GPU kernels need multiples of (128, 64)")


def dense_mask(mask_mod, B, H, q_len, kv_len):
    """The mask_mod evaluated on the full NumPy grid: bool [B or 1, H or 1, Q_LEN, KV_LEN]."""
    b = np.arange(B or 1)[:, None, None, None]
    h = np.arange(H or 1)[None, :, None, None]
    q = np.arange(q_len)[None, None, :, None]
    kv = np.arange(kv_len)[None, None, None, :]
    return np.broadcast_to(np.asarray(mask_mod(b, h, q, kv), dtype=bool),
                           (B or 1, H or 1, q_len, kv_len))


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_block_mask_to_dense(rng, device, case):
    mod = make_mask_mod(case.kind, rng, case.B, case.H, case.q_len, case.kv_len)
    bm = cuattn.create_block_mask(mod, case.B, case.H, case.q_len, case.kv_len,
                                  block_size=case.block_size, device=device)
    got = to_host(bm.to_dense())
    want = dense_mask(mod, case.B, case.H, case.q_len, case.kv_len)
    assert got.dtype == np.bool_, got.dtype
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32", "bfloat16")))
def test_block_mask_attention(rng, device, dtype, case, layout):
    _skip_gpu_block_size(case, device)
    b = case.B or 2
    hq = case.H or 4
    hkv = hq // 2
    d = 64
    mod = make_mask_mod(case.kind, rng, case.B, case.H, case.q_len, case.kv_len)
    bm = cuattn.create_block_mask(mod, case.B, case.H, case.q_len, case.kv_len,
                                  block_size=case.block_size, device=device)
    if layout == "bshd":
        shapes = [(b, case.q_len, hq, d), (b, case.kv_len, hkv, d), (b, case.kv_len, hkv, d)]
    else:
        shapes = [(b, hq, case.q_len, d), (b, hkv, case.kv_len, d), (b, hkv, case.kv_len, d)]
    ins = [make_input(rng, s, dtype, device) for s in shapes]
    (q, k, v), host = zip(*ins)
    out, lse = cuattn.attention(q, k, v, block_mask=bm, layout=layout, return_lse=True)
    mask = dense_mask(mod, case.B, case.H, case.q_len, case.kv_len)
    ref, ref_lse = oracle.attention_ref(*host, dense_mask=mask, layout=layout)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_block_mask_reused_across_calls(rng, device):
    """One BlockMask serves several attention calls with fresh data."""
    dtype = "bfloat16"
    mod = make_mask_mod("document", rng, None, None, 160, 160)
    bm = cuattn.create_block_mask(mod, None, None, 160, 160, device=device)
    mask = dense_mask(mod, None, None, 160, 160)
    for _ in range(3):
        ins = [make_input(rng, (1, 160, 4, 64), dtype, device) for _ in range(3)]
        (q, k, v), host = zip(*ins)
        out = cuattn.attention(q, k, v, block_mask=bm)
        assert_close(out, oracle.attention_ref(*host, dense_mask=mask)[0], dtype)


def test_block_mask_matches_causal_flag(rng):
    """A causal mask_mod gives what causal=True gives."""
    mod = make_mask_mod("causal", rng, None, None, 99, 140)
    bm = cuattn.create_block_mask(mod, None, None, 99, 140, block_size=(32, 16))
    ins = [make_input(rng, s, "float32", "cpu") for s in
           [(2, 99, 4, 32), (2, 140, 4, 32), (2, 140, 4, 32)]]
    (q, k, v), _ = zip(*ins)
    a = cuattn.attention(q, k, v, block_mask=bm)
    c = cuattn.attention(q, k, v, causal=True)
    assert_close(a, np.asarray(c, dtype=np.float64), "float32")
