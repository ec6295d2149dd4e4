"""cuattn.paged_attention on mixed batches (q packed [total_q, Hq, D] with cu_seqlens_q): decodes
beside chunked prefills, empty sequences, GQA, windows, softcap, sinks, fp8 caches, LSE, page
sizes, random block tables; against the float64 oracle, against the uniform [B, Sq, Hq, D] call
when every sequence has the same query count, with poisoned outputs, and the refusals
(plan=, bad max_seqlen_q). On the GPU mixed batches run the paged kernel's work-list schedule."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (assert_close, assert_empty_rows_zero, assert_lse, device_dtype_params,
                      gpu_framework, poisoned, randn, skip_unless_gpu, to_device, to_host)
from test_paged import PagedCase, build_paged


@dataclass(frozen=True)
class MixedCase:
    n: tuple          # query tokens of each sequence (n_b <= paged.lens[b])
    paged: PagedCase  # seq_lens, page size, heads, head dims, layout, window, softcap, sinks

    def __str__(self):
        return f"n{'_'.join(map(str, self.n))}-{self.paged}"


def mixed(n, lens, page, **kw):
    return MixedCase(tuple(n), PagedCase(tuple(lens), page, **{"d": 64, **kw}))


CASES = [
    mixed((1, 64, 1, 17), (100, 64, 1, 300), 16),                 # decodes beside prefill chunks
    mixed((0, 3, 0, 1), (50, 3, 0, 9), 16, hq=4, hkv=1),          # n_b = 0, seq_lens 0
    mixed((2, 1, 5), (7, 1, 5), 1, hq=4, hkv=4),                  # page size 1
    mixed((1, 40, 1), (200, 64, 65), 64, hq=16, hkv=1, kv_layout="HND"),
    mixed((1, 33, 8), (300, 47, 8), 16, window=(31, 0), sinks=True, share_prefix=True),
    mixed((5, 1, 12), (60, 80, 12), 16, softcap=4.0, d=96, kv_layout="HND"),
    mixed((3, 0, 5, 1), (100, 50, 5, 2), 16, window=8, hq=4, hkv=2),
    mixed((2, 7), (40, 23), 16, d=192, dv=128, hq=4, hkv=1),
    mixed((4, 1, 9), (13, 29, 9), 5, hq=6, hkv=3, d=40, sinks=True, softcap=2.0),
    mixed((1, 1, 1, 1, 1), (17, 1, 64, 100, 33), 16, buffer=True),  # decodes only; K/V one buffer
    mixed((64, 30), (64, 700), 64, hq=8, hkv=8, window=(100, 0)),
    mixed((0, 0), (5, 0), 16),                                    # no query token at all
]


def build_mixed(rng, case: MixedCase, q_dtype, kv_dtype, device):
    """test_paged's random paged problem (caches, a random block table with junk past each row's
    ⌈len/page⌉ entries, seq_lens, sinks) with q packed [total_q, Hq, D] and cu_seqlens_q.
    kv_dtype: a dtype name, 'fp8' or 'u8'. Returns (device dict, host dict)."""
    assert all(n <= length for n, length in zip(case.n, case.paged.lens))
    dev, host = build_paged(rng, case.paged, q_dtype, kv_dtype, device)
    cu = np.concatenate([[0], np.cumsum(case.n)]).astype(np.int32)
    host.update(q=randn(rng, (int(cu[-1]), case.paged.hq, case.paged.d), q_dtype), cu_seqlens_q=cu)
    dev.update(q=to_device(host["q"], device), cu_seqlens_q=to_device(cu, device))
    return dev, host


def run_mixed(rng, device, dtype, case, kv="same", *, poison=True, scales=(None, None), **kw):
    """One mixed call (poisoned out=/lse_out= unless poison=False) and its oracle answer."""
    pc = case.paged
    if device == "cuda" and not (pc.d == pc.head_dim_v and pc.d in (64, 128, 256)):
        pytest.skip(f"GPU paged kernels cover head dims 64/128/256, not {pc.d}/{pc.head_dim_v}")
    dev, host = build_mixed(rng, case, dtype, dtype if kv == "same" else kv, device)
    args = dict(softcap=pc.softcap, window=pc.window, kv_layout=pc.kv_layout)
    if device == "cuda":  # the GPU sizes its work by it (no host read of cu_seqlens_q)
        kw.setdefault("max_seqlen_q", max(case.n))
    if kv in ("fp8", "u8"):
        args.update(k_scale=scales[0], v_scale=scales[1])
    extra = dict(kv_cache_dtype="fp8_e4m3") if kv == "u8" else {}
    total = int(host["cu_seqlens_q"][-1])
    oshape, lshape = (total, pc.hq, pc.head_dim_v), (pc.hq, total)
    if poison:
        extra.update(out=poisoned(oshape, dtype, device), lse_out=poisoned(lshape, "float32", device))
    out, lse = cuattn.paged_attention(dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"],
                                      dev["seq_lens"], sinks=dev["sinks"], return_lse=True,
                                      cu_seqlens_q=dev["cu_seqlens_q"], **args, **extra, **kw)
    if poison:
        assert out is extra["out"] and lse is extra["lse_out"]
    assert tuple(out.shape) == oshape and tuple(lse.shape) == lshape
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"],
                                    host["block_table"], host["seq_lens"], sinks=host["sinks"],
                                    cu_seqlens_q=host["cu_seqlens_q"], **args)
    return out, lse, ref, ref_lse


CPU_ONLY = device_dtype_params(gpu=())
ALL = device_dtype_params()


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("device,dtype", ALL)
def test_mixed_batch(rng, device, dtype, case):
    out, lse, ref, ref_lse = run_mixed(rng, device, dtype, case, poison=bool(rng.integers(2)))
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("kv", ["fp8", "u8"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4], CASES[8]], ids=str)
@pytest.mark.parametrize("device,dtype", ALL)
def test_mixed_batch_fp8(rng, device, dtype, case, kv):
    """fp8 e4m3 caches dequantised with k_scale / v_scale, per sequence as in the uniform call."""
    scales = (float(rng.uniform(0.05, 0.5)), float(rng.uniform(0.05, 0.5)))
    out, lse, ref, ref_lse = run_mixed(rng, device, dtype, case, kv, scales=scales)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


@pytest.mark.parametrize("page", [1, 16, 64])
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32", "bfloat16")))
def test_mixed_batch_page_sizes(rng, device, dtype, page):
    """Page sizes 1, 16, 64 with chunks that start and end mid-page, random block tables."""
    case = mixed((1, 64, 0, 37, 1), (129, 64, 3, 100, 1), page, hq=8, hkv=2, sinks=True)
    out, lse, ref, ref_lse = run_mixed(rng, device, dtype, case)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("sq", [1, 3, 64])
@pytest.mark.parametrize("device,dtype", CPU_ONLY)
def test_mixed_equals_uniform(rng, device, dtype, sq):
    """With the same query count everywhere a mixed call is the uniform one: q [B, Sq, Hq, D]
    packed row by row gives the same bits, lse [Hq, B*Sq] is lse [B, Hq, Sq] transposed; with
    Sq = 1 also the decode call with q [B, Hq, D]."""
    case = mixed((sq,) * 4, (sq, 70 + sq, 200, 1000), 16, hq=8, hkv=2, window=(50, 0), sinks=True,
                 softcap=3.0)
    pc = case.paged
    dev, host = build_mixed(rng, case, dtype, dtype, device)
    args = (dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    kw = dict(sinks=dev["sinks"], window=pc.window, softcap=pc.softcap, return_lse=True)
    out, lse = cuattn.paged_attention(dev["q"], *args, cu_seqlens_q=dev["cu_seqlens_q"],
                                      max_seqlen_q=sq, **kw)
    q4 = host["q"].reshape(4, sq, pc.hq, pc.d)
    u_out, u_lse = cuattn.paged_attention(to_device(q4, device), *args, **kw)
    got = to_host(out).astype(np.float32)
    assert np.array_equal(got, to_host(u_out).astype(np.float32).reshape(got.shape))
    assert np.array_equal(to_host(lse), to_host(u_lse).transpose(1, 0, 2).reshape(pc.hq, 4 * sq))
    if sq == 1:
        d_out, d_lse = cuattn.paged_attention(to_device(q4[:, 0], device), *args, **kw)
        assert np.array_equal(got, to_host(d_out).astype(np.float32))
        assert np.array_equal(to_host(lse), to_host(d_lse).T)
    ref, ref_lse = oracle.paged_ref(q4, host["k_cache"], host["v_cache"], host["block_table"],
                                    host["seq_lens"], sinks=host["sinks"], window=pc.window,
                                    softcap=pc.softcap)
    assert_close(u_out, ref, dtype)
    assert_lse(u_lse, ref_lse, dtype)


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32",), gpu=()))
def test_mixed_strided_views(rng, device, dtype):
    """q a head-strided view, a larger max_seqlen_q than needed, out/lse views of wider buffers,
    the block table a row-strided view: each read and written with its strides."""
    case = mixed((3, 1, 8), (10, 33, 8), 16, hq=4, hkv=2, d=32)
    pc = case.paged
    dev, host = build_mixed(rng, case, dtype, dtype, device)
    total = int(host["cu_seqlens_q"][-1])
    q_base = randn(rng, (total, 2 * pc.hq, pc.d), dtype)
    q_base[:, ::2] = host["q"]
    wide = np.pad(host["block_table"], ((0, 0), (2, 1)), constant_values=-9)
    out_base = poisoned((total, pc.hq, 2 * pc.d), dtype, device)
    lse_base = poisoned((pc.hq, total + 5), "float32", device)
    out, lse = cuattn.paged_attention(
        to_device(q_base, device)[:, ::2], dev["k_cache"], dev["v_cache"],
        to_device(wide, device)[:, 2:-1], dev["seq_lens"], cu_seqlens_q=dev["cu_seqlens_q"],
        max_seqlen_q=50, return_lse=True, out=out_base[:, :, :pc.d], lse_out=lse_base[:, 1:-4])
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"],
                                    host["block_table"], host["seq_lens"],
                                    cu_seqlens_q=host["cu_seqlens_q"])
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    # nothing outside the views was written
    assert np.isnan(to_host(out_base)[:, :, pc.d:].astype(np.float32)).all()
    lb = to_host(lse_base)
    assert np.isnan(lb[:, :1]).all() and np.isnan(lb[:, -4:]).all()


def test_mixed_zero_sequences(rng):
    """B = 0 (cu_seqlens_q = [0]) and sequences without query tokens: empty results, no error."""
    q = np.zeros((0, 4, 8), np.float32)
    kc = vc = np.zeros((2, 16, 2, 8), np.float32)
    out, lse = cuattn.paged_attention(q, kc, vc, np.zeros((0, 1), np.int32), np.zeros(0, np.int32),
                                      cu_seqlens_q=np.zeros(1, np.int32), return_lse=True)
    assert out.shape == (0, 4, 8) and lse.shape == (4, 0)
    out, lse = cuattn.paged_attention(q, kc, vc, np.zeros((3, 1), np.int32),
                                      np.array([0, 5, 16], np.int32),
                                      cu_seqlens_q=np.zeros(4, np.int32), return_lse=True)
    assert out.shape == (0, 4, 8) and lse.shape == (4, 0)


def test_mixed_refuses_plan(rng):
    """A DecodePlan fixes one q_len for every sequence: with cu_seqlens_q it is a ValueError."""
    case = mixed((1, 4), (10, 20), 16)
    dev, _ = build_mixed(rng, case, "float32", "float32", "cpu")
    plan = cuattn.plan_decode([10, 20], num_q_heads=case.paged.hq, num_kv_heads=case.paged.hkv,
                              head_dim=case.paged.d, page_size=16, q_len=4, device="cpu")
    with pytest.raises(ValueError, match="plan="):
        cuattn.paged_attention(dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"],
                               dev["seq_lens"], cu_seqlens_q=dev["cu_seqlens_q"], plan=plan)


def test_mixed_gpu_validates_then_runs(rng):
    """On the GPU a mixed call is validated (check=True: bad cu_seqlens_q -> ValueError naming
    it; max_seqlen_q is required) and then runs on the work-list schedule: against the oracle,
    bitwise the same on a second call, and with a dominant prefill chunk beside many decodes
    (8 chunks of 96 tokens over 700 cached, 24 decodes), GQA 32/8, D128, fp8 too."""
    skip_unless_gpu()
    dtype = "bfloat16"
    case = mixed((1, 5, 0), (10, 40, 3), 16, hq=8, hkv=2, d=128)
    dev, host = build_mixed(rng, case, dtype, dtype, "cuda")
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    with pytest.raises(ValueError, match="max_seqlen_q"):
        cuattn.paged_attention(*args, cu_seqlens_q=dev["cu_seqlens_q"])
    bad = to_device(np.array([0, 1, 7, 5], np.int32), "cuda")
    with pytest.raises(ValueError, match="cu_seqlens_q"):
        cuattn.paged_attention(*args, cu_seqlens_q=bad, max_seqlen_q=6, check=True)
    big = mixed((96,) * 8 + (1,) * 24, (700,) * 32, 16, hq=32, hkv=8, d=128, sinks=True)
    for kv in ("same", "u8"):
        scales = (0.25, 0.5) if kv == "u8" else (None, None)
        out, lse, ref, ref_lse = run_mixed(rng, "cuda", dtype, big, kv, scales=scales, check=True)
        assert_close(out, ref, dtype)
        assert_lse(lse, ref_lse, dtype)
    dev, host = build_mixed(rng, big, dtype, dtype, "cuda")
    a2 = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    one = cuattn.paged_attention(*a2, cu_seqlens_q=dev["cu_seqlens_q"], max_seqlen_q=96)
    two = cuattn.paged_attention(*a2, cu_seqlens_q=dev["cu_seqlens_q"], max_seqlen_q=96)
    assert np.array_equal(to_host(one).astype(np.float32), to_host(two).astype(np.float32))
