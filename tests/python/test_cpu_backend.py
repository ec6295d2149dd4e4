"""The CPU backend as a fallback: scores that overflow float32, index arrays read with their
strides, varlen documents without queries, the thread-count setting, and tile boundaries
(sizes around the backend's 128-row / 128-key tiles) against the float64 oracle."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cuattn
from conftest import assert_close, assert_lse
from oracle import attention_ref, paged_ref

F32_MAX = float(np.finfo(np.float32).max)


def _scores(q, k, scale):
    """float64 scores [B, H, Sq, Sk] of bshd q, k (same head count)."""
    return np.einsum("bqhd,bkhd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale


@pytest.mark.parametrize("causal", [False, True])
def test_overflowing_scores_single_winner(rng, causal):
    # One key per row scores ~1e40 (beyond float32), the others are ordinary: the softmax is
    # one-hot on that key, lse is +inf (its float32 value), and nothing is NaN.
    B, S, H, D = 1, 37, 2, 16
    q = rng.standard_normal((B, S, H, D)).astype(np.float32)
    k = rng.standard_normal((B, S, H, D)).astype(np.float32)
    v = rng.standard_normal((B, S, H, D)).astype(np.float32)
    q[..., 0] = 1e20
    k[..., 0] = 0.0
    k[:, 0, :, 0] = 1e20  # key 0 wins every row (visible from every row under causal too)
    out, lse = cuattn.attention(q, k, v, causal=causal, return_lse=True)
    assert not np.isnan(out).any() and not np.isnan(lse).any()
    np.testing.assert_array_equal(out, np.broadcast_to(v[:, :1], out.shape))
    assert np.all(lse == np.inf)


@pytest.mark.parametrize("softcap", [0.0, 30.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_huge_inputs_never_nan(rng, softcap, sign):
    # q and k near 1e20: every float32 dot product overflows (to inf, or inf - inf = NaN).
    B, Sq, Sk, H, D = 2, 9, 150, 2, 24
    q = (rng.standard_normal((B, Sq, H, D)) * 1e20).astype(np.float32)
    k = (sign * rng.standard_normal((B, Sk, H, D)) * 1e20).astype(np.float32)
    v = rng.standard_normal((B, Sk, H, D)).astype(np.float32)
    scale = 1.0 / np.sqrt(D)
    out, lse = cuattn.attention(q, k, v, softcap=softcap, return_lse=True)
    assert np.isfinite(out).all() and not np.isnan(lse).any()
    if softcap == 0:
        assert np.isfinite(cuattn.naive_attention(q, k, v, causal=True)).all()
    s = _scores(q, k, scale)
    if softcap > 0:  # capped scores are ordinary: the oracle's answer, to float32 precision
        ref_out, ref_lse = attention_ref(q, k, v, softcap=softcap, scale=scale)
        assert_close(out, ref_out, np.float32, rtol=1e-4)
        assert_lse(lse, ref_lse, np.float32, tol=1e-4)
    else:
        # Rows whose max score is beyond float32: lse +inf; out is an average of the values of
        # the keys whose scores overflowed, so within the range of v.
        top = s.max(-1)
        np.testing.assert_array_equal(lse == np.inf, top > F32_MAX)
        lo, hi = v.min(1, keepdims=True), v.max(1, keepdims=True)
        assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()


def _paged_case(rng, B=2, Sq=3, H=2, D=16, ps=4, pages=12):
    q = rng.standard_normal((B, Sq, H, D)).astype(np.float32)
    kc = rng.standard_normal((pages, ps, H, D)).astype(np.float32)
    vc = rng.standard_normal((pages, ps, H, D)).astype(np.float32)
    return q, kc, vc


def test_strided_index_arrays(rng):
    q, kc, vc = _paged_case(rng)
    strided = np.array([9, 99, 5, 99], np.int32)[::2]  # stride 2: [9, 5]
    wide = np.full((4, 6), 999, np.int32)
    wide[0, :3], wide[2, :2] = [3, 7, 1], [10, 4]
    block_table = wide[::2, :4]  # row stride 12, a view into a wider table
    # 1-D index arrays must be contiguous (the GPU kernels read them so): a clear error, no crash.
    with pytest.raises(ValueError, match="seq_lens"):
        cuattn.paged_attention(q, kc, vc, block_table, strided)
    seq_lens = np.ascontiguousarray(strided)
    out, lse = cuattn.paged_attention(q, kc, vc, block_table, seq_lens, return_lse=True)
    ref_out, ref_lse = paged_ref(q, kc, vc, np.ascontiguousarray(block_table),
                                 np.ascontiguousarray(seq_lens))
    assert_close(out, ref_out, np.float32)
    assert_lse(lse, ref_lse, np.float32)


def test_varlen_document_without_queries_reads_no_keys():
    # Document 1 has no queries and 2^22 keys. Its K/V are np.zeros (pages the kernel has not
    # touched cost no memory): converting them, as a per-document copy would, takes ~1 GiB.
    code = textwrap.dedent("""
        import resource, numpy as np, cuattn
        n, H, D = 1 << 22, 1, 64
        q = np.ones((3, H, D), np.float16)
        k = np.zeros((n + 5, H, D), np.float16)
        v = np.zeros((n + 5, H, D), np.float16)
        cu_q = np.array([0, 3, 3], np.int32)
        cu_k = np.array([0, 5, n + 5], np.int32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = cuattn.attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert out.shape == (3, H, D) and np.all(out == 0), out
        print(grew)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    grew_kib = int(res.stdout.split()[-1])
    assert grew_kib < 64 * 1024, f"peak memory grew by {grew_kib} KiB"


def test_num_threads_setting(rng):
    default = cuattn.get_num_threads()
    assert default >= 1
    q = rng.standard_normal((2, 130, 4, 32)).astype(np.float32)
    k = rng.standard_normal((2, 200, 2, 32)).astype(np.float32)
    v = rng.standard_normal((2, 200, 2, 32)).astype(np.float32)
    try:
        outs = []
        for n in (1, 3):
            cuattn.set_num_threads(n)
            assert cuattn.get_num_threads() == n
            outs.append(cuattn.attention(q, k, v, causal=True))
        np.testing.assert_array_equal(outs[0], outs[1])  # work split never changes the numbers
        for bad in (0, -2):
            with pytest.raises(ValueError, match="set_num_threads"):
                cuattn.set_num_threads(bad)
        with pytest.raises(TypeError):
            cuattn.set_num_threads("2")
    finally:
        cuattn.set_num_threads(default)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sq,sk", [(1, 1), (127, 129), (128, 128), (129, 300), (300, 129),
                                   (257, 257)])
@pytest.mark.parametrize("mask", ["none", "causal", "window", "causal+window"])
def test_tile_boundaries(rng, dtype, sq, sk, mask):
    from conftest import randn
    causal = "causal" in mask
    window = (37, 5) if "window" in mask else None
    if causal and window:
        window = (37, 0)
    q, k, v = (randn(rng, (1, s, 2, 40), dtype) for s in (sq, sk, sk))
    out, lse = cuattn.attention(q, k, v, causal=causal, window=window, return_lse=True)
    ref_out, ref_lse = attention_ref(q, k, v, causal=causal, window=window)
    assert_close(out, ref_out, np.dtype(dtype))
    assert_lse(lse, ref_lse, np.dtype(dtype))


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (False, (50, 3))])
def test_gqa_heads_packed_across_tiles(rng, causal, window):
    # Hq / Hkv = 4: the four query heads of a kv head share the tiles' rows (300 positions x 4
    # heads = 1200 rows, several tiles); sinks and lse are per head.
    from conftest import randn
    q = randn(rng, (2, 300, 8, 24), "float32")
    k = randn(rng, (2, 311, 2, 24), "float32")
    v = randn(rng, (2, 311, 2, 40), "float32")
    sinks = rng.standard_normal(8).astype(np.float32)
    out, lse = cuattn.attention(q, k, v, causal=causal, window=window, sinks=sinks,
                                return_lse=True)
    ref_out, ref_lse = attention_ref(q, k, v, causal=causal, window=window, sinks=sinks)
    assert_close(out, ref_out, np.float32)
    assert_lse(lse, ref_lse, np.float32)


def test_paged_gqa_several_query_tiles(rng):
    B, Sq, Hq, Hkv, D, ps, pages = 2, 70, 8, 2, 32, 16, 30
    q = rng.standard_normal((B, Sq, Hq, D)).astype(np.float32)
    kc = rng.standard_normal((pages, ps, Hkv, D)).astype(np.float32)
    vc = rng.standard_normal((pages, ps, Hkv, D)).astype(np.float32)
    block_table = rng.permutation(pages).astype(np.int32)[:2 * 15].reshape(2, 15)
    seq_lens = np.array([201, 70], np.int32)
    sinks = rng.standard_normal(Hq).astype(np.float32)
    out, lse = cuattn.paged_attention(q, kc, vc, block_table, seq_lens, sinks=sinks,
                                      window=40, return_lse=True)
    ref_out, ref_lse = paged_ref(q, kc, vc, block_table, seq_lens, sinks=sinks, window=40)
    assert_close(out, ref_out, np.float32)
    assert_lse(lse, ref_lse, np.float32)


def test_forked_child_runs_after_the_parent_used_threads():
    # The pool's threads do not survive fork(): a child (a multiprocessing worker) must still run
    # (on one thread) instead of waiting for them forever. A subprocess, so a hang is a failure.
    code = textwrap.dedent("""
        import os, numpy as np, cuattn
        cuattn.set_num_threads(2)
        q = np.random.default_rng(0).random((1, 300, 4, 32), dtype=np.float32)
        ref = cuattn.attention(q, q, q, causal=True)
        pid = os.fork()
        if pid == 0:
            out = cuattn.attention(q, q, q, causal=True)
            os._exit(0 if np.array_equal(out, ref) else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert np.array_equal(cuattn.attention(q, q, q, causal=True), ref)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
