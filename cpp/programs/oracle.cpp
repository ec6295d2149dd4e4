// oracle.cpp — see oracle.h.
#include "oracle.h"

#include <algorithm>
#include <cmath>

namespace harness {

double tolerance(DType t) {
  switch (t) {
    case DType::bf16: return 1e-2;
    case DType::f16: return 2e-3;
    default: return 1e-4;
  }
}

CheckResult compare(const std::vector<double>& got, const std::vector<double>& want, DType t) {
  CheckResult r;
  r.done = true;
  if (got.size() != want.size()) {
    r.ok = false;
    r.note = fmt("size mismatch: %zu vs %zu", got.size(), want.size());
    return r;
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) {
      r.nan = true;
      continue;
    }
    const double d = got[i] - want[i];
    num += d * d;
    den += want[i] * want[i];
    r.max_abs = std::max(r.max_abs, std::fabs(d));
  }
  r.rel_l2 = num == 0 ? 0 : std::sqrt(num / std::max(den, 1e-300));
  r.ok = !r.nan && std::isfinite(r.rel_l2) && r.rel_l2 <= tolerance(t);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Dense attention.

// Keys [lo, hi] that the mask's bounds let query i see (before `visible`); empty when hi < lo.
static void key_range(const Mask& m, int64_t i, int64_t Sq, int64_t Sk, int64_t* lo, int64_t* hi) {
  const int64_t diag = i + Sk - Sq;
  *lo = 0, *hi = Sk - 1;
  if (m.causal) *hi = std::min(*hi, diag);
  if (m.right >= 0) *hi = std::min(*hi, diag + m.right);
  if (m.left >= 0) *lo = std::max(*lo, diag - m.left);
}

// Visible pairs of query rows [r0, Sq).
static double pairs_from(int64_t r0, int64_t Sq, int64_t Sk, const Mask& m) {
  double n = 0;
  for (int64_t i = r0; i < Sq; ++i) {
    int64_t lo, hi;
    key_range(m, i, Sq, Sk, &lo, &hi);
    if (hi >= lo) n += double(hi - lo + 1);
  }
  return n;
}

double visible_pairs(int64_t Sq, int64_t Sk, const Mask& m) { return pairs_from(0, Sq, Sk, m); }

std::string Slice::describe() const {
  if (whole) return "";
  return fmt("checked: %lld batch(es), %lld kv head(s), last %lld rows", (long long)batches,
             (long long)kv_heads, (long long)rows);
}

Slice choose_slice(int64_t B, int64_t Hkv, int64_t Sq, int64_t Sk, int64_t D, int64_t group,
                   const Mask& mask, double budget) {
  Slice s;
  s.batches = B, s.kv_heads = Hkv, s.rows = Sq;
  auto cost = [&] {  // 4·D flops per visible pair of the last `rows` rows
    return 4.0 * double(D) * double(s.batches * s.kv_heads * group) * pairs_from(Sq - s.rows, Sq, Sk, mask);
  };
  while (cost() > budget && s.batches > 1) s.batches = std::max<int64_t>(1, s.batches / 2);
  while (cost() > budget && s.rows > 128) s.rows = std::max<int64_t>(128, s.rows / 2);
  while (cost() > budget && s.kv_heads > 1) s.kv_heads = std::max<int64_t>(1, s.kv_heads / 2);
  s.whole = s.batches == B && s.kv_heads == Hkv && s.rows == Sq;
  return s;
}

std::vector<double> reference_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const Mask& mask, double scale, const Slice& s) {
  const int64_t Sq = q.shape[1], Sk = k.shape[1], Hq = q.shape[2], Hkv = k.shape[2];
  const int64_t D = q.shape[3], Dv = v.shape[3], G = Hq / Hkv, nh = s.kv_heads * G, r0 = Sq - s.rows;
  if (scale < 0) scale = 1.0 / std::sqrt(double(D));
  std::vector<double> out(size_t(s.batches * s.rows * nh * Dv), 0.0);
  if (s.rows == 0) return out;
  // The keys any sliced row can see: from the first row's lowest to the last row's highest.
  int64_t first, unused, last;
  key_range(mask, r0, Sq, Sk, &first, &unused);
  key_range(mask, Sq - 1, Sq, Sk, &unused, &last);
  first = std::max<int64_t>(first, 0), last = std::min(last, Sk - 1);
  const int64_t n = std::max<int64_t>(last - first + 1, 0);
  for (int64_t b = 0; b < s.batches; ++b)
    for (int64_t hk = 0; hk < s.kv_heads; ++hk) {
      auto cut = [&](const TensorView& t, int64_t h0, int64_t nh_, int64_t start, int64_t len) {
        return to_doubles(narrow(narrow(narrow(t, 0, b, 1), 2, h0, nh_), 1, start, len));
      };
      const std::vector<double> qq = cut(q, hk * G, G, r0, s.rows);  // [rows, G, D]
      const std::vector<double> kk = cut(k, hk, 1, first, n);        // [n, D]
      const std::vector<double> vv = cut(v, hk, 1, first, n);        // [n, Dv]
#pragma omp parallel for schedule(dynamic, 4)
      for (int64_t x = 0; x < s.rows * G; ++x) {
        const int64_t i = r0 + x / G, g = x % G;
        int64_t lo, hi;
        key_range(mask, i, Sq, Sk, &lo, &hi);
        lo = std::max(lo, first), hi = std::min(hi, last);
        std::vector<double> p(size_t(std::max<int64_t>(hi - lo + 1, 0)), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = lo; j <= hi; ++j) {
          if (mask.visible && !mask.visible(i, j)) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qq[size_t(x * D + d)] * kk[size_t((j - first) * D + d)];
          p[size_t(j - lo)] = dot * scale;
          mx = std::max(mx, dot * scale);
        }
        double* o = out.data() + ((b * s.rows + x / G) * nh + hk * G + g) * Dv;
        if (mx == -INFINITY) continue;  // no visible key: 0
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int64_t j = lo; j <= hi; ++j) {
          const double w = p[size_t(j - lo)] / sum;
          for (int64_t e = 0; e < Dv; ++e) o[e] += w * vv[size_t((j - first) * Dv + e)];
        }
      }
    }
  return out;
}

std::vector<double> slice_of(const TensorView& out, int64_t group, const Slice& s) {
  TensorView v = narrow(out, 0, 0, s.batches);
  v = narrow(v, 2, 0, s.kv_heads * group);
  return to_doubles(narrow(v, 1, out.shape[1] - s.rows, s.rows));
}

CheckResult compare_slice(Tensor& out, bool bhsd, const std::vector<double>& want, int64_t group,
                          const Slice& s, const Env& env) {
  out.download(env.stream);
  const TensorView v = bhsd ? transpose(out.host_view(), 1, 2) : out.host_view();
  CheckResult r = compare(slice_of(v, group, s), want, env.dtype);
  r.note = s.describe();
  return r;
}

Tensor reference_expand(const TensorView& latent, const TensorView& proj, int64_t nb, int64_t nh) {
  const int64_t S = latent.shape[1], L = latent.shape[2], E = proj.shape[2];
  const std::vector<double> lat = to_doubles(narrow(latent, 0, 0, nb)), w = to_doubles(narrow(proj, 0, 0, nh));
  Tensor out({nb, S, nh, E}, DType::f64, DeviceType::cpu);
  double* o = out.host_as<double>();
#pragma omp parallel for schedule(static)
  for (int64_t bs = 0; bs < nb * S; ++bs)
    for (int64_t h = 0; h < nh; ++h)
      for (int64_t e = 0; e < E; ++e) {
        double acc = 0;
        for (int64_t l = 0; l < L; ++l) acc += lat[size_t(bs * L + l)] * w[size_t((h * L + l) * E + e)];
        o[(bs * nh + h) * E + e] = acc;
      }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Paged KV caches.

std::vector<double> gather_pages(const TensorView& c, const int32_t* row, int64_t len, double scale) {
  const int64_t P = c.shape[1], H = c.shape[2], D = c.shape[3];
  std::vector<double> out(size_t(len * H * D));
#pragma omp parallel for schedule(static)
  for (int64_t j = 0; j < len; ++j) {
    const int64_t page = row[j / P], slot = j % P;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t x = 0; x < D; ++x)
        out[size_t((j * H + h) * D + x)] =
            to_double(c.dtype, c.data, page * c.stride[0] + slot * c.stride[1] + h * c.stride[2] + x * c.stride[3]) * scale;
  }
  return out;
}

std::vector<double> reference_paged(const TensorView& q, const TensorView& k_cache, const TensorView& v_cache,
                                    const Tensor& block_table, const Tensor& seq_lens, int64_t nb,
                                    double k_scale, double v_scale, double scale) {
  const int64_t T = q.shape[1], Hq = q.shape[2], Hkv = k_cache.shape[2], D = k_cache.shape[3];
  const int64_t Dv = v_cache.shape[3], max_blocks = block_table.shape[1];
  std::vector<double> out;
  out.reserve(size_t(nb * T * Hq * Dv));
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t len = seq_lens.host_as<int32_t>()[b];
    const int32_t* row = block_table.host_as<int32_t>() + b * max_blocks;
    std::vector<double> k = gather_pages(k_cache, row, len, k_scale);
    std::vector<double> v = gather_pages(v_cache, row, len, v_scale);
    Mask causal;
    causal.causal = true;
    const std::vector<double> o = reference_attention(
        narrow(q, 0, b, 1), cuattn::make_view(k.data(), DType::f64, {1, len, Hkv, D}),
        cuattn::make_view(v.data(), DType::f64, {1, len, Hkv, Dv}), causal, scale, Slice{1, Hkv, T, true});
    out.insert(out.end(), o.begin(), o.end());
  }
  return out;
}

int64_t check_count(int64_t n, double cost_each, double budget) {
  return std::max<int64_t>(1, std::min<int64_t>(n, int64_t(budget / std::max(cost_each, 1.0))));
}

CheckResult compare_first(Tensor& out, const Shape& as, int64_t nb, const std::vector<double>& want, const Env& env) {
  out.download(env.stream);
  CheckResult r = compare(to_doubles(narrow(out.host_view(as), 0, 0, nb)), want, env.dtype);
  if (nb < as[0]) r.note = fmt("checked: first %lld sequences", (long long)nb);
  return r;
}

}  // namespace harness
