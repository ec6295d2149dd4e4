"""Drop-in replacements for flash-attn's and PyTorch's attention functions, running on cuattn.

Each function keeps its original's signature and conventions, so code written for it runs
unchanged (forward pass only):

flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache (flash-attn 2's interface)
    q [B, S, H, D]; causal is aligned to the bottom-right corner (query i sees key
    j <= i + Sk - Sq); window_size=(left, right) keeps keys i + Sk - Sq - left <= j <=
    i + Sk - Sq + right (-1: unbounded); softmax_scale, softcap; return_attn_probs gives
    (out, softmax_lse, None). Rows that see no key give 0.
scaled_dot_product_attention (torch.nn.functional's)
    [B, H, S, D] (or [H, S, D]); is_causal is aligned to the top-left corner (key j visible from
    query i iff j <= i, whatever Sq and Sk); enable_gqa; attn_mask boolean (True = attend) or
    float (added to the scores), broadcastable to [B, H, Sq, Sk]. Rows that see no key give 0
    (PyTorch gives NaN).

What is fast: everything without attn_mask runs cuattn's flash and paged kernels (SDPA's top-left
causal becomes a slice of the keys when Sq < Sk, a window when Sq > Sk). A boolean attn_mask is
turned into a block mask on the host on every call (one copy of the mask to the host, then the
kernels skip empty tiles; building it costs about a NumPy pass over the mask plus a Python loop
over its B x H x Sq/128 tile rows). A float attn_mask, or any attn_mask while torch.compile
traces, takes a slow path: the [B, H, Sq, Sk] scores are materialised in float32 in the arrays'
framework. flash_attn_with_kvcache with causal=False, several queries per sequence and a key
window open to the right (window_size[1] != 0) attends one query at a time (the cache is read
once per query); with window_size[0] >= 0 as well it is refused.

Refused with a ValueError: dropout_p != 0, alibi_slopes, rotary embeddings (rotary_cos/sin),
cache_leftpad, block_table in flash_attn_varlen_func, attn_mask together with is_causal.

Arrays: NumPy (cuattn's CPU backend), PyTorch and CuPy (CPU or GPU, wherever cuattn runs them).
Under torch.compile the calls reach cuattn's torch custom ops, so these functions compile with
fullgraph=True.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from ._routing import append_paged_kv, attention, compiling, paged_attention
from .block_mask import create_block_mask

__all__ = ["flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache",
           "scaled_dot_product_attention"]


# ---- the few array operations the drop-ins need, in the arrays' own framework ------------------


def _xp(x):
    """x's array module: numpy, cupy or torch."""
    top = type(x).__module__.split(".")[0]
    if top not in ("numpy", "cupy", "torch"):
        raise TypeError(f"expected a NumPy, CuPy or PyTorch array, got {type(x).__name__}")
    return sys.modules[top]


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _astype(x, dtype):
    """x converted to dtype (a name such as 'int32', or a dtype of x's framework)."""
    if _is_torch(x):
        torch = sys.modules["torch"]
        return x.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return x.astype(dtype)


def _arange(like, n):
    """int64 0..n-1 on like's device."""
    xp = _xp(like)
    if xp.__name__ == "torch":
        return xp.arange(n, device=like.device)
    if xp.__name__ == "cupy":
        with like.device:
            return xp.arange(n)
    return xp.arange(n)


def _repeat(x, n):
    """Each row of x n times in a row (np.repeat along axis 0)."""
    if _is_torch(x):
        return x.repeat_interleave(n, dim=0)
    return _xp(x).repeat(x, n, axis=0)


def _host(x) -> np.ndarray:
    """A host NumPy copy (or view) of x."""
    if _is_torch(x):
        return x.detach().cpu().numpy()
    if type(x).__module__.split(".")[0] == "cupy":
        return x.get()
    return np.asarray(x)


# ---- argument conventions -----------------------------------------------------------------------


def _refuse(**args):
    """ValueError for the original functions' options that cuattn does not implement."""
    for name, value in args.items():
        if name == "dropout_p":
            if value:
                raise ValueError(f"dropout_p must be 0.0 (cuattn has no dropout), got {value!r}")
        elif value is not None:
            raise ValueError(f"{name} is not supported by cuattn; pass {name}=None "
                             f"(got a {type(value).__name__})")


def _window_pair(window_size):
    """flash-attn's window_size as (left, right), -1 for an unbounded side."""
    left, right = (int(w) for w in window_size)
    return max(left, -1), max(right, -1)


def _window(window_size):
    left, right = _window_pair(window_size)
    return None if left < 0 and right < 0 else (left, right)


# ---- flash-attn ---------------------------------------------------------------------------------


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                    return_attn_probs=False):
    """flash-attn's flash_attn_func: q [B, Sq, H, D], k/v [B, Sk, Hkv, D] (H % Hkv == 0).
    Returns out [B, Sq, H, D], or (out, softmax_lse [B, H, Sq] float32, None) with
    return_attn_probs. deterministic is accepted (the forward pass always is)."""
    _refuse(dropout_p=dropout_p, alibi_slopes=alibi_slopes)
    res = attention(q, k, v, causal=causal, window=_window(window_size), scale=softmax_scale,
                    softcap=softcap, return_lse=return_attn_probs)
    return (*res, None) if return_attn_probs else res


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False,
                           return_attn_probs=False, block_table=None):
    """flash-attn's flash_attn_varlen_func: packed sequences q [total_q, H, D],
    k/v [total_k, Hkv, D], cu_seqlens_q/k int32 [batch + 1]. Returns out [total_q, H, D], or
    (out, softmax_lse [H, total_q], None) with return_attn_probs."""
    _refuse(dropout_p=dropout_p, alibi_slopes=alibi_slopes, block_table=block_table)
    res = attention(q, k, v, causal=causal, window=_window(window_size), scale=softmax_scale,
                    softcap=softcap, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                    max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
                    return_lse=return_attn_probs)
    return (*res, None) if return_attn_probs else res


def _slots(block_table, start, n, page):
    """int64 [B * n]: the flat cache slot of tokens start[b] + t (t < n) of each sequence b,
    -1 (skipped) past the end of its block table row."""
    b = _arange(block_table, block_table.shape[0])[:, None]
    pos = _astype(start, "int64")[:, None] + _arange(block_table, n)[None, :]
    col = pos // page
    inside = col < block_table.shape[1]
    block = _astype(block_table[b, _xp(pos).where(inside, col, 0)], "int64")
    return _xp(pos).where(inside, block * page + pos % page, -1).reshape(-1)


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None,
                            rotary_sin=None, cache_seqlens=None, cache_batch_idx=None,
                            cache_leftpad=None, block_table=None, softmax_scale=None,
                            causal=False, window_size=(-1, -1), softcap=0.0,
                            rotary_interleaved=True, alibi_slopes=None, num_splits=0,
                            return_softmax_lse=False):
    """flash-attn's flash_attn_with_kvcache: attention of q [B, Sq, H, D] over a KV cache,
    after writing the new keys and values k/v [B, Snew, Hkv, D] (optional) into it in place at
    positions cache_seqlens[b] + t.

    The cache is [B_cache, S_cache, Hkv, D] (sequence b is row cache_batch_idx[b], default b), or
    paged [num_blocks, page_size, Hkv, D] with block_table int32 [B, max_blocks].
    cache_seqlens (int or int32 [B]) counts the cached tokens before the new ones; None means the
    whole cache. Queries are aligned to the end of the keys (bottom-right causal). Returns out
    [B, Sq, H, D], or (out, softmax_lse [B, H, Sq]) with return_softmax_lse. num_splits is a
    hint that cuattn does not need."""
    _refuse(rotary_cos=rotary_cos, rotary_sin=rotary_sin, cache_leftpad=cache_leftpad,
            alibi_slopes=alibi_slopes)
    _xp(q)  # TypeError unless an array
    batch, sq = q.shape[0], q.shape[1]
    if block_table is None:
        # A contiguous cache is a paged one whose pages are whole sequences.
        rows = _arange(q, batch) if cache_batch_idx is None else cache_batch_idx
        block_table = _astype(rows, "int32")[:, None]
    elif cache_batch_idx is not None:
        raise ValueError("cache_batch_idx cannot be used with block_table (as in flash-attn)")
    page = k_cache.shape[1]
    if cache_seqlens is None:
        lens = _arange(q, batch) * 0 + block_table.shape[1] * page
    elif isinstance(cache_seqlens, (int, np.integer)):
        lens = _arange(q, batch) * 0 + int(cache_seqlens)
    else:
        lens = cache_seqlens
    lens = _astype(lens, "int32")
    if k is not None or v is not None:
        if k is None or v is None or cache_seqlens is None:
            raise ValueError("k and v are appended together, at cache_seqlens (pass all three)")
        snew = k.shape[1]
        slots = _slots(block_table, lens, snew, page)
        append_paged_kv(k.reshape(batch * snew, *k.shape[2:]),
                        v.reshape(batch * snew, *v.shape[2:]), k_cache, v_cache, slots)
        lens = _astype(lens + snew, "int32")

    left, right = _window_pair(window_size)
    if causal:
        right = 0
    kw = dict(scale=softmax_scale, softcap=softcap, return_lse=return_softmax_lse)
    if right == 0 or sq == 1:  # paged_attention's own alignment: causal, within the window
        return paged_attention(q, k_cache, v_cache, block_table, lens,
                               window=None if left < 0 else (left, 0), **kw)
    if left >= 0:
        raise ValueError(f"window_size={tuple(window_size)} with causal=False and {sq} queries per "
                         f"sequence is not supported (a two-sided window needs causal=True, "
                         f"one query per sequence, or window_size[0] = -1)")
    # Non-causal, several queries: each query is its own decode row, over the keys it may see.
    lens_t = _repeat(lens, sq)
    if right > 0:
        t = _arange(q, batch * sq) % sq
        last = lens_t - sq + t + right + 1  # one past query t's last visible key
        xp = _xp(last)
        lens_t = _astype(xp.where(last < lens_t, xp.where(last > 0, last, 0), lens_t), "int32")
    res = paged_attention(q.reshape(batch * sq, *q.shape[2:]), k_cache, v_cache,
                          _repeat(block_table, sq), lens_t, **kw)
    out = (res[0] if return_softmax_lse else res).reshape(batch, sq, *q.shape[2:3], -1)
    if return_softmax_lse:
        return out, res[1].reshape(batch, sq, -1).swapaxes(1, 2)
    return out


# ---- PyTorch SDPA -------------------------------------------------------------------------------


def _is_bool(x) -> bool:
    return str(x.dtype) in ("bool", "torch.bool")


def _mask4(mask, shape):
    """mask viewed as 4-D (leading dims of 1), checked to broadcast to shape."""
    m = mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape)) if mask.ndim <= 4 else mask
    if m.ndim != 4 or any(a not in (1, b) for a, b in zip(m.shape, shape)):
        raise ValueError(f"attn_mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"[B, H, Sq, Sk] = {list(shape)}")
    return m


def _mask_mod(mask):
    """create_block_mask's mask_mod for a host bool mask [B|1, H|1, Sq|1, Sk|1]."""
    mb, mh, mq, mk = mask.shape

    def mask_mod(b, h, i, j):
        return mask[b % mb, h % mh, i % mq, j % mk]

    return mask_mod


def _materialised(q, k, v, bias, scale):
    """Slow path: softmax(q kᵀ scale + bias) v with the scores materialised in float32, in the
    arrays' framework. q [B, H, Sq, D], k/v [B, Hkv, Sk, D|Dv]; bias float, broadcastable to
    [B, H, Sq, Sk], -inf = masked. Rows with no finite score give 0."""
    xp = _xp(q)
    b, h, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    g = h // hkv
    qf = _astype(q, "float32").reshape(b, hkv, g, sq, d)
    kf, vf = _astype(k, "float32")[:, :, None], _astype(v, "float32")[:, :, None]
    s = xp.matmul(qf, kf.swapaxes(-1, -2)).reshape(b, h, sq, sk) * scale + bias
    m = xp.amax(s, axis=-1, keepdims=True)
    p = xp.exp(s - xp.where(xp.isfinite(m), m, 0.0))
    den = xp.sum(p, axis=-1, keepdims=True)
    o = xp.matmul(p.reshape(b, hkv, g, sq, sk), vf).reshape(b, h, sq, -1)
    return _astype(o / xp.where(den > 0, den, 1.0), q.dtype)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention: query [B, H, Sq, D], key/value
    [B, Hkv, Sk, D|Dv] (or without B). Hkv != H needs enable_gqa=True (H % Hkv == 0; query head
    h reads kv head h // (H / Hkv)). is_causal: key j visible from query i iff j <= i (top-left
    aligned). attn_mask: boolean (True = attend) or float (added to the scaled scores),
    broadcastable to [B, H, Sq, Sk]; not together with is_causal. Returns [B, H, Sq, Dv] in
    query's dtype. See the module docstring for which cases are fast."""
    xp = _xp(query)
    _refuse(dropout_p=dropout_p)
    if attn_mask is not None and is_causal:
        raise ValueError("pass attn_mask or is_causal=True, not both (as in PyTorch)")
    if query.ndim == 3:
        return scaled_dot_product_attention(query[None], key[None], value[None], attn_mask, 0.0,
                                            is_causal, scale, enable_gqa)[0]
    if query.ndim != 4:
        raise ValueError(f"query must be [B, H, Sq, D] or [H, Sq, D], got shape "
                         f"{tuple(query.shape)}")
    b, h, sq, d = query.shape
    hkv, sk = key.shape[1], key.shape[2]
    if hkv != h and not enable_gqa:
        raise ValueError(f"query has {h} heads and key {hkv}: pass enable_gqa=True for "
                         f"grouped-query attention")
    if hkv < 1 or h % hkv:
        raise ValueError(f"query's {h} heads are not a multiple of key's {hkv}")
    if attn_mask is None:
        kw = {}
        if is_causal and sq <= sk:  # keys past Sq - 1 are never visible: top-left = bottom-right
            key, value, kw = key[:, :, :sq], value[:, :, :sq], {"causal": True}
        elif is_causal:  # j <= i is the window right = Sq - Sk of the bottom-right diagonal
            kw = {"window": (-1, sq - sk)}
        return attention(query, key, value, scale=scale, layout="bhsd", **kw)
    mask = _mask4(attn_mask, (b, h, sq, sk))
    if _is_bool(mask) and not compiling():
        host = np.ascontiguousarray(_host(mask))
        bm = create_block_mask(_mask_mod(host), b if host.shape[0] > 1 else None,
                               h if host.shape[1] > 1 else None, sq, sk)
        return attention(query, key, value, scale=scale, layout="bhsd", block_mask=bm)
    bias = xp.where(mask, 0.0, -math.inf) if _is_bool(mask) else mask
    return _materialised(query, key, value, _astype(bias, "float32"),
                         1.0 / math.sqrt(d) if scale is None else float(scale))
