"""Where the host time of one tiny cuattn.attention call goes (PyTorch and CuPy inputs).

Times each piece of the call path in a tight loop (best of 5 rounds of N calls) and prints a
cProfile of the whole call. Run on a GPU machine: python bench/host_profile.py
"""
import cProfile
import os
import pstats
import sys

import torch

import cuattn
from cuattn import _cuattn
from cuattn._arrays import _Call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import host_us_per_call  # noqa: E402


def per_call(fn):
    return host_us_per_call(torch, fn, 500)


q = torch.randn(1, 1, 1, 64, device="cuda", dtype=torch.float16)
k, v = torch.randn_like(q), torch.randn_like(q)
out = torch.empty_like(q)
ctx = _Call(q, None)
rows = [
    ("attention(q, k, v, out=out)", lambda: cuattn.attention(q, k, v, out=out)),
    ("attention(q, k, v)", lambda: cuattn.attention(q, k, v)),
    ("torch.add(q, k, out=out) [reference]", lambda: torch.add(q, k, out=out)),
    ("_Call(q, None)", lambda: _Call(q, None)),
    ("ctx.inp(q)", lambda: ctx.inp(q, "q")),
    ("torch._C._to_dlpack(q)", lambda: torch._C._to_dlpack(q)),
    ("torch.empty_like(q)", lambda: torch.empty_like(q)),
    ("_cuattn.stream_is_capturing(0)", lambda: _cuattn.stream_is_capturing(0)),
]
for name, fn in rows:
    print(f"{per_call(fn):8.2f} us  {name}", flush=True)

pr = cProfile.Profile()
pr.enable()
for _ in range(3000):
    cuattn.attention(q, k, v, out=out)
pr.disable()
torch.cuda.synchronize()
pstats.Stats(pr, stream=sys.stdout).sort_stats("tottime").print_stats(12)
