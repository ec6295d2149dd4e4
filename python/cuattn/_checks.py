"""Argument checks shared by the public functions: a wrong type is a TypeError, a value the C++
core cannot take (out of range, or too large for its int32/int64 field) a ValueError; both name
the argument and the bad value. Arrays are checked where they are exported (_arrays._Call)."""

from __future__ import annotations

import math
import operator

import numpy as np

INT32 = 31  # bits of magnitude of the C++ field: int32_t / int
INT64 = 63  # int64_t


def _bad_type(name, what, x):
    return TypeError(f"{name} must be {what}, got {type(x).__name__} {x!r}")


def integer(x, name, lo=None, hi=None, *, bits=INT64) -> int:
    """x as a Python int: an int or integer scalar (NumPy, 0-d arrays: anything with __index__;
    not a bool) in [lo, hi] that fits `bits`."""
    if type(x) is int:
        v = x
    else:
        if isinstance(x, (bool, np.bool_)):
            raise _bad_type(name, "an int", x)
        try:
            v = operator.index(x)
        except TypeError:
            raise _bad_type(name, "an int", x) from None
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    if not -(1 << bits) <= v < (1 << bits):
        raise ValueError(f"{name} = {v} does not fit a {bits + 1}-bit integer")
    return v


def optional_integer(x, name, lo=None, hi=None, *, bits=INT64, none=-1) -> int:
    """integer(), with None meaning `none` (the C++ default)."""
    return none if x is None else integer(x, name, lo, hi, bits=bits)


def number(x, name, lo=None, *, above=False) -> float:
    """x as a finite float: a real number (int, float, NumPy or 0-d array scalar; not a bool or a
    str) >= lo (> lo with above=True)."""
    if type(x) is float:
        v = x
    else:
        if isinstance(x, (bool, np.bool_, str, bytes, complex, np.complexfloating)):
            raise _bad_type(name, "a number", x)
        try:
            v = float(x)
        except (TypeError, ValueError, RuntimeError):
            raise _bad_type(name, "a number", x) from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {x!r}")
    if lo is not None and (v <= lo if above else v < lo):
        raise ValueError(f"{name} must be {'>' if above else '>='} {lo}, got {x!r}")
    return v


def boolean(x, name) -> bool:
    if x is True or x is False:
        return x
    if not isinstance(x, np.bool_):
        raise _bad_type(name, "a bool", x)
    return bool(x)


def choice(x, name, options) -> str:
    if not isinstance(x, str):
        raise _bad_type(name, "a str", x)
    if x not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {x!r}")
    return x


def device(x, name="device"):
    """'cpu', 'cuda', 'cuda:N' or an int N -> (is_cuda, N)."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_)):
        return True, integer(x, name, 0, bits=INT32)
    if type(x).__module__.startswith(("torch", "cupy", "jax")):  # e.g. torch.device("cuda", 1)
        x = str(x)
    if not isinstance(x, str):
        raise _bad_type(name, "'cpu', 'cuda' or 'cuda:N'", x)
    if x == "cpu":
        return False, 0
    if x == "cuda":
        return True, 0
    if x.startswith("cuda:") and x[5:].isdigit() and x[5:].isascii():
        return True, integer(int(x[5:]), name, bits=INT32)
    raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {x!r}")


def window(w, name, causal):
    """window=None -> (-1, -1) unbounded; W -> (W, W), or (W, 0) with causal; (left, right) with
    each an int >= -1 or None (unbounded)."""
    if w is None:
        return -1, -1
    if isinstance(w, (int, np.integer)) and not isinstance(w, (bool, np.bool_)):
        v = integer(w, name, 0)
        return (v, 0) if causal else (v, v)
    if isinstance(w, (str, bytes)) or not hasattr(w, "__len__") or len(w) != 2:
        if isinstance(w, (tuple, list)):
            raise ValueError(f"{name} must be an int or a (left, right) pair, got {w!r}")
        raise _bad_type(name, "an int or a (left, right) pair", w)
    left, right = w
    return (optional_integer(left, f"{name}[0]", -1), optional_integer(right, f"{name}[1]", -1))
