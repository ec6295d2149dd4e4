"""Multi-head latent attention: cuattn.mla_attention against the direct per-head projection, and
cuattn.mla_decode over a paged latent cache against dense attention."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (FP8, RTOL, MAXABS, assert_close, assert_empty_rows_zero, assert_framework,
                      assert_lse, device_dtype_params, f64, gpu_framework, make_input, poisoned,
                      randn, to_device, to_host)


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
    MlaCase(2, 3, 4, 64, 64, 64, False, sk=0),  # no key at all: zeros
]
METHODS = ["auto", "materialise", "absorb", "per_pair"]


def _gpu_flash_has(d, dv):
    """Whether the GPU flash kernel (the materialised order's attention) runs d / dv: some built
    (D, Dv) pair (D, D), or (192, 128) with 192 built, at least as large."""
    dims = cuattn.build_info()["head_dims"]
    pairs = [(h, h) for h in dims] + ([(192, 128)] if 192 in dims else [])
    return any(kd >= d and kv >= dv for kd, kv in pairs)


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
    if device != "cpu" and method == "materialise" and not _gpu_flash_has(case.d, case.dv):
        with pytest.raises(ValueError, match="flash kernel"):
            cuattn.mla_attention(dq, *(to_device(x, device) for x in (kl, vl, kp, vp)),
                                 causal=case.causal, scale=case.scale, out=out, _method=method)
        return
    res = cuattn.mla_attention(dq, *(to_device(x, device) for x in (kl, vl, kp, vp)),
                               causal=case.causal, scale=case.scale, out=out, _method=method)
    assert res is out
    ref, _ = oracle.mla_ref(q, kl, vl, kp, vp, causal=case.causal, scale=case.scale)
    assert_framework(out, dq)
    assert tuple(out.shape) == (case.b, case.h, case.s, case.dv)
    assert_close(out, ref, dtype, **mla_tol(dtype))
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("view", ["heads", "swap"])
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32",)))
def test_mla_attention_views(rng, device, dtype, view, method):
    """Strided inputs: q every other head of a larger array or a transposed [B, S, H, D] one,
    the latents a window of longer sequences."""
    if device == "cpu" and method == "per_pair":
        pytest.skip("per_pair is a GPU baseline (the CPU runs absorb for it)")
    b, h, sq, sk, lat, d = 2, 3, 5, 40, 64, 64
    dq, q = make_input(rng, (b, h, sq, d), dtype, device, view, head_axis=1, seq_axis=2)
    dkl, kl = make_input(rng, (b, sk, lat), dtype, device, "seq", seq_axis=1)
    dvl, vl = make_input(rng, (b, sk, lat), dtype, device, "seq", seq_axis=1)
    kp = randn(rng, (h, lat, d), dtype, scale=1 / math.sqrt(lat))
    vp = randn(rng, (h, lat, d), dtype, scale=1 / math.sqrt(lat))
    out = cuattn.mla_attention(dq, dkl, dvl, to_device(kp, device), to_device(vp, device),
                               _method=method)
    ref, _ = oracle.mla_ref(q, kl, vl, kp, vp, causal=True)
    assert_close(out, ref, dtype, **mla_tol(dtype))


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_mla_attention_gpu_dims(rng, device, dtype):
    """The GPU GEMMs read 16-byte rows: a latent width that is not a multiple of 8 is refused
    with a ValueError naming the dims, never a crash."""
    q, kl, vl, kp, vp = mla_inputs(rng, MlaCase(1, 2, 3, 20, 64, 64, True), dtype)
    with pytest.raises(ValueError, match="8"):
        cuattn.mla_attention(*(to_device(x, device) for x in (q, kl, vl, kp, vp)))


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
    gpu_only: bool = False  # long: for the GPU's split-KV path (seconds on the CPU backend)

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
    DecodeCase((33, 1), 1, 1),                      # pages of one slot, one head
    DecodeCase((700, 5), 256, 16, sq=4),
    DecodeCase((129, 50, 0), 7, 128),               # an odd page size, 128 heads (2 row tiles)
    DecodeCase((3, 90), 16, 16, sq=8),              # Sq > seq_len: early tokens see nothing
    DecodeCase((2000,), 48, 128, sq=2, gpu_only=True),  # several splits
    DecodeCase((9000, 3, 70, 0, 5, 1), 64, 16, gpu_only=True),  # skewed: one long sequence split widely
    DecodeCase((3000, 2500), 16, 24, sq=3, gpu_only=True),  # 72 rows: five units, the last partial
    DecodeCase((70, 513, 2), 8, 40, sq=2),          # pages of 8; 80 rows: two 64-row units
    DecodeCase((1000, 33, 260), 32, 128, causal=False),  # pages of 32, two 64-row units
    DecodeCase((300, 5000, 64), 128, 16, sq=3, gpu_only=True),  # pages of 128, split
    DecodeCase((200, 3), 64, 1),                    # one query row (a 16-row narrow unit)
    DecodeCase((5000, 77, 1030), 32, 32, gpu_only=True),  # 32 rows: one 32-row narrow unit, split
    DecodeCase((4100, 64, 0, 2), 8, 16, sq=2, gpu_only=True),  # 32 rows, causal Sq 2, pages of 8
]

# The GPU's decode kernels (internal _variant): the default (on sm_90 an sm_90a kernel where it
# can run the call, else by shape), the work list's portable kernel forced, the per-sequence split
# kernel forced, the sm_90a kernels forced (on sm_90 GPUs; a ValueError for caches they do not
# take, and for narrow=1 above 32 query rows); the CPU has one path.
VARIANTS = ["", "list=1", "list=0", "hopper=1", "narrow=1"]


def skip_variant_on_cpu(device, variant):
    if device == "cpu" and variant:
        pytest.skip("the CPU backend has one path")


def hopper_skip_reason():
    """Why the sm_90a kernel cannot run on this GPU and build (None: it can)."""
    cc = tuple(cuattn.device_info().get("compute_capability", (0, 0)))
    if cc != (9, 0):
        return f"the sm_90a MLA kernel needs an sm_90 GPU (this one is sm_{cc[0]}{cc[1]})"
    archs = str(cuattn.build_info().get("archs", ""))
    if "90a" not in archs:
        return f"this build has no sm_90a code (archs {archs})"
    return None


def hopper_takes(page, kv="16"):
    """Does the sm_90a kernel take this cache (16-bit, pages of 8, 16, 32 or a multiple of 64)?"""
    return kv == "16" and (page % 64 == 0 or page in (8, 16, 32))


def forced_kernel_refuses(variant, page, kv="16", rows=1):
    """hopper=1 / narrow=1 on a GPU: skipped where the GPU or the build has no sm_90a kernel; True
    where the kernel exists but does not take this call (a cache it does not take, or narrow=1
    above 32 query rows): the call must then raise a ValueError naming the variant."""
    if variant not in ("hopper=1", "narrow=1"):
        return False
    reason = hopper_skip_reason()
    if reason:
        pytest.skip(reason)
    return not hopper_takes(page, kv) or (variant == "narrow=1" and rows > 32)


def build_decode(rng, case, dtype, kv="16"):
    """A paged latent cache in random page order (unused table entries hold junk ids) and q.
    kv: '16' (q's dtype) or 'fp8' (e4m3 values, dequantised with a scale by the caller)."""
    bsz = len(case.lens)
    npages = [-(-n // case.page) for n in case.lens]
    num_blocks = sum(npages) + 2
    perm = list(rng.permutation(num_blocks))
    max_blocks = max(npages) + 1
    table = np.full((bsz, max_blocks), -1, np.int32)
    for b in range(bsz):
        table[b, :npages[b]] = [perm.pop() for _ in range(npages[b])]
        table[b, npages[b]:] = rng.choice([-1, num_blocks, 10**6], size=max_blocks - npages[b])
    cshape = (num_blocks, case.page, KV_DIM) if case.squeeze else (num_blocks, case.page, 1, KV_DIM)
    if kv == "fp8":
        cache = (rng.standard_normal(cshape) * 3).astype(FP8)
    else:
        cache = randn(rng, cshape, dtype)
    q = randn(rng, (bsz, case.sq, case.hq, KV_DIM), dtype)
    return q, cache, table, np.asarray(case.lens, np.int32)


SCALE = 1 / math.sqrt(192) * 0.8


def skip_long_on_cpu(device, case):
    if device == "cpu" and case.gpu_only:
        pytest.skip("a long case for the GPU's split-KV path; the CPU backend runs the short ones")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("poison", [False, True])
@pytest.mark.parametrize("case", DECODE_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_mla_decode(rng, device, dtype, case, poison, variant):
    skip_long_on_cpu(device, case)
    skip_variant_on_cpu(device, variant)
    q, cache, table, sl = build_decode(rng, case, dtype)
    bsz = len(case.lens)
    extra = {}
    if poison:
        extra = dict(out=poisoned((bsz, case.sq, case.hq, DV), dtype, device),
                     lse_out=poisoned((bsz, case.hq, case.sq), "float32", device))
    dq = to_device(q, device)
    call = lambda: cuattn.mla_decode(dq, to_device(cache, device), to_device(table, device),  # noqa: E731
                                     to_device(sl, device), scale=SCALE, causal=case.causal, _variant=variant,
                                     **extra)
    if forced_kernel_refuses(variant, case.page, rows=case.hq * case.sq):
        with pytest.raises(ValueError, match=variant):
            call()
        return
    out, lse = call()
    if poison:
        assert out is extra["out"] and lse is extra["lse_out"]
    ref, ref_lse = oracle.mla_decode_ref(q, cache, table, sl, scale=SCALE, causal=case.causal)
    assert_framework(out, dq)
    assert tuple(out.shape) == (bsz, case.sq, case.hq, DV)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


FP8_CASES = [DecodeCase((1, 65, 300), 64, 16), DecodeCase((40, 0, 9), 16, 8, sq=3),
             DecodeCase((1500, 7), 32, 128, gpu_only=True),
             DecodeCase((9000, 3, 70, 0, 5, 1), 64, 16, gpu_only=True)]



@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kv", ["fp8", "u8"])
@pytest.mark.parametrize("scale_kind", ["float", "device"])
@pytest.mark.parametrize("case", FP8_CASES, ids=str)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32",)))
def test_mla_decode_fp8(rng, device, dtype, case, scale_kind, kv, variant):
    """fp8 e4m3 latent caches (float8_e4m3fn, or uint8 + kv_cache_dtype='fp8_e4m3'), dequantised
    with kv_scale as a float or a float32 device scalar."""
    skip_long_on_cpu(device, case)
    skip_variant_on_cpu(device, variant)
    if device == "cuda" and kv == "fp8" and gpu_framework() == "cupy":
        pytest.skip("CuPy cannot export float8_e4m3fn through DLPack (uint8 case covers it)")
    q, cache, table, sl = build_decode(rng, case, dtype, kv="fp8")
    ks = 0.2
    kv_scale = ks if scale_kind == "float" else to_device(np.full((), ks, np.float32), device)
    dcache = to_device(cache.view(np.uint8) if kv == "u8" else cache, device)
    extra = dict(kv_cache_dtype="fp8_e4m3") if kv == "u8" else {}
    call = lambda: cuattn.mla_decode(to_device(q, device), dcache, to_device(table, device),  # noqa: E731
                                     to_device(sl, device), scale=SCALE, kv_scale=kv_scale, _variant=variant,
                                     **extra)
    if forced_kernel_refuses(variant, case.page, kv="fp8", rows=case.hq * case.sq):
        with pytest.raises(ValueError, match=variant):
            call()
        return
    out, lse = call()
    ref, ref_lse = oracle.mla_decode_ref(q, f64(cache) * ks, table, sl, scale=SCALE)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert_empty_rows_zero(out, ref)


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_mla_decode_runs_the_sm90_kernel(rng, device, dtype):
    """The default and hopper=1 launch the 64-row sm_90a kernel, narrow=1 the narrow one (32 query
    rows here), with a plan and without; list=1 neither. Read from the kernel names PyTorch's
    profiler records."""
    if gpu_framework() != "torch":
        pytest.skip("kernel names come from PyTorch's profiler; PyTorch with CUDA is not available")
    reason = hopper_skip_reason()
    if reason:
        pytest.skip(reason)
    import torch

    case = DecodeCase((300, 17, 1000), 64, 16, sq=2)
    q, cache, table, sl = build_decode(rng, case, dtype)
    args = [to_device(x, device) for x in (q, cache, table, sl)]
    plan = cuattn.plan_decode(args[3], num_q_heads=case.hq, num_kv_heads=1, head_dim=KV_DIM,
                              head_dim_v=DV, page_size=case.page, q_len=case.sq, device=device)

    def kernels(variant, p=None):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            out, _ = cuattn.mla_decode(*args, scale=SCALE, plan=p, _variant=variant)
            torch.cuda.synchronize()
        return [e.name for e in prof.events() if "mla_" in e.name], out

    ref, _ = oracle.mla_decode_ref(q, cache, table, sl, scale=SCALE)
    # (32 query rows: the narrow kernel's 32-row instantiation, "...narrow_kernel<T, 32>".)
    for variant, kernel in (("", "mla_decode_sm90_kernel"), ("hopper=1", "mla_decode_sm90_kernel"),
                            ("narrow=1", "sm90_narrow_kernel")):
        for p in (None, plan):
            names, out = kernels(variant, p)
            assert any(kernel in n and (variant != "narrow=1" or "32>" in n) for n in names), (variant, names)
            assert_close(out, ref, dtype)
    names, _ = kernels("list=1")
    assert names and not any("sm90" in n for n in names), names


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("bfloat16",)))
def test_mla_decode_with_plan(rng, device, dtype):
    """With plan= the splits and the workspace are the plan's; the same results on every call."""
    case = DecodeCase((5, 1200, 64), 64, 8, sq=2)
    q, cache, table, sl = build_decode(rng, case, dtype)
    args = (to_device(q, device), to_device(cache, device), to_device(table, device),
            to_device(sl, device))
    plan = cuattn.plan_decode(args[3], num_q_heads=case.hq, num_kv_heads=1, head_dim=KV_DIM,
                              head_dim_v=DV, page_size=case.page, q_len=case.sq, device=device)
    ref, ref_lse = oracle.mla_decode_ref(q, cache, table, sl, scale=0.1)
    first = None
    for _ in range(2):
        out, lse = cuattn.mla_decode(*args, scale=0.1, plan=plan)
        assert_close(out, ref, dtype)
        assert_lse(lse, ref_lse, dtype)
        if first is None:
            first = to_host(out).copy()
        else:
            assert np.array_equal(f64(first), f64(out))


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_mla_decode_cuda_graph(rng, device, dtype):
    """With plan= a call does no host work, allocation or sync: it can be captured and replayed."""
    if gpu_framework() != "torch":
        pytest.skip("CUDA-graph capture is exercised through torch.cuda.graph")
    import torch

    case = DecodeCase((300, 17), 16, 16)
    q, cache, table, sl = build_decode(rng, case, dtype)
    args = [to_device(x, device) for x in (q, cache, table, sl)]
    plan = cuattn.plan_decode(args[3], num_q_heads=case.hq, num_kv_heads=1, head_dim=KV_DIM,
                              head_dim_v=DV, page_size=case.page, device=device)
    out = poisoned((2, 1, case.hq, DV), dtype, device)
    lse = poisoned((2, case.hq, 1), "float32", device)
    cuattn.mla_decode(*args, scale=0.1, plan=plan, out=out, lse_out=lse)  # warm-up (attributes)
    torch.cuda.synchronize()
    out.fill_(float("nan"))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):  # q's framework's current stream: the capturing one
        cuattn.mla_decode(*args, scale=0.1, plan=plan, out=out, lse_out=lse)
    g.replay()
    torch.cuda.synchronize()
    ref, ref_lse = oracle.mla_decode_ref(q, cache, table, sl, scale=0.1)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)


@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=()))
def test_mla_decode_deterministic(rng, device, dtype):
    """The work list splits the same lengths the same way and merges splits in a fixed order:
    repeated calls give the same bits, with and without a plan."""
    case = DecodeCase((7000, 300, 1, 4096), 64, 16, sq=2)
    q, cache, table, sl = build_decode(rng, case, dtype)
    args = [to_device(x, device) for x in (q, cache, table, sl)]
    plan = cuattn.plan_decode(args[3], num_q_heads=case.hq, num_kv_heads=1, head_dim=KV_DIM,
                              head_dim_v=DV, page_size=case.page, q_len=case.sq, device=device)
    runs = [cuattn.mla_decode(*args, scale=SCALE, plan=p) for p in (None, None, plan, plan)]
    for (o1, l1), (o2, l2) in (runs[0:2], runs[2:4]):
        assert np.array_equal(f64(o1), f64(o2)) and np.array_equal(f64(l1), f64(l2))
    ref, _ = oracle.mla_decode_ref(q, cache, table, sl, scale=SCALE)
    assert_close(runs[0][0], ref, dtype)
    assert_close(runs[2][0], ref, dtype)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("device,dtype", device_dtype_params(cpu=("float32",)))
def test_mla_decode_table_without_columns(rng, device, dtype, variant):
    """A block table of no columns (every sequence empty): every kernel writes zeros and LSE -inf
    over poisoned outputs and reads no table entry (compute-sanitizer runs the GPU cases)."""
    skip_variant_on_cpu(device, variant)
    bsz, hq = 3, 16
    q = randn(rng, (bsz, 1, hq, KV_DIM), dtype)
    cache = randn(rng, (2, 64, KV_DIM), dtype)
    table, sl = np.zeros((bsz, 0), np.int32), np.zeros(bsz, np.int32)
    assert not forced_kernel_refuses(variant, 64, rows=hq)  # (skips where no sm_90a kernel runs)
    out = poisoned((bsz, 1, hq, DV), dtype, device)
    lse = poisoned((bsz, hq, 1), "float32", device)
    cuattn.mla_decode(to_device(q, device), to_device(cache, device), to_device(table, device),
                      to_device(sl, device), scale=SCALE, out=out, lse_out=lse, _variant=variant)
    assert np.all(f64(out) == 0)
    assert np.all(f64(lse) == -np.inf)


def test_mla_decode_errors(rng):
    q, cache, table, sl = build_decode(rng, DecodeCase((5,), 16, 2), "float32")
    with pytest.raises(ValueError, match="scale"):
        cuattn.mla_decode(q, cache, table, sl, scale=0.0)
    with pytest.raises(ValueError, match="kv_scale"):
        cuattn.mla_decode(q, cache, table, sl, scale=0.1, kv_scale=-1.0)
    with pytest.raises(ValueError, match="kv_cache"):
        cuattn.mla_decode(q, cache[:, :, None, None], table, sl, scale=0.1)
