"""CUDA-graph capture and workspaces: a call under capture either uses memory that outlives the
graph (a plan's workspace, or the plan-less paged workspace that the stream already holds) or is
refused with a ValueError before anything is captured. GPU only (through torch.cuda.graph):
every case skips with a reason elsewhere.

- mla_decode without plan= on a split-KV shape, mla_attention in either exact order,
  naive_attention, check=True: refused, naming what to do instead; the capture stays usable;
- mla_attention with _method='per_pair' (no temporaries) is captured and replays correctly;
- paged_attention without a plan: a graph captured with the stream's workspace replays
  correctly after later eager calls on that stream grew (and replaced) the workspace.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (assert_close, assert_lse, gpu_framework, gpu_skip_reason, randn, to_device,
                      to_host)
from test_mla import KV_DIM, DecodeCase, build_decode, mla_tol
from test_paged import PagedCase, build_paged


@pytest.fixture
def torch():
    reason = gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    if gpu_framework() != "torch":
        pytest.skip("CUDA-graph capture is exercised through torch.cuda.graph")
    import torch

    return torch


def capture(torch, fn):
    """Captures fn() into a new graph on a side stream (warm-up first, as torch requires) and
    returns the graph; an exception of fn() propagates once the capture has ended."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    return g


def test_mla_decode_without_plan_refused(rng, torch):
    """A split-KV shape (a long sequence, few CTAs) would allocate its workspace: ValueError
    naming plan=, raised before anything was captured (the same stream then captures a call with
    a plan and replays it)."""
    case = DecodeCase((4000,), 16, 16)
    q, cache, table, sl = build_decode(rng, case, "bfloat16")
    args = [to_device(x, "cuda") for x in (q, cache, table, sl)]
    out = to_device(np.zeros((1, 1, case.hq, 512), np.float32), "cuda").to(torch.bfloat16)
    lse = to_device(np.zeros((1, case.hq, 1), np.float32), "cuda")
    with pytest.raises(ValueError, match="plan="):
        capture(torch, lambda: cuattn.mla_decode(*args, scale=0.1, out=out, lse_out=lse))
    plan = cuattn.plan_decode(sl, num_q_heads=case.hq, num_kv_heads=1, head_dim=KV_DIM,
                              head_dim_v=512, page_size=case.page, device="cuda")
    assert plan.max_splits > 1
    cuattn.mla_decode(*args, scale=0.1, plan=plan, out=out, lse_out=lse)  # warm-up
    g = capture(torch, lambda: cuattn.mla_decode(*args, scale=0.1, plan=plan, out=out, lse_out=lse))
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    ref, ref_lse = oracle.mla_decode_ref(q, cache, table, sl, scale=0.1)
    assert_close(out, ref, "bfloat16")
    assert_lse(lse, ref_lse, "bfloat16")


@pytest.mark.parametrize("method", ["auto", "materialise", "absorb", "per_pair"])
def test_mla_attention_under_capture(rng, torch, method):
    """Both exact orders allocate temporaries: refused under capture (ValueError naming plan=);
    the per-pair baseline allocates nothing and is captured and replayed."""
    b, h, sq, sk, d, lat, dv = 1, 4, 3, 40, 64, 64, 64
    q = randn(rng, (b, h, sq, d), "bfloat16")
    kl, vl = randn(rng, (b, sk, lat), "bfloat16"), randn(rng, (b, sk, lat), "bfloat16")
    kp = randn(rng, (h, lat, d), "bfloat16", scale=1 / math.sqrt(lat))
    vp = randn(rng, (h, lat, dv), "bfloat16", scale=1 / math.sqrt(lat))
    dev = [to_device(x, "cuda") for x in (q, kl, vl, kp, vp)]
    out = torch.zeros((b, h, sq, dv), dtype=torch.bfloat16, device="cuda")
    cuattn.mla_attention(*dev, out=out, _method=method)  # warm-up
    if method != "per_pair":
        with pytest.raises(ValueError, match="plan="):
            capture(torch, lambda: cuattn.mla_attention(*dev, out=out, _method=method))
        return
    g = capture(torch, lambda: cuattn.mla_attention(*dev, out=out, _method=method))
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    ref, _ = oracle.mla_ref(q, kl, vl, kp, vp)
    assert_close(out, ref, "bfloat16", **mla_tol("bfloat16"))


def test_naive_and_check_refused_under_capture(rng, torch):
    """naive_attention allocates its score matrix, check=True syncs: both refused under capture."""
    q = to_device(randn(rng, (1, 8, 2, 64), "bfloat16"), "cuda")
    out = torch.empty_like(q)
    with pytest.raises(ValueError, match="capture"):
        capture(torch, lambda: cuattn.naive_attention(q, q, q, out=out))
    case = PagedCase((40, 9), 16, d=128)
    dev, _ = build_paged(rng, case, "bfloat16", "bfloat16", "cuda")
    out = torch.empty((2, case.hq, case.d), dtype=torch.bfloat16, device="cuda")
    with pytest.raises(ValueError, match="check=True"):
        capture(torch, lambda: cuattn.paged_attention(
            dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"],
            check=True, out=out))


def test_paged_workspace_outlives_capture(rng, torch):
    """A plan-less paged call captured with the stream's split-KV workspace: later eager calls
    on that stream that need a larger workspace (and one of the same size) must not free or
    reuse the captured one. The graph, replayed after them, matches the oracle and the eager
    result bit for bit."""
    small = PagedCase((3000, 700), 16, hq=8, hkv=2, d=128)
    big = PagedCase((9000, 8000, 7000, 6000), 16, hq=8, hkv=2, d=128)
    dev, host = build_paged(rng, small, "bfloat16", "bfloat16", "cuda")
    args = (dev["q"], dev["k_cache"], dev["v_cache"], dev["block_table"], dev["seq_lens"])
    out = torch.full((2, small.hq, small.d), float("nan"), dtype=torch.bfloat16, device="cuda")
    lse = torch.full((2, small.hq), float("nan"), dtype=torch.float32, device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        cuattn.paged_attention(*args, out=out, lse_out=lse)  # sizes the stream's workspace
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            cuattn.paged_attention(*args, out=out, lse_out=lse)
        # eager calls on the same stream: one that grows the workspace, one of the first size
        bdev, bhost = build_paged(rng, big, "bfloat16", "bfloat16", "cuda")
        bout = cuattn.paged_attention(bdev["q"], bdev["k_cache"], bdev["v_cache"],
                                      bdev["block_table"], bdev["seq_lens"])
        eager, eager_lse = cuattn.paged_attention(*args, return_lse=True)
        out.fill_(float("nan"))
        g.replay()
    torch.cuda.synchronize()
    ref, ref_lse = oracle.paged_ref(host["q"], host["k_cache"], host["v_cache"],
                                    host["block_table"], host["seq_lens"])
    assert_close(out, ref, "bfloat16")
    assert_lse(lse, ref_lse, "bfloat16")
    assert np.array_equal(to_host(out).astype(np.float32), to_host(eager).astype(np.float32))
    assert np.array_equal(to_host(lse), to_host(eager_lse))
    bref, _ = oracle.paged_ref(bhost["q"], bhost["k_cache"], bhost["v_cache"],
                               bhost["block_table"], bhost["seq_lens"])
    assert_close(bout, bref, "bfloat16")
