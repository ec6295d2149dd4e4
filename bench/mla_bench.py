"""MLA against its peers and the device's ceilings, every row in one run.

    python bench/mla_bench.py [--flashmla DIR] [--out DIR] [--iters 30] [--rows GROUPS] [--dry-run]

mla_decode over DeepSeek-V3's paged latent cache (576 values a token = 512 latent + 64 rope, V =
the first 512; scale mscale^2/sqrt(192)), bf16 unless said, page 64, one new token (Sq 1), and
mla_attention. Each decode row is timed for cuattn (no plan, and with a plan), plain torch (gather
the pages, einsum, softmax, einsum: what a user without an MLA kernel writes) and FlashMLA's dense
decode, all on the same inputs. Rows and aims:

  memory     Hq 16, B 64 / 128, L 4096 / 8192            >= 0.90 x copy and >= 1.1 x FlashMLA
  small      B16 Hq16 L8192                              >= 0.8 x copy
             B1 Hq128 L32768                             >= 0.6 x copy
  compute    Hq 128, B 64 / 128, L 4096 / 8192           >= 1.05 x FlashMLA and >= 0.87 x GEMM
  page       page 16 vs page 64 (B64 Hq16 L8192, B64 Hq128 L4096): time within 5 %
  skew       1 x 65536 + 63 x 512 tokens, Hq 16          >= 0.8 x copy
  fp8        fp8 cache vs bf16 at the memory-bound shapes: >= 1.6 x faster
  attention  mla_attention, causal, B1 H32 S4096 L512 D128: the automatic order vs the per-pair
             kernel                                      >= 50 x (per_pair timed once when slow)
  absorb     mla_attention's absorbed order, B1 H32 Sq1 Sk32768 L512 D128: GB/s of the latent
             reads (both latents, once)                  >= 0.8 x copy
  kernels    mla_decode's GPU kernels (the work list, the per-sequence split kernel, the sm_90a
             work-list kernels: 64-row and, for Hq <= 32, narrow; forced through the internal
             _variant) and the one chosen by shape, Hq 16-128: the choice's time <= 1.03 x the
             fastest kernel's
  hopper     the sm_90a kernels forced (_variant "hopper=1", on sm_90 also the default where it
             runs; "narrow=1" where Hq <= 32) at the memory, small, compute, skew and page-16
             shapes, with those rows' aims (FlashMLA's time from the same rows)

Measured as bench.py measures: CUDA events, warm-up, median of --iters calls, the L2 flushed
(256 MB zeroed) before every call, random data and random page tables; ceilings in the same run
(a 1 GiB device-to-device copy, bytes read + written; a kernel that only reads 1 GiB, as a
decode does, through CuPy; a bf16 8192^3 torch.matmul). GB/s of a decode row count the cache
read once; TFLOP/s = 2 B Hq Sq L (576 + 512).

--flashmla DIR: an assembled FlashMLA folder whose build.py builds the dense decode with torch's
extension loader and exposes `mod`; its FLASHMLA_COMMIT and CUTLASS_COMMIT are recorded. Without
it (or if it fails to build) the FlashMLA columns say why and its aims are "not measured".
--dry-run: no GPU, no torch: made-up timings through the same rows, table and JSON.

Writes DIR/<date>_<sha>_<device>_mla.json and prints a table with each aim met or not.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import importlib.util
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import ceilings, git_sha, gpu_session, log  # noqa: E402

DK, DV = 576, 512
# DeepSeek-V3: softmax scale = mscale^2 / sqrt(qk_head_dim = 192), mscale = 0.1 ln(40) + 1 (YaRN).
SCALE = (0.1 * math.log(40) + 1) ** 2 / math.sqrt(192)
GROUPS = ("memory", "small", "compute", "page", "skew", "fp8", "attention", "absorb", "kernels", "hopper")
# mla_decode's internal _variant of each kernel ("hopper=1" / "narrow=1" are a ValueError on devices,
# caches or row counts the sm_90a kernels do not take)
KERNELS = {"list": "list=1", "split": "list=0", "hopper": "hopper=1", "narrow": "narrow=1"}
SLOW_MS = 200  # a per-pair call slower than this is timed once


@dataclasses.dataclass(frozen=True)
class Decode:
    """One mla_decode problem: the cached tokens of each sequence, query heads, page, cache dtype."""
    lens: tuple
    hq: int
    page: int = 64
    fp8: bool = False

    @property
    def batch(self):
        return len(self.lens)

    @property
    def bytes(self):  # the latent cache read once
        return sum(self.lens) * DK * (1 if self.fp8 else 2)

    @property
    def flops(self):
        return 2 * self.hq * sum(self.lens) * (DK + DV)

    def name(self):
        n = len(set(self.lens))
        ctx = f"B{self.batch} L{self.lens[0]}" if n == 1 else \
            f"1x{self.lens[0]}+{self.batch - 1}x{self.lens[1]}"
        return f"{ctx} Hq{self.hq} page {self.page} {'fp8' if self.fp8 else 'bf16'}"


def uniform(B, L, hq, **kw):
    return Decode((L,) * B, hq, **kw)


@dataclasses.dataclass(frozen=True)
class Attention:
    """One mla_attention problem: q [B, H, Sq, D], latents [B, Sk, L], projections [H, L, D]."""
    B: int
    H: int
    Sq: int
    Sk: int
    L: int = 512
    D: int = 128

    def name(self):
        return f"B{self.B} H{self.H} Sq{self.Sq} Sk{self.Sk} L{self.L} D{self.D} causal"

    @property
    def latent_bytes(self):  # both latents read once (bf16)
        return 2 * self.B * self.Sk * self.L * 2


# ---- measuring on the GPU -------------------------------------------------------------------------

def load_flashmla(path, build=True):
    """(module or None, info): FlashMLA's commits and whether its build.py built `mod`."""
    if not path:
        return None, {"status": "not given (--flashmla DIR)"}
    info = {"dir": os.path.abspath(path)}
    if not os.path.isfile(os.path.join(path, "build.py")):
        info["status"] = f"not found (no {os.path.join(path, 'build.py')})"
        return None, info
    for key, fname in (("commit", "FLASHMLA_COMMIT"), ("cutlass_commit", "CUTLASS_COMMIT")):
        try:
            with open(os.path.join(path, fname)) as f:
                info[key] = f.read().strip()
        except OSError:
            info[key] = None
    if not build:
        info["status"] = "not built (dry run)"
        return None, info
    try:
        spec = importlib.util.spec_from_file_location("flashmla_build", os.path.join(path, "build.py"))
        module = importlib.util.module_from_spec(spec)
        t0 = time.time()
        spec.loader.exec_module(module)
        info["status"] = f"built in {time.time() - t0:.0f} s"
        return module.mod, info
    except BaseException as e:  # noqa: BLE001  (a failed build may raise SystemExit too)
        if isinstance(e, KeyboardInterrupt):
            raise
        info["status"] = f"failed to build: {type(e).__name__}: {first_line(e)}"
        return None, info


def first_line(e, n=160):
    s = str(e).strip().splitlines()
    return (s[0] if s else "")[:n]


def flashmla_note(c: Decode, available, status):
    """Why FlashMLA has no time for c, or None when it can run it."""
    if not available:
        return f"FlashMLA {status}"
    if c.fp8 or c.page != 64:
        return "FlashMLA n/a: its dense decode takes bf16 caches of page 64 only"
    return None


def torch_decode(torch, q, cache, table, lens, scale, mask):
    """Plain torch over a paged latent cache: gather the pages, einsum, softmax, einsum.
    q [B, 1, H, 576], cache [N, page, 1, 576]; returns [B, 1, H, 512] in q's dtype."""
    B = q.shape[0]
    if cache.dtype == torch.float8_e4m3fn:  # gathered as bytes, then widened
        kv = cache.view(torch.uint8)[table.long()].view(torch.float8_e4m3fn)
    else:
        kv = cache[table.long()]
    kv = kv.view(B, -1, DK).to(q.dtype)  # [B, max_blocks * page, 576]
    s = torch.einsum("bqhd,bkd->bhqk", q, kv).float() * scale
    if mask:  # sequences shorter than the table: hide the keys past each one's length
        s.masked_fill_(torch.arange(kv.shape[1], device=q.device) >= lens.view(B, 1, 1, 1), float("-inf"))
    p = torch.softmax(s, dim=-1).to(q.dtype)
    return torch.einsum("bhqk,bkd->bqhd", p, kv[..., :DV])


def rel_err(torch, got, want):
    return float((got.float() - want.float()).norm() / want.float().norm())


class Gpu:
    """Times cuattn and its peers on the GPU; every problem measured once (memoised)."""

    def __init__(self, torch, cuattn, timer, flashmla, flashmla_status, read):
        self.torch, self.cuattn, self.timer, self.flashmla = torch, cuattn, timer, flashmla
        self.flashmla_status = flashmla_status
        self.read = read  # ReadCeiling: GB/s of a kernel that only reads n bytes
        self.memo = {}

    def decode(self, c: Decode):
        if c not in self.memo:
            self.memo[c] = self._decode(c)
            self.torch.cuda.empty_cache()
        return self.memo[c]

    def inputs(self, c: Decode):
        """Random bf16 q [B, 1, Hq, 576] and latent cache, its pages in random order: (q, cache,
        block table [B, widest sequence's pages], lens)."""
        torch = self.torch
        per = [-(-L // c.page) for L in c.lens]
        cache = torch.randn(sum(per), c.page, 1, DK, device="cuda", dtype=torch.bfloat16)
        perm = torch.randperm(sum(per), device="cuda", dtype=torch.int32)
        table = torch.zeros(c.batch, max(per), device="cuda", dtype=torch.int32)
        at = 0
        for b, n in enumerate(per):
            table[b, :n] = perm[at:at + n]
            at += n
        lens = torch.tensor(c.lens, device="cuda", dtype=torch.int32)
        q = torch.randn(c.batch, 1, c.hq, DK, device="cuda", dtype=torch.bfloat16)
        return q, cache, table, lens

    def _decode(self, c):
        torch, cuattn, timer = self.torch, self.cuattn, self.timer
        q, cache, table, lens = self.inputs(c)
        width = table.shape[1]
        out = torch.empty(c.batch, 1, c.hq, DV, device="cuda", dtype=torch.bfloat16)
        lse = torch.empty(c.batch, c.hq, 1, device="cuda", dtype=torch.float32)
        kw = {}
        if c.fp8:
            cache, kw = cache.to(torch.float8_e4m3fn), {"kv_scale": 1.0}
        m = {}
        m["cuattn_ms"] = timer(lambda: cuattn.mla_decode(q, cache, table, lens, scale=SCALE, out=out,
                                                         lse_out=lse, **kw))
        plan = cuattn.plan_decode(lens, num_q_heads=c.hq, num_kv_heads=1, head_dim=DK, head_dim_v=DV,
                                  page_size=c.page, device="cuda")
        out_plan = torch.empty_like(out)
        m["cuattn_plan_ms"] = timer(lambda: cuattn.mla_decode(q, cache, table, lens, scale=SCALE, plan=plan,
                                                              out=out_plan, lse_out=lse, **kw))
        m["plan_splits"] = int(plan.max_splits)
        # What reading the same bytes once costs under the same flush (the zeroing flush leaves
        # dirty lines whose write-back lands in every timed call: a fixed cost small rows feel).
        m["read_same_gbps"] = self.read(c.bytes)
        # float32 reference on the first sequences
        n = min(c.batch, 2)
        want = torch_decode(torch, q[:n].float(), cache, table[:n], lens[:n], SCALE, True)
        m["rel_err"] = {"cuattn": rel_err(torch, out[:n], want), "cuattn_plan": rel_err(torch, out_plan[:n], want)}
        mask = any(L != width * c.page for L in c.lens)
        try:
            m["torch_ms"] = timer(lambda: torch_decode(torch, q, cache, table, lens, SCALE, mask))
        except Exception as e:  # noqa: BLE001  (e.g. out of memory)
            m["torch_note"] = f"torch: {type(e).__name__}: {first_line(e)}"
        note = flashmla_note(c, self.flashmla is not None, self.flashmla_status)
        if note:
            m["flashmla_note"] = note
        else:
            try:
                mod = self.flashmla
                o, _, meta, splits = mod.dense_decode_fwd(q, cache, DV, lens, table, SCALE, False, None, None)
                m["flashmla_ms"] = timer(lambda: mod.dense_decode_fwd(q, cache, DV, lens, table, SCALE, False,
                                                                      meta, splits))
                m["rel_err"]["flashmla"] = rel_err(torch, o.reshape(c.batch, 1, c.hq, DV)[:n], want)
            except Exception as e:  # noqa: BLE001
                m["flashmla_note"] = f"FlashMLA failed: {type(e).__name__}: {first_line(e)}"
        return m

    def kernels(self, c: Decode):
        """Times of mla_decode with the kernel chosen by shape and with each kernel forced, and
        each forced kernel's output against the chosen one's (rel_err)."""
        key = ("kernels", c)
        if key not in self.memo:
            torch, cuattn = self.torch, self.cuattn
            q, cache, table, lens = self.inputs(c)
            run = lambda v: cuattn.mla_decode(q, cache, table, lens, scale=SCALE, _variant=v)  # noqa: E731
            want = run("")[0]
            m = {"chosen_ms": self.timer(lambda: run("")), "rel_err": {}, "notes": []}
            for k, v in KERNELS.items():
                try:  # hopper=1 / narrow=1: a ValueError where the sm_90a kernel cannot run the call
                    m["rel_err"][k] = rel_err(torch, run(v)[0], want)
                    m[f"{k}_ms"] = self.timer(lambda v=v: run(v))
                except ValueError as e:
                    m[f"{k}_ms"] = None
                    m["notes"].append(f"{k}: {first_line(e)}")
            self.memo[key] = m
            del cache
            torch.cuda.empty_cache()
        return self.memo[key]

    def attention(self, c: Attention, methods):
        key = (c, tuple(methods))
        if key not in self.memo:
            self.memo[key] = self._attention(c, methods)
            self.torch.cuda.empty_cache()
        return self.memo[key]

    def _attention(self, c, methods):
        torch, cuattn, timer = self.torch, self.cuattn, self.timer
        q = torch.randn(c.B, c.H, c.Sq, c.D, device="cuda", dtype=torch.bfloat16)
        kl = torch.randn(c.B, c.Sk, c.L, device="cuda", dtype=torch.bfloat16)
        vl = torch.randn_like(kl)
        # Projections scaled by 1/sqrt(L) so that the expanded K and V have unit variance.
        kp = torch.randn(c.H, c.L, c.D, device="cuda", dtype=torch.bfloat16) / math.sqrt(c.L)
        vp = torch.randn_like(kp) / math.sqrt(c.L)
        m, outs = {}, {}
        for method in methods:
            out = outs[method] = torch.empty(c.B, c.H, c.Sq, c.D, device="cuda", dtype=torch.bfloat16)
            fn = lambda: cuattn.mla_attention(q, kl, vl, kp, vp, causal=True, out=out, _method=method)  # noqa: E731
            if method == "per_pair":
                m["per_pair_ms"], m["per_pair_timed_once"] = self.time_slow(fn)
            else:
                m[f"{method}_ms"] = timer(fn)

        def plain():  # materialise in torch: expand the latents per head, then SDPA
            k = torch.einsum("bsl,hld->bhsd", kl, kp)
            v = torch.einsum("bsl,hld->bhsd", vl, vp)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=c.Sq == c.Sk)
        try:  # (SDPA's is_causal is top-left; at Sq == Sk it is the same mask, at Sq 1 none is needed)
            m["torch_ms"] = timer(plain)
            want = plain()
            m["rel_err"] = {k: rel_err(torch, o, want) for k, o in outs.items()}
        except Exception as e:  # noqa: BLE001
            m["torch_note"] = f"torch: {type(e).__name__}: {first_line(e)}"
        return m

    def time_slow(self, fn):
        """(ms, timed_once): one call timed alone after a flush; when slower than SLOW_MS that is
        the answer, else the Timer's median."""
        torch = self.torch
        torch.cuda.synchronize()
        self.timer.flush()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ms = s.elapsed_time(e)
        return (ms, True) if ms > SLOW_MS else (self.timer(fn), False)


class DryRun:
    """Made-up timings with the shape of real ones (no GPU, no torch): for checking the rows,
    the table and the JSON."""

    ceilings = {"gemm_bf16_tflops": 690.0, "copy_gbps": 4250.0, "read_gbps": 4500.0}

    def __init__(self, flashmla_status):
        self.flashmla_status = flashmla_status

    def decode(self, c: Decode):
        ms = max(c.bytes / (0.86 * self.ceilings["copy_gbps"] * 1e6), c.flops / (0.8 * self.ceilings["gemm_bf16_tflops"] * 1e9))
        ms = ms * (1.03 if c.page == 16 else 1.0) + 0.004
        m = {"cuattn_ms": ms, "cuattn_plan_ms": ms * 0.98, "plan_splits": 2, "torch_ms": ms * 4.6,
             "rel_err": {"cuattn": 2e-3, "cuattn_plan": 2e-3},
             "read_same_gbps": c.bytes / (c.bytes / (self.ceilings["read_gbps"] * 1e6) + 0.012) / 1e6}
        note = flashmla_note(c, self.flashmla_status == "not built (dry run)", self.flashmla_status)
        if note:
            m["flashmla_note"] = note
        else:
            m["flashmla_ms"] = ms * 1.08
        return m

    def kernels(self, c: Decode):
        ms = self.decode(c)["cuattn_ms"]
        return {"chosen_ms": ms, "list_ms": ms * (1.0 if c.hq <= 64 else 1.1), "split_ms": ms * (3.0 if c.hq <= 64 else 1.0),
                "hopper_ms": ms * 0.9, "narrow_ms": ms * 0.8 if c.hq <= 32 else None,
                "rel_err": {k: 1e-3 for k in KERNELS if k != "narrow" or c.hq <= 32},
                "notes": [] if c.hq <= 32 else ["narrow: (dry run) more than 32 query rows"]}

    def attention(self, c: Attention, methods):
        m = {"torch_ms": 9.0, "rel_err": {k: 3e-3 for k in methods}}
        for k in methods:
            m[f"{k}_ms"] = {"per_pair": 3100.0, "auto": 1.9, "materialise": 1.9, "absorb": 0.021}[k]
        if "per_pair" in methods:
            m["per_pair_timed_once"] = True
        return m


# ---- rows and aims --------------------------------------------------------------------------------

def aim(vs, ratio, target, higher_is_better=True):
    """One aim of a row: ratio against `vs`, met when >= target (or <= when not higher_is_better);
    ratio None: not measured."""
    if ratio is None:
        met = None
    else:
        met = ratio >= target if higher_is_better else ratio <= target
    return {"vs": vs, "ratio": ratio, "aim": target, "cmp": ">=" if higher_is_better else "<=", "met": met}


def div(a, b):
    return a / b if a is not None and b else None


def decode_row(group, c, m, ceil, aims=()):
    """A decode row: cuattn's rates, the peers' times as speed-ups, and the aims that need only this
    row (copy, GEMM, FlashMLA)."""
    ms = m["cuattn_ms"]
    gbps, tflops = c.bytes / ms / 1e6, c.flops / ms / 1e9
    row = {"group": group, "row": c.name(), "ms": ms, "gbps": gbps, "tflops": tflops,
           "plan_ms": m.get("cuattn_plan_ms"), "plan_splits": m.get("plan_splits"),
           "torch_ms": m.get("torch_ms"), "flashmla_ms": m.get("flashmla_ms"),
           "x_torch": div(m.get("torch_ms"), ms), "x_flashmla": div(m.get("flashmla_ms"), ms),
           "rel_err": m.get("rel_err"), "notes": [m[k] for k in ("torch_note", "flashmla_note") if k in m],
           "x_read": div(gbps, ceil.get("read_gbps")), "read_same_gbps": m.get("read_same_gbps"),
           "x_read_same": div(gbps, m.get("read_same_gbps")), "aims": []}
    if row["x_read"] is not None:
        row["notes"].append(f"{row['x_read']:.2f} x pure read")
    if row["x_read_same"] is not None:
        row["notes"].append(f"{row['x_read_same']:.2f} x a pure read of the same bytes "
                            f"({m['read_same_gbps']:.0f} GB/s = {m['read_same_gbps'] / ceil['copy_gbps']:.2f} x copy)")
    for vs, target in aims:
        ratio = {"copy": div(gbps, ceil["copy_gbps"]), "GEMM": div(tflops, ceil["gemm_bf16_tflops"]),
                 "FlashMLA": row["x_flashmla"]}[vs]
        row["aims"].append(aim(vs, ratio, target))
    return row


MEMORY = [uniform(B, L, 16) for B in (64, 128) for L in (4096, 8192)]
COMPUTE = [uniform(B, L, 128) for B in (64, 128) for L in (4096, 8192)]
PAGE = [uniform(64, 8192, 16), uniform(64, 4096, 128)]
SKEW = Decode((65536,) + (512,) * 63, 16)
KERNEL_CASES = [uniform(16, 8192, 16), uniform(32, 4096, 16), uniform(64, 4096, 32), uniform(64, 4096, 64),
                uniform(1, 32768, 128), uniform(64, 4096, 128), uniform(128, 8192, 128)]
PREFILL = Attention(1, 32, 4096, 4096)
ABSORB = Attention(1, 32, 1, 32768)


def rows_for(group, src, ceil):
    if group == "memory":
        return [decode_row(group, c, src.decode(c), ceil, [("copy", 0.90), ("FlashMLA", 1.1)]) for c in MEMORY]
    if group == "small":
        return [decode_row(group, c, src.decode(c), ceil, [("copy", a)])
                for c, a in ((uniform(16, 8192, 16), 0.8), (uniform(1, 32768, 128), 0.6))]
    if group == "compute":
        return [decode_row(group, c, src.decode(c), ceil, [("FlashMLA", 1.05), ("GEMM", 0.87)]) for c in COMPUTE]
    if group == "skew":
        return [decode_row(group, SKEW, src.decode(SKEW), ceil, [("copy", 0.8)])]
    if group == "page":
        rows = []
        for c64 in PAGE:
            c16 = dataclasses.replace(c64, page=16)
            row = decode_row(group, c16, src.decode(c16), ceil)
            row["aims"].append(aim("page 64 time", div(row["ms"], src.decode(c64)["cuattn_ms"]), 1.05, False))
            rows.append(row)
        return rows
    if group == "fp8":
        rows = []
        for c16 in MEMORY:
            c8 = dataclasses.replace(c16, fp8=True)
            row = decode_row(group, c8, src.decode(c8), ceil)
            row["aims"].append(aim("bf16 time", div(src.decode(c16)["cuattn_ms"], row["ms"]), 1.6))
            rows.append(row)
        return rows
    if group == "attention":
        c = PREFILL
        m = src.attention(c, ("auto", "per_pair"))
        ms = m["auto_ms"]
        flops = 2 * c.B * c.Sk * c.H * c.L * 2 * c.D + 2 * 2 * c.D * c.B * c.H * c.Sq * (c.Sk + 1) / 2
        row = {"group": group, "row": f"mla_attention {c.name()}", "ms": ms, "tflops": flops / ms / 1e9,
               "per_pair_ms": m["per_pair_ms"], "per_pair_timed_once": m.get("per_pair_timed_once"),
               "torch_ms": m.get("torch_ms"), "x_torch": div(m.get("torch_ms"), ms), "rel_err": m.get("rel_err"),
               "notes": [m["torch_note"]] if "torch_note" in m else [],
               "aims": [aim("per_pair", div(m["per_pair_ms"], ms), 50)]}
        if m.get("per_pair_timed_once"):
            row["notes"].append("per_pair timed once")
        return [row]
    if group == "absorb":
        c = ABSORB
        m = src.attention(c, ("absorb",))
        ms = m["absorb_ms"]
        gbps = c.latent_bytes / ms / 1e6
        return [{"group": group, "row": f"mla_attention absorb {c.name()}", "ms": ms, "gbps": gbps,
                 "torch_ms": m.get("torch_ms"), "x_torch": div(m.get("torch_ms"), ms), "rel_err": m.get("rel_err"),
                 "notes": [m["torch_note"]] if "torch_note" in m else [],
                 "aims": [aim("copy", div(gbps, ceil["copy_gbps"]), 0.8)]}]
    if group == "kernels":
        rows = []
        for c in KERNEL_CASES:
            m = src.kernels(c)
            ms = m["chosen_ms"]
            ran = [k for k in KERNELS if m[f"{k}_ms"] is not None]
            best = min(m[f"{k}_ms"] for k in ran)
            rows.append({"group": group, "row": c.name(), "ms": ms, "gbps": c.bytes / ms / 1e6,
                         "tflops": c.flops / ms / 1e9, **{f"{k}_ms": m[f"{k}_ms"] for k in KERNELS},
                         "rel_err": m["rel_err"],
                         "notes": [", ".join(f"{k} {m[f'{k}_ms']:.4f} ms" for k in ran)] + m.get("notes", []),
                         "aims": [aim("fastest kernel", div(ms, best), 1.03, False)]})
        return rows
    if group == "hopper":
        rows = []
        cases = ([(c, [("copy", 0.90), ("FlashMLA", 1.1)]) for c in MEMORY]
                 + [(uniform(16, 8192, 16), [("copy", 0.8)]), (uniform(1, 32768, 128), [("copy", 0.6)])]
                 + [(c, [("FlashMLA", 1.05), ("GEMM", 0.87)]) for c in COMPUTE]
                 + [(SKEW, [("copy", 0.8)])] + [(dataclasses.replace(c, page=16), []) for c in PAGE])
        for kernel in ("hopper", "narrow"):
            for c, aims in cases:
                k = src.kernels(c)
                if k[f"{kernel}_ms"] is None:  # no sm_90a kernel here: the kernels rows say why
                    log(f"{kernel} {c.name()}: not run ({'; '.join(k.get('notes', []))})")
                    continue
                d = src.decode(c)
                m = {"cuattn_ms": k[f"{kernel}_ms"], "torch_ms": d.get("torch_ms"), "flashmla_ms": d.get("flashmla_ms"),
                     "rel_err": {f"{kernel} vs default": k["rel_err"][kernel]}}
                m.update({n: d[n] for n in ("torch_note", "flashmla_note") if n in d})
                row = decode_row(group, c, m, ceil, aims)
                row["row"] = f"{c.name()} [{KERNELS[kernel]}]"
                if c.page == 16:
                    c64 = dataclasses.replace(c, page=64)
                    row["aims"].append(aim("page 64 time", div(row["ms"], src.kernels(c64)[f"{kernel}_ms"] or math.nan),
                                           1.05, False))
                rows.append(row)
        return rows
    raise ValueError(f"unknown row group {group!r}")


# ---- report ---------------------------------------------------------------------------------------

def fmt(x, spec):
    """x formatted by spec, or "-" as wide when there is no x."""
    if x is not None:
        return format(x, spec)
    width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
    return format("-", ">" + width)


def table(res):
    c, peer = res["ceilings"], res["peers"]["flashmla"]
    lines = [f"MLA on {res['device']} (sha {res['git_sha']}, {res['date']})"
             + ("  DRY RUN: made-up timings" if res.get("dry_run") else ""),
             f"ceilings: copy {c['copy_gbps']:.0f} GB/s, pure read {c.get('read_gbps') or 0:.0f} GB/s, "
             f"bf16 GEMM {c['gemm_bf16_tflops']:.0f} TFLOP/s; "
             f"FlashMLA {peer.get('commit') or '-'} (cutlass {peer.get('cutlass_commit') or '-'}): {peer['status']}",
             f"{'group':<9} {'row':<58} {'ms':>9} {'GB/s':>6} {'TFLOP/s':>7} {'x torch':>7} {'x FlashMLA':>10}  aims"]
    met = missed = unknown = 0
    for r in res["rows"]:
        parts = []
        for a in r["aims"]:
            verdict = "not measured" if a["met"] is None else ("met" if a["met"] else "MISSED")
            parts.append(f"{fmt(a['ratio'], '.2f')} x {a['vs']} ({a['cmp']} {a['aim']}) {verdict}")
            met += a["met"] is True
            missed += a["met"] is False
            unknown += a["met"] is None
        if r.get("per_pair_ms") is not None:
            parts.append(f"per_pair {r['per_pair_ms']:.1f} ms")
        if r.get("flashmla_ms"):
            xf = fmt(r.get("x_flashmla"), ".2f")
        else:  # n/a where FlashMLA could have run this row and did not
            xf = "n/a" if any(n.startswith("FlashMLA") for n in r.get("notes", [])) else "-"
        lines.append(f"{r['group']:<9} {r['row']:<58} {fmt(r.get('ms'), '9.4f')} {fmt(r.get('gbps'), '6.0f')} "
                     f"{fmt(r.get('tflops'), '7.1f')} {fmt(r.get('x_torch'), '7.2f')} {xf:>10}  " + "; ".join(parts)
                     + (f"  [{'; '.join(r['notes'])}]" if r.get("notes") else ""))
    lines.append(f"aims: {met} met, {missed} missed, {unknown} not measured")
    res["summary"] = {"met": met, "missed": missed, "not_measured": unknown}
    return "\n".join(lines)


def failed_row(group, e):
    return {"group": group, "row": f"{group}: failed", "notes": [f"{type(e).__name__}: {first_line(e)}"],
            "aims": [aim("-", None, 0)]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flashmla", metavar="DIR", help="an assembled FlashMLA folder (its build.py exposes `mod`)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="where the JSON goes")
    ap.add_argument("--iters", type=int, default=30, help="timed calls per measurement (median)")
    ap.add_argument("--rows", default=",".join(GROUPS), help="comma list of row groups: " + ", ".join(GROUPS))
    ap.add_argument("--dry-run", action="store_true", help="made-up timings, no GPU or torch needed")
    a = ap.parse_args(argv)
    groups = a.rows.split(",")
    bad = [g for g in groups if g not in GROUPS]
    if bad:
        ap.error(f"--rows: unknown group(s) {', '.join(bad)}; choose from {', '.join(GROUPS)}")
    if a.iters < 1:
        ap.error(f"--iters must be >= 1, got {a.iters}")

    date = _dt.datetime.now().isoformat(timespec="seconds")
    if a.dry_run:
        flashmla, peer = load_flashmla(a.flashmla, build=False)
        src = DryRun(peer["status"])
        res = {"git_sha": git_sha(), "device": "dry-run", "date": date, "dry_run": True,
               "ceilings": dict(DryRun.ceilings)}
    else:
        session = gpu_session("mla_bench.py", a.iters, hint="; --dry-run checks the report without them")
        if session is None:
            return 77
        torch, cuattn, timer, res = session
        res["iters"] = a.iters
        props = torch.cuda.get_device_properties(0)
        log(f"MLA bench on {props.name} (sha {res['git_sha']})")
        res["ceilings"] = ceilings(torch, timer)
        # A kernel that only reads (1 GiB, best of a few grids; None without CuPy): what a decode
        # that reads its cache once could reach, above a copy's read + write rate.
        from decode_targets import ReadCeiling
        read = ReadCeiling(torch, timer, props.multi_processor_count)
        res["ceilings"]["read_gbps"] = read(1 << 30)
        log(f"  ceilings: copy {res['ceilings']['copy_gbps']:.0f} GB/s, GEMM {res['ceilings']['gemm_bf16_tflops']:.0f} TFLOP/s, "
            f"pure read {res['ceilings']['read_gbps'] or 0:.0f} GB/s")
        flashmla, peer = load_flashmla(a.flashmla)
        log(f"  FlashMLA: {peer['status']}")
        src = Gpu(torch, cuattn, timer, flashmla, peer["status"], read)
    res["peers"] = {"flashmla": peer}
    res["rows"] = []
    for g in groups:
        log(f"  {g}")
        try:
            res["rows"] += rows_for(g, src, res["ceilings"])
        except Exception as e:  # noqa: BLE001  (one group's failure must not lose the others)
            res["rows"].append(failed_row(g, e))
    report = table(res)
    os.makedirs(a.out, exist_ok=True)
    stem = f"{res['date'][:10]}_{res['git_sha']}_{res['device'].replace(' ', '_')}_mla"
    path = os.path.join(a.out, stem + ".json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1, default=float)
    log("")
    log(report)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
