// cpu/attention.cpp — the CPU backend's dense / varlen / block-sparse attention, the naive
// (score-matrix) version and merge_states.
//
// The work items are (sequence, kv head, query tile) triples, run on the thread pool; each one
// is a call of the blocked core (cpu/attend.h), which reads q, k and v where they lie, tile by
// tile, with the query heads of a GQA group packed into one tile's rows (a block mask, which
// may differ per head, keeps one head a problem). A varlen document without queries has no
// items, so its keys are never read.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend.h"
#include "cpu/attend.h"

namespace cuattn {
namespace cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void run_attention(const AttnParams& p, bool materialise) {
  const int hq = p.num_heads_q;
  const int group = p.num_heads_kv > 0 ? hq / p.num_heads_kv : 1;
  const int packed = p.block_mask.present() ? 1 : group;  // query heads a problem packs
  const int problems = hq / packed;                       // per sequence
  // Sequence b: dense rows start at 0 of batch b; varlen ones at cu_seqlens[b].
  auto bounds = [&](int64_t b, int64_t& q0, int64_t& lq, int64_t& k0, int64_t& lk) {
    q0 = 0, lq = p.seqlen_q, k0 = 0, lk = p.seqlen_k;
    if (p.cu_seqlens_q) {
      q0 = p.cu_seqlens_q[b * p.cu_seqlens_q_stride];
      lq = p.cu_seqlens_q[(b + 1) * p.cu_seqlens_q_stride] - q0;
    }
    if (p.cu_seqlens_k) {
      k0 = p.cu_seqlens_k[b * p.cu_seqlens_k_stride];
      lk = p.cu_seqlens_k[(b + 1) * p.cu_seqlens_k_stride] - k0;
    }
  };
  auto rows = [&](int64_t b) {
    int64_t q0, lq, k0, lk;
    bounds(b, q0, lq, k0, lk);
    return lq * packed;
  };
  detail::for_each_query_tile(p.batch, problems, rows, [&](int64_t b, int64_t problem, int64_t i0,
                                                           int64_t m) {
    int64_t q0, lq, k0, lk;
    bounds(b, q0, lq, k0, lk);
    const int64_t h = problem * packed, hk = h / group;  // the problem's first query head
    detail::BlockTable table;
    if (p.block_mask.present()) table = detail::build_block_table(p.block_mask, b, h);

    detail::HeadProblem hp;
    hp.q = {p.q, p.dtype, 1.f, q0, p.q_row_stride, b * p.q_batch_stride + h * p.q_head_stride};
    hp.k = {p.k, p.dtype, 1.f, k0, p.k_row_stride, b * p.k_batch_stride + hk * p.k_head_stride};
    hp.v = {p.v, p.dtype, 1.f, k0, p.v_row_stride, b * p.v_batch_stride + hk * p.v_head_stride};
    hp.lq = lq, hp.lk = lk, hp.offset = lk - lq;
    hp.d = p.head_dim, hp.dv = p.head_dim_v;
    hp.causal = p.causal, hp.window_left = p.window_left, hp.window_right = p.window_right;
    hp.blocks = p.block_mask.present() ? &table : nullptr;
    hp.scale = p.scale, hp.softcap = p.softcap;
    hp.sinks = p.sinks ? p.sinks + h * p.sinks_stride : nullptr;
    hp.o = p.o, hp.o_dtype = p.dtype;
    hp.o_index0 = b * p.o_batch_stride + q0 * p.o_row_stride + h * p.o_head_stride;
    hp.o_row_stride = p.o_row_stride;
    hp.lse = p.lse ? p.lse + b * p.lse_batch_stride + h * p.lse_head_stride + q0 : nullptr;
    hp.group = packed;
    hp.q_head_stride = p.q_head_stride, hp.o_head_stride = p.o_head_stride;
    hp.lse_head_stride = p.lse_head_stride, hp.sinks_stride = p.sinks_stride;
    detail::attend_rows(hp, i0, m, materialise ? std::max<int64_t>(lk, 1) : detail::kKeyTile);
  });
}

}  // namespace

void attention(const AttnParams& p) { run_attention(p, false); }

void naive_attention(const AttnParams& p) { run_attention(p, true); }

void merge_states(const MergeParams& p) {
  const int64_t seqlen = p.seqlen;
  parallel_for(int64_t(p.batch) * seqlen, [&](int64_t task) {
    const int64_t b = task / seqlen, s = task % seqlen;
    for (int64_t h = 0; h < p.num_heads; ++h) {
      const double la = p.lse_a[b * p.la_stride[0] + h * p.la_stride[1] + s * p.la_stride[2]];
      const double lb = p.lse_b[b * p.lb_stride[0] + h * p.lb_stride[1] + s * p.lb_stride[2]];
      const int64_t ia = b * p.oa_stride[0] + s * p.oa_stride[1] + h * p.oa_stride[2];
      const int64_t ib = b * p.ob_stride[0] + s * p.ob_stride[1] + h * p.ob_stride[2];
      const int64_t io = b * p.o_stride[0] + s * p.o_stride[1] + h * p.o_stride[2];
      float* lse = p.lse ? p.lse + b * p.l_stride[0] + h * p.l_stride[1] + s * p.l_stride[2]
                         : nullptr;
      constexpr double ninf = -std::numeric_limits<double>::infinity();
      if (la == ninf && lb == ninf) {  // neither part saw a key
        for (int x = 0; x < p.head_dim; ++x) store(p.o, p.dtype, io + x, 0.f);
        if (lse) *lse = kNegInf;
        continue;
      }
      const double m = std::max(la, lb);
      const double wa = std::exp(la - m), wb = std::exp(lb - m), den = wa + wb;
      for (int x = 0; x < p.head_dim; ++x) {
        // A part with weight 0 is skipped, so its (unused) output cannot leak a NaN in.
        double acc = 0.0;
        if (wa > 0.0) acc += wa * load(p.o_a, p.dtype, ia + x);
        if (wb > 0.0) acc += wb * load(p.o_b, p.dtype, ib + x);
        store(p.o, p.dtype, io + x, static_cast<float>(acc / den));
      }
      if (lse) *lse = static_cast<float>(m + std::log(den));
    }
  });
}

}  // namespace cpu
}  // namespace cuattn
