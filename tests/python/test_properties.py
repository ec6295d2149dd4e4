"""Property-based tests: random valid calls of every public function against the float64 oracle,
and random hostile variants that must raise TypeError/ValueError naming the argument (or give
the oracle's answer), never crash, never NaN where the oracle is finite, never leave poisoned
output.

Sizes are tiny and the examples derandomized (no example database), so a run is reproducible and
takes well under a minute on two cores; the number of cases that ran is reported at the end of
the module (``hypothesis cases on <device>: N``). The hostile properties run in a subprocess, so
a crash there is a test failure, not a dead pytest.

Device: CUATTN_TEST_DEVICE=cpu (default) or cuda (see strategies.py). On the GPU the hostile
properties run without CUATTN_CHECK (and with check drawn at random): contents that are only
validated with check=True must then run without a fault, whatever they return.
"""

from __future__ import annotations

import collections
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cuattn
import oracle
from conftest import DTYPES, FP8, assert_close, assert_lse, f64, to_host
from strategies import (DEVICE, GPU, can_reverse, dev, device_skip_reason, dtypes, head_dims,
                        host, ints, make_view, poison, seeds, settings_for, views)

pytestmark = pytest.mark.skipif(device_skip_reason() is not None,
                                reason=str(device_skip_reason()))

CASES = collections.Counter()
_REPORT = re.compile(r"hypothesis cases on \w+: (\d+)")


@pytest.fixture(scope="module", autouse=True)
def _report_cases(request):
    yield
    total = sum(CASES.values())
    detail = ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()))
    line = f"hypothesis cases on {DEVICE}: {total} ({detail})"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        print("\n" + line)


def windows():
    return st.one_of(st.none(), st.integers(0, 4),
                     st.tuples(st.integers(-1, 4), st.integers(-1, 4)))


def check_out(out, ref, dtype, lse=None, ref_lse=None):
    assert_close(out, ref, dtype)
    if lse is not None:
        assert_lse(lse, ref_lse, dtype)


def sync():
    """Waits for the GPU (an asynchronous fault surfaces here); nothing on the CPU."""
    if not GPU:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].cuda.synchronize()
    else:
        import cupy

        cupy.cuda.runtime.deviceSynchronize()


# ---- attention ---------------------------------------------------------------------------------


@settings_for(400)
@given(seed=seeds(), dtype=dtypes(), b=st.integers(0, 2), sq=st.integers(0, 9),
       sk=st.integers(0, 9), hkv=st.integers(1, 2), group=st.integers(1, 3), d=head_dims(),
       dv=st.one_of(st.none(), st.integers(1, 9)), causal=st.booleans(), window=windows(),
       softcap=st.sampled_from([0.0, 0.5, 5.0]), sinks=st.booleans(),
       layout=st.sampled_from(["bshd", "bhsd"]), view=views(),
       scale=st.one_of(st.none(), st.floats(0.01, 2)), use_out=st.booleans())
def test_attention_dense(seed, dtype, b, sq, sk, hkv, group, d, dv, causal, window, softcap, sinks,
                         layout, view, scale, use_out):
    CASES["attention"] += 1
    rng = np.random.default_rng(seed)
    dv = d if dv is None or GPU else dv
    hq = hkv * group

    def shape(s, h, x):
        return (b, s, h, x) if layout == "bshd" else (b, h, s, x)

    q, hqv = make_view(rng, shape(sq, hq, d), dtype, view, axis=1)
    k, hk = make_view(rng, shape(sk, hkv, d), dtype, view, axis=1)
    v, hv = make_view(rng, shape(sk, hkv, dv), dtype, view, axis=1)
    snk = host(rng, (hq,), "float32") if sinks else None
    kw = dict(causal=causal, window=window, scale=scale, softcap=softcap, layout=layout)
    out = poison(shape(sq, hq, dv), dtype) if use_out else None
    got, lse = cuattn.attention(q, k, v, sinks=None if snk is None else dev(snk), out=out,
                                return_lse=True, **kw)
    if use_out:
        assert got is out
    ref, ref_lse = oracle.attention_ref(hqv, hk, hv, sinks=snk, **kw)
    check_out(got, ref, dtype, lse, ref_lse)


@settings_for(200)
@given(seed=seeds(), dtype=dtypes(), data=st.data(), hkv=st.integers(1, 2),
       group=st.integers(1, 2), d=head_dims(), causal=st.booleans(), window=windows(),
       softcap=st.sampled_from([0.0, 2.0]), sinks=st.booleans())
def test_attention_varlen(seed, dtype, data, hkv, group, d, causal, window, softcap, sinks):
    CASES["attention varlen"] += 1
    rng = np.random.default_rng(seed)
    n = data.draw(st.integers(1, 3))
    lq = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    lk = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    cq, ck = np.cumsum([0] + lq).astype(np.int32), np.cumsum([0] + lk).astype(np.int32)
    hq = hkv * group
    q, k, v = (host(rng, (int(c[-1]), h, d), dtype) for c, h in ((cq, hq), (ck, hkv), (ck, hkv)))
    snk = host(rng, (hq,), "float32") if sinks else None
    kw = dict(causal=causal, window=window, softcap=softcap)
    out, lse = cuattn.attention(dev(q), dev(k), dev(v), cu_seqlens_q=ints(cq),
                                cu_seqlens_k=ints(ck), max_seqlen_q=max(lq), max_seqlen_k=max(lk),
                                sinks=None if snk is None else dev(snk),
                                out=poison(q.shape, dtype), return_lse=True, **kw)
    ref, ref_lse = oracle.attention_ref(q, k, v, cu_seqlens_q=cq, cu_seqlens_k=ck, sinks=snk, **kw)
    check_out(out, ref, dtype, lse, ref_lse)


MASKS = {
    "causal": lambda b, h, q, kv: q >= kv,
    "band": lambda b, h, q, kv: abs(q - kv) <= 2,
    "document": lambda b, h, q, kv: (q // 3) == (kv // 3),
    "none": lambda b, h, q, kv: q < 0,
}


@settings_for(150)
@given(seed=seeds(), dtype=dtypes(), b=st.integers(1, 2), hq=st.integers(1, 3), d=head_dims(),
       sq=st.integers(1, 11), sk=st.integers(1, 11), kind=st.sampled_from([*MASKS, "table"]),
       per_batch=st.booleans(), per_head=st.booleans(), bq=st.integers(1, 5),
       bkv=st.integers(1, 5), causal=st.booleans())
def test_attention_block_mask(seed, dtype, b, hq, d, sq, sk, kind, per_batch, per_head, bq, bkv,
                              causal):
    CASES["attention block_mask"] += 1
    rng = np.random.default_rng(seed)
    if GPU:  # the GPU kernels take blocks of (128, 64) and their multiples
        bq, bkv, sq, sk = 128, 64, sq * 13, sk * 13
    mb, mh = (b if per_batch else 1), (hq if per_head else 1)
    if kind == "table":
        table = rng.random((mb, mh, sq, sk)) < 0.5
        fn = lambda bb, hh, qq, kk: table[bb, hh, qq, kk]  # noqa: E731
    else:
        fn = MASKS[kind]
    bm = cuattn.create_block_mask(fn, b if per_batch else None, hq if per_head else None, sq, sk,
                                  block_size=(bq, bkv))
    q, k, v = host(rng, (b, sq, hq, d), dtype), host(rng, (b, sk, hq, d), dtype), \
        host(rng, (b, sk, hq, d), dtype)
    bb, hh, qq, kk = np.ix_(np.arange(mb), np.arange(mh), np.arange(sq), np.arange(sk))
    dense = np.broadcast_to(fn(bb, hh, qq, kk), (mb, mh, sq, sk))
    out, lse = cuattn.attention(dev(q), dev(k), dev(v), block_mask=bm, causal=causal,
                                return_lse=True)
    ref, ref_lse = oracle.attention_ref(q, k, v, causal=causal, dense_mask=dense)
    check_out(out, ref, dtype, lse, ref_lse)


@settings_for(150)
@given(seed=seeds(), dtype=dtypes(), b=st.integers(0, 2), sq=st.integers(0, 7),
       sk=st.integers(0, 7), h=st.integers(1, 3), d=head_dims(), causal=st.booleans(),
       layout=st.sampled_from(["bshd", "bhsd"]), view=views(),
       scale=st.one_of(st.none(), st.floats(0.01, 2)))
def test_naive_attention(seed, dtype, b, sq, sk, h, d, causal, layout, view, scale):
    CASES["naive_attention"] += 1
    rng = np.random.default_rng(seed)

    def shape(s):
        return (b, s, h, d) if layout == "bshd" else (b, h, s, d)

    (q, hq_), (k, hk), (v, hv) = (make_view(rng, shape(s), dtype, view, axis=1)
                                  for s in (sq, sk, sk))
    out = cuattn.naive_attention(q, k, v, causal=causal, scale=scale, layout=layout,
                                 out=poison(shape(sq), dtype))
    ref, _ = oracle.attention_ref(hq_, hk, hv, causal=causal, scale=scale, layout=layout)
    assert_close(out, ref, dtype)


@settings_for(200)
@given(seed=seeds(), dtype=dtypes(), b=st.integers(0, 2), s=st.integers(0, 6),
       h=st.integers(1, 3), d=head_dims(), layout=st.sampled_from(["bshd", "bhsd"]),
       view=views(), p_inf=st.sampled_from([0.0, 0.3, 1.0]))
def test_merge_states(seed, dtype, b, s, h, d, layout, view, p_inf):
    CASES["merge_states"] += 1
    rng = np.random.default_rng(seed)
    shape = (b, s, h, d) if layout == "bshd" else (b, h, s, d)
    (oa, hoa), (ob, hob) = (make_view(rng, shape, dtype, view, axis=1) for _ in range(2))
    la, lb = (np.where(rng.random((b, h, s)) < p_inf, -np.inf, rng.standard_normal((b, h, s)) * 3)
              .astype(np.float32) for _ in range(2))
    out, lse = cuattn.merge_states(oa, dev(la), ob, dev(lb), layout=layout,
                                   out=poison(shape, dtype), lse_out=poison((b, h, s), "float32"))
    ref, ref_lse = oracle.merge_ref(hoa, la, hob, lb, layout=layout)
    check_out(out, ref, dtype, lse, ref_lse)


# ---- paged KV cache ----------------------------------------------------------------------------


def paged_case(rng, data, dtype, d, *, dv=None):
    """A random valid paged problem: host arrays (q, caches, table, lengths) and the layout."""
    b = data.draw(st.integers(1, 3), "batch")
    sq = data.draw(st.integers(1, 3), "sq")
    hkv = data.draw(st.integers(1, 2), "hkv")
    hq = hkv * data.draw(st.integers(1, 2), "group")
    page = 16 if GPU else data.draw(st.integers(1, 5), "page_size")
    n_pages = data.draw(st.integers(1, 8), "num_blocks")
    max_blocks = data.draw(st.integers(1, 4), "max_blocks")
    lens = data.draw(st.lists(st.integers(0, max_blocks * page), min_size=b, max_size=b), "lens")
    table = rng.integers(0, n_pages, size=(b, max_blocks)).astype(np.int32)
    for i, length in enumerate(lens):  # entries a sequence does not read may hold anything
        table[i, -(-length // page):] = rng.choice([-7, n_pages, 10**6, 3])
    return dict(b=b, sq=sq, hkv=hkv, hq=hq, page=page, n_pages=n_pages, lens=lens,
                table=table, dv=d if dv is None else dv)


@settings_for(400)
@given(seed=seeds(), dtype=dtypes(), data=st.data(), d=head_dims(paged=True),
       kv_layout=st.sampled_from(["NHD", "HND"]), fp8=st.booleans(),
       combined=st.booleans(), window=windows(), softcap=st.sampled_from([0.0, 3.0]),
       sinks=st.booleans(), q3=st.booleans(), scale=st.one_of(st.none(), st.floats(0.05, 1.5)))
def test_paged_attention(seed, dtype, data, d, kv_layout, fp8, combined, window, softcap, sinks,
                         q3, scale):
    CASES["paged_attention"] += 1
    rng = np.random.default_rng(seed)
    c = paged_case(rng, data, dtype, d)
    b, sq, hkv, hq, page, n = c["b"], c["sq"], c["hkv"], c["hq"], c["page"], c["n_pages"]
    q3 = q3 and sq == 1
    cdt = FP8 if fp8 else dtype
    per = (page, hkv, d) if kv_layout == "NHD" else (hkv, page, d)
    if combined:  # k and v as the two halves of one [N, 2, ...] buffer
        buf = host(rng, (n, 2) + per, cdt)
        kc, vc, dbuf = buf[:, 0], buf[:, 1], dev(buf)
        dk, dvc = dbuf[:, 0], dbuf[:, 1]
    else:
        kc, vc = host(rng, (n,) + per, cdt), host(rng, (n,) + per, cdt)
        dk, dvc = dev(kc), dev(vc)
    ks, vs = (float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2))) if fp8 else (None, None)
    qshape = (b, hq, d) if q3 else (b, sq, hq, d)
    q = host(rng, qshape, dtype)
    bt_host = c["table"]
    wide = np.pad(bt_host, ((0, 0), (1, 1)), constant_values=-3)  # viewed: a row stride
    snk = host(rng, (hq,), "float32") if sinks else None
    lens = np.asarray(c["lens"], np.int32)
    out, lse = cuattn.paged_attention(
        dev(q), dk, dvc, dev(wide)[:, 1:-1], dev(lens), scale=scale, softcap=softcap,
        window=window, sinks=None if snk is None else dev(snk), k_scale=ks, v_scale=vs,
        kv_layout=kv_layout, return_lse=True, out=poison(qshape, dtype))
    ref, ref_lse = oracle.paged_ref(q, kc, vc, bt_host, lens, scale=scale, softcap=softcap,
                                    window=window, sinks=snk, k_scale=ks, v_scale=vs,
                                    kv_layout=kv_layout)
    check_out(out, ref, dtype, lse, ref_lse)


@settings_for(300)
@given(seed=seeds(), dtype=dtypes(), data=st.data(), d=head_dims(paged=True),
       kv_layout=st.sampled_from(["NHD", "HND"]), fp8=st.booleans(), window=windows(),
       softcap=st.sampled_from([0.0, 3.0]), sinks=st.booleans(),
       scale=st.one_of(st.none(), st.floats(0.05, 1.5)), extra_max=st.one_of(st.none(), st.integers(0, 3)))
def test_paged_attention_mixed(seed, dtype, data, d, kv_layout, fp8, window, softcap, sinks, scale,
                               extra_max):
    """A mixed batch: each sequence draws its cached length and 0..min(length, 6) new tokens
    (q packed [total_q, Hq, D] with cu_seqlens_q), against the oracle; max_seqlen_q omitted or
    at least the longest count (the GPU requires it)."""
    CASES["paged_attention mixed"] += 1
    rng = np.random.default_rng(seed)
    c = paged_case(rng, data, dtype, d)
    b, hkv, hq, page, n = c["b"], c["hkv"], c["hq"], c["page"], c["n_pages"]
    counts = [data.draw(st.integers(0, min(length, 6)), f"n_{i}") for i, length in enumerate(c["lens"])]
    cu = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    cdt = FP8 if fp8 else dtype
    per = (page, hkv, d) if kv_layout == "NHD" else (hkv, page, d)
    kc, vc = host(rng, (n,) + per, cdt), host(rng, (n,) + per, cdt)
    ks, vs = (float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2))) if fp8 else (None, None)
    q = host(rng, (int(cu[-1]), hq, d), dtype)
    snk = host(rng, (hq,), "float32") if sinks else None
    lens = np.asarray(c["lens"], np.int32)
    out, lse = cuattn.paged_attention(
        dev(q), dev(kc), dev(vc), dev(c["table"]), dev(lens), scale=scale, softcap=softcap,
        window=window, sinks=None if snk is None else dev(snk), k_scale=ks, v_scale=vs,
        kv_layout=kv_layout, return_lse=True, out=poison(q.shape, dtype),
        lse_out=poison((hq, int(cu[-1])), "float32"), cu_seqlens_q=dev(cu),
        max_seqlen_q=(max(counts) if GPU else None) if extra_max is None else max(counts) + extra_max)
    ref, ref_lse = oracle.paged_ref(q, kc, vc, c["table"], lens, scale=scale, softcap=softcap,
                                    window=window, sinks=snk, k_scale=ks, v_scale=vs,
                                    kv_layout=kv_layout, cu_seqlens_q=cu)
    check_out(out, ref, dtype, lse, ref_lse)


@settings_for(200)
@given(seed=seeds(), dtype=dtypes(), d=head_dims(paged=True), t=st.integers(0, 6),
       n=st.integers(1, 4),
       page=st.integers(1, 4), hkv=st.integers(1, 2), kv_layout=st.sampled_from(["NHD", "HND"]),
       fp8=st.booleans(), combined=st.booleans(), data=st.data())
def test_append_paged_kv(seed, dtype, d, t, n, page, hkv, kv_layout, fp8, combined, data):
    CASES["append_paged_kv"] += 1
    rng = np.random.default_rng(seed)
    page = 16 if GPU else page
    slots = data.draw(st.lists(st.one_of(st.integers(0, n * page - 1), st.integers(-3, -1)),
                               min_size=t, max_size=t).filter(
        lambda s: len({x for x in s if x >= 0}) == sum(x >= 0 for x in s)), "slots")
    cdt = FP8 if fp8 else dtype
    per = (page, hkv, d) if kv_layout == "NHD" else (hkv, page, d)
    buf = host(rng, (n, 2) + per, cdt)
    kn, vn = host(rng, (t, hkv, d), dtype), host(rng, (t, hkv, d), dtype)
    ks, vs = (float(rng.uniform(0.5, 2)), float(rng.uniform(0.5, 2))) if fp8 else (None, None)
    if combined:
        dbuf = dev(buf)
        kc, vc = dbuf[:, 0], dbuf[:, 1]
    else:
        kc, vc = dev(np.ascontiguousarray(buf[:, 0])), dev(np.ascontiguousarray(buf[:, 1]))
    cuattn.append_paged_kv(dev(kn), dev(vn), kc, vc, ints(slots, np.int64), k_scale=ks, v_scale=vs,
                           kv_layout=kv_layout)
    for cache, new, s, i in ((kc, kn, ks, 0), (vc, vn, vs, 1)):
        want = f64(buf[:, i]).copy()
        nhd = want if kv_layout == "NHD" else want.transpose(0, 2, 1, 3)
        for tok, slot in enumerate(slots):
            if slot >= 0:
                nhd[slot // page, slot % page] = f64(new[tok]) / (s or 1.0)
        if fp8:
            want = want.astype(FP8).astype(np.float64)
        got = f64(to_host(cache))
        assert not np.isnan(got).any()
        # fp8: the library rounds x / scale in float32, the reference in float64 (one step apart
        # at most, on a tie); other caches are copied exactly.
        tol = 0.07 * np.abs(want) if fp8 else 0.0
        assert (np.abs(got - want) <= tol).all(), f"cache {i}: max diff {np.abs(got - want).max()}"


# ---- MLA ---------------------------------------------------------------------------------------


@settings_for(120)
@given(seed=seeds(), dtype=dtypes(), b=st.integers(1, 2), h=st.integers(1, 3),
       s=st.integers(1, 6), d=st.integers(1, 8), lat=st.integers(1, 8), dv=st.integers(1, 8),
       causal=st.booleans(), scale=st.one_of(st.none(), st.floats(0.05, 1.5)))
def test_mla_attention(seed, dtype, b, h, s, d, lat, dv, causal, scale):
    CASES["mla_attention"] += 1
    rng = np.random.default_rng(seed)
    q, kl, vl = host(rng, (b, h, s, d), dtype), host(rng, (b, s, lat), dtype), \
        host(rng, (b, s, lat), dtype)
    kp, vp = host(rng, (h, lat, d), dtype, 0.5), host(rng, (h, lat, dv), dtype, 0.5)
    args = [dev(x) for x in (q, kl, vl, kp, vp)]
    if GPU and (d % 8 or lat % 8 or dv % 8):  # the GPU GEMMs take 16-byte rows
        with pytest.raises(ValueError, match="multiple"):  # of 8 (dims) or of 8 elements (strides)
            cuattn.mla_attention(*args, causal=causal, scale=scale)
        return
    out = cuattn.mla_attention(*args, causal=causal, scale=scale, out=poison((b, h, s, dv), dtype))
    ref, _ = oracle.mla_ref(q, kl, vl, kp, vp, causal=causal, scale=scale)
    assert_close(out, ref, dtype)


@settings_for(120)
@given(seed=seeds(), dtype=dtypes(), data=st.data(), dk=st.integers(2, 12), four=st.booleans(),
       causal=st.booleans(), scale=st.floats(0.05, 1.0))
def test_mla_decode(seed, dtype, data, dk, four, causal, scale):
    CASES["mla_decode"] += 1
    if GPU:
        pytest.skip("the GPU mla_decode kernel takes DeepSeek's 576/512 latent only (test_mla.py)")
    rng = np.random.default_rng(seed)
    dv = data.draw(st.integers(1, dk), "head_dim_v")
    c = paged_case(rng, data, dtype, dk)
    b, sq, hq, page, n = c["b"], c["sq"], c["hq"], c["page"], c["n_pages"]
    cache = host(rng, (n, page, 1, dk) if four else (n, page, dk), dtype)
    q = host(rng, (b, sq, hq, dk), dtype)
    lens = np.asarray(c["lens"], np.int32)
    bt = c["table"]
    out, lse = cuattn.mla_decode(dev(q), dev(cache), dev(bt), dev(lens), scale=scale,
                                 head_dim_v=dv, causal=causal, out=poison((b, sq, hq, dv), dtype))
    ref, ref_lse = oracle.mla_decode_ref(q, cache, bt, lens, scale=scale, head_dim_v=dv,
                                         causal=causal)
    check_out(out, ref, dtype, lse, ref_lse)


# ---- hostile variants (run in a subprocess by test_hostile_properties) ---------------------------
#
# mutation -> (the argument the error must name, whether it is a content error). Content errors
# (lengths, ids, cu_seqlens, scalar contents) are validated for GPU data only with check=True:
# without it the call must run without a fault, whatever it returns.

PAGED_MUTATIONS = {
    "scale-inf": ("scale", False), "scale-nan": ("scale", False), "scale-huge": ("scale", False),
    "softcap-inf": ("softcap", False), "softcap-neg": ("softcap", False),
    "k_scale-inf": ("k_scale", False), "v_scale-zero": ("v_scale", False),
    "seq_lens-strided": ("seq_lens", False), "seq_lens-reversed": ("seq_lens", False),
    "seq_lens-int64": ("seq_lens", False), "block_table-int64": ("block_table", False),
    "sinks-strided": ("sinks", False), "out-aliases-cache": ("out", False),
    "lse-aliases-sinks": ("lse", False), "q-float64": ("q", False),
    "seq_lens-too-long": ("seq_lens", True), "seq_lens-negative": ("seq_lens", True),
    "block-id-negative": ("block_table", True), "block-id-too-large": ("block_table", True),
    "k_scale-tensor-nan": ("k_scale", True), "sinks-nan": ("sinks", True),
}
ATTN_MUTATIONS = {
    "scale-inf": ("scale", False), "softcap-inf": ("softcap", False),
    "cu-strided": ("cu_seqlens_q", False), "cu-int64": ("cu_seqlens_k", False),
    "out-is-q": ("out", False), "out-stride0": ("out", False),
    "cu-short": ("cu_seqlens_q", True), "cu-long": ("cu_seqlens_k", True),
    "cu-decreasing": ("cu_seqlens_q", True),
}
MIXED_MUTATIONS = {
    "cu-int64": ("cu_seqlens_q", False), "cu-strided": ("cu_seqlens_q", False),
    "cu-count": ("cu_seqlens_q", False), "max-without-cu": ("max_seqlen_q", False),
    "cu-short": ("cu_seqlens_q", True), "cu-long": ("cu_seqlens_q", True),
    "cu-decreasing": ("cu_seqlens_q", True), "cu-first": ("cu_seqlens_q", True),
    "more-tokens-than-cache": ("cu_seqlens_q", True), "max-small": ("max_seqlen_q", True),
}
APPEND_MUTATIONS = {
    "k_new-aliases-cache": ("k_cache", False), "caches-overlap": ("v_cache", False),
    "slot_mapping-strided": ("slot_mapping", False), "slot_mapping-int32": ("slot_mapping", False),
    "k_scale-nan": ("k_scale", False), "slot-too-large": ("slot_mapping", True),
}


CU_CONTENT = ("cu-short", "cu-long", "cu-decreasing", "cu-first")


def bad_cu(cu: np.ndarray, mutation: str) -> None:
    """Breaks one content rule of a cu_seqlens array (at least 3 entries) in place: the last
    entry one short or one long, a decrease, or a first entry other than 0."""
    if mutation == "cu-short":
        cu[-1] -= 1
    elif mutation == "cu-long":
        cu[-1] += 1
    elif mutation == "cu-decreasing":
        cu[1] = cu[2] + 1
    elif mutation == "cu-first":
        cu[0] = 1
    else:
        raise ValueError(mutation)


def expect_refused(fn, name, content, check):
    """fn() raises ValueError/TypeError naming `name`; a content error on the GPU without check
    may instead run, without a fault."""
    try:
        fn()
    except (ValueError, TypeError) as e:
        assert name in str(e), f"the error does not name {name!r}: {e}"
        return
    if GPU and content and not check:
        sync()
        return
    raise AssertionError(f"no error for a bad {name}")


def strided(x: np.ndarray, step: int):
    """A device view of x's values with stride `step` (a base `step` times as long)."""
    return dev(np.repeat(x, step))[::step]


def stride0(shape, dtype):
    """A writable device array of `shape` whose first dim has stride 0."""
    one = dev(np.zeros((1,) + tuple(shape[1:]), DTYPES[dtype]))
    if GPU and type(one).__module__.startswith("torch"):
        return one.expand(*shape)
    xp = np if not GPU else sys.modules["cupy"]
    return xp.lib.stride_tricks.as_strided(one, shape=shape, strides=(0,) + one.strides[1:])


@settings_for(350)
@given(seed=seeds(), dtype=dtypes(), d=head_dims(paged=True), b=st.integers(2, 3),
       hkv=st.integers(1, 2),
       group=st.integers(1, 2), page=st.integers(1, 4), n=st.integers(2, 6),
       max_blocks=st.integers(1, 3), mutation=st.sampled_from(sorted(PAGED_MUTATIONS)),
       check=st.booleans())
def hostile_paged(seed, dtype, d, b, hkv, group, page, n, max_blocks, mutation, check):
    CASES["hostile paged_attention"] += 1
    rng = np.random.default_rng(seed)
    page = 16 if GPU else page
    hq = hkv * group
    lens = rng.integers(1, max_blocks * page + 1, size=b).astype(np.int32)
    table = rng.integers(0, n, size=(b, max_blocks)).astype(np.int32)
    extra = b * hq  # spare pages: room for an output view of the cache
    kc = dev(host(rng, (n + extra, page, hkv, d), dtype))
    a = dict(q=dev(host(rng, (b, hq, d), dtype)), k_cache=kc,
             v_cache=dev(host(rng, (n + extra, page, hkv, d), dtype)), block_table=dev(table),
             seq_lens=dev(lens), check=check)
    kw = {}
    what = mutation.split("-", 1)[1]
    bad = {"inf": math.inf, "nan": math.nan, "huge": 1e39, "neg": -1.0, "zero": 0.0}
    if mutation.split("-")[0] in ("scale", "softcap", "k_scale", "v_scale") and what in bad:
        kw[mutation.split("-")[0]] = bad[what]
    elif mutation == "k_scale-tensor-nan":
        kw["k_scale"] = dev(np.array([np.nan], np.float32))
    elif mutation == "seq_lens-strided":
        a["seq_lens"] = strided(lens, 2)
    elif mutation == "seq_lens-reversed":
        a["seq_lens"] = dev(lens[::-1].copy())[::-1] if can_reverse() else strided(lens, 3)
    elif mutation == "seq_lens-int64":
        a["seq_lens"] = dev(lens.astype(np.int64))
    elif mutation == "block_table-int64":
        a["block_table"] = dev(table.astype(np.int64))
    elif mutation == "sinks-strided":
        kw["sinks"] = strided(np.zeros(hq, np.float32), 2) if hq > 1 else \
            dev(np.zeros((1, 2), np.float32))[:, :1]  # one head: a 2-D sinks, a shape error
    elif mutation == "sinks-nan":
        kw["sinks"] = dev(np.full(hq, np.nan, np.float32))
    elif mutation == "out-aliases-cache":
        kw["out"] = kc.reshape(-1)[:b * hq * d].reshape(b, hq, d)
    elif mutation == "lse-aliases-sinks":
        buf = dev(np.zeros(b * hq, np.float32))
        kw.update(sinks=buf[:hq], lse_out=buf.reshape(b, hq), return_lse=True)
    elif mutation == "q-float64":
        a["q"] = dev(host(rng, (b, hq, d), "float64"))
    elif mutation == "seq_lens-too-long":
        lens[0] = max_blocks * page + 1
        a["seq_lens"] = dev(lens)
    elif mutation == "seq_lens-negative":
        lens[-1] = -5
        a["seq_lens"] = dev(lens)
    elif mutation == "block-id-negative":
        table[0, 0] = -1
        a["block_table"] = dev(table)
    elif mutation == "block-id-too-large":
        table[0, 0] = n + extra
        a["block_table"] = dev(table)
    name, content = PAGED_MUTATIONS[mutation]
    expect_refused(lambda: cuattn.paged_attention(**a, **kw), name, content, check)


@settings_for(300)
@given(seed=seeds(), dtype=dtypes(), d=head_dims(), hkv=st.integers(1, 2), group=st.integers(1, 2),
       lq=st.lists(st.integers(1, 4), min_size=2, max_size=3),
       lk=st.lists(st.integers(1, 4), min_size=3, max_size=3),
       mutation=st.sampled_from(sorted(ATTN_MUTATIONS)), check=st.booleans())
def hostile_attention(seed, dtype, d, hkv, group, lq, lk, mutation, check):
    CASES["hostile attention"] += 1
    rng = np.random.default_rng(seed)
    hq, lk = hkv * group, lk[:len(lq)]
    cq, ck = np.cumsum([0] + lq).astype(np.int32), np.cumsum([0] + lk).astype(np.int32)
    q = dev(host(rng, (int(cq[-1]), hq, d), dtype))
    k, v = (dev(host(rng, (int(ck[-1]), hkv, d), dtype)) for _ in range(2))
    kw = dict(max_seqlen_q=max(lq), max_seqlen_k=max(lk), check=check)
    if mutation in ("scale-inf", "softcap-inf"):
        kw[mutation.split("-")[0]] = math.inf
    elif mutation == "cu-strided":
        kw["cu_seqlens_q"] = strided(cq, 2)
    elif mutation == "cu-int64":
        kw["cu_seqlens_k"] = dev(ck.astype(np.int64))
    elif mutation == "out-is-q":
        kw["out"] = q
    elif mutation == "out-stride0":
        kw["out"] = stride0(tuple(q.shape), dtype)
    elif mutation in CU_CONTENT:
        bad_cu(ck if mutation == "cu-long" else cq, mutation)
    kw.setdefault("cu_seqlens_q", dev(cq))
    kw.setdefault("cu_seqlens_k", dev(ck))
    name, content = ATTN_MUTATIONS[mutation]
    expect_refused(lambda: cuattn.attention(q, k, v, **kw), name, content, check)


@settings_for(200)
@given(seed=seeds(), dtype=dtypes(), d=head_dims(paged=True), t=st.integers(2, 4),
       n=st.integers(2, 4),
       page=st.integers(2, 4), hkv=st.integers(1, 2),
       mutation=st.sampled_from(sorted(APPEND_MUTATIONS)), check=st.booleans())
def hostile_append(seed, dtype, d, t, n, page, hkv, mutation, check):
    CASES["hostile append_paged_kv"] += 1
    rng = np.random.default_rng(seed)
    page = 16 if GPU else page
    kc, vc = (dev(host(rng, (n, page, hkv, d), dtype)) for _ in range(2))
    kn, vn = (dev(host(rng, (t, hkv, d), dtype)) for _ in range(2))
    slots = rng.permutation(n * page)[:t].astype(np.int64)
    sm = dev(slots)
    kw = dict(check=check)
    if mutation == "k_new-aliases-cache":
        kn = kc.reshape(-1)[:t * hkv * d].reshape(t, hkv, d)
    elif mutation == "caches-overlap":
        vc = kc
    elif mutation == "slot_mapping-strided":
        sm = strided(slots, 2)
    elif mutation == "slot_mapping-int32":
        sm = dev(slots.astype(np.int32))
    elif mutation == "k_scale-nan":
        kw["k_scale"] = math.nan
    elif mutation == "slot-too-large":
        slots[0] = n * page
        sm = dev(slots)
    name, content = APPEND_MUTATIONS[mutation]
    expect_refused(lambda: cuattn.append_paged_kv(kn, vn, kc, vc, sm, **kw), name, content, check)


@settings_for(250)
@given(seed=seeds(), dtype=dtypes(), d=head_dims(paged=True), b=st.integers(2, 3),
       hkv=st.integers(1, 2), group=st.integers(1, 2), page=st.integers(1, 4),
       mutation=st.sampled_from(sorted(MIXED_MUTATIONS)), check=st.booleans())
def hostile_paged_mixed(seed, dtype, d, b, hkv, group, page, mutation, check):
    """A mixed batch with one bad cu_seqlens_q / max_seqlen_q. On the GPU without check a bad
    content may run (clamped inside q, no fault)."""
    CASES["hostile paged_attention mixed"] += 1
    rng = np.random.default_rng(seed)
    page = 16 if GPU else page
    hq, max_blocks = hkv * group, 3
    lens = rng.integers(2, max_blocks * page + 1, size=b).astype(np.int32)
    counts = [int(rng.integers(1, min(int(x), 4) + 1)) for x in lens]
    cu = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    n = b * max_blocks
    table = rng.permutation(n).reshape(b, max_blocks).astype(np.int32)
    a = dict(q=dev(host(rng, (int(cu[-1]), hq, d), dtype)),
             k_cache=dev(host(rng, (n, page, hkv, d), dtype)),
             v_cache=dev(host(rng, (n, page, hkv, d), dtype)), block_table=dev(table),
             seq_lens=dev(lens), max_seqlen_q=max(counts), check=check)
    if mutation == "cu-int64":
        a["cu_seqlens_q"] = dev(cu.astype(np.int64))
    elif mutation == "cu-strided":
        a["cu_seqlens_q"] = strided(cu, 2)
    elif mutation == "cu-count":
        a["cu_seqlens_q"] = dev(cu[:-1].copy())
    elif mutation == "max-without-cu":
        a["q"] = dev(host(rng, (b, hq, d), dtype))
    elif mutation in CU_CONTENT:
        bad_cu(cu, mutation)
    elif mutation == "more-tokens-than-cache":
        lens[0] = counts[0] - 1
        a["seq_lens"] = dev(lens)
    elif mutation == "max-small":
        a["max_seqlen_q"] = max(counts) - 1
    if mutation != "max-without-cu":
        a.setdefault("cu_seqlens_q", dev(cu))
    name, content = MIXED_MUTATIONS[mutation]
    expect_refused(lambda: cuattn.paged_attention(**a), name, content, check)


HOSTILE = (hostile_paged, hostile_paged_mixed, hostile_attention, hostile_append)


def run_hostile():
    """Runs every hostile property (the subprocess side of test_hostile_properties)."""
    for fn in HOSTILE:
        fn()
    print(f"hypothesis cases on {DEVICE}: {sum(CASES.values())}", flush=True)


def test_hostile_properties():
    """The hostile properties in a fresh interpreter: a crash fails this test with its output."""
    here = Path(__file__).resolve().parent
    env = dict(os.environ)
    env.pop("CUATTN_CHECK", None)  # on the GPU: what runs unchecked must not fault
    env["PYTHONPATH"] = os.pathsep.join([str(here), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", "import test_properties as t; t.run_hostile()"],
                       cwd=here, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"hostile properties failed (exit {r.returncode}):\n{out[-6000:]}"
    m = _REPORT.search(r.stdout)
    assert m, out[-2000:]
    CASES["hostile (subprocess)"] += int(m.group(1))
