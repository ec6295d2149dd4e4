"""Shared fixtures and helpers of the cuattn test suite.

- ``rng``: a fresh ``np.random.default_rng`` per test; its seed is printed in a report section
  when the test fails (rerun with ``CUATTN_TEST_SEED=<seed>``).
- ``device`` / ``DEVICES``: "cpu" always, "cuda" when ``cuattn.cuda_available()`` and PyTorch or
  CuPy is importable (else skipped with the reason).
- Host/device movement (PyTorch preferred, else CuPy), bf16/fp16 inputs (ml_dtypes on the CPU),
  comparisons: relative-norm error plus a max-abs bound; NaN never passes; an lse of -inf must be
  -inf exactly where the reference is.

Test modules import the helpers with ``from conftest import ...`` (pytest puts this folder on
sys.path; the suite has no __init__.py).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import secrets

import ml_dtypes
import numpy as np
import pytest

try:
    import cuattn
except ImportError:  # the oracle's own tests still run
    cuattn = None

BF16 = np.dtype(ml_dtypes.bfloat16)
FP8 = np.dtype(ml_dtypes.float8_e4m3fn)
DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16), "bfloat16": BF16}
CPU_DTYPES = ("float32", "float16", "bfloat16")
GPU_DTYPES = ("float16", "bfloat16")

# ‖out - ref‖ / ‖ref‖ bound, and a max-abs bound (times max(1, max|ref|)).
RTOL = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1e-2}
MAXABS = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 6e-2}
# lse: |got - ref| <= LSE_TOL * (1 + |ref|)
LSE_TOL = {"float32": 1e-5, "float16": 1e-3, "bfloat16": 2e-3}


def pytest_configure(config):
    config.addinivalue_line("markers", "demo: runs `python -m cuattn demo` in a subprocess "
                            "(a few seconds; deselect with -m 'not demo')")


# ------------------------------------------------------------------------------------------------
# Seeds


@pytest.fixture
def rng(request):
    env = os.environ.get("CUATTN_TEST_SEED")
    seed = int(env) if env else secrets.randbits(63)
    request.node._cuattn_seed = seed
    return np.random.default_rng(seed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    seed = getattr(item, "_cuattn_seed", None)
    if seed is not None and rep.failed:
        rep.sections.append(("rng seed", f"seed = {seed}  (rerun with CUATTN_TEST_SEED={seed})"))


# ------------------------------------------------------------------------------------------------
# Devices


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def gpu_framework() -> str | None:
    """'torch' or 'cupy' (the framework used for GPU arrays), or None."""
    if _importable("torch"):
        import torch

        if torch.cuda.is_available():
            return "torch"
    if _importable("cupy"):
        return "cupy"
    return None


@functools.lru_cache(maxsize=None)
def gpu_skip_reason() -> str | None:
    if cuattn is None:
        return "cuattn is not importable"
    try:
        available = cuattn.cuda_available()
    except Exception as e:  # noqa: BLE001 - a reason, not a failure of this helper
        return f"cuattn.cuda_available() raised {e!r}"
    if not available:
        return "no usable CUDA GPU (cuattn.cuda_available() is False)"
    if gpu_framework() is None:
        return "a GPU is present but neither PyTorch (with CUDA) nor CuPy is importable"
    return None


def has_gpu() -> bool:
    return gpu_skip_reason() is None


def skip_unless_gpu():
    reason = gpu_skip_reason()
    if reason:
        pytest.skip(reason)


def _cuda_param(*values, id=None):
    reason = gpu_skip_reason() if cuattn is not None else "cuattn is not importable"
    return pytest.param(*values, id=id,
                        marks=pytest.mark.skipif(reason is not None, reason=reason or ""))


DEVICES = [pytest.param("cpu", id="cpu"), _cuda_param("cuda", id="cuda")]


def device_dtype_params(cpu=CPU_DTYPES, gpu=GPU_DTYPES):
    """(device, dtype) pairs: every dtype the device supports."""
    ps = [pytest.param("cpu", d, id=f"cpu-{d}") for d in cpu]
    ps += [_cuda_param("cuda", d, id=f"cuda-{d}") for d in gpu]
    return ps


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


# ------------------------------------------------------------------------------------------------
# Arrays


def dtype_name(dt) -> str:
    s = str(dt)
    for prefix in ("torch.", "cupy."):
        s = s.replace(prefix, "")
    try:
        return np.dtype(dt).name
    except TypeError:
        return s


def randn(rng, shape, dtype="float32", scale=1.0) -> np.ndarray:
    """Standard normal values rounded to dtype (a host NumPy array; bf16 via ml_dtypes)."""
    x = rng.standard_normal(tuple(shape)) * scale
    name = dtype_name(dtype)
    return x.astype(DTYPES[name] if name in DTYPES else np.dtype(dtype))


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _is_cupy(x) -> bool:
    return type(x).__module__.startswith("cupy")


def to_device(x: np.ndarray, device: str):
    """A host NumPy array on `device`: itself on the CPU; a torch (preferred) or CuPy array on
    the GPU, same dtype (bf16 -> torch.bfloat16, fp8 -> torch.float8_e4m3fn)."""
    x = np.asarray(x)
    if device == "cpu":
        return x
    fw = gpu_framework()
    x = np.ascontiguousarray(x)
    if fw == "torch":
        import torch

        if x.dtype == BF16:
            return torch.from_numpy(x.astype(np.float32)).to("cuda").to(torch.bfloat16)
        if x.dtype == FP8:
            return torch.from_numpy(x.astype(np.float32)).to("cuda").to(torch.float8_e4m3fn)
        return torch.from_numpy(x).to("cuda")
    if fw == "cupy":
        import cupy as cp

        if x.dtype in (BF16, FP8):
            raw = cp.asarray(x.view(np.uint16 if x.dtype == BF16 else np.uint8))
            return raw.view(x.dtype)
        return cp.asarray(x)
    raise RuntimeError("no GPU framework")


def to_host(x) -> np.ndarray:
    """Any array cuattn may return, as a host NumPy array (bf16 -> ml_dtypes.bfloat16)."""
    if isinstance(x, np.ndarray):
        return x
    if cuattn is not None and isinstance(x, cuattn.Array):
        return np.asarray(x.numpy())
    if _is_torch(x):
        import torch

        t = x.detach()
        if t.dtype == torch.bfloat16:
            return t.float().cpu().numpy().astype(BF16)
        if t.dtype == torch.float8_e4m3fn:
            return t.float().cpu().numpy().astype(FP8)
        return t.cpu().numpy()
    if _is_cupy(x):
        return x.get()
    return np.asarray(x)


def f64(x) -> np.ndarray:
    return to_host(x).astype(np.float64)


def poisoned(shape, dtype, device):
    """A NaN-filled output buffer (any element the library does not write fails the test)."""
    return to_device(np.full(tuple(shape), np.nan, dtype=DTYPES.get(dtype_name(dtype), dtype)),
                     device)


def make_input(rng, shape, dtype, device, view="contig", *, head_axis=2, seq_axis=1, scale=1.0):
    """Random input of `shape` as `view`:
    'contig'  a contiguous array;
    'heads'   every other slice of a [.., 2H+1, ..] base along head_axis (offset one head);
    'seq'     a window [3, 3+S) of a longer base along seq_axis;
    'swap'    the head and sequence axes of a contiguous base swapped (a transposed view).
    The last dim stays contiguous. Returns (device array, host NumPy view with the same values)."""
    shape = list(shape)
    base_shape = list(shape)
    idx = [slice(None)] * len(shape)
    swap = False
    if view == "heads":
        base_shape[head_axis] = 2 * shape[head_axis] + 1
        idx[head_axis] = slice(1, 2 * shape[head_axis] + 1, 2)
    elif view == "seq":
        base_shape[seq_axis] = shape[seq_axis] + 5
        idx[seq_axis] = slice(3, 3 + shape[seq_axis])
    elif view == "swap":
        base_shape[head_axis], base_shape[seq_axis] = shape[seq_axis], shape[head_axis]
        swap = True
    elif view != "contig":
        raise ValueError(view)
    host_base = randn(rng, base_shape, dtype, scale)
    dev_base = to_device(host_base, device)

    def apply(a):
        if swap:
            return a.swapaxes(head_axis, seq_axis)
        return a[tuple(idx)]

    dev, host = apply(dev_base), apply(host_base)
    assert tuple(host.shape) == tuple(shape), (host.shape, shape)
    return dev, host


def int_array(values, dtype, device):
    return to_device(np.asarray(values, dtype=dtype), device)


def assert_framework(out, like, dtype=None):
    """out lives in like's framework (and device), with like's dtype unless `dtype` is given."""
    if isinstance(like, np.ndarray):
        assert isinstance(out, np.ndarray), f"expected a NumPy array, got {type(out)}"
    elif _is_torch(like):
        import torch

        assert isinstance(out, torch.Tensor), f"expected a torch.Tensor, got {type(out)}"
        assert out.device == like.device, (out.device, like.device)
    elif _is_cupy(like):
        assert type(out).__module__.startswith("cupy"), f"expected a CuPy array, got {type(out)}"
    want = dtype_name(like.dtype) if dtype is None else dtype_name(dtype)
    assert dtype_name(out.dtype) == want, f"dtype {out.dtype}, expected {want}"


# ------------------------------------------------------------------------------------------------
# Comparisons


def _where(a: np.ndarray) -> str:
    if a.size == 0:
        return ""
    return f" (first at index {tuple(int(i) for i in np.argwhere(a)[0])})"


def assert_close(out, ref, dtype, *, what="out", rtol=None, maxabs=None):
    """‖out - ref‖ ≤ rtol ‖ref‖ and max|out - ref| ≤ maxabs · max(1, max|ref|); NaN never
    passes; the shapes must match."""
    name = dtype_name(dtype)
    rtol = RTOL[name] if rtol is None else rtol
    maxabs = MAXABS[name] if maxabs is None else maxabs
    got = f64(out)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    nan = np.isnan(got)
    assert not nan.any(), f"{what}: {int(nan.sum())} NaN of {got.size}{_where(nan)}"
    bad = ~np.isfinite(got)
    assert not bad.any(), f"{what}: {int(bad.sum())} non-finite values{_where(bad)}"
    if got.size == 0:
        return
    diff = np.abs(got - ref)
    err, ref_norm = float(np.linalg.norm(diff)), float(np.linalg.norm(ref))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    detail = (f"worst at {tuple(int(i) for i in worst)}: got {got[worst]!r}, "
              f"expected {ref[worst]!r}")
    assert err <= rtol * ref_norm, (
        f"{what} ({name}): relative error {err / max(ref_norm, 1e-300):.3g} > {rtol:g}; {detail}")
    bound = maxabs * max(1.0, float(np.abs(ref).max()))
    assert diff.max() <= bound, f"{what} ({name}): max abs error {diff.max():.3g} > {bound:.3g}; {detail}"


def assert_lse(lse, ref, dtype, *, what="lse", tol=None):
    """float32 lse: -inf exactly where the reference is -inf, finite and close elsewhere."""
    got = to_host(lse)
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    got = got.astype(np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    nan = np.isnan(got)
    assert not nan.any(), f"{what}: {int(nan.sum())} NaN of {got.size}{_where(nan)}"
    ref_inf, got_inf = np.isneginf(ref), np.isneginf(got)
    miss = ref_inf & ~got_inf
    assert not miss.any(), f"{what}: {int(miss.sum())} rows should be -inf (empty){_where(miss)}"
    extra = got_inf & ~ref_inf
    assert not extra.any(), f"{what}: {int(extra.sum())} rows are -inf but see keys{_where(extra)}"
    fin = ~ref_inf
    assert np.isfinite(got[fin]).all(), f"{what}: non-finite values{_where(~np.isfinite(got) & fin)}"
    tol = LSE_TOL[dtype_name(dtype)] if tol is None else tol
    diff = np.where(fin, np.abs(got - np.where(fin, ref, 0.0)), 0.0)
    bound = tol * (1.0 + np.abs(np.where(fin, ref, 0.0)))
    bad = diff > bound
    assert not bad.any(), (f"{what}: {int(bad.sum())} values off by more than {tol:g}·(1+|ref|), "
                           f"max diff {diff.max():.3g}{_where(bad)}")


def assert_empty_rows_zero(out, ref):
    """Rows the reference gives exactly 0 (no visible key) must be exactly 0, not just close."""
    got = f64(out)
    ref = np.asarray(ref)
    zero = np.all(ref == 0, axis=-1)
    assert (got[zero] == 0).all(), "rows with no visible key must be exactly 0"
