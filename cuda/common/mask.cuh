// mask.cuh — mask policies: which kv tiles a q tile must visit, which of those need a
// per-element test, and the test itself. Kernels skip every tile outside the list and run the
// element test only on partial (boundary) tiles.
//
//   DenseMask        causal (bottom-right aligned), window (left, right), end of the sequence.
//   BlockSparseMask  a BlockMask's full / partial block lists (plus everything DenseMask does).
#pragma once

#include "common/arch.cuh"
#include "cuattn/params.h"

namespace cuattn {

struct DenseMask {
  int len_q, len_k, offset;  // offset = len_k - len_q: query i's diagonal is key i + offset
  bool causal;
  int left, right;  // -1: unbounded

  CUATTN_DEVICE DenseMask(int lq, int lk, bool c, int l, int r)
      : len_q(lq), len_k(lk), offset(lk - lq), causal(c), left(l), right(r) {}

  // Keys [lo, hi) that any query in [i0, i1] can see.
  CUATTN_DEVICE void key_range(int i0, int i1, int& lo, int& hi) const {
    lo = 0;
    hi = len_k;
    if (causal) hi = min(hi, i1 + offset + 1);
    if (right >= 0) hi = min(hi, i1 + offset + right + 1);
    if (left >= 0) lo = max(lo, i0 + offset - left);
    if (hi < lo) hi = lo;
  }

  // Does any (query in [i0, i1], key in [n0, n0 + bn)) pair fail the mask?
  CUATTN_DEVICE bool is_partial(int i0, int i1, int n0, int bn) const {
    const int n1 = n0 + bn - 1;
    if (n1 >= len_k) return true;
    if (causal && n1 > i0 + offset) return true;
    if (right >= 0 && n1 > i0 + offset + right) return true;
    if (left >= 0 && n0 < i1 + offset - left) return true;
    return false;
  }

  CUATTN_DEVICE bool visible(int i, int j) const {
    return j < len_k && mask_visible(i, j, offset, causal, left, right);
  }

  // Under a dense mask a query sees one interval of keys: [jlo, jhi) for query i (the same set as
  // visible(i, .), computed once per row instead of once per element).
  CUATTN_DEVICE void row_range(int i, int& jlo, int& jhi) const { key_range(i, i, jlo, jhi); }
};

// Tiles of a q block under a BlockMask: the full kv blocks first, then the partial ones; each
// mask block of block_kv keys is `tiles_per_block` kernel tiles of bn keys. Ids read from the
// mask are clamped, so a corrupt mask cannot cause an out-of-bounds access.
struct BlockSparseMask {
  const int32_t* full;     // full kv block ids of this (b, h, q block)
  const int32_t* part;     // partial kv block ids
  const int32_t* part_id;  // their bit patterns
  const uint32_t* bits;    // [n_partial, block_q, words_per_row]
  int nfull, npart, tiles_per_block, bn, block_q, block_kv, wpr, n_kb, n_partial;
  int q_block_row0;  // first query row of the mask's q block

  CUATTN_DEVICE BlockSparseMask(const BlockMaskParams& m, int b, int h, int m0, int bn_) {
    const int qb = m0 / m.block_q;
    const int64_t r = b * m.num_stride_b + h * m.num_stride_h + qb;
    const int64_t ri = b * m.idx_stride_b + h * m.idx_stride_h + int64_t(qb) * m.n_kb;
    nfull = min(max(m.full_kv_num_blocks[r], 0), m.n_kb);
    npart = min(max(m.kv_num_blocks[r], 0), m.n_kb);
    if (m.n_partial == 0) npart = 0;
    full = m.full_kv_indices + ri;
    part = m.kv_indices + ri;
    part_id = m.partial_ids + ri;
    bits = m.partial_bits;
    bn = bn_;
    tiles_per_block = m.block_kv / bn_;
    block_q = m.block_q;
    block_kv = m.block_kv;
    wpr = m.words_per_row;
    n_kb = m.n_kb;
    n_partial = m.n_partial;
    q_block_row0 = qb * m.block_q;
  }

  CUATTN_DEVICE int num_tiles() const { return (nfull + npart) * tiles_per_block; }

  // First key of tile `it`; `pattern` gets the partial pattern id, or -1 for a full block.
  CUATTN_DEVICE int tile_start(int it, int& pattern) const {
    const int blk = it / tiles_per_block, sub = it - blk * tiles_per_block;
    int kb;
    if (blk < nfull) {
      kb = full[blk];
      pattern = -1;
    } else {
      kb = part[blk - nfull];
      pattern = min(max(part_id[blk - nfull], 0), n_partial - 1);
    }
    kb = min(max(kb, 0), n_kb - 1);
    return kb * block_kv + sub * bn;
  }

  // The 32-bit word of `pattern` holding the bits of query row i, keys from n0 + 32 * w.
  CUATTN_DEVICE uint32_t word(int pattern, int i, int n0, int w) const {
    const int r = i - q_block_row0;
    const int c = (n0 % block_kv) / 32 + w;
    return __ldg(bits + (int64_t(pattern) * block_q + r) * wpr + c);
  }
};

}  // namespace cuattn
