"""cuattn benchmark: every variant against its peers, timed in the same run.

    python bench/bench.py [--suite prefill,masks,decode,overhead,memory,hopperdims] [--quick] [--out DIR]

Times cuattn and, where PyTorch is installed, its peers (SDPA flash and cuDNN backends,
FlexAttention with the same masks, plain-torch paged gather + SDPA) on the reference shapes
(16k-token prefill, the mask cases at S16384, decode GQA 32/8 D128; `hopperdims`: the default
kernel at D 96 / 192 / 256 / (192, 128) and 128, the Hopper one on sm_90, beside the portable
kernel and the Hopper kernel's longer key tiles (D128, D192, D256)), plus a bf16 GEMM and a
device-to-device copy as same-run ceilings. Every number is the median of CUDA-event timings
after warm-up, on fresh random inputs, with the L2 cache flushed before each timed call. Prints a table with ratios and writes JSON (git sha, device, date) and PNG plots to
bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def git_sha() -> str:
    if os.environ.get("CUATTN_GIT_SHA"):  # set by gpu_suite.sh: the device copy's .git can be stale
        return os.environ["CUATTN_GIT_SHA"]
    try:
        return subprocess.check_output(["git", "rev-parse", "--short=12", "HEAD"], cwd=HERE,
                                       stderr=subprocess.DEVNULL).decode().strip()
    except Exception:
        return os.environ.get("CUATTN_GIT_SHA", "unknown")


def log(msg):
    print(msg, flush=True)


def gpu_session(name, iters=30, flush="write", hint=""):
    """(torch, cuattn, Timer, record) for a benchmark script, the record holding what every result
    file names (sha, device, date, versions, build, SMs, flush); None, after saying why, when
    PyTorch or a usable GPU is missing (the script then exits 77)."""
    try:
        import torch
    except ImportError:
        print(f"{name} needs PyTorch (peers, ceilings, timing){hint}", file=sys.stderr)
        return None
    import cuattn
    if not cuattn.cuda_available() or not torch.cuda.is_available():
        print("no usable GPU", file=sys.stderr)
        return None
    torch.manual_seed(int(time.time()))
    props = torch.cuda.get_device_properties(0)
    res = {"git_sha": git_sha(), "device": props.name, "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "torch": torch.__version__, "cuattn": cuattn.build_info(), "sms": props.multi_processor_count,
           "l2_flush": flush}
    return torch, cuattn, Timer(torch, iters=iters, flush=flush), res


# ---- timing --------------------------------------------------------------------------------------

class Timer:
    """Median of CUDA-event timings of fn(), L2 flushed before every timed call."""

    def __init__(self, torch, warmup=5, iters=30, flush="write"):
        self.torch = torch
        self.warmup, self.iters = warmup, iters
        self.flush_buf = torch.ones(int(256e6) // 4, dtype=torch.int32, device="cuda")
        # "write" empties L2 by zeroing 256 MB (what triton.testing.do_bench does; the default,
        # and the method of the reference peer numbers). It leaves ~50 MB of dirty lines whose
        # write-back is charged to whatever runs next, ~17 us at 3 TB/s: a quarter of a B1 decode
        # call. "read" empties it by reading (lines left clean), closer to a decode step that
        # follows GEMMs; it raises every memory-bound row, peers' included.
        self.flush = (lambda: self.flush_buf.sum()) if flush == "read" else self.flush_buf.zero_

    def __call__(self, fn, iters=None):
        return statistics.median(self.samples(fn, iters))  # ms

    def samples(self, fn, iters=None):
        """Every timed call's milliseconds."""
        torch = self.torch
        iters = iters or self.iters
        for _ in range(self.warmup):
            fn()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for i in range(iters):
            self.flush()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def ceilings(torch, timer):
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = timer(lambda: a @ b, iters=10)
    gemm = 2 * n ** 3 / ms / 1e9
    x = torch.empty(int(1 << 30) // 2, dtype=torch.bfloat16, device="cuda").normal_()
    y = torch.empty_like(x)
    ms = timer(lambda: y.copy_(x), iters=10)
    copy = 2 * x.numel() * 2 / ms / 1e6
    del a, b, x, y
    return {"gemm_bf16_tflops": gemm, "copy_gbps": copy}


# ---- prefill ----------------------------------------------------------------------------------

def attn_flops(B, H, Sq, Sk, D, causal):
    f = 4 * B * H * Sq * Sk * D
    return f / 2 if causal else f


def sdpa_peers(torch, timer, row, flops, qt, kt, vt, causal):
    """SDPA's flash and cuDNN backends on [B, H, S, D] views: *_ms and *_tflops (or *_error) in row."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    F = torch.nn.functional
    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                ms = timer(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal))
            row[f"{name}_ms"], row[f"{name}_tflops"] = ms, flops / ms / 1e9
        except Exception as e:  # backend unavailable for this shape
            row[f"{name}_error"] = str(e).splitlines()[0][:120]


def bench_prefill(torch, cuattn, timer, quick):
    F = torch.nn.functional
    rows = []
    cases = [(128, 16384, False), (128, 16384, True), (128, 8192, False), (128, 8192, True),
             (128, 4096, False), (128, 4096, True), (128, 2048, False), (128, 2048, True),
             (128, 1024, False), (128, 1024, True), (64, 16384, False), (64, 16384, True),
             (64, 4096, False), (64, 1024, True)]
    if quick:
        cases = [(128, 16384, False), (128, 16384, True), (128, 1024, True), (64, 16384, False)]
    for D, S, causal in cases:
        B, H = 16384 // S, 2048 // D
        q = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn_like(q)
        v = torch.randn_like(q)
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # SDPA's [B, H, S, D] views
        out = torch.empty_like(q)
        flops = attn_flops(B, H, S, S, D, causal)
        row = {"case": f"D{D} S{S} {'causal' if causal else 'full'}", "B": B, "H": H, "S": S, "D": D,
               "causal": causal}
        ms = timer(lambda: cuattn.attention(q, k, v, causal=causal, out=out))
        row["cuattn_ms"] = ms
        row["cuattn_tflops"] = flops / ms / 1e9
        sdpa_peers(torch, timer, row, flops, qt, kt, vt, causal)
        ref = F.scaled_dot_product_attention(qt[:1, :2], kt[:1, :2], vt[:1, :2], is_causal=causal)
        got = cuattn.attention(q[:1, :, :2], k[:1, :, :2], v[:1, :, :2], causal=causal).transpose(1, 2)
        row["rel_err_vs_sdpa"] = float((got.float() - ref.float()).norm() / ref.float().norm())
        rows.append(row)
        log(f"  prefill {row['case']:<20} cuattn {row['cuattn_tflops']:6.1f} TFLOP/s  "
            f"flash {row.get('sdpa_flash_tflops', float('nan')):6.1f}  cudnn {row.get('sdpa_cudnn_tflops', float('nan')):6.1f}")
        del q, k, v, qt, kt, vt, out
    return rows


# ---- the Hopper kernel at D 96, 192, 256 and (192, 128) ------------------------------------------

HOPPER_DIMS = [(96, 96), (192, 192), (256, 256), (192, 128), (128, 128)]  # D128: for its alt tile
# Pairs where the Hopper kernel has two key tiles: D128 defaults to 128 x 128 (alt_tile=1: 128 x
# 176), D192 / D256 to the longer 128 x 112 / 128 x 80 (alt_tile=0: 128 x 64).
OTHER_TILE = {(128, 128): "alt_tile=1", (192, 192): "alt_tile=0", (256, 256): "alt_tile=0"}


def hopper_variants(D, Dv):
    """(result key, _variant) timed per hopperdims row: the default, the portable kernel, and the
    other key tile where the pair has two."""
    vs = [("cuattn", ""), ("cuattn_portable", "portable=1")]
    return vs + ([("cuattn_other_tile", OTHER_TILE[(D, Dv)])] if (D, Dv) in OTHER_TILE else [])


def bench_hopperdims(torch, cuattn, timer, quick):
    """16k tokens, hidden 2048 (B = 16384 / S, H = 2048 // D) at S 8k and 16k, causal and not: the
    default kernel (the Hopper one on sm_90) and the portable kernel (_variant "portable=1")
    against SDPA flash and cuDNN. Then a varlen row per pair: 64 causal documents of random
    length 64..4096, against cuDNN on the padded batch and on a nested (jagged) tensor, the faster
    of the two. FLOPs = 2 B H Sq Sk (D + Dv), halved for causal."""
    F = torch.nn.functional
    rows = []
    shapes = [(16384, False), (16384, True), (8192, False), (8192, True)]
    if quick:
        shapes = [(16384, True)]
    for D, Dv in HOPPER_DIMS:
        for S, causal in shapes:
            B, H = 16384 // S, 2048 // D
            q = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn_like(q)
            v = torch.randn(B, S, H, Dv, device="cuda", dtype=torch.bfloat16)
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            out = torch.empty(B, S, H, Dv, device="cuda", dtype=torch.bfloat16)
            flops = 2 * B * H * S * S * (D + Dv) / (2 if causal else 1)
            row = {"case": f"D{D}/{Dv} S{S} {'causal' if causal else 'full'}", "B": B, "H": H, "S": S,
                   "D": D, "Dv": Dv, "causal": causal}
            for key, variant in hopper_variants(D, Dv):
                ms = timer(lambda: cuattn.attention(q, k, v, causal=causal, out=out, _variant=variant))
                row[f"{key}_ms"], row[f"{key}_tflops"] = ms, flops / ms / 1e9
            sdpa_peers(torch, timer, row, flops, qt, kt, vt, causal)
            ref = F.scaled_dot_product_attention(qt[:1, :2], kt[:1, :2], vt[:1, :2], is_causal=causal)
            got = cuattn.attention(q[:1, :, :2], k[:1, :, :2], v[:1, :, :2], causal=causal).transpose(1, 2)
            row["rel_err_vs_sdpa"] = float((got.float() - ref.float()).norm() / ref.float().norm())
            rows.append(row)
            log(f"  hopperdims {row['case']:<22} default {row['cuattn_tflops']:6.1f}  portable {row['cuattn_portable_tflops']:6.1f}"
                f"  flash {row.get('sdpa_flash_tflops', float('nan')):6.1f}  cudnn {row.get('sdpa_cudnn_tflops', float('nan')):6.1f} TFLOP/s")
            del q, k, v, qt, kt, vt, out
        rows.append(bench_hopperdims_varlen(torch, cuattn, timer, D, Dv))
    return rows


def bench_hopperdims_varlen(torch, cuattn, timer, D, Dv, docs=64):
    F = torch.nn.functional
    from torch.nn.attention import SDPBackend, sdpa_kernel
    H = 2048 // D
    lens = torch.randint(64, 4097, (docs,), generator=torch.Generator().manual_seed(D * 1000 + Dv)).tolist()
    total, longest = sum(lens), max(lens)
    cu = torch.tensor([0] + list(np.cumsum(lens)), device="cuda", dtype=torch.int32)
    q = torch.randn(total, H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn_like(q)
    v = torch.randn(total, H, Dv, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(total, H, Dv, device="cuda", dtype=torch.bfloat16)
    flops = sum(2 * H * L * (L + 1) // 2 * (D + Dv) for L in lens)
    row = {"case": f"D{D}/{Dv} varlen {docs} docs 64..4096 causal", "H": H, "D": D, "Dv": Dv, "lens": lens,
           "total_tokens": total}
    for key, variant in hopper_variants(D, Dv):
        ms = timer(lambda: cuattn.attention(q, k, v, causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu,
                                            max_seqlen_q=longest, max_seqlen_k=longest, out=out,
                                            _variant=variant))
        row[f"{key}_ms"], row[f"{key}_tflops"] = ms, flops / ms / 1e9
    # cuDNN on the padded batch [docs, H, longest, D] (padding computed too, the way a padded
    # batch runs) and on a jagged nested tensor; the faster one is the peer.
    forms = {}
    starts = cu.tolist()
    try:
        pad = [torch.zeros(docs, H, longest, d, device="cuda", dtype=torch.bfloat16) for d in (D, D, Dv)]
        for i, L in enumerate(lens):
            for p_, x in zip(pad, (q, k, v)):
                p_[i, :, :L] = x[starts[i]:starts[i] + L].transpose(0, 1)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            forms["padded"] = timer(lambda: F.scaled_dot_product_attention(*pad, is_causal=True))
        del pad
    except Exception as e:
        row["cudnn_padded_error"] = str(e).splitlines()[0][:120]
    try:
        nested = [torch.nested.nested_tensor([x[starts[i]:starts[i] + L] for i, L in enumerate(lens)],
                                             layout=torch.jagged).transpose(1, 2) for x in (q, k, v)]
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            forms["nested"] = timer(lambda: F.scaled_dot_product_attention(*nested, is_causal=True))
        del nested
    except Exception as e:
        row["cudnn_nested_error"] = str(e).splitlines()[0][:120]
    for form, ms in forms.items():
        row[f"sdpa_cudnn_{form}_ms"] = ms
    if forms:
        form = min(forms, key=forms.get)
        row["sdpa_cudnn_form"] = form
        row["sdpa_cudnn_ms"], row["sdpa_cudnn_tflops"] = forms[form], flops / forms[form] / 1e9
    log(f"  hopperdims {row['case']:<40} default {row['cuattn_tflops']:6.1f}  portable {row['cuattn_portable_tflops']:6.1f}"
        f"  cudnn ({row.get('sdpa_cudnn_form', '-')}) {row.get('sdpa_cudnn_tflops', float('nan')):6.1f} TFLOP/s")
    del q, k, v, out
    return row


# ---- masks -------------------------------------------------------------------------------------

def bench_masks(torch, cuattn, timer, quick):
    rows = []
    B, H, D, S = 1, 16, 128, 16384
    W, doc = 1024, 1024
    try:
        from torch.nn.attention.flex_attention import create_block_mask as flex_block_mask
        from torch.nn.attention.flex_attention import flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
    except Exception as e:
        flex = None
        log(f"  FlexAttention unavailable: {e}")
    q = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    out = torch.empty_like(q)
    docs = torch.arange(S, device="cuda") // doc
    cu = torch.arange(0, S + 1, doc, device="cuda", dtype=torch.int32)

    def visible_pairs(kind):
        if kind == "causal":
            return S * (S + 1) // 2
        if kind == "sliding":
            return sum(min(i, W) + 1 for i in range(S))
        return (S // doc) * doc * (doc + 1) // 2

    mods = {
        "causal": lambda b, h, qi, ki: qi >= ki,
        "sliding": lambda b, h, qi, ki: (qi >= ki) & (qi - ki <= W),
        "document": lambda b, h, qi, ki: (docs[qi] == docs[ki]) & (qi >= ki),
    }
    for kind in ("causal", "sliding", "document"):
        flops = 4 * H * D * visible_pairs(kind) * B
        row = {"case": f"{kind} B{B} H{H} S{S} D{D}" + (f" W{W}" if kind == "sliding" else "") +
               (f" doc{doc}" if kind == "document" else "")}
        if kind == "causal":
            fn = lambda: cuattn.attention(q, k, v, causal=True, out=out)  # noqa: E731
        elif kind == "sliding":
            fn = lambda: cuattn.attention(q, k, v, causal=True, window=W, out=out)  # noqa: E731
        else:
            qv, kv_, vv = (x.view(S, H, D) for x in (q, k, v))
            outv = out.view(S, H, D)
            fn = lambda: cuattn.attention(qv, kv_, vv, causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu,  # noqa: E731
                                          max_seqlen_q=doc, max_seqlen_k=doc, out=outv)
        ms = timer(fn)
        row["cuattn_ms"], row["cuattn_tflops"] = ms, flops / ms / 1e9
        if kind == "document":  # the same mask as a cuattn BlockMask
            bm = cuattn.create_block_mask(lambda b, h, qi, ki: (qi // doc == ki // doc) & (qi >= ki),
                                          None, None, S, S, device="cuda")
            ms = timer(lambda: cuattn.attention(q, k, v, block_mask=bm, out=out))
            row["cuattn_blockmask_ms"], row["cuattn_blockmask_tflops"] = ms, flops / ms / 1e9
        if flex is not None:
            try:
                bm = flex_block_mask(mods[kind], None, None, S, S, device="cuda")
                ms = timer(lambda: flex(qt, kt, vt, block_mask=bm))
                row["flex_ms"], row["flex_tflops"] = ms, flops / ms / 1e9
            except Exception as e:
                row["flex_error"] = str(e).splitlines()[0][:160]
        rows.append(row)
        log(f"  mask {row['case']:<36} cuattn {row['cuattn_ms']:.3f} ms  flex {row.get('flex_ms', float('nan')):.3f} ms")

    # Sliding window: time must grow linearly in S at fixed W.
    lin = []
    for S2 in ([16384, 65536] if quick else [16384, 32768, 65536, 131072]):
        q2 = torch.randn(1, S2, H, D, device="cuda", dtype=torch.bfloat16)
        k2, v2 = torch.randn_like(q2), torch.randn_like(q2)
        o2 = torch.empty_like(q2)
        ms = timer(lambda: cuattn.attention(q2, k2, v2, causal=True, window=W, out=o2), iters=10)
        lin.append({"S": S2, "ms": ms, "us_per_1k_tokens": ms * 1e3 / (S2 / 1024)})
        log(f"  sliding W{W} S{S2}: {ms:.3f} ms ({ms * 1e3 / (S2 / 1024):.2f} us per 1k tokens)")
        del q2, k2, v2, o2
    rows.append({"case": "sliding linearity", "points": lin,
                 "max_dev_from_linear": max(abs(p["us_per_1k_tokens"] / lin[0]["us_per_1k_tokens"] - 1) for p in lin)})
    return rows


# ---- memory: causal attention over 128k tokens ----------------------------------------------------

def bench_memory(torch, cuattn, timer, quick):
    S, H, D = (65536 if quick else 131072), 16, 128
    q = torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    out = torch.empty_like(q)
    lse = torch.empty(1, H, S, device="cuda", dtype=torch.float32)
    torch.cuda.synchronize()
    free0 = torch.cuda.mem_get_info()[0]
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.max_memory_allocated()
    t0 = time.perf_counter()
    cuattn.attention(q, k, v, causal=True, out=out, lse_out=lse)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3
    free1 = torch.cuda.mem_get_info()[0]
    extra_torch = torch.cuda.max_memory_allocated() - base
    ms = timer(lambda: cuattn.attention(q, k, v, causal=True, out=out), iters=3)
    row = {"case": f"causal S{S} H{H} D{D}", "ms": ms, "tflops": attn_flops(1, H, S, S, D, True) / ms / 1e9,
           "inputs_bytes": 3 * q.numel() * 2, "extra_bytes_allocator": int(extra_torch),
           "extra_bytes_device": int(max(free0 - free1, 0)), "first_call_wall_ms": wall}
    log(f"  memory causal S{S}: {ms:.1f} ms, extra device memory {row['extra_bytes_device'] / 2**20:.1f} MiB "
        f"(inputs {row['inputs_bytes'] / 2**30:.2f} GiB)")
    del q, k, v, out, lse
    return [row]


# ---- host overhead -------------------------------------------------------------------------------

def host_us_per_call(torch, fn, n=500):
    """Host microseconds per call of fn() in a tight loop: best of 10 rounds of n calls, after 200
    untimed ones. Each round starts on an idle GPU and queues fewer launches than the launch
    queue holds (~1000), so the host never waits for the GPU: this is host time even where the
    GPU work of one call is longer."""
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
        torch.cuda.synchronize()
    return best


def bench_overhead(torch, cuattn, quick):
    rows = []
    n = 500
    q = torch.randn(1, 1, 1, 64, device="cuda", dtype=torch.float16)
    k, v = torch.randn_like(q), torch.randn_like(q)
    out = torch.empty_like(q)
    variants = [("torch, out=", lambda: cuattn.attention(q, k, v, out=out)),
                ("torch", lambda: cuattn.attention(q, k, v))]
    try:
        import cupy as cp
        qc = cp.asarray(q)
        kc, vc = cp.asarray(k), cp.asarray(v)
        oc = cp.empty_like(qc)
        variants += [("cupy, out=", lambda: cuattn.attention(qc, kc, vc, out=oc)),
                     ("cupy", lambda: cuattn.attention(qc, kc, vc))]
    except Exception as e:
        log(f"  cupy unavailable: {e}")
    # References on the same tensors, same loop: PyTorch's own attention and a trivial op.
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    F = torch.nn.functional
    variants += [("reference: torch SDPA", lambda: F.scaled_dot_product_attention(qt, kt, vt)),
                 ("reference: torch.add out=", lambda: torch.add(q, k, out=out))]
    for name, fn in variants:
        best = host_us_per_call(torch, fn, n)
        rows.append({"case": f"host overhead ({name})", "us_per_call": best})
        log(f"  host overhead {name:<26} {best:.2f} us/call")
    return rows


# ---- decode ---------------------------------------------------------------------------------------

def bench_decode(torch, cuattn, timer, quick):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    F = torch.nn.functional
    rows = []
    Hq, Hkv, D = 32, 8, 128
    cases = [(1, 32768, 16), (16, 8192, 16), (64, 4096, 16), (64, 4096, 128), (256, 2048, 16)]
    if quick:
        cases = [(1, 32768, 16), (64, 4096, 16)]
    for B, L, ps in cases:
        nb_per = L // ps
        nblocks = B * nb_per
        kc = torch.randn(nblocks, ps, Hkv, D, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        table = torch.randperm(nblocks, device="cuda", dtype=torch.int32).view(B, nb_per)
        lens = torch.full((B,), L, device="cuda", dtype=torch.int32)
        q = torch.randn(B, Hq, D, device="cuda", dtype=torch.bfloat16)
        out = torch.empty_like(q)
        nbytes = 2 * B * L * Hkv * D * 2
        row = {"case": f"B{B} L{L} page {ps}", "B": B, "L": L, "page": ps, "bytes": nbytes}
        plan = cuattn.plan_decode(lens.cpu().numpy(), num_q_heads=Hq, num_kv_heads=Hkv, head_dim=D,
                                  page_size=ps, device="cuda")
        # Without and with the plan, alternating over three rounds (pooled median): the same
        # kernel has read 15 % slower in one timer call than in the next on this machine.
        pooled = {"noplan": [], "plan": []}
        for _ in range(3):
            pooled["noplan"] += timer.samples(lambda: cuattn.paged_attention(q, kc, vc, table, lens, out=out))
            pooled["plan"] += timer.samples(lambda: cuattn.paged_attention(q, kc, vc, table, lens, plan=plan, out=out))
        for name, xs in pooled.items():
            ms = statistics.median(xs)
            row[f"cuattn_{name}_ms"], row[f"cuattn_{name}_gbps"] = ms, nbytes / ms / 1e6
            row[f"cuattn_{name}_spread_ms"] = [min(xs), max(xs)]
        row["plan_splits"] = int(plan.max_splits)
        # The same cache in fp8 e4m3 (scales 1): half the bytes, so ideally half the time.
        try:
            k8, v8 = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
            out8 = torch.empty_like(q)
            ms = timer(lambda: cuattn.paged_attention(q, k8, v8, table, lens, k_scale=1.0, v_scale=1.0, out=out8))
            row["cuattn_fp8_ms"], row["cuattn_fp8_gbps"] = ms, nbytes / 2 / ms / 1e6
            row["fp8_speedup"] = row["cuattn_noplan_ms"] / ms
            del k8, v8
        except Exception as e:
            row["fp8_error"] = str(e).splitlines()[0][:120]
        # Peers on the same KV made contiguous [B, Hkv, L, D].
        kd = kc[table.long()].view(B, L, Hkv, D).transpose(1, 2).contiguous()
        vd = vc[table.long()].view(B, L, Hkv, D).transpose(1, 2).contiguous()
        q4 = q.view(B, Hq, 1, D)
        for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    ms = timer(lambda: F.scaled_dot_product_attention(q4, kd, vd, enable_gqa=True))
                row[f"{name}_ms"], row[f"{name}_gbps"] = ms, nbytes / ms / 1e6
            except Exception as e:
                row[f"{name}_error"] = str(e).splitlines()[0][:120]
        ref = F.scaled_dot_product_attention(q4.float(), kd.float(), vd.float(), enable_gqa=True).view(B, Hq, D)
        row["rel_err"] = float((out.float() - ref).norm() / ref.norm())

        def gather():
            kk = kc[table.long()].view(B, L, Hkv, D).transpose(1, 2)
            vv = vc[table.long()].view(B, L, Hkv, D).transpose(1, 2)
            return F.scaled_dot_product_attention(q4, kk, vv, enable_gqa=True)
        try:
            ms = timer(gather)
            row["gather_sdpa_ms"], row["gather_sdpa_gbps"] = ms, nbytes / ms / 1e6
        except Exception as e:
            row["gather_error"] = str(e).splitlines()[0][:120]
        rows.append(row)
        log(f"  decode {row['case']:<20} noplan {row['cuattn_noplan_gbps']:7.0f} GB/s  plan {row['cuattn_plan_gbps']:7.0f}"
            f"  cudnn {row.get('sdpa_cudnn_gbps', float('nan')):7.0f}  gather {row.get('gather_sdpa_gbps', float('nan')):6.0f}"
            f"  err {row['rel_err']:.1e}")
        del kc, vc, kd, vd, plan
        torch.cuda.empty_cache()
    return rows


# ---- report ----------------------------------------------------------------------------------------

def table(res):
    lines = []
    c = res["ceilings"]
    lines.append(f"device {res['device']}  sha {res['git_sha']}  {res['date']}")
    lines.append(f"ceilings: bf16 GEMM {c['gemm_bf16_tflops']:.0f} TFLOP/s, copy {c['copy_gbps']:.0f} GB/s")
    for r in res.get("prefill", []):
        f, n = r.get("sdpa_flash_tflops"), r.get("sdpa_cudnn_tflops")
        lines.append(f"prefill {r['case']:<18} {r['cuattn_tflops']:6.1f} TFLOP/s  x{r['cuattn_tflops'] / f if f else float('nan'):.2f} flash"
                     f"  x{r['cuattn_tflops'] / n if n else float('nan'):.2f} cudnn  {r['cuattn_tflops'] / c['gemm_bf16_tflops']:.0%} of GEMM")
    for r in res.get("hopperdims", []):
        n = r.get("sdpa_cudnn_tflops")
        lines.append(f"hopperdims {r['case']:<40} {r['cuattn_tflops']:6.1f} TFLOP/s"
                     f"  x{r['cuattn_tflops'] / n if n else float('nan'):.2f} cudnn"
                     f"  x{r['cuattn_tflops'] / r['cuattn_portable_tflops']:.2f} portable kernel"
                     + (f"  other tile {r['cuattn_other_tile_tflops']:6.1f} (x{r['cuattn_other_tile_tflops'] / n if n else float('nan'):.2f} cudnn)"
                        if "cuattn_other_tile_tflops" in r else ""))
    for r in res.get("masks", []):
        if "points" in r:
            lines.append(f"sliding linearity: max deviation {r['max_dev_from_linear']:.1%}")
            continue
        fl = r.get("flex_ms")
        lines.append(f"mask {r['case']:<38} {r['cuattn_ms']:.3f} ms  x{fl / r['cuattn_ms'] if fl else float('nan'):.2f} vs flex")
    for r in res.get("memory", []):
        lines.append(f"memory {r['case']}: extra {r['extra_bytes_device'] / 2**20:.1f} MiB, {r['ms']:.1f} ms")
    for r in res.get("overhead", []):
        lines.append(f"{r['case']:<30} {r['us_per_call']:.2f} us")
    for r in res.get("decode", []):
        g = r.get("gather_sdpa_gbps")
        lines.append(f"decode {r['case']:<18} noplan {r['cuattn_noplan_gbps']:5.0f} GB/s  plan {r['cuattn_plan_gbps']:5.0f}"
                     f"  ({r['cuattn_plan_gbps'] / c['copy_gbps']:.0%} of copy)  x{r['cuattn_noplan_gbps'] / g if g else float('nan'):.2f} gather"
                     f"  cudnn {r.get('sdpa_cudnn_gbps', float('nan')):.0f}"
                     f"  fp8 {r.get('cuattn_fp8_gbps', float('nan')):.0f} GB/s (x{r.get('fp8_speedup', float('nan')):.2f} time)")
    return "\n".join(lines)


def plots(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    pre = res.get("prefill", [])
    dec = res.get("decode", [])
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    if pre:
        labels = [r["case"] for r in pre]
        x = np.arange(len(labels))
        for i, (key, name) in enumerate((("cuattn_tflops", "cuattn"), ("sdpa_flash_tflops", "SDPA flash"),
                                         ("sdpa_cudnn_tflops", "SDPA cuDNN"))):
            axes[0].bar(x + (i - 1) * 0.27, [r.get(key, 0) or 0 for r in pre], 0.27, label=name)
        axes[0].set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        axes[0].set_ylabel("TFLOP/s")
        axes[0].set_title("prefill (bf16, 16k tokens)")
        axes[0].legend()
    if dec:
        labels = [r["case"] for r in dec]
        x = np.arange(len(labels))
        for i, (key, name) in enumerate((("cuattn_noplan_gbps", "cuattn"), ("cuattn_plan_gbps", "cuattn+plan"),
                                         ("sdpa_cudnn_gbps", "SDPA cuDNN (contig.)"), ("gather_sdpa_gbps", "gather+SDPA"))):
            axes[1].bar(x + (i - 1.5) * 0.2, [r.get(key, 0) or 0 for r in dec], 0.2, label=name)
        axes[1].axhline(res["ceilings"]["copy_gbps"], color="k", ls="--", lw=1, label="copy")
        axes[1].set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        axes[1].set_ylabel("GB/s")
        axes[1].set_title("paged decode (GQA 32/8, D128, bf16)")
        axes[1].legend(fontsize=7)
    fig.suptitle(f"cuattn {res['git_sha']} on {res['device']} ({res['date']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="prefill,masks,memory,overhead,decode")
    ap.add_argument("--quick", action="store_true", help="fewer shapes")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--flush", choices=("read", "write"), default="write",
                    help="how L2 is emptied before each timed call (see Timer)")
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench.py needs PyTorch (for the peers and the ceilings)", file=sys.stderr)
        return 77
    import cuattn
    if not cuattn.cuda_available() or not torch.cuda.is_available():
        print("no usable GPU", file=sys.stderr)
        return 77
    torch.manual_seed(int(time.time()))
    timer = Timer(torch, iters=a.iters, flush=a.flush)
    props = torch.cuda.get_device_properties(0)
    res = {"git_sha": git_sha(), "device": props.name, "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "torch": torch.__version__, "cuattn": cuattn.build_info(), "sms": props.multi_processor_count,
           "l2_flush": a.flush}
    log(f"cuattn bench on {props.name} (sha {res['git_sha']})")
    res["ceilings"] = ceilings(torch, timer)
    log(f"  ceilings: GEMM {res['ceilings']['gemm_bf16_tflops']:.0f} TFLOP/s, copy {res['ceilings']['copy_gbps']:.0f} GB/s")
    suites = {"prefill": lambda: bench_prefill(torch, cuattn, timer, a.quick),
              "masks": lambda: bench_masks(torch, cuattn, timer, a.quick),
              "memory": lambda: bench_memory(torch, cuattn, timer, a.quick),
              "overhead": lambda: bench_overhead(torch, cuattn, a.quick),
              "decode": lambda: bench_decode(torch, cuattn, timer, a.quick),
              "hopperdims": lambda: bench_hopperdims(torch, cuattn, timer, a.quick)}
    for name in a.suite.split(","):
        try:
            res[name] = suites[name]()
        except Exception:
            res[f"{name}_error"] = traceback.format_exc()
            log(f"  suite {name} failed:\n{traceback.format_exc()}")
    os.makedirs(a.out, exist_ok=True)
    stem = f"{res['date'][:10]}_{res['git_sha']}_{props.name.replace(' ', '_')}"
    if a.suite != ap.get_default("suite"):  # a partial run names its suites, so runs never overwrite
        stem += "_" + a.suite.replace(",", "-")
    with open(os.path.join(a.out, stem + ".json"), "w") as f:
        json.dump(res, f, indent=1, default=float)
    plots(res, os.path.join(a.out, stem + ".png"))
    log("")
    log(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
