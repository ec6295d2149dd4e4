"""A small float64 NumPy reference used by `python -m cuattn demo` to check its own results.
(The test suite has its own, independent oracle in tests/python/oracle.py.)"""

from __future__ import annotations

import numpy as np


def visible(sq, sk, causal=False, window=(-1, -1)):
    """bool [sq, sk]: key j visible from query i (bottom-right aligned causal / window)."""
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    m = np.ones((sq, sk), dtype=bool)
    if causal:
        m &= j <= i
    if window[0] >= 0:
        m &= j >= i - window[0]
    if window[1] >= 0:
        m &= j <= i + window[1]
    return m


def attend(q, k, v, mask, scale, softcap=0.0, sink=None):
    """One head: q [sq, d], k [sk, d], v [sk, dv], mask [sq, sk] -> (out [sq, dv], lse [sq])."""
    s = (q.astype(np.float64) @ k.astype(np.float64).T) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    s = np.where(mask, s, -np.inf)
    m = np.max(s, axis=1, initial=-np.inf)
    if sink is not None:
        m = np.maximum(m, sink)
    safe = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - safe[:, None])
    den = p.sum(axis=1) + (np.exp(sink - safe) if sink is not None else 0.0)
    empty = ~mask.any(axis=1)
    out = (p @ v.astype(np.float64)) / np.where(empty, 1.0, den)[:, None]
    out[empty] = 0.0
    lse = np.where(empty, -np.inf, np.log(np.where(empty, 1.0, den)) + safe)
    return out, lse


def mha(q, k, v, *, causal=False, window=(-1, -1), scale=None, softcap=0.0, sinks=None,
        mask=None):
    """bshd q [B, Sq, Hq, D], k/v [B, Sk, Hkv, *] -> (out [B, Sq, Hq, Dv], lse [B, Hq, Sq])."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    out = np.zeros((B, Sq, Hq, v.shape[-1]))
    lse = np.zeros((B, Hq, Sq))
    vis = visible(Sq, Sk, causal, window)
    for b in range(B):
        for h in range(Hq):
            m = vis if mask is None else vis & mask[min(b, mask.shape[0] - 1), min(h, mask.shape[1] - 1)]
            kh = h // (Hq // Hkv)
            out[b, :, h], lse[b, h] = attend(q[b, :, h], k[b, :, kh], v[b, :, kh], m, scale, softcap,
                                             None if sinks is None else float(sinks[h]))
    return out, lse


def rel_err(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape or np.isnan(out).any():
        return float("nan")
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))
