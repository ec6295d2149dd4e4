"""The bad-input matrix: every case raises the documented exception (TypeError, ValueError,
cuattn.CudaError) with the bad value in the message, and never crashes the process."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import cuattn
from conftest import gpu_framework, randn, skip_unless_gpu, to_device

F16 = "float16"


def qkv(rng, q=(2, 5, 4, 64), k=(2, 7, 2, 64), v=None, dtype="float32"):
    v = k if v is None else v
    return randn(rng, q, dtype), randn(rng, k, dtype), randn(rng, v, dtype)


@dataclass(frozen=True)
class Err:
    id: str
    call: Callable  # call(rng) must raise
    exc: type
    match: str      # regex searched in str(exception): the bad value or name


def _attn(**kw):
    def call(rng):
        q, k, v = qkv(rng)
        return cuattn.attention(q, k, v, **kw)
    return call


def _cu(cu_q, cu_k, tq=8, tk=8, dtype=np.int32):
    def call(rng):
        q, k, v = randn(rng, (tq, 4, 32)), randn(rng, (tk, 2, 32)), randn(rng, (tk, 2, 32))
        return cuattn.attention(q, k, v, cu_seqlens_q=np.asarray(cu_q, dtype),
                                cu_seqlens_k=np.asarray(cu_k, dtype))
    return call


def _paged(*, lens=(20, 5), table=None, bt_dtype=np.int32, sl_dtype=np.int32, q_d=64,
           kv_layout="NHD", kc_dtype="float32", vc_heads=2, **kw):
    """num_blocks 10, page 16, Hkv 2, D 64; table [2, 4]."""
    def call(rng):
        q = randn(rng, (2, 4, q_d))
        kc = randn(rng, (10, 16, 2, 64), kc_dtype) if kc_dtype != "uint8" else \
            np.zeros((10, 16, 2, 64), np.uint8)
        vc = randn(rng, (10, 16, vc_heads, 64)) if kc_dtype != "uint8" else \
            np.zeros((10, 16, vc_heads, 64), np.uint8)
        bt = np.asarray(table if table is not None else [[0, 1, 2, 3], [4, 5, 6, 7]], bt_dtype)
        return cuattn.paged_attention(q, kc, vc, bt, np.asarray(lens, sl_dtype),
                                      kv_layout=kv_layout, **kw)
    return call


def _append(slots, slot_dtype=np.int64, new_heads=2):
    def call(rng):
        kc, vc = randn(rng, (4, 16, 2, 64)), randn(rng, (4, 16, 2, 64))
        kn, vn = randn(rng, (len(slots), new_heads, 64)), randn(rng, (len(slots), new_heads, 64))
        return cuattn.append_paged_kv(kn, vn, kc, vc, np.asarray(slots, slot_dtype))
    return call


def _mla_decode(q_last=576, cache_last=576, scale=0.1, lens=(10,)):
    def call(rng):
        q = randn(rng, (1, 1, 4, q_last))
        cache = randn(rng, (2, 64, cache_last))
        return cuattn.mla_decode(q, cache, np.zeros((1, 2), np.int32), np.asarray(lens, np.int32),
                                 scale=scale)
    return call


def _mla(h_proj=4, latent_proj=32):
    def call(rng):
        q = randn(rng, (1, 4, 5, 16))
        kl, vl = randn(rng, (1, 5, 32)), randn(rng, (1, 5, 32))
        return cuattn.mla_attention(q, kl, vl, randn(rng, (h_proj, latent_proj, 16)),
                                    randn(rng, (4, 32, 16)))
    return call


def _block_mask_wrong_len(rng):
    bm = cuattn.create_block_mask(lambda b, h, q, kv: q >= kv, None, None, 48, 48, block_size=16)
    q, k, v = qkv(rng, q=(1, 37, 4, 32), k=(1, 37, 4, 32))
    return cuattn.attention(q, k, v, block_mask=bm)


CPU_CASES = [
    # not an array
    Err("q-list", lambda rng: cuattn.attention([[1.0]], *qkv(rng)[1:]), TypeError, "list"),
    Err("k-none", lambda rng: cuattn.attention(qkv(rng)[0], None, qkv(rng)[2]), TypeError,
        "None"),
    Err("q-str", lambda rng: cuattn.attention("abc", *qkv(rng)[1:]), TypeError, "str"),
    # dtypes
    Err("q-int32", lambda rng: cuattn.attention(np.ones((2, 5, 4, 64), np.int32),
                                                *qkv(rng)[1:]), ValueError, "int32"),
    Err("q-float64", lambda rng: cuattn.attention(*qkv(rng, dtype="float64")), ValueError,
        "float64"),
    Err("qk-mismatch", lambda rng: cuattn.attention(randn(rng, (2, 5, 4, 64), F16),
                                                    randn(rng, (2, 7, 2, 64), "bfloat16"),
                                                    randn(rng, (2, 7, 2, 64), "bfloat16")),
        ValueError, r"b(f|float)16"),
    Err("v-dtype", lambda rng: cuattn.attention(*qkv(rng)[:2], randn(rng, (2, 7, 2, 64), F16)),
        ValueError, r"f(loat)?16"),
    # shapes
    Err("kv-len", lambda rng: cuattn.attention(*qkv(rng, k=(2, 13, 2, 64), v=(2, 11, 2, 64))),
        ValueError, r"\b1[13]\b"),
    Err("batch", lambda rng: cuattn.attention(*qkv(rng, q=(2, 5, 4, 64), k=(5, 7, 2, 64))),
        ValueError, r"\b[25]\b"),
    Err("head-dim", lambda rng: cuattn.attention(*qkv(rng, q=(2, 5, 4, 64), k=(2, 7, 2, 48),
                                                      v=(2, 7, 2, 64))), ValueError, r"\b48\b"),
    Err("gqa", lambda rng: cuattn.attention(*qkv(rng, q=(2, 5, 6, 64), k=(2, 7, 4, 64))),
        ValueError, r"\b[64]\b"),
    Err("kv-heads", lambda rng: cuattn.attention(*qkv(rng, k=(2, 7, 2, 64), v=(2, 7, 1, 64))),
        ValueError, r"\b[12]\b"),
    Err("q-ndim", lambda rng: cuattn.attention(randn(rng, (5, 4, 64)), *qkv(rng)[1:]), ValueError,
        r"\b[34]\b|ndim|dim"),
    Err("last-dim-stride", lambda rng: cuattn.attention(randn(rng, (2, 5, 4, 128))[..., ::2],
                                                        *qkv(rng)[1:]), ValueError, "stride"),
    Err("layout", _attn(layout="bsdh"), ValueError, "bsdh"),
    Err("window-neg", _attn(window=(-2, 0)), ValueError, "-2"),
    Err("window-right", _attn(window=(3, -7)), ValueError, "-7"),
    Err("window-int", _attn(window=-4), ValueError, "-4"),
    Err("sinks-shape", _attn(sinks=np.zeros(5, np.float32)), ValueError, r"\b5\b"),
    Err("sinks-dtype", _attn(sinks=np.zeros(4, np.float16)), ValueError, r"f(loat)?16"),
    Err("out-shape", _attn(out=np.zeros((2, 5, 4, 32), np.float32)), ValueError, r"\b32\b"),
    Err("out-dtype", _attn(out=np.zeros((2, 5, 4, 64), np.float16)), ValueError, r"f(loat)?16"),
    Err("lse-out-dtype", _attn(return_lse=True, lse_out=np.zeros((2, 4, 5), np.float16)),
        ValueError, r"f(loat)?16"),
    Err("lse-out-shape", _attn(return_lse=True, lse_out=np.zeros((2, 5, 4), np.float32)),
        ValueError, r"\b[45]\b"),
    Err("block-mask-len", _block_mask_wrong_len, ValueError, r"\b(48|37)\b"),
    # varlen
    Err("cu-decreasing", _cu([0, 5, 3, 8], [0, 2, 4, 8]), ValueError, r"\b[35]\b"),
    Err("cu-total", _cu([0, 4, 10], [0, 4, 8]), ValueError, r"\b(10|8)\b"),
    Err("cu-first", _cu([2, 4, 8], [0, 4, 8]), ValueError, r"\b2\b"),
    Err("cu-length", _cu([0, 2, 5, 8], [0, 4, 8]), ValueError, r"\b[34]\b"),
    Err("cu-dtype", _cu([0, 4, 8], [0, 4, 8], dtype=np.int64), ValueError, "int64"),
    Err("cu-float", _cu([0, 4, 8], [0, 4, 8], dtype=np.float32), ValueError, "float32"),
    Err("cu-only-q", lambda rng: cuattn.attention(randn(rng, (8, 4, 32)), randn(rng, (8, 2, 32)),
                                                  randn(rng, (8, 2, 32)),
                                                  cu_seqlens_q=np.asarray([0, 8], np.int32)),
        ValueError, "cu_seqlens"),
    # paged
    Err("seq-len-negative", _paged(lens=(-3, 5)), ValueError, "-3"),
    Err("seq-len-too-large", _paged(lens=(1000, 5)), ValueError, "1000"),
    Err("block-id-negative", _paged(table=[[0, -2, 2, 3], [4, 5, 6, 7]]), ValueError, "-2"),
    Err("block-id-too-large", _paged(table=[[0, 57, 2, 3], [4, 5, 6, 7]]), ValueError, "57"),
    Err("block-id-eq-num-blocks", _paged(table=[[0, 1, 2, 3], [10, 5, 6, 7]]), ValueError,
        r"\b10\b"),
    Err("block-table-dtype", _paged(bt_dtype=np.int64), ValueError, "int64"),
    Err("seq-lens-dtype", _paged(sl_dtype=np.int64), ValueError, "int64"),
    Err("kv-layout", _paged(kv_layout="NDH"), ValueError, "NDH"),
    Err("kv-cache-dtype", _paged(kc_dtype="uint8", kv_cache_dtype="fp8_e5m2"), ValueError,
        "e5m2"),
    Err("uint8-without-kv-cache-dtype", _paged(kc_dtype="uint8"), ValueError, "uint8"),
    Err("paged-head-dim", _paged(q_d=32), ValueError, r"\b32\b"),
    Err("paged-kv-heads", _paged(vc_heads=1), ValueError, r"\b[12]\b"),
    Err("append-slot-too-large", _append([0, 64, 3]), ValueError, r"\b64\b"),
    Err("append-slot-dtype", _append([0, 1], slot_dtype=np.int32), ValueError, "int32"),
    Err("append-heads", _append([0, 1], new_heads=3), ValueError, r"\b3\b"),
    # MLA
    Err("mla-decode-q-dim", _mla_decode(q_last=512), ValueError, r"\b512\b"),
    Err("mla-decode-cache-dim", _mla_decode(cache_last=512), ValueError, r"\b512\b"),
    Err("mla-decode-scale", _mla_decode(scale=0.0), ValueError, "scale"),
    Err("mla-decode-seq-len", _mla_decode(lens=(500,)), ValueError, r"\b500\b"),
    Err("mla-proj-heads", _mla(h_proj=3), ValueError, r"\b3\b"),
    Err("mla-proj-latent", _mla(latent_proj=24), ValueError, r"\b24\b"),
    # merge, block masks
    Err("merge-shape", lambda rng: cuattn.merge_states(
        randn(rng, (1, 3, 2, 8)), np.zeros((1, 2, 3), np.float32),
        randn(rng, (1, 4, 2, 8)), np.zeros((1, 2, 4), np.float32)), ValueError, r"\b[34]\b"),
    Err("merge-lse-dtype", lambda rng: cuattn.merge_states(
        randn(rng, (1, 3, 2, 8)), np.zeros((1, 2, 3), np.float16),
        randn(rng, (1, 3, 2, 8)), np.zeros((1, 2, 3), np.float32)), ValueError, r"f(loat)?16"),
    Err("block-size", lambda rng: cuattn.create_block_mask(lambda b, h, q, kv: q >= kv, None,
                                                           None, 64, 64, block_size=-16),
        ValueError, "-16"),
]


@pytest.mark.parametrize("case", CPU_CASES, ids=lambda c: c.id)
def test_cpu_errors(rng, case):
    with pytest.raises(case.exc, match=case.match):
        case.call(rng)


def test_cuda_error_is_runtime_error():
    assert issubclass(cuattn.CudaError, RuntimeError)


def test_paged_unused_table_entries_not_validated(rng):
    """Only the first ⌈seq_len / block_size⌉ entries of a row are validated."""
    _paged(lens=(16, 5), table=[[0, -1, 99, -7], [4, 10**6, -1, -1]])(rng)


def test_errors_leave_out_untouched(rng):
    """A rejected call does not write its out= buffer."""
    out = np.full((2, 5, 6, 64), 7.0, np.float32)
    q, k, v = qkv(rng, q=(2, 5, 6, 64), k=(2, 7, 4, 64))
    with pytest.raises(ValueError):
        cuattn.attention(q, k, v, out=out)
    assert (out == 7.0).all()


# ------------------------------------------------------------------------------------------------
# GPU input without a usable GPU


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                             ("deleter", _DELETER)]
_noop_deleter = _DELETER(lambda p: None)
_CAPSULE_NAME = b"dltensor"
_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class FakeCudaArray:
    """A float16 array that claims to live on CUDA device 0 (kDLCUDA) through the plain DLPack
    protocol; its memory is host memory that a correct library never touches without a GPU."""

    def __init__(self, shape):
        self._host = np.zeros(shape, np.float16)
        self._shape = (ctypes.c_int64 * len(shape))(*shape)
        self._mt = _DLManagedTensor()
        t = self._mt.dl_tensor
        t.data = self._host.ctypes.data
        t.device = _DLDevice(2, 0)
        t.ndim = len(shape)
        t.dtype = _DLDataType(2, 16, 1)  # kDLFloat, 16 bits
        t.shape = self._shape
        t.strides = None
        t.byte_offset = 0
        self._mt.deleter = _noop_deleter
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.float16)

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None, **kwargs):
        return _PyCapsule_New(ctypes.addressof(self._mt), _CAPSULE_NAME, None)


def _skip_if_gpu():
    if cuattn.cuda_available():
        pytest.skip("a usable GPU is present: this case is about its absence")


def test_cuda_empty_without_gpu():
    _skip_if_gpu()
    with pytest.raises(cuattn.CudaError):
        x = cuattn.empty((2,), "float16", device="cuda")
        cuattn.attention(x, x, x)


def test_cuda_asarray_without_gpu(rng):
    _skip_if_gpu()
    with pytest.raises(cuattn.CudaError):
        x = cuattn.asarray(randn(rng, (1, 3, 2, 64), F16), device="cuda")
        cuattn.attention(x, x, x)


def test_dlpack_cuda_array_without_gpu():
    _skip_if_gpu()
    keep = [FakeCudaArray((1, 4, 2, 64)) for _ in range(3)]
    with pytest.raises(cuattn.CudaError):
        cuattn.attention(*keep)  # the output allocation may be what fails
    with pytest.raises(cuattn.CudaError):  # with out= given, the C++ dispatch must refuse it
        cuattn.attention(*keep, out=FakeCudaArray((1, 4, 2, 64)))
    with pytest.raises(RuntimeError):  # CudaError is a RuntimeError
        cuattn.paged_attention(FakeCudaArray((2, 4, 64)), *(FakeCudaArray((4, 16, 2, 64))
                                                            for _ in range(2)),
                               np.zeros((2, 1), np.int32), np.ones(2, np.int32),
                               out=FakeCudaArray((2, 4, 64)))


# ------------------------------------------------------------------------------------------------
# GPU-only failures (run on the GPU, skip elsewhere)


def _gpu_zeros(shape, dtype):
    return to_device(np.zeros(shape, dtype), "cuda")


def test_gpu_float32_says_convert(rng):
    skip_unless_gpu()
    q, k, v = (to_device(x, "cuda") for x in qkv(rng, dtype="float32"))
    with pytest.raises(ValueError, match="float32") as e:
        cuattn.attention(q, k, v)
    assert "convert" in str(e.value).lower()


def test_gpu_mixed_devices(rng):
    skip_unless_gpu()
    q, k, v = qkv(rng, dtype=F16)
    with pytest.raises(ValueError, match="(?i)cpu|device"):
        cuattn.attention(to_device(q, "cuda"), k, to_device(v, "cuda"))
    with pytest.raises(ValueError, match="(?i)cpu|device"):
        cuattn.attention(to_device(q, "cuda"), to_device(k, "cuda"), to_device(v, "cuda"),
                         out=np.zeros(q.shape, np.float16))


def test_gpu_misaligned_base(rng):
    """A view offset by one element: base not 16-byte aligned -> ValueError."""
    skip_unless_gpu()
    n = 2 * 5 * 4 * 64
    flat = to_device(randn(rng, (n + 1,), F16), "cuda")
    q = flat[1:].reshape(2, 5, 4, 64)
    k, v = (to_device(x, "cuda") for x in qkv(rng, dtype=F16)[1:])
    with pytest.raises(ValueError, match="(?i)align|stride|offset"):
        cuattn.attention(q, k, v)


def test_gpu_stride_not_multiple_of_8(rng):
    skip_unless_gpu()
    big = to_device(randn(rng, (2, 5, 4, 68), F16), "cuda")
    q = big[..., :64]  # head stride 68: not a multiple of 8 elements
    k, v = (to_device(x, "cuda") for x in qkv(rng, dtype=F16)[1:])
    with pytest.raises(ValueError, match=r"\b68\b|stride"):
        cuattn.attention(q, k, v)


def test_gpu_head_dim_not_multiple_of_8(rng):
    skip_unless_gpu()
    q, k, v = (to_device(x, "cuda") for x in qkv(rng, q=(1, 5, 2, 36), k=(1, 5, 2, 36),
                                                   dtype=F16))
    with pytest.raises(ValueError, match=r"\b36\b"):
        cuattn.attention(q, k, v)


def test_gpu_check_true_validates_paged(rng):
    """check=True on the GPU validates block ids and lengths (one sync) -> ValueError."""
    skip_unless_gpu()
    q = to_device(randn(rng, (2, 4, 64), F16), "cuda")
    kc, vc = (to_device(randn(rng, (10, 16, 2, 64), F16), "cuda") for _ in range(2))
    bt = to_device(np.asarray([[0, 57], [1, 2]], np.int32), "cuda")
    sl = to_device(np.asarray([20, 5], np.int32), "cuda")
    with pytest.raises(ValueError, match="57"):
        cuattn.paged_attention(q, kc, vc, bt, sl, check=True)
    sl_bad = to_device(np.asarray([1000, 5], np.int32), "cuda")
    with pytest.raises(ValueError, match="1000"):
        cuattn.paged_attention(q, kc, vc, to_device(np.asarray([[0, 1], [2, 3]], np.int32),
                                                    "cuda"), sl_bad, check=True)


def test_gpu_unchecked_bad_ids_do_not_fault(rng):
    """Without check, bad ids are clamped: values unspecified, but no fault (later calls work)."""
    skip_unless_gpu()
    q = to_device(randn(rng, (2, 4, 64), F16), "cuda")
    kc, vc = (to_device(randn(rng, (10, 16, 2, 64), F16), "cuda") for _ in range(2))
    bt = to_device(np.asarray([[0, 10**6], [-5, 2]], np.int32), "cuda")
    sl = to_device(np.asarray([20, 5], np.int32), "cuda")
    cuattn.paged_attention(q, kc, vc, bt, sl)
    k, v = (to_device(x, "cuda") for x in qkv(rng, dtype=F16)[1:])
    out = cuattn.attention(to_device(randn(rng, (2, 5, 4, 64), F16), "cuda"), k, v)
    if gpu_framework() == "torch":
        import torch

        torch.cuda.synchronize()
    else:
        import cupy as cp

        cp.cuda.Device().synchronize()
    assert out is not None
