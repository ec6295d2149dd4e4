"""Array plumbing: frameworks, streams, DLPack export, output allocation, and cuattn.Array.

Every public function goes through one `_Call`: it finds q's framework and device, resolves the
stream S (explicit `stream=`, else the current stream of q's framework, found through
sys.modules without importing anything, else the legacy default stream), exports each input with
`x.__dlpack__(stream=S)` so the producer orders its pending work before ours, and allocates
outputs in q's framework.
"""

from __future__ import annotations

import sys

import numpy as np

from . import _checks, _cuattn

try:  # ml_dtypes gives NumPy bfloat16 / float8_e4m3fn
    import ml_dtypes as _mld

    _BF16 = np.dtype(_mld.bfloat16)
    _FP8 = np.dtype(_mld.float8_e4m3fn)
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    _mld = None
    _BF16 = _FP8 = None

CudaError = _cuattn.CudaError

# NumPy cannot export these through DLPack: we pass a same-width unsigned view and the real dtype.
_RAW_VIEW = {}
if _BF16 is not None:
    _RAW_VIEW[_BF16] = (np.uint16, "bfloat16")
    _RAW_VIEW[_FP8] = (np.uint8, "float8_e4m3fn")

# DLPack (code, bits) of the dtypes cuattn.Array can hold.
_DL_CODES = {
    np.dtype(np.float32): (2, 32),
    np.dtype(np.float16): (2, 16),
    np.dtype(np.float64): (2, 64),
    np.dtype(np.int32): (0, 32),
    np.dtype(np.int64): (0, 64),
    np.dtype(np.uint8): (1, 8),
    np.dtype(np.uint16): (1, 16),
    np.dtype(np.uint32): (1, 32),
}
if _BF16 is not None:
    _DL_CODES[_BF16] = (4, 16)
    _DL_CODES[_FP8] = (10, 8)
_FROM_DL = {v: k for k, v in _DL_CODES.items()}

_DL_CUDA = (2, 13)  # kDLCUDA, kDLCUDAManaged


def as_dtype(dtype, name="dtype") -> np.dtype:
    """Normalises a dtype given as a string, NumPy/ml_dtypes dtype or torch/cupy dtype."""
    if isinstance(dtype, str):
        names = {"bfloat16": _BF16, "bf16": _BF16, "float8_e4m3fn": _FP8, "fp8_e4m3": _FP8,
                 "f16": np.dtype(np.float16), "f32": np.dtype(np.float32)}
        if dtype in names and names[dtype] is not None:
            return names[dtype]
    elif type(dtype).__module__.startswith("torch"):  # torch.bfloat16 -> "bfloat16"
        return as_dtype(str(dtype).replace("torch.", ""), name)
    elif dtype is None:
        raise TypeError(f"{name} must be a dtype or a dtype name, got None")
    try:
        return np.dtype(dtype)
    except TypeError:
        if isinstance(dtype, str):
            raise ValueError(f"{name}: unknown dtype {dtype!r}") from None
        raise TypeError(f"{name} must be a dtype or a dtype name, got {type(dtype).__name__} "
                        f"{dtype!r}") from None


def framework(x) -> str:
    """'numpy', 'torch', 'cupy', 'jax', 'cuattn' or 'other' (anything else with __dlpack__)."""
    t = type(x)
    if t is np.ndarray:
        return "numpy"
    if t is Array:
        return "cuattn"
    mod = t.__module__
    if mod.startswith("torch"):
        return "torch"
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("jax"):
        return "jax"
    return "other"


def _stream_handle(stream) -> int:
    if isinstance(stream, (int, np.integer)) and not isinstance(stream, (bool, np.bool_)):
        return _checks.integer(stream, "stream", 0, (1 << 64) - 1, bits=64)
    cs = getattr(stream, "__cuda_stream__", None)
    if cs is not None:
        v = cs() if callable(cs) else cs
        if isinstance(v, tuple):  # CUDA stream protocol: (version, handle)
            v = v[1]
        return int(v)
    for attr in ("cuda_stream", "ptr", "handle"):
        v = getattr(stream, attr, None)
        if v is not None:
            return _stream_handle(v)
    raise TypeError(
        f"stream must be an int handle or an object with __cuda_stream__, .cuda_stream or .ptr; "
        f"got {type(stream).__name__}"
    )


_TORCH = None  # (Tensor, C++ DLPack exporter, current raw stream getter), once torch is imported
_CUPY = None  # (ndarray, current stream getter), once cupy is imported


def _torch():
    global _TORCH
    if _TORCH is None:
        torch = sys.modules["torch"]
        _TORCH = (torch.Tensor, torch._C._to_dlpack, getattr(torch._C, "_cuda_getCurrentRawStream", None))
    return _TORCH


def _cupy():
    global _CUPY
    if _CUPY is None:
        cp = sys.modules["cupy"]
        _CUPY = (cp.ndarray, cp.cuda.get_current_stream)
    return _CUPY


def _current_stream(x, fw: str, device_id: int) -> int:
    if fw == "torch":
        raw = _torch()[2]
        if raw is not None:
            return int(raw(device_id))
        return int(sys.modules["torch"].cuda.current_stream(x.device).cuda_stream)
    if fw == "cupy":
        return int(_cupy()[1]().ptr)
    return 0  # legacy default stream


class _Call:
    """Per-call context: q's framework, device and stream; exports inputs, allocates outputs."""

    __slots__ = ("fw", "cuda", "device_id", "stream", "dl_stream", "q", "fast")

    def __init__(self, q, stream, name="q"):
        self.q = q
        handle = None if stream is None else _stream_handle(stream)
        mod = type(q).__module__
        if mod == "torch" and type(q) is _torch()[0]:
            # PyTorch, the common case, with as few Python-level calls as possible: get_device()
            # is -1 on the CPU, and the export below is torch's C++ one.
            self.fw = "torch"
            dev = q.get_device()
            self.cuda = dev >= 0
            self.device_id = max(dev, 0)
        elif mod.startswith("cupy") and type(q) is _cupy()[0]:
            self.fw = "cupy"
            self.cuda = True
            self.device_id = q.device.id
        else:
            check_array(q, name)
            self.fw = framework(q)
            dev_type, dev_id = q.__dlpack_device__()
            self.cuda = int(dev_type) in _DL_CUDA
            self.device_id = int(dev_id) if self.cuda else 0
        self.dl_stream = None
        if self.cuda:
            if stream is None:
                # Our stream is the producer's current stream: its pending work is already ordered
                # before ours, so the exports need no stream argument (which would cost PyTorch an
                # event record and wait per array).
                self.stream = _current_stream(q, self.fw, self.device_id)
            else:
                self.stream = handle
                # DLPack: 1 is the legacy default stream (0 is not allowed as a stream argument).
                self.dl_stream = self.stream if self.stream != 0 else 1
        else:
            self.stream = 0
        # Arrays of q's own (torch or cupy) type, with no stream argument to pass, skip the
        # generic checks (and torch's go through its C++ exporter).
        self.fast = type(q) if self.fw in ("torch", "cupy") and self.dl_stream is None else None

    # ---- inputs -------------------------------------------------------------------------------
    def inp(self, x, name, real=""):
        """What an argument struct's tensor field takes for the required array x: its DLPack
        capsule, ordered on our stream, or (capsule, dtype name) for a raw unsigned view of a
        dtype the producer cannot export (NumPy bfloat16 / float8, or `real` given)."""
        if type(x) is self.fast:
            if self.fw == "cupy":
                cap = x.__dlpack__()
            else:  # PyTorch's C++ exporter, without the Python-level checks of Tensor.__dlpack__
                cap = _TORCH[1](_forward_only(x, name) if x.requires_grad else x)
            return (cap, real) if real else cap
        if x is None:
            raise TypeError(f"{name} must be an array with __dlpack__, got None")
        check_array(x, name)
        kw = {}
        if type(x) is np.ndarray:
            raw = _RAW_VIEW.get(x.dtype)
            if raw is not None:
                x, real = x.view(raw[0]), real or raw[1]
            elif x.dtype.kind not in "biuf":
                raise ValueError(f"{name} has dtype {x.dtype}, which cuattn does not take")
            if not x.flags.writeable:  # only a versioned capsule can say "read-only"
                kw["max_version"] = (1, 0)
        else:
            if getattr(x, "requires_grad", False):
                x = _forward_only(x, name)
            if self.dl_stream is not None and int(x.__dlpack_device__()[0]) in _DL_CUDA:
                kw["stream"] = self.dl_stream
        try:
            cap = x.__dlpack__(**kw)
        except BufferError as e:
            raise ValueError(f"{name} cannot be exported through DLPack: {e}") from None
        return (cap, real) if real else cap

    def opt(self, x, name, real=""):
        """inp() for an optional array: None stays None."""
        return None if x is None else self.inp(x, name, real)

    def out(self, x, name, real=""):
        """inp() for an array written in place (the C++ field checks that it is writable)."""
        if type(x) is not self.fast:
            if framework(x) == "jax":
                raise ValueError(f"{name}= cannot be a JAX array (JAX arrays are immutable)")
            if type(x) is np.ndarray and not x.flags.writeable:
                raise ValueError(f"{name} is read-only; an output must be writable")
        return self.inp(x, name, real)

    # ---- outputs ------------------------------------------------------------------------------
    def empty(self, shape, dtype=None):
        """An uninitialised array in q's framework on q's device (dtype None: q's dtype)."""
        q, fw = self.q, self.fw
        if fw == "torch":
            # new_empty: q's device and (by default) dtype without building a torch.device, a few
            # microseconds cheaper than torch.empty(..., device=q.device).
            if dtype is None:
                return q.new_empty(shape)
            return q.new_empty(shape, dtype=sys.modules["torch"].float32)
        shape = tuple(int(s) for s in shape)
        if fw == "cupy":
            cp = sys.modules["cupy"]
            with cp.cuda.Device(self.device_id):
                return cp.empty(shape, dtype=q.dtype if dtype is None else np.float32)
        dt = np.dtype(np.float32) if dtype is not None else as_dtype(q.dtype)
        if self.cuda:  # JAX, cuattn.Array and other producers on the GPU: cudaMallocAsync on S
            return empty(shape, dt, device=f"cuda:{self.device_id}", stream=self.stream)
        return np.empty(shape, dtype=dt)

    def result(self, x):
        """Converts an output we allocated back to q's framework where that differs (JAX: a
        cuattn.Array on the GPU, handed over through DLPack; a NumPy array on the CPU, copied)."""
        if self.fw != "jax" or framework(x) == "jax":
            return x
        jax = sys.modules["jax"]
        if isinstance(x, Array):
            return jax.dlpack.from_dlpack(x)
        # On q's own (CPU) device: jnp.asarray alone would put it on JAX's default device, a GPU
        # where one is present.
        return jax.device_put(x, next(iter(self.q.devices())))

    def capturing(self) -> bool:
        return self.cuda and _cuattn.stream_is_capturing(self.stream)


def _forward_only(x, name):
    """A PyTorch tensor that requires grad, detached where autograd is off (torch.no_grad(),
    inference_mode); with autograd on it is an error, not a silently cut graph."""
    if sys.modules["torch"].is_grad_enabled():
        raise ValueError(
            f"{name} requires grad, but cuattn has no backward pass yet: call it under "
            f"torch.no_grad() / torch.inference_mode(), or pass {name}.detach()")
    return x.detach()


def check_array(x, name):
    if not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__"):
        raise TypeError(
            f"{name} must be an array with __dlpack__ (NumPy, CuPy, PyTorch, JAX or cuattn.Array), "
            f"got {type(x).__name__}"
        )


# ---------------------------------------------------------------------------------------------
# cuattn.Array: a minimal GPU (or host) array so that NumPy-only users can use the GPU.


def _default_device() -> str:
    """Where new arrays go when no device is named: the GPU when one is usable, else the host."""
    return "cuda" if _cuattn.cuda_available() else "cpu"


def _device_of(x) -> str:
    """x's device as 'cpu' / 'cuda:N' (host data without DLPack, e.g. lists: 'cpu')."""
    if isinstance(x, Array):
        return x.device
    dev = getattr(x, "__dlpack_device__", None)
    if dev is None:
        return "cpu"
    dev_type, dev_id = dev()
    return f"cuda:{int(dev_id)}" if int(dev_type) in _DL_CUDA else "cpu"


def _contiguous_strides(shape):
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(strides))


class Array:
    """A strided array in GPU (or host) memory owned by cuattn, exported through DLPack.

    Made by `cuattn.empty`, `cuattn.asarray` or returned by cuattn functions called with
    `cuattn.Array` / JAX inputs. Any DLPack consumer (NumPy for host arrays, CuPy, PyTorch, JAX)
    can take it; `.numpy()` copies it to the host. GPU memory is allocated with cudaMallocAsync on
    a stream and freed with cudaFreeAsync on the same stream when the Array is dropped: work on
    other streams that uses it must be ordered before it is dropped.
    """

    __slots__ = ("_owner", "_nd", "_ptr", "shape", "dtype", "strides", "is_cuda", "device_id")

    def __init__(self, owner, ptr, shape, dtype, strides=None, is_cuda=True, device_id=0):
        self._owner = owner
        self._ptr = int(ptr)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = as_dtype(dtype)
        self.strides = tuple(strides) if strides is not None else _contiguous_strides(self.shape)
        self.is_cuda = bool(is_cuda)
        self.device_id = int(device_id)
        if self.dtype not in _DL_CODES:
            raise ValueError(f"cuattn.Array cannot hold dtype {self.dtype}")
        code, bits = _DL_CODES[self.dtype]
        self._nd = _cuattn.buffer_ndarray(owner, self._ptr, list(self.shape), list(self.strides),
                                          code, bits, self.is_cuda, self.device_id)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def device(self) -> str:
        return f"cuda:{self.device_id}" if self.is_cuda else "cpu"

    @property
    def data_ptr(self) -> int:
        return self._ptr

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        # DLPack: the consumer's `stream` (None: the legacy default stream, -1: no ordering) must
        # see the work queued on ours; 0 and 1 both name the legacy default stream.
        if self.is_cuda and stream != -1:
            ours = getattr(self._owner, "stream", 0)
            theirs = 1 if stream is None else _stream_handle(stream)
            if {ours, theirs} - {0, 1} and ours != theirs:
                _cuattn.stream_wait(theirs, ours)
        kw = {} if max_version is None else {"max_version": max_version}
        return self._nd.__dlpack__(**kw)

    def __dlpack_device__(self):
        return (2, self.device_id) if self.is_cuda else (1, 0)

    def _is_contiguous(self):
        return self.strides == _contiguous_strides(self.shape)

    def numpy(self) -> np.ndarray:
        """A host copy (synchronises with the Array's stream for GPU arrays)."""
        if not self._is_contiguous():
            raise ValueError("numpy(): only contiguous cuattn.Arrays can be copied to the host")
        if not self.is_cuda:  # host Arrays are backed by a NumPy array
            return np.array(self._owner, copy=True)
        out = np.empty(self.shape, dtype=self.dtype)
        if self.size:
            stream = getattr(self._owner, "stream", 0) if self.is_cuda else 0
            _cuattn.memcpy(out.ctypes.data, self._ptr, self.nbytes, stream, True)
        return out

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"cuattn.Array(shape={self.shape}, dtype={self.dtype}, device='{self.device}')"


def empty(shape, dtype, device=None, stream=None) -> Array:
    """An uninitialised `cuattn.Array` (GPU memory from cudaMallocAsync on `stream`). device:
    'cpu', 'cuda' or 'cuda:N'; default the GPU when one is usable, else the host."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    elif not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be an int or a tuple of ints, got {type(shape).__name__}")
    shape = tuple(_checks.integer(s, "shape", 0) for s in shape)
    dt = as_dtype(dtype)
    is_cuda, dev = _checks.device(_default_device() if device is None else device)
    s = _stream_handle(stream) if stream is not None else 0
    if not is_cuda:
        host = np.empty(shape, dtype=dt)
        return Array(host, host.ctypes.data, shape, dt, is_cuda=False)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    buf = _cuattn.DeviceBuffer(nbytes, dev, s)
    return Array(_BufOwner(buf, s), buf.ptr, shape, dt, is_cuda=True, device_id=dev)


class _BufOwner:
    __slots__ = ("buf", "stream")

    def __init__(self, buf, stream):
        self.buf, self.stream = buf, stream


def asarray(x, device=None, dtype=None, stream=None) -> Array:
    """Copies x (NumPy or anything np.asarray accepts, a GPU array or a cuattn.Array) to `device`
    ('cpu', 'cuda' or 'cuda:N'; default x's own device, host data: 'cpu')."""
    if x is None:
        raise TypeError("asarray: x must be an array or array-like, got None")
    if device is None:
        device = _device_of(x)
    is_cuda, dev = _checks.device(device)
    s = _stream_handle(stream) if stream is not None else 0
    if isinstance(x, Array) and x.is_cuda == is_cuda and (not is_cuda or x.device_id == dev) and (
        dtype is None or as_dtype(dtype) == x.dtype
    ):
        return x
    if hasattr(x, "__dlpack_device__") and int(x.__dlpack_device__()[0]) in _DL_CUDA and not isinstance(x, Array):
        # A foreign GPU array: copy its bytes (contiguous only).
        ptr, shape, strides, code, bits, _, src_dev = _cuattn.array_info(x.__dlpack__())
        if tuple(strides) != _contiguous_strides(shape):
            raise ValueError("asarray: GPU source arrays must be contiguous")
        dt = _FROM_DL.get((code, bits))
        if dt is None:
            raise ValueError(f"asarray: unsupported dtype (DLPack code {code}, {bits} bits)")
        out = empty(shape, dt, device=device, stream=s)
        _cuattn.memcpy(out.data_ptr, ptr, out.nbytes, s, True)
        return out if dtype is None else asarray(out.numpy().astype(as_dtype(dtype)), device, stream=s)
    if isinstance(x, Array):
        host = x.numpy()
    else:
        host = np.asarray(x)
    if dtype is not None:
        host = host.astype(as_dtype(dtype))
    host = np.ascontiguousarray(host)
    out = empty(host.shape, host.dtype, device=device, stream=s)
    if not is_cuda:
        np.copyto(out._owner, host)
    elif host.nbytes:
        _cuattn.memcpy(out.data_ptr, host.ctypes.data, host.nbytes, s, True)
    return out
