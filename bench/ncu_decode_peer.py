"""Paged decode calls of cuattn (one per variant) and, unless --no-peer, one SDPA cuDNN call on the
same KV made contiguous, between cudaProfilerStart/Stop, for Nsight Compute to compare the kernels
(grid, occupancy, shared memory per CTA, DRAM, stalls):
    ncu --profile-from-start off --clock-control none --section SpeedOfLight ... \\
        python bench/ncu_decode_peer.py --case 16x8192 [--variants default,list=1] [--kv fp8] [--no-peer]
--case BxL is B sequences of L tokens; "skew" is 1 x 65536 + 63 x 256 (no peer: lengths differ).
GQA 32/8, D128, page 16, random pages; variants are paged_attention's internal _variant strings
("+" joins settings: list=1+list_granule=256).
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import cuattn

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--case", default="16x8192", help="BxL (GQA 32/8, D128, page 16) or skew")
ap.add_argument("--variants", default="default", help="comma list of _variant strings ('+' joins settings)")
ap.add_argument("--kv", choices=("bf16", "fp8"), default="bf16")
ap.add_argument("--no-peer", action="store_true", help="profile cuattn only")
a = ap.parse_args()
if a.case == "skew":
    lens_list = [65536] + [256] * 63
else:
    B, L = (int(x) for x in a.case.split("x"))
    lens_list = [L] * B
Hq, Hkv, D, ps = 32, 8, 128, 16
B, width = len(lens_list), max(lens_list) // ps
nb = sum(L // ps for L in lens_list)
kc = torch.randn(nb, ps, Hkv, D, device="cuda", dtype=torch.bfloat16)
vc = torch.randn_like(kc)
perm = torch.randperm(nb, device="cuda", dtype=torch.int32)
table = torch.zeros(B, width, device="cuda", dtype=torch.int32)
at = 0
for b, L in enumerate(lens_list):
    table[b, :L // ps] = perm[at:at + L // ps]
    at += L // ps
lens = torch.tensor(lens_list, device="cuda", dtype=torch.int32)
q = torch.randn(B, Hq, D, device="cuda", dtype=torch.bfloat16)
out = torch.empty_like(q)
peer = not a.no_peer and len(set(lens_list)) == 1 and a.kv == "bf16"  # (the peer reads bf16)
if peer:
    L = lens_list[0]
    kd = kc[table.long()].view(B, L, Hkv, D).transpose(1, 2).contiguous()
    vd = vc[table.long()].view(B, L, Hkv, D).transpose(1, 2).contiguous()
    q4 = q.view(B, Hq, 1, D)
kw = {}
if a.kv == "fp8":
    kc, vc = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
    kw = {"k_scale": 1.0, "v_scale": 1.0}
variants = ["" if v == "default" else v.replace("+", ",") for v in a.variants.split(",")]


def calls():
    for v in variants:
        cuattn.paged_attention(q, kc, vc, table, lens, out=out, _variant=v, **kw)
    if peer:
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            F.scaled_dot_product_attention(q4, kd, vd, enable_gqa=True)


for _ in range(3):
    calls()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStart()
calls()
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStop()
