"""cuattn.paged_attention / append_paged_kv / plan_decode against the oracle: random block
tables, page sizes, NHD/HND layouts, strided cache views, prefix sharing, fp8 caches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (DTYPES, FP8, RTOL, assert_close, assert_empty_rows_zero, assert_lse, device_dtype_params,
                      f64, gpu_framework, gpu_skip_reason, poisoned, randn, to_device, to_host)


@dataclass(frozen=True)
class PagedCase:
    lens: tuple            # seq_lens (cached tokens, new ones included)
    page: int              # block_size
    hq: int = 8
    hkv: int = 2
    d: int = 128
    dv: int | None = None
    sq: int | None = None  # None: q [B, Hq, D]; else q [B, Sq, Hq, D]
    kv_layout: str = "NHD"
    window: object = None
    softcap: float = 0.0
    sinks: bool = False
    share_prefix: bool = False  # sequence 1 reuses sequence 0's first pages
    buffer: bool = False        # K and V are views of one [N, 2, ...] buffer
    cpu_only: bool = False

    def __str__(self):
        s = f"L{'_'.join(map(str, self.lens))}-p{self.page}-h{self.hq}x{self.hkv}-d{self.d}"
        if self.dv:
            s += f"v{self.dv}"
        s += f"-{'decode' if self.sq is None else f'sq{self.sq}'}-{self.kv_layout}"
        for flag in ("softcap", "sinks", "share_prefix", "buffer"):
            if getattr(self, flag):
                s += f"-{flag}"
        if self.window is not None:
            s += f"-win{self.window}".replace(" ", "")
        return s

    @property
    def head_dim_v(self):
        return self.d if self.dv is None else self.dv


CASES = [
    PagedCase((1, 17, 64, 100), 16),
    PagedCase((5, 1, 3, 2), 1, hq=4, hkv=4, d=64),
    PagedCase((200, 64, 65), 64, hq=16, hkv=1, kv_layout="HND"),
    PagedCase((0, 1, 33), 16, hq=4, hkv=1, d=64),             # seq_len 0 -> 0 / -inf
    PagedCase((4, 20, 100), 16, sq=4),
    PagedCase((7, 129), 64, sq=7, kv_layout="HND", hq=4, hkv=4, d=64),
    PagedCase((1, 16, 90), 16, sq=1, hq=8, hkv=8, d=256),
    PagedCase((300, 47), 16, window=(31, 0), sinks=True),
    PagedCase((100, 50, 3), 16, sq=5, window=8, hq=4, hkv=2, d=64),
    PagedCase((60, 80), 16, softcap=4.0, d=96, kv_layout="HND"),
    PagedCase((77, 70, 95), 16, share_prefix=True, hq=4, hkv=2, d=64),
    PagedCase((33, 64, 7), 16, buffer=True, d=64),
    PagedCase((33, 64, 7), 64, buffer=True, kv_layout="HND", sq=3, d=64),
    PagedCase((40, 23), 16, d=192, dv=128, hq=4, hkv=1),
    PagedCase((13, 29), 5, hq=6, hkv=3, d=40, cpu_only=True),
    PagedCase((31, 8), 3, sq=2, hq=2, hkv=1, d=33, kv_layout="HND", cpu_only=True),
    PagedCase((100,), 7, sinks=True, softcap=2.0, cpu_only=True),
    PagedCase((5000, 3001), 16, hq=8, hkv=2, d=128),  # GPU: many splits drawing from a tile pool
]


def build_paged(rng, case: PagedCase, q_dtype, kv_dtype, device, *, scales=(None, None)):
    """Random q, caches, block_table (a random permutation of pages, junk past each row's
    ⌈len/page⌉ entries) and seq_lens. Returns (device dict, host dict)."""
    lens = list(case.lens)
    bsz = len(lens)
    npages = [-(-n // case.page) for n in lens]
    max_blocks = max(npages + [1]) + 1
    num_blocks = sum(npages) + 3
    perm = list(rng.permutation(num_blocks))
    table = np.empty((bsz, max_blocks), np.int32)
    for b in range(bsz):
        row = [perm.pop() for _ in range(npages[b])]
        if case.share_prefix and b == 1:
            shared = min(npages[0], npages[1], lens[0] // case.page, lens[1] // case.page)
            row[:shared] = table[0, :shared]
        junk = rng.choice([-1, num_blocks, 10**6, -(10**6)], size=max_blocks - npages[b])
        table[b] = np.concatenate([np.asarray(row, np.int64), junk]).astype(np.int32)
    if case.kv_layout == "NHD":
        kshape = (num_blocks, case.page, case.hkv, case.d)
        vshape = (num_blocks, case.page, case.hkv, case.head_dim_v)
    else:
        kshape = (num_blocks, case.hkv, case.page, case.d)
        vshape = (num_blocks, case.hkv, case.page, case.head_dim_v)

    def values(shape):
        x = rng.standard_normal(shape)
        if kv_dtype in ("fp8", "u8"):
            return (x * 3).astype(FP8)  # dequantised with k_scale / v_scale
        return x.astype(DTYPES[kv_dtype])

    if case.buffer:
        assert case.d == case.head_dim_v
        big = values((num_blocks, 2) + kshape[1:])
        big_dev = to_device(big, device) if kv_dtype != "u8" else to_device(big.view(np.uint8), device)
        kc_h, vc_h = big[:, 0], big[:, 1]
        kc, vc = big_dev[:, 0], big_dev[:, 1]
    else:
        kc_h, vc_h = values(kshape), values(vshape)
        if kv_dtype == "u8":
            kc, vc = to_device(kc_h.view(np.uint8), device), to_device(vc_h.view(np.uint8), device)
        else:
            kc, vc = to_device(kc_h, device), to_device(vc_h, device)
    qshape = (bsz, case.hq, case.d) if case.sq is None else (bsz, case.sq, case.hq, case.d)
    q_h = randn(rng, qshape, q_dtype)
    sl = np.asarray(lens, np.int32)
    sinks_h = (rng.standard_normal(case.hq) * 2).astype(np.float32) if case.sinks else None
    dev = dict(q=to_device(q_h, device), k_cache=kc, v_cache=vc,
               block_table=to_device(table, device), seq_lens=to_device(sl, device),
               sinks=None if sinks_h is None else to_device(sinks_h, device))
    host = dict(q=q_h, k_cache=kc_h, v_cache=vc_h, block_table=table, seq_lens=sl, sinks=sinks_h)
    return dev, host


def out_shapes(case: PagedCase):
    b = len(case.lens)
    if case.sq is None:
        return (b, case.hq, case.head_dim_v), (b, case.hq)
    return (b, case.sq, case.hq, case.head_dim_v), (b, case.hq, case.sq)


def _run_and_check(rng, device, dtype, case, kv_dtype, *, poison, k_scale=None, v_scale=None):
    dev, host = build_paged(rng, case, dtype, kv_dtype, device)
    kw = dict(softcap=case.softcap, window=case.window, kv_layout=case.kv_layout)
    if kv_dtype in ("fp8", "u8"):
        kw.update(k_scale=k_scale, v_scale=v_scale)
    extra = {}
    if kv_dtype == "u8":
        extra["kv_cache_dtype"] = "fp8_e4m3"
    oshape, lshape = out_shapes(case)
    if poison:
        extra.update(out=poisoned(oshape, dtype, device), lse_out=poisoned(lshape, "float32", device))
    out, lse = cuattn.paged_attention(dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"],
                                      dev["seq_lens"], sinks=dev["sinks"], return_lse=True,
                                      **kw, **extra)
    if poison:
        assert out is extra["out"] and lse is extra["lse_out"]
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"],
                                    host["block_table"], host["seq_lens"], sinks=host["sinks"],
                                    **kw)
    assert tuple(out.shape) == oshape and tuple(lse.shape) == lshape
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


def _skip_case(case, device):
    if case.cpu_only and device == "cuda":
        pytest.skip("page size / head dim exercised on the CPU only")
    if device == "cuda" and not (case.d == (case.dv or case.d) and case.d in (64, 128, 256)):
        # The GPU paged kernels take D = Dv in {64, 128, 256}; others must say so.
        with pytest.raises(ValueError, match="no GPU paged kernel"):
            _run_and_check(np.random.default_rng(0), device, "bfloat16", case, "bfloat16", poison=False)
        pytest.skip(f"GPU paged kernels cover head dims 64/128/256, not {case.d}/{case.dv or case.d}")


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_paged_attention(rng, device, dtype, case):
    _skip_case(case, device)
    _run_and_check(rng, device, dtype, case, dtype, poison=bool(rng.integers(2)))


def _nan_outside_sequences(host, case):
    """Copies of the host caches with NaN in every slot no sequence owns (page tails past a
    sequence's end, pages no table row points to), as a reused cache can hold."""
    def poison(cache):
        valid = np.zeros(cache.shape[:2] if case.kv_layout == "NHD" else (cache.shape[0], cache.shape[2]), bool)
        for b, n in enumerate(host["seq_lens"]):
            for t in range(int(n)):
                valid[host["block_table"][b, t // case.page], t % case.page] = True
        out = cache.astype(np.float32)
        mask = ~valid if case.kv_layout == "NHD" else ~valid[:, None, :]
        idx = mask[..., None, None] if case.kv_layout == "NHD" else mask[..., None]
        out = np.where(idx, np.nan, out)
        return out.astype(cache.dtype)
    return poison(host["k_cache"]), poison(host["v_cache"])


# NaN in slots no sequence owns (page tails, unreferenced pages) must not reach the output: P = 0
# times a NaN is still NaN, so a kernel must never multiply such a row, whatever page size. Page
# sizes that are multiples of 16 take the TMA path on sm_90a (whole pages are copied, slots past a
# sequence's end included); the others copy row by row.
NAN_CASES = [PagedCase((1, 17, 100), 16), PagedCase((70, 5), 32, kv_layout="HND", d=64),
             PagedCase((130, 64), 64, window=(40, 0)), PagedCase((200, 3), 128, hq=4, hkv=1),
             PagedCase((9, 300), 256, sq=3, kv_layout="HND", d=64), PagedCase((13, 2), 8)]


@pytest.mark.parametrize("kv", ["same", "u8"])
@pytest.mark.parametrize("case", NAN_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32",)))
def test_paged_attention_nan_outside_sequences(rng, device, dtype, case, kv):
    """See NAN_CASES; 16-bit caches and fp8 ones (e4m3's NaN, as a reused fp8 cache can hold)."""
    dev, host = build_paged(rng, case, dtype, dtype if kv == "same" else kv, device)
    kc_h, vc_h = _nan_outside_sequences(host, case)
    kw = dict(window=case.window, kv_layout=case.kv_layout)
    extra = {}
    if kv == "u8":
        kw.update(k_scale=0.5, v_scale=0.25)
        extra["kv_cache_dtype"] = "fp8_e4m3"
        kc_h, vc_h = kc_h.view(np.uint8), vc_h.view(np.uint8)
    out = cuattn.paged_attention(dev["q"], to_device(kc_h, device), to_device(vc_h, device), dev["block_table"],
                                 dev["seq_lens"], **kw, **extra)
    ref, _ = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"], host["block_table"],
                              host["seq_lens"], **kw)
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[4], CASES[6], CASES[7], CASES[10], CASES[11], NAN_CASES[3]], ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
@pytest.mark.parametrize("kv", ["same", "u8"])
def test_paged_tma_matches_row_copies(rng, device, dtype, case, kv):
    """The TMA ring and the row-copy ring (internal _variant "tma=0") give the same bits, for
    16-bit caches and fp8 ones (uint8 + kv_cache_dtype='fp8_e4m3'). fp8 grids of one CTA an SM
    or less take the 8-warp kernel (128-key tiles: another summation order), checked against the
    oracle; "wide=0" gives the 4-warp TMA kernel that the row copies must match."""
    dev, host = build_paged(rng, case, dtype, dtype if kv == "same" else kv, device)
    kw = dict(window=case.window, kv_layout=case.kv_layout, softcap=case.softcap)
    if kv == "u8":
        kw.update(k_scale=0.25, v_scale=0.5)
    ref, _ = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"], host["block_table"],
                              host["seq_lens"], sinks=host["sinks"], **kw)
    if kv == "u8":
        kw.update(kv_cache_dtype="fp8_e4m3")
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    wide = cuattn.paged_attention(*args, sinks=dev["sinks"], **kw)
    assert_close(wide, ref, dtype)
    assert_close(cuattn.paged_attention(*args, sinks=dev["sinks"], _variant="wide=0", **kw), ref, dtype)
    # the row copies visit pages in order
    out = cuattn.paged_attention(*args, sinks=dev["sinks"], _variant="wide=0,page_order=0", **kw)
    assert_close(out, ref, dtype)
    a = to_host(out).astype(np.float32)
    assert not np.isnan(a).any()
    b = to_host(cuattn.paged_attention(*args, sinks=dev["sinks"], _variant="wide=0,page_order=0,tma=0",
                                       **kw)).astype(np.float32)
    assert np.array_equal(a, b, equal_nan=True)


ORDER_CASES = [
    PagedCase((3000, 1999, 517, 70), 16),
    PagedCase((20000, 40), 16, hq=4, hkv=1, d=64),  # more boxes than the kernel reorders
    PagedCase((2500, 900), 32, sq=3, window=(700, 0), sinks=True, softcap=3.0, hq=4, hkv=1, d=64),
    PagedCase((1500, 333), 64, kv_layout="HND", share_prefix=True),
    PagedCase((2100, 129), 128, hq=16, hkv=1),
]


@pytest.mark.parametrize("after", ["default", "3"])
@pytest.mark.parametrize("num_sms", [2, 0])
@pytest.mark.parametrize("kv", ["same", "u8"])
@pytest.mark.parametrize("case", ORDER_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_paged_page_order(rng, device, dtype, case, kv, num_sms, after):
    """The TMA kernel visits a CTA's pages grouped by address after its first tiles (8 by
    default; internal _variant "page_order=3": after the ring's first fill) when it has enough of
    them; a plan for 2 SMs gives each CTA a whole sequence, the default plan short splits. Against
    the oracle, bitwise the same on a second call (the order depends on the page ids only), and
    against the visit in sequence order ("page_order=0")."""
    variant = "" if after == "default" else f"page_order={after}"
    dev, host = build_paged(rng, case, dtype, dtype if kv == "same" else kv, device)
    kw = dict(window=case.window, kv_layout=case.kv_layout, softcap=case.softcap, sinks=dev["sinks"])
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"], host["block_table"],
                                    host["seq_lens"], sinks=host["sinks"], window=case.window,
                                    kv_layout=case.kv_layout, softcap=case.softcap,
                                    **(dict(k_scale=0.25, v_scale=0.5) if kv == "u8" else {}))
    if kv == "u8":
        kw.update(kv_cache_dtype="fp8_e4m3", k_scale=0.25, v_scale=0.5)
    plan = cuattn.plan_decode(host["seq_lens"], num_q_heads=case.hq, num_kv_heads=case.hkv,
                              head_dim=case.d, page_size=case.page, q_len=case.sq or 1,
                              device=device, num_sms=num_sms)
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    out, lse = cuattn.paged_attention(*args, plan=plan, return_lse=True, _variant=variant, **kw)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    again = cuattn.paged_attention(*args, plan=plan, _variant=variant, **kw)
    assert np.array_equal(to_host(out).astype(np.float32), to_host(again).astype(np.float32))
    in_order = cuattn.paged_attention(*args, plan=plan, _variant="page_order=0", **kw)
    assert_close(in_order, ref, dtype)
    assert_close(out, f64(in_order), dtype)


PERSISTENT_CASES = [
    CASES[0], CASES[3], CASES[4], CASES[7], CASES[11], ORDER_CASES[0], ORDER_CASES[2], ORDER_CASES[3],
    PagedCase((700, 0, 1, 690, 64, 2000), 128, hq=32, hkv=8, sinks=True),
]


@pytest.mark.parametrize("ctas", [1, 5])
@pytest.mark.parametrize("kv", ["fp8", "u8"])
@pytest.mark.parametrize("case", PERSISTENT_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_paged_persistent(rng, device, dtype, case, kv, ctas):
    """Persistent CTAs (fp8 caches, grids of several waves), here capped at 1 or 5 CTAs
    (internal _variant "persistent_ctas=N") so that each takes many work units in turn, its ring running
    on from one unit into the next (empty sequences, split merges done by a CTA that computed the
    other splits too, LSE out). Against the oracle, and bitwise against the 4-warp kernel
    launched one CTA a unit (pages in sequence order: a persistent CTA does not reorder them)."""
    if kv == "fp8" and gpu_framework() == "cupy":
        pytest.skip("CuPy has no float8 dtype (the u8 case covers the kernel)")
    dev, host = build_paged(rng, case, dtype, kv, device)
    kw = dict(window=case.window, kv_layout=case.kv_layout, softcap=case.softcap, sinks=dev["sinks"])
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"], host["block_table"],
                                    host["seq_lens"], sinks=host["sinks"], window=case.window,
                                    kv_layout=case.kv_layout, softcap=case.softcap,
                                    k_scale=0.25, v_scale=0.5)
    kw.update(k_scale=0.25, v_scale=0.5, **(dict(kv_cache_dtype="fp8_e4m3") if kv == "u8" else {}))
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    oshape, lshape = out_shapes(case)
    out, lse = cuattn.paged_attention(*args, return_lse=True, out=poisoned(oshape, dtype, device),
                                      lse_out=poisoned(lshape, "float32", device),
                                      _variant=f"persistent_ctas={ctas}", **kw)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)
    one_each = cuattn.paged_attention(*args, _variant="persistent=0,page_order=0,wide=0", **kw)
    assert np.array_equal(to_host(out).astype(np.float32), to_host(one_each).astype(np.float32))


LIST_CASES = [
    CASES[0], CASES[2], CASES[3], CASES[4], CASES[6], CASES[7], CASES[8], CASES[11], CASES[-1],
    ORDER_CASES[0],
    PagedCase((3000, 0, 31, 1, 700, 64, 0, 5), 16, hq=8, hkv=2),    # skewed, with empty sequences
    PagedCase((700, 129, 1), 48, hq=8, hkv=2),                      # row copies (48 straddles tiles)
    PagedCase((2000, 3), 16, sq=3, hq=32, hkv=8, sinks=True, window=(300, 0)),
    PagedCase((1500, 90), 256, hq=4, hkv=1, d=256),
]


@pytest.mark.parametrize("variant", ["list=1", "list_ctas=1", "list_ctas=7", "list=1,tma=0", "list=1,wide=1",
                                     "list=1,list_granule=48,list_overhead=1", "list=1,list_granule=512",
                                     "list=1,drain=1", "list=1,drain=1,tma=0", "list=1,drain=1,wide=1"])
@pytest.mark.parametrize("kv", ["same", "u8"])
@pytest.mark.parametrize("case", LIST_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_paged_work_list(rng, device, dtype, case, kv, variant):
    """The work-list schedule (internal _variant "list=1"; "list_ctas=N" caps its persistent grid
    at N CTAs): every CTA takes an equal share of all (sequence, kv head) units' keys, split
    anywhere on granule boundaries (64 keys, or list_granule=N), the splits of a unit merged by the
    last of its CTAs in split order. Against the oracle with poisoned outputs (empty sequences give zeros and -inf), with and
    without a plan, and bitwise the same on a second call (fixed merge order)."""
    _skip_case(case, device)
    dev, host = build_paged(rng, case, dtype, dtype if kv == "same" else kv, device)
    kw = dict(window=case.window, kv_layout=case.kv_layout, softcap=case.softcap, sinks=dev["sinks"])
    scales = dict(k_scale=0.25, v_scale=0.5) if kv == "u8" else {}
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"], host["block_table"],
                                    host["seq_lens"], sinks=host["sinks"], window=case.window,
                                    kv_layout=case.kv_layout, softcap=case.softcap, **scales)
    kw.update(scales, **(dict(kv_cache_dtype="fp8_e4m3") if kv == "u8" else {}))
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    oshape, lshape = out_shapes(case)
    out, lse = cuattn.paged_attention(*args, return_lse=True, out=poisoned(oshape, dtype, device),
                                      lse_out=poisoned(lshape, "float32", device), _variant=variant, **kw)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)
    again = cuattn.paged_attention(*args, _variant=variant, **kw)
    assert np.array_equal(to_host(out).astype(np.float32), to_host(again).astype(np.float32))
    plan = cuattn.plan_decode(host["seq_lens"], num_q_heads=case.hq, num_kv_heads=case.hkv,
                              head_dim=case.d, page_size=case.page, q_len=case.sq or 1, device=device)
    planned = cuattn.paged_attention(*args, plan=plan, _variant=variant, **kw)  # (may pick another kernel width)
    assert_close(planned, ref, dtype)
    # One plan's workspace serves both schedules in turn (their merge counters must stay zero).
    for v in ("list=0", variant, "list=0"):
        assert_close(cuattn.paged_attention(*args, plan=plan, _variant=v, **kw), ref, dtype)


@pytest.mark.parametrize("kv", ["same", "u8"])
@pytest.mark.parametrize("page", [1, 8, 16, 32, 48, 64, 80, 96, 128, 256])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_paged_attention_page_sizes(rng, device, dtype, page, kv):
    """Every page size, the issue's powers of two and multiples of 16 that are not (48, 80, 96:
    a 64-key tile then straddles pages unevenly, so the GPU copies it row by row), with lengths
    that end mid-page and a sequence cut into several splits."""
    case = PagedCase((700, 129, 1), page, hq=8, hkv=2, d=128)
    scales = dict(k_scale=0.5, v_scale=0.25) if kv == "u8" else {}
    _run_and_check(rng, device, dtype, case, dtype if kv == "same" else kv, poison=True, **scales)


@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[7]], ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_paged_attention_poisoned_out(rng, device, dtype, case):
    _run_and_check(rng, device, dtype, case, dtype, poison=True)


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32",)))
def test_paged_attention_workspace_across_shapes(rng, device, dtype):
    """Plan-less calls share one split-KV workspace per stream: a call with many splits, then
    smaller and differently shaped ones, then the first again, must each match the oracle (a
    bigger call's partial results once sat where a later call's merge counters had to be 0)."""
    shapes = [PagedCase((6000, 4000, 2500), 16, hq=8, hkv=2, d=128),
              PagedCase((900,), 16, hq=4, hkv=1, d=64),
              PagedCase((3000, 700), 32, hq=8, hkv=4, d=128, kv_layout="HND"),
              PagedCase((6000, 4000, 2500), 16, hq=8, hkv=2, d=128)]
    for case in shapes:
        _run_and_check(rng, device, dtype, case, dtype, poison=True)


FP8_CASES = [CASES[0], CASES[2], CASES[4], CASES[7], CASES[11], CASES[14]]


@pytest.mark.parametrize("kv", ["fp8", "u8"])
@pytest.mark.parametrize("case", FP8_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_paged_attention_fp8(rng, device, dtype, case, kv):
    """fp8 e4m3 caches (ml_dtypes/torch float8_e4m3fn, or uint8 + kv_cache_dtype='fp8_e4m3'),
    dequantised with k_scale / v_scale."""
    _skip_case(case, device)
    if device == "cuda" and kv == "fp8" and gpu_framework() == "cupy":
        pytest.skip("CuPy cannot export float8_e4m3fn through DLPack (uint8 case covers it)")
    k_scale, v_scale = float(rng.uniform(0.05, 0.5)), float(rng.uniform(0.05, 0.5))
    _run_and_check(rng, device, dtype, case, kv, poison=False, k_scale=k_scale, v_scale=v_scale)


@pytest.mark.parametrize("shape", [(), (1,)])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_paged_fp8_device_scales(rng, device, dtype, shape):
    """k_scale / v_scale as float32 device scalars (shape () or (1,)): the same bits as the same
    values passed as floats, for paged_attention and append_paged_kv (uint8 caches), and a
    scale array of the wrong dtype, size or device is a ValueError naming it."""
    case = PagedCase((70, 130), 16, hq=8, hkv=2, d=128)
    dev, host = build_paged(rng, case, dtype, "u8", device)
    ks, vs = 0.3, 0.15
    dscale = lambda v: to_device(np.full(shape, v, np.float32), device)  # noqa: E731
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    a = cuattn.paged_attention(*args, k_scale=ks, v_scale=vs, kv_cache_dtype="fp8_e4m3")
    b = cuattn.paged_attention(*args, k_scale=dscale(ks), v_scale=dscale(vs), kv_cache_dtype="fp8_e4m3")
    assert np.array_equal(to_host(a).astype(np.float32), to_host(b).astype(np.float32))
    ref, _ = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"], host["block_table"],
                              host["seq_lens"], k_scale=ks, v_scale=vs)
    assert_close(b, ref, dtype)
    # append: the same cache bytes either way
    t, hkv, d = 9, case.hkv, case.d
    k_new, v_new = randn(rng, (t, hkv, d), dtype), randn(rng, (t, hkv, d), dtype)
    slots = _slots(rng, len(host["k_cache"]), case.page, t, 2)
    caches, k0 = [], host["k_cache"].view(np.uint8).copy()
    for k_scale, v_scale in ((ks, vs), (dscale(ks), dscale(vs))):
        kc = to_device(k0.copy(), device)
        vc = to_device(host["v_cache"].view(np.uint8).copy(), device)
        cuattn.append_paged_kv(to_device(k_new, device), to_device(v_new, device), kc, vc,
                               to_device(slots, device), k_scale=k_scale, v_scale=v_scale,
                               kv_cache_dtype="fp8_e4m3")
        caches.append((to_host(kc), to_host(vc)))
    assert np.array_equal(caches[0][0], caches[1][0]) and np.array_equal(caches[0][1], caches[1][1])
    assert not np.array_equal(caches[0][0], k0)  # something was written
    # bad scale arrays
    for bad, what in ((to_device(np.full(shape, ks, np.float64), device), "float32"),
                      (to_device(np.full((2,), ks, np.float32), device), "one float32")):
        with pytest.raises(ValueError, match="k_scale"):
            cuattn.paged_attention(*args, k_scale=bad, v_scale=vs, kv_cache_dtype="fp8_e4m3")
        with pytest.raises(ValueError, match="k_scale"):
            cuattn.append_paged_kv(to_device(k_new, device), to_device(v_new, device), dev["k_cache"],
                                   dev["v_cache"], to_device(slots, device), k_scale=bad,
                                   kv_cache_dtype="fp8_e4m3")
    if device == "cuda":  # a host scale with GPU caches
        with pytest.raises(ValueError, match="k_scale"):
            cuattn.paged_attention(*args, k_scale=np.full(shape, ks, np.float32), v_scale=vs,
                                   kv_cache_dtype="fp8_e4m3")


@pytest.mark.parametrize("qmax", [1e5, 1e30])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_paged_attention_fp8_large_q(rng, device, dtype, qmax):
    """fp8 caches run their MMAs in f16 (a bf16 q is converted): q entries far beyond f16's 65504
    must still give the oracle's result (the kernel scales q by a power of two and undoes it in
    the score scale)."""
    if dtype != "bfloat16":
        pytest.skip("only bf16 holds values beyond f16's range")
    case = PagedCase((40, 200), 16, hq=4, hkv=2, d=128)
    dev, host = build_paged(rng, case, dtype, "u8", device)
    q_h = host["q"].astype(np.float32)
    q_h[:, 1, 5] = qmax / 3  # one large entry per row of head 1, the rest of the group O(1)
    q_h[0, 0, :] *= 2.0
    q_h = q_h.astype(host["q"].dtype)
    scale = 1.0 / qmax  # keep the scores O(1)
    kw = dict(scale=scale, k_scale=0.5, v_scale=0.25)
    out = cuattn.paged_attention(to_device(q_h, device), dev["k_cache"], dev["v_cache"], dev["block_table"],
                                 dev["seq_lens"], kv_cache_dtype="fp8_e4m3", **kw)
    ref, _ = oracle.paged_ref(q_h, host["k_cache"], host["v_cache"], host["block_table"], host["seq_lens"], **kw)
    assert not np.isnan(to_host(out).astype(np.float32)).any()
    assert_close(out, ref, dtype)


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_paged_matches_dense_attention(rng, device, dtype):
    """A contiguous page order equals cuattn.attention on the same keys (bottom-right causal)."""
    page, hq, hkv, d, sq = 16, 8, 2, 128, 3
    lens = [48, 48]
    kc_h = randn(rng, (6, page, hkv, d), dtype)
    vc_h = randn(rng, (6, page, hkv, d), dtype)
    table = np.arange(6, dtype=np.int32).reshape(2, 3)
    q_h = randn(rng, (2, sq, hq, d), dtype)
    out = cuattn.paged_attention(to_device(q_h, device), to_device(kc_h, device),
                                 to_device(vc_h, device), to_device(table, device),
                                 to_device(np.asarray(lens, np.int32), device))
    k = kc_h.reshape(2, 48, hkv, d)
    v = vc_h.reshape(2, 48, hkv, d)
    dense = cuattn.attention(to_device(q_h, device), to_device(k, device), to_device(v, device),
                             causal=True)
    assert_close(out, f64(dense), dtype, rtol=2 * RTOL[dtype])
    assert_close(out, oracle.attention_ref(q_h, k, v, causal=True)[0], dtype)


# ------------------------------------------------------------------------------------------------
# plan_decode


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[7], CASES[-1]], ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32", "bfloat16")))
def test_paged_attention_with_plan(rng, device, dtype, case):
    dev, host = build_paged(rng, case, dtype, dtype, device)
    plan = cuattn.plan_decode(dev["seq_lens"], num_q_heads=case.hq, num_kv_heads=case.hkv,
                              head_dim=case.d, page_size=case.page, device=device)
    assert isinstance(plan, cuattn.DecodePlan)
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    kw = dict(softcap=case.softcap, window=case.window, kv_layout=case.kv_layout,
              sinks=dev["sinks"], return_lse=True)
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"],
                                    host["block_table"], host["seq_lens"], sinks=host["sinks"],
                                    softcap=case.softcap, window=case.window,
                                    kv_layout=case.kv_layout)
    oshape, lshape = out_shapes(case)
    for _ in range(2):  # a plan is reusable
        out_buf = poisoned(oshape, dtype, device)
        out, lse = cuattn.paged_attention(*args, plan=plan, out=out_buf, **kw)
        assert_close(out, ref, dtype)
        assert_lse(lse, ref_lse, dtype)
    out0, lse0 = cuattn.paged_attention(*args, **kw)
    assert_close(out, f64(out0), dtype)
    assert_lse(lse, f64(lse0).astype(np.float64), dtype)


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32",)))
def test_plan_update(rng, device, dtype):
    """plan.update(seq_lens): a plan made for short sequences takes longer ones in the workspace it
    has (same bytes; more splits only up to what it holds, longer splits beyond), and calls after
    it match the oracle at the new lengths; a wrong batch or a negative length is a ValueError
    naming it, and the plan is unchanged then."""
    case = PagedCase((3000, 1999, 517, 70), 16, hq=8, hkv=2)
    dev, host = build_paged(rng, case, dtype, dtype, device)
    short = [64, 32, 16, 16]
    plan = cuattn.plan_decode(short, num_q_heads=case.hq, num_kv_heads=case.hkv, head_dim=case.d,
                              page_size=case.page, device=device, num_sms=132)
    before = (plan.workspace_bytes, plan.split_capacity, plan.max_splits, plan.chunk_tokens)
    assert plan.update(dev["seq_lens"]) is plan
    assert plan.workspace_bytes == before[0] and plan.split_capacity == before[1]
    assert list(plan.seq_lens) == list(case.lens)
    assert plan.max_splits <= plan.split_capacity
    assert plan.max_splits * plan.chunk_tokens >= max(case.lens)
    assert plan.chunk_tokens % case.page == 0
    kw = dict(window=case.window, kv_layout=case.kv_layout, sinks=dev["sinks"], return_lse=True)
    out, lse = cuattn.paged_attention(dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"],
                                      dev["seq_lens"], plan=plan, **kw)
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"], host["block_table"],
                                    host["seq_lens"], sinks=host["sinks"], window=case.window,
                                    kv_layout=case.kv_layout)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    state = (plan.max_splits, plan.chunk_tokens, list(plan.seq_lens))
    with pytest.raises(ValueError, match="batch"):
        plan.update([10, 20])
    with pytest.raises(ValueError, match=r"seq_lens\[2\]"):
        plan.update([10, 20, -1, 4])
    assert (plan.max_splits, plan.chunk_tokens, list(plan.seq_lens)) == state
    plan.update(short)  # back to short: as planned at first
    assert (plan.max_splits, plan.chunk_tokens) == before[2:]


# ------------------------------------------------------------------------------------------------
# append_paged_kv


def _slots(rng, num_blocks, page, t, n_skip):
    slots = rng.choice(num_blocks * page, size=t, replace=False).astype(np.int64)
    skip = rng.choice(t, size=min(n_skip, t), replace=False)
    slots[skip] = rng.choice([-1, -5, -(2**40)], size=len(skip))
    return slots


def _expected_cache(cache0, new, slots, kv_layout):
    """cache0 with token i written at flat slot slots[i] (negative: skipped)."""
    want = cache0.copy()
    page = want.shape[1] if kv_layout == "NHD" else want.shape[2]
    for i, s in enumerate(slots):
        if s < 0:
            continue
        if kv_layout == "NHD":
            want[s // page, s % page] = new[i]
        else:
            want[s // page, :, s % page] = new[i]
    return want


@pytest.mark.parametrize("page,t,n_skip", [(16, 37, 5), (1, 7, 0), (64, 130, 20), (16, 0, 0),
                                           (5, 11, 11)])
@pytest.mark.parametrize("buffer", [False, True])
@pytest.mark.parametrize("kv_layout", ["NHD", "HND"])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_append_paged_kv(rng, device, dtype, page, t, n_skip, buffer, kv_layout):
    """New tokens land in their flat slots; skipped (negative) and other slots are untouched."""
    if device == "cuda" and page == 5:
        pytest.skip("page size exercised on the CPU only")
    num_blocks, hkv, d = 12, 2, 64
    k_new, v_new = randn(rng, (t, hkv, d), dtype), randn(rng, (t, hkv, d), dtype)
    slots = _slots(rng, num_blocks, page, t, n_skip)
    inner = (page, hkv, d) if kv_layout == "NHD" else (hkv, page, d)
    if buffer:
        big = randn(rng, (num_blocks, 2) + inner, dtype)
        big_dev = to_device(big, device)
        kc, vc = big_dev[:, 0], big_dev[:, 1]
        kc0, vc0 = big[:, 0].copy(), big[:, 1].copy()
    else:
        kc0 = randn(rng, (num_blocks,) + inner, dtype)
        vc0 = randn(rng, (num_blocks,) + inner, dtype)
        kc, vc = to_device(kc0, device), to_device(vc0, device)
    cuattn.append_paged_kv(to_device(k_new, device), to_device(v_new, device), kc, vc,
                           to_device(slots, device), kv_layout=kv_layout)
    for cache, cache0, new in ((kc, kc0, k_new), (vc, vc0, v_new)):
        want = _expected_cache(cache0, new, slots, kv_layout)
        np.testing.assert_array_equal(f64(cache), want.astype(np.float64))


@pytest.mark.parametrize("kv", ["fp8", "u8"])
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_append_paged_kv_fp8(rng, device, dtype, kv):
    """fp8 caches store x / scale rounded to e4m3 (saturating at 448)."""
    if device == "cuda" and kv == "fp8" and gpu_framework() == "cupy":
        pytest.skip("CuPy cannot export float8_e4m3fn through DLPack")
    num_blocks, page, hkv, d, t = 8, 16, 2, 64, 40
    k_new, v_new = randn(rng, (t, hkv, d), dtype), randn(rng, (t, hkv, d), dtype)
    k_scale, v_scale = 0.005, 0.2  # |k| > 2.24 saturates
    slots = _slots(rng, num_blocks, page, t, 6)
    kc0 = (rng.standard_normal((num_blocks, page, hkv, d)) * 10).astype(FP8)
    vc0 = (rng.standard_normal((num_blocks, page, hkv, d)) * 10).astype(FP8)
    extra = {}
    if kv == "u8":
        kc, vc = to_device(kc0.view(np.uint8), device), to_device(vc0.view(np.uint8), device)
        extra["kv_cache_dtype"] = "fp8_e4m3"
    else:
        kc, vc = to_device(kc0, device), to_device(vc0, device)
    cuattn.append_paged_kv(to_device(k_new, device), to_device(v_new, device), kc, vc,
                           to_device(slots, device), k_scale=k_scale, v_scale=v_scale, **extra)
    keep = slots >= 0
    for cache, cache0, new, scale in ((kc, kc0, k_new, k_scale), (vc, vc0, v_new, v_scale)):
        got = to_host(cache).reshape(-1, hkv, d)
        got = got.view(FP8) if kv == "u8" else got
        assert got.dtype == FP8
        want = cache0.copy().reshape(-1, hkv, d)
        q = np.clip(new.astype(np.float32) / np.float32(scale), -448, 448)
        want[slots[keep]] = q[keep].astype(FP8)
        g, w = got.astype(np.float64), want.astype(np.float64)
        assert not np.isnan(g).any()
        # exact but for ties rounded differently: at most one e4m3 step (2^-3 relative) apart
        diff = np.abs(g - w)
        assert (diff <= np.maximum(np.abs(w) * 0.125, 2.0**-9) + 1e-12).all()
        assert (diff == 0).mean() > 0.99
        untouched = np.ones(len(want), bool)
        untouched[slots[keep]] = False
        np.testing.assert_array_equal(g[untouched], w[untouched])


@pytest.mark.parametrize("kv_dtype", ["same", "fp8"])
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32", "bfloat16")))
def test_append_then_decode(rng, device, dtype, kv_dtype):
    """Prefill a cache token by token through append_paged_kv, then decode from it."""
    if device == "cuda" and kv_dtype == "fp8" and gpu_framework() == "cupy":
        pytest.skip("CuPy cannot export float8_e4m3fn through DLPack")
    lens, page, hq, hkv, d = [37, 1, 64], 16, 8, 2, 128
    num_blocks = 12
    perm = rng.permutation(num_blocks).astype(np.int32)
    table = np.full((3, 5), -1, np.int32)
    i = 0
    for b, n in enumerate(lens):
        m = -(-n // page)
        table[b, :m] = perm[i:i + m]
        i += m
    cdt = FP8 if kv_dtype == "fp8" else DTYPES[dtype]
    kc_h = np.zeros((num_blocks, page, hkv, d), cdt)
    vc_h = np.zeros((num_blocks, page, hkv, d), cdt)
    kc, vc = to_device(kc_h, device), to_device(vc_h, device)
    t = sum(lens)
    k_new, v_new = randn(rng, (t, hkv, d), dtype), randn(rng, (t, hkv, d), dtype)
    slots = np.concatenate([table[b, np.arange(n) // page].astype(np.int64) * page
                            + np.arange(n) % page for b, n in enumerate(lens)])
    scales = dict(k_scale=0.05, v_scale=0.05) if kv_dtype == "fp8" else {}
    cuattn.append_paged_kv(to_device(k_new, device), to_device(v_new, device), kc, vc,
                           to_device(slots, device), **scales)
    q = randn(rng, (3, hq, d), dtype)
    sl = np.asarray(lens, np.int32)
    out, lse = cuattn.paged_attention(to_device(q, device), kc, vc, to_device(table, device),
                                      to_device(sl, device), return_lse=True, **scales)
    # reference from the cache contents the library wrote (quantisation checked elsewhere)
    ref, ref_lse = oracle.paged_ref(q, to_host(kc), to_host(vc), table, sl, **scales)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    if kv_dtype == "same":  # and from the original tokens
        starts = np.concatenate([[0], np.cumsum(lens)])
        for b in range(3):
            kk = k_new[starts[b]:starts[b + 1]][None]
            vv = v_new[starts[b]:starts[b + 1]][None]
            r, _ = oracle.attention_ref(q[b][None, None], kk, vv)
            assert_close(to_host(out)[b], r[0, 0], dtype)


# ------------------------------------------------------------------------------------------------
# A serving step in a CUDA graph


@pytest.mark.parametrize("kv_dtype", ["same", "fp8"])
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_decode_step_in_cuda_graph(rng, device, dtype, kv_dtype):
    """One decode step — append each sequence's new token, then paged_attention with a plan —
    captured once in a CUDA graph and replayed for several steps with new tokens and longer
    sequences, every replay against the oracle and bitwise against the same step run eagerly.
    Covers the split-KV counters left ready for the next replay and, on sm90, the programmatic
    dependent launch of the decode kernel: it must read the keys appended just before it."""
    if gpu_framework() != "torch":
        pytest.skip("CUDA-graph capture is exercised through torch.cuda.graph")
    import torch

    lens = np.asarray([3000, 1, 700, 129], np.int64)  # before the first step
    n_steps, page, hq, hkv, d = 4, 16, 8, 2, 128
    bsz = len(lens)
    max_blocks = -(-(int(lens.max()) + n_steps) // page)
    num_blocks = bsz * max_blocks + 3
    table = rng.permutation(num_blocks)[:bsz * max_blocks].reshape(bsz, max_blocks).astype(np.int32)
    cdt = FP8 if kv_dtype == "fp8" else DTYPES[dtype]
    scales = dict(k_scale=0.05, v_scale=0.05) if kv_dtype == "fp8" else {}
    kc = to_device((rng.standard_normal((num_blocks, page, hkv, d)) * (20 if scales else 1)).astype(cdt), device)
    vc = to_device((rng.standard_normal((num_blocks, page, hkv, d)) * (20 if scales else 1)).astype(cdt), device)
    table_d = to_device(table, device)
    # Static inputs of the graph, refilled in place before every replay.
    q_d = to_device(np.zeros((bsz, hq, d), DTYPES[dtype]), device)
    k_new_d = to_device(np.zeros((bsz, hkv, d), DTYPES[dtype]), device)
    v_new_d = to_device(np.zeros((bsz, hkv, d), DTYPES[dtype]), device)
    slots_d = to_device(np.zeros(bsz, np.int64), device)
    sl_d = to_device(np.zeros(bsz, np.int32), device)
    out = to_device(np.full((bsz, hq, d), np.nan, DTYPES[dtype]), device)
    lse = to_device(np.full((bsz, hq), np.nan, np.float32), device)
    plan = cuattn.plan_decode(lens + 1, num_q_heads=hq, num_kv_heads=hkv, head_dim=d, page_size=page,
                              device=device)
    assert plan.max_splits > 1  # the 3000-token sequence is split: the fused merge is in the graph

    def step():
        cuattn.append_paged_kv(k_new_d, v_new_d, kc, vc, slots_d, **scales)
        cuattn.paged_attention(q_d, kc, vc, table_d, sl_d, plan=plan, out=out, lse_out=lse, **scales)

    def fill(t):
        """Step t's inputs: sequence b appends its token at position lens[b] + t."""
        pos = lens + t
        slots = table[np.arange(bsz), pos // page].astype(np.int64) * page + pos % page
        q = randn(rng, (bsz, hq, d), dtype)
        for dst, src in ((q_d, q), (k_new_d, randn(rng, (bsz, hkv, d), dtype)),
                         (v_new_d, randn(rng, (bsz, hkv, d), dtype)), (slots_d, slots),
                         (sl_d, (pos + 1).astype(np.int32))):
            dst.copy_(to_device(src, device))
        return q, (pos + 1).astype(np.int32)

    def check(q, sl):
        ref, ref_lse = oracle.paged_ref(q, to_host(kc), to_host(vc), table, sl, **scales)
        assert_close(out, ref, dtype)
        assert_lse(lse, ref_lse, dtype)

    side = torch.cuda.Stream()  # capture (and its warm-up) off the default stream
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        q, sl = fill(0)
        step()  # eager first step, which also warms up (workspace, TMA maps, attributes)
        torch.cuda.synchronize()
        check(q, sl)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):
            step()
        for t in range(1, n_steps):
            q, sl = fill(t)
            out.fill_(float("nan"))
            graph.replay()
            torch.cuda.synchronize()
            check(q, sl)
            got = to_host(out).copy(), to_host(lse).copy()
            step()  # the same step eagerly: the append rewrites the same values
            torch.cuda.synchronize()
            np.testing.assert_array_equal(to_host(out).view(np.uint8), got[0].view(np.uint8))
            np.testing.assert_array_equal(to_host(lse), got[1])
    torch.cuda.current_stream().wait_stream(side)


_DRAIN_FIRST = r"""
import torch, cuattn
torch.manual_seed(0)
B, Hq, Hkv, D, ps = 4, 8, 2, 128, 16
lens = torch.tensor([3000, 0, 77, 700], device="cuda", dtype=torch.int32)
nb = (3000 + ps - 1) // ps
kc = torch.randn(B * nb, ps, Hkv, D, device="cuda", dtype=torch.bfloat16)
vc = torch.randn_like(kc)
table = torch.randperm(B * nb, device="cuda", dtype=torch.int32).view(B, nb)
q = torch.randn(B, Hq, D, device="cuda", dtype=torch.bfloat16)
ref = cuattn.paged_attention(q, kc, vc, table, lens, _variant="list=0").float()
# The drained layout first in this process, then the other one on the same kernels.
for v in ("list=1,drain=1", "list=1", "list=1,drain=1", "list=1,tma=0,drain=1", "list=1,tma=0",
          "persistent_ctas=3,drain=1", "persistent_ctas=3"):
    out = cuattn.paged_attention(q, kc, vc, table, lens, _variant=v).float()
    err = float((out - ref).norm() / ref.norm())
    assert err < 1e-2, (v, err)
torch.cuda.synchronize()
print("ok")
"""


@pytest.mark.skipif(gpu_skip_reason() is not None or gpu_framework() != "torch",
                    reason=gpu_skip_reason() or "needs PyTorch with CUDA")
def test_paged_persistent_layouts_in_one_process():
    """A persistent kernel launched with its merge scratch in the ring (drain=1) first in a fresh
    process and past it afterwards (and back): the launcher raises the kernel's shared-memory
    limit to the larger layout and sizes the grid per layout, so neither order fails to launch or
    runs on the other's CTA count."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _DRAIN_FIRST], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
