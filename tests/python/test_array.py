"""cuattn.Array / asarray / empty, DLPack interop, framework round trips, device info and the
command line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import cuattn
import oracle
from conftest import (BF16, DEVICES, DTYPES, assert_close, assert_lse, device_dtype_params, f64,
                      randn, skip_unless_gpu, to_host)

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_asarray_roundtrip(rng, device, dtype):
    x = randn(rng, (3, 5, 7), dtype)
    a = cuattn.asarray(x, device=device)
    assert isinstance(a, cuattn.Array)
    back = a.numpy()
    assert isinstance(back, np.ndarray)
    assert back.dtype == DTYPES[dtype], back.dtype
    assert back.shape == (3, 5, 7)
    np.testing.assert_array_equal(back.view(np.uint8), np.ascontiguousarray(x).view(np.uint8))


@pytest.mark.parametrize("device", DEVICES)
def test_asarray_of_strided_view(rng, device):
    x = randn(rng, (4, 6, 8), "float32")[:, ::2]
    back = cuattn.asarray(x, device=device).numpy()
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("device,dtype", device_dtype_params())
def test_empty(device, dtype):
    a = cuattn.empty((2, 3, 4), dtype, device=device)
    assert isinstance(a, cuattn.Array)
    back = a.numpy()
    assert back.shape == (2, 3, 4) and back.dtype == DTYPES[dtype]
    z = cuattn.empty((0, 3), dtype, device=device)
    assert z.numpy().shape == (0, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_dlpack_protocol(rng, device):
    x = randn(rng, (2, 9), "float32")
    a = cuattn.asarray(x, device=device)
    dev_type, dev_id = a.__dlpack_device__()
    assert (int(dev_type), int(dev_id)) == ((1, 0) if device == "cpu" else (2, 0))
    if device == "cpu":
        y = np.from_dlpack(a)
        np.testing.assert_array_equal(y, x)
    else:
        skip_unless_gpu()
        from conftest import gpu_framework

        if gpu_framework() == "torch":
            import torch

            y = torch.from_dlpack(a).cpu().numpy()
        else:
            import cupy as cp

            y = cp.from_dlpack(a).get()
        np.testing.assert_array_equal(y, x)


def test_attention_on_cuattn_arrays_gpu(rng):
    """NumPy-only GPU use: cuattn.Array in, cuattn.Array out."""
    skip_unless_gpu()
    for dtype in ("float16", "bfloat16"):
        host = [randn(rng, s, dtype) for s in [(2, 33, 4, 64), (2, 50, 2, 64), (2, 50, 2, 64)]]
        q, k, v = (cuattn.asarray(x, device="cuda") for x in host)
        out, lse = cuattn.attention(q, k, v, causal=True, return_lse=True)
        assert isinstance(out, cuattn.Array) and isinstance(lse, cuattn.Array)
        ref, ref_lse = oracle.attention_ref(*host, causal=True)
        assert_close(out.numpy(), ref, dtype)
        assert_lse(lse.numpy(), ref_lse, dtype)


def test_attention_on_cuattn_arrays_cpu(rng):
    host = [randn(rng, s, "float32") for s in [(1, 9, 2, 32), (1, 9, 2, 32), (1, 9, 2, 32)]]
    q, k, v = (cuattn.asarray(x, device="cpu") for x in host)
    out = cuattn.attention(q, k, v, causal=True)
    assert_close(to_host(out), oracle.attention_ref(*host, causal=True)[0], "float32")


def test_bf16_numpy_roundtrip_cpu(rng):
    """ml_dtypes bf16 NumPy arrays are accepted on the CPU and outputs come back as bf16."""
    q, k, v = (randn(rng, (2, 17, 4, 64), "bfloat16") for _ in range(3))
    out, lse = cuattn.attention(q, k, v, return_lse=True)
    assert isinstance(out, np.ndarray) and out.dtype == BF16
    assert lse.dtype == np.float32
    ref, ref_lse = oracle.attention_ref(q, k, v)
    assert_close(out, ref, "bfloat16")
    assert_lse(lse, ref_lse, "bfloat16")


@pytest.mark.parametrize("device", DEVICES)
def test_torch_requires_grad_needs_no_grad(rng, device):
    """No backward pass yet: with autograd on, a tensor that requires grad is refused (not
    silently detached); under torch.no_grad() it runs."""
    if not HAS_TORCH:
        pytest.skip("PyTorch is not installed")
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    dt = torch.float32 if device == "cpu" else torch.bfloat16
    host = [rng.standard_normal(s).astype(np.float32) for s in [(1, 7, 2, 64)] * 3]
    ts = [torch.from_numpy(x).to(device=device, dtype=dt).requires_grad_(True) for x in host]
    with pytest.raises(ValueError, match="requires grad"):
        cuattn.attention(*ts, causal=True)
    with torch.no_grad():
        out = cuattn.attention(*ts, causal=True)
    assert isinstance(out, torch.Tensor) and out.device.type == device and out.dtype == dt
    ref_in = [f64(t) for t in ts]
    assert_close(out, oracle.attention_ref(*ref_in, causal=True)[0],
                 "float32" if device == "cpu" else "bfloat16")


def test_cuda_available_and_device_info():
    avail = cuattn.cuda_available()
    assert isinstance(avail, bool)
    info = cuattn.device_info()
    assert info is not None
    text = repr(info)
    assert text
    get = (lambda key: info[key]) if isinstance(info, dict) else (lambda key: getattr(info, key))
    try:
        reported = get("available")
    except (KeyError, AttributeError):
        reported = None
    if reported is not None:
        assert bool(reported) == avail
    if avail:
        name = get("name")
        assert isinstance(name, str) and name
    else:
        try:
            reason = get("reason")
        except (KeyError, AttributeError):
            reason = None
        if reason is not None:
            assert isinstance(reason, str) and reason, "an unavailable GPU comes with a reason"


def _run_cli(*args, timeout):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "cuattn", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_cli_info():
    r = _run_cli("info", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip()
    assert "Traceback" not in r.stderr


@pytest.mark.demo
def test_cli_demo():
    r = _run_cli("demo", timeout=60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.strip()
    assert "Traceback" not in r.stderr
