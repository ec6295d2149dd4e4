// test_cpu_backend.cpp — unit tests of the CPU backend (cuattn::cpu), standalone (no gtest).
//
// Every attention case is checked against a reference written here: plain double loops over a
// dense [len_q, len_k] boolean mask that the test materialises from the definitions in
// docs/conventions.md (causal, window, block-mask predicate), reading the inputs with the test's own
// decoders of f16 / bf16 / fp8. Outputs are poisoned with NaN before every call; NaN is never
// accepted; empty rows must give exactly 0 and lse = -inf. Prints one line per case and a
// summary; exits non-zero on any failure.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "backend.h"
#include "scheduler.h"

using namespace cuattn;

// ---- tiny harness -----------------------------------------------------------------------------

static int g_case_failures = 0;
static std::string g_note;  // printed after the case name (errors measured)

template <class... A>
static std::string cat(const A&... a) {
  std::ostringstream s;
  s.precision(9);
  (s << ... << a);
  return s.str();
}

static void fail(int line, const char* expr, const std::string& msg) {
  if (g_case_failures < 6) std::printf("    check failed (line %d): %s  %s\n", line, expr, msg.c_str());
  ++g_case_failures;
}

// The message is only built when the check fails.
#define CHECK(cond, msg)                        \
  do {                                          \
    if (!(cond)) fail(__LINE__, #cond, (msg));  \
  } while (0)

struct Summary {
  int passed = 0;
  std::vector<std::string> failed;
} g_summary;

static void run_case(const std::string& name, const std::function<void()>& fn) {
  g_case_failures = 0;
  g_note.clear();
  const auto t0 = std::chrono::steady_clock::now();
  try {
    fn();
  } catch (const std::exception& e) {
    fail(0, "no exception", cat("threw: ", e.what()));
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const bool ok = g_case_failures == 0;
  std::printf("%s  %-64s %s [%.0f ms]\n", ok ? "PASS" : "FAIL", name.c_str(), g_note.c_str(), ms);
  if (ok)
    ++g_summary.passed;
  else
    g_summary.failed.push_back(name);
}

// ---- the test's own decoders (independent of the backend) -----------------------------------

static const double kInf = std::numeric_limits<double>::infinity();
static const double kNaN = std::numeric_limits<double>::quiet_NaN();
static const double kLog2e = 1.4426950408889634;

static double ref_f16(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? kNaN : kInf) : std::ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

static double ref_bf16(uint16_t h) {
  const int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
  double v = e == 0 ? std::ldexp(m, -133) : e == 255 ? (m ? kNaN : kInf) : std::ldexp(128 + m, e - 134);
  return s ? -v : v;
}

static double ref_fp8(uint8_t c) {
  const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
  if (e == 15 && m == 7) return kNaN;
  double v = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return s ? -v : v;
}

static int esize(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: case DType::bf16: return 2;
    case DType::fp8_e4m3: return 1;
    default: return 8;
  }
}

// A typed byte buffer. Values are written with the backend's encoder (tested on its own below)
// and read back with the test's decoders.
struct Buf {
  DType dt = DType::f32;
  std::vector<unsigned char> bytes;
  Buf() = default;
  Buf(DType t, int64_t n) : dt(t), bytes(static_cast<size_t>(std::max<int64_t>(n, 0) * esize(t))) {}
  int64_t size() const { return static_cast<int64_t>(bytes.size()) / esize(dt); }
  void* data() { return bytes.data(); }
  const void* data() const { return bytes.data(); }
  unsigned char* at_bytes(int64_t i) { return bytes.data() + i * esize(dt); }
  double get(int64_t i) const {
    const unsigned char* p = bytes.data() + i * esize(dt);
    switch (dt) {
      case DType::f32: { float f; std::memcpy(&f, p, 4); return f; }
      case DType::f16: { uint16_t h; std::memcpy(&h, p, 2); return ref_f16(h); }
      case DType::bf16: { uint16_t h; std::memcpy(&h, p, 2); return ref_bf16(h); }
      case DType::fp8_e4m3: return ref_fp8(*p);
      default: return kNaN;
    }
  }
  void set(int64_t i, double x) { cpu::store(bytes.data(), dt, i, static_cast<float>(x)); }
  // GCC 12 at -O3 misreads the element size here ("writing 2 bytes into a region of size 1").
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
  void poison_one(int64_t i) {
    unsigned char* p = at_bytes(i);
    switch (dt) {
      case DType::f32: { const uint32_t u = 0x7FC00000u; std::memcpy(p, &u, 4); break; }
      case DType::f16: { const uint16_t u = 0x7E00u; std::memcpy(p, &u, 2); break; }
      case DType::bf16: { const uint16_t u = 0x7FC0u; std::memcpy(p, &u, 2); break; }
      default: *p = 0x7F; break;
    }
  }
#pragma GCC diagnostic pop

  void poison() {
    for (int64_t i = 0; i < size(); ++i) poison_one(i);
  }
  bool is_poison(int64_t i) const {
    Buf tmp(dt, 1);
    tmp.poison_one(0);
    return std::memcmp(bytes.data() + i * esize(dt), tmp.bytes.data(), esize(dt)) == 0;
  }
};

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  double uni(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(g); }
  int64_t randint(int64_t lo, int64_t hi) {  // inclusive
    return std::uniform_int_distribution<int64_t>(lo, hi)(g);
  }
};

static uint64_t seed_of(const std::string& s) { return std::hash<std::string>{}(s) ^ 0x5EEDu; }

// An index array laid out with `stride` elements per entry, `junk` in between: the backend must
// read it with its stride (reading the junk gives wrong lengths, ids or NaN).
template <class T>
static std::vector<T> spread(const std::vector<T>& a, int stride, T junk) {
  std::vector<T> out(a.size() * size_t(stride), junk);
  for (size_t i = 0; i < a.size(); ++i) out[i * size_t(stride)] = a[i];
  return out;
}

// ---- reference attention and comparisons ------------------------------------------------------

// The mask rule of docs/conventions.md, written out again: offset o = len_k - len_q.
static bool ref_visible(int64_t i, int64_t j, int64_t o, bool causal, int left, int right) {
  const int64_t diag = i + o;
  bool vis = true;
  if (causal) vis = vis && j <= diag;
  if (left >= 0) vis = vis && j >= diag - left;
  if (right >= 0) vis = vis && j <= diag + right;
  return vis;
}

// One (sequence, head) in double: q [lq][d], k [lk][d], v [lk][dv], mask [lq][lk].
// out [lq][dv], lse [lq]; rows without a visible key give 0 and -inf.
static void ref_head(const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, int64_t lq, int64_t lk, int d, int dv,
                     const std::vector<char>& mask, double scale, double softcap,
                     const double* sink, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(static_cast<size_t>(lq * dv), 0.0);
  lse.assign(static_cast<size_t>(lq), -kInf);
  std::vector<double> s(static_cast<size_t>(lk));
  for (int64_t i = 0; i < lq; ++i) {
    double m = -kInf;
    bool any = false;
    for (int64_t j = 0; j < lk; ++j) {
      if (!mask[i * lk + j]) continue;
      double acc = 0;
      for (int x = 0; x < d; ++x) acc += q[i * d + x] * k[j * d + x];
      acc *= scale;
      if (softcap > 0) acc = softcap * std::tanh(acc / softcap);
      s[j] = acc;
      m = std::max(m, acc);
      any = true;
    }
    if (!any) continue;
    if (sink) m = std::max(m, *sink);
    double den = sink ? std::exp(*sink - m) : 0.0;
    for (int64_t j = 0; j < lk; ++j) {
      if (!mask[i * lk + j]) continue;
      const double p = std::exp(s[j] - m);
      den += p;
      for (int x = 0; x < dv; ++x) out[i * dv + x] += p * v[j * dv + x];
    }
    for (int x = 0; x < dv; ++x) out[i * dv + x] /= den;
    lse[i] = m + std::log(den);
  }
}

// Relative rounding tolerance of an output dtype (about one unit in the last place).
static double out_tol(DType t) {
  switch (t) {
    case DType::f16: return std::ldexp(1.0, -10);
    case DType::bf16: return std::ldexp(1.0, -7);
    default: return 1e-5;
  }
}

// got vs ref: no NaN/inf, ||got-ref|| <= (rel + floor) ||ref||, and per element
// |got-ref| <= rel |ref| + floor max|ref| + 1e-7.
static void check_close(const std::vector<double>& got, const std::vector<double>& ref, double rel,
                        double floor_frac, const std::string& what) {
  double e2 = 0, r2 = 0, maxref = 0, maxerr = 0;
  for (size_t i = 0; i < ref.size(); ++i) maxref = std::max(maxref, std::fabs(ref[i]));
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(got[i] - ref[i]);
    if (!std::isfinite(got[i]) || !(e <= rel * std::fabs(ref[i]) + floor_frac * maxref + 1e-7)) {
      if (bad == 0)
        CHECK(false, cat(what, ": element ", i, " got ", got[i], " want ", ref[i]));
      ++bad;
    }
    if (std::isfinite(got[i])) maxerr = std::max(maxerr, e);
    e2 += e * e;
    r2 += ref[i] * ref[i];
  }
  CHECK(bad == 0, cat(what, ": ", bad, " of ", ref.size(), " elements out of tolerance"));
  const double nrm = std::sqrt(e2), nref = std::sqrt(r2);
  CHECK(nrm <= (rel + floor_frac) * nref, cat(what, ": ||err||/||ref|| = ", nrm / nref));
  g_note += cat(what, " rel=", nref > 0 ? nrm / nref : nrm, " max=", maxerr, " ");
}

static void check_out(const std::vector<double>& got, const std::vector<double>& ref, DType t,
                      const std::string& what = "out") {
  check_close(got, ref, out_tol(t), 1e-6, what);
}

// lse: exactly -inf where the reference is -inf, else within 1e-5 (1 + |ref|).
static void check_lse(const std::vector<double>& got, const std::vector<double>& ref,
                      const std::string& what = "lse") {
  int64_t bad = 0, empty = 0;
  double maxerr = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    bool ok;
    if (ref[i] == -kInf) {
      ok = got[i] == -kInf;
      ++empty;
    } else {
      const double e = std::fabs(got[i] - ref[i]);
      ok = std::isfinite(got[i]) && e <= 1e-5 * (1 + std::fabs(ref[i]));
      if (std::isfinite(got[i])) maxerr = std::max(maxerr, e);
    }
    if (!ok) {
      if (bad == 0) CHECK(false, cat(what, "[", i, "] got ", got[i], " want ", ref[i]));
      ++bad;
    }
  }
  CHECK(bad == 0, cat(what, ": ", bad, " of ", ref.size(), " wrong"));
  g_note += cat(what, " max=", maxerr, " -inf=", empty, " ");
}

// ---- dense / varlen / block-mask attention ----------------------------------------------------

// Strides of a [b, s, h, d] tensor laid out as bshd or bhsd (varlen: [T, H, D] or [H, T, D]),
// with `pad` unused elements after every head vector.
struct Strides {
  int64_t b = 0, s = 0, h = 0, size = 0;
  int64_t at(int64_t bi, int64_t si, int64_t hi) const { return bi * b + si * s + hi * h; }
};

static Strides make_strides(bool varlen, bool bhsd, int64_t batch, int64_t rows, int64_t heads,
                            int64_t dim, int64_t pad) {
  Strides st;
  const int64_t pitch = dim + pad;
  if (bhsd) {
    st.s = pitch;
    st.h = rows * pitch;
    st.b = varlen ? 0 : heads * rows * pitch;
  } else {
    st.h = pitch;
    st.s = heads * pitch;
    st.b = varlen ? 0 : rows * heads * pitch;
  }
  st.size = (varlen ? 1 : batch) * rows * heads * pitch;
  return st;
}

using MaskPred = std::function<bool(int b, int h, int64_t i, int64_t j)>;

// A BlockMaskParams built by the test from a dense predicate (blocks fully visible -> full,
// none visible -> empty, else partial with per-element bits). Lists are shuffled and padded
// with garbage entries that the backend must ignore. With `full_also_partial`, every full block
// is listed a second time as a partial block whose bits are all 0: full must win.
struct HostBlockMask {
  std::vector<int32_t> kv_num, kv_idx, pids, full_num, full_idx;
  std::vector<uint32_t> bits;
  BlockMaskParams p;
  int n_full = 0, n_partial = 0, n_empty = 0;
};

static HostBlockMask build_block_mask(const MaskPred& pred, int mb, int mh, int64_t sq, int64_t sk,
                                      int bq, int bkv, bool full_also_partial, Rng& rng) {
  HostBlockMask m;
  const int n_qb = static_cast<int>((sq + bq - 1) / bq), n_kb = static_cast<int>((sk + bkv - 1) / bkv);
  const int wpr = (bkv + 31) / 32;
  m.kv_num.assign(mb * mh * n_qb, 0);
  m.full_num.assign(mb * mh * n_qb, 0);
  m.kv_idx.resize(size_t(mb) * mh * n_qb * n_kb);
  m.pids.resize(m.kv_idx.size());
  m.full_idx.resize(m.kv_idx.size());
  int n_partial = 0;
  std::vector<std::pair<int, int>> partial;  // (kb, pid)
  std::vector<int> full;
  for (int b = 0; b < mb; ++b)
    for (int h = 0; h < mh; ++h)
      for (int qb = 0; qb < n_qb; ++qb) {
        partial.clear();
        full.clear();
        for (int kb = 0; kb < n_kb; ++kb) {
          int64_t vis = 0, total = 0;
          for (int64_t i = int64_t(qb) * bq; i < std::min<int64_t>(sq, int64_t(qb + 1) * bq); ++i)
            for (int64_t j = int64_t(kb) * bkv; j < std::min<int64_t>(sk, int64_t(kb + 1) * bkv); ++j) {
              ++total;
              vis += pred(b, h, i, j);
            }
          if (vis == total) {
            full.push_back(kb);
            ++m.n_full;
            if (full_also_partial) {
              partial.push_back({kb, n_partial++});
              m.bits.insert(m.bits.end(), size_t(bq) * wpr, 0u);
            }
          } else if (vis == 0) {
            ++m.n_empty;
          } else {
            const int pid = n_partial++;
            partial.push_back({kb, pid});
            ++m.n_partial;
            for (int r = 0; r < bq; ++r) {
              std::vector<uint32_t> words(wpr, 0u);
              for (int jj = 0; jj < bkv; ++jj) {
                const int64_t i = int64_t(qb) * bq + r, j = int64_t(kb) * bkv + jj;
                if (i < sq && j < sk && pred(b, h, i, j)) words[jj / 32] |= 1u << (jj % 32);
              }
              m.bits.insert(m.bits.end(), words.begin(), words.end());
            }
          }
        }
        std::shuffle(partial.begin(), partial.end(), rng.g);
        std::shuffle(full.begin(), full.end(), rng.g);
        const size_t row = (size_t(b) * mh + h) * n_qb + qb;
        m.kv_num[row] = static_cast<int32_t>(partial.size());
        m.full_num[row] = static_cast<int32_t>(full.size());
        for (int n = 0; n < n_kb; ++n) {
          const size_t at = row * n_kb + n;
          const bool used_p = n < static_cast<int>(partial.size());
          m.kv_idx[at] = used_p ? partial[n].first : static_cast<int32_t>(rng.randint(0, n_kb - 1));
          m.pids[at] = used_p ? partial[n].second : static_cast<int32_t>(rng.randint(0, 1 << 20));
          m.full_idx[at] = n < static_cast<int>(full.size()) ? full[n]
                                                             : static_cast<int32_t>(rng.randint(0, n_kb - 1));
        }
      }
  BlockMaskParams& p = m.p;
  p.kv_num_blocks = m.kv_num.data();
  p.kv_indices = m.kv_idx.data();
  p.partial_ids = m.pids.data();
  p.full_kv_num_blocks = m.full_num.data();
  p.full_kv_indices = m.full_idx.data();
  if (m.bits.empty()) m.bits.push_back(0u);  // keep the pointer valid
  p.partial_bits = m.bits.data();
  p.num_stride_b = mb > 1 ? int64_t(mh) * n_qb : 0;
  p.num_stride_h = mh > 1 ? n_qb : 0;
  p.idx_stride_b = mb > 1 ? int64_t(mh) * n_qb * n_kb : 0;
  p.idx_stride_h = mh > 1 ? int64_t(n_qb) * n_kb : 0;
  p.block_q = bq;
  p.block_kv = bkv;
  p.words_per_row = wpr;
  p.n_qb = n_qb;
  p.n_kb = n_kb;
  p.n_partial = n_partial;
  return m;
}

struct AttnCase {
  DType dt = DType::f32;
  bool bhsd = false;  // [B, H, S, D] strides (varlen: [H, T, D])
  int pad = 0;        // unused elements after each head vector
  int B = 1, Hq = 1, Hkv = 1, d = 16, dv = 16;
  std::vector<int> lq, lk;  // per sequence (dense: all equal)
  bool varlen = false;
  bool causal = false;
  int wl = -1, wr = -1;
  double scale = 0;  // 0: 1/sqrt(d)
  double softcap = 0;
  bool sinks = false;
  bool lse = true;
  bool naive = false;  // call naive_attention, and compare it with attention too
  MaskPred block_pred;  // non-null: a block mask built from this predicate
  int block_q = 16, block_kv = 32;
  bool bm_per_batch = true, bm_per_head = true;
  bool bm_full_also_partial = false;
  bool expect_empty = false;  // the case is meant to contain empty rows
  int index_stride = 1;       // stride of cu_seqlens and sinks
};

static void run_attention_case(const std::string& name, const AttnCase& c) {
  Rng rng(seed_of(name));
  const int B = c.B;
  std::vector<int32_t> cuq(B + 1, 0), cuk(B + 1, 0);
  for (int b = 0; b < B; ++b) {
    cuq[b + 1] = cuq[b] + c.lq[b];
    cuk[b + 1] = cuk[b] + c.lk[b];
  }
  // Dense: rows per batch; varlen: total rows.
  const int64_t rows_q = c.varlen ? cuq[B] : c.lq[0], rows_k = c.varlen ? cuk[B] : c.lk[0];
  const Strides sq = make_strides(c.varlen, c.bhsd, B, rows_q, c.Hq, c.d, c.pad);
  const Strides sk = make_strides(c.varlen, c.bhsd, B, rows_k, c.Hkv, c.d, c.pad);
  const Strides sv = make_strides(c.varlen, c.bhsd, B, rows_k, c.Hkv, c.dv, c.pad);
  const Strides so = make_strides(c.varlen, c.bhsd, B, rows_q, c.Hq, c.dv, c.pad);

  // Inputs: random values; the padding holds NaN, so reading it would show in the output.
  Buf q(c.dt, sq.size), k(c.dt, sk.size), v(c.dt, sv.size), o(c.dt, so.size);
  q.poison();
  k.poison();
  v.poison();
  o.poison();
  auto fill = [&](Buf& buf, const Strides& st, int heads, int dim, int64_t rows) {
    for (int b = 0; b < (c.varlen ? 1 : B); ++b)
      for (int64_t r = 0; r < rows; ++r)
        for (int h = 0; h < heads; ++h)
          for (int x = 0; x < dim; ++x) buf.set(st.at(b, r, h) + x, rng.uni(-1, 1));
  };
  fill(q, sq, c.Hq, c.d, rows_q);
  fill(k, sk, c.Hkv, c.d, rows_k);
  fill(v, sv, c.Hkv, c.dv, rows_k);
  std::vector<float> sinks(c.Hq);
  for (auto& s : sinks) s = static_cast<float>(rng.uni(-1, 2));
  const int64_t lse_n = c.varlen ? int64_t(c.Hq) * rows_q : int64_t(B) * c.Hq * rows_q;
  std::vector<float> lse(static_cast<size_t>(lse_n) + 1, std::nanf(""));

  const int mb = c.bm_per_batch ? B : 1, mh = c.bm_per_head ? c.Hq : 1;
  HostBlockMask bm;
  if (c.block_pred) {
    bm = build_block_mask(c.block_pred, mb, mh, c.lq[0], c.lk[0], c.block_q, c.block_kv,
                          c.bm_full_also_partial, rng);
    g_note += cat("blocks full/partial/empty=", bm.n_full, "/", bm.n_partial, "/", bm.n_empty, " ");
  }

  AttnParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.o = o.data();
  p.lse = c.lse ? lse.data() : nullptr;
  p.q_batch_stride = sq.b, p.q_row_stride = sq.s, p.q_head_stride = sq.h;
  p.k_batch_stride = sk.b, p.k_row_stride = sk.s, p.k_head_stride = sk.h;
  p.v_batch_stride = sv.b, p.v_row_stride = sv.s, p.v_head_stride = sv.h;
  p.o_batch_stride = so.b, p.o_row_stride = so.s, p.o_head_stride = so.h;
  p.lse_batch_stride = c.varlen ? 0 : int64_t(c.Hq) * rows_q;
  p.lse_head_stride = rows_q;
  const int is = c.index_stride;
  const std::vector<int32_t> cuq_s = spread(cuq, is, int32_t(1 << 30)), cuk_s = spread(cuk, is, int32_t(-7));
  const std::vector<float> sinks_s = spread(sinks, is, std::nanf(""));
  if (c.varlen) {
    p.cu_seqlens_q = cuq_s.data();
    p.cu_seqlens_k = cuk_s.data();
    p.cu_seqlens_q_stride = p.cu_seqlens_k_stride = is;
  }
  p.sinks = c.sinks ? sinks_s.data() : nullptr;
  p.sinks_stride = is;
  if (c.block_pred) p.block_mask = bm.p;
  p.batch = B;
  p.num_heads_q = c.Hq;
  p.num_heads_kv = c.Hkv;
  p.seqlen_q = *std::max_element(c.lq.begin(), c.lq.end());
  p.seqlen_k = *std::max_element(c.lk.begin(), c.lk.end());
  p.head_dim = c.d;
  p.head_dim_v = c.dv;
  p.causal = c.causal;
  p.window_left = c.wl;
  p.window_right = c.wr;
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(c.d));
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * kLog2e);
  p.softcap = static_cast<float>(c.softcap);
  p.dtype = c.dt;

  if (c.naive)
    cpu::naive_attention(p);
  else
    cpu::attention(p);

  // Reference, per (sequence, head), over the dense mask.
  std::vector<double> got, want, got_lse, want_lse;
  std::vector<char> covered(static_cast<size_t>(o.size()), 0);
  int64_t empty_rows = 0;
  for (int b = 0; b < B; ++b) {
    const int64_t lq = c.lq[b], lk = c.lk[b];
    const int64_t q0 = c.varlen ? cuq[b] : 0, k0 = c.varlen ? cuk[b] : 0;
    const int bb = c.varlen ? 0 : b;
    for (int h = 0; h < c.Hq; ++h) {
      const int hk = h / (c.Hq / c.Hkv);
      std::vector<double> qh(lq * c.d), kh(lk * c.d), vh(lk * c.dv);
      for (int64_t i = 0; i < lq; ++i)
        for (int x = 0; x < c.d; ++x) qh[i * c.d + x] = q.get(sq.at(bb, q0 + i, h) + x);
      for (int64_t j = 0; j < lk; ++j) {
        for (int x = 0; x < c.d; ++x) kh[j * c.d + x] = k.get(sk.at(bb, k0 + j, hk) + x);
        for (int x = 0; x < c.dv; ++x) vh[j * c.dv + x] = v.get(sv.at(bb, k0 + j, hk) + x);
      }
      std::vector<char> mask(static_cast<size_t>(lq * lk));
      for (int64_t i = 0; i < lq; ++i)
        for (int64_t j = 0; j < lk; ++j) {
          bool vis = ref_visible(i, j, lk - lq, c.causal, c.wl, c.wr);
          if (c.block_pred) vis = vis && c.block_pred(mb > 1 ? b : 0, mh > 1 ? h : 0, i, j);
          mask[i * lk + j] = vis;
        }
      const double sink = sinks[h];
      std::vector<double> ro, rl;
      ref_head(qh, kh, vh, lq, lk, c.d, c.dv, mask, scale, c.softcap, c.sinks ? &sink : nullptr, ro, rl);
      for (int64_t i = 0; i < lq; ++i) {
        const bool empty = rl[i] == -kInf;
        empty_rows += empty;
        for (int x = 0; x < c.dv; ++x) {
          const int64_t at = so.at(bb, q0 + i, h) + x;
          covered[at] = 1;
          got.push_back(o.get(at));
          want.push_back(ro[i * c.dv + x]);
          if (empty) CHECK(o.get(at) == 0.0, cat("empty row b=", b, " h=", h, " i=", i, " not 0"));
        }
        if (c.lse) {
          got_lse.push_back(lse[p.lse_batch_stride * b + p.lse_head_stride * h + q0 + i]);
          want_lse.push_back(rl[i]);
        }
      }
    }
  }
  check_out(got, want, c.dt);
  if (c.lse) check_lse(got_lse, want_lse);
  g_note += cat("empty_rows=", empty_rows);
  if (c.expect_empty) CHECK(empty_rows > 0, "the case was meant to have empty rows");
  for (int64_t i = 0; i < o.size(); ++i)
    if (!covered[i]) {
      CHECK(o.is_poison(i), cat("padding element ", i, " of the output was written"));
      if (!o.is_poison(i)) break;
    }
  CHECK(std::isnan(lse.back()), "wrote past the end of lse");

  if (c.naive) {  // attention must give the same numbers as the naive version
    Buf o2(c.dt, so.size);
    o2.poison();
    std::vector<float> lse2(lse.size(), std::nanf(""));
    AttnParams p2 = p;
    p2.o = o2.data();
    p2.lse = c.lse ? lse2.data() : nullptr;
    cpu::attention(p2);
    double maxdiff = 0;
    for (int64_t i = 0; i < o.size(); ++i)
      if (covered[i]) maxdiff = std::max(maxdiff, std::fabs(o.get(i) - o2.get(i)));
    CHECK(maxdiff <= 1e-6, cat("naive vs attention: max diff ", maxdiff));
    if (c.lse)
      for (int64_t i = 0; i + 1 < static_cast<int64_t>(lse.size()); ++i) {
        const bool same = (std::isnan(lse[i]) && std::isnan(lse2[i])) || lse[i] == lse2[i] ||
                          std::fabs(lse[i] - lse2[i]) <= 1e-6f;
        CHECK(same, cat("naive vs attention lse[", i, "]: ", lse[i], " vs ", lse2[i]));
        if (!same) break;
      }
    g_note += cat(" naive-vs-attention=", maxdiff);
  }
}

static AttnCase dense(DType dt, int B, int Hq, int Hkv, int d, int lq, int lk) {
  AttnCase c;
  c.dt = dt;
  c.B = B;
  c.Hq = Hq;
  c.Hkv = Hkv;
  c.d = c.dv = d;
  c.lq.assign(B, lq);
  c.lk.assign(B, lk);
  return c;
}

// A block-grid pattern that makes full, empty and partial 16x32 blocks, plus per-element noise.
static bool grid_pred(int b, int h, int64_t i, int64_t j) {
  const int64_t cell = (i / 16) * 7 + (j / 32) * 3 + h + 2 * b;
  switch (cell % 4) {
    case 0: return true;
    case 1: return false;
    case 2: return ((i * 131 + j * 71 + h * 17 + b * 5) % 7) < 3;
    default: return j <= i + 20;
  }
}

static void attention_cases() {
  const DType f32 = DType::f32, f16 = DType::f16, bf16 = DType::bf16;
  {
    AttnCase c = dense(f32, 2, 2, 2, 16, 7, 7);
    run_case("attn f32 bshd gqa1 S=7", [&] { run_attention_case("a1", c); });
  }
  {
    AttnCase c = dense(f32, 1, 8, 2, 32, 129, 129);
    c.bhsd = true;
    c.causal = true;
    run_case("attn f32 bhsd gqa4 S=129 causal", [&] { run_attention_case("a2", c); });
  }
  {
    AttnCase c = dense(f16, 2, 8, 1, 64, 1, 129);
    c.causal = true;
    run_case("attn f16 bshd gqa8 Sq=1 Sk=129 causal", [&] { run_attention_case("a3", c); });
  }
  {
    AttnCase c = dense(bf16, 2, 4, 2, 16, 129, 7);
    c.bhsd = true;
    c.pad = 3;
    c.causal = true;
    c.expect_empty = true;
    run_case("attn bf16 bhsd padded Sq=129 > Sk=7 causal (empty rows)",
             [&] { run_attention_case("a4", c); });
  }
  {
    AttnCase c = dense(f32, 2, 4, 4, 24, 7, 129);
    c.pad = 5;
    c.causal = true;
    run_case("attn f32 bshd padded Sq=7 < Sk=129 causal", [&] { run_attention_case("a5", c); });
  }
  {
    AttnCase c = dense(f16, 1, 4, 1, 32, 129, 129);
    c.causal = true;
    c.wl = 16;
    c.wr = 0;
    run_case("attn f16 window (16,0) causal S=129", [&] { run_attention_case("a6", c); });
  }
  {
    AttnCase c = dense(f32, 2, 2, 1, 16, 129, 7);
    c.wl = 3;
    c.wr = 5;
    c.expect_empty = true;
    run_case("attn f32 window (3,5) Sq=129 Sk=7 (window empties rows)",
             [&] { run_attention_case("a7", c); });
  }
  {
    AttnCase c = dense(f32, 1, 2, 2, 8, 7, 7);
    c.wl = 0;
    c.wr = 0;
    c.bhsd = true;
    run_case("attn f32 window (0,0) diagonal only", [&] { run_attention_case("a8", c); });
  }
  {
    AttnCase c = dense(f32, 1, 4, 2, 32, 33, 47);
    c.scale = 1.0;
    c.softcap = 2.5;
    run_case("attn f32 softcap 2.5 scale 1", [&] { run_attention_case("a9", c); });
  }
  {
    AttnCase c = dense(f32, 2, 4, 1, 16, 40, 33);
    c.causal = true;
    c.sinks = true;
    c.expect_empty = true;
    run_case("attn f32 sinks causal Sq>Sk (empty rows keep lse -inf)",
             [&] { run_attention_case("a10", c); });
  }
  {
    AttnCase c = dense(bf16, 1, 8, 2, 64, 65, 129);
    c.bhsd = true;
    c.sinks = true;
    c.softcap = 10;
    c.causal = true;
    c.wl = 31;
    c.wr = 0;
    run_case("attn bf16 bhsd sinks+softcap+window gqa4", [&] { run_attention_case("a11", c); });
  }
  {
    AttnCase c = dense(f32, 2, 3, 1, 20, 19, 23);
    c.dv = 12;
    c.pad = 1;
    run_case("attn f32 head_dim 20 != head_dim_v 12 gqa3", [&] { run_attention_case("a12", c); });
  }
  {
    AttnCase c = dense(f16, 3, 2, 2, 16, 1, 1);
    c.causal = true;
    run_case("attn f16 S=1", [&] { run_attention_case("a13", c); });
  }
  {
    AttnCase c = dense(bf16, 2, 4, 4, 16, 7, 7);
    c.lse = false;
    c.causal = true;
    run_case("attn bf16 without lse", [&] { run_attention_case("a14", c); });
  }
  {
    AttnCase c = dense(f32, 1, 2, 1, 64, 1000, 1000);
    c.causal = true;
    c.wl = 700;
    c.wr = 0;
    run_case("attn f32 gqa2 S=1000 causal window (700,0)", [&] { run_attention_case("a16", c); });
  }
  {
    AttnCase c = dense(f32, 2, 2, 1, 16, 5, 0);
    c.sinks = true;
    c.expect_empty = true;
    run_case("attn f32 Sk=0 (every row empty)", [&] { run_attention_case("a15", c); });
  }
  // Varlen.
  {
    AttnCase c;
    c.varlen = true;
    c.B = 4;
    c.Hq = 4;
    c.Hkv = 2;
    c.d = c.dv = 32;
    c.lq = {7, 0, 129, 1};
    c.lk = {7, 3, 129, 0};
    c.causal = true;
    c.expect_empty = true;
    run_case("varlen f32 [T,H,D] causal, zero-length sequences", [&] { run_attention_case("v1", c); });
  }
  {
    AttnCase c;
    c.varlen = true;
    c.dt = f16;
    c.bhsd = true;
    c.pad = 2;
    c.B = 3;
    c.Hq = 2;
    c.Hkv = 1;
    c.d = c.dv = 16;
    c.lq = {1, 33, 0};
    c.lk = {5, 40, 0};
    c.wl = 4;
    c.wr = 4;
    run_case("varlen f16 [H,T,D] padded window (4,4)", [&] { run_attention_case("v2", c); });
  }
  {
    AttnCase c;
    c.varlen = true;
    c.dt = bf16;
    c.B = 2;
    c.Hq = 8;
    c.Hkv = 1;
    c.d = c.dv = 32;
    c.lq = {17, 64};
    c.lk = {80, 64};
    c.causal = true;
    c.sinks = true;
    run_case("varlen bf16 gqa8 sinks causal", [&] { run_attention_case("v3", c); });
    c.index_stride = 3;
    run_case("varlen bf16 gqa8 sinks causal, cu_seqlens and sinks of stride 3",
             [&] { run_attention_case("v3s", c); });
  }
  // Block masks.
  {
    AttnCase c = dense(f32, 2, 2, 1, 16, 100, 150);
    c.block_pred = grid_pred;
    run_case("blockmask f32 16x32 per (b,h)", [&] { run_attention_case("b1", c); });
    c.bm_full_also_partial = true;
    run_case("blockmask f32 16x32, full blocks also listed as empty partials",
             [&] { run_attention_case("b1b", c); });
  }
  {
    AttnCase c = dense(f16, 2, 4, 2, 16, 129, 129);
    c.block_pred = [](int, int h, int64_t i, int64_t j) { return grid_pred(0, h, i, j); };
    c.block_q = 8;
    c.block_kv = 48;
    c.bm_per_batch = false;
    c.causal = true;
    run_case("blockmask f16 8x48 (2 words/row) batch-broadcast + causal",
             [&] { run_attention_case("b2", c); });
  }
  {
    AttnCase c = dense(bf16, 1, 4, 4, 32, 64, 96);
    c.bhsd = true;
    c.block_pred = [](int, int, int64_t i, int64_t j) { return grid_pred(0, 1, i, j); };
    c.bm_per_batch = c.bm_per_head = false;
    c.wl = 40;
    c.wr = 10;
    c.sinks = true;
    run_case("blockmask bf16 16x32 broadcast b,h + window + sinks",
             [&] { run_attention_case("b3", c); });
  }
  {
    AttnCase c = dense(f32, 2, 2, 2, 16, 70, 100);
    c.block_pred = grid_pred;
    c.block_q = 32;
    c.block_kv = 16;
    c.naive = true;
    run_case("blockmask f32 32x16 via naive_attention", [&] { run_attention_case("b4", c); });
  }
  // Naive == attention == reference.
  {
    AttnCase c = dense(f32, 1, 4, 1, 32, 129, 129);
    c.causal = true;
    c.naive = true;
    run_case("naive f32 bshd gqa4 S=129 causal", [&] { run_attention_case("n1", c); });
  }
  {
    AttnCase c = dense(f16, 2, 2, 2, 16, 7, 129);
    c.bhsd = true;
    c.naive = true;
    run_case("naive f16 bhsd Sq=7 Sk=129", [&] { run_attention_case("n2", c); });
  }
  {
    AttnCase c = dense(bf16, 1, 2, 1, 16, 129, 7);
    c.causal = true;
    c.sinks = true;
    c.softcap = 3;
    c.naive = true;
    c.expect_empty = true;
    run_case("naive bf16 Sq=129 Sk=7 causal sinks softcap", [&] { run_attention_case("n3", c); });
  }
}

// ---- merge_states -----------------------------------------------------------------------------

// Attention over keys [0, split) and [split, Sk) separately, merged, must equal attention over
// all keys (causal, Sq > Sk so that some rows are empty in both halves and some in one).
static void run_merge_case(const std::string& name, DType dt, bool bhsd) {
  Rng rng(seed_of(name));
  const int B = 2, Hq = 4, Hkv = 2, d = 16, Sq = 70, Sk = 65, split = 33;
  const Strides sq = make_strides(false, bhsd, B, Sq, Hq, d, 0);
  const Strides sk = make_strides(false, bhsd, B, Sk, Hkv, d, 0);
  const Strides so = make_strides(false, bhsd, B, Sq, Hq, d, 0);
  Buf q(dt, sq.size), k(dt, sk.size), v(dt, sk.size);
  for (int64_t i = 0; i < q.size(); ++i) q.set(i, rng.uni(-1, 1));
  for (int64_t i = 0; i < k.size(); ++i) k.set(i, rng.uni(-1, 1));
  for (int64_t i = 0; i < v.size(); ++i) v.set(i, rng.uni(-1, 1));
  Buf oa(dt, so.size), ob(dt, so.size), om(dt, so.size);
  oa.poison();
  ob.poison();
  om.poison();
  const int64_t nl = int64_t(B) * Hq * Sq;
  std::vector<float> la(nl, std::nanf("")), lb(nl, std::nanf("")), lm(nl, std::nanf(""));

  AttnParams p;
  p.q = q.data();
  p.q_batch_stride = sq.b, p.q_row_stride = sq.s, p.q_head_stride = sq.h;
  p.k_batch_stride = sk.b, p.k_row_stride = sk.s, p.k_head_stride = sk.h;
  p.v_batch_stride = sk.b, p.v_row_stride = sk.s, p.v_head_stride = sk.h;
  p.o_batch_stride = so.b, p.o_row_stride = so.s, p.o_head_stride = so.h;
  p.lse_batch_stride = int64_t(Hq) * Sq;
  p.lse_head_stride = Sq;
  p.batch = B, p.num_heads_q = Hq, p.num_heads_kv = Hkv, p.seqlen_q = Sq;
  p.head_dim = p.head_dim_v = d;
  p.scale = static_cast<float>(1.0 / std::sqrt(double(d)));
  p.dtype = dt;
  // Part A, keys [0, split): its own offset is split - Sq, so causality w.r.t. the whole
  // sequence (j <= i + Sk - Sq) is a right window of Sk - split.
  AttnParams pa = p;
  pa.k = k.data();
  pa.v = v.data();
  pa.seqlen_k = split;
  pa.window_right = Sk - split;
  pa.o = oa.data();
  pa.lse = la.data();
  cpu::attention(pa);
  // Part B, keys [split, Sk): its offset is Sk - split - Sq, so plain causal is right.
  AttnParams pb = p;
  pb.k = k.at_bytes(split * sk.s);
  pb.v = v.at_bytes(split * sk.s);
  pb.seqlen_k = Sk - split;
  pb.causal = true;
  pb.o = ob.data();
  pb.lse = lb.data();
  cpu::attention(pb);

  MergeParams m;
  m.o_a = oa.data();
  m.o_b = ob.data();
  m.o = om.data();
  m.lse_a = la.data();
  m.lse_b = lb.data();
  m.lse = lm.data();
  for (auto* st : {m.oa_stride, m.ob_stride, m.o_stride}) {
    st[0] = so.b;
    st[1] = so.s;
    st[2] = so.h;
  }
  for (auto* st : {m.la_stride, m.lb_stride, m.l_stride}) {
    st[0] = int64_t(Hq) * Sq;
    st[1] = Sq;
    st[2] = 1;
  }
  m.batch = B, m.seqlen = Sq, m.num_heads = Hq, m.head_dim = d;
  m.dtype = dt;
  cpu::merge_states(m);

  std::vector<double> got, want, gl, wl;
  int64_t both_empty = 0, one_empty = 0;
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h) {
      const int hk = h / (Hq / Hkv);
      std::vector<double> qh(Sq * d), kh(Sk * d), vh(Sk * d);
      for (int i = 0; i < Sq; ++i)
        for (int x = 0; x < d; ++x) qh[i * d + x] = q.get(sq.at(b, i, h) + x);
      for (int j = 0; j < Sk; ++j)
        for (int x = 0; x < d; ++x) {
          kh[j * d + x] = k.get(sk.at(b, j, hk) + x);
          vh[j * d + x] = v.get(sk.at(b, j, hk) + x);
        }
      std::vector<char> mask(Sq * Sk);
      for (int i = 0; i < Sq; ++i)
        for (int j = 0; j < Sk; ++j) mask[i * Sk + j] = ref_visible(i, j, Sk - Sq, true, -1, -1);
      std::vector<double> ro, rl;
      ref_head(qh, kh, vh, Sq, Sk, d, d, mask, 1.0 / std::sqrt(double(d)), 0, nullptr, ro, rl);
      for (int i = 0; i < Sq; ++i) {
        const int64_t li = int64_t(b) * Hq * Sq + int64_t(h) * Sq + i;
        both_empty += la[li] == -INFINITY && lb[li] == -INFINITY;
        one_empty += (la[li] == -INFINITY) != (lb[li] == -INFINITY);
        for (int x = 0; x < d; ++x) {
          got.push_back(om.get(so.at(b, i, h) + x));
          want.push_back(ro[i * d + x]);
        }
        gl.push_back(lm[li]);
        wl.push_back(rl[i]);
      }
    }
  // Merging rounded partial outputs rounds twice: allow one unit of the dtype on the scale of
  // the outputs on top of the usual bound.
  check_close(got, want, out_tol(dt), dt == DType::f32 ? 1e-6 : out_tol(dt), "out");
  check_lse(gl, wl);
  CHECK(both_empty > 0 && one_empty > 0, cat("rows empty in both halves ", both_empty,
                                             ", in one half ", one_empty));
  g_note += cat("both-empty=", both_empty, " one-empty=", one_empty);

  // Without an lse output, the same out.
  Buf om2(dt, so.size);
  om2.poison();
  MergeParams m2 = m;
  m2.o = om2.data();
  m2.lse = nullptr;
  cpu::merge_states(m2);
  CHECK(om2.bytes == om.bytes, "merge without lse gave a different out");
}

// Hand-made lse pairs: both -inf, one -inf, equal, far apart.
static void merge_known_values() {
  const float ninf = -INFINITY;
  const float la[5] = {ninf, ninf, 1.0f, 0.0f, 50.0f};
  const float lb[5] = {ninf, 2.0f, ninf, 0.0f, 0.0f};
  float oa[5 * 2], ob[5 * 2], o[5 * 2], l[5];
  for (int s = 0; s < 5; ++s) {
    oa[2 * s] = 1.0f, oa[2 * s + 1] = -3.0f;
    ob[2 * s] = 5.0f, ob[2 * s + 1] = 2.0f;
    o[2 * s] = o[2 * s + 1] = l[s] = std::nanf("");
  }
  MergeParams m;
  m.o_a = oa, m.o_b = ob, m.o = o, m.lse_a = la, m.lse_b = lb, m.lse = l;
  for (auto* st : {m.oa_stride, m.ob_stride, m.o_stride}) st[0] = 10, st[1] = 2, st[2] = 2;
  for (auto* st : {m.la_stride, m.lb_stride, m.l_stride}) st[0] = 5, st[1] = 5, st[2] = 1;
  m.batch = 1, m.seqlen = 5, m.num_heads = 1, m.head_dim = 2;
  m.dtype = DType::f32;
  cpu::merge_states(m);
  CHECK(o[0] == 0 && o[1] == 0 && l[0] == ninf, cat("both -inf: ", o[0], " ", o[1], " ", l[0]));
  CHECK(o[2] == 5 && o[3] == 2 && l[1] == 2.0f, cat("a empty: ", o[2], " ", o[3], " ", l[1]));
  CHECK(o[4] == 1 && o[5] == -3 && l[2] == 1.0f, cat("b empty: ", o[4], " ", o[5], " ", l[2]));
  CHECK(std::fabs(o[6] - 3) < 1e-6 && std::fabs(o[7] + 0.5) < 1e-6 &&
            std::fabs(l[3] - std::log(2.0)) < 1e-6,
        cat("equal: ", o[6], " ", o[7], " ", l[3]));
  CHECK(std::fabs(o[8] - 1) < 1e-6 && std::fabs(l[4] - 50) < 1e-5, cat("far: ", o[8], " ", l[4]));
}

// ---- paged attention --------------------------------------------------------------------------

struct PagedCase {
  DType qdt = DType::f16, kvdt = DType::f16;
  int Hq = 4, Hkv = 1, d = 32, dv = 32, Sq = 1;
  std::vector<int> lens;
  int page_size = 16;
  bool hnd = false;
  bool combined = false;  // K and V are views of one [N, 2, bs, H, D] buffer
  bool mla = false;       // v_cache == k_cache, V = first dv columns (Hkv = 1)
  bool causal = true;
  int wl = -1, wr = -1;
  double softcap = 0;
  bool sinks = false;
  bool lse = true;
  float k_scale = 1.f, v_scale = 1.f;
  bool scale_ptr = false;  // pass the scales through k/v_scale_ptr (params hold wrong values)
  int index_stride = 1;    // stride of seq_lens and sinks; block-table rows padded by as much
};

// A paged cache layout: element (page, slot, head) at page*page + slot*slot + head*head.
struct CacheLayout {
  int64_t page = 0, slot = 0, head = 0;
  int64_t at(int64_t pg, int64_t sl, int64_t h) const { return pg * page + sl * slot + h * head; }
};

static CacheLayout cache_layout(bool hnd, int ps, int heads, int dim) {
  CacheLayout c;
  if (hnd) {  // [N, H, bs, D]
    c.slot = dim;
    c.head = int64_t(ps) * dim;
  } else {  // [N, bs, H, D]
    c.head = dim;
    c.slot = int64_t(heads) * dim;
  }
  c.page = int64_t(ps) * heads * dim;
  return c;
}

// Random fp8 codes (never NaN) or random values.
static void fill_cache(Buf& buf, Rng& rng) {
  if (buf.dt == DType::fp8_e4m3) {
    for (int64_t i = 0; i < buf.size(); ++i) {
      uint8_t c = static_cast<uint8_t>(rng.randint(0, 255));
      if ((c & 0x7F) == 0x7F) c ^= 1;  // NaN -> the largest finite value
      *buf.at_bytes(i) = c;
    }
  } else {
    for (int64_t i = 0; i < buf.size(); ++i) buf.set(i, rng.uni(-1, 1));
  }
}

static void run_paged_case(const std::string& name, const PagedCase& c) {
  Rng rng(seed_of(name));
  const int B = static_cast<int>(c.lens.size()), ps = c.page_size;
  // Pages: each sequence takes ceil(len / ps) random distinct pages; a few stay unused.
  int total_blocks = 0, max_blocks = 1;
  for (int L : c.lens) {
    total_blocks += (L + ps - 1) / ps;
    max_blocks = std::max(max_blocks, (L + ps - 1) / ps + 1);
  }
  const int num_pages = total_blocks + 3;
  std::vector<int32_t> perm(num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng.g);
  std::vector<int32_t> table(size_t(B) * max_blocks, -1), seq_lens(c.lens.begin(), c.lens.end());
  for (int b = 0, next = 0; b < B; ++b)
    for (int n = 0; n < (c.lens[b] + ps - 1) / ps; ++n) table[size_t(b) * max_blocks + n] = perm[next++];

  CacheLayout kl, vl;
  Buf kc, vc;
  int64_t v_offset = 0;  // elements from the K buffer's start to V's (combined layout)
  if (c.combined) {      // [N, 2, bs, H, D]
    kl = cache_layout(false, ps, c.Hkv, c.d);
    kl.page *= 2;
    vl = kl;
    v_offset = int64_t(ps) * c.Hkv * c.d;
    kc = Buf(c.kvdt, int64_t(num_pages) * kl.page);
  } else if (c.mla) {
    kl = vl = cache_layout(c.hnd, ps, c.Hkv, c.d);
    kc = Buf(c.kvdt, int64_t(num_pages) * kl.page);
  } else {
    kl = cache_layout(c.hnd, ps, c.Hkv, c.d);
    vl = cache_layout(c.hnd, ps, c.Hkv, c.dv);
    kc = Buf(c.kvdt, int64_t(num_pages) * kl.page);
    vc = Buf(c.kvdt, int64_t(num_pages) * vl.page);
    fill_cache(vc, rng);
  }
  fill_cache(kc, rng);
  Buf& vbuf = (c.combined || c.mla) ? kc : vc;

  Buf q(c.qdt, int64_t(B) * c.Sq * c.Hq * c.d), o(c.qdt, int64_t(B) * c.Sq * c.Hq * c.dv);
  for (int64_t i = 0; i < q.size(); ++i) q.set(i, rng.uni(-1, 1));
  o.poison();
  std::vector<float> lse(size_t(B) * c.Hq * c.Sq, std::nanf("")), sinks(c.Hq);
  for (auto& s : sinks) s = static_cast<float>(rng.uni(-1, 2));

  PagedParams p;
  p.q = q.data();
  p.k_cache = kc.data();
  p.v_cache = vbuf.at_bytes(v_offset);
  const int is = c.index_stride;
  const std::vector<int32_t> seq_lens_s = spread(seq_lens, is, int32_t(1 << 30));
  const std::vector<float> sinks_s = spread(sinks, is, std::nanf(""));
  const int64_t bt_stride = max_blocks + is - 1;
  std::vector<int32_t> table_s(size_t(B) * bt_stride, int32_t(1 << 30));
  for (int b = 0; b < B; ++b)
    std::copy_n(table.begin() + b * max_blocks, max_blocks, table_s.begin() + b * bt_stride);
  p.block_table = table_s.data();
  p.seq_lens = seq_lens_s.data();
  p.seq_lens_stride = p.sinks_stride = is;
  p.o = o.data();
  p.lse = c.lse ? lse.data() : nullptr;
  p.sinks = c.sinks ? sinks_s.data() : nullptr;
  if (c.scale_ptr) {
    p.k_scale_ptr = &c.k_scale;
    p.v_scale_ptr = &c.v_scale;
    p.k_scale = p.v_scale = 777.f;  // must be ignored
  } else {
    p.k_scale = c.k_scale;
    p.v_scale = c.v_scale;
  }
  p.q_batch_stride = int64_t(c.Sq) * c.Hq * c.d, p.q_row_stride = int64_t(c.Hq) * c.d, p.q_head_stride = c.d;
  p.k_page_stride = kl.page, p.k_slot_stride = kl.slot, p.k_head_stride = kl.head;
  p.v_page_stride = vl.page, p.v_slot_stride = vl.slot, p.v_head_stride = vl.head;
  p.bt_batch_stride = bt_stride;
  p.o_batch_stride = int64_t(c.Sq) * c.Hq * c.dv, p.o_row_stride = int64_t(c.Hq) * c.dv, p.o_head_stride = c.dv;
  p.lse_batch_stride = int64_t(c.Hq) * c.Sq, p.lse_head_stride = c.Sq;
  p.batch = B, p.seqlen_q = c.Sq, p.num_heads_q = c.Hq, p.num_heads_kv = c.Hkv;
  p.head_dim = c.d, p.head_dim_v = c.dv;
  p.page_size = ps, p.num_pages = num_pages, p.max_blocks = max_blocks;
  p.causal = c.causal;
  p.window_left = c.wl, p.window_right = c.wr;
  const double scale = 1.0 / std::sqrt(double(c.d));
  p.scale = static_cast<float>(scale);
  p.scale_log2 = static_cast<float>(scale * kLog2e);
  p.softcap = static_cast<float>(c.softcap);
  p.q_dtype = c.qdt;
  p.kv_dtype = c.kvdt;
  cpu::paged_attention(p);

  // Reference: the logical K/V of each sequence, dequantised by the test (value * scale).
  std::vector<double> got, want, gl, wlse;
  int64_t empty_rows = 0;
  for (int b = 0; b < B; ++b) {
    const int L = c.lens[b];
    for (int h = 0; h < c.Hq; ++h) {
      const int hk = h / (c.Hq / c.Hkv);
      std::vector<double> qh(c.Sq * c.d), kh(int64_t(L) * c.d), vh(int64_t(L) * c.dv);
      for (int t = 0; t < c.Sq; ++t)
        for (int x = 0; x < c.d; ++x) qh[t * c.d + x] = q.get(((int64_t(b) * c.Sq + t) * c.Hq + h) * c.d + x);
      for (int j = 0; j < L; ++j) {
        const int page = table[size_t(b) * max_blocks + j / ps], slot = j % ps;
        for (int x = 0; x < c.d; ++x) kh[int64_t(j) * c.d + x] = kc.get(kl.at(page, slot, hk) + x) * c.k_scale;
        for (int x = 0; x < c.dv; ++x)
          vh[int64_t(j) * c.dv + x] = vbuf.get(v_offset + vl.at(page, slot, hk) + x) * c.v_scale;
      }
      std::vector<char> mask(size_t(c.Sq) * L);
      for (int t = 0; t < c.Sq; ++t)
        for (int j = 0; j < L; ++j) mask[size_t(t) * L + j] = ref_visible(t, j, L - c.Sq, c.causal, c.wl, c.wr);
      const double sink = sinks[h];
      std::vector<double> ro, rl;
      ref_head(qh, kh, vh, c.Sq, L, c.d, c.dv, mask, scale, c.softcap, c.sinks ? &sink : nullptr, ro, rl);
      for (int t = 0; t < c.Sq; ++t) {
        empty_rows += rl[t] == -kInf;
        for (int x = 0; x < c.dv; ++x) {
          got.push_back(o.get(((int64_t(b) * c.Sq + t) * c.Hq + h) * c.dv + x));
          want.push_back(ro[t * c.dv + x]);
        }
        if (c.lse) {
          gl.push_back(lse[(size_t(b) * c.Hq + h) * c.Sq + t]);
          wlse.push_back(rl[t]);
        }
      }
    }
  }
  check_out(got, want, c.qdt);
  if (c.lse) check_lse(gl, wlse);
  g_note += cat("empty_rows=", empty_rows);
}

static void paged_cases() {
  const DType f32 = DType::f32, f16 = DType::f16, bf16 = DType::bf16, fp8 = DType::fp8_e4m3;
  {
    PagedCase c;
    c.Hq = 8, c.Hkv = 2, c.lens = {1, 37, 200}, c.page_size = 16;
    run_case("paged f16/f16 NHD ps=16 gqa4 decode", [&] { run_paged_case("p1", c); });
  }
  {
    PagedCase c;
    c.qdt = c.kvdt = bf16;
    c.Hq = 4, c.Hkv = 4, c.Sq = 3, c.lens = {3, 10, 64}, c.page_size = 1, c.hnd = true;
    run_case("paged bf16/bf16 HND ps=1 Sq=3", [&] { run_paged_case("p2", c); });
  }
  {
    PagedCase c;
    c.qdt = c.kvdt = f32;
    c.Hq = 4, c.Hkv = 2, c.Sq = 3, c.lens = {129, 5, 64}, c.page_size = 64;
    c.wl = 8, c.wr = 0, c.softcap = 4, c.sinks = true;
    run_case("paged f32/f32 NHD ps=64 Sq=3 window softcap sinks", [&] { run_paged_case("p3", c); });
    c.index_stride = 2;
    run_case("paged f32/f32 ... seq_lens, sinks, block-table rows strided",
             [&] { run_paged_case("p3s", c); });
  }
  {
    PagedCase c;  // several query tiles of the blocked core per sequence
    c.qdt = f32, c.kvdt = bf16;
    c.Hq = 2, c.Hkv = 1, c.Sq = 300, c.lens = {300, 333}, c.page_size = 16;
    run_case("paged f32/bf16 NHD ps=16 Sq=300 (query tiles)", [&] { run_paged_case("p9", c); });
  }
  {
    PagedCase c;
    c.qdt = f16, c.kvdt = fp8;
    c.Hq = 8, c.Hkv = 1, c.lens = {50, 1, 300}, c.page_size = 16;
    c.k_scale = 1.f / 64, c.v_scale = 1.f / 128, c.scale_ptr = true;
    run_case("paged f16/fp8 NHD ps=16 gqa8, scales via pointer", [&] { run_paged_case("p4", c); });
  }
  {
    PagedCase c;
    c.qdt = bf16, c.kvdt = fp8;
    c.Hq = 4, c.Hkv = 2, c.d = c.dv = 64, c.Sq = 3, c.lens = {70, 3, 128}, c.page_size = 64, c.hnd = true;
    c.k_scale = 0.01f, c.v_scale = 0.02f;
    run_case("paged bf16/fp8 HND ps=64 Sq=3 scales", [&] { run_paged_case("p5", c); });
  }
  {
    PagedCase c;
    c.qdt = c.kvdt = f32;
    c.Hq = 2, c.Hkv = 2, c.d = c.dv = 16, c.lens = {20, 33}, c.page_size = 16, c.combined = true;
    run_case("paged f32 K/V views of one [N,2,bs,H,D] buffer", [&] { run_paged_case("p6", c); });
  }
  {
    PagedCase c;
    c.qdt = c.kvdt = f16;
    c.Hq = 4, c.Hkv = 1, c.d = 40, c.dv = 32, c.Sq = 2, c.lens = {17, 64}, c.page_size = 16, c.mla = true;
    run_case("paged MLA-style v_cache == k_cache, dv < d", [&] { run_paged_case("p7", c); });
  }
  {
    PagedCase c;
    c.qdt = f32, c.kvdt = f16;
    c.Hq = 2, c.Hkv = 1, c.lens = {0, 9}, c.page_size = 16, c.sinks = true;
    run_case("paged f32/f16 zero-length sequence (empty row)", [&] { run_paged_case("p8", c); });
  }
  {
    PagedCase c;
    c.qdt = f16, c.kvdt = bf16;
    c.Hq = 2, c.Hkv = 1, c.lens = {30, 9}, c.page_size = 16, c.hnd = true;
    c.k_scale = 0.5f, c.v_scale = 2.f;
    run_case("paged f16/bf16 scales apply to non-fp8 caches too", [&] { run_paged_case("p9", c); });
  }
  {
    PagedCase c;
    c.qdt = c.kvdt = f32;
    c.Hq = 3, c.Hkv = 1, c.Sq = 3, c.lens = {10, 40}, c.page_size = 1, c.causal = false;
    c.wl = 5, c.wr = 1;
    run_case("paged f32 non-causal window (5,1) Sq=3 ps=1", [&] { run_paged_case("p10", c); });
  }
}

// ---- append_paged_kv --------------------------------------------------------------------------

// The fp8 code nearest to x (ties to the even code), saturating: found by search, independently
// of the backend's encoder.
static uint8_t nearest_fp8(float x) {
  if (std::isnan(x)) return 0x7F;
  const double a = std::fabs(double(x));
  uint8_t best = 0;
  if (a >= 448) {
    best = 0x7E;
  } else {
    double bd = kInf;
    for (int c = 0; c <= 0x7E; ++c) {
      const double dd = std::fabs(ref_fp8(static_cast<uint8_t>(c)) - a);
      if (dd < bd || (dd == bd && (c & 1) == 0)) {
        bd = dd;
        best = static_cast<uint8_t>(c);
      }
    }
  }
  return std::signbit(x) ? static_cast<uint8_t>(best | 0x80) : best;
}

struct AppendCase {
  DType new_dt = DType::f32, kv_dt = DType::f16;
  int T = 20, Hkv = 2, d = 16, dv = 16, page_size = 16, num_pages = 5;
  bool hnd = false;
  float k_scale = 1.f, v_scale = 1.f;
  bool scale_ptr = false;
  bool saturate = false;  // include values beyond the fp8 range
  int index_stride = 1;   // stride of slot_mapping
};

static void run_append_case(const std::string& name, const AppendCase& c) {
  Rng rng(seed_of(name));
  const int ps = c.page_size;
  // Distinct random slots; every 5th token is padding (-1).
  std::vector<int64_t> slots(int64_t(c.num_pages) * ps);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng.g);
  std::vector<int64_t> mapping(c.T);
  for (int i = 0; i < c.T; ++i) mapping[i] = i % 5 == 3 ? -1 : slots[i];

  const int64_t kn_row = int64_t(c.Hkv) * c.d + 3, vn_row = int64_t(c.Hkv) * c.dv + 1;  // strided rows
  Buf kn(c.new_dt, c.T * kn_row), vn(c.new_dt, c.T * vn_row);
  for (int i = 0; i < c.T; ++i)
    for (int h = 0; h < c.Hkv; ++h) {
      for (int x = 0; x < c.d; ++x) {
        double val = rng.uni(-2, 2);
        if (c.saturate && x % 7 == 0) val = (x % 2 ? -1000.0 : 1000.0) * c.k_scale;
        kn.set(i * kn_row + h * c.d + x, val);
      }
      for (int x = 0; x < c.dv; ++x) vn.set(i * vn_row + h * c.dv + x, rng.uni(-2, 2));
    }
  const CacheLayout kl = cache_layout(c.hnd, ps, c.Hkv, c.d), vl = cache_layout(c.hnd, ps, c.Hkv, c.dv);
  Buf kc(c.kv_dt, int64_t(c.num_pages) * kl.page), vc(c.kv_dt, int64_t(c.num_pages) * vl.page);
  kc.poison();
  vc.poison();

  AppendParams p;
  p.k_new = kn.data(), p.v_new = vn.data(), p.k_cache = kc.data(), p.v_cache = vc.data();
  const std::vector<int64_t> mapping_s = spread(mapping, c.index_stride, int64_t(1) << 40);
  p.slot_mapping = mapping_s.data();
  p.slot_mapping_stride = c.index_stride;
  if (c.scale_ptr) {
    p.k_scale_ptr = &c.k_scale, p.v_scale_ptr = &c.v_scale;
    p.k_scale = p.v_scale = 777.f;
  } else {
    p.k_scale = c.k_scale, p.v_scale = c.v_scale;
  }
  p.kn_row_stride = kn_row, p.kn_head_stride = c.d;
  p.vn_row_stride = vn_row, p.vn_head_stride = c.dv;
  p.k_page_stride = kl.page, p.k_slot_stride = kl.slot, p.k_head_stride = kl.head;
  p.v_page_stride = vl.page, p.v_slot_stride = vl.slot, p.v_head_stride = vl.head;
  p.num_tokens = c.T, p.num_heads_kv = c.Hkv, p.head_dim = c.d, p.head_dim_v = c.dv;
  p.page_size = ps, p.num_pages = c.num_pages;
  p.new_dtype = c.new_dt, p.kv_dtype = c.kv_dt;
  cpu::append_paged_kv(p);

  // Half a unit in the last place, relative, of the cache dtype (f32: the division rounds).
  const double half_ulp = c.kv_dt == DType::f16 ? std::ldexp(1.0, -11)
                          : c.kv_dt == DType::bf16 ? std::ldexp(1.0, -8)
                                                   : std::ldexp(1.0, -24);
  std::vector<char> written_k(kc.size(), 0), written_v(vc.size(), 0);
  int64_t bad = 0, saturated = 0;
  auto check_elem = [&](const Buf& cache, int64_t at, double x, float scale) {
    const float target = static_cast<float>(x) / scale;  // what the cache must hold, rounded
    const double got = cache.get(at);
    bool ok;
    if (c.kv_dt == DType::fp8_e4m3) {
      ok = cache.bytes[static_cast<size_t>(at)] == nearest_fp8(target);
      saturated += std::fabs(target) > 448;
    } else if (c.new_dt == c.kv_dt && scale == 1.f) {
      ok = got == x;  // same dtype, no scale: bit-exact copy
    } else {
      ok = std::fabs(got - target) <= half_ulp * std::fabs(target) + 1e-30;
    }
    if (!ok) {
      if (bad == 0) CHECK(false, cat("cache element ", at, " got ", got, " want ", target));
      ++bad;
    }
  };
  for (int i = 0; i < c.T; ++i) {
    if (mapping[i] < 0) continue;
    const int64_t page = mapping[i] / ps, off = mapping[i] % ps;
    for (int h = 0; h < c.Hkv; ++h) {
      for (int x = 0; x < c.d; ++x) {
        const int64_t at = kl.at(page, off, h) + x;
        written_k[at] = 1;
        check_elem(kc, at, kn.get(i * kn_row + h * c.d + x), c.k_scale);
      }
      for (int x = 0; x < c.dv; ++x) {
        const int64_t at = vl.at(page, off, h) + x;
        written_v[at] = 1;
        check_elem(vc, at, vn.get(i * vn_row + h * c.dv + x), c.v_scale);
      }
    }
  }
  CHECK(bad == 0, cat(bad, " cache elements wrong"));
  int64_t stray = 0;
  for (int64_t i = 0; i < kc.size(); ++i) stray += !written_k[i] && !kc.is_poison(i);
  for (int64_t i = 0; i < vc.size(); ++i) stray += !written_v[i] && !vc.is_poison(i);
  CHECK(stray == 0, cat(stray, " cache elements written that no token maps to"));
  if (c.saturate) CHECK(saturated > 0, "the case was meant to saturate");
  g_note += cat("saturated=", saturated);
}

static void append_cases() {
  const DType f32 = DType::f32, f16 = DType::f16, bf16 = DType::bf16, fp8 = DType::fp8_e4m3;
  {
    AppendCase c;
    c.new_dt = f32, c.kv_dt = fp8, c.k_scale = 1.f / 32, c.v_scale = 1.f / 16, c.saturate = true;
    run_case("append f32 -> fp8 NHD ps=16 scales, saturation, skipped slots",
             [&] { run_append_case("ap1", c); });
  }
  {
    AppendCase c;
    c.new_dt = f16, c.kv_dt = f16, c.page_size = 1, c.num_pages = 40, c.hnd = true, c.T = 30;
    run_case("append f16 -> f16 HND ps=1 exact", [&] { run_append_case("ap2", c); });
  }
  {
    AppendCase c;
    c.new_dt = bf16, c.kv_dt = f32, c.page_size = 64, c.num_pages = 2, c.Hkv = 3;
    run_case("append bf16 -> f32 NHD ps=64", [&] { run_append_case("ap3", c); });
  }
  {
    AppendCase c;
    c.new_dt = f32, c.kv_dt = bf16, c.hnd = true, c.d = 24, c.dv = 8;
    run_case("append f32 -> bf16 HND d=24 dv=8 rounding", [&] { run_append_case("ap4", c); });
  }
  {
    AppendCase c;
    c.new_dt = f16, c.kv_dt = fp8, c.k_scale = 0.125f, c.v_scale = 0.25f, c.scale_ptr = true, c.hnd = true;
    run_case("append f16 -> fp8 HND scales via pointer", [&] { run_append_case("ap5", c); });
    c.index_stride = 2;
    run_case("append f16 -> fp8 HND, slot_mapping of stride 2", [&] { run_append_case("ap5s", c); });
  }
}

// ---- conversions ------------------------------------------------------------------------------

static void conversion_f16() {
  struct KV {
    float x;
    uint16_t h;
  };
  const KV known[] = {
      {1.0f, 0x3C00},      {-2.5f, 0xC100},         {448.0f, 0x5F00},
      {0.001953125f, 0x1800}, {65504.0f, 0x7BFF},   {65519.0f, 0x7BFF},
      {65520.0f, 0x7C00},  {1e6f, 0x7C00},          {-INFINITY, 0xFC00},
      {std::ldexp(1.0f, -24), 0x0001}, {std::ldexp(1.0f, -25), 0x0000},
      {std::ldexp(3.0f, -25), 0x0002}, {std::ldexp(1.0f, -14), 0x0400},
      {1.0f + std::ldexp(1.0f, -11), 0x3C00}, {1.0f + std::ldexp(3.0f, -11), 0x3C02},
      {-0.0f, 0x8000},     {0.0f, 0x0000},          {1e-9f, 0x0000},
  };
  for (const auto& kv : known)
    CHECK(cpu::float_to_half(kv.x) == kv.h, cat("float_to_half(", kv.x, ") = ", cpu::float_to_half(kv.x)));
  const uint16_t nan = cpu::float_to_half(std::nanf(""));
  CHECK((nan & 0x7C00) == 0x7C00 && (nan & 0x3FF) != 0, "f16 NaN");
  CHECK(std::isnan(cpu::half_to_float(0x7E00)) && std::isnan(cpu::half_to_float(0xFC01)), "f16 NaN decode");
  // Every code decodes as the formula says and re-encodes to itself.
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = cpu::half_to_float(static_cast<uint16_t>(h));
    const double r = ref_f16(static_cast<uint16_t>(h));
    if (std::isnan(r)) {
      bad += !std::isnan(f);
      continue;
    }
    bad += (double(f) != r) || (std::signbit(f) != std::signbit(r)) || cpu::float_to_half(f) != h;
  }
  CHECK(bad == 0, cat(bad, " f16 codes do not round-trip"));
  // Random floats: the encoding is the nearest code (ties to even).
  Rng rng(11);
  bad = 0;
  for (int n = 0; n < 20000; ++n) {
    const float x = static_cast<float>(std::ldexp(rng.uni(1, 2), static_cast<int>(rng.randint(-26, 17))));
    const uint16_t h = cpu::float_to_half(x);
    const double v = h == 0x7C00 ? 65536.0 : ref_f16(h);
    const double lo = h == 0 ? -kInf : ref_f16(h - 1), hi = h >= 0x7BFF ? 65536.0 : ref_f16(h + 1);
    const double e = std::fabs(v - x);
    bool ok = e <= std::fabs(lo - x) && e <= std::fabs(hi - x);
    if (e == std::fabs(hi - x) || e == std::fabs(lo - x)) ok = ok && (h % 2 == 0);
    bad += !ok;
  }
  CHECK(bad == 0, cat(bad, " random floats not rounded to the nearest f16"));
}

static void conversion_bf16() {
  struct KV {
    float x;
    uint16_t h;
  };
  const KV known[] = {
      {1.0f, 0x3F80}, {-2.5f, 0xC020}, {448.0f, 0x43E0}, {0.001953125f, 0x3B00},
      {1.0f + std::ldexp(1.0f, -8), 0x3F80}, {1.0f + std::ldexp(3.0f, -8), 0x3F82},
      {1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20), 0x3F81},
      {std::numeric_limits<float>::max(), 0x7F80}, {INFINITY, 0x7F80}, {-0.0f, 0x8000},
      {std::numeric_limits<float>::denorm_min(), 0x0000},
  };
  for (const auto& kv : known)
    CHECK(cpu::float_to_bf16(kv.x) == kv.h, cat("float_to_bf16(", kv.x, ") = ", cpu::float_to_bf16(kv.x)));
  const uint16_t nan = cpu::float_to_bf16(std::nanf(""));
  CHECK((nan & 0x7F80) == 0x7F80 && (nan & 0x7F) != 0, "bf16 NaN");
  // A NaN whose payload sits only in the low 16 bits must stay NaN (not become inf).
  uint32_t low_nan_bits = 0x7F800001u;
  float low_nan;
  std::memcpy(&low_nan, &low_nan_bits, 4);
  CHECK(std::isnan(cpu::bf16_to_float(cpu::float_to_bf16(low_nan))), "bf16 low-payload NaN");
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = cpu::bf16_to_float(static_cast<uint16_t>(h));
    const double r = ref_bf16(static_cast<uint16_t>(h));
    if (std::isnan(r)) {
      bad += !std::isnan(f);
      continue;
    }
    bad += (double(f) != r) || (std::signbit(f) != std::signbit(r)) || cpu::float_to_bf16(f) != h;
  }
  CHECK(bad == 0, cat(bad, " bf16 codes do not round-trip"));
}

static void conversion_fp8() {
  struct KV {
    float x;
    uint8_t c;
  };
  const KV known[] = {
      {448.0f, 0x7E}, {-448.0f, 0xFE}, {1000.0f, 0x7E}, {INFINITY, 0x7E}, {-INFINITY, 0xFE},
      {464.0f, 0x7E}, {440.0f, 0x7E}, {416.0f, 0x7D}, {-2.5f, 0xC2}, {1.0f, 0x38},
      {0.001953125f, 0x01}, {std::ldexp(1.0f, -10), 0x00}, {std::ldexp(3.0f, -10), 0x02},
      {std::ldexp(5.0f, -10), 0x02}, {std::ldexp(1.0f, -6), 0x08}, {std::ldexp(15.0f, -10), 0x08},
      {0.0f, 0x00}, {-0.0f, 0x80}, {1.0625f, 0x38}, {1.1875f, 0x3A}, {240.0f, 0x77},
  };
  for (const auto& kv : known)
    CHECK(cpu::float_to_fp8_e4m3(kv.x) == kv.c,
          cat("float_to_fp8(", kv.x, ") = ", int(cpu::float_to_fp8_e4m3(kv.x)), " want ", int(kv.c)));
  CHECK((cpu::float_to_fp8_e4m3(std::nanf("")) & 0x7F) == 0x7F, "fp8 NaN encode");
  CHECK(std::isnan(cpu::fp8_e4m3_to_float(0x7F)) && std::isnan(cpu::fp8_e4m3_to_float(0xFF)), "fp8 NaN decode");
  CHECK(cpu::fp8_e4m3_to_float(0x7E) == 448.0f && cpu::fp8_e4m3_to_float(0x01) == 0.001953125f &&
            cpu::fp8_e4m3_to_float(0xC2) == -2.5f && std::signbit(cpu::fp8_e4m3_to_float(0x80)),
        "fp8 known decodes");
  int bad = 0;
  for (int c = 0; c < 256; ++c) {
    const float f = cpu::fp8_e4m3_to_float(static_cast<uint8_t>(c));
    const double r = ref_fp8(static_cast<uint8_t>(c));
    if (std::isnan(r)) {
      bad += !std::isnan(f);
      continue;
    }
    bad += double(f) != r || cpu::float_to_fp8_e4m3(f) != c;
  }
  CHECK(bad == 0, cat(bad, " fp8 codes do not round-trip"));
  // Random values and every midpoint between neighbouring codes: the nearest code, ties to even.
  Rng rng(12);
  bad = 0;
  std::vector<float> xs;
  for (int n = 0; n < 5000; ++n)
    xs.push_back(static_cast<float>((n % 2 ? -1 : 1) * std::ldexp(rng.uni(1, 2), static_cast<int>(rng.randint(-12, 9)))));
  for (int c = 0; c < 0x7E; ++c) xs.push_back(static_cast<float>((ref_fp8(c) + ref_fp8(c + 1)) / 2));
  for (float x : xs) bad += cpu::float_to_fp8_e4m3(x) != nearest_fp8(x);
  CHECK(bad == 0, cat(bad, " values not rounded to the nearest fp8"));
}

static void conversion_load_store() {
  float f32[3];
  uint16_t f16[3], bf16[3];
  uint8_t fp8[3];
  double f64[3];
  struct {
    void* p;
    DType t;
  } bufs[] = {{f32, DType::f32}, {f16, DType::f16}, {bf16, DType::bf16}, {fp8, DType::fp8_e4m3}, {f64, DType::f64}};
  for (auto& b : bufs) {
    cpu::store(b.p, b.t, 0, 1.0f);
    cpu::store(b.p, b.t, 1, -2.5f);
    cpu::store(b.p, b.t, 2, 0.001953125f);
    CHECK(cpu::load(b.p, b.t, 0) == 1.0f && cpu::load(b.p, b.t, 1) == -2.5f &&
              cpu::load(b.p, b.t, 2) == 0.001953125f,
          cat("load/store ", dtype_name(b.t)));
  }
  CHECK(f16[1] == 0xC100 && bf16[1] == 0xC020 && fp8[1] == 0xC2, "store writes the right codes");
  cpu::store(fp8, DType::fp8_e4m3, 0, -1e9f);
  CHECK(fp8[0] == 0xFE, "store fp8 saturates");
  bool threw = false;
  try {
    int32_t i32[1] = {0};
    cpu::load(i32, DType::i32, 0);
  } catch (const TypeError&) {
    threw = true;
  }
  CHECK(threw, "load of int32 must throw TypeError");
}

static void tensor_helpers() {
  CHECK(dtype_size(DType::f32) == 4 && dtype_size(DType::f16) == 2 && dtype_size(DType::bf16) == 2 &&
            dtype_size(DType::fp8_e4m3) == 1 && dtype_size(DType::i64) == 8,
        "dtype_size");
  CHECK(std::string(dtype_name(DType::bf16)) == "bfloat16" &&
            std::string(dtype_name(DType::fp8_e4m3)) == "float8_e4m3fn",
        "dtype_name");
  float x;
  TensorView v = make_view(&x, DType::f16, {2, 3, 4, 5});
  CHECK(v.present() && v.ndim == 4 && v.numel() == 120, "make_view shape");
  CHECK(v.stride[0] == 60 && v.stride[1] == 20 && v.stride[2] == 5 && v.stride[3] == 1,
        cat("make_view strides ", v.stride[0], " ", v.stride[1], " ", v.stride[2], " ", v.stride[3]));
  CHECK(v.dtype == DType::f16 && v.data == &x && v.device == DeviceType::cpu, "make_view fields");
  TensorView s = make_view(&x, DType::f32, {});
  CHECK(s.ndim == 0 && s.numel() == 1, "make_view scalar");
}

static void parallel_for_case() {
  for (int64_t n : {0, 1, 3, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (auto& h : hits) h = 0;
    cpu::parallel_for(n, [&](int64_t i) { hits[i]++; });
    int bad = 0;
    for (auto& h : hits) bad += h != 1;
    CHECK(bad == 0, cat("n=", n, ": ", bad, " items not run exactly once"));
  }
  // Nested calls run (inline) and finish.
  std::atomic<int64_t> sum{0};
  cpu::parallel_for(8, [&](int64_t i) { cpu::parallel_for(10, [&](int64_t j) { sum += i * 10 + j; }); });
  CHECK(sum == 79 * 80 / 2, cat("nested sum ", sum.load()));
  bool threw = false;
  try {
    cpu::parallel_for(100, [](int64_t i) {
      if (i == 37) throw ValueError("item 37");
    });
  } catch (const ValueError&) {
    threw = true;
  }
  CHECK(threw, "an exception in a work item reaches the caller");
  // The thread-count setting: every count runs each item once; n < 1 is refused.
  const int threads = get_num_threads();
  CHECK(threads >= 1, cat("get_num_threads() = ", threads));
  for (int n : {1, 3}) {
    set_num_threads(n);
    CHECK(get_num_threads() == n, cat("set_num_threads(", n, ") then get ", get_num_threads()));
    std::atomic<int64_t> total{0};
    cpu::parallel_for(1000, [&](int64_t i) { total += i; });
    CHECK(total == 999 * 1000 / 2, cat(n, " threads: sum ", total.load()));
  }
  set_num_threads(threads);
  bool refused = false;
  try {
    set_num_threads(0);
  } catch (const ValueError&) {
    refused = true;
  }
  CHECK(refused && get_num_threads() == threads, "set_num_threads(0) is a ValueError");
}

// mla_decode's kernel by device and shape (132 SMs) and by the internal variant.
static void mla_choice_cases() {
  DeviceProps dev;
  dev.sm_count = 132;
  dev.cc_major = 8;
  auto kernel = [&](int64_t batch, int64_t rows, const std::string& v = "") {
    return choose_mla_decode(batch, rows, dev, v).kernel;
  };
  CHECK(kernel(64, 16) == MlaKernel::list, "B64 Hq16: the work list");
  CHECK(kernel(1, 128) == MlaKernel::list, "B1 Hq128: the work list (2 split-kernel CTAs would idle the GPU)");
  CHECK(kernel(64, 64) == MlaKernel::list, "64 rows: the work list (no row the split kernel reads for nothing)");
  CHECK(kernel(66, 128) == MlaKernel::split, "B66 Hq128: 132 CTAs of 64 rows fill the SMs: the split kernel");
  CHECK(kernel(65, 128) == MlaKernel::list, "B65 Hq128: 130 CTAs do not fill 132 SMs: the work list");
  CHECK(kernel(64, 128, "list=1") == MlaKernel::list && kernel(1, 16, "list=0") == MlaKernel::split,
        "list=1 / list=0 force the kernels");
  const MlaDecodeChoice h = choose_mla_decode(1, 16, dev, "hopper=1");
  CHECK(h.kernel == MlaKernel::hopper && h.forced, "hopper=1: the sm_90a kernel, forced");
  dev.cc_major = 9;  // sm_90: the sm_90a kernel by default, the shape rule where it cannot run
  const MlaDecodeChoice d = choose_mla_decode(66, 128, dev, "");
  CHECK(d.kernel == MlaKernel::hopper && !d.forced && d.fallback == MlaKernel::split,
        "sm_90 B66 Hq128: the sm_90a kernel, falling back to the split kernel");
  const MlaDecodeChoice n = choose_mla_decode(1, 16, dev, "");
  CHECK(n.kernel == MlaKernel::hopper && n.fallback == MlaKernel::list,
        "sm_90 B1 Hq16: the 64-row sm_90a kernel (the narrow one measured slower), falling back to the list");
  const MlaDecodeChoice fn = choose_mla_decode(8, 128, dev, "narrow=1");
  CHECK(fn.kernel == MlaKernel::narrow && fn.forced, "narrow=1: the narrow kernel, forced (the call decides if it can run)");
  CHECK(kernel(64, 16, "list=1") == MlaKernel::list, "sm_90: list=1 still forces the portable kernel");
  dev.cc_minor = 9;  // sm_99 (none such), i.e. not sm_90: no sm_90a kernel
  CHECK(kernel(64, 16) == MlaKernel::list, "only sm_90 takes the sm_90a kernel by default");
  bool threw = false;
  try {
    choose_mla_decode(1, 16, dev, "hopper=2");
  } catch (const ValueError& e) {
    threw = std::string(e.what()).find("hopper=2") != std::string::npos;
  }
  CHECK(threw, "an unknown variant is a ValueError naming it");
}

// The decode split scheduler: whole pages, at most kMaxDecodeSplits splits, one split when the
// batch alone fills the GPU, and at most kCtasPerSm CTAs per SM otherwise.
static void scheduler_cases() {
  auto splits = [](int64_t len, int chunk) { return (len + chunk - 1) / chunk; };
  const int sms = 132, per_sm = kCtasPerSm;
  // The benchmark's decode shapes (GQA 32/8): B1 L32768 is cut into 132 * per_sm / 8 splits, rounded down.
  {
    const int c = choose_chunk(1, 8, 32768, 32768, 16, sms, per_sm);
    const int64_t want = int64_t(sms) * per_sm / 8;
    CHECK(c % 16 == 0, cat("chunk ", c, " is not whole pages"));
    CHECK(splits(32768, c) == want, cat("B1 L32768: ", splits(32768, c), " splits, want ", want));
  }
  if (per_sm == 1) {
    CHECK(splits(8192, choose_chunk(16, 8, 16 * 8192, 8192, 16, sms, per_sm)) == 1, "B16 L8192: want 1 split");
    CHECK(splits(32768, choose_chunk(2, 8, 2 * 32768, 32768, 16, sms, per_sm)) == 8, "B2 L32768: want 8 splits");
    CHECK(splits(16384, choose_chunk(3, 8, 3 * 16384, 16384, 16, sms, per_sm)) == 5, "B3 L16384: want 5 splits");
    CHECK(splits(8192, choose_chunk(6, 8, 6 * 8192, 8192, 16, sms, per_sm)) == 2, "B6 L8192: want 2 splits (96 CTAs)");
    CHECK(splits(8192, choose_chunk(9, 8, 9 * 8192, 8192, 16, sms, per_sm)) == 1,
          "B9 L8192: want 1 split (72 CTAs, not 144: no partial second wave)");
    CHECK(splits(4096, choose_chunk(64, 8, 64 * 4096, 4096, 16, sms, per_sm)) == 1, "B64 L4096: want 1 split");
  }
  if (per_sm == 2) {
    CHECK(splits(8192, choose_chunk(16, 8, 16 * 8192, 8192, 16, sms, per_sm)) == 2, "B16 L8192: want 2 splits");
    CHECK(splits(4096, choose_chunk(64, 8, 64 * 4096, 4096, 16, sms, per_sm)) == 1, "B64 L4096: want 1 split");
  }
  // Random shapes, page sizes and SM counts: the invariants.
  Rng rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t batch = rng.randint(1, 300), heads = rng.randint(1, 16);
    const int page = 1 << rng.randint(0, 8);
    const int64_t longest = rng.randint(1, trial % 10 == 0 ? (int64_t(1) << 30) : 200000);
    const int64_t total = std::max(longest, batch * rng.randint(0, longest));
    const int nsm = int(rng.randint(1, 200));
    const int c = choose_chunk(batch, heads, total, longest, page, nsm, per_sm);
    const std::string at = cat("batch ", batch, " heads ", heads, " page ", page, " longest ", longest,
                               " total ", total, " sms ", nsm, ": chunk ", c);
    CHECK(c >= page && c % page == 0, at + " is not whole pages");
    CHECK(splits(longest, c) <= kMaxDecodeSplits, at + " gives too many splits");
    if (batch * heads >= int64_t(nsm) * per_sm) CHECK(splits(longest, c) == 1, at + ": the batch fills the GPU");
    if (splits(longest, c) > 1) CHECK(c >= kMinDecodeChunk, at + " is shorter than kMinDecodeChunk");
    // Equal lengths, splits not bounded by kMinDecodeChunk or kMaxDecodeSplits: no more than
    // kCtasPerSm CTAs an SM.
    const int64_t units = batch * heads, target = int64_t(nsm) * per_sm, n = splits(longest, c);
    if (total == batch * longest && units < target && n > 1 && c > kMinDecodeChunk + page &&
        longest / kMaxDecodeSplits < c - page)
      CHECK(units * n <= target, at + cat(": ", units * n, " CTAs for ", target, " slots"));
  }

  // The variant of a call: one wave -> the 8-warp kernel, pages in address order after 8 tiles;
  // several waves -> persistent CTAs (where the kernel has them), sequence order below 4096-key
  // splits. The internal variant string overrides it.
  DeviceProps h100;
  h100.sm_count = 132, h100.cc_major = 9;
  DecodeShape one;
  one.batch = 16, one.heads_q = 32, one.heads_kv = 8, one.page_size = 16, one.max_len = 8192;
  one.total_len = 16 * 8192;
  const DecodeSchedule a = choose_decode(one, h100);
  CHECK(a.max_splits == 1 && a.config.wide && !a.config.persistent && a.config.page_order_after == 8 &&
            a.config.tma && a.config.pdl && a.config.sm_count == 132,
        "B16 L8192: one wave, 8 warps, page order after 8");
  DecodeShape many = one;
  many.batch = 256, many.max_len = 2048, many.total_len = 256 * 2048;
  const DecodeSchedule b = choose_decode(many, h100);
  CHECK(b.max_splits == 1 && !b.config.wide && b.config.persistent && b.config.page_order_after == 0,
        "B256 L2048: several waves, persistent, sequence order");
  DecodeConfig v = b.config;
  int per = kCtasPerSm;
  apply_variant("tma=0,wide=1,persistent=0,persistent_ctas=5,page_order=3,pdl=0,ctas_per_sm=2", v, &per);
  CHECK(!v.tma && v.wide && !v.persistent && v.persistent_ctas == 5 && v.page_order_after == 3 && !v.pdl &&
            per == 2,
        "apply_variant sets every field (persistent=0 wins over a CTA cap)");
  v = a.config;
  apply_variant("persistent_ctas=3", v);
  CHECK(v.persistent && v.persistent_ctas == 3, "a CTA cap makes any grid persistent");
  CHECK(!a.config.list && !b.config.list, "the work list is not a default");
  v = a.config;
  apply_variant("list_ctas=7", v);
  CHECK(v.list && v.list_ctas == 7, "a cap on the list's CTAs turns the list on");
  apply_variant("list=0,list_ctas=7", v);
  CHECK(!v.list, "list=0 wins over a cap");
  apply_variant("list_granule=200,list_overhead=5000", v);
  CHECK(v.list_granule == 192 && v.list_overhead == 1024, "the list's granule in 16-key steps, overhead capped");
  apply_variant("drain=1", v);
  CHECK(v.drain, "drain=1 puts a persistent kernel's merge scratch in its ring");
  apply_variant("list_granule=1,list_overhead=0", v);
  CHECK(v.list_granule == 16 && v.list_overhead == 1, "granule and overhead at least 16 and 1");
  for (const char* bad : {"tma", "wide=x", "colour=1", "tma=1x"}) {
    bool threw = false;
    try {
      apply_variant(bad, v);
    } catch (const ValueError&) {
      threw = true;
    }
    CHECK(threw, cat("apply_variant('", bad, "') is a ValueError"));
  }
  // The flash instantiation: the smallest built pair that covers the call; Hopper on sm_90 only.
  AttnParams fp;
  fp.head_dim = 40, fp.head_dim_v = 40;
  FlashConfig fc;
  // (A build narrowed to other head dims pads D40 to its smallest one; a CPU-only build has none.)
  const bool any = kBuiltHeadDims[0] != '\0';
  CHECK(choose_flash_config(fp, h100, fc) == any && (!head_dim_built(64) || (fc.head_dim == 64 && fc.hopper)),
        "D40 runs padded to the D64 kernel, Hopper on sm_90");
  DeviceProps a100;
  a100.sm_count = 108, a100.cc_major = 8;
  CHECK(!choose_flash_config(fp, a100, fc) || !fc.hopper, "no Hopper kernel on sm_80");
  apply_variant("portable=1", fc);
  CHECK(!fc.hopper, "portable=1 turns the Hopper kernel off");
  // The Hopper kernel is the default at every pair on sm_90; hopper=0 turns it off.
  for (const HeadDimPair& hd : kFlashHeadDims) {
    if (!head_dim_built(hd.d)) continue;  // a narrowed build
    fp.head_dim = hd.d, fp.head_dim_v = hd.dv;
    CHECK(choose_flash_config(fp, h100, fc), cat("D ", hd.d, " / ", hd.dv, " is built"));
    CHECK(fc.head_dim == hd.d && fc.head_dim_v == hd.dv && fc.hopper,
          cat("D ", hd.d, " / ", hd.dv, ": the Hopper kernel by default on sm_90"));
    CHECK(choose_flash_config(fp, a100, fc) && !fc.hopper, cat("D ", hd.d, " / ", hd.dv, ": portable on sm_80"));
    apply_variant("hopper=1", fc);
    CHECK(fc.hopper, cat("hopper=1 asks for the Hopper kernel at D ", hd.d, " / ", hd.dv));
    apply_variant("hopper=0", fc);
    CHECK(!fc.hopper, "hopper=0 turns it off");
    // The longer key tile by default at D192 and D256 (measured faster there), not at D128.
    CHECK(fc.alt_tile == (hd.dv >= 192), cat("D ", hd.d, " / ", hd.dv, ": the longer key tile by default iff Dv >= 192"));
    apply_variant("alt_tile=1", fc);
    CHECK(fc.alt_tile, "alt_tile=1 asks for the longer key tile");
    apply_variant("alt_tile=0", fc);
    CHECK(!fc.alt_tile, "alt_tile=0 asks for the 128 x 128 / 128 x 64 one");
  }
  bool threw = false;
  try {
    apply_variant("portable=1,hopper=1", fc);
  } catch (const ValueError&) {
    threw = true;
  }
  CHECK(threw, "portable=1 with hopper=1 is a ValueError");
}

// mla_method: the FLOP-count choice (absorb for few queries, materialise for prefill), a forced
// order kept (per_pair, which the CPU has not, reported as absorb), and mla_attention's validation.
static void mla_method_cases() {
  const int64_t B = 1, H = 4, L = 64, D = 16;
  auto method = [&](int64_t Sq, int64_t Sk, MlaMethod forced) {
    std::vector<float> q(size_t(B * H * Sq * D)), kl(size_t(B * Sk * L)), vl(kl.size()), kp(size_t(H * L * D)),
        vp(kp.size()), out(q.size());
    MlaArgs a;
    a.q = make_view(q.data(), DType::f32, {B, H, Sq, D});
    a.k_latent = make_view(kl.data(), DType::f32, {B, Sk, L});
    a.v_latent = make_view(vl.data(), DType::f32, {B, Sk, L});
    a.k_proj = make_view(kp.data(), DType::f32, {H, L, D});
    a.v_proj = make_view(vp.data(), DType::f32, {H, L, D});
    a.out = make_view(out.data(), DType::f32, {B, H, Sq, D});
    a.method = forced;
    return mla_method(a);
  };
  // absorb: 2·Sq·L·(D+Dv) + 4·Sq·Sk·L a head; materialise: 2·Sk·L·(D+Dv) + 2·Sq·Sk·(D+Dv).
  CHECK(method(1, 100, MlaMethod::automatic) == MlaMethod::absorb, "Sq 1 over 100 keys: absorb expected");
  CHECK(method(100, 100, MlaMethod::automatic) == MlaMethod::materialise, "Sq = Sk = 100: materialise expected");
  CHECK(method(100, 100, MlaMethod::absorb) == MlaMethod::absorb, "a forced order is kept");
  CHECK(method(1, 100, MlaMethod::materialise) == MlaMethod::materialise, "a forced order is kept");
  CHECK(method(5, 9, MlaMethod::per_pair) == MlaMethod::absorb, "the CPU runs absorb for per_pair");
  bool refused = false;
  try {
    std::vector<float> x(128);
    MlaArgs a;
    a.q = make_view(x.data(), DType::f32, {1, 1, 1, 8});
    a.k_latent = a.v_latent = make_view(x.data(), DType::f32, {1, 2, 4});
    a.k_proj = a.v_proj = make_view(x.data(), DType::f32, {1, 5, 8});  // L 5 != 4
    a.out = make_view(x.data() + 64, DType::f32, {1, 1, 1, 8});
    mla_method(a);
  } catch (const ValueError& e) {
    refused = std::string(e.what()).find("k_proj") != std::string::npos;
  }
  CHECK(refused, "a k_proj whose latent dim disagrees must be a ValueError naming k_proj");
}

int main() {
  const auto t0 = std::chrono::steady_clock::now();
  run_case("conversions f16 (known values, all codes, nearest-even)", conversion_f16);
  run_case("conversions bf16 (known values, all codes)", conversion_bf16);
  run_case("conversions fp8 e4m3fn (known values, all codes, saturation, ties)", conversion_fp8);
  run_case("load/store by dtype", conversion_load_store);
  run_case("dtype_name / dtype_size / make_view", tensor_helpers);
  run_case("parallel_for", parallel_for_case);
  attention_cases();
  run_case("merge_states known values", merge_known_values);
  run_case("merge halves f32 bshd == whole", [] { run_merge_case("m1", DType::f32, false); });
  run_case("merge halves f16 bshd == whole", [] { run_merge_case("m2", DType::f16, false); });
  run_case("merge halves f32 bhsd == whole", [] { run_merge_case("m3", DType::f32, true); });
  run_case("merge halves bf16 bhsd == whole", [] { run_merge_case("m4", DType::bf16, true); });
  paged_cases();
  append_cases();
  run_case("decode split scheduler (known shapes, invariants)", scheduler_cases);
  run_case("mla_decode kernel choice", mla_choice_cases);
  run_case("mla_method: FLOP-count choice, forced orders, validation", mla_method_cases);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("\n%d passed, %zu failed (%.2f s)\n", g_summary.passed, g_summary.failed.size(), s);
  for (const auto& n : g_summary.failed) std::printf("  FAILED: %s\n", n.c_str());
  return g_summary.failed.empty() ? 0 : 1;
}
