"""cuattn: readable CUDA attention kernels, callable from Python through DLPack.

Every function takes anything with ``__dlpack__`` (NumPy, CuPy, PyTorch, JAX, ``cuattn.Array``)
and runs where its inputs live: CUDA arrays on the GPU kernels, host arrays on the CPU backend.
Forward pass only. See README.md and DESIGN.md for the conventions (layouts, masks, dtypes).
"""

from . import _cuattn
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
from .block_mask import BlockMask, create_block_mask

__version__ = _cuattn.build_info()["version"]

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
    return dict(_cuattn.device_info(device))


def build_info() -> dict:
    """How cuattn was built: version, CUDA on/off, toolkit version, architectures, head dims."""
    return dict(_cuattn.build_info())
