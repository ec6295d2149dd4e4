"""One GPU case in a fresh interpreter with CuPy only: attention on CuPy arrays must work and
PyTorch must never be imported (cuattn finds frameworks through sys.modules, imports none)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

import cuattn

HERE = os.path.dirname(os.path.abspath(__file__))

CODE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    import numpy as np
    import cupy as cp
    import cuattn
    import oracle

    rng = np.random.default_rng()
    for dt in (np.float16,):
        q = rng.standard_normal((2, 65, 8, 128)).astype(dt)
        k = rng.standard_normal((2, 129, 2, 128)).astype(dt)
        v = rng.standard_normal((2, 129, 2, 128)).astype(dt)
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            dq, dk, dv = cp.asarray(q), cp.asarray(k), cp.asarray(v)
            out, lse = cuattn.attention(dq, dk, dv, causal=True, return_lse=True)
        stream.synchronize()
        assert isinstance(out, cp.ndarray), type(out)
        assert out.dtype == dt and lse.dtype == np.float32
        ref, ref_lse = oracle.attention_ref(q, k, v, causal=True)
        got = cp.asnumpy(out).astype(np.float64)
        err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert err < 2e-3, err
        assert not np.isnan(got).any()
        assert np.abs(cp.asnumpy(lse) - ref_lse).max() < 1e-2
    assert "torch" not in sys.modules, "cuattn imported torch"
    print("cupy-only OK")
""")


def test_gpu_cupy_only_subprocess():
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed")
    if not cuattn.cuda_available():
        pytest.skip("no usable CUDA GPU (cuattn.cuda_available() is False)")
    r = subprocess.run([sys.executable, "-c", CODE.format(here=HERE)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "cupy-only OK" in r.stdout
