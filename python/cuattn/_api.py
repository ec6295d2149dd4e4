"""The public attention functions: check arguments, allocate outputs, fill the C++ argument
struct by name, call the C++ core."""

from __future__ import annotations

import numpy as np

from . import _checks, _cuattn
from ._arrays import _Call, asarray
from ._checks import INT32
from .block_mask import BlockMask

_LAYOUTS = ("bshd", "bhsd")
_KV_LAYOUTS = ("NHD", "HND")
_FP8_NAMES = ("fp8_e4m3", "float8_e4m3fn")


def _scale(scale):
    """Softmax scale: None -> -1 (C++: 1/sqrt(D)), else a finite number > 0."""
    return -1.0 if scale is None else _checks.number(scale, "scale", 0, above=True)


def _needs_outputs(ctx, out, what):
    if out is None and ctx.capturing():
        raise ValueError(f"under CUDA-graph capture {what} must be passed (no allocation while capturing)")


def _shape(x):
    s = x.shape
    # NumPy/CuPy/JAX shapes are tuples of ints, torch.Size a tuple subclass: used as they are.
    return s if isinstance(s, tuple) else tuple(int(i) for i in s)


def _shape_or_empty(x):
    """x's shape, () for an object without one (the C++ call then names what is wrong)."""
    return _shape(x) if hasattr(x, "shape") else ()


def _plan(plan):
    if plan is None:
        return None
    if not isinstance(plan, DecodePlan):
        raise TypeError(f"plan must be a DecodePlan (from cuattn.plan_decode) or None, got "
                        f"{type(plan).__name__}")
    return plan._plan


def attention(q, k, v, *, causal=False, window=None, scale=None, softcap=0.0, sinks=None,
              cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
              block_mask=None, layout="bshd", return_lse=False, out=None, lse_out=None,
              stream=None, check=False, _variant=""):
    """Scaled dot-product attention, forward pass (flash attention on the GPU).

    q: [B, Sq, Hq, D] (layout="bshd") or [B, Hq, Sq, D] ("bhsd"); k, v: [B, Sk, Hkv, D|Dv] in the
    same layout, Hq % Hkv == 0 (GQA/MQA). Varlen (packed documents, never attending across them):
    q [total_q, Hq, D], k/v [total_k, Hkv, D], cu_seqlens_q/k int32 [n + 1] (max_seqlen_q/k
    required when they live on the GPU).

    Masks: with o = Sk - Sq (per sequence), key j is visible from query i when causal -> j <= i + o
    (bottom-right aligned), window=(left, right) -> i + o - left <= j <= i + o + right (-1 means
    unbounded; window=W means (W, W), or (W, 0) with causal), and block_mask (from
    create_block_mask) allows it. softcap > 0 applies softcap * tanh(s / softcap) to the scaled
    scores; sinks (float32 [Hq]) adds exp(sink) to each row's softmax denominator. Rows with no
    visible key give out 0 and lse -inf.

    Returns out (q's dtype and layout, last dim Dv) or (out, lse) with return_lse; lse is float32
    [B, Hq, Sq] (varlen: [Hq, total_q]), natural log. out=/lse_out= write into caller buffers.
    stream: int handle or stream object; default the current stream of q's framework.
    check=True validates GPU cu_seqlens contents (one device sync).
    _variant is internal (tests, benchmarks): "portable=1" forces the portable GPU kernel,
    "hopper=1" the sm_90a kernel (the default on sm_90 where the build and the call allow it).
    """
    a = _cuattn.AttentionArgs()
    a.layout = _checks.choice(layout, "layout", _LAYOUTS)
    a.causal = _checks.boolean(causal, "causal")
    a.window_left, a.window_right = _checks.window(window, "window", a.causal)
    a.scale = _scale(scale)
    a.softcap = _checks.number(softcap, "softcap", 0)
    a.max_seqlen_q = _checks.optional_integer(max_seqlen_q, "max_seqlen_q", 0)
    a.max_seqlen_k = _checks.optional_integer(max_seqlen_k, "max_seqlen_k", 0)
    a.check = _checks.boolean(check, "check")
    return_lse = _checks.boolean(return_lse, "return_lse")
    if block_mask is not None and not isinstance(block_mask, BlockMask):
        raise TypeError(f"block_mask must be a BlockMask (from cuattn.create_block_mask) or None, "
                        f"got {type(block_mask).__name__}")
    ctx = _Call(q, stream)
    a.q, a.k, a.v = ctx.inp(q, "q"), ctx.inp(k, "k"), ctx.inp(v, "v")
    a.cu_seqlens_q = ctx.opt(cu_seqlens_q, "cu_seqlens_q")
    a.cu_seqlens_k = ctx.opt(cu_seqlens_k, "cu_seqlens_k")
    a.sinks = ctx.opt(sinks, "sinks")
    if block_mask is not None:
        a.block_mask = block_mask._bind(ctx)
    qs = _shape_or_empty(q)
    if out is None:
        _needs_outputs(ctx, out, "out")
        vs = _shape_or_empty(v)
        out = ctx.empty(qs[:-1] + vs[-1:] if qs and vs else qs)
    a.out = ctx.out(out, "out")
    want_lse = return_lse or lse_out is not None
    if want_lse and lse_out is None:
        _needs_outputs(ctx, lse_out, "lse_out")
        varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
        if varlen and len(qs) == 3:
            lse_shape = (qs[1], qs[0])
        elif len(qs) == 4:
            lse_shape = (qs[0], qs[2], qs[1]) if a.layout == "bshd" else qs[:3]
        else:
            lse_shape = (0,)
        lse_out = ctx.empty(lse_shape, "float32")
    if want_lse:
        a.lse = ctx.out(lse_out, "lse_out")
    a.variant = str(_variant)
    _cuattn.attention(a, ctx.stream)
    out = ctx.result(out)
    if return_lse:
        return out, ctx.result(lse_out)
    return out


def sliding_window_attention(q, k, v, window, *, causal=False, **kw):
    """attention(q, k, v, window=window, causal=causal, **kw): each query sees keys within
    `window` of its diagonal (window=W: (W, W), or (W, 0) with causal; or a (left, right) pair).
    Hugging Face's sliding_window=N is window=(N - 1, 0) with causal=True."""
    return attention(q, k, v, window=window, causal=causal, **kw)


def naive_attention(q, k, v, *, causal=False, scale=None, layout="bshd", out=None, stream=None):
    """Attention that materialises the full [Sq, Sk] score matrix (O(S^2) memory): the textbook
    baseline for comparisons. Same conventions as attention (dense only)."""
    a = _cuattn.NaiveArgs()
    a.layout = _checks.choice(layout, "layout", _LAYOUTS)
    a.causal = _checks.boolean(causal, "causal")
    a.scale = _scale(scale)
    ctx = _Call(q, stream)
    a.q, a.k, a.v = ctx.inp(q, "q"), ctx.inp(k, "k"), ctx.inp(v, "v")
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(_shape(q)[:-1] + _shape_or_empty(v)[-1:])
    a.out = ctx.out(out, "out")
    _cuattn.naive_attention(a, ctx.stream)
    return ctx.result(out)


def merge_states(o_a, lse_a, o_b, lse_b, *, layout="bshd", out=None, lse_out=None, stream=None):
    """Merges two attention results over disjoint key sets (as attention returns them with
    return_lse): out = (e^lse_a o_a + e^lse_b o_b) / (e^lse_a + e^lse_b), lse = log of the sum.
    o: [B, S, H, D] (layout="bshd") or [B, H, S, D] ("bhsd") with lse [B, H, S]; or varlen
    o [total, H, D] with lse [H, total]. Where both lse are -inf: out 0, lse -inf.
    Returns (out, lse)."""
    a = _cuattn.MergeArgs()
    a.layout = _checks.choice(layout, "layout", _LAYOUTS)
    ctx = _Call(o_a, stream, "o_a")
    a.o_a, a.lse_a = ctx.inp(o_a, "o_a"), ctx.inp(lse_a, "lse_a")
    a.o_b, a.lse_b = ctx.inp(o_b, "o_b"), ctx.inp(lse_b, "lse_b")
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(_shape(o_a))
    if lse_out is None:
        _needs_outputs(ctx, lse_out, "lse_out")
        lse_out = ctx.empty(_shape_or_empty(lse_a), "float32")
    a.out, a.lse_out = ctx.out(out, "out"), ctx.out(lse_out, "lse_out")
    _cuattn.merge_states(a, ctx.stream)
    return ctx.result(out), ctx.result(lse_out)


# ---- paged KV cache ---------------------------------------------------------------------------


def _kv_real(kv_cache_dtype):
    """The dtype name a raw uint8 cache holds (kv_cache_dtype='fp8_e4m3'), '' for None."""
    if kv_cache_dtype is None:
        return ""
    _checks.choice(kv_cache_dtype, "kv_cache_dtype", _FP8_NAMES)
    return "float8_e4m3fn"


def _dequant_scale(a, ctx, s, name):
    """A dequantisation scale, a float > 0 (a.k_scale) or a float32 device scalar (a.k_scale_t)."""
    if s is None:
        return
    if hasattr(s, "__dlpack__"):
        setattr(a, name + "_t", ctx.inp(s, name))
    else:
        setattr(a, name, _checks.number(s, name, 0, above=True))


def _paged_lse_shape(qs, mixed):
    """lse's shape for a paged call with q of shape qs: [B, Hq, Sq] for q [B, Sq, Hq, D],
    [Hq, total_q] for a mixed batch's packed q, else [B, Hq] (the C++ call names a bad q)."""
    if len(qs) == 4:
        return (qs[0], qs[2], qs[1])
    if mixed and len(qs) == 3:
        return (qs[1], qs[0])
    return qs[:2]


def paged_attention(q, k_cache, v_cache, block_table, seq_lens, *, scale=None, softcap=0.0,
                    window=None, sinks=None, k_scale=None, v_scale=None, kv_layout="NHD",
                    kv_cache_dtype=None, plan=None, check=False, return_lse=False, out=None,
                    lse_out=None, stream=None, cu_seqlens_q=None, max_seqlen_q=None, _variant=""):
    """Attention of new tokens over a paged KV cache (vLLM layout).

    q: [B, Hq, D] (one new token per sequence) or [B, Sq, Hq, D] (token t sees keys
    j <= seq_len - Sq + t). Caches: [num_blocks, block_size, Hkv, D] (kv_layout="NHD") or
    [num_blocks, Hkv, block_size, D] ("HND"); strided views allowed; fp16/bf16, or fp8 e4m3
    (float8_e4m3fn, or uint8 with kv_cache_dtype="fp8_e4m3") dequantised with k_scale/v_scale
    (floats or device scalars). block_table int32 [B, max_blocks]; seq_lens int32 [B] counts
    cached tokens, new ones included. window=W means (W, 0). plan: a DecodePlan from
    plan_decode (optional: without it splits are chosen from shapes, with no sync).
    GPU inputs are validated with check=True or CUATTN_CHECK=1 (one sync); otherwise out-of-range
    ids and lengths are clamped (no out-of-bounds access, values unspecified).
    Returns out [B, (Sq,) Hq, Dv] or (out, lse) with lse [B, Hq] / [B, Hq, Sq].

    Mixed batches (chunked prefill beside decodes): q packed [total_q, Hq, D] with
    cu_seqlens_q int32 [B + 1] (cu_seqlens_q[0] = 0, non-decreasing, cu_seqlens_q[B] = total_q):
    sequence b's n_b = cu_seqlens_q[b + 1] - cu_seqlens_q[b] new tokens are q rows
    cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1, the last n_b of its seq_lens[b] cached tokens
    (n_b <= seq_lens[b]), and its token t sees keys j <= seq_lens[b] - n_b + t (n_b = 0: the
    sequence contributes nothing). max_seqlen_q (>= every n_b) is required when cu_seqlens_q
    lives on the GPU. out [total_q, Hq, Dv]; lse [Hq, total_q], the layout of attention's varlen
    lse. The CPU backend runs mixed batches; on the GPU the call is validated (with check) and
    then raises NotImplementedError: the GPU kernel takes one query count per batch in this
    version. plan= cannot be combined with cu_seqlens_q (a plan fixes one q_len for every
    sequence): ValueError.
    _variant is internal (tests, benchmarks): a comma list that forces GPU kernel variants, e.g.
    "tma=0,wide=0,page_order=0,persistent=0,persistent_ctas=5,pdl=0,ctas_per_sm=2".
    """
    a = _cuattn.PagedArgs()
    a.kv_layout = _checks.choice(kv_layout, "kv_layout", _KV_LAYOUTS)
    a.window_left, a.window_right = _checks.window(window, "window", True)
    a.scale = _scale(scale)
    a.softcap = _checks.number(softcap, "softcap", 0)
    a.check = _checks.boolean(check, "check")
    a.plan = _plan(plan)
    a.max_seqlen_q = _checks.optional_integer(max_seqlen_q, "max_seqlen_q", 0)
    return_lse = _checks.boolean(return_lse, "return_lse")
    kv_real = _kv_real(kv_cache_dtype)
    ctx = _Call(q, stream)
    a.q = ctx.inp(q, "q")
    a.cu_seqlens_q = ctx.opt(cu_seqlens_q, "cu_seqlens_q")
    a.k_cache = ctx.inp(k_cache, "k_cache", kv_real)
    a.v_cache = ctx.inp(v_cache, "v_cache", kv_real)
    a.block_table, a.seq_lens = ctx.inp(block_table, "block_table"), ctx.inp(seq_lens, "seq_lens")
    a.sinks = ctx.opt(sinks, "sinks")
    _dequant_scale(a, ctx, k_scale, "k_scale")
    _dequant_scale(a, ctx, v_scale, "v_scale")
    qs = _shape(q)
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(qs[:-1] + _shape_or_empty(v_cache)[-1:])
    a.out = ctx.out(out, "out")
    want_lse = return_lse or lse_out is not None
    if want_lse and lse_out is None:
        _needs_outputs(ctx, lse_out, "lse_out")
        lse_out = ctx.empty(_paged_lse_shape(qs, cu_seqlens_q is not None), "float32")
    if want_lse:
        a.lse = ctx.out(lse_out, "lse_out")
    a.variant = str(_variant)
    _cuattn.paged_attention(a, ctx.stream)
    out = ctx.result(out)
    if return_lse:
        return out, ctx.result(lse_out)
    return out


def append_paged_kv(k_new, v_new, k_cache, v_cache, slot_mapping, *, k_scale=None, v_scale=None,
                    kv_layout="NHD", kv_cache_dtype=None, check=False, stream=None):
    """Writes T new tokens into a paged cache in place: token i goes to flat slot
    slot_mapping[i] (int64; block * block_size + offset; negative = skip). k_new/v_new
    [T, Hkv, D]. fp8 caches store x / scale (saturated to +-448)."""
    a = _cuattn.AppendArgs()
    a.kv_layout = _checks.choice(kv_layout, "kv_layout", _KV_LAYOUTS)
    a.check = _checks.boolean(check, "check")
    kv_real = _kv_real(kv_cache_dtype)
    ctx = _Call(k_new, stream, "k_new")
    a.k_new, a.v_new = ctx.inp(k_new, "k_new"), ctx.inp(v_new, "v_new")
    a.k_cache = ctx.out(k_cache, "k_cache", kv_real)
    a.v_cache = ctx.out(v_cache, "v_cache", kv_real)
    a.slot_mapping = ctx.inp(slot_mapping, "slot_mapping")
    _dequant_scale(a, ctx, k_scale, "k_scale")
    _dequant_scale(a, ctx, v_scale, "v_scale")
    _cuattn.append_paged_kv(a, ctx.stream)


class DecodePlan:
    """A decode schedule: how each sequence's KV range is split across thread blocks, plus the
    device workspace for the partial results. Made once on the host by plan_decode (reads the
    lengths once), reused by paged_attention / mla_decode calls of the same shapes with no host
    work, allocation or sync — so such calls can be captured in a CUDA graph."""

    __slots__ = ("_plan",)

    def __init__(self, plan):
        self._plan = plan

    def __getattr__(self, name):
        return getattr(self._plan, name)

    def __repr__(self):
        return repr(self._plan)

    def update(self, seq_lens):
        """New lengths for the same batch (a host list/array; a GPU array is copied: one sync).
        The splits are chosen again for them in the workspace the plan already has (no
        allocation; where they would need more splits than it holds, the splits grow longer).
        Later calls use the new schedule; a CUDA graph captured before keeps the one it captured."""
        lens, _ = _host_lengths(seq_lens)
        self._plan.update(lens)
        return self


def _host_lengths(seq_lens):
    """seq_lens (a host list/array, or a GPU array: copied, one sync) as a list of ints >= 0
    that fit int32, and the device it came from ('cuda:N', or None for host data)."""
    if seq_lens is None or isinstance(seq_lens, (str, bytes)) or not any(
            hasattr(seq_lens, a) for a in ("__len__", "__array__", "__dlpack__")):
        raise TypeError(f"seq_lens must be a list or array of ints, got {type(seq_lens).__name__}")
    dev = None
    if hasattr(seq_lens, "__dlpack_device__") and int(seq_lens.__dlpack_device__()[0]) in (2, 13):
        dev = f"cuda:{int(seq_lens.__dlpack_device__()[1])}"
        seq_lens = asarray(seq_lens, device="cpu").numpy()
    host = np.asarray(seq_lens).reshape(-1)
    if host.size == 0:
        raise ValueError("seq_lens must hold at least one sequence length, got an empty sequence")
    if host.dtype.kind not in "iuO":
        raise TypeError(f"seq_lens must be integers, got dtype {host.dtype}")
    if host.dtype.kind != "O" and 0 <= host.min() and host.max() < 2**31:
        return host.tolist(), dev
    return [_checks.integer(x, f"seq_lens[{i}]", 0, bits=INT32) for i, x in enumerate(host)], dev


def plan_decode(seq_lens, *, num_q_heads, num_kv_heads, head_dim, page_size, q_len=1,
                head_dim_v=None, device=None, num_sms=0) -> DecodePlan:
    """Plans decode for sequences of the given lengths (host list/array; a GPU array is copied to
    the host: one sync). device: 'cpu' / 'cuda[:N]' (default: seq_lens' device, else cuda when
    available). The plan is valid for any call with the same batch, head counts, head dim,
    page size and q_len whose lengths do not exceed the planned ones by more than a split."""
    lens, dev = _host_lengths(seq_lens)
    o = _cuattn.PlanOptions()
    o.num_heads_q = _checks.integer(num_q_heads, "num_q_heads", 1, bits=INT32)
    o.num_heads_kv = _checks.integer(num_kv_heads, "num_kv_heads", 1, bits=INT32)
    o.head_dim = _checks.integer(head_dim, "head_dim", 1, bits=INT32)
    o.head_dim_v = _checks.optional_integer(head_dim_v, "head_dim_v", 1, bits=INT32)
    o.page_size = _checks.integer(page_size, "page_size", 1, bits=INT32)
    o.seqlen_q = _checks.integer(q_len, "q_len", 1, bits=INT32)
    o.num_sms = _checks.integer(num_sms, "num_sms", 0, bits=INT32)
    if device is None:
        device = dev or ("cuda" if _cuattn.cuda_available() else "cpu")
    o.cuda, o.device_id = _checks.device(device)
    return DecodePlan(_cuattn.plan_decode(lens, o))


# ---- MLA ---------------------------------------------------------------------------------------


_MLA_METHODS = {"auto": 0, "materialise": 1, "absorb": 2, "per_pair": 3}


def mla_attention(q, k_latent, v_latent, k_proj, v_proj, *, causal=True, scale=None, out=None,
                  stream=None, _method="auto"):
    """Multi-head latent attention, computed exactly:
    out[b, h] = softmax(q[b, h] (Kl[b] Kp[h])^T * scale) (Vl[b] Vp[h]).
    q [B, H, Sq, D]; k_latent, v_latent [B, Sk, L]; k_proj [H, L, D]; v_proj [H, L, Dv];
    returns out [B, H, Sq, Dv]. causal: query i sees keys j <= i + Sk - Sq. Never re-projects
    per (query, key) pair: per-head K/V are materialised once (prefill) or the projections are
    absorbed into q and the output (short q), whichever costs fewer FLOPs. scale defaults to
    1/sqrt(D). On the GPU the projections are tensor-core GEMMs into stream-ordered temporaries
    (head_dim, latent_dim and head_dim_v multiples of 8). _method (benchmarks, tests): "auto",
    "materialise", "absorb" or "per_pair" (the textbook re-projecting baseline, GPU only)."""
    if _method not in _MLA_METHODS:
        raise ValueError(f"_method must be one of {sorted(_MLA_METHODS)}, got {_method!r}")
    a = _cuattn.MlaArgs()
    a.causal = _checks.boolean(causal, "causal")
    a.scale = _scale(scale)
    a.method = _MLA_METHODS[_method]
    ctx = _Call(q, stream)
    a.q = ctx.inp(q, "q")
    a.k_latent, a.v_latent = ctx.inp(k_latent, "k_latent"), ctx.inp(v_latent, "v_latent")
    a.k_proj, a.v_proj = ctx.inp(k_proj, "k_proj"), ctx.inp(v_proj, "v_proj")
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(_shape(q)[:-1] + _shape_or_empty(v_proj)[-1:])
    a.out = ctx.out(out, "out")
    _cuattn.mla_attention(a, ctx.stream)
    return ctx.result(out)


def mla_decode(q, kv_cache, block_table, seq_lens, *, scale, head_dim_v=512, causal=True,
               kv_scale=None, kv_cache_dtype=None, plan=None, out=None, lse_out=None, stream=None,
               check=False, _variant=""):
    """DeepSeek-V3 MLA decode over a paged latent cache. q [B, Sq, Hq, 576]; kv_cache
    [num_blocks, block_size, 576] or [num_blocks, block_size, 1, 576] (512 latent + 64 rope; V is
    the first head_dim_v columns) in q's dtype or fp8 e4m3 (float8_e4m3fn, or uint8 with
    kv_cache_dtype="fp8_e4m3") dequantised with kv_scale (a float or a device scalar);
    block_table int32 [B, max_blocks]; seq_lens int32 [B]. Token t of Sq sees keys
    j <= seq_len - Sq + t when causal. scale is required (DeepSeek-V3: mscale^2 / sqrt(192)).
    Returns (out [B, Sq, Hq, 512], lse [B, Hq, Sq]).

    _variant is internal (tests, benchmarks): "hopper=1" forces the sm_90a work-list kernel (TMA,
    wgmma, 64-row units; a ValueError unless the device is sm_90 and the cache 16-bit with pages
    of 8, 16, 32 or a multiple of 64), "list=1" the portable work-list kernel, "list=0" the
    per-sequence split kernel. By default: the sm_90a kernel where it can run the call, else the
    portable list, but the split kernel for Hq x Sq > 64 when its CTAs fill the GPU."""
    if scale is None:
        raise ValueError("mla_decode needs scale= (DeepSeek-V3 uses mscale^2/sqrt(192))")
    a = _cuattn.MlaDecodeArgs()
    a.scale = _checks.number(scale, "scale", 0, above=True)
    a.head_dim_v = _checks.integer(head_dim_v, "head_dim_v", 1, bits=INT32)
    a.causal = _checks.boolean(causal, "causal")
    a.check = _checks.boolean(check, "check")
    a.plan = _plan(plan)
    a.variant = str(_variant)
    ctx = _Call(q, stream)
    a.q, a.kv_cache = ctx.inp(q, "q"), ctx.inp(kv_cache, "kv_cache", _kv_real(kv_cache_dtype))
    a.block_table, a.seq_lens = ctx.inp(block_table, "block_table"), ctx.inp(seq_lens, "seq_lens")
    qs = _shape(q)
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(qs[:-1] + (a.head_dim_v,))
    if lse_out is None:
        _needs_outputs(ctx, lse_out, "lse_out")
        lse_out = ctx.empty((qs[0], qs[2], qs[1]) if len(qs) == 4 else (0,), "float32")
    _dequant_scale(a, ctx, kv_scale, "kv_scale")
    a.out, a.lse = ctx.out(out, "out"), ctx.out(lse_out, "lse_out")
    _cuattn.mla_decode(a, ctx.stream)
    return ctx.result(out), ctx.result(lse_out)
