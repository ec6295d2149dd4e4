// paged_kv.cuh — one (sequence, kv head)'s view of a paged KV cache: which page holds a key, which
// slot of it, and where that slot's K or V row lies.
#pragma once

#include <cstdint>

#include "common/types.cuh"
#include "cuattn/params.h"

namespace cuattn {

// Key j of the sequence lives in page block_table[b][j / page_size], slot j % page_size. Page ids
// come from the caller's table and are clamped before use (table indices to the row, ids to the
// cache), so a corrupt table gives unspecified values, never an out-of-bounds access. Element
// offsets inside one page fit 32 bits (the launcher checks), so a row's address is one 32x32->64-bit
// multiply-add past the kv head's base.
template <typename KV>
struct PagedKV {
  const int32_t* table;  // the sequence's row of the block table
  const KV* k;           // the kv head's first element in each cache
  const KV* v;
  int k_ps, k_ss, v_ps, v_ss;  // page and slot strides (elements)
  int head;              // the kv head (a coordinate of the TMA maps)
  int max_blocks, num_pages;
  FastDivmod page_of;  // key -> (page index, slot)

  CUATTN_DEVICE PagedKV(const PagedParams& p, int b, int hk)
      : table(p.block_table + b * p.bt_batch_stride),
        k(static_cast<const KV*>(p.k_cache) + hk * p.k_head_stride),
        v(static_cast<const KV*>(p.v_cache) + hk * p.v_head_stride),
        k_ps(int(p.k_page_stride)), k_ss(int(p.k_slot_stride)), v_ps(int(p.v_page_stride)), v_ss(int(p.v_slot_stride)),
        head(hk), max_blocks(p.max_blocks), num_pages(p.num_pages), page_of(p.page_size) {}

  // The id in the table for key j, unchecked (loaded early, from a clamped table index, so the
  // load never sits behind a branch; `page` clamps it where it is used).
  CUATTN_DEVICE int page_id(int j) const { return __ldg(table + min(page_of.div(j), max_blocks - 1)); }
  CUATTN_DEVICE int page(int id) const { return min(max(id, 0), num_pages - 1); }
  CUATTN_DEVICE int slot(int j) const { return page_of.mod(j, page_of.div(j)); }
  // Element `col` of the K / V row in (page, slot).
  CUATTN_DEVICE const KV* k_row(int page, int slot, int col = 0) const { return k + (int64_t(page) * k_ps + (slot * k_ss + col)); }
  CUATTN_DEVICE const KV* v_row(int page, int slot, int col = 0) const { return v + (int64_t(page) * v_ps + (slot * v_ss + col)); }
};

}  // namespace cuattn
