"""The package's attention entry points, aware of torch.compile.

`cuattn.attention`, `sliding_window_attention`, `paged_attention` and `append_paged_kv` are the
library functions of `_api`, except while torch.compile (or torch.export) traces a call: then
they call the same-named functions of `_torch_ops`, which put one of cuattn's torch custom ops
in the graph. Eager calls go straight to the library (a custom op's dispatch would cost a few
microseconds a call). PyTorch is looked up in sys.modules, never imported here: a NumPy- or
CuPy-only program never loads it.
"""

from __future__ import annotations

import functools
import sys

from . import _api


def compiling() -> bool:
    """True while torch.compile or torch.export traces the calling code (PyTorch already
    imported; False otherwise, without importing it)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    return is_compiling is not None and is_compiling()


def _route(fn):
    name = fn.__name__

    @functools.wraps(fn)
    def routed(*args, **kwargs):
        if compiling():
            # Importing _torch_ops registers the ops; Dynamo runs imports for real while tracing.
            from . import _torch_ops

            return getattr(_torch_ops, name)(*args, **kwargs)
        return fn(*args, **kwargs)

    return routed


attention = _route(_api.attention)
sliding_window_attention = _route(_api.sliding_window_attention)
paged_attention = _route(_api.paged_attention)
append_paged_kv = _route(_api.append_paged_kv)
