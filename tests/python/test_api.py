"""The Python API around the C++ core: argument structs filled by name, merge_states of varlen
results, default devices of cuattn.asarray / cuattn.empty, PyTorch autograd and JAX arrays."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (BF16, assert_close, assert_lse, device_dtype_params, f64, has_gpu,
                      int_array, make_input, poisoned, randn, skip_unless_gpu, to_device)
from cuattn import _cuattn

# ---- the named argument structs -------------------------------------------------------------------


def test_args_defaults_match_cpp():
    a = _cuattn.AttentionArgs()
    assert (a.causal, a.window_left, a.window_right, a.scale, a.softcap) == (False, -1, -1, -1, 0)
    assert (a.max_seqlen_q, a.max_seqlen_k, a.layout, a.check) == (-1, -1, "bshd", False)
    assert not a.q and not a.block_mask
    p = _cuattn.PagedArgs()
    assert (p.causal, p.kv_layout, p.k_scale, p.plan) == (True, "NHD", 1.0, False)
    assert _cuattn.MlaDecodeArgs().head_dim_v == 512


def test_struct_call_by_name_equals_public_call(rng):
    q, k, v = randn(rng, (2, 7, 4, 32)), randn(rng, (2, 9, 2, 32)), randn(rng, (2, 9, 2, 32))
    a = _cuattn.AttentionArgs()
    a.q, a.k, a.v = q.__dlpack__(), k.__dlpack__(), v.__dlpack__()
    out = np.full((2, 7, 4, 32), np.nan, np.float32)
    a.out = out.__dlpack__()
    a.causal, a.window_left, a.window_right, a.softcap = True, 3, 0, 5.0
    _cuattn.attention(a, 0)
    ref, _ = oracle.attention_ref(q, k, v, causal=True, window=(3, 0), softcap=5.0)
    assert_close(out, ref, "float32")
    assert_close(out, cuattn.attention(q, k, v, causal=True, window=(3, 0), softcap=5.0), "float32")


def test_struct_keeps_its_arrays_alive(rng):
    """A field holds the array it was given: the only reference to q's memory is the struct's."""
    q = randn(rng, (1, 64, 2, 32))
    a = _cuattn.AttentionArgs()
    a.q = q.copy().__dlpack__()  # the copy lives only behind the capsule
    a.k = a.v = None
    a.k, a.v = q.__dlpack__(), q.__dlpack__()
    out = np.full_like(q, np.nan)
    a.out = out.__dlpack__()
    gc.collect()
    junk = [np.full_like(q, 1e30) for _ in range(8)]  # would reuse freed memory
    _cuattn.attention(a, 0)
    del junk
    assert_close(out, oracle.attention_ref(q, q, q)[0], "float32")


def test_struct_field_errors():
    a = _cuattn.AttentionArgs()
    with pytest.raises(ValueError, match="bsdh"):
        a.layout = "bsdh"
    with pytest.raises(TypeError, match="q must be an array.*int"):
        a.q = 3
    ro = np.zeros(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        a.out = ro.__dlpack__(max_version=(1, 0))
    with pytest.raises(TypeError, match="plan must be a DecodePlan.*str"):
        _cuattn.PagedArgs().plan = "p"
    with pytest.raises(ValueError, match="unknown dtype 'float12'"):
        a.q = (np.zeros(4, np.uint16).__dlpack__(), "float12")


def test_no_long_positional_signatures():
    """Every call takes (args, stream): the fields are set by name, never by position."""
    for name in ("attention", "naive_attention", "merge_states", "paged_attention",
                 "append_paged_kv", "mla_decode", "mla_attention"):
        sig = getattr(_cuattn, name).__doc__.splitlines()[0]
        assert sig.startswith(f"{name}(args: ") and sig.count(":") <= 3, sig


# ---- merge_states of every layout attention returns, varlen included ------------------------------


def _split_keys(lens, cut):
    """Per sequence of length n: keys [0, cut(n)) go to part a, the rest to part b."""
    a = [cut(n) for n in lens]
    b = [n - x for n, x in zip(lens, a)]
    return a, b


def _pack(parts_per_seq):
    return np.concatenate(parts_per_seq, axis=0)


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_merge_varlen(rng, device, dtype):
    """Varlen attention over each sequence's keys split in two parts (o [T, H, D], lse [H, T]),
    merged, equals varlen attention over all keys; a sequence with an empty second part (lse
    -inf) and one with an empty first part are included."""
    qlens, klens = [3, 1, 6, 4], [5, 1, 9, 3]
    hq, hkv, d = 4, 2, 64
    q, qh = make_input(rng, (sum(qlens), hq, d), dtype, device)
    k_seq = [randn(rng, (n, hkv, d), dtype) for n in klens]
    v_seq = [randn(rng, (n, hkv, d), dtype) for n in klens]
    cuts = {0: lambda n: n // 2, 1: lambda n: n, 2: lambda n: n - 2, 3: lambda n: 0}
    la = [cuts[i](n) for i, n in enumerate(klens)]
    part = {"a": [(0, x) for x in la], "b": [(x, n) for x, n in zip(la, klens)]}

    def run(which):
        ranges = part[which]
        k = _pack([ks[lo:hi] for ks, (lo, hi) in zip(k_seq, ranges)])
        v = _pack([vs[lo:hi] for vs, (lo, hi) in zip(v_seq, ranges)])
        ck = np.concatenate([[0], np.cumsum([hi - lo for lo, hi in ranges])]).astype(np.int32)
        cq = np.concatenate([[0], np.cumsum(qlens)]).astype(np.int32)
        return cuattn.attention(q, to_device(k, device), to_device(v, device),
                                cu_seqlens_q=int_array(cq, np.int32, device),
                                cu_seqlens_k=int_array(ck, np.int32, device),
                                max_seqlen_q=max(qlens), max_seqlen_k=max(klens),
                                return_lse=True)

    (oa, lse_a), (ob, lse_b) = run("a"), run("b")
    assert tuple(oa.shape) == (sum(qlens), hq, d) and tuple(lse_a.shape) == (hq, sum(qlens))
    out_buf, lse_buf = poisoned(oa.shape, dtype, device), poisoned(lse_a.shape, "float32", device)
    out, lse = cuattn.merge_states(oa, lse_a, ob, lse_b, out=out_buf, lse_out=lse_buf)
    cq = np.concatenate([[0], np.cumsum(qlens)])
    ck = np.concatenate([[0], np.cumsum(klens)])
    ref, ref_lse = oracle.attention_ref(qh, _pack(k_seq), _pack(v_seq), cu_seqlens_q=cq,
                                        cu_seqlens_k=ck)
    assert_close(out, ref, dtype)
    assert_lse(lse, ref_lse, dtype)
    assert np.isneginf(f64(lse_b)).any()  # the empty second part of sequence 1


def test_merge_varlen_errors(rng):
    o, lse = randn(rng, (6, 2, 8)), np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match="bshd"):
        cuattn.merge_states(o, lse, o, lse, layout="bhsd")
    with pytest.raises(ValueError, match=r"lse_b.*\b6\b|\b6\b.*lse_b"):
        cuattn.merge_states(o, lse, o, np.zeros((6, 2), np.float32))
    with pytest.raises(ValueError, match="o_b"):
        cuattn.merge_states(o, lse, randn(rng, (1, 6, 2, 8)), lse)


# ---- default devices ------------------------------------------------------------------------------


def test_asarray_default_is_the_input_device(rng):
    x = randn(rng, (2, 3))
    a = cuattn.asarray(x)
    assert a.device == "cpu" and np.array_equal(a.numpy(), x)
    assert cuattn.asarray(a) is a
    assert cuattn.asarray([[1.0, 2.0]]).device == "cpu"
    with pytest.raises(TypeError, match="None"):
        cuattn.asarray(None)


def test_empty_default_device():
    a = cuattn.empty((2, 3), "float16")
    assert a.device == ("cuda:0" if cuattn.cuda_available() else "cpu")
    assert cuattn.empty(4, "float32", device="cpu").shape == (4,)


def test_asarray_gpu_inputs_stay_on_the_gpu(rng):
    skip_unless_gpu()
    x = randn(rng, (2, 3), "float16")
    g = cuattn.asarray(x, device="cuda")
    assert g.device == "cuda:0"
    assert cuattn.asarray(g) is g
    t = to_device(x, "cuda")
    h = cuattn.asarray(t)
    assert h.device == "cuda:0" and np.array_equal(h.numpy(), x)
    assert cuattn.asarray(t, device="cpu").device == "cpu"


# ---- PyTorch autograd ------------------------------------------------------------------------------


def _torch_qkv(rng, device):
    """(torch, host arrays, tensors, dtype name): float32 on the CPU, bfloat16 on the GPU."""
    torch = pytest.importorskip("torch")
    if device == "cuda":
        skip_unless_gpu()
        if not torch.cuda.is_available():
            pytest.skip("PyTorch has no CUDA here")
    dtype = "float32" if device == "cpu" else "bfloat16"
    host = [randn(rng, s, dtype) for s in ((1, 5, 2, 32), (1, 6, 1, 32), (1, 6, 1, 32))]
    tdt = torch.float32 if device == "cpu" else torch.bfloat16
    return torch, host, [torch.from_numpy(h.astype(np.float32)).to(device, tdt) for h in host], dtype


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not has_gpu(), reason="no usable GPU"))])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_requires_grad_is_an_error(rng, device, which):
    torch, host, ts, dtype = _torch_qkv(rng, device)
    ts[which].requires_grad_(True)
    name = "qkv"[which]
    with pytest.raises(ValueError, match=f"{name} requires grad.*no backward pass"):
        cuattn.attention(*ts)
    with torch.no_grad():
        out = cuattn.attention(*ts)
    assert not out.requires_grad
    ref = oracle.attention_ref(*host)[0]
    assert_close(out, ref, dtype)
    with torch.inference_mode():
        assert_close(cuattn.attention(*ts), ref, dtype)


def test_requires_grad_generic_path(rng):
    """A tensor that requires grad beside a NumPy q goes through the generic export."""
    torch, host, (q, k, v), _ = _torch_qkv(rng, "cpu")
    k.requires_grad_(True)
    with pytest.raises(ValueError, match="k requires grad"):
        cuattn.attention(host[0], k, host[2])
    assert_close(cuattn.attention(host[0], k.detach(), host[2]), oracle.attention_ref(*host)[0],
                 "float32")


# ---- JAX -------------------------------------------------------------------------------------------


def _jax_devices(kind):
    jax = pytest.importorskip("jax")
    if kind == "gpu":
        skip_unless_gpu()
        try:
            return jax, jax.devices("gpu")[0]
        except RuntimeError as e:
            pytest.skip(f"JAX has no GPU backend here: {e}")
    return jax, jax.devices("cpu")[0]


@pytest.mark.parametrize("kind,dtype", [("cpu", "float32"), ("cpu", "bfloat16"),
                                        ("cpu", "float16"), ("gpu", "bfloat16"),
                                        ("gpu", "float16")])
def test_jax_in_jax_out(rng, kind, dtype):
    jax, dev = _jax_devices(kind)
    hq = randn(rng, (2, 9, 4, 64), dtype)
    hk, hv = randn(rng, (2, 11, 2, 64), dtype), randn(rng, (2, 11, 2, 64), dtype)
    q, k, v = (jax.device_put(x, dev) for x in (hq, hk, hv))
    out = cuattn.attention(q, k, v, causal=True)
    assert isinstance(out, jax.Array) and out.dtype == q.dtype and out.devices() == {dev}
    ref, ref_lse = oracle.attention_ref(hq, hk, hv, causal=True)
    assert_close(np.asarray(out), ref, dtype)
    out2, lse = cuattn.attention(q, k, v, causal=True, return_lse=True)
    assert isinstance(lse, jax.Array) and lse.shape == (2, 4, 9)
    assert_lse(np.asarray(lse), ref_lse, dtype)
    merged, mlse = cuattn.merge_states(out2, lse, out2, lse)
    assert isinstance(merged, jax.Array)
    assert_close(np.asarray(merged), ref, dtype)
    assert_lse(np.asarray(mlse), ref_lse + np.log(2), dtype)


def test_jax_out_is_an_error(rng):
    jax, dev = _jax_devices("cpu")
    q = jax.device_put(randn(rng, (1, 4, 2, 32)), dev)
    with pytest.raises(ValueError, match="out= cannot be a JAX array"):
        cuattn.attention(q, q, q, out=jax.numpy.zeros_like(q))
    with pytest.raises(ValueError, match="out= cannot be a JAX array"):
        cuattn.attention(randn(rng, (1, 4, 2, 32)), randn(rng, (1, 4, 2, 32)),
                         randn(rng, (1, 4, 2, 32)), out=jax.numpy.zeros_like(q))


def test_jax_bf16_host_array_dtype(rng):
    """JAX bf16 on the CPU exports real bfloat16 (no raw view needed)."""
    jax, dev = _jax_devices("cpu")
    x = jax.device_put(randn(rng, (1, 3, 2, 16), "bfloat16"), dev)
    assert np.dtype(x.dtype) == BF16
    assert cuattn.attention(x, x, x).dtype == x.dtype
