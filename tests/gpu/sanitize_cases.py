"""Small GPU case matrix for compute-sanitizer (memcheck, racecheck, initcheck): every kernel at
odd sizes, each mask, GQA, padded head dims, block masks, paged with split-KV and fp8, append.

    compute-sanitizer --tool memcheck python tests/gpu/sanitize_cases.py
"""

import sys

import numpy as np
import torch

import cuattn

dev = "cuda"
bf16, f16 = torch.bfloat16, torch.float16
g = torch.Generator(device=dev).manual_seed(0)


def r(*shape, dtype=bf16):
    return torch.randn(*shape, device=dev, dtype=dtype, generator=g)


n = 0
# Dense / causal / window / softcap / sinks / GQA / padded head dims, both layouts.
for D, Dv in [(64, 64), (96, 96), (128, 128), (192, 128), (192, 192), (256, 256), (40, 40)]:
    for causal, window in [(False, None), (True, None), (True, (17, 0)), (False, (5, 9))]:
        q, k, v = r(2, 77, 4, D), r(2, 130, 2, D), r(2, 130, 2, Dv)
        cuattn.attention(q, k, v, causal=causal, window=window, return_lse=True)
        n += 1
# Sk 65 runs the portable kernel, Sk 200 the Hopper one (where the build and the card have it),
# and the portable one again when asked for.
for S, variant in ((65, ""), (200, ""), (200, "portable=1")):
    q, k, v = r(1, S, 8, 128), r(1, S, 8, 128), r(1, S, 8, 128)
    cuattn.attention(q, k, v, softcap=20.0, sinks=torch.randn(8, device=dev), causal=True, _variant=variant)
    cuattn.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), layout="bhsd", causal=True,
                     _variant=variant)
# Varlen with an empty sequence (short documents, then long ones).
for cu_list in ([0, 33, 33, 100], [0, 150, 150, 457]):
    cu = torch.tensor(cu_list, device=dev, dtype=torch.int32)
    T, mx = cu_list[-1], max(b - a for a, b in zip(cu_list, cu_list[1:]))
    cuattn.attention(r(T, 4, 64), r(T, 2, 64), r(T, 2, 64), cu_seqlens_q=cu, cu_seqlens_k=cu,
                     max_seqlen_q=mx, max_seqlen_k=mx, causal=True, return_lse=True)
# Block mask (documents), fp16.
S = 300
bm = cuattn.create_block_mask(lambda b, h, qi, ki: (qi // 100 == ki // 100) & (ki <= qi), None, None, S, S,
                              device=dev)
cuattn.attention(r(1, S, 2, 128, dtype=f16), r(1, S, 2, 128, dtype=f16), r(1, S, 2, 128, dtype=f16), block_mask=bm)
# Naive and merge.
q, k, v = r(1, 50, 2, 64), r(1, 70, 2, 64), r(1, 70, 2, 64)
cuattn.naive_attention(q, k, v, causal=True)
oa, la = cuattn.attention(q, k[:, :30], v[:, :30], return_lse=True)
ob, lb = cuattn.attention(q, k[:, 30:], v[:, 30:], return_lse=True)
cuattn.merge_states(oa, la, ob, lb)
n += 5
# Paged: page sizes, split-KV with and without a plan, fp8, multi-token q, HND.
for ps in (1, 16, 64):
    for D in (64, 128, 256):
        B, Hq, Hkv = 3, 8, 2
        lens = torch.tensor([1, 700, 5], device=dev, dtype=torch.int32)
        nb = (700 + ps - 1) // ps
        kc, vc = r(B * nb + 1, ps, Hkv, D), r(B * nb + 1, ps, Hkv, D)
        table = torch.randperm(B * nb + 1, device=dev, dtype=torch.int32)[: B * nb].view(B, nb)
        q = r(B, Hq, D)
        cuattn.paged_attention(q, kc, vc, table, lens, return_lse=True)
        plan = cuattn.plan_decode(lens.cpu().numpy(), num_q_heads=Hq, num_kv_heads=Hkv, head_dim=D,
                                  page_size=ps, device=dev, num_sms=8)
        cuattn.paged_attention(q, kc, vc, table, lens, plan=plan)
        cuattn.paged_attention(r(B, 3, Hq, D), kc, vc, table, lens, window=100, softcap=10.0)
        k8 = (kc.float() / 4).to(torch.float8_e4m3fn)
        cuattn.paged_attention(q, k8, k8, table, lens, k_scale=4.0, v_scale=4.0)
        cuattn.paged_attention(q, kc.transpose(1, 2), vc.transpose(1, 2), table, lens, kv_layout="HND")
        cuattn.paged_attention(q, k8, k8, table, lens, _variant="tma=0")  # row copies
        slots = torch.tensor([0, 5, -1, ps * nb - 1], device=dev, dtype=torch.int64)
        cuattn.append_paged_kv(r(4, Hkv, D), r(4, Hkv, D), kc, vc, slots)
        cuattn.append_paged_kv(r(4, Hkv, D), r(4, Hkv, D), k8, k8.clone(), slots, k_scale=4.0, v_scale=4.0)
        n += 8
# The TMA kernel's page order (a CTA a sequence: a plan for 2 SMs), after 8 tiles and after 3.
for after in ("8", "3"):
    for ps, D, fp8 in ((16, 128, False), (32, 64, True), (64, 128, False)):
        B, Hq, Hkv = 2, 8, 2
        lens = torch.tensor([3000, 1100], device=dev, dtype=torch.int32)
        nb = (3000 + ps - 1) // ps
        kc, vc = r(B * nb + 1, ps, Hkv, D), r(B * nb + 1, ps, Hkv, D)
        if fp8:
            kc, vc = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
        table = torch.randperm(B * nb + 1, device=dev, dtype=torch.int32)[: B * nb].view(B, nb)
        plan = cuattn.plan_decode(lens.cpu().numpy(), num_q_heads=Hq, num_kv_heads=Hkv, head_dim=D,
                                  page_size=ps, device=dev, num_sms=2)
        cuattn.paged_attention(r(B, Hq, D), kc, vc, table, lens, plan=plan, return_lse=True,
                               _variant=f"page_order={after}")
        n += 1
# Persistent CTAs (fp8; capped at 3, so each takes several units, and merges splits it computed).
for ps, D in ((16, 128), (32, 64), (64, 128)):
    B, Hq, Hkv = 3, 8, 2
    lens = torch.tensor([900, 0, 333], device=dev, dtype=torch.int32)
    nb = (900 + ps - 1) // ps
    kc = r(B * nb + 1, ps, Hkv, D).to(torch.float8_e4m3fn)
    vc = r(B * nb + 1, ps, Hkv, D).to(torch.float8_e4m3fn)
    table = torch.randperm(B * nb + 1, device=dev, dtype=torch.int32)[: B * nb].view(B, nb)
    cuattn.paged_attention(r(B, Hq, D), kc, vc, table, lens, return_lse=True, _variant="persistent_ctas=3")
    cuattn.paged_attention(r(B, 2, Hq, D), kc, vc, table, lens, window=200, _variant="persistent_ctas=3")
    cuattn.paged_attention(r(B, Hq, D), kc, vc, table, lens, return_lse=True, _variant="persistent_ctas=3,drain=1")
    n += 3
# The work list (every kernel kind: TMA 4- and 8-warp, row copies at D256 / page 48, tma=0), a
# skewed batch with an empty sequence, capped grids so that CTAs take several pieces and units
# split across CTAs merge; then mixed batches (cu_seqlens_q) on it.
for ps, D, fp8 in ((16, 128, False), (16, 64, True), (48, 128, False), (16, 256, False), (64, 128, True)):
    B, Hq, Hkv = 4, 8, 2
    lens = torch.tensor([3000, 0, 77, 700], device=dev, dtype=torch.int32)
    nb = (3000 + ps - 1) // ps
    kc, vc = r(B * nb + 1, ps, Hkv, D), r(B * nb + 1, ps, Hkv, D)
    if fp8:
        kc, vc = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
    table = torch.randperm(B * nb + 1, device=dev, dtype=torch.int32)[: B * nb].view(B, nb)
    for variant in ("list=1", "list_ctas=5", "list=1,wide=1", "list=1,tma=0", "list=1,drain=1",
                    "list=1,drain=1,tma=0", "list_ctas=5,drain=1"):
        cuattn.paged_attention(r(B, Hq, D), kc, vc, table, lens, return_lse=True, _variant=variant)
        n += 1
    cu = torch.tensor([0, 1, 1, 40, 43], device=dev, dtype=torch.int32)  # 1, 0, 39, 3 new tokens
    cuattn.paged_attention(r(43, Hq, D), kc, vc, table, lens, cu_seqlens_q=cu, max_seqlen_q=39,
                           window=500, return_lse=True)
    n += 1
# MLA decode (576-wide latents, V = the first 512): the work list with a skewed batch, an empty
# sequence, odd pages, Sq > 1, 72 rows (a partial unit), 24 rows (a partial 32-row narrow unit),
# fp8; then the per-sequence split kernel;
# then the sm_90a kernels (hopper=1, and narrow=1 for at most 32 query rows, on sm_90 GPUs) at
# each page size they take.
SM90A = torch.cuda.get_device_capability() == (9, 0) and "90a" in str(cuattn.build_info().get("archs", ""))
for ps, hq, sq, fp8 in ((64, 16, 1, False), (7, 24, 3, False), (64, 16, 2, True), (1, 128, 1, False),
                        (16, 24, 3, False), (8, 16, 1, False), (32, 128, 1, False), (128, 16, 2, False),
                        (16, 8, 3, False)):
    B = 3
    lens = torch.tensor([2500, 0, 130], device=dev, dtype=torch.int32)
    nb = (2500 + ps - 1) // ps
    cache = r(B * nb + 1, ps, 576)
    if fp8:
        cache = cache.to(torch.float8_e4m3fn)
    table = torch.randperm(B * nb + 1, device=dev, dtype=torch.int32)[: B * nb].view(B, nb)
    sm90 = SM90A and not fp8 and (ps % 64 == 0 or ps in (8, 16, 32))
    hopper = (("hopper=1",) + (("narrow=1",) if hq * sq <= 32 else ())) if sm90 else ()
    for variant in ("list=1", "list=0") + hopper:
        cuattn.mla_decode(r(B, sq, hq, 576), cache, table, lens, scale=0.07, kv_scale=0.5 if fp8 else None,
                          _variant=variant)
        n += 1
# A block table of no columns (every sequence empty): no kernel may read a table entry.
for variant in ("list=1", "list=0") + (("hopper=1", "narrow=1") if SM90A else ()):
    cuattn.mla_decode(r(3, 1, 16, 576), r(2, 64, 576), torch.zeros(3, 0, device=dev, dtype=torch.int32),
                      torch.zeros(3, device=dev, dtype=torch.int32), scale=0.07, _variant=variant)
    n += 1
torch.cuda.synchronize()
print(f"sanitize_cases: {n} GPU calls completed")
