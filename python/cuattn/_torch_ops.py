"""PyTorch custom ops: torch.compile(fullgraph=True), torch.export and CUDA graphs.

Importing this module imports PyTorch (2.4 or newer) and registers three ops, each with a fake
(meta) implementation that gives the outputs' shapes and dtypes without running anything:

    torch.ops.cuattn.attention(q, k, v, causal, window, scale, softcap, sinks, cu_seqlens_q,
        cu_seqlens_k, max_seqlen_q, max_seqlen_k, layout, return_lse, check) -> (out, lse)
    torch.ops.cuattn.paged_attention(q, k_cache, v_cache, block_table, seq_lens, scale,
        softcap, window, sinks, k_scale, k_scale_value, v_scale, v_scale_value, kv_layout,
        kv_cache_dtype, return_lse, check, cu_seqlens_q=None, max_seqlen_q=None) -> (out, lse)
    torch.ops.cuattn.append_paged_kv(k_new, v_new, k_cache, v_cache, slot_mapping, k_scale,
        k_scale_value, v_scale, v_scale_value, kv_layout, kv_cache_dtype, check) -> ()
        (writes k_cache and v_cache in place: declared in mutates_args)

Arguments mean what they mean in cuattn.attention / paged_attention / append_paged_kv; window is
None, [W] or [left, right]; a dequantisation scale is a tensor (k_scale) or a float
(k_scale_value), not both; lse is an empty tensor unless return_lse.

How calls reach them: while torch.compile (or torch.export) traces, `cuattn.attention`,
`sliding_window_attention`, `paged_attention` and `append_paged_kv` call the same-named
functions below (same signatures), which call the ops, so the compiled graph holds them; eager
calls go straight to the library. Code that calls cuattn therefore compiles with
`torch.compile(fn, fullgraph=True)`, and `mode="reduce-overhead"` captures the calls in CUDA
graphs: the ops allocate their outputs through PyTorch and launch on the current stream with no
synchronisation. While tracing:
- block_mask= and plan= (Python objects, not tensors) are refused; without fullgraph=True such a
  call runs eagerly through a graph break instead;
- stream= is refused (put the compiled call under `torch.cuda.stream(s)`);
- out=/lse_out= receive a copy of the op's results;
- a tensor that requires grad (grad mode on) raises ValueError: cuattn has no backward pass yet.
  The attention ops raise the same error when called eagerly with such a tensor; the mutating
  append op cannot (torch.library gives mutating ops no autograd formula and runs them with
  grad mode off), so a direct call of it leaves that check to the caller.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import _api

if not hasattr(torch.library, "custom_op"):
    raise ImportError(f"cuattn's torch ops need PyTorch 2.4 or newer, found {torch.__version__}")


def _grad_error(name):
    return ValueError(f"{name} requires grad, but cuattn has no backward pass yet: call it under "
                      f"torch.no_grad() or torch.inference_mode(), or pass {name}.detach()")


def _refuse_grad(**tensors):
    if torch.is_grad_enabled():
        for name, t in tensors.items():
            if t is not None and t.requires_grad:
                raise _grad_error(name)


def _no_backward(op):
    """Makes `op` raise _grad_error when autograd would have to record it (an input requires
    grad and grad mode is on)."""
    names = [a.name for a in op._opoverload._schema.arguments]

    def setup_context(ctx, inputs, output):
        name = next(n for n, x in zip(names, inputs) if getattr(x, "requires_grad", False))
        raise _grad_error(name)

    op.register_autograd(lambda ctx, *grads: None, setup_context=setup_context)


_HINTS = {
    "block_mask": "a BlockMask is not a tensor",
    "plan": "a DecodePlan is not a tensor",
    "stream": "put the compiled call under torch.cuda.stream(s) instead",
}


def _traceable(**args):
    for name, x in args.items():
        if x is not None:
            raise ValueError(f"{name}= cannot be traced by torch.compile ({_HINTS[name]}): call "
                             f"cuattn outside the compiled region, or compile without "
                             f"fullgraph=True so that this call runs eagerly")


def _opt(convert, x):
    return None if x is None else convert(x)


def _window_list(window):
    """window= in the ops' form: None, [W] (an int keeps its meaning, which depends on causal)
    or [left, right] (None -> -1)."""
    if window is None:
        return None
    if isinstance(window, bool):
        raise TypeError(f"window must be an int or a (left, right) pair, got {window!r}")
    if isinstance(window, int):
        return [window]
    left, right = window
    return [-1 if left is None else int(left), -1 if right is None else int(right)]


def _window_arg(window):
    return None if window is None else window[0] if len(window) == 1 else tuple(window)


def _scale_args(scale):
    """(tensor, None) or (None, float) or (None, None): the ops' two halves of a scale."""
    if isinstance(scale, Tensor):
        return scale, None
    return None, _opt(float, scale)


def _results(out_op, lse_op, out, lse_out, return_lse):
    if out is not None:
        out_op = out.copy_(out_op)
    if lse_out is not None:
        lse_op = lse_out.copy_(lse_op)
    return (out_op, lse_op) if return_lse else out_op


# ---- cuattn::attention --------------------------------------------------------------------------


def _attention_outputs(q, v, layout, return_lse):
    """Uninitialised (out, lse) as cuattn.attention lays them out; lse is empty unless wanted."""
    if q.dim() not in (3, 4):
        raise ValueError(f"q must be 4-D (or 3-D with cu_seqlens_q), got shape {tuple(q.shape)}")
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    if not return_lse:
        lse_shape = (0,)
    elif q.dim() == 3:  # varlen: [Hq, total_q]
        lse_shape = (q.shape[1], q.shape[0])
    elif layout == "bshd":
        lse_shape = (q.shape[0], q.shape[2], q.shape[1])
    else:
        lse_shape = tuple(q.shape[:3])
    return out, q.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op("cuattn::attention", mutates_args=())
def _attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, window: Optional[List[int]],
               scale: Optional[float], softcap: float, sinks: Optional[Tensor],
               cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
               max_seqlen_q: Optional[int], max_seqlen_k: Optional[int], layout: str,
               return_lse: bool, check: bool) -> Tuple[Tensor, Tensor]:
    out, lse = _attention_outputs(q, v, layout, return_lse)
    _api.attention(q, k, v, causal=causal, window=_window_arg(window), scale=scale,
                   softcap=softcap, sinks=sinks, cu_seqlens_q=cu_seqlens_q,
                   cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q,
                   max_seqlen_k=max_seqlen_k, layout=layout, out=out,
                   lse_out=lse if return_lse else None, check=check)
    return out, lse


@_attention.register_fake
def _(q, k, v, causal, window, scale, softcap, sinks, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
      max_seqlen_k, layout, return_lse, check):
    return _attention_outputs(q, v, layout, return_lse)


_no_backward(_attention)


def attention(q, k, v, *, causal=False, window=None, scale=None, softcap=0.0, sinks=None,
              cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
              block_mask=None, layout="bshd", return_lse=False, out=None, lse_out=None,
              stream=None, check=False):
    """cuattn.attention while torch.compile traces: one cuattn::attention op."""
    _traceable(block_mask=block_mask, stream=stream)
    _refuse_grad(q=q, k=k, v=v, sinks=sinks)
    o, lse = torch.ops.cuattn.attention(
        q, k, v, bool(causal), _window_list(window), _opt(float, scale), float(softcap), sinks,
        cu_seqlens_q, cu_seqlens_k, _opt(int, max_seqlen_q), _opt(int, max_seqlen_k), layout,
        bool(return_lse or lse_out is not None), bool(check))
    return _results(o, lse, out, lse_out, return_lse)


def sliding_window_attention(q, k, v, window, *, causal=False, **kw):
    """cuattn.sliding_window_attention while torch.compile traces."""
    return attention(q, k, v, window=window, causal=causal, **kw)


# ---- cuattn::paged_attention --------------------------------------------------------------------


def _paged_outputs(q, v_cache, return_lse, mixed):
    """Uninitialised (out, lse) as cuattn.paged_attention lays them out (mixed: lse
    [Hq, total_q]); lse is empty unless wanted."""
    if q.dim() not in (3, 4):
        raise ValueError(f"q must be [B, Hq, D], [B, Sq, Hq, D] or (with cu_seqlens_q) "
                         f"[total_q, Hq, D], got shape {tuple(q.shape)}")
    out = q.new_empty((*q.shape[:-1], v_cache.shape[-1]))
    lse_shape = _api._paged_lse_shape(tuple(q.shape), mixed) if return_lse else (0,)
    return out, q.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op("cuattn::paged_attention", mutates_args=())
def _paged_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_table: Tensor,
                     seq_lens: Tensor, scale: Optional[float], softcap: float,
                     window: Optional[List[int]], sinks: Optional[Tensor],
                     k_scale: Optional[Tensor], k_scale_value: Optional[float],
                     v_scale: Optional[Tensor], v_scale_value: Optional[float], kv_layout: str,
                     kv_cache_dtype: Optional[str], return_lse: bool, check: bool,
                     cu_seqlens_q: Optional[Tensor] = None,
                     max_seqlen_q: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    out, lse = _paged_outputs(q, v_cache, return_lse, cu_seqlens_q is not None)
    _api.paged_attention(q, k_cache, v_cache, block_table, seq_lens, scale=scale, softcap=softcap,
                         window=_window_arg(window), sinks=sinks,
                         k_scale=k_scale if k_scale is not None else k_scale_value,
                         v_scale=v_scale if v_scale is not None else v_scale_value,
                         kv_layout=kv_layout, kv_cache_dtype=kv_cache_dtype, check=check, out=out,
                         lse_out=lse if return_lse else None, cu_seqlens_q=cu_seqlens_q,
                         max_seqlen_q=max_seqlen_q)
    return out, lse


@_paged_attention.register_fake
def _(q, k_cache, v_cache, block_table, seq_lens, scale, softcap, window, sinks, k_scale,
      k_scale_value, v_scale, v_scale_value, kv_layout, kv_cache_dtype, return_lse, check,
      cu_seqlens_q=None, max_seqlen_q=None):
    return _paged_outputs(q, v_cache, return_lse, cu_seqlens_q is not None)


_no_backward(_paged_attention)


def paged_attention(q, k_cache, v_cache, block_table, seq_lens, *, scale=None, softcap=0.0,
                    window=None, sinks=None, k_scale=None, v_scale=None, kv_layout="NHD",
                    kv_cache_dtype=None, plan=None, check=False, return_lse=False, out=None,
                    lse_out=None, stream=None, cu_seqlens_q=None, max_seqlen_q=None):
    """cuattn.paged_attention while torch.compile traces: one cuattn::paged_attention op."""
    _traceable(plan=plan, stream=stream)
    _refuse_grad(q=q, k_cache=k_cache, v_cache=v_cache, sinks=sinks)
    o, lse = torch.ops.cuattn.paged_attention(
        q, k_cache, v_cache, block_table, seq_lens, _opt(float, scale), float(softcap),
        _window_list(window), sinks, *_scale_args(k_scale), *_scale_args(v_scale), str(kv_layout),
        kv_cache_dtype, bool(return_lse or lse_out is not None), bool(check), cu_seqlens_q,
        _opt(int, max_seqlen_q))
    return _results(o, lse, out, lse_out, return_lse)


# ---- cuattn::append_paged_kv --------------------------------------------------------------------


@torch.library.custom_op("cuattn::append_paged_kv", mutates_args=("k_cache", "v_cache"))
def _append_paged_kv(k_new: Tensor, v_new: Tensor, k_cache: Tensor, v_cache: Tensor,
                     slot_mapping: Tensor, k_scale: Optional[Tensor],
                     k_scale_value: Optional[float], v_scale: Optional[Tensor],
                     v_scale_value: Optional[float], kv_layout: str,
                     kv_cache_dtype: Optional[str], check: bool) -> None:
    _api.append_paged_kv(k_new, v_new, k_cache, v_cache, slot_mapping,
                         k_scale=k_scale if k_scale is not None else k_scale_value,
                         v_scale=v_scale if v_scale is not None else v_scale_value,
                         kv_layout=kv_layout, kv_cache_dtype=kv_cache_dtype, check=check)


@_append_paged_kv.register_fake
def _(k_new, v_new, k_cache, v_cache, slot_mapping, k_scale, k_scale_value, v_scale,
      v_scale_value, kv_layout, kv_cache_dtype, check):
    return None


def append_paged_kv(k_new, v_new, k_cache, v_cache, slot_mapping, *, k_scale=None, v_scale=None,
                    kv_layout="NHD", kv_cache_dtype=None, check=False, stream=None):
    """cuattn.append_paged_kv while torch.compile traces: one cuattn::append_paged_kv op."""
    _traceable(stream=stream)
    _refuse_grad(k_new=k_new, v_new=v_new)
    torch.ops.cuattn.append_paged_kv(k_new, v_new, k_cache, v_cache, slot_mapping,
                                     *_scale_args(k_scale), *_scale_args(v_scale), str(kv_layout),
                                     kv_cache_dtype, bool(check))
