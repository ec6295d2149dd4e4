"""FlexAttention-style block masks without a JIT.

`create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN)` evaluates `mask_mod(b, h, q_idx, kv_idx)`
once with array broadcasting and sorts every (q block, kv block) tile into one of three kinds:

* empty   - no visible pair: the kernels never touch it;
* full    - every pair visible: the kernels run it without any per-element test;
* partial - some pairs visible: the kernels test a per-element bit mask, stored once per distinct
            pattern (all diagonal blocks of a causal mask share one pattern).

Per (b, h, q block): `kv_num_blocks` / `kv_indices` list the partial kv blocks (with
`partial_ids` pointing into `partial_bits`), `full_kv_num_blocks` / `full_kv_indices` the full
ones; unused trailing index entries are 0.
"""

from __future__ import annotations

import sys

import numpy as np

from . import _checks, _cuattn
from ._arrays import asarray
from ._checks import INT32

_MAX_CHUNK_ELEMS = 1 << 25  # bools evaluated at once (bounds the memory of create_block_mask)


def _namespace(device):
    """The array module to evaluate mask_mod with: NumPy on the CPU; on a GPU, torch or CuPy when
    the caller already imported one (we import neither)."""
    if device is None or str(device) == "cpu":
        return "numpy"
    if "torch" in sys.modules:
        return "torch"
    if "cupy" in sys.modules:
        return "cupy"
    return "numpy"


def _arange(ns, n, device):
    if ns == "torch":
        torch = sys.modules["torch"]
        return torch.arange(n, device=str(device))
    if ns == "cupy":
        cp = sys.modules["cupy"]
        dev = int(str(device).split(":")[1]) if ":" in str(device) else 0
        with cp.cuda.Device(dev):
            return cp.arange(n)
    return np.arange(n)


def _index_arrays(ns, mb, mh, kvlen, device):
    """The broadcastable batch, head and kv index arrays mask_mod is called with."""
    return (_arange(ns, mb, device)[:, None, None, None], _arange(ns, mh, device)[None, :, None, None],
            _arange(ns, kvlen, device)[None, None, None, :])


def _to_numpy(x, ns):
    if ns == "torch":
        return x.detach().cpu().numpy()
    if ns == "cupy":
        return x.get()
    return x


_ARRAY_NAMES = ("kv_num_blocks", "kv_indices", "partial_ids", "full_kv_num_blocks",
                "full_kv_indices", "partial_bits")


class BlockMask:
    """A block-sparse mask (see module docstring). Pass it as attention(..., block_mask=m)."""

    def __init__(self, kv_num_blocks, kv_indices, partial_ids, full_kv_num_blocks,
                 full_kv_indices, partial_bits, block_size, shape, device="cpu"):
        self.kv_num_blocks = kv_num_blocks
        self.kv_indices = kv_indices
        self.partial_ids = partial_ids
        self.full_kv_num_blocks = full_kv_num_blocks
        self.full_kv_indices = full_kv_indices
        self.partial_bits = partial_bits
        self.block_size = tuple(block_size)
        self.shape = tuple(shape)  # (B or 1, H or 1, Q_LEN, KV_LEN)
        self._device_copies = {}
        if str(device) != "cpu":
            self._on_device(device)

    @property
    def arrays(self):
        return (self.kv_num_blocks, self.kv_indices, self.partial_ids, self.full_kv_num_blocks,
                self.full_kv_indices, self.partial_bits)

    def _on_device(self, device):
        key = str(device) if str(device) != "cuda" else "cuda:0"
        if key not in self._device_copies:
            self._device_copies[key] = tuple(asarray(a, device=key) for a in self.arrays)
        return self._device_copies[key]

    def _bind(self, ctx):
        """The C++ BlockMaskArgs of an attention call (arrays on ctx's device)."""
        arrs = self._on_device(f"cuda:{ctx.device_id}") if ctx.cuda else self.arrays
        a = _cuattn.BlockMaskArgs()
        for name, x in zip(_ARRAY_NAMES, arrs):
            setattr(a, name, ctx.inp(x, "block_mask." + name))
        a.block_q, a.block_kv = self.block_size
        a.q_len, a.kv_len = self.shape[2], self.shape[3]
        return a

    def sparsity(self) -> float:
        """Fraction of tiles skipped entirely (empty)."""
        nqb, nkb = self.kv_indices.shape[2], self.kv_indices.shape[3]
        used = int(self.kv_num_blocks.sum()) + int(self.full_kv_num_blocks.sum())
        total = self.kv_num_blocks.size * nkb
        return 1.0 - used / max(total, 1)

    def to_dense(self) -> np.ndarray:
        """The element mask, bool [B or 1, H or 1, Q_LEN, KV_LEN], rebuilt from the blocks."""
        mb, mh, qlen, kvlen = self.shape
        bq, bkv = self.block_size
        nqb, nkb = self.kv_indices.shape[2], self.kv_indices.shape[3]
        wpr = self.partial_bits.shape[2] if self.partial_bits.ndim == 3 else (bkv + 31) // 32
        dense = np.zeros((mb, mh, nqb * bq, nkb * bkv), dtype=bool)
        bits = np.unpackbits(self.partial_bits.view(np.uint8).reshape(-1, bq, wpr * 4),
                             axis=-1, bitorder="little")[:, :, :bkv].astype(bool)
        for b in range(mb):
            for h in range(mh):
                for qb in range(nqb):
                    rows = slice(qb * bq, (qb + 1) * bq)
                    for n in range(int(self.full_kv_num_blocks[b, h, qb])):
                        kb = int(self.full_kv_indices[b, h, qb, n])
                        dense[b, h, rows, kb * bkv:(kb + 1) * bkv] = True
                    for n in range(int(self.kv_num_blocks[b, h, qb])):
                        kb = int(self.kv_indices[b, h, qb, n])
                        dense[b, h, rows, kb * bkv:(kb + 1) * bkv] = bits[int(self.partial_ids[b, h, qb, n])]
        return dense[:, :, :qlen, :kvlen]

    def __repr__(self):
        return (f"BlockMask(shape={self.shape}, block_size={self.block_size}, "
                f"sparsity={self.sparsity():.1%}, partial_patterns={self.partial_bits.shape[0]})")


def _mask_block(m, shape):
    """mask_mod's result as a bool array of `shape` (it must broadcast to it)."""
    if m is None or isinstance(m, (str, bytes)):
        raise TypeError(f"mask_mod must return a boolean array, got {type(m).__name__}")
    m = np.asarray(m)
    if m.dtype.kind not in "biu":
        raise TypeError(f"mask_mod must return a boolean array, got dtype {m.dtype}")
    try:
        return np.broadcast_to(m.astype(bool), shape)
    except ValueError:
        raise ValueError(f"mask_mod returned shape {m.shape}, which does not broadcast to the "
                         f"(batch, heads, q, kv) index shape {shape}") from None


def create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, *, block_size=128, device="cpu") -> BlockMask:
    """Builds a BlockMask from mask_mod(b, h, q_idx, kv_idx) -> bool (FlexAttention's contract).

    mask_mod is called with broadcastable integer index arrays (NumPy on the CPU; CuPy or torch
    when device is a GPU) and only sees q_idx < Q_LEN, kv_idx < KV_LEN. B / H may be None when the
    mask is the same for every batch entry / head. block_size: int or (q, kv) pair; the GPU kernels
    need multiples of 128 (q) and 64 (kv), which the default satisfies. device: where the block
    arrays live ('cpu' or 'cuda[:N]'); a CPU mask is copied to the GPU on first GPU use.
    """
    if not callable(mask_mod):
        raise TypeError(f"mask_mod must be callable, got {type(mask_mod).__name__}")
    if isinstance(block_size, (tuple, list)):
        if len(block_size) != 2:
            raise ValueError(f"block_size must be an int or a (q, kv) pair, got {block_size!r}")
        bq, bkv = (_checks.integer(x, "block_size", 1, bits=INT32) for x in block_size)
    elif isinstance(block_size, (int, np.integer)) and not isinstance(block_size, (bool, np.bool_)):
        bq = bkv = _checks.integer(block_size, "block_size", 1, bits=INT32)
    else:
        raise TypeError(f"block_size must be an int or a (q, kv) pair, got "
                        f"{type(block_size).__name__} {block_size!r}")
    mb = _checks.optional_integer(B, "B", 1, bits=INT32, none=1)
    mh = _checks.optional_integer(H, "H", 1, bits=INT32, none=1)
    qlen = _checks.integer(Q_LEN, "Q_LEN", 0)
    kvlen = _checks.integer(KV_LEN, "KV_LEN", 0)
    is_cuda, dev = _checks.device(device)
    device = f"cuda:{dev}" if is_cuda else "cpu"
    nqb, nkb = -(-qlen // bq), -(-kvlen // bkv)
    wpr = -(-bkv // 32)
    ns = _namespace(device)

    num = np.zeros((mb, mh, nqb), np.int32)
    fnum = np.zeros((mb, mh, nqb), np.int32)
    idx = np.zeros((mb, mh, nqb, nkb), np.int32)
    fidx = np.zeros((mb, mh, nqb, nkb), np.int32)
    pid = np.zeros((mb, mh, nqb, nkb), np.int32)
    patterns = []  # packed bits of each partial block, deduplicated below
    where = []  # (b, h, qb, n) of each partial block, in `patterns` order

    try:
        bidx, hidx, kvidx = _index_arrays(ns, mb, mh, kvlen, device)
    except Exception:  # noqa: BLE001 - that framework cannot use the device: evaluate on the host
        ns = "numpy"
        bidx, hidx, kvidx = _index_arrays(ns, mb, mh, kvlen, device)
    qb_per_chunk = max(1, _MAX_CHUNK_ELEMS // max(1, mb * mh * bq * max(kvlen, 1)))
    kv_pad = nkb * bkv - kvlen
    for qb0 in range(0, nqb, qb_per_chunk):
        qb1 = min(nqb, qb0 + qb_per_chunk)
        q0, q1 = qb0 * bq, min(qlen, qb1 * bq)
        qidx = _arange(ns, qlen, device)[q0:q1][None, None, :, None]
        try:
            m = _to_numpy(mask_mod(bidx, hidx, qidx, kvidx), ns)
        except Exception:
            if ns == "numpy":
                raise
            # A mask_mod written against NumPy (e.g. closing over NumPy arrays): evaluate on the
            # host instead, from here on.
            ns = "numpy"
            bidx, hidx, kvidx = _index_arrays(ns, mb, mh, kvlen, device)
            qidx = np.arange(q0, q1)[None, None, :, None]
            m = mask_mod(bidx, hidx, qidx, kvidx)
        m = _mask_block(m, (mb, mh, q1 - q0, kvlen))
        # Pad to whole blocks (padding is invisible) and view as tiles.
        m = np.pad(m, ((0, 0), (0, 0), (0, (qb1 - qb0) * bq - (q1 - q0)), (0, kv_pad)))
        tiles = m.reshape(mb, mh, qb1 - qb0, bq, nkb, bkv)
        counts = tiles.sum(axis=(3, 5))  # [mb, mh, nq, nkb]
        rows_valid = np.minimum(bq, qlen - np.arange(qb0, qb1) * bq)
        cols_valid = np.minimum(bkv, kvlen - np.arange(nkb) * bkv)
        full = counts == rows_valid[:, None] * cols_valid[None, :]
        partial = (counts > 0) & ~full
        for b in range(mb):
            for h in range(mh):
                for j in range(qb1 - qb0):
                    qb = qb0 + j
                    f = np.nonzero(full[b, h, j])[0]
                    p = np.nonzero(partial[b, h, j])[0]
                    fnum[b, h, qb], num[b, h, qb] = len(f), len(p)
                    fidx[b, h, qb, :len(f)] = f
                    idx[b, h, qb, :len(p)] = p
                    for n, kb in enumerate(p):
                        tile = tiles[b, h, j, :, kb, :]
                        padded = np.zeros((bq, wpr * 32), dtype=bool)
                        padded[:, :bkv] = tile
                        patterns.append(np.packbits(padded, axis=-1, bitorder="little").view(np.uint32))
                        where.append((b, h, qb, n))
    if patterns:
        stacked = np.stack(patterns).reshape(len(patterns), bq * wpr)
        uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for (b, h, qb, n), u in zip(where, inverse):
            pid[b, h, qb, n] = u
        bits = np.ascontiguousarray(uniq.reshape(-1, bq, wpr).astype(np.uint32))
    else:
        bits = np.zeros((0, bq, wpr), np.uint32)
    return BlockMask(num, idx, pid, fnum, fidx, bits, (bq, bkv), (mb, mh, qlen, kvlen), device)
