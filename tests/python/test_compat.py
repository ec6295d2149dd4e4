"""cuattn.compat against float64 references written from the originals' documented conventions:
flash-attn's bottom-right causal and window_size, its KV-cache append and paging, and PyTorch
SDPA's top-left is_causal, enable_gqa and boolean / additive attn_mask.

Inputs live where `where` says: "cpu" NumPy (every CPU dtype), "torch-cpu" PyTorch CPU tensors
(float32; skipped without PyTorch), "cuda" torch or CuPy GPU arrays (skipped without a GPU)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import oracle
from conftest import _cuda_param, assert_close, assert_lse, f64, randn, to_device, to_host
from cuattn.compat import (flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache,
                           scaled_dot_product_attention)

HAS_TORCH = importlib.util.find_spec("torch") is not None

WHERE = [pytest.param("cpu", d, id=f"cpu-{d}") for d in ("float32", "float16", "bfloat16")]
WHERE += [pytest.param("torch-cpu", "float32", id="torch-cpu-float32",
                       marks=pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed"))]
WHERE += [_cuda_param("cuda", d, id=f"cuda-{d}") for d in ("float16", "bfloat16")]


def put(x, where):
    """A host array where the test runs: NumPy, a torch CPU tensor or a GPU array."""
    if where == "cpu":
        return np.ascontiguousarray(x)
    if where == "torch-cpu":
        import torch

        return torch.from_numpy(np.ascontiguousarray(x))
    return to_device(x, "cuda")


def flash_visible(sq, sk, causal=False, window=(-1, -1)):
    """flash-attn's rule, from its docstring: query i attends keys
    [i + sk - sq - window[0], i + sk - sq + window[1]] (-1: unbounded), and with causal
    j <= i + sk - sq."""
    i = np.arange(sq)[:, None] + sk - sq
    j = np.arange(sk)[None, :]
    vis = np.ones((sq, sk), bool)
    if causal:
        vis &= j <= i
    if window[0] >= 0:
        vis &= j >= i - window[0]
    if window[1] >= 0:
        vis &= j <= i + window[1]
    return vis


# ---- flash_attn_func ----------------------------------------------------------------------------


def test_flash_attn_causal_documented_examples():
    # flash-attn's docstring: "if seqlen_q = 2 and seqlen_k = 5, the causal mask is
    # 1 1 1 1 0 / 1 1 1 1 1; if seqlen_q = 5 and seqlen_k = 2: 0 0 / 0 0 / 0 0 / 1 0 / 1 1".
    assert (flash_visible(2, 5, causal=True) == np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])).all()
    assert (flash_visible(5, 2, causal=True) == np.array([[0, 0], [0, 0], [0, 0], [1, 0],
                                                          [1, 1]])).all()


@pytest.mark.parametrize("where, dtype", WHERE)
@pytest.mark.parametrize("sq, sk", [(2, 5), (5, 2), (7, 129), (129, 7), (64, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_flash_attn_func_causal(rng, where, dtype, sq, sk, causal):
    q, k, v = (randn(rng, s, dtype) for s in ((2, sq, 4, 64), (2, sk, 2, 64), (2, sk, 2, 64)))
    out, lse, probs = flash_attn_func(put(q, where), put(k, where), put(v, where), causal=causal,
                                      return_attn_probs=True)
    ref, ref_lse = oracle.attention_ref(q, k, v, dense_mask=flash_visible(sq, sk, causal))
    assert probs is None
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)  # rows with no key (sq > sk, causal): out 0, lse -inf


@pytest.mark.parametrize("where, dtype", WHERE)
@pytest.mark.parametrize("window", [(3, 2), (-1, 0), (5, -1), (0, 0), (-1, -1), (-7, -3)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sq, sk", [(7, 129), (129, 7), (65, 65)])
def test_flash_attn_func_window(rng, where, dtype, window, causal, sq, sk):
    q, k, v = (randn(rng, s, dtype) for s in ((1, sq, 6, 64), (1, sk, 3, 64), (1, sk, 3, 64)))
    out = flash_attn_func(put(q, where), put(k, where), put(v, where), causal=causal,
                          window_size=window)
    norm = tuple(max(w, -1) for w in window)  # flash-attn: any negative side is unbounded
    ref, _ = oracle.attention_ref(q, k, v, dense_mask=flash_visible(sq, sk, causal, norm))
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("where, dtype", WHERE)
def test_flash_attn_func_scale_softcap(rng, where, dtype):
    q, k, v = (randn(rng, s, dtype) for s in ((3, 33, 8, 64), (3, 47, 8, 64), (3, 47, 8, 64)))
    out = flash_attn_func(put(q, where), put(k, where), put(v, where), softmax_scale=0.3,
                          softcap=2.5, causal=True, deterministic=True)
    ref, _ = oracle.attention_ref(q, k, v, scale=0.3, softcap=2.5,
                                  dense_mask=flash_visible(33, 47, True))
    assert_close(out, ref, dtype)


def test_flash_attn_func_refuses_dropout_and_alibi(rng):
    q = randn(rng, (1, 4, 2, 16))
    with pytest.raises(ValueError, match="dropout_p"):
        flash_attn_func(q, q, q, dropout_p=0.1)
    with pytest.raises(ValueError, match="alibi_slopes"):
        flash_attn_func(q, q, q, alibi_slopes=np.ones(2, np.float32))
    assert flash_attn_func(q, q, q, dropout_p=0.0).shape == q.shape


# ---- flash_attn_varlen_func ---------------------------------------------------------------------


@pytest.mark.parametrize("where, dtype", WHERE)
@pytest.mark.parametrize("causal, window", [(False, (-1, -1)), (True, (-1, -1)), (False, (4, 1)),
                                            (True, (16, -1))])
def test_flash_attn_varlen_func(rng, where, dtype, causal, window):
    lq, lk = [1, 7, 129, 0, 30], [1, 20, 129, 5, 3]
    cq, ck = np.cumsum([0] + lq).astype(np.int32), np.cumsum([0] + lk).astype(np.int32)
    q = randn(rng, (cq[-1], 4, 64), dtype)
    k, v = randn(rng, (ck[-1], 2, 64), dtype), randn(rng, (ck[-1], 2, 64), dtype)
    out, lse, _ = flash_attn_varlen_func(put(q, where), put(k, where), put(v, where),
                                         put(cq, where), put(ck, where), max(lq), max(lk),
                                         causal=causal, window_size=window,
                                         return_attn_probs=True)
    ref, ref_lse = oracle.attention_ref(q, k, v, cu_seqlens_q=cq, cu_seqlens_k=ck, causal=causal,
                                        window=window)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)  # [H, total_q]


def test_flash_attn_varlen_func_refuses_block_table(rng):
    q = randn(rng, (4, 2, 16))
    cu = np.array([0, 4], np.int32)
    with pytest.raises(ValueError, match="block_table"):
        flash_attn_varlen_func(q, q, q, cu, cu, 4, 4, block_table=np.zeros((1, 1), np.int32))


# ---- flash_attn_with_kvcache --------------------------------------------------------------------


def kvcache_ref(q, keys, values, *, causal, window=(-1, -1), scale=None):
    """q [B, Sq, H, D]; keys/values: per sequence the host [L_b, Hkv, D] keys it attends over.
    Returns out [B, Sq, H, Dv], lse [B, H, Sq] (flash-attn's bottom-right alignment)."""
    q = f64(q)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    outs, lses = [], []
    for b in range(q.shape[0]):
        vis = flash_visible(q.shape[1], len(keys[b]), causal, window)
        o, lse = oracle.attend(q[b], f64(keys[b]), f64(values[b]), vis[None], scale=scale)
        outs.append(o)
        lses.append(lse)
    return np.stack(outs), np.stack(lses)


@pytest.mark.parametrize("where, dtype", WHERE)
@pytest.mark.parametrize("sq", [1, 3])
@pytest.mark.parametrize("batch_idx", [False, True])
def test_kvcache_contiguous_append(rng, where, dtype, sq, batch_idx):
    b, s_cache, hkv, d = 3, 40, 2, 64
    k_cache, v_cache = (randn(rng, (5, s_cache, hkv, d), dtype) for _ in range(2))
    lens = np.array([0, 17, 40 - sq], np.int32)
    rows = np.array([4, 0, 2], np.int32) if batch_idx else np.arange(b, dtype=np.int32)
    q = randn(rng, (b, sq, 8, d), dtype)
    k, v = randn(rng, (b, sq, hkv, d), dtype), randn(rng, (b, sq, hkv, d), dtype)
    kc, vc = put(k_cache, where), put(v_cache, where)
    out, lse = flash_attn_with_kvcache(put(q, where), kc, vc, put(k, where), put(v, where),
                                       cache_seqlens=put(lens, where),
                                       cache_batch_idx=put(rows, where) if batch_idx else None,
                                       causal=True, return_softmax_lse=True)
    want_k, want_v = k_cache.copy(), v_cache.copy()
    for i, r in enumerate(rows):
        want_k[r, lens[i]:lens[i] + sq] = k[i]
        want_v[r, lens[i]:lens[i] + sq] = v[i]
    assert (f64(kc) == f64(want_k)).all() and (f64(vc) == f64(want_v)).all()
    keys = [want_k[r, :lens[i] + sq] for i, r in enumerate(rows)]
    vals = [want_v[r, :lens[i] + sq] for i, r in enumerate(rows)]
    ref, ref_lse = kvcache_ref(q, keys, vals, causal=True)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


def paged_cache(rng, lens, page, hkv, d, dtype):
    """A paged cache holding sequences of the given lengths in a random order of pages (plus
    spare pages), block_table [B, max_blocks] int32. Returns k_cache, v_cache, block_table."""
    npages = [-(-n // page) + 1 for n in lens]  # one spare page a sequence, for appends
    perm = rng.permutation(sum(npages) + 2).astype(np.int32)
    table = np.zeros((len(lens), max(npages)), np.int32)
    at = 0
    for b, n in enumerate(npages):
        table[b, :n] = perm[at:at + n]
        at += n
    shape = (len(perm), page, hkv, d)
    return randn(rng, shape, dtype), randn(rng, shape, dtype), table


def gather(cache, row, n):
    return np.concatenate([cache[p] for p in row])[:n] if n else cache[0, :0]


@pytest.mark.parametrize("where, dtype", WHERE)
@pytest.mark.parametrize("sq, new, causal, window", [
    (1, False, False, (-1, -1)),
    (1, True, False, (9, 4)),     # one query: right side beyond the last key, causal or not
    (4, True, True, (-1, -1)),
    (4, False, True, (6, -1)),
    (5, True, False, (-1, -1)),   # non-causal, several queries: every query sees every key
    (5, False, False, (-1, 2)),   # non-causal, window open 2 keys to the right
    (3, True, False, (5, 0)),     # right = 0 is causal
])
def test_kvcache_paged(rng, where, dtype, sq, new, causal, window):
    page, hkv, d = 16, 2, 64
    lens = np.array([5, 33, 16, 64], np.int32)
    k_cache, v_cache, table = paged_cache(rng, lens + sq, page, hkv, d, dtype)
    q = randn(rng, (4, sq, 4, d), dtype)
    kc, vc = put(k_cache, where), put(v_cache, where)
    kw = {}
    if new:
        k, v = randn(rng, (4, sq, hkv, d), dtype), randn(rng, (4, sq, hkv, d), dtype)
        kw = dict(k=put(k, where), v=put(v, where))
    out, lse = flash_attn_with_kvcache(put(q, where), kc, vc, cache_seqlens=put(lens, where),
                                       block_table=put(table, where), causal=causal,
                                       window_size=window, softmax_scale=0.2,
                                       return_softmax_lse=True, **kw)
    kh, vh = to_host(kc), to_host(vc)
    total = lens + sq if new else lens
    keys = [gather(kh, table[b], total[b]) for b in range(4)]
    vals = [gather(vh, table[b], total[b]) for b in range(4)]
    if new:
        for b in range(4):
            assert (f64(keys[b][lens[b]:]) == f64(k[b])).all()
            assert (f64(vals[b][lens[b]:]) == f64(v[b])).all()
            assert (f64(keys[b][:lens[b]]) == f64(gather(k_cache, table[b], lens[b]))).all()
    ref, ref_lse = kvcache_ref(q, keys, vals, causal=causal, window=window, scale=0.2)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


@pytest.mark.parametrize("where, dtype", WHERE[:1] + WHERE[3:])
def test_kvcache_int_and_default_seqlens(rng, where, dtype):
    q = randn(rng, (2, 1, 4, 64), dtype)
    k_cache, v_cache = randn(rng, (2, 24, 4, 64), dtype), randn(rng, (2, 24, 4, 64), dtype)
    for lens, n in ((9, 9), (None, 24)):  # an int for every sequence; None: the whole cache
        out = flash_attn_with_kvcache(put(q, where), put(k_cache, where), put(v_cache, where),
                                      cache_seqlens=lens)
        ref, _ = kvcache_ref(q, [k_cache[0, :n], k_cache[1, :n]], [v_cache[0, :n], v_cache[1, :n]],
                             causal=False)
        assert_close(out, ref, dtype)


def test_kvcache_refusals(rng):
    q = randn(rng, (1, 3, 2, 16))
    cache = randn(rng, (1, 8, 2, 16))
    with pytest.raises(ValueError, match="rotary_cos"):
        flash_attn_with_kvcache(q, cache, cache, rotary_cos=np.ones((8, 8), np.float32))
    with pytest.raises(ValueError, match="window_size"):
        flash_attn_with_kvcache(q, cache, cache, cache_seqlens=5, window_size=(2, 1))
    with pytest.raises(ValueError, match="cache_seqlens"):
        flash_attn_with_kvcache(q, cache, cache, k=q[:, :, :2], v=q[:, :, :2])


# ---- scaled_dot_product_attention ---------------------------------------------------------------


def bias_ref(q, k, v, bias, scale=None):
    """float64 softmax(q kᵀ scale + bias) v for bhsd arrays (GQA by head groups); rows with no
    finite score give 0."""
    q, k, v, bias = f64(q), f64(k), f64(v), f64(bias)
    g = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.swapaxes(-1, -2) * scale + bias
    m = s.max(axis=-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    den = p.sum(axis=-1, keepdims=True)
    return (p @ v) / np.where(den > 0, den, 1.0)


@pytest.mark.parametrize("where, dtype", WHERE)
@pytest.mark.parametrize("sq, sk", [(7, 129), (129, 7), (64, 64), (1, 1000)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_is_causal_top_left(rng, where, dtype, sq, sk, causal):
    dv = 32 if where == "cpu" else 64  # the GPU kernels pair Dv != D only as (192, 128)
    q, k, v = (randn(rng, s, dtype) for s in ((2, 4, sq, 64), (2, 4, sk, 64), (2, 4, sk, dv)))
    out = scaled_dot_product_attention(put(q, where), put(k, where), put(v, where),
                                       is_causal=causal)
    top_left = np.tril(np.ones((sq, sk), bool))  # PyTorch's documented mask: ones(L, S).tril()
    ref, _ = oracle.attention_ref(q, k, v, layout="bhsd", dense_mask=top_left if causal else None)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("where, dtype", WHERE)
def test_sdpa_enable_gqa(rng, where, dtype):
    q, k, v = randn(rng, (2, 8, 33, 64), dtype), randn(rng, (2, 2, 65, 64), dtype), randn(
        rng, (2, 2, 65, 64), dtype)
    out = scaled_dot_product_attention(put(q, where), put(k, where), put(v, where),
                                       enable_gqa=True, scale=0.7)
    ref, _ = oracle.attention_ref(q, k, v, layout="bhsd", scale=0.7)
    assert_close(out, ref, dtype)
    with pytest.raises(ValueError, match="enable_gqa"):
        scaled_dot_product_attention(put(q, where), put(k, where), put(v, where))
    for mask in (None, np.ones((33, 65), bool), np.zeros((33, 65), np.float32)):
        mask = None if mask is None else put(mask, where)
        with pytest.raises(ValueError, match="multiple"):
            scaled_dot_product_attention(put(q[:, :5], where), put(k, where), put(v, where),
                                         mask, enable_gqa=True)
        with pytest.raises(ValueError, match="multiple"):
            scaled_dot_product_attention(put(q, where), put(k[:, :1].repeat(3, 1), where),
                                         put(v[:, :1].repeat(3, 1), where), mask, enable_gqa=True)


MASK_SHAPES = [(33, 150), (2, 1, 1, 150), (2, 4, 33, 150), (1, 4, 1, 150), (4, 33, 1)]


@pytest.mark.parametrize("where, dtype", WHERE)
@pytest.mark.parametrize("shape", MASK_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdpa_attn_mask(rng, where, dtype, shape, kind):
    q, k, v = (randn(rng, s, dtype) for s in ((2, 4, 33, 64), (2, 2, 150, 64), (2, 2, 150, 64)))
    keep = rng.random(shape) < 0.6
    if shape[-2] > 1:
        keep[..., :3, :] = False  # rows that see no key: 0
    if kind == "bool":
        mask = keep
    else:
        mask = np.where(keep, rng.standard_normal(shape), -np.inf).astype(np.float32)
    out = scaled_dot_product_attention(put(q, where), put(k, where), put(v, where),
                                       attn_mask=put(mask, where), enable_gqa=True)
    ref = bias_ref(q, k, v, np.where(keep, 0.0, -np.inf) if kind == "bool" else mask)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("where, dtype", WHERE[:1] + WHERE[3:])
def test_sdpa_three_dims(rng, where, dtype):
    q, k, v = randn(rng, (4, 17, 64), dtype), randn(rng, (4, 30, 64), dtype), randn(
        rng, (4, 30, 64), dtype)
    mask = rng.random((17, 30)) < 0.5
    out = scaled_dot_product_attention(put(q, where), put(k, where), put(v, where),
                                       attn_mask=put(mask, where))
    ref = bias_ref(q[None], k[None], v[None], np.where(mask, 0.0, -np.inf))[0]
    assert_close(out, ref, dtype)
    out = scaled_dot_product_attention(put(q, where), put(k, where), put(v, where), is_causal=True)
    ref, _ = oracle.attention_ref(q[None], k[None], v[None], layout="bhsd",
                                  dense_mask=np.tril(np.ones((17, 30), bool)))
    assert_close(out, ref[0], dtype)


def test_sdpa_refusals(rng):
    q = randn(rng, (1, 2, 4, 16))
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(q, q, q, dropout_p=0.5)
    with pytest.raises(ValueError, match="is_causal"):
        scaled_dot_product_attention(q, q, q, attn_mask=np.ones((4, 4), bool), is_causal=True)
    with pytest.raises(ValueError, match="broadcast"):
        scaled_dot_product_attention(q, q, q, attn_mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="query must be"):
        scaled_dot_product_attention(q[0, 0], q[0, 0], q[0, 0])
    with pytest.raises(TypeError):
        scaled_dot_product_attention(q.tolist(), q, q, attn_mask=np.ones((4, 4), np.float32))


# ---- NumPy users never import PyTorch -----------------------------------------------------------


def test_compat_with_numpy_never_imports_torch():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import cuattn
        from cuattn import compat
        q = np.random.default_rng().standard_normal((1, 2, 5, 16)).astype(np.float32)
        compat.scaled_dot_product_attention(q, q, q, is_causal=True)
        compat.scaled_dot_product_attention(q, q, q, attn_mask=np.ones((5, 5), bool))
        compat.flash_attn_func(q, q, q, causal=True)
        cache = np.zeros((1, 8, 5, 16), np.float32)
        compat.flash_attn_with_kvcache(q, cache, cache.copy(), k=q, v=q,
                                       cache_seqlens=np.array([3], np.int32), causal=True)
        cuattn.attention(q, q, q)
        assert "torch" not in sys.modules, "cuattn imported torch"
        print("numpy-only OK")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "numpy-only OK" in r.stdout
