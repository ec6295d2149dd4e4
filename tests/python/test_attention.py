"""cuattn.attention (dense, causal, GQA, windows, softcap, sinks, varlen), sliding_window_attention
and naive_attention against the float64 oracle, on fresh random data with poisoned outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (BF16, DEVICES, assert_close, assert_empty_rows_zero, assert_framework,
                      assert_lse, device_dtype_params, f64, gpu_framework, make_input,
                      poisoned, randn, skip_unless_gpu, to_device, to_host)

LAYOUTS = ["bshd", "bhsd"]


@dataclass(frozen=True)
class Case:
    b: int
    sq: int
    sk: int
    hq: int
    hkv: int
    d: int
    dv: int | None = None  # None: = d
    causal: bool = False
    window: object = None
    softcap: float = 0.0
    sinks: bool = False
    scale: float | None = None

    def __str__(self):
        s = f"b{self.b}-q{self.sq}-k{self.sk}-h{self.hq}x{self.hkv}-d{self.d}"
        if self.dv is not None:
            s += f"v{self.dv}"
        if self.causal:
            s += "-causal"
        if self.window is not None:
            s += f"-win{self.window}".replace(" ", "")
        if self.softcap:
            s += f"-cap{self.softcap:g}"
        if self.sinks:
            s += "-sinks"
        if self.scale is not None:
            s += f"-scale{self.scale:g}"
        return s

    @property
    def head_dim_v(self):
        return self.d if self.dv is None else self.dv


CASES = [
    Case(1, 1, 1, 4, 4, 64),
    Case(2, 7, 7, 4, 1, 64, causal=True),                 # GQA 4
    Case(1, 129, 129, 8, 1, 128, causal=True),            # GQA 8, odd length
    Case(1, 129, 129, 8, 8, 64),
    Case(2, 7, 129, 4, 4, 96, causal=True),               # Sq < Sk: bottom-right diagonal
    Case(2, 129, 7, 4, 2, 128, causal=True),              # Sq > Sk: first rows see nothing
    Case(1, 1000, 1000, 2, 1, 64, causal=True),
    Case(1, 1, 1000, 4, 1, 128),                          # decode-like row
    Case(1, 33, 65, 8, 2, 192, dv=128, causal=True),
    Case(2, 17, 17, 2, 1, 256),
    Case(2, 65, 65, 4, 1, 64, softcap=5.0, causal=True),
    Case(2, 65, 80, 4, 4, 64, sinks=True),
    Case(2, 40, 40, 4, 2, 64, sinks=True, causal=True, window=(8, 0)),
    Case(1, 129, 129, 4, 4, 64, window=(16, 16)),
    Case(2, 31, 31, 4, 4, 64, window=5),                  # (5, 5)
    Case(2, 31, 31, 4, 4, 64, window=5, causal=True),     # (5, 0): 6 keys per row
    Case(1, 50, 20, 4, 2, 64, window=(1, 1), softcap=2.0, sinks=True),  # rows emptied by window
    Case(2, 9, 23, 4, 1, 64, scale=0.3),
    # Sk > 128: the Hopper kernel where the card has it (more than one 128-key tile).
    Case(2, 300, 200, 4, 2, 128, causal=True),           # Sq > Sk: the first 100 rows see nothing
    Case(1, 257, 257, 4, 1, 64, window=(100, 20), softcap=5.0, sinks=True),
    Case(1, 200, 333, 2, 2, 40, causal=True),             # D 40 padded to 64 by the loads
]


def build(rng, case: Case, dtype, device, layout, view="contig"):
    """Random q, k, v (device arrays) and their host views."""
    if layout == "bshd":
        qs = (case.b, case.sq, case.hq, case.d)
        ks = (case.b, case.sk, case.hkv, case.d)
        vs = (case.b, case.sk, case.hkv, case.head_dim_v)
        axes = dict(head_axis=2, seq_axis=1)
    else:
        qs = (case.b, case.hq, case.sq, case.d)
        ks = (case.b, case.hkv, case.sk, case.d)
        vs = (case.b, case.hkv, case.sk, case.head_dim_v)
        axes = dict(head_axis=1, seq_axis=2)
    q, hq_ = make_input(rng, qs, dtype, device, view, **axes)
    k, hk_ = make_input(rng, ks, dtype, device, view, **axes)
    v, hv_ = make_input(rng, vs, dtype, device, view, **axes)
    return (q, k, v), (hq_, hk_, hv_)


def out_shape(case: Case, layout):
    if layout == "bshd":
        return (case.b, case.sq, case.hq, case.head_dim_v)
    return (case.b, case.hq, case.sq, case.head_dim_v)


def sinks_for(rng, case, device):
    if not case.sinks:
        return None, None
    s = (rng.standard_normal(case.hq) * 2).astype(np.float32)
    return to_device(s, device), s


def kwargs_for(case):
    return dict(causal=case.causal, window=case.window, softcap=case.softcap, scale=case.scale)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention(rng, device, dtype, case, layout):
    (q, k, v), host = build(rng, case, dtype, device, layout)
    sinks, sinks_h = sinks_for(rng, case, device)
    out, lse = cuattn.attention(q, k, v, sinks=sinks, layout=layout, return_lse=True,
                                **kwargs_for(case))
    ref, ref_lse = oracle.attention_ref(*host, sinks=sinks_h, layout=layout, **kwargs_for(case))
    assert_framework(out, q)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


# Cases where a Hopper card runs the sm_90a kernel by default (more than one 128-key tile).
HOPPER_CASES = [c for c in CASES if c.sk > 128]


@pytest.mark.parametrize("block_mask", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", HOPPER_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_attention_portable_kernel(rng, device, dtype, case, layout, block_mask):
    """The portable (mma.sync) kernel where the Hopper one would run, through the internal
    _variant="portable=1": against the oracle, with poisoned outputs; block_mask: the case's
    causal mask (or none) as a block mask of 128 x 128 blocks."""
    (q, k, v), host = build(rng, case, dtype, device, layout)
    sinks, sinks_h = sinks_for(rng, case, device)
    kw = kwargs_for(case)
    if block_mask:
        causal = kw.pop("causal")
        off = case.sk - case.sq
        kw["block_mask"] = cuattn.create_block_mask(
            (lambda b, h, i, j: j <= i + off) if causal else (lambda b, h, i, j: j >= 0),
            None, None, case.sq, case.sk, device=device)
    lse_shape = (case.b, case.hq, case.sq)
    out, lse = cuattn.attention(q, k, v, sinks=sinks, layout=layout, return_lse=True, _variant="portable=1",
                                out=poisoned(out_shape(case, layout), dtype, device),
                                lse_out=poisoned(lse_shape, "float32", device), **kw)
    ref, ref_lse = oracle.attention_ref(*host, sinks=sinks_h, layout=layout, **kwargs_for(case))
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [CASES[2], CASES[5], CASES[11], CASES[16]], ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_out_buffers(rng, device, dtype, case, layout):
    """out= and lse_out= prefilled with NaN: every element must be written, the same buffers
    returned."""
    (q, k, v), host = build(rng, case, dtype, device, layout)
    sinks, sinks_h = sinks_for(rng, case, device)
    out_buf = poisoned(out_shape(case, layout), dtype, device)
    lse_buf = poisoned((case.b, case.hq, case.sq), "float32", device)
    out, lse = cuattn.attention(q, k, v, sinks=sinks, layout=layout, return_lse=True,
                                out=out_buf, lse_out=lse_buf, **kwargs_for(case))
    assert out is out_buf and lse is lse_buf
    ref, ref_lse = oracle.attention_ref(*host, sinks=sinks_h, layout=layout, **kwargs_for(case))
    assert_close(out_buf, ref, dtype)
    assert_lse(lse_buf, ref_lse, dtype)


# Sk 61 runs the portable kernel, Sk 161 the Hopper one where the card has it (more than one
# 128-key tile): strides reach the latter through TMA tensor maps.
SK_BOTH_KERNELS = [61, 161]


@pytest.mark.parametrize("sk", SK_BOTH_KERNELS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_out_is_strided_view(rng, device, dtype, sk):
    """out= as every other head of a bigger NaN buffer: the heads in between stay untouched."""
    case = Case(2, 37, sk, 4, 2, 64, causal=True)
    (q, k, v), host = build(rng, case, dtype, device, "bshd")
    big = poisoned((2, 37, 9, 64), dtype, device)
    view = big[:, :, 1::2]
    out = cuattn.attention(q, k, v, causal=True, out=view)
    assert out is view
    ref, _ = oracle.attention_ref(*host, causal=True)
    assert_close(out, ref, dtype)
    rest = f64(big)[:, :, 0::2]
    assert np.isnan(rest).all(), "attention wrote outside the out= view"


@pytest.mark.parametrize("sk", SK_BOTH_KERNELS)
@pytest.mark.parametrize("view", ["heads", "seq", "swap"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_strided_inputs(rng, device, dtype, layout, view, sk):
    """Views of bigger arrays (every other head, a window of the sequence, swapped head/seq
    axes): any strides with a contiguous last dim."""
    case = Case(2, 45, sk, 8, 2, 64, causal=True)
    (q, k, v), host = build(rng, case, dtype, device, layout, view)
    out, lse = cuattn.attention(q, k, v, causal=True, layout=layout, return_lse=True)
    ref, ref_lse = oracle.attention_ref(*host, causal=True, layout=layout)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_returns_out_only_by_default(rng, device, dtype):
    case = Case(1, 5, 5, 2, 2, 64)
    (q, k, v), host = build(rng, case, dtype, device, "bshd")
    out = cuattn.attention(q, k, v)
    assert not isinstance(out, tuple)
    assert_framework(out, q)
    assert_close(out, oracle.attention_ref(*host)[0], dtype)


@pytest.mark.parametrize("window,causal,sq,sk", [
    ((0, 0), False, 12, 4),        # o = -8: rows 0..7 see nothing
    ((2, 0), True, 20, 8),         # causal + window with Sq > Sk
    ((3, 1), False, 30, 10),       # o = -20: rows 0..18 see nothing
    (None, True, 16, 3),           # causal only, Sq > Sk
    ((0, -1), True, 9, 1),         # all but the last row empty
])
@pytest.mark.parametrize("with_sinks", [False, True])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_empty_rows(rng, device, dtype, window, causal, sq, sk, with_sinks):
    """Rows with no visible key give out 0 and lse -inf, never NaN, with or without sinks."""
    case = Case(2, sq, sk, 4, 2, 64, causal=causal, window=window, sinks=with_sinks)
    for layout in LAYOUTS:
        (q, k, v), host = build(rng, case, dtype, device, layout)
        sinks, sinks_h = sinks_for(rng, case, device)
        out_buf = poisoned(out_shape(case, layout), dtype, device)
        out, lse = cuattn.attention(q, k, v, causal=causal, window=window, sinks=sinks,
                                    layout=layout, return_lse=True, out=out_buf)
        ref, ref_lse = oracle.attention_ref(*host, causal=causal, window=window, sinks=sinks_h,
                                            layout=layout)
        assert np.isneginf(ref_lse).any()  # the case does empty some rows
        assert_close(out, ref, dtype)
        assert_lse(lse, ref_lse, dtype)
        assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("d,dv", [(64, 64), (96, 96), (128, 128), (192, 192), (256, 256),
                                  (192, 128), (40, 40), (64, 128), (128, 64)])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_head_dims(rng, device, dtype, d, dv):
    if device == "cuda" and d != dv and (d, dv) != (192, 128):
        pytest.skip("the GPU runs Dv != D only for (192, 128) (docs/conventions.md)")
    case = Case(2, 23, 37, 4, 2, d, dv=dv, causal=True)
    (q, k, v), host = build(rng, case, dtype, device, "bshd")
    out, lse = cuattn.attention(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = oracle.attention_ref(*host, causal=True)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


@pytest.mark.parametrize("d", [1, 3, 33, 300])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attention_odd_head_dims_cpu(rng, dtype, d):
    """CPU: any head dim."""
    case = Case(1, 9, 11, 2, 1, d, causal=True)
    (q, k, v), host = build(rng, case, dtype, "cpu", "bshd")
    out, lse = cuattn.attention(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = oracle.attention_ref(*host, causal=True)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


# ------------------------------------------------------------------------------------------------
# Varlen


@dataclass(frozen=True)
class VarlenCase:
    lens_q: tuple
    lens_k: tuple
    hq: int = 4
    hkv: int = 2
    d: int = 64
    causal: bool = False
    window: object = None
    softcap: float = 0.0
    sinks: bool = False

    def __str__(self):
        s = f"q{'_'.join(map(str, self.lens_q))}-k{'_'.join(map(str, self.lens_k))}"
        s += f"-h{self.hq}x{self.hkv}-d{self.d}"
        if self.causal:
            s += "-causal"
        if self.window is not None:
            s += f"-win{self.window}".replace(" ", "")
        if self.softcap:
            s += "-cap"
        if self.sinks:
            s += "-sinks"
        return s


VARLEN_CASES = [
    VarlenCase((5, 0, 7, 1), (5, 0, 7, 1), causal=True),            # zero-length sequence
    VarlenCase((3, 4, 0, 9), (5, 2, 6, 9), hq=8, hkv=1, causal=True),  # q empty, k not
    VarlenCase((7, 3), (0, 11), causal=False),                        # kv empty: 0 / -inf
    VarlenCase((129, 1, 64), (129, 200, 1), hq=4, hkv=4, d=128, causal=True),
    VarlenCase((17, 40), (30, 40), window=(4, 2), sinks=True),
    VarlenCase((33,), (33,), causal=True, softcap=3.0, d=96),
    VarlenCase((1, 1, 1, 1, 1), (1, 9, 0, 4, 2), hq=8, hkv=2),
]


@pytest.mark.parametrize("poison", [False, True])
@pytest.mark.parametrize("case", VARLEN_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_varlen(rng, device, dtype, case, poison):
    cq = np.concatenate([[0], np.cumsum(case.lens_q)]).astype(np.int32)
    ck = np.concatenate([[0], np.cumsum(case.lens_k)]).astype(np.int32)
    tq, tk = int(cq[-1]), int(ck[-1])
    axes = dict(head_axis=1, seq_axis=0)
    q, hq_ = make_input(rng, (tq, case.hq, case.d), dtype, device, **axes)
    k, hk_ = make_input(rng, (tk, case.hkv, case.d), dtype, device,
                        "heads" if poison else "contig", **axes)
    v, hv_ = make_input(rng, (tk, case.hkv, case.d), dtype, device, **axes)
    sinks_h = (rng.standard_normal(case.hq)).astype(np.float32) if case.sinks else None
    sinks = None if sinks_h is None else to_device(sinks_h, device)
    kw = dict(causal=case.causal, window=case.window, softcap=case.softcap)
    extra = {}
    if poison:
        extra = dict(out=poisoned((tq, case.hq, case.d), dtype, device),
                     lse_out=poisoned((case.hq, tq), "float32", device))
    out, lse = cuattn.attention(q, k, v, cu_seqlens_q=to_device(cq, device),
                                cu_seqlens_k=to_device(ck, device),
                                max_seqlen_q=max(case.lens_q), max_seqlen_k=max(case.lens_k),
                                sinks=sinks, return_lse=True, **kw, **extra)
    ref, ref_lse = oracle.attention_ref(hq_, hk_, hv_, cu_seqlens_q=cq, cu_seqlens_k=ck,
                                        sinks=sinks_h, **kw)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


def test_attention_varlen_cpu_without_max_seqlen(rng):
    """CPU cu_seqlens: max_seqlen_* are optional."""
    lens = [4, 0, 9]
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    q, k, v = (randn(rng, (13, 2, 32), "float32") for _ in range(3))
    out, lse = cuattn.attention(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, causal=True,
                                return_lse=True)
    ref, ref_lse = oracle.attention_ref(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, causal=True)
    assert_close(out, ref, "float32")
    assert_lse(lse, ref_lse, "float32")


# ------------------------------------------------------------------------------------------------
# Zero sizes


@pytest.mark.parametrize("b,sq,sk", [(0, 5, 5), (2, 0, 5), (0, 0, 0)])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_zero_size(rng, device, dtype, layout, b, sq, sk):
    case = Case(b, sq, sk, 4, 2, 64, causal=True)
    (q, k, v), _ = build(rng, case, dtype, device, layout)
    out, lse = cuattn.attention(q, k, v, causal=True, layout=layout, return_lse=True)
    assert tuple(out.shape) == out_shape(case, layout)
    assert tuple(lse.shape) == (b, 4, sq)
    assert_framework(out, q)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_attention_zero_length_kv(rng, device, dtype, layout):
    """Sk = 0: every row is empty -> out 0, lse -inf."""
    case = Case(2, 7, 0, 4, 2, 64)
    (q, k, v), host = build(rng, case, dtype, device, layout)
    out_buf = poisoned(out_shape(case, layout), dtype, device)
    out, lse = cuattn.attention(q, k, v, layout=layout, return_lse=True, out=out_buf)
    assert (f64(out) == 0).all()
    assert np.isneginf(f64(lse)).all() and tuple(lse.shape) == (2, 4, 7)


# ------------------------------------------------------------------------------------------------
# sliding_window_attention, naive_attention


@pytest.mark.parametrize("window,causal", [(8, False), (8, True), ((5, 2), False),
                                           ((0, 0), False), ((30, 0), True)])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_sliding_window_attention(rng, device, dtype, window, causal):
    case = Case(2, 77, 77, 4, 2, 64)
    (q, k, v), host = build(rng, case, dtype, device, "bshd")
    out, lse = cuattn.sliding_window_attention(q, k, v, window, causal=causal, return_lse=True)
    ref, ref_lse = oracle.attention_ref(*host, window=window, causal=causal)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    same = cuattn.attention(q, k, v, window=window, causal=causal)
    assert_close(same, ref, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [Case(2, 17, 17, 4, 4, 64), Case(1, 33, 50, 4, 2, 64, causal=True),
                                  Case(1, 64, 30, 2, 1, 128, causal=True),
                                  Case(2, 5, 5, 2, 2, 64, scale=0.5)], ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_naive_attention(rng, device, dtype, case, layout):
    (q, k, v), host = build(rng, case, dtype, device, layout)
    out = cuattn.naive_attention(q, k, v, causal=case.causal, scale=case.scale, layout=layout)
    ref, _ = oracle.attention_ref(*host, causal=case.causal, scale=case.scale, layout=layout)
    assert_framework(out, q)
    assert_close(out, ref, dtype)
    assert_empty_rows_zero(out, ref)


# ------------------------------------------------------------------------------------------------
# Output types, streams


def test_attention_bf16_numpy_in_bf16_out(rng):
    """ml_dtypes bf16 NumPy arrays in, ml_dtypes bf16 NumPy array out."""
    q, k, v = (randn(rng, (1, 9, 2, 64), "bfloat16") for _ in range(3))
    out = cuattn.attention(q, k, v, causal=True)
    assert isinstance(out, np.ndarray) and out.dtype == BF16
    assert_close(out, oracle.attention_ref(q, k, v, causal=True)[0], "bfloat16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_attention_gpu_stream(rng, dtype):
    """stream= given as the framework's stream object and as an int handle."""
    skip_unless_gpu()
    case = Case(2, 65, 65, 4, 2, 64, causal=True)
    (q, k, v), host = build(rng, case, dtype, "cuda", "bshd")
    ref, _ = oracle.attention_ref(*host, causal=True)
    if gpu_framework() == "torch":
        import torch

        s = torch.cuda.Stream()
        handle = s.cuda_stream
        sync = s.synchronize
        ctx = torch.cuda.stream(s)
    else:
        import cupy as cp

        s = cp.cuda.Stream(non_blocking=True)
        handle = s.ptr
        sync = s.synchronize
        ctx = s
    out = cuattn.attention(q, k, v, causal=True, stream=s)
    sync()
    assert_close(out, ref, dtype)
    out2 = cuattn.attention(q, k, v, causal=True, stream=handle)
    sync()
    assert_close(out2, ref, dtype)
    with ctx:  # the framework's current stream is the default
        out3 = cuattn.attention(q, k, v, causal=True)
    sync()
    assert_close(out3, ref, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_attention_deterministic(rng, device):
    """Same inputs, same outputs (bitwise) on repeated calls."""
    dtype = "bfloat16"
    case = Case(1, 129, 300, 4, 1, 128, causal=True)
    (q, k, v), _ = build(rng, case, dtype, device, "bshd")
    a = to_host(cuattn.attention(q, k, v, causal=True)).view(np.uint16)
    b = to_host(cuattn.attention(q, k, v, causal=True)).view(np.uint16)
    np.testing.assert_array_equal(a, b)


def test_attention_scale_default_is_inv_sqrt_d(rng):
    q, k, v = (randn(rng, (1, 6, 2, 48), "float32") for _ in range(3))
    a = cuattn.attention(q, k, v)
    b = cuattn.attention(q, k, v, scale=1 / math.sqrt(48))
    assert_close(a, f64(b), "float32")
    c = cuattn.attention(q, k, v, scale=2.0)
    assert np.abs(f64(a) - f64(c)).max() > 1e-3  # scale is used
