"""Paged decode: GB/s against the number of splits, cache layout, page order and size (GQA 32/8, D128, bf16).

The plan's num_sms argument scales the scheduler's CTA target (num_sms x 2), so planning for
k x 132 SMs gives about k times the splits of the default plan: k = 1 is one balanced wave,
larger k several waves of smaller splits that the hardware scheduler balances. Timed as
bench.py times decode (zeroing L2 flush, median of CUDA events). --layouts NHD,HND also times
the HND cache layout ([page, kv head, slot, dim]: a page's rows of one kv head contiguous, where
NHD puts them 2 KB apart); --order random,ordered also times pages in sequence order (as a
contiguous cache would be); k < 1 (e.g. 0.5) gives fewer splits than one wave.
--chain N times N decode steps back to back instead (each an append_paged_kv of one token a
sequence, then paged_attention), rotating over three caches so that no step finds its KV in L2,
one flush before the N steps; it prints GB/s of a step's KV read. That is how a serving loop
issues them: a launch follows a kernel, not an event, so programmatic dependent launch (compare
default,pdl=0) can hide the launch gap. Run on a GPU machine:
    python bench/decode_sweep.py [--cases 1x32768,16x8192,64x4096] [--k 0.5,1,2,4,8] [--layouts NHD,HND]
        [--order random,ordered] [--page 16] [--flush write|read] [--variants default,KEY=VALUE]
        [--chain N] [--kv bf16|fp8] [--d 128]
--kv fp8 times an e4m3 cache (scales 1; GB/s of its fp8 bytes).
"""
import argparse
import os
import statistics
import sys

import torch

import cuattn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Timer  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--cases", default="1x32768,16x8192,64x4096")
ap.add_argument("--k", default="1,2,3,4,8")
ap.add_argument("--iters", type=int, default=30)
ap.add_argument("--layouts", default="NHD")
ap.add_argument("--flush", choices=("read", "write"), default="write")
ap.add_argument("--page", type=int, default=16)
ap.add_argument("--order", default="random", help="page order in the cache: random (a permutation), "
                "ordered (sequence by sequence, as a contiguous cache), sorted (random pages, each "
                "sequence's in increasing address order), blocks (sorted within runs of 64 pages), bucketN "
                "(grouped by address into N ranges, in table order within a range)")
ap.add_argument("--variants", default="default", help="comma list of kernel variants timed "
                "interleaved in one process, each paged_attention's internal _variant setting, e.g. "
                "default,tma=0 (keys: tma, wide, persistent, persistent_ctas, page_order, pdl; "
                "A=1+B=2 sets two)")
ap.add_argument("--d", type=int, default=128, help="head dim")
ap.add_argument("--kv", choices=("bf16", "fp8"), default="bf16", help="cache element type")
ap.add_argument("--chain", type=int, default=0, help="time N append + decode steps back to back")
a = ap.parse_args()
timer = Timer(torch, iters=a.iters, flush=a.flush)
sms = torch.cuda.get_device_properties(0).multi_processor_count
Hq, Hkv, D, ps = 32, 8, a.d, a.page
variants = a.variants.split(",")


def variant_arg(v):  # v: "default" or KEY=VALUE[+KEY=VALUE...] -> paged_attention's _variant
    return "" if v == "default" else v.replace("+", ",")


current = {"variant": ""}  # the variant the timed calls run


print(f"{'case':<12} {'layout':<6} {'order':<8} {'k':>4} {'splits':>6} " + " ".join(f"{v[-24:]:>24}" for v in variants))
for case in a.cases.split(","):
    B, L = (int(x) for x in case.split("x"))
    nb = B * L // ps
    lens = torch.full((B,), L, device="cuda", dtype=torch.int32)
    q = torch.randn(B, Hq, D, device="cuda", dtype=torch.bfloat16)
    out = torch.empty_like(q)
    nbytes = 2 * B * L * Hkv * D * (1 if a.kv == "fp8" else 2)
    for layout, order in ((x, o) for x in a.layouts.split(",") for o in a.order.split(",")):
        perm = torch.arange(nb, device="cuda") if order == "ordered" else torch.randperm(nb, device="cuda")
        table = perm.to(torch.int32).view(B, L // ps)
        if order == "sorted":  # random pages, each sequence's in increasing address order
            table = table.sort(dim=1).values.contiguous()
        elif order == "blocks":  # random pages, each sequence's sorted within runs of 64 pages
            table = table.view(B, -1, 64).sort(dim=2).values.view(B, L // ps).contiguous()
        elif order.startswith("bucket"):  # bucketN: each sequence's pages grouped by address range (N)
            nbk = int(order[6:])
            key = table.to(torch.int64) * nbk // nb
            idx = torch.sort(key, dim=1, stable=True).indices
            table = torch.gather(table, 1, idx).contiguous()
        shape = (nb, ps, Hkv, D) if layout == "NHD" else (nb, Hkv, ps, D)
        kc = torch.randn(*shape, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        if a.kv == "fp8":
            kc, vc = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
        if a.chain:  # three caches (the same pages, copied), each step writing its last token again
            caches = [(kc, vc)] + [(kc.clone(), vc.clone()) for _ in range(2)]
            last = torch.full((B,), L - 1, device="cuda")
            slots = (table[torch.arange(B, device="cuda"), last // ps].to(torch.int64) * ps + last % ps)
            k_new = torch.randn(B, Hkv, D, device="cuda", dtype=torch.bfloat16)  # (quantised into fp8 caches)
            v_new = torch.randn_like(k_new)
        for k in (float(x) for x in a.k.split(",")):
            plan = cuattn.plan_decode([L] * B, num_q_heads=Hq, num_kv_heads=Hkv, head_dim=D, page_size=ps,
                                      device="cuda", num_sms=round(k * sms))

            def steps():
                for i in range(a.chain):
                    kci, vci = caches[i % 3]
                    cuattn.append_paged_kv(k_new, v_new, kci, vci, slots, kv_layout=layout)
                    cuattn.paged_attention(q, kci, vci, table, lens, plan=plan, out=out, kv_layout=layout,
                                           _variant=current["variant"])

            def call():
                cuattn.paged_attention(q, kc, vc, table, lens, plan=plan, out=out, kv_layout=layout,
                                       _variant=current["variant"])

            xs = {v: [] for v in variants}
            for _ in range(3):
                for v in variants:
                    current["variant"] = variant_arg(v)
                    if a.chain:
                        xs[v] += [t / a.chain for t in timer.samples(steps, iters=max(3, a.iters // 3))]
                    else:
                        xs[v] += timer.samples(call)
            print(f"B{B} L{L:<6} {layout:<6} {order:<8} {k:>4} {plan.max_splits:>6} "
                  + " ".join(f"{nbytes / statistics.median(xs[v]) / 1e6:24.0f}" for v in variants), flush=True)
        del kc, vc
