"""The public attention functions: normalise arguments, allocate outputs, call the C++ core."""

from __future__ import annotations

import numpy as np

from . import _cuattn
from ._arrays import _Call, _RAW_VIEW, framework

_LAYOUTS = ("bshd", "bhsd")
_NO_BLOCK_MASK = (None,) * 6 + (0, 0, 0, 0)


def _window(window, causal):
    """window=None -> unbounded; W -> (W, W), or (W, 0) with causal; (left, right) as given."""
    if window is None:
        return -1, -1
    if isinstance(window, (bool, np.bool_)):
        raise TypeError(f"window must be an int or a (left, right) pair, got {window!r}")
    if isinstance(window, (int, np.integer)):
        w = int(window)
        if w < 0:
            raise ValueError(f"window must be >= 0, got {w}")
        return (w, 0) if causal else (w, w)
    try:
        left, right = window
    except (TypeError, ValueError):
        raise TypeError(f"window must be an int or a (left, right) pair, got {window!r}") from None
    return (-1 if left is None else int(left)), (-1 if right is None else int(right))


def _scale(scale):
    if scale is None:
        return -1.0
    s = float(scale)
    if not s >= 0:
        raise ValueError(f"scale must be >= 0, got {scale}")
    return s


def _needs_outputs(ctx, out, what):
    if out is None and ctx.capturing():
        raise ValueError(f"under CUDA-graph capture {what} must be passed (no allocation while capturing)")


def _shape(x):
    s = x.shape
    # NumPy/CuPy/JAX shapes are tuples of ints, torch.Size a tuple subclass: used as they are.
    return s if isinstance(s, tuple) else tuple(int(i) for i in s)


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
    _variant is internal (tests, benchmarks): "portable=1" forces the portable GPU kernel.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'bshd' or 'bhsd', got {layout!r}")
    ctx = _Call(q, stream)
    wl, wr = (-1, -1) if window is None else _window(window, causal)
    if out is None:
        _needs_outputs(ctx, out, "out")
        qs, vs = _shape(q), _shape(v) if hasattr(v, "shape") else ()
        out = ctx.empty(qs[:-1] + vs[-1:] if qs and vs else qs)
    want_lse = return_lse or lse_out is not None
    if want_lse and lse_out is None:
        qs = _shape(q)
        varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
        _needs_outputs(ctx, lse_out, "lse_out")
        if varlen and len(qs) == 3:
            lse_shape = (qs[1], qs[0])
        elif len(qs) == 4:
            lse_shape = (qs[0], qs[2], qs[1]) if layout == "bshd" else qs[:3]
        else:
            lse_shape = (0,)
        lse_out = ctx.empty(lse_shape, "float32")
    bm = block_mask._args(ctx) if block_mask is not None else _NO_BLOCK_MASK
    _cuattn.attention(
        ctx.inp(q, "q"), ctx.inp(k, "k"), ctx.inp(v, "v"), ctx.out(out, "out"),
        ctx.out(lse_out, "lse_out") if want_lse else None,
        ctx.inp(cu_seqlens_q, "cu_seqlens_q"), ctx.inp(cu_seqlens_k, "cu_seqlens_k"),
        ctx.inp(sinks, "sinks"), *bm,
        -1 if max_seqlen_q is None else int(max_seqlen_q),
        -1 if max_seqlen_k is None else int(max_seqlen_k),
        bool(causal), wl, wr, -1.0 if scale is None else _scale(scale), float(softcap), layout,
        bool(check), ctx.real, ctx.stream, str(_variant))
    if ctx.fw == "jax":
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
    """Attention that materialises the full [Sq, Sk] score matrix (O(S^2) memory): the chapter's
    baseline for comparisons. Same conventions as attention (dense only)."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'bshd' or 'bhsd', got {layout!r}")
    ctx = _Call(q, stream)
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(_shape(q)[:-1] + _shape(v)[-1:])
    _cuattn.naive_attention(ctx.inp(q, "q"), ctx.inp(k, "k"), ctx.inp(v, "v"), ctx.out(out, "out"),
                            bool(causal), _scale(scale), layout, ctx.real, ctx.stream)
    return ctx.result(out)


def merge_states(o_a, lse_a, o_b, lse_b, *, layout="bshd", out=None, lse_out=None, stream=None):
    """Merges two attention results over disjoint key sets (as attention returns them with
    return_lse): out = (e^lse_a o_a + e^lse_b o_b) / (e^lse_a + e^lse_b), lse = log of the sum.
    Where both lse are -inf: out 0, lse -inf. Returns (out, lse)."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be 'bshd' or 'bhsd', got {layout!r}")
    ctx = _Call(o_a, stream, "o_a")
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(_shape(o_a))
    if lse_out is None:
        _needs_outputs(ctx, lse_out, "lse_out")
        lse_out = ctx.empty(_shape(lse_a), "float32")
    _cuattn.merge_states(ctx.inp(o_a, "o_a"), ctx.inp(lse_a, "lse_a"), ctx.inp(o_b, "o_b"),
                         ctx.inp(lse_b, "lse_b"), ctx.out(out, "out"), ctx.out(lse_out, "lse_out"),
                         layout, ctx.real, ctx.stream)
    return ctx.result(out), ctx.result(lse_out)


# ---- paged KV cache ---------------------------------------------------------------------------


def _kv_real(cache, kv_cache_dtype):
    if kv_cache_dtype is not None:
        if kv_cache_dtype not in ("fp8_e4m3", "float8_e4m3fn"):
            raise ValueError(f"kv_cache_dtype must be None or 'fp8_e4m3', got {kv_cache_dtype!r}")
        return "float8_e4m3fn"
    if framework(cache) == "numpy" and cache.dtype in _RAW_VIEW:
        return _RAW_VIEW[cache.dtype][1]
    return ""


def _scale_arg(ctx, s, name):
    """A dequantisation scale: float (returned as such) or a device scalar array."""
    if s is None:
        return None, 1.0
    if hasattr(s, "__dlpack__"):
        return ctx.inp(s, name), 1.0
    v = float(s)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {s}")
    return None, v


def paged_attention(q, k_cache, v_cache, block_table, seq_lens, *, scale=None, softcap=0.0,
                    window=None, sinks=None, k_scale=None, v_scale=None, kv_layout="NHD",
                    kv_cache_dtype=None, plan=None, check=False, return_lse=False, out=None,
                    lse_out=None, stream=None, _variant=""):
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
    _variant is internal (tests, benchmarks): a comma list that forces GPU kernel variants, e.g.
    "tma=0,wide=0,page_order=0,persistent=0,persistent_ctas=5,pdl=0,ctas_per_sm=2".
    """
    ctx = _Call(q, stream)
    qs = _shape(q)
    dv = _shape(v_cache)[-1] if hasattr(v_cache, "shape") else 0
    if window is not None and isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        wl, wr = int(window), 0
        if wl < 0:
            raise ValueError(f"window must be >= 0, got {wl}")
    else:
        wl, wr = _window(window, True)
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(qs[:-1] + (dv,))
    want_lse = return_lse or lse_out is not None
    if want_lse and lse_out is None:
        _needs_outputs(ctx, lse_out, "lse_out")
        lse_out = ctx.empty((qs[0], qs[2], qs[1]) if len(qs) == 4 else qs[:2], "float32")
    kst, ks = _scale_arg(ctx, k_scale, "k_scale")
    vst, vs = _scale_arg(ctx, v_scale, "v_scale")
    _cuattn.paged_attention(
        ctx.inp(q, "q"), ctx.inp(k_cache, "k_cache"), ctx.inp(v_cache, "v_cache"),
        ctx.inp(block_table, "block_table"), ctx.inp(seq_lens, "seq_lens"), ctx.out(out, "out"),
        ctx.out(lse_out, "lse_out") if want_lse else None, ctx.inp(sinks, "sinks"), kst, vst, ks, vs,
        _scale(scale), float(softcap), wl, wr, str(kv_layout), bool(check),
        plan._plan if plan is not None else None, ctx.real, _kv_real(k_cache, kv_cache_dtype),
        ctx.stream, str(_variant))
    out = ctx.result(out)
    if return_lse:
        return out, ctx.result(lse_out)
    return out


def append_paged_kv(k_new, v_new, k_cache, v_cache, slot_mapping, *, k_scale=None, v_scale=None,
                    kv_layout="NHD", kv_cache_dtype=None, check=False, stream=None):
    """Writes T new tokens into a paged cache in place: token i goes to flat slot
    slot_mapping[i] (int64; block * block_size + offset; negative = skip). k_new/v_new
    [T, Hkv, D]. fp8 caches store x / scale (saturated to +-448)."""
    ctx = _Call(k_new, stream, "k_new")
    kst, ks = _scale_arg(ctx, k_scale, "k_scale")
    vst, vs = _scale_arg(ctx, v_scale, "v_scale")
    _cuattn.append_paged_kv(
        ctx.inp(k_new, "k_new"), ctx.inp(v_new, "v_new"), ctx.out(k_cache, "k_cache"),
        ctx.out(v_cache, "v_cache"), ctx.inp(slot_mapping, "slot_mapping"), kst, vst, ks, vs,
        str(kv_layout), bool(check), ctx.real, _kv_real(k_cache, kv_cache_dtype), ctx.stream)


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


def plan_decode(seq_lens, *, num_q_heads, num_kv_heads, head_dim, page_size, q_len=1,
                head_dim_v=None, device=None, num_sms=0) -> DecodePlan:
    """Plans decode for sequences of the given lengths (host list/array; a GPU array is copied to
    the host: one sync). device: 'cpu' / 'cuda[:N]' (default: seq_lens' device, else cuda when
    available). The plan is valid for any call with the same batch, head counts, head dim,
    page size and q_len whose lengths do not exceed the planned ones by more than a split."""
    if hasattr(seq_lens, "__dlpack_device__") and int(seq_lens.__dlpack_device__()[0]) in (2, 13):
        from ._arrays import asarray
        dev_default = f"cuda:{int(seq_lens.__dlpack_device__()[1])}"
        host = asarray(seq_lens, device="cpu").numpy()
    else:
        host = np.asarray(seq_lens)
        dev_default = "cuda" if _cuattn.cuda_available() else "cpu"
    host = np.ascontiguousarray(host).reshape(-1)
    if host.dtype.kind not in "iu":
        raise ValueError(f"seq_lens must be integers, got dtype {host.dtype}")
    dev = str(device) if device is not None else dev_default
    if dev == "cpu":
        cuda, dev_id = False, 0
    elif dev == "cuda" or dev.startswith("cuda:"):
        cuda, dev_id = True, int(dev[5:]) if dev.startswith("cuda:") else 0
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    p = _cuattn.plan_decode([int(x) for x in host], int(num_q_heads), int(num_kv_heads),
                            int(head_dim), -1 if head_dim_v is None else int(head_dim_v),
                            int(page_size), int(q_len), cuda, dev_id, int(num_sms))
    return DecodePlan(p)


# ---- MLA ---------------------------------------------------------------------------------------


_MLA_METHODS = {"auto": 0, "materialise": 1, "absorb": 2, "per_pair": 3}


def mla_attention(q, k_latent, v_latent, k_proj, v_proj, *, causal=True, scale=None, out=None,
                  stream=None, _method="auto"):
    """The chapter's multi-head latent attention, computed exactly:
    out[b, h] = softmax(q[b, h] (Kl[b] Kp[h])^T * scale) (Vl[b] Vp[h]).
    q [B, H, Sq, D]; k_latent, v_latent [B, Sk, L]; k_proj [H, L, D]; v_proj [H, L, Dv];
    returns out [B, H, Sq, Dv]. causal: query i sees keys j <= i + Sk - Sq. Never re-projects
    per (query, key) pair: per-head K/V are materialised once (prefill) or the projections are
    absorbed into q and the output (short q), whichever costs fewer FLOPs. scale defaults to
    1/sqrt(D). On the GPU the projections are tensor-core GEMMs into stream-ordered temporaries
    (head_dim, latent_dim and head_dim_v multiples of 8). _method (benchmarks, tests): "auto",
    "materialise", "absorb" or "per_pair" (the chapter's re-projecting baseline, GPU only)."""
    if _method not in _MLA_METHODS:
        raise ValueError(f"_method must be one of {sorted(_MLA_METHODS)}, got {_method!r}")
    ctx = _Call(q, stream)
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(_shape(q)[:-1] + _shape(v_proj)[-1:])
    _cuattn.mla_attention(ctx.inp(q, "q"), ctx.inp(k_latent, "k_latent"),
                          ctx.inp(v_latent, "v_latent"), ctx.inp(k_proj, "k_proj"),
                          ctx.inp(v_proj, "v_proj"), ctx.out(out, "out"), bool(causal),
                          _scale(scale), _MLA_METHODS[_method], ctx.real, ctx.stream)
    return ctx.result(out)


def mla_decode(q, kv_cache, block_table, seq_lens, *, scale, head_dim_v=512, causal=True,
               kv_scale=None, kv_cache_dtype=None, plan=None, out=None, lse_out=None, stream=None,
               check=False):
    """DeepSeek-V3 MLA decode over a paged latent cache. q [B, Sq, Hq, 576]; kv_cache
    [num_blocks, block_size, 576] or [num_blocks, block_size, 1, 576] (512 latent + 64 rope; V is
    the first head_dim_v columns) in q's dtype or fp8 e4m3 (float8_e4m3fn, or uint8 with
    kv_cache_dtype="fp8_e4m3") dequantised with kv_scale (a float or a device scalar);
    block_table int32 [B, max_blocks]; seq_lens int32 [B]. Token t of Sq sees keys
    j <= seq_len - Sq + t when causal. scale is required (DeepSeek-V3: mscale^2 / sqrt(192)).
    Returns (out [B, Sq, Hq, 512], lse [B, Hq, Sq])."""
    if scale is None:
        raise ValueError("mla_decode needs scale= (DeepSeek-V3 uses mscale^2/sqrt(192))")
    ctx = _Call(q, stream)
    qs = _shape(q)
    if out is None:
        _needs_outputs(ctx, out, "out")
        out = ctx.empty(qs[:-1] + (int(head_dim_v),))
    if lse_out is None:
        _needs_outputs(ctx, lse_out, "lse_out")
        lse_out = ctx.empty((qs[0], qs[2], qs[1]) if len(qs) == 4 else (0,), "float32")
    kst, ks = _scale_arg(ctx, kv_scale, "kv_scale")
    _cuattn.mla_decode(ctx.inp(q, "q"), ctx.inp(kv_cache, "kv_cache"),
                       ctx.inp(block_table, "block_table"), ctx.inp(seq_lens, "seq_lens"),
                       ctx.out(out, "out"), ctx.out(lse_out, "lse_out"), kst, ks, float(scale),
                       int(head_dim_v), bool(causal), bool(check),
                       plan._plan if plan is not None else None, ctx.real,
                       _kv_real(kv_cache, kv_cache_dtype), ctx.stream)
    return ctx.result(out), ctx.result(lse_out)
