// softmax.cuh — the one online-softmax state, shared by every kernel.
//
// Logits arrive in the mma accumulator layout (see mma.cuh): a thread holds, for each of its kM
// m16 tiles, two rows (g and g + 8) and 2 columns of every n8 tile. The four threads of a quad
// share a row, so the row max is reduced over the quad at each step; the row sums stay
// per-thread partials until finalize() (one reduction at the end, as in FlashAttention-2).
// Everything is in log2 units (the softmax scale times log2(e) is folded in by the caller), so
// the exponentials are single exp2 instructions.
#pragma once

#include <math_constants.h>

#include "common/arch.cuh"

namespace cuattn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// 2^x in one MUFU.EX2 (exp2f adds a denormal-range fix-up around it); ex2(-inf) = +0.
CUATTN_DEVICE float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

CUATTN_DEVICE float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
CUATTN_DEVICE float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
// Over all 32 lanes of a (full) warp; every lane gets the result.
CUATTN_DEVICE float warp_max(float x) {
  for (int off = 16; off; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}
CUATTN_DEVICE float warp_sum(float x) {
  for (int off = 16; off; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// The subtrahend of a row's exponents for its new max mx: mx * sl2, or 0 while the row has seen
// no visible key (max -inf), so that exp2 gives 0 instead of NaN.
CUATTN_DEVICE float softmax_base(float mx, float sl2) { return mx == -CUDART_INF_F ? 0.f : mx * sl2; }

// A row's final normalisation from its running max m (raw scores) and its total sum l: the
// factor for its output accumulator and its natural-log LSE. `sink` (log2 units) adds exp2(sink)
// to the denominator when has_sink. A row that saw no visible key gets factor 0 and lse -inf
// (with or without a sink).
CUATTN_DEVICE void softmax_finish(float m_raw, float l, float sl2, bool has_sink, float sink, float& factor,
                                  float& lse) {
  if (m_raw == -CUDART_INF_F) {
    factor = 0.f;
    lse = -CUDART_INF_F;
    return;
  }
  const float m = m_raw * sl2;
  float top = m, keep = 1.f;
  if (has_sink) {
    top = fmaxf(m, sink);
    keep = exp2f(m - top);
    l = l * keep + exp2f(sink - top);
  }
  factor = keep / l;
  lse = (top + __log2f(l)) * kLn2;
}

template <int kM>
struct OnlineSoftmax {
  static constexpr int kRows = 2 * kM;
  float row_max[kRows];  // running max of the raw scores; -inf while no key was visible
  float row_sum[kRows];  // this thread's share of sum(exp2((s - row_max) * sl2))

  CUATTN_DEVICE void init() {
#pragma unroll
    for (int r = 0; r < kRows; ++r) row_max[r] = -CUDART_INF_F, row_sum[r] = 0.f;
  }

  // s: [kM][kN][4] raw scores (-inf = masked); sl2 > 0 is the softmax scale times log2(e), folded
  // into one FFMA per element: p = exp2(s * sl2 - max * sl2). Turns s into p in place, updates
  // the running state and returns, per row, the factor the output accumulator must be
  // multiplied by.
  template <int kN>
  CUATTN_DEVICE void update(float (&s)[kM][kN][4], float sl2, float (&alpha)[kRows]) {
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) exp_row(s, sl2, mt, half, row_max_with(s, mt, half), alpha[2 * mt + half]);
  }

  // update() in two halves, for kernels that split a row's keys between warpgroups: tile_max
  // gives each row's new max over the running max and this thread's quad's scores; the
  // warpgroups combine theirs (the same value in each), then update_to exponentiates against it.
  // Row sums stay each warpgroup's own until they are added before finalize (row_totals,
  // set_row_totals).
  template <int kN>
  CUATTN_DEVICE void tile_max(const float (&s)[kM][kN][4], float (&mx)[kRows]) const {
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) mx[2 * mt + half] = row_max_with(s, mt, half);
  }
  template <int kN>
  CUATTN_DEVICE void update_to(float (&s)[kM][kN][4], float sl2, const float (&mx)[kRows], float (&alpha)[kRows]) {
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) exp_row(s, sl2, mt, half, mx[2 * mt + half], alpha[2 * mt + half]);
  }

  // Row (mt, half)'s running max taken over its scores in s (reduced over the quad).
  template <int kN>
  CUATTN_DEVICE float row_max_with(const float (&s)[kM][kN][4], int mt, int half) const {
    float mx = row_max[2 * mt + half];
#pragma unroll
    for (int nt = 0; nt < kN; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
    return quad_max(mx);
  }
  // Row (mt, half)'s scores turned into p against the new max mx; its state updated; alpha: the
  // factor for the output accumulator.
  template <int kN>
  CUATTN_DEVICE void exp_row(float (&s)[kM][kN][4], float sl2, int mt, int half, float mx, float& alpha) {
    const int r = 2 * mt + half;
    const float base = softmax_base(mx, sl2);
    alpha = fast_exp2(row_max[r] * sl2 - base);
    row_max[r] = mx;
    float sum = 0.f;
#pragma unroll
    for (int nt = 0; nt < kN; ++nt) {
      s[mt][nt][2 * half] = fast_exp2(fmaf(s[mt][nt][2 * half], sl2, -base));
      s[mt][nt][2 * half + 1] = fast_exp2(fmaf(s[mt][nt][2 * half + 1], sl2, -base));
      sum += s[mt][nt][2 * half] + s[mt][nt][2 * half + 1];
    }
    row_sum[r] = row_sum[r] * alpha + sum;
  }

  // Each row's sum over its quad (what finalize divides by), and the reverse: rows' totals put
  // back so that finalize sees exactly them (the quad's first thread holds the total).
  CUATTN_DEVICE void row_totals(float (&l)[kRows]) const {
#pragma unroll
    for (int r = 0; r < kRows; ++r) l[r] = quad_sum(row_sum[r]);
  }
  CUATTN_DEVICE void set_row_totals(const float (&l)[kRows]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) row_sum[r] = threadIdx.x % 4 == 0 ? l[r] : 0.f;
  }

  // Final normalisation: per row, the factor for the output accumulator and the natural-log
  // LSE. `sink` (log2 units) adds exp2(sink) to the denominator when has_sink. Rows that saw no
  // visible key give factor 0 and lse -inf (with or without a sink).
  CUATTN_DEVICE void finalize(float sl2, bool has_sink, float sink, float (&factor)[kRows],
                              float (&lse)[kRows]) const {
#pragma unroll
    for (int r = 0; r < kRows; ++r) softmax_finish(row_max[r], quad_sum(row_sum[r]), sl2, has_sink, sink, factor[r], lse[r]);
  }
};

// True when any row of the warp changed its max (some alpha != 1): only then is the output
// accumulator rescaled. Late in a long row the max rarely moves, so this skips most rescales.
template <int kRows>
CUATTN_DEVICE bool any_rescale(const float (&alpha)[kRows]) {
  bool need = false;
#pragma unroll
  for (int r = 0; r < kRows; ++r) need |= alpha[r] != 1.f;
  return __any_sync(0xffffffffu, need);
}

// The same online softmax for transposed scores S^T = K Q^T: a warpgroup's m64nN product whose
// 64 rows are keys and whose N columns are query rows (the sm_90a MLA decode kernel for few query
// rows). A thread holds, for each of its kNT n8 tiles, two query columns (2t, 2t + 1) of two keys
// (g, g + 8): column i of the thread is query 8 (i / 2) + 2t + i % 2, with scores s[i / 2][i % 2]
// and s[i / 2][i % 2 + 2]. A column's 64 keys are spread over the 8 lanes of a t and over the 4
// warps, so its max is reduced over those lanes and then across the warps through shared memory
// (`red`, [4 warps][8 kNT] floats, and `sync`, a barrier over the warpgroup). Sums stay
// per-thread partials until finalize.
template <int kNT>
struct KeyMajorSoftmax {
  static constexpr int kQ = 2 * kNT, kCols = 8 * kNT;
  float col_max[kQ];
  float col_sum[kQ];

  CUATTN_DEVICE static int column(int i, int lane) { return 8 * (i / 2) + 2 * (lane % 4) + i % 2; }

  CUATTN_DEVICE void init() {
#pragma unroll
    for (int i = 0; i < kQ; ++i) col_max[i] = -CUDART_INF_F, col_sum[i] = 0.f;
  }

  // Each column's sum (or max) over the warpgroup's keys: over the 8 lanes of a t, then lanes
  // 0..3 of each warp write the warp's values to red, sync, and every thread adds (or takes the
  // max of) the 4 warps' values for its columns.
  template <bool kMax, class Sync>
  CUATTN_DEVICE static void reduce(float (&x)[kQ], float* red, int warp, int lane, Sync sync) {
#pragma unroll
    for (int i = 0; i < kQ; ++i) {
#pragma unroll
      for (int off = 4; off < 32; off *= 2) {
        const float y = __shfl_xor_sync(0xffffffffu, x[i], off);
        x[i] = kMax ? fmaxf(x[i], y) : x[i] + y;
      }
      if (lane < 4) red[warp * kCols + column(i, lane)] = x[i];
    }
    sync();
#pragma unroll
    for (int i = 0; i < kQ; ++i) {
      const int q = column(i, lane);
      const float a = red[q], b = red[kCols + q], c = red[2 * kCols + q], d = red[3 * kCols + q];
      x[i] = kMax ? fmaxf(fmaxf(a, b), fmaxf(c, d)) : (a + b) + (c + d);
    }
  }

  // The new max of each of this thread's columns over its running max and the tile s.
  template <class Sync>
  CUATTN_DEVICE void tile_max(const float (&s)[kNT][4], float* red, int warp, int lane, Sync sync,
                              float (&mx)[kQ]) const {
#pragma unroll
    for (int i = 0; i < kQ; ++i) mx[i] = fmaxf(s[i / 2][i % 2], s[i / 2][i % 2 + 2]);
    reduce<true>(mx, red, warp, lane, sync);
#pragma unroll
    for (int i = 0; i < kQ; ++i) mx[i] = fmaxf(mx[i], col_max[i]);
  }

  // s turned into p against the new maxima mx (exp2(s * sl2 - mx * sl2)), the state updated;
  // alpha: the factor each column of the output accumulator is to be multiplied by.
  CUATTN_DEVICE void update_to(float (&s)[kNT][4], float sl2, const float (&mx)[kQ], float (&alpha)[kQ]) {
#pragma unroll
    for (int i = 0; i < kQ; ++i) {
      const float base = softmax_base(mx[i], sl2);
      alpha[i] = fast_exp2(col_max[i] * sl2 - base);
      col_max[i] = mx[i];
      float& a = s[i / 2][i % 2];
      float& b = s[i / 2][i % 2 + 2];
      a = fast_exp2(fmaf(a, sl2, -base));
      b = fast_exp2(fmaf(b, sl2, -base));
      col_sum[i] = col_sum[i] * alpha[i] + (a + b);
    }
  }

  // Final normalisation of this thread's columns (the sums reduced over the warpgroup through
  // red and sync, as tile_max): the factor for the output accumulator and the natural-log LSE.
  template <class Sync>
  CUATTN_DEVICE void finalize(float sl2, float* red, int warp, int lane, Sync sync, float (&factor)[kQ],
                              float (&lse)[kQ]) const {
    float l[kQ];
#pragma unroll
    for (int i = 0; i < kQ; ++i) l[i] = col_sum[i];
    reduce<false>(l, red, warp, lane, sync);
#pragma unroll
    for (int i = 0; i < kQ; ++i) softmax_finish(col_max[i], l[i], sl2, false, 0.f, factor[i], lse[i]);
  }
};

// O^T *= alpha per column, for transposed output accumulators o[kM][kNT][4] in the layout of
// KeyMajorSoftmax's scores (column i of the thread: n8 tile i / 2, elements i % 2 and i % 2 + 2);
// skipped when no column of the warp moved its max.
template <int kM, int kNT>
CUATTN_DEVICE void rescale_columns(float (&o)[kM][kNT][4], const float (&alpha)[2 * kNT]) {
  if (!any_rescale(alpha)) return;
#pragma unroll
  for (int m = 0; m < kM; ++m)
#pragma unroll
    for (int nt = 0; nt < kNT; ++nt) {
      o[m][nt][0] *= alpha[2 * nt], o[m][nt][2] *= alpha[2 * nt];
      o[m][nt][1] *= alpha[2 * nt + 1], o[m][nt][3] *= alpha[2 * nt + 1];
    }
}

// O *= alpha per row, for an output accumulator in the same layout as the scores (kM m16 tiles:
// rows g and g + 8 of tile mt take alpha[2 mt] and alpha[2 mt + 1]); skipped when no row of the
// warp moved its max.
template <int kM, int kN>
CUATTN_DEVICE void rescale_output(float (&o)[kM][kN][4], const float (&alpha)[2 * kM]) {
  if (!any_rescale(alpha)) return;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int nt = 0; nt < kN; ++nt) {
      o[mt][nt][0] *= alpha[2 * mt], o[mt][nt][1] *= alpha[2 * mt];
      o[mt][nt][2] *= alpha[2 * mt + 1], o[mt][nt][3] *= alpha[2 * mt + 1];
    }
}

// Softcapping of raw scores: s = cap * tanh(s * cap_in), where cap_in folds the softmax scale
// (cap_in = scale / cap); the softmax then needs only log2(e) as its exp2 factor.
template <int kM, int kN>
CUATTN_DEVICE void softcap_scores(float (&s)[kM][kN][4], float cap, float cap_in) {
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int nt = 0; nt < kN; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][nt][e] = cap * tanhf(s[mt][nt][e] * cap_in);
}

// The split-KV combine, shared by merge_states and the decode kernels. Partial results over
// disjoint key sets, each normalised with its own natural-log LSE (-inf = no visible key), merge
// as out = sum_i w_i o_i / sum_i w_i with w_i = exp(lse_i - max_lse); the merged LSE is
// max_lse + log(sum_i w_i). Empty parts get weight 0 (their outputs are never read).
CUATTN_DEVICE float combine_weight(float lse_i, float max_lse) {
  return lse_i == -CUDART_INF_F ? 0.f : exp2f((lse_i - max_lse) * kLog2e);
}
CUATTN_DEVICE float combined_lse(float max_lse, float weight_sum) {
  return max_lse == -CUDART_INF_F ? -CUDART_INF_F : max_lse + __logf(weight_sum);
}

// The split combine of one query row by one warp, shared by the decode kernels: n partial rows
// (each normalised, with its LSE), lane l owning columns [l kPer, l kPer + kPer). lse(i) and
// row(i) give split i's LSE and partial row in global memory, written earlier in this grid (by
// other CTAs, after a fence) or by an earlier kernel, so both are read through L2 (__ldcg). w is
// this warp's scratch of n floats in shared memory. The first kPre rows are requested before the
// weights are formed, so that the two L2 round trips overlap; the rest stream. Columns at or past
// `cols` (a multiple of 2) are neither read nor summed. With kBatch > 0 the rest are requested
// kBatch rows at a time, all in flight before any is summed (for merges of many splits, whose
// one-by-one stream waits out an L2 round trip every few rows). acc gets the merged row, divided
// by the weight sum; returns the merged LSE. An empty split (LSE -inf) weighs 0 and its row,
// perhaps never written in this launch, is selected away, never multiplied. Summed in split
// order: the same inputs give the same bits.
template <int kPer, int kPre, int kBatch = 0, class Lse, class Row>
CUATTN_DEVICE float combine_splits(int n, const Lse& lse, const Row& row, float* w, int lane, int cols,
                                   float (&acc)[kPer]) {
  static_assert(kPer % 2 == 0, "columns are read in pairs");
  const int c0 = lane * kPer;
  auto part = [&](int sp, int c) {  // columns c0 + 2c, + 1 of split sp (0 past `cols`)
    return c0 + 2 * c < cols ? __ldcg(reinterpret_cast<const float2*>(row(sp) + c0) + c) : make_float2(0.f, 0.f);
  };
  float2 pre[kPre][kPer / 2];
#pragma unroll
  for (int i = 0; i < kPre; ++i)
#pragma unroll
    for (int c = 0; c < kPer / 2; ++c) pre[i][c] = i < n ? part(i, c) : make_float2(0.f, 0.f);
  float m = -CUDART_INF_F;
  for (int sp = lane; sp < n; sp += 32) {
    w[sp] = lse(sp);
    m = fmaxf(m, w[sp]);
  }
  m = warp_max(m);
  float sum = 0.f;
  for (int sp = lane; sp < n; sp += 32) {
    w[sp] = combine_weight(w[sp], m);
    sum += w[sp];
  }
  sum = warp_sum(sum);
  __syncwarp();
#pragma unroll
  for (int c = 0; c < kPer; ++c) acc[c] = 0.f;
  auto add = [&](float wt, float2 x, int c) {
    acc[2 * c] += wt != 0.f ? wt * x.x : 0.f;
    acc[2 * c + 1] += wt != 0.f ? wt * x.y : 0.f;
  };
#pragma unroll
  for (int i = 0; i < kPre; ++i) {
    const float wt = i < n ? w[i] : 0.f;
#pragma unroll
    for (int c = 0; c < kPer / 2; ++c) add(wt, pre[i][c], c);
  }
  if constexpr (kBatch > 0) {
    for (int sp0 = kPre; sp0 < n; sp0 += kBatch) {
      float2 x[kBatch][kPer / 2];
#pragma unroll
      for (int i = 0; i < kBatch; ++i)
#pragma unroll
        for (int c = 0; c < kPer / 2; ++c) x[i][c] = sp0 + i < n ? part(sp0 + i, c) : make_float2(0.f, 0.f);
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        const float wt = sp0 + i < n ? w[sp0 + i] : 0.f;
#pragma unroll
        for (int c = 0; c < kPer / 2; ++c) add(wt, x[i][c], c);
      }
    }
  } else {
#pragma unroll 16
    for (int sp = kPre; sp < n; ++sp) {
      const float wt = w[sp];
#pragma unroll
      for (int c = 0; c < kPer / 2; ++c) add(wt, part(sp, c), c);
    }
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
  for (int c = 0; c < kPer; ++c) acc[c] *= inv;
  __syncwarp();  // every lane is done with w before the caller reuses it
  return combined_lse(m, sum);
}

}  // namespace cuattn
