"""Hostile inputs, one case per input rule of docs/input_rules.md: each must raise the documented
exception naming the argument, or (for the accepted edge cases) give the right answer. The
cases run in one subprocess, so a case that would crash the interpreter fails its own test
instead of killing pytest; the case that was running when the process died is named.

CUATTN_TEST_DEVICE=cuda runs the same cases on GPU arrays (see strategies.py), without
CUATTN_CHECK: a content rule (lengths, ids, cu_seqlens, scalar contents) that the GPU only checks
with check=True may then either raise or run, but must not fault the device.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import cuattn
import oracle
from conftest import assert_close, assert_lse, gpu_framework, to_host
from strategies import DEVICE, GPU, can_reverse, dev, device_skip_reason, host

pytestmark = pytest.mark.skipif(device_skip_reason() is not None,
                                reason=str(device_skip_reason()))

F32 = "float32" if not GPU else "float16"  # the compute dtype of the cases
D = 8 if not GPU else 64


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable  # call(rng): raises, or runs (and asserts what it returned)
    exc: type | None  # None: must run without error
    name: str = ""  # must appear in the message
    content: bool = False  # a content rule: on the GPU only checked with check=True
    where: str = "any"  # "any", "cpu", "gpu" or "none" (not runnable here)


def r(rng, *shape, dtype=None):
    return dev(host(rng, shape, dtype or F32))


def i32(*v):
    return dev(np.asarray(v, np.int32))


def qkv(rng, b=1, sq=5, sk=6, hq=2, hkv=1, d=D):
    return r(rng, b, sq, hq, d), r(rng, b, sk, hkv, d), r(rng, b, sk, hkv, d)


def varlen(rng, cu_q=(0, 2, 5), cu_k=(0, 3, 6), tq=5, tk=6, **kw):
    q, k, v = r(rng, tq, 2, D), r(rng, tk, 1, D), r(rng, tk, 1, D)
    cq, ck = (x if not isinstance(x, tuple) else i32(*x) for x in (cu_q, cu_k))
    kw.setdefault("max_seqlen_q", 4)
    kw.setdefault("max_seqlen_k", 4)
    return cuattn.attention(q, k, v, cu_seqlens_q=cq, cu_seqlens_k=ck, **kw)


def paged(rng, lens=(9, 5), table=None, **kw):
    """2 sequences, 4 pages of 16 slots (8 pages in the cache), Hq 2, Hkv 1."""
    q, kc, vc = r(rng, 2, 2, D), r(rng, 8, 16, 1, D), r(rng, 8, 16, 1, D)
    bt = table if table is not None else i32([0, 1, 2, 3], [4, 5, 6, 7])
    sl = lens if not isinstance(lens, tuple) else i32(*lens)
    return cuattn.paged_attention(q, kc, vc, bt, sl, **kw)


def paged_parts(rng):
    return r(rng, 2, 2, D), r(rng, 8, 16, 1, D), r(rng, 8, 16, 1, D), \
        i32([0, 1, 2, 3], [4, 5, 6, 7]), i32(9, 5)


def mixed(rng, cu=(0, 1, 4), lens=(9, 5), rows=4, q=None, **kw):
    """A mixed batch: 2 sequences with 1 and 3 new tokens (q packed [4, 2, D]), 4 pages of 16
    slots each (8 pages in the cache), Hq 2, Hkv 1. check=True: the GPU validates contents too."""
    q = r(rng, rows, 2, D) if q is None else q
    kc, vc = r(rng, 8, 16, 1, D), r(rng, 8, 16, 1, D)
    cq = cu if not isinstance(cu, tuple) else i32(*cu)
    kw.setdefault("max_seqlen_q", 3)
    kw.setdefault("check", True)
    return cuattn.paged_attention(q, kc, vc, i32([0, 1, 2, 3], [4, 5, 6, 7]), i32(*lens),
                                  cu_seqlens_q=cq, **kw)


def append(rng, slots=(0, 5, 17), **kw):
    kc, vc = r(rng, 4, 16, 1, D), r(rng, 4, 16, 1, D)
    kn, vn = r(rng, len(slots), 1, D), r(rng, len(slots), 1, D)
    sm = dev(np.asarray(slots, np.int64))
    return cuattn.append_paged_kv(kn, vn, kc, vc, sm, **kw)


def mla_dec(rng, scale=0.1, **kw):
    q, cache = r(rng, 1, 1, 2, 24), r(rng, 2, 16, 24)
    return cuattn.mla_decode(q, cache, i32([0, 1]), i32(20), scale=scale, head_dim_v=16, **kw)


def strided(x, step):
    return dev(np.repeat(np.asarray(x), step))[::step]


# ---- accepted edge cases (asserted against the oracle) -------------------------------------------


def empty_batch(rng):
    q, k, v = (r(rng, 0, 3, 2, D) for _ in range(3))
    out = cuattn.attention(q, k, v)
    assert tuple(out.shape) == (0, 3, 2, D)


def empty_kv(rng):
    q, k, v = r(rng, 1, 3, 2, D), r(rng, 1, 0, 2, D), r(rng, 1, 0, 2, D)
    out, lse = cuattn.attention(q, k, v, return_lse=True)
    assert (to_host(out).astype(np.float64) == 0).all()
    assert np.isneginf(to_host(lse)).all()


def zero_scale(rng):
    q, k, v = qkv(rng)
    cuattn.attention(q, k, v, scale=0.0)


def paged_row_stride(rng):
    q, kc, vc, _, sl = paged_parts(rng)
    wide = np.array([[9, 0, 1, 2, 3, 9], [9, 4, 5, 6, 7, 9]], np.int32)
    out, lse = cuattn.paged_attention(q, kc, vc, dev(wide)[:, 1:5], sl, return_lse=True)
    ref, ref_lse = oracle.paged_ref(to_host(q), to_host(kc), to_host(vc), wide[:, 1:5], [9, 5])
    assert_close(out, ref, F32)
    assert_lse(lse, ref_lse, F32)


def paged_unread_entries(rng):
    q, kc, vc, _, sl = paged_parts(rng)
    table = np.array([[0, -1, 99, 7], [4, 1 << 30, -5, 0]], np.int32)  # only column 0 is read
    out = cuattn.paged_attention(q, kc, vc, dev(table), sl)
    ref, _ = oracle.paged_ref(to_host(q), to_host(kc), to_host(vc), table, [9, 5])
    assert_close(out, ref, F32)


def paged_zero_length(rng):
    q, kc, vc, bt, _ = paged_parts(rng)
    out, lse = cuattn.paged_attention(q, kc, vc, bt, i32(0, 5), return_lse=True)
    assert (to_host(out)[0].astype(np.float64) == 0).all()
    assert np.isneginf(to_host(lse)[0]).all()


def paged_reversed_rows(rng):
    q, kc, vc, _, sl = paged_parts(rng)
    table = np.array([[4, 5, 6, 7], [0, 1, 2, 3]], np.int32)
    out = cuattn.paged_attention(q, kc, vc, dev(table)[::-1], sl)
    ref, _ = oracle.paged_ref(to_host(q), to_host(kc), to_host(vc), table[::-1], [9, 5])
    assert_close(out, ref, F32)


def mixed_ok(rng):
    """A decode beside a 3-token chunk, against the oracle, every output element written."""
    q, kc, vc = host(rng, (4, 2, D), F32), host(rng, (8, 16, 1, D), F32), host(rng, (8, 16, 1, D), F32)
    table = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], np.int32)
    out, lse = dev(np.full((4, 2, D), np.nan, F32)), dev(np.full((2, 4), np.nan, np.float32))
    cuattn.paged_attention(dev(q), dev(kc), dev(vc), dev(table), i32(9, 5), cu_seqlens_q=i32(0, 1, 4),
                           out=out, lse_out=lse)
    ref, ref_lse = oracle.paged_ref(q, kc, vc, table, [9, 5], cu_seqlens_q=[0, 1, 4])
    assert_close(out, ref, F32)
    assert_lse(lse, ref_lse, F32)


def mixed_no_tokens(rng):
    """Sequences without new tokens (and one without cached ones): empty results."""
    out, lse = mixed(rng, cu=(0, 0, 0), lens=(9, 0), rows=0, max_seqlen_q=0, return_lse=True)
    assert tuple(out.shape) == (0, 2, D) and tuple(lse.shape) == (2, 0)


def _plan_mismatch(rng):
    plan = cuattn.plan_decode([9, 5, 3], num_q_heads=2, num_kv_heads=1, head_dim=D, page_size=16,
                              device="cuda" if GPU else "cpu")
    return paged(rng, plan=plan)


def _requires_grad(rng):
    import torch

    q, k, v = (torch.randn(1, 5, 2, D, device="cuda", dtype=torch.float16, requires_grad=True)
               for _ in range(3))
    return cuattn.attention(q, k, v)


def _mixed_devices(rng):
    q, k, v = qkv(rng)
    return cuattn.attention(q, to_host(k), v)


def append_halves(rng):
    buf = dev(np.zeros((4, 2, 16, 1, D), np.dtype(F32) if F32 == "float32" else np.float16))
    kn, vn = r(rng, 2, 1, D), r(rng, 2, 1, D)
    cuattn.append_paged_kv(kn, vn, buf[:, 0], buf[:, 1], dev(np.array([3, -1], np.int64)))
    got = to_host(buf)
    assert (got[0, 0, 3] == to_host(kn)[0]).all() and (got[0, 1, 3] == to_host(vn)[0]).all()
    assert np.count_nonzero(got.astype(np.float64)) <= 2 * D


def append_empty(rng):
    append(rng, slots=())


# ---- the cases -----------------------------------------------------------------------------------

def _attn(**kw):
    return lambda rng: cuattn.attention(*qkv(rng), **kw)


def _out_is(which):
    def call(rng):
        q, k, v = qkv(rng, sk=5, hq=1)
        buf = {"q": q, "k": k, "v": v}[which]
        return cuattn.attention(q, k, v, out=buf)
    return call


def _stride0_out(rng):
    q, k, v = qkv(rng)
    one = r(rng, 1, 1, 2, D)
    if GPU and gpu_framework() == "torch":
        out = one.expand(1, 5, 2, D)
    else:
        xp = np if not GPU else sys.modules["cupy"]
        out = xp.lib.stride_tricks.as_strided(one, shape=(1, 5, 2, D),
                                              strides=(0, 0) + one.strides[2:])
    return cuattn.attention(q, k, v, out=out)


def _lse_aliases_out(rng):
    q, k, v = (r(rng, 1, 4, 2, 4, dtype="float32") for _ in range(3))
    buf = dev(np.zeros(64, np.float32))
    return cuattn.attention(q, k, v, out=buf[:32].reshape(1, 4, 2, 4),
                            lse_out=buf[24:32].reshape(1, 2, 4), return_lse=True)


def _huge_seqlen(rng):
    """2**31 keys (a stride-0 host view): more than the kernels' 32-bit lengths hold."""
    k = np.lib.stride_tricks.as_strided(host(rng, (D,), F32), shape=(1, 2**31, 1, D),
                                        strides=(0, 0, 0, np.dtype(F32).itemsize))
    return cuattn.attention(r(rng, 1, 1, 1, D), k, k)


def _merge(**kw):
    def call(rng):
        oa, ob = r(rng, 1, 3, 2, D), r(rng, 1, 3, 2, D)
        la, lb = r(rng, 1, 2, 3, dtype="float32"), r(rng, 1, 2, 3, dtype="float32")
        args = dict(o_a=oa, lse_a=la, o_b=ob, lse_b=lb)
        for key, val in kw.items():
            args[key] = args[val] if isinstance(val, str) else val(rng)
        return cuattn.merge_states(args.pop("o_a"), args.pop("lse_a"), args.pop("o_b"),
                                   args.pop("lse_b"), **args)
    return call


def _paged_out_in_cache(rng):
    q, kc, vc, bt, sl = paged_parts(rng)
    return cuattn.paged_attention(q, kc, vc, bt, sl, out=kc[7, :4].reshape(2, 2, D))


def _append_new_in_cache(rng):
    kc, vc = r(rng, 4, 16, 1, D), r(rng, 4, 16, 1, D)
    return cuattn.append_paged_kv(kc[3, :2], r(rng, 2, 1, D), kc, vc,
                                  dev(np.array([0, 1], np.int64)))


def _append_same_cache(rng):
    kc = r(rng, 4, 16, 1, D)
    return cuattn.append_paged_kv(r(rng, 2, 1, D), r(rng, 2, 1, D), kc, kc,
                                  dev(np.array([0, 1], np.int64)))


def _mla_out_in_cache(rng):
    q, cache = r(rng, 1, 1, 2, 24), r(rng, 2, 16, 24)
    return cuattn.mla_decode(q, cache, i32([0, 1]), i32(20), scale=0.1, head_dim_v=16,
                             out=cache[1, :2, :16].reshape(1, 1, 2, 16))


def _mla_out_is_q(rng):
    q = r(rng, 1, 2, 3, 4)
    kl, vl, kp, vp = r(rng, 1, 3, 5), r(rng, 1, 3, 5), r(rng, 2, 5, 4), r(rng, 2, 5, 4)
    return cuattn.mla_attention(q, kl, vl, kp, vp, out=q)


CASES = [
    # types and dtypes
    Case("q-list", lambda rng: cuattn.attention([[1.0]], *qkv(rng)[1:]), TypeError),
    Case("q-float64", lambda rng: cuattn.attention(r(rng, 1, 5, 2, D, dtype="float64"),
                                                   *qkv(rng)[1:]), ValueError, "q"),
    Case("q-int32", lambda rng: cuattn.attention(dev(np.ones((1, 5, 2, D), np.int32)),
                                                 *qkv(rng)[1:]), ValueError, "q"),
    Case("k-dtype", lambda rng: cuattn.attention(qkv(rng)[0], r(rng, 1, 6, 1, D, dtype="bfloat16"),
                                                 qkv(rng)[2]), ValueError, "k"),
    Case("q-float32-gpu", lambda rng: cuattn.attention(*(r(rng, 1, 5, 2, D, dtype="float32")
                                                         for _ in range(3))),
         ValueError, "float32", where="gpu"),
    # shapes, strides, alignment, head dims
    Case("q-9-dims", lambda rng: cuattn.attention(r(rng, *([1] * 8 + [D])), *qkv(rng)[1:]),
         ValueError, "q"),
    Case("mixed-devices-gpu", _mixed_devices, ValueError, "k", where="gpu"),
    Case("requires-grad-gpu", _requires_grad, ValueError, "grad",
         where="gpu" if gpu_framework() == "torch" else "none"),
    Case("stream-type-gpu", _attn(stream="default"), TypeError, "stream", where="gpu"),
    Case("q-ndim", lambda rng: cuattn.attention(r(rng, 5, 2, D), *qkv(rng)[1:]), ValueError, "q"),
    Case("q-last-stride", lambda rng: cuattn.attention(r(rng, 1, 5, 2, 2 * D)[..., ::2],
                                                       *qkv(rng)[1:]), ValueError, "stride"),
    Case("gqa-ratio", lambda rng: cuattn.attention(*qkv(rng, hq=3, hkv=2)), ValueError,
         "num_heads"),
    Case("kv-seqlen", lambda rng: cuattn.attention(qkv(rng)[0], r(rng, 1, 6, 1, D),
                                                   r(rng, 1, 7, 1, D)), ValueError, "seqlen"),
    Case("out-shape", lambda rng: cuattn.attention(*qkv(rng), out=r(rng, 1, 5, 2, D + 8)),
         ValueError, "out"),
    Case("layout", _attn(layout="sbhd"), ValueError, "layout"),
    Case("head-dim-gpu", lambda rng: cuattn.attention(*(r(rng, 1, 5, 2, 264) for _ in range(3))),
         ValueError, "head_dim", where="gpu"),
    Case("misaligned-gpu", lambda rng: cuattn.attention(r(rng, 1, 5, 2, 68)[..., :64],
                                                        *qkv(rng, hkv=2)[1:]),
         ValueError, "stride", where="gpu"),
    Case("int32-seqlen", _huge_seqlen, ValueError, "seqlen_k", where="cpu"),
    # scalars
    *[Case(f"scale-{v}", _attn(scale=v), ValueError, "scale")
      for v in (math.inf, math.nan, -math.inf, 1e39)],
    Case("scale-negative", _attn(scale=-1.0), ValueError, "scale"),
    *[Case(f"softcap-{v}", _attn(softcap=v), ValueError, "softcap")
      for v in (math.inf, math.nan, -1.0)],
    Case("window-negative", _attn(window=(-2, 0)), ValueError, "window"),
    Case("window-type", _attn(window="wide"), TypeError, "window"),
    Case("naive-scale-inf", lambda rng: cuattn.naive_attention(*qkv(rng), scale=math.inf),
         ValueError, "scale"),
    # sinks
    Case("sinks-strided", lambda rng: cuattn.attention(
        *qkv(rng), sinks=dev(np.zeros(4, np.float32))[::2]), ValueError, "sinks"),
    Case("sinks-shape", lambda rng: cuattn.attention(*qkv(rng), sinks=dev(np.zeros(3, np.float32))),
         ValueError, "sinks"),
    Case("sinks-float16", lambda rng: cuattn.attention(
        *qkv(rng), sinks=dev(np.zeros(2, np.float16))),
         ValueError, "sinks"),
    Case("sinks-nan", lambda rng: cuattn.attention(*qkv(rng), sinks=dev(np.array([0, np.nan],
                                                                                  np.float32))),
         ValueError, "sinks", content=True),
    # overlap
    Case("out-is-q", _out_is("q"), ValueError, "q"),
    Case("out-is-v", _out_is("v"), ValueError, "v"),
    Case("out-stride0", _stride0_out, ValueError, "out"),
    Case("lse-aliases-out", _lse_aliases_out, ValueError, "lse", where="cpu"),
    # varlen
    Case("cu-short", lambda rng: varlen(rng, cu_q=(0, 2, 4)), ValueError, "cu_seqlens_q",
         content=True),
    Case("cu-long", lambda rng: varlen(rng, cu_k=(0, 3, 7)), ValueError, "cu_seqlens_k",
         content=True),
    Case("cu-decreasing", lambda rng: varlen(rng, cu_q=(0, 6, 5)),
         ValueError, "cu_seqlens_q", content=True),
    Case("cu-first", lambda rng: varlen(rng, cu_q=(1, 2, 5)), ValueError, "cu_seqlens_q",
         content=True),
    Case("cu-strided", lambda rng: varlen(rng, cu_q=strided(np.array([0, 2, 5], np.int32), 2)),
         ValueError, "cu_seqlens_q"),
    Case("cu-reversed", lambda rng: varlen(rng, cu_k=dev(np.array([6, 3, 0], np.int32))[::-1]),
         ValueError, "cu_seqlens_k", where="any" if can_reverse() else "cpu"),
    Case("cu-int64", lambda rng: varlen(rng, cu_k=dev(np.array([0, 3, 6], np.int64))), ValueError,
         "cu_seqlens_k"),
    Case("cu-count", lambda rng: varlen(rng, cu_k=(0, 6)), ValueError, "cu_seqlens"),
    Case("cu-only-q", lambda rng: cuattn.attention(r(rng, 5, 2, D), r(rng, 6, 1, D),
                                                   r(rng, 6, 1, D), cu_seqlens_q=i32(0, 5)),
         ValueError, "cu_seqlens"),
    Case("max-seqlen-small", lambda rng: varlen(rng, max_seqlen_q=2), ValueError, "max_seqlen_q",
         content=True),
    Case("max-seqlen-missing-gpu", lambda rng: varlen(rng, max_seqlen_q=None), ValueError,
         "max_seqlen", where="gpu"),
    # zero sizes and accepted edge cases
    Case("empty-batch", empty_batch, None),
    Case("empty-kv", empty_kv, None),
    Case("zero-scale", zero_scale, ValueError, "scale"),
    # merge_states
    Case("merge-out-is-o_a", _merge(out="o_a"), ValueError, "o_a"),
    Case("merge-lse-out-is-lse_b", _merge(lse_out="lse_b"), ValueError, "lse_b"),
    Case("merge-head-dim-0", lambda rng: cuattn.merge_states(
        r(rng, 1, 3, 2, 0), r(rng, 1, 2, 3, dtype="float32"), r(rng, 1, 3, 2, 0),
        r(rng, 1, 2, 3, dtype="float32")), ValueError, "head_dim"),
    Case("merge-lse-shape", _merge(lse_b=lambda rng: r(rng, 1, 3, 2, dtype="float32")),
         ValueError, "lse_b"),
    # paged_attention
    Case("seq_lens-strided", lambda rng: paged(rng, lens=strided(np.array([9, 5], np.int32), 2)),
         ValueError, "seq_lens"),
    Case("seq_lens-strided-junk", lambda rng: paged(rng, lens=dev(np.array([9, 99, 5, 99],
                                                                             np.int32))[::2]),
         ValueError, "seq_lens"),
    Case("seq_lens-strided-zeros", lambda rng: paged(rng, lens=dev(np.array([9, 0, 5, 0],
                                                                              np.int32))[::2]),
         ValueError, "seq_lens"),
    Case("seq_lens-reversed", lambda rng: paged(rng, lens=dev(np.array([5, 9], np.int32))[::-1]),
         ValueError, "seq_lens", where="any" if can_reverse() else "cpu"),
    Case("seq_lens-int64", lambda rng: paged(rng, lens=dev(np.array([9, 5], np.int64))),
         ValueError, "seq_lens"),
    Case("seq_lens-too-long", lambda rng: paged(rng, lens=(65, 5)), ValueError, "seq_lens",
         content=True),
    Case("seq_lens-negative", lambda rng: paged(rng, lens=(9, -1)), ValueError, "seq_lens",
         content=True),
    Case("block-id-range", lambda rng: paged(rng, table=i32([8, 1, 2, 3], [4, 5, 6, 7])),
         ValueError, "block_table", content=True),
    Case("block-id-negative", lambda rng: paged(rng, table=i32([0, 1, 2, 3], [-1, 5, 6, 7])),
         ValueError, "block_table", content=True),
    Case("block_table-int64", lambda rng: paged(rng, table=dev(np.zeros((2, 4), np.int64))),
         ValueError, "block_table"),
    Case("block_table-rows", lambda rng: paged(rng, table=i32([0, 1, 2, 3])), ValueError,
         "block_table"),
    Case("paged-sinks-strided", lambda rng: paged(rng, sinks=dev(np.zeros(4, np.float32))[::2]),
         ValueError, "sinks"),
    Case("paged-out-in-cache", _paged_out_in_cache, ValueError, "k_cache"),
    Case("paged-scale-inf", lambda rng: paged(rng, scale=math.inf), ValueError, "scale"),
    Case("paged-softcap-inf", lambda rng: paged(rng, softcap=math.inf), ValueError, "softcap"),
    Case("k_scale-inf", lambda rng: paged(rng, k_scale=math.inf), ValueError, "k_scale"),
    Case("v_scale-zero", lambda rng: paged(rng, v_scale=0.0), ValueError, "v_scale"),
    Case("k_scale-tensor-nan", lambda rng: paged(rng, k_scale=dev(np.array([np.nan], np.float32))),
         ValueError, "k_scale", content=True),
    Case("k_scale-tensor-shape", lambda rng: paged(rng, k_scale=dev(np.ones(2, np.float32))),
         ValueError, "k_scale"),
    Case("kv_layout", lambda rng: paged(rng, kv_layout="HDN"), ValueError, "kv_layout"),
    Case("k_cache-uint8", lambda rng: cuattn.paged_attention(
        r(rng, 2, 2, D), dev(np.zeros((8, 16, 1, D), np.uint8)),
        dev(np.zeros((8, 16, 1, D), np.uint8)),
        i32([0, 1, 2, 3], [4, 5, 6, 7]), i32(9, 5)), ValueError, "k_cache"),
    Case("paged-row-stride", paged_row_stride, None),
    Case("paged-unread-entries", paged_unread_entries, None),
    Case("paged-zero-length", paged_zero_length, None),
    Case("paged-reversed-rows", paged_reversed_rows, None, where="any" if can_reverse() else "cpu"),
    Case("paged-plan-mismatch", _plan_mismatch, ValueError, "plan"),
    # paged_attention, mixed batches (cu_seqlens_q; check=True, so the GPU validates too)
    Case("mixed-cu-short", lambda rng: mixed(rng, cu=(0, 1, 3)), ValueError, "cu_seqlens_q"),
    Case("mixed-cu-long", lambda rng: mixed(rng, cu=(0, 1, 5), lens=(9, 9)), ValueError,
         "cu_seqlens_q"),
    Case("mixed-cu-decreasing", lambda rng: mixed(rng, cu=(0, 5, 4), lens=(9, 9)), ValueError,
         "cu_seqlens_q"),
    Case("mixed-cu-first", lambda rng: mixed(rng, cu=(1, 2, 4)), ValueError, "cu_seqlens_q"),
    Case("mixed-cu-int64", lambda rng: mixed(rng, cu=dev(np.array([0, 1, 4], np.int64))),
         ValueError, "cu_seqlens_q"),
    Case("mixed-cu-strided", lambda rng: mixed(rng, cu=strided(np.array([0, 1, 4], np.int32), 2)),
         ValueError, "cu_seqlens_q"),
    Case("mixed-cu-2d", lambda rng: mixed(rng, cu=dev(np.array([[0, 1, 4]], np.int32))),
         ValueError, "cu_seqlens_q"),
    Case("mixed-cu-empty", lambda rng: mixed(rng, cu=dev(np.zeros(0, np.int32))), ValueError,
         "cu_seqlens_q"),
    Case("mixed-cu-count", lambda rng: mixed(rng, cu=(0, 4)), ValueError, "cu_seqlens_q"),
    Case("mixed-cu-float", lambda rng: mixed(rng, cu=dev(np.array([0, 1, 4], np.float32))),
         ValueError, "cu_seqlens_q"),
    Case("mixed-more-tokens-than-cache", lambda rng: mixed(rng, lens=(9, 2)), ValueError,
         "cu_seqlens_q"),
    Case("mixed-max-seqlen-small", lambda rng: mixed(rng, max_seqlen_q=2), ValueError,
         "max_seqlen_q"),
    Case("mixed-max-seqlen-negative", lambda rng: mixed(rng, max_seqlen_q=-1), ValueError,
         "max_seqlen_q"),
    Case("mixed-max-seqlen-without-cu", lambda rng: paged(rng, max_seqlen_q=1), ValueError,
         "max_seqlen_q"),
    Case("mixed-max-seqlen-missing-gpu", lambda rng: mixed(rng, max_seqlen_q=None), ValueError,
         "max_seqlen_q", where="gpu"),
    Case("mixed-q-4d", lambda rng: mixed(rng, q=r(rng, 2, 2, 2, D)), ValueError, "q"),
    Case("mixed-out-shape", lambda rng: mixed(rng, out=r(rng, 2, 2, D)), ValueError, "out"),
    Case("mixed-lse-shape", lambda rng: mixed(rng, lse_out=r(rng, 4, 2, dtype="float32")),
         ValueError, "lse"),
    Case("mixed-plan", lambda rng: mixed(rng, plan=cuattn.plan_decode(
        [9, 5], num_q_heads=2, num_kv_heads=1, head_dim=D, page_size=16, q_len=3,
        device="cuda" if GPU else "cpu")), ValueError, "plan"),
    Case("mixed-ok", mixed_ok, None, where="cpu"),
    Case("mixed-no-tokens", mixed_no_tokens, None, where="cpu"),
    Case("mixed-gpu", lambda rng: mixed(rng), None, where="gpu"),
    Case("plan-negative-length", lambda rng: cuattn.plan_decode(
        [4, -1], num_q_heads=2, num_kv_heads=1, head_dim=D, page_size=16, device="cpu"),
         ValueError, "seq_lens"),
    # append_paged_kv
    Case("append-new-in-cache", _append_new_in_cache, ValueError, "k_new"),
    Case("append-same-cache", _append_same_cache, ValueError, "v_cache"),
    Case("append-slot-range", lambda rng: append(rng, slots=(0, 64)), ValueError, "slot_mapping",
         content=True),
    Case("append-slot-int32", lambda rng: cuattn.append_paged_kv(
        r(rng, 2, 1, D), r(rng, 2, 1, D), r(rng, 4, 16, 1, D), r(rng, 4, 16, 1, D), i32(0, 1)),
        ValueError, "slot_mapping"),
    Case("append-slot-strided", lambda rng: cuattn.append_paged_kv(
        r(rng, 2, 1, D), r(rng, 2, 1, D), r(rng, 4, 16, 1, D), r(rng, 4, 16, 1, D),
        strided(np.array([0, 1], np.int64), 2)), ValueError, "slot_mapping"),
    Case("append-k_scale-nan", lambda rng: append(rng, k_scale=math.nan), ValueError, "k_scale"),
    Case("append-halves", append_halves, None),
    Case("append-empty", append_empty, None),
    Case("append-head-dim-0", lambda rng: cuattn.append_paged_kv(
        r(rng, 2, 1, 0), r(rng, 2, 1, 0), r(rng, 4, 16, 1, 0), r(rng, 4, 16, 1, 0),
        dev(np.array([0, 1], np.int64))), ValueError, "head_dim"),
    Case("attention-head-dim-0", lambda rng: cuattn.attention(*qkv(rng, d=0)), ValueError,
         "head_dim"),
    # mla_decode / mla_attention (CPU backend)
    Case("mla_decode-scale-inf", lambda rng: mla_dec(rng, scale=math.inf), ValueError, "scale",
         where="cpu"),
    Case("mla_decode-scale-zero", lambda rng: mla_dec(rng, scale=0.0), ValueError, "scale",
         where="cpu"),
    Case("mla_decode-out-in-cache", _mla_out_in_cache, ValueError, "kv_cache", where="cpu"),
    Case("mla_decode-seq_lens-strided", lambda rng: cuattn.mla_decode(
        r(rng, 2, 1, 2, 24), r(rng, 2, 16, 24), i32([0], [1]),
        strided(np.array([3, 4], np.int32), 2), scale=0.1, head_dim_v=16), ValueError, "seq_lens",
         where="cpu"),
    Case("mla_decode-head_dim_v", lambda rng: cuattn.mla_decode(
        r(rng, 1, 1, 2, 24), r(rng, 2, 16, 24), i32([0, 1]), i32(20), scale=0.1, head_dim_v=32),
         ValueError, "head_dim_v", where="cpu"),
    Case("mla-scale-inf", lambda rng: cuattn.mla_attention(
        r(rng, 1, 2, 3, 4), r(rng, 1, 3, 5), r(rng, 1, 3, 5), r(rng, 2, 5, 4), r(rng, 2, 5, 6),
        scale=math.inf), ValueError, "scale", where="cpu"),
    Case("mla-out-is-q", _mla_out_is_q, ValueError, "q", where="cpu"),
]
BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "case ids must be unique"


def _applies(c: Case) -> bool:
    return c.where == "any" or c.where == ("gpu" if GPU else "cpu")


# ---- the subprocess side -------------------------------------------------------------------------


def run_cases(progress: str, start: int) -> None:
    """Runs the cases that apply to this device from index `start` on; one JSON line per case
    on stdout. Writes the index of the case about to run to `progress` first (to name it, and
    go on after it, if the process dies)."""
    for n, c in enumerate(CASES[start:], start):
        if not _applies(c):
            continue
        Path(progress).write_text(str(n))
        rng = np.random.default_rng(zlib.crc32(c.id.encode()))
        res = {"id": c.id, "status": "ok", "type": "", "msg": ""}
        try:
            c.call(rng)
            if GPU:
                from test_properties import sync

                sync()
        except AssertionError as e:
            res.update(status="assert", msg=f"{e}\n{traceback.format_exc()[-1500:]}")
        except Exception as e:  # noqa: BLE001 - recorded and judged by the parent
            res.update(status="raised", type=type(e).__name__, msg=str(e)[:2000])
        print(json.dumps(res), flush=True)


@pytest.fixture(scope="module")
def results():
    here = Path(__file__).resolve().parent
    env = dict(os.environ)
    env.pop("CUATTN_CHECK", None)
    env["PYTHONPATH"] = os.pathsep.join([str(here), env.get("PYTHONPATH", "")])
    got, start = {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        progress = os.path.join(tmp, "case")
        while start < len(CASES):  # a process that dies is restarted after the case it died on
            p = subprocess.run([sys.executable, "-c",
                                f"import test_hostile as t; t.run_cases({progress!r}, {start})"],
                               cwd=here, env=env, capture_output=True, text=True, timeout=600)
            for line in p.stdout.splitlines():
                if line.startswith("{"):
                    d = json.loads(line)
                    got[d["id"]] = d
            if p.returncode == 0:
                break
            last = int(Path(progress).read_text())
            got[CASES[last].id] = {"status": "crash", "msg": f"the process died (exit "
                                   f"{p.returncode}) in this case:\n{p.stderr[-3000:]}"}
            start = last + 1
    return got


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile(case, results):
    if case.where == "none":
        pytest.skip("needs PyTorch with CUDA")
    if not _applies(case):
        pytest.skip(f"a {case.where.upper()}-only rule (CUATTN_TEST_DEVICE={DEVICE})")
    res = results.get(case.id)
    assert res is not None, f"case {case.id} did not report"
    if res["status"] in ("assert", "crash"):
        pytest.fail(res["msg"])
    if case.exc is None:
        assert res["status"] == "ok", f"{res['type']}: {res['msg']}"
        return
    if res["status"] == "ok":
        assert GPU and case.content, f"no {case.exc.__name__} for {case.id}"
        return
    assert res["type"] == case.exc.__name__, f"{res['type']}: {res['msg']}"
    assert case.name in res["msg"], f"the message does not name {case.name!r}: {res['msg']}"
