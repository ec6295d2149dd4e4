// cpu/paged.cpp — the CPU backend's paged KV-cache attention and append_paged_kv.
//
// paged_attention runs the blocked core of cpu::attention (cpu/attend.h) per (sequence, kv
// head, query tile), the GQA group's query heads packed into the tile's rows, with K and V read
// through the sequence's block-table row (dequantising fp8 with the scales) one key tile at a
// time. A uniform batch (q [B, Sq, Hq, D]) and a mixed one (packed q with cu_seqlens_q) are the
// same loop: they differ only in where sequence b's query rows start and how many there are.
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
  // Sequence b's new tokens: rows q0 .. q0 + lq - 1 (uniform: 0 .. seqlen_q - 1 of its batch
  // entry; mixed: cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1 of the packed rows).
  auto rows = [&](int64_t b, int64_t& q0, int64_t& lq) {
    q0 = 0, lq = p.seqlen_q;
    if (p.cu_seqlens_q) {
      q0 = p.cu_seqlens_q[b * p.cu_seqlens_q_stride];
      lq = p.cu_seqlens_q[(b + 1) * p.cu_seqlens_q_stride] - q0;
    }
  };
  auto packed_rows = [&](int64_t b) {
    int64_t q0, lq;
    rows(b, q0, lq);
    return lq * group;
  };
  detail::for_each_query_tile(p.batch, hkv, packed_rows, [&](int64_t b, int64_t hk, int64_t i0,
                                                             int64_t m) {
    int64_t q0, lq;
    rows(b, q0, lq);
    const int64_t h = hk * group;
    const int64_t len = p.seq_lens[b * p.seq_lens_stride];
    const int32_t* pages = p.block_table + b * p.bt_batch_stride;

    detail::HeadProblem hp;
    hp.q = {p.q, p.q_dtype, 1.f, q0, p.q_row_stride, b * p.q_batch_stride + h * p.q_head_stride};
    // v_cache may alias k_cache (MLA): V is then the first dv columns of the same entry.
    hp.k = {p.k_cache, p.kv_dtype, k_scale, 0, p.k_slot_stride, hk * p.k_head_stride, pages,
            p.k_page_stride, p.page_size};
    hp.v = {p.v_cache, p.kv_dtype, v_scale, 0, p.v_slot_stride, hk * p.v_head_stride, pages,
            p.v_page_stride, p.page_size};
    // The new tokens are the last lq of the sequence: offset len - lq (bottom-right causal).
    hp.lq = lq, hp.lk = len, hp.offset = len - lq;
    hp.d = p.head_dim, hp.dv = p.head_dim_v;
    hp.causal = p.causal, hp.window_left = p.window_left, hp.window_right = p.window_right;
    hp.scale = p.scale, hp.softcap = p.softcap;
    hp.sinks = p.sinks ? p.sinks + h * p.sinks_stride : nullptr;
    hp.o = p.o, hp.o_dtype = p.q_dtype;
    hp.o_index0 = b * p.o_batch_stride + q0 * p.o_row_stride + h * p.o_head_stride;
    hp.o_row_stride = p.o_row_stride;
    hp.lse = p.lse ? p.lse + b * p.lse_batch_stride + h * p.lse_head_stride + q0 : nullptr;
    hp.group = group;
    hp.q_head_stride = p.q_head_stride, hp.o_head_stride = p.o_head_stride;
    hp.lse_head_stride = p.lse_head_stride, hp.sinks_stride = p.sinks_stride;
    detail::attend_rows(hp, i0, m);
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
