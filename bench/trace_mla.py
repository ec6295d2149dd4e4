"""Where an mla_decode call's time goes: the kernels it launches, their durations and the gaps.

    python bench/trace_mla.py [--flashmla DIR] [--rows NAMES] [--calls 9]

Each row is run as mla_bench.py times it (the L2 flushed by zeroing 256 MB, then the call), under
torch.profiler; for every call the kernels after the flush are listed with the gap before each
(negative: it started before the previous one ended, a programmatic dependent launch) and its
duration, medians over --calls calls (the first dropped). Beside cuattn (no plan, with a plan,
and the narrow sm_90a kernel where Hq <= 32): FlashMLA's dense decode (--flashmla DIR, as
mla_bench.py takes it) and a kernel that only reads the same bytes under the same flush (CuPy),
the row's physical floor. "host" is the mean launch cost of one call (50 calls, no flush); the
host is not the limit while it stays under the flush's duration.

Rows: b16 (B16 L8192 Hq16), b64 (B64 L4096 Hq16), b128 (B128 L8192 Hq16), skew (1 x 65536 +
63 x 512, Hq16), b1 (B1 L32768 Hq128); bf16, page 64, Sq 1. Needs PyTorch, CuPy and a GPU.
"""
import argparse
import os
import statistics
import sys
import time

ROWS = ("b16", "b64", "b128", "skew", "b1")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flashmla", metavar="DIR", help="an assembled FlashMLA folder (see mla_bench.py)")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--calls", type=int, default=9, help="profiled calls a row (default 9)")
    a = ap.parse_args(argv)
    rows = [r for r in a.rows.split(",") if r]
    bad = [r for r in rows if r not in ROWS]
    if bad or a.calls < 2:
        ap.error(f"unknown rows {bad}" if bad else "--calls must be at least 2")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench import gpu_session
    from decode_targets import READ_SRC
    from mla_bench import DV, SCALE, SKEW, Gpu, load_flashmla, uniform
    problems = {"b16": uniform(16, 8192, 16), "b64": uniform(64, 4096, 16), "b128": uniform(128, 8192, 16),
                "skew": SKEW, "b1": uniform(1, 32768, 128)}
    session = gpu_session("trace_mla.py")
    if session is None:
        return 77
    torch, cuattn, _, res = session
    try:
        import cupy
    except ImportError:
        print("trace_mla.py needs CuPy (the pure-read kernel)", file=sys.stderr)
        return 77
    read_kernel = cupy.RawKernel(READ_SRC, "read_all")
    flashmla = None
    if a.flashmla:
        flashmla, info = load_flashmla(a.flashmla)
        print(f"FlashMLA: {info['status']}")
    flush = torch.ones(int(256e6) // 4, dtype=torch.int32, device="cuda")
    sms = res["sms"]
    print(f"{res['device']}, sha {res['git_sha']}; times in us (medians over {a.calls - 1} calls)")

    def trace(name, fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(50):
            fn()
        host = (time.perf_counter() - t0) / 50 * 1e6
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(a.calls):
                flush.zero_()
                fn()
            torch.cuda.synchronize()
        kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                         if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start)
        calls, cur = [], None
        for start, end, kname in kernels:  # a call: the flush's fill kernel, then what follows it
            if "fill" in kname.lower():
                cur = [(start, end, "flush")]
                calls.append(cur)
            elif cur is not None:
                cur.append((start, end, kname))
        calls = calls[1:]
        parts = []
        for k in range(1, max(len(c) for c in calls)):
            have = [c for c in calls if len(c) > k]
            gap = statistics.median(c[k][0] - c[k - 1][1] for c in have)
            dur = statistics.median(c[k][1] - c[k][0] for c in have)
            parts.append(f"{short(have[0][k][2])}: gap {gap:.1f}, {dur:.1f}")
        total = statistics.median(c[-1][1] - c[0][1] for c in calls)
        print(f"  {name:34s} host {host:5.1f} | flush to end {total:6.1f} | " + " | ".join(parts), flush=True)

    inputs = Gpu(torch, cuattn, None, None, "", None).inputs  # mla_bench's random q, cache, table
    for r in rows:
        c = problems[r]
        lens, hq = c.lens, c.hq
        q, cache, table, seq_lens = inputs(c)
        out = torch.empty(len(lens), 1, hq, DV, device="cuda", dtype=torch.bfloat16)
        lse = torch.empty(len(lens), hq, 1, device="cuda", dtype=torch.float32)
        plan = cuattn.plan_decode(seq_lens, num_q_heads=hq, num_kv_heads=1, head_dim=cache.shape[-1], head_dim_v=DV,
                                  page_size=c.page, device="cuda")
        print(f"{r}: {len(lens)} sequences, {sum(lens)} keys, Hq {hq}")
        for v in ("", "narrow=1") if hq <= 32 else ("",):
            for p in (None, plan):
                trace(f"cuattn {v or 'default'}{' plan' if p else ''}",
                      lambda v=v, p=p: cuattn.mla_decode(q, cache, table, seq_lens, scale=SCALE, plan=p, out=out,
                                                         lse_out=lse, _variant=v))
        if flashmla is not None:
            _, _, meta, splits = flashmla.dense_decode_fwd(q, cache, DV, seq_lens, table, SCALE, False, None, None)
            trace("FlashMLA", lambda: flashmla.dense_decode_fwd(q, cache, DV, seq_lens, table, SCALE, False, meta,
                                                               splits))
        nbytes = c.bytes
        raw = cupy.asarray(cache).view(cupy.uint8).ravel()[:nbytes]
        sink = cupy.zeros(1, dtype=cupy.uint32)
        for per_sm in (4, 8):
            trace(f"pure read, {sms * per_sm} CTAs",
                  lambda g=sms * per_sm: read_kernel((g,), (512,), (raw, cupy.int64(nbytes // 16), sink)))
        del cache, q, table, raw
        torch.cuda.empty_cache()
    return 0


def short(kname):
    """A kernel's name without its namespace and template arguments."""
    base = kname.split("<")[0].split("(")[0].strip()
    return base.replace("void ", "").split("::")[-1]


if __name__ == "__main__":
    sys.exit(main())
