// cpu/paged.cpp — the CPU backend's paged KV-cache attention and append_paged_kv.
//
// paged_attention gathers, per (sequence, query head), the sequence's keys and values out of the
// pages named by its block-table row into dense float arrays (dequantising fp8 with the scales),
// then runs the same per-head core as cpu::attention (detail::attend_head in attention.cpp).
#include <cstdint>
#include <vector>

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
  parallel_for(int64_t(p.batch) * hq, [&](int64_t task) {
    const int64_t b = task / hq, h = task % hq, hk = h / group;
    const int64_t len = p.seq_lens[b];
    const int d = p.head_dim, dv = p.head_dim_v, sq = p.seqlen_q;
    const int32_t* table = p.block_table + b * p.bt_batch_stride;

    std::vector<float> k(static_cast<size_t>(len * d)), v(static_cast<size_t>(len * dv));
    for (int64_t j = 0; j < len; ++j) {
      const int64_t page = table[j / p.page_size], slot = j % p.page_size;
      // v_cache may alias k_cache (MLA): V is then the first dv columns of the same entry.
      const int64_t ki = page * p.k_page_stride + slot * p.k_slot_stride + hk * p.k_head_stride;
      const int64_t vi = page * p.v_page_stride + slot * p.v_slot_stride + hk * p.v_head_stride;
      for (int x = 0; x < d; ++x) k[j * d + x] = load(p.k_cache, p.kv_dtype, ki + x) * k_scale;
      for (int x = 0; x < dv; ++x) v[j * dv + x] = load(p.v_cache, p.kv_dtype, vi + x) * v_scale;
    }
    std::vector<float> q(static_cast<size_t>(sq) * d);
    for (int t = 0; t < sq; ++t) {
      const int64_t qi = b * p.q_batch_stride + t * p.q_row_stride + h * p.q_head_stride;
      for (int x = 0; x < d; ++x) q[int64_t(t) * d + x] = load(p.q, p.q_dtype, qi + x);
    }
    float* lse = p.lse ? p.lse + b * p.lse_batch_stride + h * p.lse_head_stride : nullptr;
    // The new tokens are the last sq of the sequence: offset len - sq.
    detail::attend_head(q.data(), k.data(), v.data(), sq, len, d, dv, len - sq, p.causal,
                        p.window_left, p.window_right, nullptr, nullptr, p.scale, p.softcap,
                        p.sinks ? p.sinks + h : nullptr, false, p.o, p.q_dtype,
                        b * p.o_batch_stride + h * p.o_head_stride, p.o_row_stride, lse);
  });
}

void append_paged_kv(const AppendParams& p) {
  const float k_scale = p.k_scale_ptr ? *p.k_scale_ptr : p.k_scale;
  const float v_scale = p.v_scale_ptr ? *p.v_scale_ptr : p.v_scale;
  // One kv head per work item: different heads never share cache elements, and within a head
  // the tokens are written in order, so a repeated slot deterministically keeps the last token.
  parallel_for(p.num_heads_kv, [&](int64_t h) {
    for (int64_t i = 0; i < p.num_tokens; ++i) {
      const int64_t slot = p.slot_mapping[i];
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
