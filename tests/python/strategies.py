"""Hypothesis strategies and device helpers for the property tests (test_properties.py) and the
hostile-input batch (test_hostile.py).

The device under test is ``CUATTN_TEST_DEVICE`` (read by the tests only): ``cpu`` (default) or
``cuda`` (PyTorch or CuPy arrays; the tests skip with a reason where no GPU is usable). On the GPU
the strategies draw only what the kernels take: float16/bfloat16 and the head dims of the build.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import cuattn
from conftest import CPU_DTYPES, DTYPES, GPU_DTYPES, gpu_framework, gpu_skip_reason, to_device

DEVICE = os.environ.get("CUATTN_TEST_DEVICE", "cpu")
if DEVICE not in ("cpu", "cuda"):
    raise ValueError(f"CUATTN_TEST_DEVICE must be 'cpu' or 'cuda', got {DEVICE!r}")
GPU = DEVICE == "cuda"


def device_skip_reason() -> str | None:
    return gpu_skip_reason() if GPU else None


def settings_for(n: int):
    """n examples, reproducible (derandomized, no example database), no deadline."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def dtypes():
    return st.sampled_from(GPU_DTYPES if GPU else CPU_DTYPES)


def head_dims(paged=False):
    """Tiny odd head dims on the CPU; the build's GPU head dims (<= 128; for the paged kernels
    64 and 128) on the GPU."""
    if GPU:
        dims = [d for d in cuattn.build_info()["head_dims"]
                if d <= 128 and (not paged or d in (64, 128))]
        return st.sampled_from(dims or [64])
    return st.integers(1, 9)


def seeds():
    return st.integers(0, 2**32 - 1)


def host(rng, shape, dtype, scale=1.0) -> np.ndarray:
    """Random normal values rounded to dtype (a host array; bf16/fp8 through ml_dtypes)."""
    x = rng.standard_normal(tuple(shape)) * scale
    dt = DTYPES.get(dtype, None) or np.dtype(dtype)
    return x.astype(dt)


def dev(x: np.ndarray):
    """A host array on the device under test (itself on the CPU)."""
    return to_device(x, DEVICE)


def can_reverse() -> bool:
    """Negative strides: NumPy and CuPy views have them, torch tensors do not."""
    return not GPU or gpu_framework() == "cupy"


VIEWS = ("contig", "padded", "transposed", "reversed")


def views():
    return st.sampled_from(VIEWS if can_reverse() else VIEWS[:3])


def make_view(rng, shape, dtype, kind, axis=0):
    """(device view, host view with the same values) of `shape`, last dim contiguous:
    'contig'; 'padded' every other slice of a base twice as long along `axis`, and a wider last
    dim, cut (by 3 on the CPU, by 8 on the GPU, whose strides must stay 16-byte multiples);
    'transposed' axes `axis` and `axis + 1` of a base swapped; 'reversed' a base read backwards
    along `axis`. On the GPU the base goes to the device and the same view is taken."""
    shape = tuple(shape)
    nd = len(shape)
    if kind == "padded":
        base = list(shape)
        base[axis] = 2 * shape[axis] + 1
        base[-1] = shape[-1] + (8 if GPU else 3) if axis != nd - 1 else base[-1]  # GPU: aligned
        idx = [slice(None)] * nd
        idx[axis] = slice(1, 2 * shape[axis] + 1, 2)
        idx[-1] = slice(0, shape[-1]) if axis != nd - 1 else idx[-1]
        f = lambda a: a[tuple(idx)]  # noqa: E731
    elif kind == "transposed" and axis + 1 < nd - 1:
        base = list(shape)
        base[axis], base[axis + 1] = shape[axis + 1], shape[axis]
        f = lambda a: a.swapaxes(axis, axis + 1)  # noqa: E731
    elif kind == "reversed" and can_reverse():
        base = list(shape)
        idx = [slice(None)] * nd
        idx[axis] = slice(None, None, -1)
        f = lambda a: a[tuple(idx)]  # noqa: E731
    else:
        base = list(shape)
        f = lambda a: a  # noqa: E731
    h = host(rng, base, dtype)
    d = f(dev(h))
    hv = f(h)
    assert tuple(hv.shape) == shape, (hv.shape, shape)
    return d, hv


def poison(shape, dtype):
    """A NaN-filled output buffer on the device (any element not written fails the test)."""
    return dev(np.full(tuple(shape), np.nan, dtype=DTYPES.get(dtype, np.dtype(dtype))))


def ints(values, dtype=np.int32):
    return dev(np.asarray(values, dtype=dtype))


__all__ = ["DEVICE", "GPU", "can_reverse", "dev", "device_skip_reason", "dtypes",
           "head_dims", "host", "ints", "make_view", "poison", "seeds", "settings_for", "views"]
