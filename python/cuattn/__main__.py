"""python -m cuattn demo | info | --version

demo: runs every attention variant at small sizes on the best device present (the GPU when
      there is one, through cuattn.Array, no framework needed; else the CPU backend), checks each
      result against a float64 NumPy reference and prints a table.
info: prints how cuattn was built and which GPU it sees (or why none).
--version: prints the package version.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import cuattn
from cuattn import _reference as ref

try:
    import ml_dtypes

    _BF16 = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover
    _BF16 = None


def info() -> int:
    b = cuattn.build_info()
    print(f"cuattn {b['version']}")
    if b["cuda"]:
        print(f"  build: CUDA {b['cuda_version']}, architectures {b['archs']}, "
              f"head dims {', '.join(map(str, b['head_dims'])) or '-'}")
    else:
        print("  build: CPU only (no nvcc at build time)")
    d = cuattn.device_info(0)
    if d["available"]:
        cc = d["compute_capability"]
        print(f"  GPU 0: {d['name']}, {d['sm_count']} SMs, compute capability {cc[0]}.{cc[1]}, "
              f"{d['total_memory'] / 2**30:.1f} GiB, driver {d['driver_version'] // 1000}."
              f"{d['driver_version'] % 1000 // 10}, L2 {d['l2_bytes'] / 2**20:.0f} MiB")
    else:
        print(f"  GPU: none ({d['reason']})")
    return 0


class _Demo:
    def __init__(self, gpu: bool, seed: int):
        self.gpu = gpu
        self.rng = np.random.default_rng(seed)
        self.dtype = _BF16 if gpu else np.float32
        self.tol = 2e-2 if gpu else 1e-4
        self.rows = []

    def rand(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def dev(self, x, dtype=None):
        x = np.asarray(x).astype(dtype or self.dtype) if dtype is not False else np.asarray(x)
        return cuattn.asarray(x, device="cuda") if self.gpu else x

    def host(self, x):
        x = x.numpy() if isinstance(x, cuattn.Array) else np.asarray(x)
        return x.astype(np.float64)

    def rounded(self, x):  # the values the kernel sees
        return np.asarray(x).astype(self.dtype).astype(np.float64)

    def run(self, name, shape, fn, check, device=None):
        fn()  # warm-up (and first-call setup)
        t0 = time.perf_counter()
        res = fn()
        if self.gpu:
            cuattn._cuattn.stream_synchronize(0)
        ms = (time.perf_counter() - t0) * 1e3
        err = check(res)
        ok = bool(np.isfinite(err) and err <= self.tol)
        self.rows.append((name, shape, device or ("cuda" if self.gpu else "cpu"), ms, err, ok))
        print(f"  {name:<28} {'ok' if ok else 'MISMATCH'}", flush=True)


def demo(seed: int | None, force_cpu: bool) -> int:
    gpu = cuattn.cuda_available() and not force_cpu
    seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else seed
    d = _Demo(gpu, seed)
    print(f"cuattn demo on {'GPU: ' + cuattn.device_info(0)['name'] if gpu else 'CPU'} "
          f"(seed {seed}, dtype {'bfloat16' if gpu else 'float32'})")

    # Dense, causal, GQA, window, softcap + sinks.
    B, S, Hq, Hkv, D = 2, 129, 8, 2, 64
    q, k, v = d.rand(B, S, Hq, D), d.rand(B, S, Hkv, D), d.rand(B, S, Hkv, D)
    qd, kd, vd = d.dev(q), d.dev(k), d.dev(v)
    qr, kr, vr = d.rounded(q), d.rounded(k), d.rounded(v)
    shape = f"B{B} S{S} H{Hq}/{Hkv} D{D}"
    for name, kw, rkw in [
        ("attention", {}, {}),
        ("attention causal", {"causal": True}, {"causal": True}),
        ("sliding window (32, 0)", {"causal": True, "window": 32}, {"causal": True, "window": (32, 0)}),
        ("softcap + sinks", {"softcap": 5.0}, {"softcap": 5.0}),
    ]:
        sinks = None
        if name == "softcap + sinks":
            sinks = d.rng.standard_normal(Hq).astype(np.float32)
            kw = dict(kw, sinks=d.dev(sinks, np.float32))
            rkw = dict(rkw, sinks=sinks)
        want = ref.mha(qr, kr, vr, **rkw)[0]
        d.run(name, shape, lambda kw=kw: cuattn.attention(qd, kd, vd, **kw),
              lambda o, want=want: ref.rel_err(d.host(o), want))

    # Naive (materialised scores).
    want = ref.mha(qr, kr, vr, causal=True)[0]
    d.run("naive_attention causal", shape, lambda: cuattn.naive_attention(qd, kd, vd, causal=True),
          lambda o: ref.rel_err(d.host(o), want))

    # Varlen: three documents packed, one of length 0.
    lens = [57, 0, 72]
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    T = int(cu[-1])
    qv, kv_, vv = d.rand(T, Hq, D), d.rand(T, Hkv, D), d.rand(T, Hkv, D)
    want = np.zeros((T, Hq, D))
    for i in range(len(lens)):
        a, b = cu[i], cu[i + 1]
        if b > a:
            want[a:b] = ref.mha(d.rounded(qv[None, a:b]), d.rounded(kv_[None, a:b]),
                                d.rounded(vv[None, a:b]), causal=True)[0][0]
    cud = d.dev(cu, np.int32)
    qvd, kvd, vvd = d.dev(qv), d.dev(kv_), d.dev(vv)
    d.run("varlen causal (3 docs)", f"T{T} H{Hq}/{Hkv} D{D}",
          lambda: cuattn.attention(qvd, kvd, vvd, causal=True, cu_seqlens_q=cud, cu_seqlens_k=cud,
                                   max_seqlen_q=max(lens), max_seqlen_k=max(lens)),
          lambda o: ref.rel_err(d.host(o), want))

    # Block mask: documents of 96 tokens, causal inside each.
    Sb = 384
    doc = np.arange(Sb) // 96
    qb, kb, vb = d.rand(1, Sb, 4, 128), d.rand(1, Sb, 4, 128), d.rand(1, Sb, 4, 128)
    bm = cuattn.create_block_mask(lambda b, h, qi, ki: (doc[qi] == doc[ki]) & (ki <= qi),
                                  None, None, Sb, Sb, device="cuda" if gpu else "cpu")
    dense = bm.to_dense()
    want = ref.mha(d.rounded(qb), d.rounded(kb), d.rounded(vb), mask=dense)[0]
    qbd, kbd, vbd = d.dev(qb), d.dev(kb), d.dev(vb)
    d.run("block mask (documents)", f"S{Sb} H4 D128",
          lambda: cuattn.attention(qbd, kbd, vbd, block_mask=bm),
          lambda o: ref.rel_err(d.host(o), want))

    # merge_states: two halves of the keys equal the whole.
    h = S // 2
    want = ref.mha(qr, kr, vr)[0]
    ka, kb2, va, vb2 = d.dev(k[:, :h]), d.dev(k[:, h:]), d.dev(v[:, :h]), d.dev(v[:, h:])

    def merged():
        oa, la = cuattn.attention(qd, ka, va, return_lse=True)
        ob, lb = cuattn.attention(qd, kb2, vb2, return_lse=True)
        return cuattn.merge_states(oa, la, ob, lb)[0]

    d.run("merge_states (two halves)", shape, merged, lambda o: ref.rel_err(d.host(o), want))

    # Paged decode: random page tables, page size 16, GQA 8/2, one token per sequence.
    Bp, Hqp, Hkp, Dp, ps = 4, 8, 2, 128, 16
    lens = np.array([1, 100, 257, 40], np.int32)
    maxb = int(-(-lens.max() // ps))
    nblocks = Bp * maxb + 3
    kc, vc = d.rand(nblocks, ps, Hkp, Dp), d.rand(nblocks, ps, Hkp, Dp)
    table = d.rng.permutation(nblocks)[: Bp * maxb].reshape(Bp, maxb).astype(np.int32)
    qp = d.rand(Bp, Hqp, Dp)
    want = np.zeros((Bp, Hqp, Dp))
    kcr, vcr = d.rounded(kc), d.rounded(vc)
    for b in range(Bp):
        L = int(lens[b])
        kk = kcr[table[b]].reshape(-1, Hkp, Dp)[:L]
        vv_ = vcr[table[b]].reshape(-1, Hkp, Dp)[:L]
        want[b] = ref.mha(d.rounded(qp[b])[None, None], kk[None], vv_[None])[0][0, 0]
    kcd, vcd, qpd = d.dev(kc), d.dev(vc), d.dev(qp)
    td, ld = d.dev(table, np.int32), d.dev(lens, np.int32)
    pshape = f"B{Bp} L<= {lens.max()} H{Hqp}/{Hkp} D{Dp} page {ps}"
    d.run("paged_attention", pshape,
          lambda: cuattn.paged_attention(qpd, kcd, vcd, td, ld),
          lambda o: ref.rel_err(d.host(o), want))
    plan = cuattn.plan_decode(lens, num_q_heads=Hqp, num_kv_heads=Hkp, head_dim=Dp, page_size=ps,
                              device="cuda" if gpu else "cpu")
    d.run("paged_attention + plan", pshape,
          lambda: cuattn.paged_attention(qpd, kcd, vcd, td, ld, plan=plan),
          lambda o: ref.rel_err(d.host(o), want))

    # A mixed batch on the same cache (chunked prefill beside decodes): sequence b has nq[b] new
    # tokens, the last nq[b] of its lens[b]; q packed [sum(nq), Hq, D]. The CPU backend runs it.
    nq = np.array([1, 5, 0, 3], np.int32)
    cu = np.concatenate([[0], np.cumsum(nq)]).astype(np.int32)
    qmix = d.rand(int(cu[-1]), Hqp, Dp)
    want_mix = np.zeros((int(cu[-1]), Hqp, Dp))
    for b in range(Bp):
        L, r0, r1 = int(lens[b]), int(cu[b]), int(cu[b + 1])
        if r1 > r0:
            kk, vv_ = (c[table[b]].reshape(-1, Hkp, Dp)[None, :L] for c in (kc, vc))
            want_mix[r0:r1] = ref.mha(qmix[None, r0:r1], kk, vv_, causal=True)[0][0]
    d.run("paged_attention mixed batch", f"B{Bp} q tokens {'+'.join(map(str, nq))} H{Hqp}/{Hkp}",
          lambda: cuattn.paged_attention(qmix, kc, vc, table, lens, cu_seqlens_q=cu),
          lambda o: ref.rel_err(np.asarray(o, np.float64), want_mix), device="cpu")

    # append_paged_kv: write one new token per sequence, read the cache back.
    slots = (table[:, 0].astype(np.int64) * ps + 3)
    kn, vn = d.rand(Bp, Hkp, Dp), d.rand(Bp, Hkp, Dp)
    kc2, vc2 = d.dev(kc), d.dev(vc)
    d.run("append_paged_kv", f"T{Bp} H{Hkp} D{Dp}",
          lambda: (cuattn.append_paged_kv(d.dev(kn), d.dev(vn), kc2, vc2, d.dev(slots, np.int64)), kc2)[1],
          lambda c: ref.rel_err(d.host(c)[table[:, 0], 3], d.rounded(kn)))

    # Multi-head latent attention (runs on the CPU backend) and DeepSeek-style MLA decode.
    Bm, Hm, Sm, Dm, Lm = 1, 4, 33, 64, 96
    qm, klat, vlat = d.rand(Bm, Hm, Sm, Dm), d.rand(Bm, Sm, Lm), d.rand(Bm, Sm, Lm)
    kp, vp = d.rand(Hm, Lm, Dm, scale=Lm ** -0.5), d.rand(Hm, Lm, Dm, scale=Lm ** -0.5)
    kh = np.einsum("bsl,hld->bshd", klat, kp)
    vh = np.einsum("bsl,hld->bshd", vlat, vp)
    want = ref.mha(qm.transpose(0, 2, 1, 3), kh, vh, causal=True)[0].transpose(0, 2, 1, 3)
    d.run("mla_attention", f"B{Bm} H{Hm} S{Sm} D{Dm} L{Lm}",
          lambda: cuattn.mla_attention(qm, klat, vlat, kp, vp, causal=True),
          lambda o: ref.rel_err(np.asarray(o, np.float64), want), device="cpu")

    Hd, ps2, Ld = 16, 64, 200
    nb = -(-Ld // ps2)
    cache = d.rand(nb, ps2, 576)
    qd2 = d.rand(1, 1, Hd, 576)
    scale = 192 ** -0.5
    lat = d.rounded(cache).reshape(-1, 576)[:Ld]
    want = ref.mha(d.rounded(qd2), lat[None, :, None, :], lat[None, :, None, :512], scale=scale)[0]
    tbl = np.arange(nb, dtype=np.int32)[None]
    mla_dev = "cpu"
    run_mla = lambda: cuattn.mla_decode(qd2, cache, tbl, np.array([Ld], np.int32), scale=scale)[0]  # noqa: E731
    if gpu and cuattn._cuattn.build_info()["cuda"]:
        try:
            cached, qdd = d.dev(cache), d.dev(qd2)
            tb, ln = d.dev(tbl, np.int32), d.dev(np.array([Ld], np.int32), np.int32)
            cuattn.mla_decode(qdd, cached, tb, ln, scale=scale)
            run_mla = lambda: cuattn.mla_decode(qdd, cached, tb, ln, scale=scale)[0]  # noqa: E731
            mla_dev = "cuda"
        except (ValueError, NotImplementedError, cuattn.CudaError):
            pass
    d.run("mla_decode (576/512)", f"B1 Hq{Hd} L{Ld} page {ps2}", run_mla,
          lambda o: ref.rel_err(d.host(o), want), device=mla_dev)

    print()
    print(f"{'variant':<28} {'shape':<32} {'device':<6} {'time ms':>9} {'rel err':>9}  result")
    for name, shape, dev, ms, err, ok in d.rows:
        print(f"{name:<28} {shape:<32} {dev:<6} {ms:>9.3f} {err:>9.2e}  {'ok' if ok else 'MISMATCH'}")
    bad = [r[0] for r in d.rows if not r[5]]
    print()
    print("all results match" if not bad else f"MISMATCH in: {', '.join(bad)}")
    return 0 if not bad else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cuattn", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"cuattn {cuattn.__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo", help="run and check every variant at small sizes")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--cpu", action="store_true", help="use the CPU backend even with a GPU")
    sub.add_parser("info", help="build and GPU information")
    a = ap.parse_args(argv)
    if a.cmd == "info":
        return info()
    return demo(a.seed, a.cpu)


if __name__ == "__main__":
    sys.exit(main())
