// cpu/paged.cpp — the CPU backend's paged KV-cache attention and append_paged_kv.
//
// paged_attention runs the blocked core of cpu::attention (cpu/attend.h) per (sequence, kv
// head, query tile), the GQA group's query heads packed into the tile's rows, with K and V read
// through the sequence's block-table row (dequantising fp8 with the scales) one key tile at a
// time.
#include <algorithm>
#include <cstdint>

#include "backend.h"
#include "cpu/attend.h"

namespace cuattn {
namespace cpu {
void paged_attention(const PagedParams& p) {
  const int hq = p.num_heads_q;
  const int group = p.num_heads_kv > 0 ? hq / p.num_heads_kv : 1;
  // The scales multiply whatever the cache holds (they are 1 unless set); a scale pointer
  // (host memory on the CPU) overrides the value.
  const float k_scale = p.k_scale_ptr ? *p.k_scale_ptr : p.k_scale;
  const float v_scale = p.v_scale_ptr ? *p.v_scale_ptr : p.v_scale;
  const int hkv = hq / group;
  const int64_t sq = p.seqlen_q, tiles = (sq * group + detail::kQueryTile - 1) / detail::kQueryTile;
  parallel_for(int64_t(p.batch) * hkv * tiles, [&](int64_t item) {
    const int64_t b = item / (hkv * tiles), hk = item / tiles % hkv, h = hk * group;
    const int64_t tile = tiles - 1 - item % tiles;  // the longest first, as in cpu::attention
    const int64_t len = p.seq_lens[b * p.seq_lens_stride];
    const int32_t* pages = p.block_table + b * p.bt_batch_stride;

    detail::HeadProblem hp;
    hp.q = {p.q, p.q_dtype, 1.f, 0, p.q_row_stride, b * p.q_batch_stride + h * p.q_head_stride};
    // v_cache may alias k_cache (MLA): V is then the first dv columns of the same entry.
    hp.k = {p.k_cache, p.kv_dtype, k_scale, 0, p.k_slot_stride, hk * p.k_head_stride, pages,
            p.k_page_stride, p.page_size};
    hp.v = {p.v_cache, p.kv_dtype, v_scale, 0, p.v_slot_stride, hk * p.v_head_stride, pages,
            p.v_page_stride, p.page_size};
    // The new tokens are the last sq of the sequence: offset len - sq.
    hp.lq = sq, hp.lk = len, hp.offset = len - sq;
    hp.d = p.head_dim, hp.dv = p.head_dim_v;
    hp.causal = p.causal, hp.window_left = p.window_left, hp.window_right = p.window_right;
    hp.scale = p.scale, hp.softcap = p.softcap;
    hp.sinks = p.sinks ? p.sinks + h * p.sinks_stride : nullptr;
    hp.o = p.o, hp.o_dtype = p.q_dtype;
    hp.o_index0 = b * p.o_batch_stride + h * p.o_head_stride;
    hp.o_row_stride = p.o_row_stride;
    hp.lse = p.lse ? p.lse + b * p.lse_batch_stride + h * p.lse_head_stride : nullptr;
    hp.group = group;
    hp.q_head_stride = p.q_head_stride, hp.o_head_stride = p.o_head_stride;
    hp.lse_head_stride = p.lse_head_stride, hp.sinks_stride = p.sinks_stride;
    const int64_t i0 = tile * detail::kQueryTile;
    detail::attend_rows(hp, i0, std::min(detail::kQueryTile, sq * group - i0));
  });
}

void append_paged_kv(const AppendParams& p) {
  const float k_scale = p.k_scale_ptr ? *p.k_scale_ptr : p.k_scale;
  const float v_scale = p.v_scale_ptr ? *p.v_scale_ptr : p.v_scale;
  // One kv head per work item: different heads never share cache elements, and within a head
  // the tokens are written in order, so a repeated slot deterministically keeps the last token.
  parallel_for(p.num_heads_kv, [&](int64_t h) {
    for (int64_t i = 0; i < p.num_tokens; ++i) {
      const int64_t slot = p.slot_mapping[i * p.slot_mapping_stride];
      if (slot < 0) continue;  // padding token
      const int64_t page = slot / p.page_size, off = slot % p.page_size;
      const int64_t kn = i * p.kn_row_stride + h * p.kn_head_stride;
      const int64_t vn = i * p.vn_row_stride + h * p.vn_head_stride;
      const int64_t kc = page * p.k_page_stride + off * p.k_slot_stride + h * p.k_head_stride;
      const int64_t vc = page * p.v_page_stride + off * p.v_slot_stride + h * p.v_head_stride;
      // The cache stores x / scale; store() rounds to nearest even (fp8: saturating to +-448).
      for (int x = 0; x < p.head_dim; ++x)
        store(p.k_cache, p.kv_dtype, kc + x, load(p.k_new, p.new_dtype, kn + x) / k_scale);
      for (int x = 0; x < p.head_dim_v; ++x)
        store(p.v_cache, p.kv_dtype, vc + x, load(p.v_new, p.new_dtype, vn + x) / v_scale);
    }
  });
}

}  // namespace cpu
}  // namespace cuattn
