"""The Hopper (sm_90a) flash kernel at the head dims it gained after D 64 and 128: D = 96, 192,
256 and (D, Dv) = (192, 128), forced through the internal _variant="hopper=1", against the
float64 oracle with the suite's tolerances, poisoned outputs and odd lengths. Every case has more
than 128 keys, so the kernel takes the call (with at most one kv tile it hands it to the portable
kernel). Skipped without an sm_90 GPU, or in a build without sm_90a code or without the head dim."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (assert_close, assert_empty_rows_zero, assert_lse, gpu_framework,
                      gpu_skip_reason, make_input, poisoned, to_device)
from test_attention import Case, build, kwargs_for, out_shape, sinks_for
from test_block_mask import dense_mask, make_mask_mod

DIMS = [(96, 96), (192, 192), (256, 256), (192, 128)]
# Pairs where the kernel has two key tiles, and the variant of the one that is not the default
# (D128: the longer 128 x 176; D192 / D256: the 128 x 64 one, their default being the longer).
OTHER_TILE = {(128, 128): "alt_tile=1", (192, 192): "alt_tile=0", (256, 256): "alt_tile=0"}
DTYPES = ["float16", "bfloat16"]
VARIANT = "hopper=1"
DEVICE = "cuda"  # where the cases run (the Hopper kernel exists only there)


def _skip_reason(d):
    reason = gpu_skip_reason()
    if reason:
        return reason
    cc = tuple(cuattn.device_info().get("compute_capability", (0, 0)))
    if cc != (9, 0):
        return f"the sm_90a kernel needs an sm_90 GPU (this one is sm_{cc[0]}{cc[1]})"
    info = cuattn.build_info()
    if "90a" not in str(info.get("archs", "")):
        return f"this build has no sm_90a code (archs {info.get('archs')})"
    if d not in info.get("head_dims", []):
        return f"this build has no head dim {d} (head dims {info.get('head_dims')})"
    return None


def dim_params(with_alt=False):
    """(d, dv, dtype, variant): every pair on its default tile, and with_alt on its other key tile."""
    ps = []
    runs = [(d, dv, VARIANT) for d, dv in DIMS]
    if with_alt:
        runs += [(d, dv, VARIANT + "," + v) for (d, dv), v in OTHER_TILE.items()]
    for d, dv, variant in runs:
        for dtype in DTYPES:
            reason = _skip_reason(d)
            tag = "-" + variant.split(",")[-1].replace("=", "") if "alt_tile" in variant else ""
            ps.append(pytest.param(d, dv, dtype, variant, id=f"d{d}v{dv}{tag}-{dtype}",
                                   marks=pytest.mark.skipif(reason is not None, reason=reason or "")))
    return ps


# Shapes with D = 0: the test fills in (D, Dv). Each with its layout.
CASES = [
    (Case(2, 257, 257, 4, 4, 0), "bshd"),                                  # dense, a partial last tile
    (Case(1, 300, 300, 8, 2, 0, causal=True), "bshd"),                     # GQA 4
    (Case(2, 77, 333, 4, 1, 0, causal=True), "bhsd"),                      # MQA, Sq < Sk: bottom-right diagonal
    (Case(1, 300, 200, 4, 2, 0, causal=True), "bshd"),                     # Sq > Sk: the first 100 rows see nothing
    (Case(1, 333, 333, 4, 2, 0, window=(100, 20)), "bshd"),                # sliding window, both sides
    (Case(2, 257, 257, 4, 4, 0, causal=True, window=64), "bhsd"),          # causal window (64, 0)
    (Case(1, 200, 321, 4, 2, 0, causal=True, softcap=5.0, sinks=True), "bshd"),
    (Case(1, 150, 200, 2, 1, 0, window=(1, 1), sinks=True), "bshd"),       # three keys a row, with a sink
    (Case(1, 1000, 1000, 2, 1, 0, causal=True), "bshd"),                   # many tiles: the ring wraps around
]


def _case_id(c):
    case, layout = c
    return f"{case}-{layout}".replace("-d0", "")


@pytest.mark.parametrize("shape", CASES, ids=_case_id)
@pytest.mark.parametrize("d,dv,dtype,variant", dim_params(with_alt=True))
def test_hopper_dims(rng, d, dv, dtype, variant, shape):
    case, layout = dataclasses.replace(shape[0], d=d, dv=dv), shape[1]
    (q, k, v), host = build(rng, case, dtype, DEVICE, layout)
    sinks, sinks_h = sinks_for(rng, case, DEVICE)
    out, lse = cuattn.attention(q, k, v, sinks=sinks, layout=layout, return_lse=True, _variant=variant,
                                out=poisoned(out_shape(case, layout), dtype, DEVICE),
                                lse_out=poisoned((case.b, case.hq, case.sq), "float32", DEVICE),
                                **kwargs_for(case))
    ref, ref_lse = oracle.attention_ref(*host, sinks=sinks_h, layout=layout, **kwargs_for(case))
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


# Block masks of 128 x 128 blocks, and 128 x 256 (whole tiles of either kv tile width, 128 or 64).
MASKS = [
    ("causal", None, 300, 300, 128),
    ("document", None, 333, 333, 128),
    ("sliding", None, 257, 400, (128, 256)),
    ("empty_rows", None, 200, 257, 128),
    ("prefix_lm", None, 300, 300, 128),
    ("per_head_window", 4, 260, 260, 128),
]


@pytest.mark.parametrize("mask", MASKS, ids=lambda m: f"{m[0]}-q{m[2]}-k{m[3]}")
@pytest.mark.parametrize("d,dv,dtype,variant", dim_params(with_alt=True))
def test_hopper_dims_block_mask(rng, d, dv, dtype, variant, mask):
    """(The longer key tiles cannot hold whole mask blocks: block-mask calls always run the 128 x
    128 / 128 x 64 one, so the alt_tile rows check that they still do.)"""
    kind, heads, sq, sk, block_size = mask
    case = Case(2, sq, sk, 4, 2, d, dv=dv)
    (q, k, v), host = build(rng, case, dtype, DEVICE, "bshd")
    mod = make_mask_mod(kind, rng, None, heads, sq, sk)
    bm = cuattn.create_block_mask(mod, None, heads, sq, sk, block_size=block_size, device=DEVICE)
    out, lse = cuattn.attention(q, k, v, block_mask=bm, return_lse=True, _variant=variant,
                                out=poisoned(out_shape(case, "bshd"), dtype, DEVICE),
                                lse_out=poisoned((case.b, case.hq, sq), "float32", DEVICE))
    ref, ref_lse = oracle.attention_ref(*host, dense_mask=dense_mask(mod, None, heads, sq, sk))
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


VARLEN = [
    # (q lengths, k lengths, causal, window, sinks)
    ((129, 1, 300, 0, 257), (129, 1, 300, 0, 257), True, None, False),
    ((17, 200, 5), (300, 200, 150), False, (40, 10), True),
    ((1000, 33), (1000, 700), True, None, True),
]


@pytest.mark.parametrize("lens", VARLEN, ids=lambda c: "q" + "_".join(map(str, c[0])) + "-k" + "_".join(map(str, c[1])))
@pytest.mark.parametrize("d,dv,dtype,variant", dim_params(with_alt=True))
def test_hopper_dims_varlen(rng, d, dv, dtype, variant, lens):
    lens_q, lens_k, causal, window, with_sinks = lens
    hq, hkv = 4, 2
    cq = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    ck = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    tq, tk = int(cq[-1]), int(ck[-1])
    axes = dict(head_axis=1, seq_axis=0)
    q, hq_ = make_input(rng, (tq, hq, d), dtype, DEVICE, **axes)
    k, hk_ = make_input(rng, (tk, hkv, d), dtype, DEVICE, **axes)
    v, hv_ = make_input(rng, (tk, hkv, dv), dtype, DEVICE, **axes)
    sinks_h = rng.standard_normal(hq).astype(np.float32) if with_sinks else None
    sinks = None if sinks_h is None else to_device(sinks_h, DEVICE)
    out, lse = cuattn.attention(q, k, v, cu_seqlens_q=to_device(cq, DEVICE), cu_seqlens_k=to_device(ck, DEVICE),
                                max_seqlen_q=max(lens_q), max_seqlen_k=max(lens_k), causal=causal,
                                window=window, sinks=sinks, return_lse=True, _variant=variant,
                                out=poisoned((tq, hq, dv), dtype, DEVICE),
                                lse_out=poisoned((hq, tq), "float32", DEVICE))
    ref, ref_lse = oracle.attention_ref(hq_, hk_, hv_, cu_seqlens_q=cq, cu_seqlens_k=ck, causal=causal,
                                        window=window, sinks=sinks_h)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("d,dv,dtype,variant", [p for p in dim_params(with_alt=True) if p.values[2] == "bfloat16"])
def test_hopper_dims_run_the_sm90_kernel(rng, d, dv, dtype, variant):
    """hopper=1 (and the default) launch the sm_90a kernel itself (not the portable one it falls
    back to where a call rules it out), and portable=1 the portable one. Read from the kernel
    names PyTorch's profiler records."""
    if gpu_framework() != "torch":
        pytest.skip("kernel names come from PyTorch's profiler; PyTorch with CUDA is not available")
    import torch

    (q, k, v), _ = build(rng, Case(1, 300, 300, 4, 2, d, dv=dv, causal=True), dtype, DEVICE, "bshd")

    def kernels(variant):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            cuattn.attention(q, k, v, causal=True, _variant=variant)
            torch.cuda.synchronize()
        return [e.name for e in prof.events() if "flash_fwd" in e.name]

    forced = kernels(variant)
    assert any("flash_fwd_sm90_kernel" in n for n in forced), forced
    assert any("flash_fwd_sm90_kernel" in n for n in kernels("")), "the default at this pair"
    portable = kernels("portable=1")
    assert portable and not any("sm90" in n for n in portable), portable
