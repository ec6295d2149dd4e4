"""One paged decode call of cuattn and one SDPA cuDNN call on the same KV made contiguous, between
cudaProfilerStart/Stop, for Nsight Compute to compare the two kernels (grid, occupancy, DRAM):
    ncu --profile-from-start off --clock-control none --section SpeedOfLight ... \
        python bench/ncu_decode_peer.py --case 16x8192
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import cuattn

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--case", default="16x8192", help="BxL (GQA 32/8, D128, bf16, page 16)")
a = ap.parse_args()
B, L = (int(x) for x in a.case.split("x"))
Hq, Hkv, D, ps = 32, 8, 128, 16
nb = B * L // ps
kc = torch.randn(nb, ps, Hkv, D, device="cuda", dtype=torch.bfloat16)
vc = torch.randn_like(kc)
table = torch.randperm(nb, device="cuda", dtype=torch.int32).view(B, L // ps)
lens = torch.full((B,), L, device="cuda", dtype=torch.int32)
q = torch.randn(B, Hq, D, device="cuda", dtype=torch.bfloat16)
out = torch.empty_like(q)
kd = kc[table.long()].view(B, L, Hkv, D).transpose(1, 2).contiguous()
vd = vc[table.long()].view(B, L, Hkv, D).transpose(1, 2).contiguous()
q4 = q.view(B, Hq, 1, D)
for _ in range(3):
    cuattn.paged_attention(q, kc, vc, table, lens, out=out)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        F.scaled_dot_product_attention(q4, kd, vd, enable_gqa=True)
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStart()
cuattn.paged_attention(q, kc, vc, table, lens, out=out)
with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
    F.scaled_dot_product_attention(q4, kd, vd, enable_gqa=True)
torch.cuda.synchronize()
torch.cuda.cudart().cudaProfilerStop()
