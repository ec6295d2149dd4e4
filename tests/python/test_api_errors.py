"""Every bad argument of every public function is a TypeError (wrong type) or a ValueError (wrong
value) that names the argument, raised before anything runs: never another exception, never a
binding's signature dump."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import cuattn
from conftest import randn

SIGNATURE_DUMP = "incompatible function arguments"


def _check(exc, words, call):
    with pytest.raises(exc) as ei:
        call()
    msg = str(ei.value)
    assert SIGNATURE_DUMP not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# ---- good calls of every public function, each taking keyword overrides -------------------------


def _attn(rng, **kw):
    q, k, v = randn(rng, (1, 5, 2, 16)), randn(rng, (1, 6, 1, 16)), randn(rng, (1, 6, 1, 16))
    return cuattn.attention(q, k, v, **kw)


def _naive(rng, **kw):
    q = randn(rng, (1, 5, 2, 16))
    return cuattn.naive_attention(q, q, q, **kw)


def _merge(rng, **kw):
    o, lse = randn(rng, (1, 4, 2, 8)), randn(rng, (1, 2, 4))
    return cuattn.merge_states(o, lse, o, lse, **kw)


def _paged_inputs(rng):
    q = randn(rng, (2, 4, 16))
    kc, vc = randn(rng, (4, 8, 2, 16)), randn(rng, (4, 8, 2, 16))
    return q, kc, vc, np.asarray([[0, 1], [2, 3]], np.int32), np.asarray([9, 3], np.int32)


def _paged(rng, **kw):
    return cuattn.paged_attention(*_paged_inputs(rng), **kw)


def _append(rng, **kw):
    kc, vc = randn(rng, (4, 8, 2, 16)), randn(rng, (4, 8, 2, 16))
    kn, vn = randn(rng, (3, 2, 16)), randn(rng, (3, 2, 16))
    return cuattn.append_paged_kv(kn, vn, kc, vc, np.asarray([0, 5, 17], np.int64), **kw)


_PLAN = dict(num_q_heads=4, num_kv_heads=2, head_dim=16, page_size=8)


def _plan(rng, **kw):
    return cuattn.plan_decode([9, 3], **{**_PLAN, "device": "cpu", **kw})


def _mla(rng, **kw):
    q = randn(rng, (1, 2, 5, 16))
    kl, vl = randn(rng, (1, 5, 8)), randn(rng, (1, 5, 8))
    return cuattn.mla_attention(q, kl, vl, randn(rng, (2, 8, 16)), randn(rng, (2, 8, 16)), **kw)


def _mla_decode(rng, **kw):
    q, cache = randn(rng, (1, 1, 2, 576)), randn(rng, (2, 16, 576))
    kw.setdefault("scale", 0.1)
    return cuattn.mla_decode(q, cache, np.asarray([[0, 1]], np.int32), np.asarray([20], np.int32),
                             **kw)


def _block_mask(rng, **kw):
    args = dict(B=None, H=None, Q_LEN=20, KV_LEN=20, block_size=8)
    args.update(kw)
    mask_mod = args.pop("mask_mod", lambda b, h, q, kv: q >= kv)
    return cuattn.create_block_mask(mask_mod, args.pop("B"), args.pop("H"), args.pop("Q_LEN"),
                                    args.pop("KV_LEN"), **args)


def _empty(rng, **kw):
    args = dict(shape=(2, 3), dtype="float32", device="cpu")
    args.update(kw)
    return cuattn.empty(args.pop("shape"), args.pop("dtype"), **args)


def _asarray(rng, **kw):
    return cuattn.asarray(np.zeros((2, 3), np.float32), **{"device": "cpu", **kw})


CALLS = {"attention": _attn, "naive_attention": _naive, "merge_states": _merge,
         "paged_attention": _paged, "append_paged_kv": _append, "plan_decode": _plan,
         "mla_attention": _mla, "mla_decode": _mla_decode, "create_block_mask": _block_mask,
         "empty": _empty, "asarray": _asarray}


@pytest.mark.parametrize("fn", sorted(CALLS))
def test_good_calls_run(rng, fn):
    """The baseline of the sweep below: each call is valid as written."""
    CALLS[fn](rng)


# ---- the sweep: every scalar argument, wrong types and out-of-range values ---------------------

BIG = 10**20
BAD_BOOL = [("yes", TypeError), (1, TypeError), (None, TypeError), (np.float32(1), TypeError)]
BAD_INT = [("3", TypeError), (1.5, TypeError), (True, TypeError), (BIG, ValueError),
           (-BIG, ValueError)]
BAD_NUM = [("x", TypeError), (True, TypeError), (math.nan, ValueError), (math.inf, ValueError),
           (-0.5, ValueError), ([1.0], TypeError)]
BAD_STR = [(3, TypeError), (None, TypeError), ("nope", ValueError)]
BAD_STREAM = [("s", TypeError), (1.5, TypeError), (-1, ValueError), (2**64, ValueError)]
BAD_DEVICE = [("cuda:abc", ValueError), ("gpu", ValueError), (1.5, TypeError), ("cuda:-1", ValueError)]
BAD_WINDOW = [("10", TypeError), (BIG, ValueError), (-4, ValueError), ((1, 2, 3), ValueError),
              ((1.5, 0), TypeError), ((-2, 0), ValueError), ((0, BIG), ValueError), (2.0, TypeError)]
BAD_PLAN = [("plan", TypeError), (object(), TypeError)]

SWEEP = {
    "attention": dict(causal=BAD_BOOL, return_lse=BAD_BOOL, check=BAD_BOOL, window=BAD_WINDOW,
                      scale=BAD_NUM, softcap=BAD_NUM, layout=BAD_STR, stream=BAD_STREAM,
                      max_seqlen_q=BAD_INT + [(-3, ValueError)], max_seqlen_k=BAD_INT,
                      block_mask=[("mask", TypeError), (np.zeros(3), TypeError)]),
    "naive_attention": dict(causal=BAD_BOOL, scale=BAD_NUM, layout=BAD_STR, stream=BAD_STREAM),
    "merge_states": dict(layout=BAD_STR, stream=BAD_STREAM),
    "paged_attention": dict(scale=BAD_NUM, softcap=BAD_NUM, window=BAD_WINDOW, check=BAD_BOOL,
                            return_lse=BAD_BOOL, kv_layout=BAD_STR, stream=BAD_STREAM,
                            k_scale=BAD_NUM + [(0, ValueError)], v_scale=BAD_NUM,
                            kv_cache_dtype=[(3, TypeError), ("fp8_e5m2", ValueError)],
                            plan=BAD_PLAN),
    "append_paged_kv": dict(k_scale=BAD_NUM, v_scale=BAD_NUM, kv_layout=BAD_STR, check=BAD_BOOL,
                            stream=BAD_STREAM, kv_cache_dtype=[(3, TypeError), ("x", ValueError)]),
    "plan_decode": dict(num_q_heads=BAD_INT + [(0, ValueError)], num_kv_heads=BAD_INT,
                        head_dim=BAD_INT + [(-4, ValueError)], page_size=BAD_INT, q_len=BAD_INT,
                        head_dim_v=BAD_INT, num_sms=BAD_INT + [(-1, ValueError)],
                        device=BAD_DEVICE),
    "mla_attention": dict(causal=BAD_BOOL, scale=BAD_NUM, stream=BAD_STREAM),
    "mla_decode": dict(scale=BAD_NUM + [(0.0, ValueError), (None, ValueError)], check=BAD_BOOL,
                       head_dim_v=BAD_INT + [(-4, ValueError), (0, ValueError)],
                       causal=BAD_BOOL, plan=BAD_PLAN, stream=BAD_STREAM),
    "create_block_mask": dict(B=BAD_INT + [(0, ValueError)], H=BAD_INT, Q_LEN=BAD_INT,
                              KV_LEN=BAD_INT + [(-1, ValueError)], device=BAD_DEVICE,
                              block_size=[("big", TypeError), ((4,), ValueError),
                                          ((8, 8, 8), ValueError), ((8, 0), ValueError),
                                          ((8, "x"), TypeError), (BIG, ValueError),
                                          (True, TypeError)]),
    "empty": dict(device=BAD_DEVICE, stream=BAD_STREAM, dtype=[("floaty", ValueError),
                                                               (3.5, TypeError)],
                  shape=[((2, -1), ValueError), ("23", TypeError), ((2, 1.5), TypeError)]),
    "asarray": dict(device=BAD_DEVICE, stream=BAD_STREAM, dtype=[("floaty", ValueError)]),
}
CASES = [pytest.param(fn, arg, bad, exc, id=f"{fn}-{arg}-{bad!r}"[:80])
         for fn, args in SWEEP.items() for arg, bads in args.items() for bad, exc in bads]


@pytest.mark.parametrize("fn,arg,bad,exc", CASES)
def test_bad_scalar_arguments(rng, fn, arg, bad, exc):
    msg = _check(exc, [], lambda: CALLS[fn](rng, **{arg: bad}))
    assert arg in msg or (arg == "Q_LEN" and "Q_LEN" in msg), msg
    if exc is ValueError and isinstance(bad, (int, str)) and not isinstance(bad, bool):
        assert str(bad) in msg, msg


# ---- arrays ---------------------------------------------------------------------------------------


def test_object_array_is_value_error(rng):
    q = np.empty((1, 5, 2, 16), dtype=object)
    _check(ValueError, ["q", "object"], lambda: cuattn.attention(q, q, q))
    k = np.empty((1, 6, 1, 16), dtype=object)
    _check(ValueError, ["k", "object"],
           lambda: cuattn.attention(randn(rng, (1, 5, 2, 16)), k, randn(rng, (1, 6, 1, 16))))


def test_complex_array_is_value_error(rng):
    q = np.zeros((1, 5, 2, 16), np.complex64)
    _check(ValueError, ["q", "complex"], lambda: cuattn.attention(q, q, q))


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_none_array_is_type_error(rng, which):
    args = dict(q=randn(rng, (1, 5, 2, 16)), k=randn(rng, (1, 5, 2, 16)),
                v=randn(rng, (1, 5, 2, 16)))
    args[which] = None
    _check(TypeError, [which, "None"], lambda: cuattn.attention(**args))


@pytest.mark.parametrize("which", [1, 2, 3, 4])
def test_none_array_is_type_error_paged(rng, which):
    args = list(_paged_inputs(rng))
    name = ["q", "k_cache", "v_cache", "block_table", "seq_lens"][which]
    args[which] = None
    _check(TypeError, [name, "None"], lambda: cuattn.paged_attention(*args))


@pytest.mark.parametrize("which", ["o_a", "lse_a", "o_b", "lse_b"])
def test_none_array_is_type_error_merge(rng, which):
    args = dict(o_a=randn(rng, (1, 4, 2, 8)), lse_a=randn(rng, (1, 2, 4)),
                o_b=randn(rng, (1, 4, 2, 8)), lse_b=randn(rng, (1, 2, 4)))
    args[which] = None
    _check(TypeError, [which, "None"], lambda: cuattn.merge_states(**args))


def test_non_array_sinks_and_out(rng):
    _check(TypeError, ["sinks", "list"], lambda: _attn(rng, sinks=[0.0, 0.0]))
    _check(TypeError, ["out", "int"], lambda: _attn(rng, out=3))
    _check(TypeError, ["cu_seqlens_q", "str"], lambda: _attn(rng, cu_seqlens_q="0,5"))


def _read_only(shape, dtype=np.float32):
    x = np.zeros(shape, dtype)
    x.flags.writeable = False
    return x


def test_read_only_outputs_are_value_errors(rng):
    _check(ValueError, ["out", "read-only"], lambda: _attn(rng, out=_read_only((1, 5, 2, 16))))
    _check(ValueError, ["lse_out", "read-only"],
           lambda: _attn(rng, return_lse=True, lse_out=_read_only((1, 2, 5))))
    _check(ValueError, ["out", "read-only"], lambda: _merge(rng, out=_read_only((1, 4, 2, 8))))


def test_read_only_cache_is_value_error(rng):
    kc, vc = _read_only((4, 8, 2, 16)), np.zeros((4, 8, 2, 16), np.float32)
    kn = randn(rng, (3, 2, 16))
    slots = np.asarray([0, 1, 2], np.int64)
    _check(ValueError, ["k_cache", "read-only"],
           lambda: cuattn.append_paged_kv(kn, kn, kc, vc, slots))
    assert not kc.any()


def test_read_only_inputs_are_fine(rng):
    q = randn(rng, (1, 5, 2, 16))
    q.flags.writeable = False
    out = cuattn.attention(q, q, q)
    assert np.isfinite(out).all()


# ---- plan_decode's lengths -----------------------------------------------------------------------


@pytest.mark.parametrize("lens,exc,words", [
    ([], ValueError, ["seq_lens", "empty"]),
    (np.zeros(0, np.int32), ValueError, ["seq_lens", "empty"]),
    ([2**40], ValueError, ["seq_lens[0]", str(2**40)]),
    ([3, 2**70], ValueError, ["seq_lens[1]", str(2**70)]),
    ([3, -1], ValueError, ["seq_lens[1]", "-1"]),
    (np.asarray([5, -7], np.int64), ValueError, ["seq_lens[1]", "-7"]),
    ([1.5, 2], TypeError, ["seq_lens", "float"]),
    ([3, None], TypeError, ["seq_lens[1]", "None"]),
    (None, TypeError, ["seq_lens", "None"]),
    ("12", TypeError, ["seq_lens", "str"]),
    (7, TypeError, ["seq_lens", "int"]),
])
def test_plan_decode_lengths(lens, exc, words):
    _check(exc, words, lambda: cuattn.plan_decode(lens, **_PLAN, device="cpu"))


def test_plan_decode_good_lengths():
    p = cuattn.plan_decode(np.asarray([9, 0, 2**31 - 1]), **_PLAN, device="cpu")
    assert list(p.seq_lens) == [9, 0, 2**31 - 1]


# ---- block masks ----------------------------------------------------------------------------------


def test_mask_mod_returning_none_is_type_error(rng):
    _check(TypeError, ["mask_mod", "None"],
           lambda: _block_mask(rng, mask_mod=lambda b, h, q, kv: None))


def test_mask_mod_wrong_shape_is_value_error(rng):
    _check(ValueError, ["mask_mod", "(3,)"],
           lambda: _block_mask(rng, mask_mod=lambda b, h, q, kv: np.ones(3, bool)))


def test_mask_mod_float_result_is_type_error(rng):
    _check(TypeError, ["mask_mod", "float"],
           lambda: _block_mask(rng, mask_mod=lambda b, h, q, kv: (q - kv) * 0.5))


def test_mask_mod_not_callable(rng):
    _check(TypeError, ["mask_mod", "int"], lambda: _block_mask(rng, mask_mod=3))


def test_mask_mod_scalar_result_broadcasts(rng):
    m = _block_mask(rng, mask_mod=lambda b, h, q, kv: True)
    assert m.to_dense().all()


# ---- fuzz: any junk in any keyword argument --------------------------------------------------------

JUNK = [None, 0, -1, 7, 2**31, 2**63, -BIG, 1.5, math.nan, -math.inf, True, "x", "cuda:x", (),
        (1,), (1, 2, 3), (None, 5), [2.5], {}, object(), b"x", np.int64(3), np.float32(-2),
        np.bool_(True), np.zeros(3, object), np.zeros(4, np.complex64), np.ones((2, 3), ">f4"),
        np.ones((1,) * 9, np.float32), np.zeros(0, np.int32), lambda *a: None]
KEYWORDS = {fn: list(args) + (["sinks", "out", "lse_out", "cu_seqlens_q"] if fn == "attention"
                              else [])
            for fn, args in SWEEP.items()}


@pytest.mark.parametrize("seed", range(6))
def test_fuzz_keyword_arguments(seed):
    """Junk in one to three keyword arguments at once: only TypeError / ValueError (or
    NotImplementedError, CudaError for a GPU the build or machine lacks) come out, never a
    binding's signature dump. Deterministic: 100 calls a seed."""
    pick = random.Random(seed)
    for _ in range(100):
        fn = pick.choice(sorted(KEYWORDS))
        kw = {n: pick.choice(JUNK) for n in pick.sample(KEYWORDS[fn], min(3, pick.randint(1, 3),
                                                                         len(KEYWORDS[fn])))}
        try:
            CALLS[fn](np.random.default_rng(seed), **kw)
        except (TypeError, ValueError) as e:
            assert SIGNATURE_DUMP not in str(e), (fn, kw, str(e))
        except (NotImplementedError, cuattn.CudaError):
            pass
