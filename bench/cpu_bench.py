"""CPU backend speed against NumPy's sgemm in the same process.

Times cuattn.attention on float32 bshd inputs (default 1x2048x8x64, causal) and a 2048x2048
float32 `a @ b`, best of --repeat runs each, and prints both FLOP rates and their ratio.
FLOPs of attention = 4*B*H*Sq*Sk*D, halved for causal. Other processes share the cores: run it
when the machine is quiet and take the best of a few runs.

    python bench/cpu_bench.py [--b 1 --s 2048 --h 8 --d 64 --no-causal --repeat 5 --threads N]
"""
import argparse
import os
import time

import numpy as np

import cuattn


def best_time(fn, repeat):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--b", type=int, default=1)
    ap.add_argument("--s", type=int, default=2048)
    ap.add_argument("--h", type=int, default=8)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--no-causal", dest="causal", action="store_false")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None,
                    help="cuattn.set_num_threads(N) (numpy keeps its own thread count)")
    args = ap.parse_args()
    if args.threads is not None:
        cuattn.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((args.b, args.s, args.h, args.d), dtype=np.float32)
               for _ in range(3))
    t_attn = best_time(lambda: cuattn.attention(q, k, v, causal=args.causal), args.repeat)
    flops = 4.0 * args.b * args.h * args.s * args.s * args.d * (0.5 if args.causal else 1.0)

    n = 2048
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    t_mm = best_time(lambda: a @ b, args.repeat)

    attn_rate, mm_rate = flops / t_attn / 1e9, 2.0 * n**3 / t_mm / 1e9
    shape = f"{args.b}x{args.s}x{args.h}x{args.d}{' causal' if args.causal else ''} float32"
    threads = cuattn.get_num_threads() if hasattr(cuattn, "get_num_threads") else "default"
    print(f"cores {os.cpu_count()}  cuattn threads {threads}  load {os.getloadavg()[0]:.2f}")
    print(f"cuattn.attention {shape}: {t_attn * 1e3:.1f} ms, {attn_rate:.1f} GFLOP/s")
    print(f"numpy {n}x{n} float32 matmul: {t_mm * 1e3:.1f} ms, {mm_rate:.1f} GFLOP/s")
    print(f"ratio attention / sgemm: {attn_rate / mm_rate:.3f}")


if __name__ == "__main__":
    main()
