"""MLA timings on the GPU (torch): mla_decode (DeepSeek-V3 576/512, Hq 128) over a paged cache,
bf16 and fp8, and mla_attention per _method. Prints one line per case: time, and for decode the
cache bytes read per second. Usage: python bench/mla_bench.py"""

import math

import torch

import cuattn


def timed(fn, reps=20):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(3):
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / reps)
    return best  # ms


def decode(batch, length, hq=128, sq=1, page=64, kv="bf16"):
    npages = -(-length // page)
    table = torch.randperm(batch * npages, dtype=torch.int32, device="cuda").reshape(batch, npages)
    cache = torch.randn(batch * npages, page, 576, device="cuda")
    extra = {}
    if kv == "fp8":
        cache = cache.to(torch.float8_e4m3fn)
        extra = dict(kv_scale=0.5)
    else:
        cache = cache.to(torch.bfloat16)
    q = torch.randn(batch, sq, hq, 576, device="cuda", dtype=torch.bfloat16)
    sl = torch.full((batch,), length, dtype=torch.int32, device="cuda")
    plan = cuattn.plan_decode(sl, num_q_heads=hq, num_kv_heads=1, head_dim=576, head_dim_v=512,
                              page_size=page, q_len=sq, device="cuda")
    ms = timed(lambda: cuattn.mla_decode(q, cache, table, sl, scale=1 / math.sqrt(192), plan=plan,
                                         **extra))
    gbs = batch * length * 576 * cache.element_size() / ms / 1e6
    flops = 2 * batch * sq * hq * length * (576 + 512) / ms / 1e9
    print(f"mla_decode {kv:4s} B{batch:<4d} L{length:<6d} Hq{hq} Sq{sq}: {ms * 1e3:8.1f} us "
          f"{gbs:7.0f} GB/s {flops:6.0f} TFLOP/s")


def attention(b, h, sq, sk, latent=512, d=128, dv=128, methods=("materialise", "absorb", "per_pair")):
    q = torch.randn(b, h, sq, d, device="cuda", dtype=torch.bfloat16)
    kl = torch.randn(b, sk, latent, device="cuda", dtype=torch.bfloat16)
    vl = torch.randn(b, sk, latent, device="cuda", dtype=torch.bfloat16)
    kp = torch.randn(h, latent, d, device="cuda", dtype=torch.bfloat16) / math.sqrt(latent)
    vp = torch.randn(h, latent, dv, device="cuda", dtype=torch.bfloat16) / math.sqrt(latent)
    for m in methods:
        ms = timed(lambda: cuattn.mla_attention(q, kl, vl, kp, vp, causal=True, _method=m), reps=3)
        print(f"mla_attention B{b} H{h} Sq{sq} Sk{sk} L{latent} D{d}: {m:12s} {ms * 1e3:10.1f} us")


if __name__ == "__main__":
    for kv in ("bf16", "fp8"):
        for batch, length in ((1, 4096), (16, 4096), (64, 4096), (128, 8192)):
            decode(batch, length, kv=kv)
    decode(64, 4096, sq=2)
    attention(1, 16, 4096, 4096, methods=("materialise", "absorb"))
    attention(4, 16, 1, 4096)
    attention(1, 16, 64, 1024)
