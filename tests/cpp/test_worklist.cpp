// test_worklist.cpp — the decode scheduler's work list (cuattn/worklist.h), standalone (no gtest).
//
// For random batches (zeros, one long sequence among short ones, more CTAs than work, fewer) it
// walks every CTA's share and checks that:
//   - every key of every unit is read exactly once, by pieces that cover whole granules (but the
//     last), and every unit of no keys is written exactly once;
//   - a unit's pieces are its splits 0 .. n-1, split i held by CTA first_cta + i;
//   - split pieces never share a workspace slot, and split_slot finds the slot partial_slot gave;
//   - shares differ by at most one position, and the line is the same for the same lengths;
// then it runs a decode through the list in double precision (each piece's partial softmax, the
// split pieces through their slots, merged in split order by the last one) and compares it with
// the direct softmax of every unit. Where the build has CUDA and a GPU is present, the device
// builder must produce the host builder's integers exactly. Exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cuattn/worklist.h"
#ifdef CUATTN_WITH_CUDA
#include <cuda_runtime.h>

#include "cuattn/launch.h"
#endif

using namespace cuattn;

static int g_failures = 0;
#define EXPECT(cond, ...)                        \
  do {                                           \
    if (!(cond)) {                               \
      if (g_failures++ < 20) {                   \
        std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
        std::printf(__VA_ARGS__);                \
        std::printf("\n");                       \
      }                                          \
    }                                            \
  } while (0)

struct Built {
  WorkListShape s;
  std::vector<int64_t> start;
  std::vector<int32_t> lens, units;  // units: mixed batches only
  WorkList view() const { return WorkList{s, start.data(), lens.data(), units.empty() ? nullptr : units.data()}; }
};

// cu: cu_seqlens_q [batch + 1] of a mixed batch, or empty.
static Built build(const std::vector<int32_t>& lens, WorkListShape s, int64_t max_len,
                   const std::vector<int32_t>& cu = {}) {
  Built b;
  s.batch = int(lens.size());
  b.s = s;
  b.start.resize(lens.size() + 1);
  b.lens.resize(lens.size());
  if (!cu.empty()) b.units.resize(lens.size());
  build_worklist(lens.data(), s, max_len, b.start.data(), b.lens.data(), cu.empty() ? nullptr : cu.data(),
                 cu.empty() ? nullptr : b.units.data());
  return b;
}

// Scores and values of key j of unit (b, u): a deterministic function, so the test needs no arrays.
static double score(int b, int u, int64_t j) { return std::sin(0.37 * b + 1.3 * u + 0.011 * double(j)) * 4.0; }
static double value(int b, int u, int64_t j) { return std::cos(0.23 * b - 0.7 * u + 0.017 * double(j)); }

struct Partial {
  double lse = -INFINITY, o = 0;  // normalised output of its keys
};
static Partial attend(int b, int u, int64_t k0, int64_t k1) {
  double m = -INFINITY;
  for (int64_t j = k0; j < k1; ++j) m = std::max(m, score(b, u, j));
  Partial p;
  if (k0 >= k1) return p;
  double l = 0, o = 0;
  for (int64_t j = k0; j < k1; ++j) {
    const double e = std::exp(score(b, u, j) - m);
    l += e, o += e * value(b, u, j);
  }
  p.lse = m + std::log(l), p.o = o / l;
  return p;
}

static void check_list(const std::vector<int32_t>& raw, const WorkListShape& shape, int64_t max_len,
                       const char* name, const std::vector<int32_t>& cu = {}) {
  const Built built = build(raw, shape, max_len, cu);
  const WorkList list = built.view();
  const WorkListShape& s = built.s;
  const int B = s.batch;
  int U = cu.empty() ? s.units : 0;  // the most units of a sequence (arrays below are [B][U])
  for (int b = 0; b < B && !cu.empty(); ++b) {
    EXPECT(list.units_of(b) == packed_units(int64_t(cu[size_t(b) + 1]) - cu[size_t(b)], s),
           "%s: sequence %d has %d units", name, b, list.units_of(b));
    U = std::max(U, list.units_of(b));
  }
  // Same lengths, same line.
  const Built again = build(raw, shape, max_len, cu);
  EXPECT(again.start == built.start, "%s: the line differs between two builds", name);

  // (A mixed batch whose sequences have no query tokens has an empty line: no CTA is active.)
  const int active = B == 0 ? 0 : list.active_ctas();
  if (B > 0 && list.total() > 0) {
    EXPECT(active >= 1 && active <= s.ctas, "%s: active ctas %d of %d", name, active, s.ctas);
    const int64_t lo = list.total() / active;
    for (int g = 0; g < active; ++g) {
      const int64_t n = list.begin(g + 1) - list.begin(g);
      EXPECT(n == lo || n == lo + 1, "%s: share %d has %lld positions (total %lld, %d ctas)", name, g,
             (long long)n, (long long)list.total(), active);
    }
  }

  // seq_of: the last sequence starting at or before x, at every share's start and at random x.
  if (B > 0 && list.total() > 0) {
    auto brute = [&](int64_t x) {
      int b = 0;
      for (int i = 0; i < B; ++i)
        if (built.start[size_t(i)] <= x) b = i;
      return b;
    };
    std::mt19937_64 xs(uint64_t(list.total()) * 2654435761u + uint64_t(B));
    for (int k = 0; k < active + 64; ++k) {
      const int64_t x = k < active ? list.begin(k) : int64_t(xs() % uint64_t(list.total()));
      EXPECT(list.seq_of(x) == brute(x), "%s: seq_of(%lld) = %d, want %d", name, (long long)x, list.seq_of(x),
             brute(x));
    }
  }

  // Walk every share.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> ranges(size_t(B) * U);
  std::vector<int> empty_writes(size_t(B) * U, 0);
  std::vector<int> slot_used(size_t(2) * std::max(s.ctas, 1), 0);
  std::vector<Partial> slots(slot_used.size());
  std::vector<int> arrived(size_t(B) * U, 0);
  std::vector<double> out(size_t(B) * U, NAN), out_lse(size_t(B) * U, NAN);
  for (int g = 0; g < s.ctas + 2; ++g) {  // CTAs past the active ones must find nothing
    WorkPiece p;
    int64_t last_pos = -1;
    int pieces = 0;
    for (bool more = B > 0 && list.first(g, p); more; more = list.next(g, p)) {
      ++pieces;
      EXPECT(g < active, "%s: inactive cta %d got a piece", name, g);
      EXPECT(p.unit < list.units_of(p.seq), "%s: unit %d of sequence %d (%d units)", name, p.unit, p.seq,
             list.units_of(p.seq));
      const size_t unit = size_t(p.seq) * U + p.unit;
      const int64_t len = built.lens[size_t(p.seq)];
      const int64_t pos = list.seq_start[p.seq] + int64_t(p.unit) * unit_cost(len, s);
      EXPECT(pos > last_pos, "%s: cta %d pieces out of line order", name, g);
      last_pos = pos;
      if (len == 0) {
        EXPECT(p.key_begin == 0 && p.key_end == 0 && p.num_splits == 1, "%s: empty unit piece", name);
        ++empty_writes[unit];
        out[unit] = 0, out_lse[unit] = -INFINITY;
        continue;
      }
      EXPECT(p.key_begin < p.key_end && p.key_end <= len, "%s: piece keys [%lld, %lld) of len %lld", name,
             (long long)p.key_begin, (long long)p.key_end, (long long)len);
      EXPECT(p.key_begin % s.granule == 0, "%s: piece starts inside a granule", name);
      EXPECT(p.key_end == len || p.key_end % s.granule == 0, "%s: piece ends inside a granule", name);
      EXPECT(p.first_cta + p.split == g, "%s: split %d of first cta %d held by cta %d", name, p.split,
             p.first_cta, g);
      EXPECT(p.split >= 0 && p.split < p.num_splits, "%s: split %d of %d", name, p.split, p.num_splits);
      ranges[unit].push_back({p.key_begin, p.key_end});
      const Partial part = attend(p.seq, p.unit, p.key_begin, p.key_end);
      if (p.num_splits == 1) {
        out[unit] = part.o, out_lse[unit] = part.lse;
        continue;
      }
      const int slot = partial_slot(g, p.split);
      EXPECT(slot >= 0 && slot < int(slot_used.size()), "%s: slot %d out of range", name, slot);
      EXPECT(slot_used[size_t(slot)] == 0, "%s: slot %d written twice", name, slot);
      EXPECT(split_slot(p.first_cta, p.split) == slot, "%s: split_slot disagrees", name);
      slot_used[size_t(slot)] = 1;
      slots[size_t(slot)] = part;
      // The last piece of the unit to arrive merges all of them, in split order.
      if (++arrived[unit] == p.num_splits) {
        double m = -INFINITY;
        for (int i = 0; i < p.num_splits; ++i) m = std::max(m, slots[size_t(split_slot(p.first_cta, i))].lse);
        double l = 0, o = 0;
        for (int i = 0; i < p.num_splits; ++i) {
          const Partial& q = slots[size_t(split_slot(p.first_cta, i))];
          const double w = std::exp(q.lse - m);
          l += w, o += w * q.o;
        }
        out[unit] = o / l, out_lse[unit] = m + std::log(l);
      }
    }
    EXPECT(g < active || pieces == 0, "%s: cta %d", name, g);
  }

  double worst = 0;
  for (int b = 0; b < B; ++b)
    for (int u = 0; u < U; ++u) {
      const size_t unit = size_t(b) * U + u;
      if (u >= list.units_of(b)) continue;
      const int64_t len = built.lens[size_t(b)];
      if (len == 0) {
        EXPECT(empty_writes[unit] == 1, "%s: empty unit (%d, %d) written %d times", name, b, u, empty_writes[unit]);
        continue;
      }
      auto r = ranges[unit];
      std::sort(r.begin(), r.end());
      int64_t at = 0;
      for (auto& x : r) {
        EXPECT(x.first == at, "%s: unit (%d, %d) keys from %lld read from %lld", name, b, u, (long long)at,
               (long long)x.first);
        at = x.second;
      }
      EXPECT(at == len, "%s: unit (%d, %d) read up to %lld of %lld", name, b, u, (long long)at, (long long)len);
      const Partial ref = attend(b, u, 0, len);
      EXPECT(std::isfinite(out[unit]), "%s: unit (%d, %d) has no output", name, b, u);
      worst = std::max({worst, std::abs(out[unit] - ref.o), std::abs(out_lse[unit] - ref.lse)});
    }
  EXPECT(worst < 1e-9, "%s: merged result off by %g", name, worst);
}

// cu_seqlens_q of a mixed batch: decodes (1 token), chunked prefills (up to max_tokens), and
// sequences of no query tokens.
template <class Uni>
static std::vector<int32_t> mixed_cu(int B, int max_tokens, Uni&& uni) {
  std::vector<int32_t> cu(size_t(B) + 1, 0);
  for (int b = 0; b < B; ++b) {
    const int kind = uni(0, 3);
    cu[size_t(b) + 1] = cu[size_t(b)] + (kind == 0 ? 0 : kind == 1 ? uni(1, max_tokens) : 1);
  }
  return cu;
}
#ifdef CUATTN_WITH_CUDA
// The device builder against the host one, on the same lengths (raw: negatives and lengths past
// max_len included, which both clamp).
static bool device_builder_matches(const std::vector<int32_t>& raw, WorkListShape s, int64_t max_len,
                                   const std::vector<int32_t>& cu = {}) {
  s.batch = int(raw.size());
  const Built host = build(raw, s, max_len, cu);
  int32_t *d_lens = nullptr, *d_clamped = nullptr, *d_cu = nullptr, *d_units = nullptr;
  int64_t* d_start = nullptr;
  const size_t n = std::max<size_t>(raw.size(), 1);
  if (cudaMalloc(&d_lens, n * 4) != cudaSuccess || cudaMalloc(&d_clamped, n * 4) != cudaSuccess ||
      cudaMalloc(&d_start, (n + 1) * 8) != cudaSuccess || cudaMalloc(&d_cu, (n + 1) * 4) != cudaSuccess ||
      cudaMalloc(&d_units, n * 4) != cudaSuccess) {
    std::printf("FAIL: cudaMalloc\n");
    return false;
  }
  cudaMemcpy(d_lens, raw.data(), raw.size() * 4, cudaMemcpyHostToDevice);
  if (!cu.empty()) cudaMemcpy(d_cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice);
  kernels::build_worklist(d_lens, s, max_len, d_start, d_clamped, nullptr, cu.empty() ? nullptr : d_cu, d_units);
  std::vector<int64_t> start(raw.size() + 1);
  std::vector<int32_t> clamped(raw.size()), units(cu.empty() ? 0 : raw.size());
  cudaMemcpy(start.data(), d_start, start.size() * 8, cudaMemcpyDeviceToHost);
  cudaMemcpy(clamped.data(), d_clamped, clamped.size() * 4, cudaMemcpyDeviceToHost);
  if (!cu.empty()) cudaMemcpy(units.data(), d_units, units.size() * 4, cudaMemcpyDeviceToHost);
  const bool ok = cudaDeviceSynchronize() == cudaSuccess && start == host.start && clamped == host.lens &&
                  units == host.units;
  cudaFree(d_lens), cudaFree(d_clamped), cudaFree(d_start), cudaFree(d_cu), cudaFree(d_units);
  return ok;
}

#endif

int main() {
  std::mt19937 rng(20261204);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  int cases = 0;
  // Named shapes: the skewed serving batch, a lone long sequence, zeros, one CTA, more CTAs than work.
  struct Named {
    const char* name;
    std::vector<int32_t> lens;
    WorkListShape s;
  };
  std::vector<int32_t> skew(64, 256);
  skew[0] = 65536;
  std::vector<Named> named = {
      {"skew 1x65536+63x256, 8 units, 132 ctas", skew, {0, 8, 64, 2, 132}},
      {"B1 L32768, 8 units, 132 ctas", {32768}, {0, 8, 64, 2, 132}},
      {"all zero", {0, 0, 0}, {0, 3, 16, 1, 7}},
      {"zeros among others", {0, 5, 0, 1000, 0}, {0, 2, 16, 3, 9}},
      {"one cta", {17, 300, 4}, {0, 4, 64, 1, 1}},
      {"more ctas than positions", {1, 1}, {0, 1, 64, 1, 132}},
      {"granule 1", {7, 13, 2}, {0, 5, 1, 1, 11}},
  };
  for (auto& c : named) {
    check_list(c.lens, c.s, 1 << 30, c.name), ++cases;
  }
  for (int it = 0; it < 400; ++it) {
    const int B = uni(1, it % 10 == 0 ? 700 : 40);
    std::vector<int32_t> lens(static_cast<size_t>(B));
    const int kind = uni(0, 3);
    for (auto& l : lens) {
      l = kind == 0 ? uni(0, 3000) : kind == 1 ? (uni(0, 4) == 0 ? 0 : uni(1, 70)) : uni(-5, 500);
    }
    if (B > 40)
      for (auto& l : lens) l %= 200;  // many sequences: short ones (the oracle reads every key)
    if (kind == 3) lens[size_t(uni(0, B - 1))] = uni(5000, 70000);
    WorkListShape s;
    s.units = uni(1, 9);
    s.granule = std::vector<int>{1, 3, 16, 64, 128}[size_t(uni(0, 4))];
    s.overhead = uni(1, 6);
    s.ctas = uni(0, 3) == 0 ? uni(1, 4) : uni(1, 300);
    const int64_t max_len = uni(0, 4) == 0 ? uni(1, 400) : (1 << 30);
    const std::string name = "random " + std::to_string(it);
    check_list(lens, s, max_len, name.c_str()), ++cases;
  }
  // Mixed batches: 8 chunked prefills of 512 tokens over 4096 cached beside 56 decodes (GQA 32/8:
  // 4 rows a token), then random ones.
  {
    std::vector<int32_t> lens(64, 4096), cu(65, 0);
    for (int b = 0; b < 64; ++b) cu[size_t(b) + 1] = cu[size_t(b)] + (b < 8 ? 512 : 1);
    WorkListShape s{0, 0, 64, 2, 132};
    s.heads_kv = 8, s.group = 4, s.rows = 16, s.max_tokens = 512;
    check_list(lens, s, 1 << 30, "mixed 8 x 512 + 56 x 1 tokens", cu), ++cases;
  }
  for (int it = 0; it < 150; ++it) {
    const int B = uni(1, 30);
    std::vector<int32_t> lens(static_cast<size_t>(B));
    for (auto& l : lens) l = uni(0, 4) == 0 ? 0 : uni(1, 900);
    WorkListShape s;
    s.granule = std::vector<int>{1, 16, 64}[size_t(uni(0, 2))];
    s.overhead = uni(1, 4);
    s.ctas = uni(1, 200);
    s.heads_kv = uni(1, 4), s.group = uni(1, 8), s.rows = 16, s.max_tokens = uni(1, 40);
    const std::string name = "mixed " + std::to_string(it);
    check_list(lens, s, 1 << 30, name.c_str(), mixed_cu(B, s.max_tokens, uni)), ++cases;
  }
  std::printf("worklist: %d cases, %d failures\n", cases, g_failures);
#ifdef CUATTN_WITH_CUDA
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    int gpu_cases = 0;
    for (int it = 0; it < 50; ++it) {
      const int B = it < 5 ? std::vector<int>{1, 2, 1023, 1024, 5000}[size_t(it)] : uni(1, 3000);
      std::vector<int32_t> lens(static_cast<size_t>(B));
      for (auto& l : lens) l = uni(-3, 9000);
      WorkListShape s{0, uni(1, 16), 64, uni(1, 5), 132};
      s.heads_kv = uni(1, 8), s.group = uni(1, 8), s.max_tokens = uni(1, 600);
      const std::vector<int32_t> cu = it % 2 ? mixed_cu(B, s.max_tokens + 5, uni) : std::vector<int32_t>{};
      if (!device_builder_matches(lens, s, uni(0, 1) ? 4096 : (1 << 30), cu)) {
        std::printf("FAIL: the device builder differs from the host one (batch %d)\n", B);
        ++g_failures;
      }
      ++gpu_cases;
    }
    std::printf("worklist device builder: %d cases\n", gpu_cases);
  } else {
    std::printf("worklist device builder: skipped (no GPU)\n");
  }
#endif
  return g_failures == 0 ? 0 : 1;
}
