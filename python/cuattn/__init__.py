"""cuattn: readable CUDA attention kernels, callable from Python through DLPack.

Every function takes anything with ``__dlpack__`` (NumPy, CuPy, PyTorch, JAX, ``cuattn.Array``)
and runs where its inputs live: CUDA arrays on the GPU kernels, host arrays on the CPU backend.
Forward pass only. The conventions every function shares (layouts, masks, dtypes, streams,
errors) are described in docs/conventions.md of the source tree, and in each function's docstring.
"""

from . import _checks, _cuattn
from ._api import (
    DecodePlan,
    append_paged_kv,
    attention,
    merge_states,
    mla_attention,
    mla_decode,
    naive_attention,
    paged_attention,
    plan_decode,
    sliding_window_attention,
)
from ._arrays import Array, CudaError, asarray, empty
from ._cuattn import get_num_threads, set_num_threads
# The same four functions, calling cuattn's torch custom ops while torch.compile traces them.
from ._routing import append_paged_kv, attention, paged_attention, sliding_window_attention  # noqa
from .block_mask import BlockMask, create_block_mask
from ._version import __version__

__all__ = [
    "Array", "BlockMask", "CudaError", "DecodePlan", "append_paged_kv", "asarray", "attention",
    "build_info", "create_block_mask", "cuda_available", "device_info", "empty", "get_num_threads",
    "merge_states", "mla_attention", "mla_decode", "naive_attention", "paged_attention",
    "plan_decode", "set_num_threads", "sliding_window_attention",
]


def cuda_available() -> bool:
    """True when this build has CUDA kernels and a usable GPU is present."""
    return bool(_cuattn.cuda_available())


def device_info(device: int = 0) -> dict:
    """Name, SM count, memory, compute capability and driver of a GPU, or {'available': False,
    'reason': ...} when there is none."""
    return dict(_cuattn.device_info(_checks.integer(device, "device", 0, bits=_checks.INT32)))


def build_info() -> dict:
    """How cuattn was built: version, CUDA on/off, toolkit version, architectures, head dims."""
    return dict(_cuattn.build_info())
