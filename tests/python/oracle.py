"""NumPy float64 reference implementations, written from docs/conventions.md and independent of cuattn.

Every function takes host NumPy arrays (ml_dtypes bf16/fp8 allowed), computes in float64 and
returns float64 arrays: ``(out, lse)`` with ``lse`` as the library lays it out.

Mask rule (docs/conventions.md, "Masks"): with offset ``o = Sk - Sq`` per sequence, key ``j`` is visible
from query ``i`` when
  causal          -> j <= i + o
  window (l, r)   -> i + o - l <= j <= i + o + r      (-1 = unbounded on that side)
``window=W`` means ``(W, W)``, or ``(W, 0)`` with ``causal=True``.
Scores: ``s = scale * q.k``; with ``softcap > 0``: ``s = softcap * tanh(s / softcap)``.
Sinks: ``exp(sink[h])`` joins the softmax denominator only; ``lse = log(denominator)``.
Rows with no visible key: ``out = 0``, ``lse = -inf`` (with or without sinks).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

FP8 = np.dtype(ml_dtypes.float8_e4m3fn)


def f64(x) -> np.ndarray:
    """A float64 copy of a host array (NumPy or ml_dtypes)."""
    return np.asarray(x).astype(np.float64)


def norm_window(window, causal: bool) -> tuple[int, int]:
    if window is None:
        return (-1, -1)
    if isinstance(window, (int, np.integer)):
        w = int(window)
        return (w, 0) if causal else (w, w)
    left, right = window
    return (int(left), int(right))


def visible_mask(sq: int, sk: int, *, causal=False, window=None) -> np.ndarray:
    """bool [sq, sk]: key j visible from query i, offset o = sk - sq."""
    left, right = norm_window(window, causal)
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    diag = i + (sk - sq)
    vis = np.ones((sq, sk), dtype=bool)
    if causal:
        vis &= j <= diag
    if left >= 0:
        vis &= j >= diag - left
    if right >= 0:
        vis &= j <= diag + right
    return vis


def attend(q, k, v, visible, *, scale, softcap=0.0, sinks=None):
    """One sequence. q [Sq, Hq, D], k [Sk, Hkv, D], v [Sk, Hkv, Dv] (float64),
    visible bool broadcastable to [Hq, Sq, Sk]. Returns out [Sq, Hq, Dv], lse [Hq, Sq]."""
    sq, hq, _ = q.shape
    sk, hkv, _ = k.shape
    dv = v.shape[-1]
    assert hq % hkv == 0
    out = np.zeros((sq, hq, dv))
    lse = np.full((hq, sq), -np.inf)
    if sq == 0 or sk == 0:
        return out, lse
    group = hq // hkv
    kh = np.repeat(k, group, axis=1)  # query head h reads kv head h // group
    vh = np.repeat(v, group, axis=1)
    s = np.einsum("qhd,khd->hqk", q, kh) * scale
    if softcap and softcap > 0:
        s = softcap * np.tanh(s / softcap)
    vis = np.broadcast_to(visible, s.shape)
    s = np.where(vis, s, -np.inf)
    any_vis = vis.any(axis=-1)  # [Hq, Sq]
    m = np.where(any_vis, s.max(axis=-1, initial=-np.inf), 0.0)
    if sinks is not None:
        sk_logit = f64(sinks).reshape(hq, 1)
        m = np.where(any_vis, np.maximum(m, sk_logit), 0.0)
    p = np.exp(s - m[..., None])  # masked entries: exp(-inf) = 0
    den = p.sum(axis=-1)
    if sinks is not None:
        den = den + np.exp(sk_logit - m)
    den = np.where(any_vis, den, 1.0)
    o = np.einsum("hqk,khd->qhd", p, vh) / den.T[..., None]
    lse_v = m + np.log(den)
    o[~any_vis.T] = 0.0
    lse_v[~any_vis] = -np.inf
    return o, lse_v


def attention_ref(q, k, v, *, causal=False, window=None, scale=None, softcap=0.0, sinks=None,
                  cu_seqlens_q=None, cu_seqlens_k=None, dense_mask=None, layout="bshd"):
    """Reference for cuattn.attention. dense_mask: bool broadcastable to [B, Hq, Sq, Sk]
    (intersected with causal/window). Varlen (cu_seqlens_*): q [Tq, Hq, D], lse [Hq, Tq]."""
    q, k, v = f64(q), f64(k), f64(v)
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if cu_seqlens_q is not None:
        cq = np.asarray(cu_seqlens_q, dtype=np.int64)
        ck = np.asarray(cu_seqlens_k, dtype=np.int64)
        tq, hq, _ = q.shape
        out = np.zeros((tq, hq, v.shape[-1]))
        lse = np.full((hq, tq), -np.inf)
        for b in range(len(cq) - 1):
            qs, qe, ks, ke = cq[b], cq[b + 1], ck[b], ck[b + 1]
            vis = visible_mask(qe - qs, ke - ks, causal=causal, window=window)
            o, l = attend(q[qs:qe], k[ks:ke], v[ks:ke], vis[None], scale=scale, softcap=softcap,
                          sinks=sinks)
            out[qs:qe] = o
            lse[:, qs:qe] = l
        return out, lse
    if layout == "bhsd":
        q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    elif layout != "bshd":
        raise ValueError(layout)
    b_, sq, hq, _ = q.shape
    sk = k.shape[1]
    out = np.zeros((b_, sq, hq, v.shape[-1]))
    lse = np.full((b_, hq, sq), -np.inf)
    vis = visible_mask(sq, sk, causal=causal, window=window)[None, None]
    if dense_mask is not None:
        vis = vis & np.asarray(dense_mask, dtype=bool)
    vis = np.broadcast_to(vis, (b_, hq, sq, sk)) if b_ else vis
    for b in range(b_):
        out[b], lse[b] = attend(q[b], k[b], v[b], vis[b], scale=scale, softcap=softcap,
                                sinks=sinks)
    if layout == "bhsd":
        out = out.transpose(0, 2, 1, 3)
    return out, lse


def gather_pages(cache, block_table_row, length, kv_layout="NHD"):
    """The first `length` tokens of one sequence from a paged cache -> [length, H, D]."""
    c = cache if kv_layout == "NHD" else cache.transpose(0, 2, 1, 3)  # -> [N, bs, H, D]
    bs = c.shape[1]
    n = -(-length // bs)
    pages = np.asarray(block_table_row[:n], dtype=np.int64)
    return c[pages].reshape(n * bs, *c.shape[2:])[:length]


def dequant(cache, scale, kv_cache_dtype=None):
    """float64 values of a cache: fp8 (ml_dtypes or uint8 + 'fp8_e4m3') times its scale."""
    c = np.asarray(cache)
    if kv_cache_dtype == "fp8_e4m3" and c.dtype == np.uint8:
        c = c.view(FP8)
    x = f64(c)
    return x * (1.0 if scale is None else float(scale))


def paged_ref(q, k_cache, v_cache, block_table, seq_lens, *, scale=None, softcap=0.0,
              window=None, sinks=None, k_scale=None, v_scale=None, kv_layout="NHD",
              kv_cache_dtype=None, cu_seqlens_q=None):
    """Reference for cuattn.paged_attention. q [B, Hq, D] (lse [B, Hq]) or [B, Sq, Hq, D]
    (lse [B, Hq, Sq]); token t of Sq sees keys j <= seq_len - Sq + t. Mixed batch
    (cu_seqlens_q, [B + 1]): q packed [total_q, Hq, D], sequence b's n_b new tokens are rows
    cu[b] .. cu[b + 1] - 1 and token t of them sees keys j <= seq_len - n_b + t; out
    [total_q, Hq, Dv], lse [Hq, total_q]."""
    q = f64(q)
    kc = dequant(k_cache, k_scale, kv_cache_dtype)
    vc = dequant(v_cache, v_scale, kv_cache_dtype)
    hq, d, dv = q.shape[-2], q.shape[-1], vc.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if cu_seqlens_q is not None:
        cu = np.asarray(cu_seqlens_q, dtype=np.int64)
        rows = [slice(int(cu[b]), int(cu[b + 1])) for b in range(len(cu) - 1)]
        q3 = q
        out = np.zeros((q.shape[0], hq, dv))
        lse = np.full((hq, q.shape[0]), -np.inf)
    else:
        decode = q.ndim == 3
        q4 = q[:, None] if decode else q
        b_, sq = q4.shape[:2]
        q3 = q4.reshape(b_ * sq, hq, d)  # the uniform batch packed: sequence b's rows b*sq..
        rows = [slice(b * sq, (b + 1) * sq) for b in range(b_)]
        out = np.zeros((b_ * sq, hq, dv))
        lse = np.full((hq, b_ * sq), -np.inf)
    for b, r in enumerate(rows):
        length = int(seq_lens[b])
        kk = gather_pages(kc, block_table[b], length, kv_layout)
        vv = gather_pages(vc, block_table[b], length, kv_layout)
        vis = visible_mask(r.stop - r.start, length, causal=True, window=norm_window(window, True))
        out[r], lse[:, r] = attend(q3[r], kk, vv, vis[None], scale=scale, softcap=softcap,
                                   sinks=sinks)
    if cu_seqlens_q is not None:
        return out, lse
    out = out.reshape(b_, sq, hq, dv)
    lse = lse.reshape(hq, b_, sq).transpose(1, 0, 2)
    if decode:
        return out[:, 0], lse[:, :, 0]
    return out, lse


def mla_ref(q, k_latent, v_latent, k_proj, v_proj, *, causal=True, scale=None):
    """Reference for cuattn.mla_attention by the direct formulation: per head h,
    K_h = Kl @ Kp[h], V_h = Vl @ Vp[h], then attention. q [B, H, S, D] -> out [B, H, S, Dv]."""
    q, kl, vl, kp, vp = (f64(x) for x in (q, k_latent, v_latent, k_proj, v_proj))
    kh = np.einsum("bsl,hld->bhsd", kl, kp)
    vh = np.einsum("bsl,hld->bhsd", vl, vp)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return attention_ref(q, kh, vh, causal=causal, scale=scale, layout="bhsd")


def mla_decode_ref(q, kv_cache, block_table, seq_lens, *, scale, head_dim_v=512, causal=True):
    """Reference for cuattn.mla_decode: one latent kv head (Hkv = 1), K = the whole 576-wide
    entry, V = its first head_dim_v columns. q [B, Sq, Hq, 576] -> out [B, Sq, Hq, 512],
    lse [B, Hq, Sq]."""
    q = f64(q)
    c = f64(kv_cache)
    if c.ndim == 3:
        c = c[:, :, None, :]  # [N, bs, 1, 576]
    b_, sq, hq, _ = q.shape
    out = np.zeros((b_, sq, hq, head_dim_v))
    lse = np.full((b_, hq, sq), -np.inf)
    for b in range(b_):
        length = int(seq_lens[b])
        kk = gather_pages(c, block_table[b], length)
        vis = visible_mask(sq, length, causal=causal)
        out[b], lse[b] = attend(q[b], kk, kk[..., :head_dim_v], vis[None], scale=scale)
    return out, lse


def merge_ref(o_a, lse_a, o_b, lse_b, *, layout="bshd"):
    """Reference for cuattn.merge_states. o [B, S, H, D] (bshd) or [B, H, S, D] (bhsd),
    lse [B, H, S]. Both -inf -> out 0, lse -inf."""
    oa, ob, la, lb = f64(o_a), f64(o_b), f64(lse_a), f64(lse_b)
    lse = np.logaddexp(la, lb)
    fin = np.isfinite(lse)
    safe = np.where(fin, lse, 0.0)
    wa = np.where(fin, np.exp(la - safe), 0.0)
    wb = np.where(fin, np.exp(lb - safe), 0.0)
    if layout == "bshd":
        wa, wb = wa.transpose(0, 2, 1), wb.transpose(0, 2, 1)
    out = wa[..., None] * oa + wb[..., None] * ob
    return out, lse
