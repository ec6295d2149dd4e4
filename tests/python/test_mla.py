"""Multi-head latent attention: cuattn.mla_attention against the direct per-head projection, and
cuattn.mla_decode over a paged latent cache against dense attention."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (RTOL, MAXABS, assert_close, assert_empty_rows_zero, assert_framework,
                      assert_lse, device_dtype_params, poisoned, randn, to_device)

def _gpu_not_built(device):
    """The MLA variants have no GPU kernels yet: on cuda they must say so (NotImplementedError)."""
    return device != "cpu"



def mla_tol(dtype):
    """K_h = Kl Kp[h] and V_h are materialised (or the projections absorbed) in the input dtype,
    one more rounding than plain attention: twice the attention tolerance for 16-bit inputs."""
    f = 1 if dtype == "float32" else 2
    return dict(rtol=f * RTOL[dtype], maxabs=f * MAXABS[dtype])


@dataclass(frozen=True)
class MlaCase:
    b: int
    h: int
    s: int
    latent: int
    d: int
    dv: int
    causal: bool
    scale: float | None = None
    sk: int | None = None  # keys (default: s)

    @property
    def nk(self):
        return self.s if self.sk is None else self.sk

    def __str__(self):
        s = f"b{self.b}-h{self.h}-s{self.s}" + ("" if self.sk is None else f"k{self.sk}")
        s += f"-L{self.latent}-d{self.d}v{self.dv}"
        s += "-causal" if self.causal else ""
        s += "" if self.scale is None else f"-scale{self.scale:g}"
        return s


MLA_CASES = [
    MlaCase(2, 4, 1, 64, 64, 64, True),
    MlaCase(2, 4, 1, 64, 64, 64, False),
    MlaCase(1, 8, 7, 128, 64, 64, True),
    MlaCase(2, 4, 7, 96, 128, 128, False),
    MlaCase(1, 4, 33, 256, 128, 128, True),
    MlaCase(1, 4, 33, 512, 128, 64, False),
    MlaCase(2, 2, 33, 64, 64, 128, True, scale=0.2),
    # Sq != Sk: causal is bottom-right aligned (query i sees keys j <= i + Sk - Sq)
    MlaCase(2, 4, 3, 64, 64, 64, True, sk=70),
    MlaCase(1, 3, 5, 128, 64, 128, False, sk=129),
    MlaCase(2, 2, 1, 96, 128, 128, True, sk=257),
    MlaCase(1, 2, 40, 64, 64, 64, True, sk=17),  # Sq > Sk: the first 23 queries see no key
    MlaCase(1, 8, 65, 64, 128, 128, True, sk=100),
]
METHODS = ["auto", "materialise", "absorb", "per_pair"]


def mla_inputs(rng, case, dtype):
    q = randn(rng, (case.b, case.h, case.s, case.d), dtype)
    kl = randn(rng, (case.b, case.nk, case.latent), dtype)
    vl = randn(rng, (case.b, case.nk, case.latent), dtype)
    kp = randn(rng, (case.h, case.latent, case.d), dtype, scale=1 / math.sqrt(case.latent))
    vp = randn(rng, (case.h, case.latent, case.dv), dtype, scale=1 / math.sqrt(case.latent))
    return q, kl, vl, kp, vp


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", MLA_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_mla_attention(rng, device, dtype, case, method):
    if device == "cpu" and method == "per_pair":
        pytest.skip("per_pair is a GPU baseline (the CPU runs absorb for it)")
    q, kl, vl, kp, vp = mla_inputs(rng, case, dtype)
    dq = to_device(q, device)
    out = poisoned((case.b, case.h, case.s, case.dv), dtype, device)
    res = cuattn.mla_attention(dq, *(to_device(x, device) for x in (kl, vl, kp, vp)),
                               causal=case.causal, scale=case.scale, out=out, _method=method)
    assert res is out
    ref, _ = oracle.mla_ref(q, kl, vl, kp, vp, causal=case.causal, scale=case.scale)
    assert_framework(out, dq)
    assert tuple(out.shape) == (case.b, case.h, case.s, case.dv)
    assert_close(out, ref, dtype, **mla_tol(dtype))
    assert_empty_rows_zero(out, ref)


def test_mla_attention_bad_method(rng):
    q, kl, vl, kp, vp = mla_inputs(rng, MLA_CASES[0], "float32")
    with pytest.raises(ValueError, match="_method"):
        cuattn.mla_attention(q, kl, vl, kp, vp, _method="fastest")


def test_mla_attention_key_mismatch(rng):
    q, kl, vl, kp, vp = mla_inputs(rng, MlaCase(1, 2, 3, 16, 16, 16, True, sk=5), "float32")
    with pytest.raises(ValueError, match="v_latent"):
        cuattn.mla_attention(q, kl, vl[:, :4], kp, vp)


def test_mla_attention_causal_default(rng):
    """causal defaults to True."""
    q = randn(rng, (1, 2, 9, 32), "float32")
    kl, vl = randn(rng, (1, 9, 16), "float32"), randn(rng, (1, 9, 16), "float32")
    kp, vp = randn(rng, (2, 16, 32), "float32"), randn(rng, (2, 16, 32), "float32")
    out = cuattn.mla_attention(q, kl, vl, kp, vp)
    assert_close(out, oracle.mla_ref(q, kl, vl, kp, vp, causal=True)[0], "float32")


# ------------------------------------------------------------------------------------------------
# mla_decode

KV_DIM, DV = 576, 512


@dataclass(frozen=True)
class DecodeCase:
    lens: tuple
    page: int
    hq: int
    sq: int = 1
    causal: bool = True
    squeeze: bool = True  # kv_cache [N, bs, 576] (else [N, bs, 1, 576])

    def __str__(self):
        s = f"L{'_'.join(map(str, self.lens))}-p{self.page}-h{self.hq}-sq{self.sq}"
        s += "-causal" if self.causal else "-full"
        return s + ("-3d" if self.squeeze else "-4d")


DECODE_CASES = [
    DecodeCase((1, 65, 300), 64, 16),
    DecodeCase((1, 65, 300), 64, 16, squeeze=False),
    DecodeCase((17, 200), 64, 4, sq=2),
    DecodeCase((0, 130), 64, 8),                    # an empty sequence: 0 / -inf
    DecodeCase((40, 64, 9), 16, 8, sq=3, squeeze=False),
    DecodeCase((40, 64), 64, 4, sq=2, causal=False),
]


@pytest.mark.parametrize("poison", [False, True])
@pytest.mark.parametrize("case", DECODE_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_mla_decode(rng, device, dtype, case, poison):
    bsz = len(case.lens)
    npages = [-(-n // case.page) for n in case.lens]
    num_blocks = sum(npages) + 2
    perm = list(rng.permutation(num_blocks))
    max_blocks = max(npages) + 1
    table = np.full((bsz, max_blocks), -1, np.int32)
    for b in range(bsz):
        table[b, :npages[b]] = [perm.pop() for _ in range(npages[b])]
    cshape = (num_blocks, case.page, KV_DIM) if case.squeeze else (num_blocks, case.page, 1, KV_DIM)
    cache = randn(rng, cshape, dtype)
    q = randn(rng, (bsz, case.sq, case.hq, KV_DIM), dtype)
    sl = np.asarray(case.lens, np.int32)
    scale = 1 / math.sqrt(192) * 0.8
    extra = {}
    if poison:
        extra = dict(out=poisoned((bsz, case.sq, case.hq, DV), dtype, device),
                     lse_out=poisoned((bsz, case.hq, case.sq), "float32", device))
    dq = to_device(q, device)
    if _gpu_not_built(device):
        with pytest.raises(NotImplementedError, match="576/512"):
            cuattn.mla_decode(dq, to_device(cache, device), to_device(table, device),
                              to_device(sl, device), scale=scale)
        pytest.skip("mla_decode has no GPU kernel yet (raises NotImplementedError, checked)")
    out, lse = cuattn.mla_decode(dq, to_device(cache, device), to_device(table, device),
                                 to_device(sl, device), scale=scale, causal=case.causal, **extra)
    if poison:
        assert out is extra["out"] and lse is extra["lse_out"]
    ref, ref_lse = oracle.mla_decode_ref(q, cache, table, sl, scale=scale, causal=case.causal)
    assert_framework(out, dq)
    assert tuple(out.shape) == (bsz, case.sq, case.hq, DV)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("bfloat16",)))
def test_mla_decode_with_plan(rng, device, dtype):
    lens, page, hq = [5, 129, 64], 64, 8
    npages = [-(-n // page) for n in lens]
    table = np.zeros((3, max(npages)), np.int32)
    ids = rng.permutation(sum(npages)).astype(np.int32)
    i = 0
    for b, m in enumerate(npages):
        table[b, :m] = ids[i:i + m]
        i += m
    cache = randn(rng, (sum(npages), page, KV_DIM), dtype)
    q = randn(rng, (3, 1, hq, KV_DIM), dtype)
    sl = np.asarray(lens, np.int32)
    args = (to_device(q, device), to_device(cache, device), to_device(table, device),
            to_device(sl, device))
    if _gpu_not_built(device):
        pytest.skip("mla_decode has no GPU kernel yet (test_mla_decode checks the error)")
    plan = cuattn.plan_decode(args[3], num_q_heads=hq, num_kv_heads=1, head_dim=KV_DIM,
                              head_dim_v=DV, page_size=page, device=device)
    ref, ref_lse = oracle.mla_decode_ref(q, cache, table, sl, scale=0.1)
    for _ in range(2):
        out, lse = cuattn.mla_decode(*args, scale=0.1, plan=plan)
        assert_close(out, ref, dtype)
        assert_lse(lse, ref_lse, dtype)
