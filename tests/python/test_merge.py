"""cuattn.merge_states: merging the results over two disjoint key sets gives the whole."""

from __future__ import annotations

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (DTYPES, assert_close, assert_framework, assert_lse, device_dtype_params,
                      f64, make_input, to_device)


def _split(layout, lo, hi):
    idx = [slice(None)] * 4
    idx[1 if layout == "bshd" else 2] = slice(lo, hi)
    return tuple(idx)


def _qkv(rng, device, dtype, layout, b, sq, sk, hq, hkv, d):
    ax = dict(head_axis=2, seq_axis=1) if layout == "bshd" else dict(head_axis=1, seq_axis=2)
    if layout == "bshd":
        qs, ks = (b, sq, hq, d), (b, sk, hkv, d)
    else:
        qs, ks = (b, hq, sq, d), (b, hkv, sk, d)
    q, qh = make_input(rng, qs, dtype, device, **ax)
    k, kh = make_input(rng, ks, dtype, device, **ax)
    v, vh = make_input(rng, ks, dtype, device, **ax)
    return (q, k, v), (qh, kh, vh)


@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
@pytest.mark.parametrize("sq,sk,split", [(7, 7, 3), (33, 129, 64), (1, 200, 1), (20, 6, 6)])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_merge_halves_equals_whole(rng, device, dtype, layout, sq, sk, split):
    """attention over keys [0, split) and [split, Sk) (each with return_lse), merged, equals
    attention over all keys (split == Sk: the second half is empty, lse -inf)."""
    (q, k, v), host = _qkv(rng, device, dtype, layout, 2, sq, sk, 4, 2, 64)
    lo, hi = _split(layout, 0, split), _split(layout, split, sk)
    oa, la = cuattn.attention(q, k[lo], v[lo], layout=layout, return_lse=True)
    ob, lb = cuattn.attention(q, k[hi], v[hi], layout=layout, return_lse=True)
    out, lse = cuattn.merge_states(oa, la, ob, lb, layout=layout)
    assert_framework(out, q)
    ref, ref_lse = oracle.attention_ref(*host, layout=layout)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_merge_causal_split(rng, device, dtype, layout):
    """Causal attention with the keys split at s. The whole problem's rule is
    j <= i + Sk - Sq. Second half [s, Sk) on its own has offset (Sk - s) - Sq, so causal=True on
    it is that same rule. First half [0, s) has offset s - Sq, so the rule is window
    (-1, Sk - s) without causal. Some rows see nothing of the second half (lse -inf)."""
    sq, sk, s = 40, 100, 70
    (q, k, v), host = _qkv(rng, device, dtype, layout, 2, sq, sk, 4, 1, 64)
    lo, hi = _split(layout, 0, s), _split(layout, s, sk)
    oa, la = cuattn.attention(q, k[lo], v[lo], window=(-1, sk - s), layout=layout,
                              return_lse=True)
    ob, lb = cuattn.attention(q, k[hi], v[hi], causal=True, layout=layout, return_lse=True)
    assert np.isneginf(f64(lb)).any()
    out, lse = cuattn.merge_states(oa, la, ob, lb, layout=layout)
    ref, ref_lse = oracle.attention_ref(*host, causal=True, layout=layout)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


@pytest.mark.parametrize("layout", ["bshd", "bhsd"])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_merge_states_random(rng, device, dtype, layout):
    """Random partial states, including rows where one or both lse are -inf."""
    b, s, h, d = 3, 17, 4, 64
    oshape = (b, s, h, d) if layout == "bshd" else (b, h, s, d)
    oa_h = rng.standard_normal(oshape)
    ob_h = rng.standard_normal(oshape)
    la_h = (rng.standard_normal((b, h, s)) * 3).astype(np.float32)
    lb_h = (rng.standard_normal((b, h, s)) * 3).astype(np.float32)
    pick = rng.random((b, h, s))
    la_h[pick < 0.2] = -np.inf
    lb_h[(pick > 0.1) & (pick < 0.3)] = -np.inf  # 0.1..0.2: both -inf
    # a row whose state is -inf carries out 0, as attention returns it
    for o, l in ((oa_h, la_h), (ob_h, lb_h)):
        mask = np.isneginf(l) if layout == "bhsd" else np.isneginf(l).transpose(0, 2, 1)
        o[mask] = 0
    oa_h, ob_h = oa_h.astype(DTYPES[dtype]), ob_h.astype(DTYPES[dtype])
    oa, ob = to_device(oa_h, device), to_device(ob_h, device)
    out, lse = cuattn.merge_states(oa, to_device(la_h, device), ob, to_device(lb_h, device),
                                   layout=layout)
    ref, ref_lse = oracle.merge_ref(oa_h, la_h, ob_h, lb_h, layout=layout)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    both = np.isneginf(la_h) & np.isneginf(lb_h)
    assert both.any()
    o = f64(out)
    o = o if layout == "bhsd" else o.transpose(0, 2, 1, 3)
    assert (o[both] == 0).all()


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_merge_both_empty(device, dtype):
    """Both lse -inf -> out 0, lse -inf (never NaN)."""
    o = to_device(np.ones((1, 3, 2, 64), DTYPES[dtype]), device)
    l = to_device(np.full((1, 2, 3), -np.inf, np.float32), device)
    out, lse = cuattn.merge_states(o, l, o, l)
    assert (f64(out) == 0).all()
    assert np.isneginf(f64(lse)).all()
