// cpu/attend.cpp — the blocked attention core of the CPU backend (see attend.h).
//
// For a tile of query rows the loop over key tiles is
//   skip the tile if the mask hides all of it (causal, window, block mask),
//   convert K (transposed) and V of the tile into float32 scratch,
//   S = Q K^T on the micro-kernel, scale, softcap, mask (partial tiles only),
//   online softmax: new row max, P = exp(S - max), rescale the row's O and sum,
//   O += P V on the same micro-kernel,
// and at the end O / sum (with the sink in the denominator) and lse = max + log(sum).
// Scores, P and O are float32; the softmax sums are float64.
//
// Finite inputs never give NaN: a score row that overflowed float32 (|q.k| * scale > 3.4e38,
// or inf - inf inside the dot product) is recomputed in float64 and rounded to +inf or clamped to
// the lowest float; a row whose max is +inf puts its whole weight on its +inf scores (lse +inf).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backend.h"
#include "cpu/attend.h"

// The hot loops are compiled for AVX-512 and AVX2 (+FMA) as well as the baseline, and the best
// one the running CPU has is picked at load time (GCC function multi-versioning).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CUATTN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CUATTN_CPU_CLONES
#endif

namespace cuattn {
namespace cpu {
namespace detail {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();
constexpr float kLowest = std::numeric_limits<float>::lowest();

// Register block of the micro-kernel: kMR rows x kNR columns of C live in registers, one
// 16-float vector a row (with AVX-512 one zmm register, with AVX2 two ymm, else four xmm; the
// compiler splits the vector type). A step loads one row of B and broadcasts kMR values of A.
constexpr int kMR = 6, kNR = 16;
typedef float Vec __attribute__((vector_size(kNR * sizeof(float))));
// (Vectors pass between inline functions of this file only, so GCC's note that their calling
// convention depends on the target does not apply.)
#pragma GCC diagnostic ignored "-Wpsabi"

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// C[kMR x kNR] (+)= A[kMR x k] . B[k x kNR]; row-major with leading dimensions lda, ldb, ldc.
inline __attribute__((always_inline)) void micro_kernel(int64_t k, const float* a, int64_t lda,
                                                        const float* b, int64_t ldb, float* c,
                                                        int64_t ldc, bool accumulate) {
  Vec acc[kMR] = {};
  if (accumulate)
    for (int i = 0; i < kMR; ++i) std::memcpy(&acc[i], c + i * ldc, sizeof(Vec));
  for (int64_t p = 0; p < k; ++p) {
    Vec br;
    std::memcpy(&br, b + p * ldb, sizeof br);
    for (int i = 0; i < kMR; ++i) acc[i] += a[i * lda + p] * br;
  }
  for (int i = 0; i < kMR; ++i) std::memcpy(c + i * ldc, &acc[i], sizeof(Vec));
}

// C[m x n] (+)= A[m x k] . B[k x n], m a multiple of kMR and n of kNR (the callers pad).
CUATTN_CPU_CLONES void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                            const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; i += kMR)
    for (int64_t j = 0; j < n; j += kNR)
      micro_kernel(k, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc, accumulate);
}

// The row passes below run over whole vectors: a score row holds np floats, np a multiple of kNR.
typedef int32_t IVec __attribute__((vector_size(kNR * sizeof(int32_t))));

inline __attribute__((always_inline)) Vec load_vec(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// exp(x) for x <= 0 (-inf included), within 2 ulp: x = n ln2 + r, |r| <= ln2 / 2, a degree-6
// polynomial for exp(r) (Cephes' expf), times 2^n built in the exponent bits.
inline __attribute__((always_inline)) Vec exp_nonpositive(Vec x) {
  const Vec zero = {}, xc = x < -87.0f ? zero - 87.0f : x;
  const Vec n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const Vec r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  Vec y = zero + 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  Vec two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return x < -87.0f ? zero : y * two_n;
}

float hmax(Vec v) {
  float m = v[0];
  for (int j = 1; j < kNR; ++j) m = std::max(m, v[j]);
  return m;
}

// s *= scale over a row; false if a score is inf or NaN (an overflow to recompute).
CUATTN_CPU_CLONES bool scale_row(float* s, int64_t np, float scale) {
  IVec bad = {};
  for (int64_t t = 0; t < np; t += kNR) {
    const Vec x = load_vec(s + t) * scale;
    std::memcpy(s + t, &x, sizeof x);
    const Vec y = x * 0.0f;  // NaN where x is inf or NaN
    bad |= y != y;
  }
  for (int j = 0; j < kNR; ++j)
    if (bad[j]) return false;
  return true;
}

// s = cap * tanh(s / cap) over a row of finite scores. tanh(a) = (1 - e) / (1 + e) with
// e = exp(-2a) for a = |x| >= 1/64, where the cancellation in 1 - e costs under 1e-5 of the
// result; below, the series a - a^3/3 + 2a^5/15 (next term under 1e-14 relative).
CUATTN_CPU_CLONES void softcap_row(float* s, int64_t np, float cap) {
  for (int64_t t = 0; t < np; t += kNR) {
    const Vec x = load_vec(s + t) / cap, zero = {};
    const Vec a = x < 0.0f ? -x : x, a2 = a * a;
    const Vec e = exp_nonpositive(-2.0f * a);
    const Vec big = (1.0f - e) / (1.0f + e), small = a * (1.0f + a2 * (-1.0f / 3 + a2 * (2.0f / 15)));
    const Vec th = a < 1.0f / 64 ? small : big;
    const Vec y = (x < zero ? -th : th) * cap;
    std::memcpy(s + t, &y, sizeof y);
  }
}

CUATTN_CPU_CLONES float row_max(const float* s, int64_t np) {
  Vec m = load_vec(s);
  for (int64_t t = kNR; t < np; t += kNR) {
    const Vec x = load_vec(s + t);
    m = x > m ? x : m;
  }
  return hmax(m);
}

// P = exp(s - m) over a row, and its sum; s = -inf gives 0. m is finite.
CUATTN_CPU_CLONES float exp_row(float* s, int64_t np, float m) {
  Vec sum = {};
  for (int64_t t = 0; t < np; t += kNR) {
    const Vec p = exp_nonpositive(load_vec(s + t) - m);
    std::memcpy(s + t, &p, sizeof p);
    sum += p;
  }
  float total = 0.f;
  for (int j = 0; j < kNR; ++j) total += sum[j];
  return total;
}

// Keys lo .. hi are visible from row i under mask_visible (params.h): the same rule solved for j,
// clipped to [0, lk - 1] (hi < lo: none).
void key_range(const HeadProblem& p, int64_t i, int64_t& lo, int64_t& hi) {
  const int64_t diag = i + p.offset;
  lo = 0;
  hi = p.lk - 1;
  if (p.causal) hi = std::min(hi, diag);
  if (p.window_right >= 0) hi = std::min(hi, diag + p.window_right);
  if (p.window_left >= 0) lo = std::max(lo, diag - p.window_left);
}

constexpr int32_t kEmpty = -1, kFull = -2;

bool block_visible(const BlockTable& t, int64_t i, int64_t j) {
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

enum class TileKind { empty, full, partial };

// What the mask leaves of rows [i0, i1) x keys [j0, j1). The row ranges of key_range only move
// right as i grows, so the first and last rows bound the whole tile.
TileKind classify(const HeadProblem& p, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  int64_t lo_first, hi_first, lo_last, hi_last;
  key_range(p, i0, lo_first, hi_first);
  key_range(p, i1 - 1, lo_last, hi_last);
  if (hi_last < j0 || lo_first >= j1) return TileKind::empty;
  bool full = lo_last <= j0 && hi_first >= j1 - 1;
  if (p.blocks) {
    const BlockMaskParams& bm = *p.blocks->bm;
    bool any = false, all = true;
    for (int64_t qb = i0 / bm.block_q; qb <= (i1 - 1) / bm.block_q; ++qb)
      for (int64_t kb = j0 / bm.block_kv; kb <= (j1 - 1) / bm.block_kv; ++kb) {
        const int32_t st = qb < bm.n_qb && kb < bm.n_kb ? p.blocks->state[qb * bm.n_kb + kb] : kEmpty;
        any |= st != kEmpty;
        all &= st == kFull;
      }
    if (!any) return TileKind::empty;
    full &= all;
  }
  return full ? TileKind::full : TileKind::partial;
}

// Per-thread scratch of one query tile, all float32, padded to the micro-kernel's multiples
// (the padding is zero, so padded rows and columns compute harmless zeros).
struct Scratch {
  int64_t mp = 0, np = 0, dvp = 0;  // padded rows, keys of a tile, value columns
  std::vector<float> q;    // [mp, d]
  std::vector<float> kt;   // [d, np]   (K transposed)
  std::vector<float> v;    // [np, dvp]
  std::vector<float> s;    // [mp, np]  scores, then P
  std::vector<float> o;    // [mp, dvp]
  std::vector<float> row;  // [max(d, dv)] one converted row
  std::vector<float> m;    // [mp] running row max
  std::vector<double> l;   // [mp] running row sum
};

// Scores of row r (query row qr) recomputed in float64: the float32 dot product overflowed.
void rescore_row(const HeadProblem& p, const Scratch& w, const float* qr, int64_t n, float* s) {
  for (int64_t t = 0; t < n; ++t) {
    double dot = 0.0;
    for (int x = 0; x < p.d; ++x) dot += double(qr[x]) * double(w.kt[x * w.np + t]);
    double sc = double(p.scale) * dot;
    if (p.softcap > 0.f) sc = double(p.softcap) * std::tanh(sc / double(p.softcap));
    // Above the float range: +inf (it dominates the row); below: the lowest float, so a row of
    // hugely negative scores still averages its values instead of looking empty.
    s[t] = sc > double(std::numeric_limits<float>::max()) ? kPosInf : float(std::max(sc, double(kLowest)));
  }
}

// Softmax step of one row over a tile's scores s[0, np) (masked = -inf): updates max and sum,
// rescales the row's O, leaves P in s.
void softmax_row(float* s, int64_t np, float& m, double& l, float* o, int64_t dvp) {
  const float tile_max = row_max(s, np);
  if (tile_max == kNegInf) {  // nothing visible in this tile
    std::fill(s, s + np, 0.f);
    return;
  }
  const float m_new = std::max(m, tile_max);
  float alpha, sum;
  if (m_new == kPosInf) {  // overflowed scores: all the weight on the +inf ones
    sum = 0.f;
    for (int64_t t = 0; t < np; ++t) sum += s[t] = s[t] == kPosInf ? 1.f : 0.f;
    alpha = m == kPosInf ? 1.f : 0.f;
  } else {
    sum = exp_row(s, np, m_new);
    alpha = std::exp(m - m_new);
  }
  if (alpha != 1.f)
    for (int64_t x = 0; x < dvp; ++x) o[x] *= alpha;
  l = l * alpha + sum;
  m = m_new;
}

// Keys [j0, j0 + n) of the tile into w.kt (transposed, columns n .. np zero) and w.v. The rows
// are strided (other heads lie between them), so the ones a few keys ahead are prefetched.
void load_kv_tile(const HeadProblem& p, int64_t j0, int64_t n, int64_t np, Scratch& w) {
  constexpr int64_t kAhead = 8;
  const int k_size = dtype_size(p.k.dtype), v_size = dtype_size(p.v.dtype);
  for (int64_t t = 0; t < n; ++t) {
    if (t + kAhead < n) {
      const char* kr = static_cast<const char*>(p.k.base) + p.k.index(j0 + t + kAhead) * k_size;
      const char* vr = static_cast<const char*>(p.v.base) + p.v.index(j0 + t + kAhead) * v_size;
      for (int64_t b = 0; b < int64_t(p.d) * k_size; b += 64) __builtin_prefetch(kr + b);
      for (int64_t b = 0; b < int64_t(p.dv) * v_size; b += 64) __builtin_prefetch(vr + b);
    }
    load_row(p.k.base, p.k.dtype, p.k.index(j0 + t), p.d, p.k.scale, w.row.data());
    for (int x = 0; x < p.d; ++x) w.kt[x * w.np + t] = w.row[x];
    load_row(p.v.base, p.v.dtype, p.v.index(j0 + t), p.dv, p.v.scale, w.v.data() + t * w.dvp);
  }
  for (int64_t t = n; t < np; ++t)  // a short last tile: stale keys in the padding
    for (int x = 0; x < p.d; ++x) w.kt[x * w.np + t] = 0.f;
}

}  // namespace

void attend_rows(const HeadProblem& p, int64_t i0, int64_t m, int64_t key_tile) {
  const int d = p.d, dv = p.dv;
  const int64_t i1 = i0 + m;
  Scratch w;
  w.mp = round_up(m, kMR);
  w.np = round_up(std::max<int64_t>(1, std::min(key_tile, p.lk)), kNR);
  w.dvp = round_up(dv, kNR);
  w.q.assign(size_t(w.mp * d), 0.f);
  w.kt.assign(size_t(d * w.np), 0.f);
  w.v.assign(size_t(w.np * w.dvp), 0.f);
  w.s.assign(size_t(w.mp * w.np), 0.f);
  w.o.assign(size_t(w.mp * w.dvp), 0.f);
  w.row.assign(size_t(std::max(d, dv)), 0.f);
  w.m.assign(size_t(w.mp), kNegInf);
  w.l.assign(size_t(w.mp), 0.0);
  // Packed row i is query position i / group of head i % group.
  const int64_t pos0 = i0 / p.group, pos1 = (i1 - 1) / p.group + 1;
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = i0 + r, idx = p.q.index(i / p.group) + (i % p.group) * p.q_head_stride;
    load_row(p.q.base, p.q.dtype, idx, d, p.q.scale, w.q.data() + r * d);
  }

  // The keys any row of the tile can see.
  int64_t lo, hi, unused;
  key_range(p, pos0, lo, unused);
  key_range(p, pos1 - 1, unused, hi);
  for (int64_t j0 = lo; j0 <= hi; j0 += key_tile) {
    const int64_t n = std::min(key_tile, hi + 1 - j0), j1 = j0 + n;
    const TileKind kind = classify(p, pos0, pos1, j0, j1);
    if (kind == TileKind::empty) continue;
    const int64_t np = round_up(n, kNR);
    load_kv_tile(p, j0, n, np, w);
    gemm(w.mp, np, d, w.q.data(), d, w.kt.data(), w.np, w.s.data(), w.np, false);
    for (int64_t r = 0; r < m; ++r) {
      const int64_t i = (i0 + r) / p.group;  // the query position
      float* s = w.s.data() + r * w.np;
      if (!scale_row(s, np, p.scale)) {
        rescore_row(p, w, w.q.data() + r * d, n, s);
      } else if (p.softcap > 0.f) {
        softcap_row(s, np, p.softcap);
      }
      if (kind == TileKind::partial) {
        int64_t rlo, rhi;
        key_range(p, i, rlo, rhi);
        for (int64_t t = 0; t < n; ++t) {
          const int64_t j = j0 + t;
          if (j < rlo || j > rhi || (p.blocks && !block_visible(*p.blocks, i, j))) s[t] = kNegInf;
        }
      }
      std::fill(s + n, s + np, kNegInf);  // the padding of a short tile
      softmax_row(s, np, w.m[r], w.l[r], w.o.data() + r * w.dvp, w.dvp);
    }
    gemm(w.mp, w.dvp, n, w.s.data(), w.np, w.v.data(), w.dvp, w.o.data(), w.dvp, true);
  }

  // out = O / sum, the sink adding exp(sink - max) to the sum only. An empty row (no visible key)
  // gives out = 0 and lse = -inf, whatever the sink.
  for (int64_t r = 0; r < m; ++r) {
    const int64_t i = (i0 + r) / p.group, g = (i0 + r) % p.group;
    const int64_t o_index = p.o_index0 + i * p.o_row_stride + g * p.o_head_stride;
    float* lse = p.lse ? p.lse + g * p.lse_head_stride + i : nullptr;
    const float* orow = w.o.data() + r * w.dvp;
    double mx = w.m[r], den = w.l[r], weight = 1.0;  // O's rows are scaled by exp(-m)
    if (den == 0.0) {
      for (int x = 0; x < dv; ++x) store(p.o, p.o_dtype, o_index + x, 0.f);
      if (lse) *lse = kNegInf;
      continue;
    }
    if (p.sinks && mx != double(kPosInf)) {
      const double sink = p.sinks[g * p.sinks_stride];
      if (sink > mx) {
        weight = std::exp(mx - sink);
        mx = sink;
        den *= weight;
      }
      den += std::exp(sink - mx);
    }
    const double f = weight / den;
    for (int x = 0; x < dv; ++x) store(p.o, p.o_dtype, o_index + x, float(orow[x] * f));
    if (lse) *lse = float(mx + std::log(den));
  }
}

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

void for_each_query_tile(int64_t batch, int64_t problems, const std::function<int64_t(int64_t)>& rows,
                         const std::function<void(int64_t, int64_t, int64_t, int64_t)>& work) {
  // items_before[b]: work items of the sequences before b (problems x query tiles each).
  std::vector<int64_t> items_before(size_t(batch) + 1, 0);
  std::vector<int64_t> n_rows(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    n_rows[size_t(b)] = std::max<int64_t>(rows(b), 0);
    items_before[size_t(b) + 1] =
        items_before[size_t(b)] + (n_rows[size_t(b)] + kQueryTile - 1) / kQueryTile * problems;
  }
  parallel_for(items_before.back(), [&](int64_t item) {
    const int64_t b = std::upper_bound(items_before.begin(), items_before.end(), item) -
                      items_before.begin() - 1;
    const int64_t n = n_rows[size_t(b)], tiles = (n + kQueryTile - 1) / kQueryTile;
    const int64_t local = item - items_before[size_t(b)];
    const int64_t i0 = (tiles - 1 - local % tiles) * kQueryTile;
    work(b, local / tiles, i0, std::min(kQueryTile, n - i0));
  });
}

}  // namespace detail
}  // namespace cpu
}  // namespace cuattn
