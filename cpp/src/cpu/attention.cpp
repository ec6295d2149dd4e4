// cpu/attention.cpp — the CPU backend's dense / varlen / block-sparse attention, the naive
// (score-matrix) version and merge_states.
//
// Per (sequence, query head) the rows of q, k and v are gathered into dense float arrays once,
// then every query row is scored (float dot products), soft-maxed (max and sum in double) and
// multiplied with V (double accumulation). The (batch, head) pairs run in parallel. This file
// also defines detail::attend_head, the per-head core that paged.cpp shares.
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

// Float dot product with eight independent partial sums (vectorisable, and more accurate than
// one running sum).
float dot(const float* a, const float* b, int n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int x = 0;
  for (; x + 8 <= n; x += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[x + u] * b[x + u];
  float tail = 0.f;
  for (; x < n; ++x) tail += a[x] * b[x];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

// Softmax and P.V of one query row. s holds the scores of keys j0 .. j0+n-1, -inf where masked.
// An empty row (no visible key) gives out = 0 and lse = -inf, whatever the sink.
void finish_row(const float* s, int64_t j0, int64_t n, const float* v, int dv, const float* sink,
                std::vector<double>& acc, void* o, DType o_dtype, int64_t o_index, float* lse) {
  double m = -std::numeric_limits<double>::infinity();
  bool any = false;
  for (int64_t t = 0; t < n; ++t) {
    if (s[t] == kNegInf) continue;
    any = true;
    m = std::max(m, static_cast<double>(s[t]));
  }
  if (!any) {
    for (int x = 0; x < dv; ++x) store(o, o_dtype, o_index + x, 0.f);
    if (lse) *lse = kNegInf;
    return;
  }
  if (sink) m = std::max(m, static_cast<double>(*sink));
  std::fill(acc.begin(), acc.end(), 0.0);
  double den = 0.0;
  for (int64_t t = 0; t < n; ++t) {
    if (s[t] == kNegInf) continue;
    const double p = std::exp(static_cast<double>(s[t]) - m);
    den += p;
    const float* vr = v + (j0 + t) * dv;
    for (int x = 0; x < dv; ++x) acc[x] += p * vr[x];
  }
  if (sink) den += std::exp(static_cast<double>(*sink) - m);  // denominator only
  for (int x = 0; x < dv; ++x) store(o, o_dtype, o_index + x, static_cast<float>(acc[x] / den));
  if (lse) *lse = static_cast<float>(m + std::log(den));
}

// Gathers `rows` rows of `cols` elements (row r at base + (start + r) * row_stride + head_off).
std::vector<float> gather(const void* base, DType t, int64_t start, int64_t rows,
                          int64_t row_stride, int64_t head_off, int cols) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t idx = (start + r) * row_stride + head_off;
    for (int c = 0; c < cols; ++c) out[r * cols + c] = load(base, t, idx + c);
  }
  return out;
}

// The block mask of one (batch, head), as a table over (q block, kv block):
// -1 empty, -2 full, >= 0 the partial block's id in partial_bits.
struct BlockTable {
  const BlockMaskParams* bm = nullptr;
  std::vector<int32_t> state;  // [n_qb, n_kb]
};

constexpr int32_t kEmpty = -1, kFull = -2;

BlockTable build_block_table(const BlockMaskParams& bm, int64_t b, int64_t h) {
  BlockTable t;
  t.bm = &bm;
  t.state.assign(static_cast<size_t>(bm.n_qb) * bm.n_kb, kEmpty);
  for (int qb = 0; qb < bm.n_qb; ++qb) {
    int32_t* row = t.state.data() + static_cast<int64_t>(qb) * bm.n_kb;
    const int64_t num_idx = b * bm.num_stride_b + h * bm.num_stride_h + qb;
    const int64_t list = b * bm.idx_stride_b + h * bm.idx_stride_h + int64_t(qb) * bm.n_kb;
    // Partial blocks first (the first listing of a block counts), full ones override them.
    const int32_t np = bm.kv_num_blocks[num_idx];
    for (int32_t n = 0; n < np && n < bm.n_kb; ++n) {
      const int32_t kb = bm.kv_indices[list + n];
      if (kb >= 0 && kb < bm.n_kb && row[kb] == kEmpty) row[kb] = bm.partial_ids[list + n];
    }
    if (bm.full_kv_num_blocks && bm.full_kv_indices) {
      const int32_t nf = bm.full_kv_num_blocks[num_idx];
      for (int32_t n = 0; n < nf && n < bm.n_kb; ++n) {
        const int32_t kb = bm.full_kv_indices[list + n];
        if (kb >= 0 && kb < bm.n_kb) row[kb] = kFull;
      }
    }
  }
  return t;
}

bool block_visible(const void* ctx, int64_t i, int64_t j) {
  const BlockTable& t = *static_cast<const BlockTable*>(ctx);
  const BlockMaskParams& bm = *t.bm;
  const int64_t qb = i / bm.block_q, kb = j / bm.block_kv;
  if (qb >= bm.n_qb || kb >= bm.n_kb) return false;
  const int32_t st = t.state[qb * bm.n_kb + kb];
  if (st == kFull) return true;
  if (st < 0) return false;
  const int64_t jj = j % bm.block_kv;
  const uint32_t word =
      bm.partial_bits[(int64_t(st) * bm.block_q + i % bm.block_q) * bm.words_per_row + jj / 32];
  return (word >> (jj % 32)) & 1u;
}

void run_attention(const AttnParams& p, bool materialise) {
  const int hq = p.num_heads_q;
  const int group = p.num_heads_kv > 0 ? hq / p.num_heads_kv : 1;
  parallel_for(int64_t(p.batch) * hq, [&](int64_t task) {
    const int64_t b = task / hq, h = task % hq, hk = h / group;
    // Sequence b: dense rows start at 0 of batch b; varlen ones at cu_seqlens[b].
    int64_t q0 = 0, lq = p.seqlen_q, k0 = 0, lk = p.seqlen_k;
    if (p.cu_seqlens_q) {
      q0 = p.cu_seqlens_q[b];
      lq = p.cu_seqlens_q[b + 1] - q0;
    }
    if (p.cu_seqlens_k) {
      k0 = p.cu_seqlens_k[b];
      lk = p.cu_seqlens_k[b + 1] - k0;
    }
    std::vector<float> q = gather(p.q, p.dtype, q0, lq, p.q_row_stride,
                                  b * p.q_batch_stride + h * p.q_head_stride, p.head_dim);
    std::vector<float> k = gather(p.k, p.dtype, k0, lk, p.k_row_stride,
                                  b * p.k_batch_stride + hk * p.k_head_stride, p.head_dim);
    std::vector<float> v = gather(p.v, p.dtype, k0, lk, p.v_row_stride,
                                  b * p.v_batch_stride + hk * p.v_head_stride, p.head_dim_v);
    BlockTable table;
    if (p.block_mask.present()) table = build_block_table(p.block_mask, b, h);
    float* lse = p.lse ? p.lse + b * p.lse_batch_stride + h * p.lse_head_stride + q0 : nullptr;
    detail::attend_head(q.data(), k.data(), v.data(), lq, lk, p.head_dim, p.head_dim_v, lk - lq,
                        p.causal, p.window_left, p.window_right,
                        p.block_mask.present() ? block_visible : nullptr, &table, p.scale,
                        p.softcap, p.sinks ? p.sinks + h : nullptr, materialise, p.o, p.dtype,
                        b * p.o_batch_stride + q0 * p.o_row_stride + h * p.o_head_stride,
                        p.o_row_stride, lse);
  });
}

}  // namespace

namespace detail {

// One (sequence, query head): q [lq, d], k [lk, d], v [lk, dv] dense floats; output row i goes
// to element o_index0 + i * o_row_stride of o, its lse to lse[i]. With `materialise` the whole
// [lq, lk] score matrix is built before any softmax (the naive algorithm); otherwise one row of
// scores at a time, over the window's key range only. Both give the same numbers.
void attend_head(const float* q, const float* k, const float* v, int64_t lq, int64_t lk, int d,
                 int dv, int64_t offset, bool causal, int window_left, int window_right,
                 ExtraMaskFn extra, const void* extra_ctx, float scale, float softcap,
                 const float* sink, bool materialise, void* o, DType o_dtype, int64_t o_index0,
                 int64_t o_row_stride, float* lse) {
  if (lq <= 0) return;
  // Keys lo .. hi are visible from row i under mask_visible (params.h): the same rule, solved
  // for j so a window row costs its width rather than lk.
  auto key_range = [&](int64_t i, int64_t& lo, int64_t& hi) {
    const int64_t diag = i + offset;
    lo = 0;
    hi = lk - 1;
    if (causal) hi = std::min(hi, diag);
    if (window_right >= 0) hi = std::min(hi, diag + window_right);
    if (window_left >= 0) lo = std::max(lo, diag - window_left);
  };
  auto score = [&](int64_t i, int64_t j) -> float {
    if (extra && !extra(extra_ctx, i, j)) return kNegInf;
    double s = static_cast<double>(scale) * dot(q + i * d, k + j * d, d);
    if (softcap > 0.f) s = softcap * std::tanh(s / softcap);
    return static_cast<float>(s);
  };
  std::vector<double> acc(static_cast<size_t>(dv));
  if (materialise) {
    std::vector<float> s(static_cast<size_t>(lq * lk), kNegInf);  // the full score matrix
    for (int64_t i = 0; i < lq; ++i) {
      int64_t lo, hi;
      key_range(i, lo, hi);
      for (int64_t j = lo; j <= hi; ++j) s[i * lk + j] = score(i, j);
    }
    for (int64_t i = 0; i < lq; ++i)
      finish_row(s.data() + i * lk, 0, lk, v, dv, sink, acc, o, o_dtype,
                 o_index0 + i * o_row_stride, lse ? lse + i : nullptr);
    return;
  }
  std::vector<float> row;
  for (int64_t i = 0; i < lq; ++i) {
    int64_t lo, hi;
    key_range(i, lo, hi);
    const int64_t n = std::max<int64_t>(0, hi - lo + 1);
    row.resize(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) row[t] = score(i, lo + t);
    finish_row(row.data(), lo, n, v, dv, sink, acc, o, o_dtype, o_index0 + i * o_row_stride,
               lse ? lse + i : nullptr);
  }
}

}  // namespace detail

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
