// test_harness.cpp — unit tests of the programs' harness (cpp/programs): its own dtype conversions
// against the library's (two implementations of the same rounding rules, every 16-bit and 8-bit
// pattern plus random floats), its float64 reference attention against a case worked out by
// hand and against a second formulation, the error measure (NaN and a wrong result must fail),
// and the memory refusal. Standalone (no gtest); exits non-zero on any failure.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend.h"  // the library's conversions, to compare with the harness's own
#include "harness.h"

using namespace harness;

static int failures = 0;

static void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    printf("FAIL %s\n", what.c_str());
  }
}

static bool same(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// Decoding every bit pattern, and re-encoding what it decodes to, agree with the library.
static void test_conversions_exhaustive() {
  int bad = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t h = uint16_t(b);
    const double f16 = to_double(DType::f16, &h, 0), bf = to_double(DType::bf16, &h, 0);
    bad += !same(f16, cuattn::cpu::half_to_float(h)) || !same(bf, cuattn::cpu::bf16_to_float(h));
    if (!std::isnan(f16)) {
      uint16_t back = 0;
      from_double(DType::f16, &back, 0, f16);
      bad += back != h;
    }
    if (!std::isnan(bf)) {
      uint16_t back = 0;
      from_double(DType::bf16, &back, 0, bf);
      bad += back != h;
    }
  }
  for (uint32_t b = 0; b < 256; ++b) {
    const uint8_t e = uint8_t(b);
    const double x = to_double(DType::fp8_e4m3, &e, 0);
    bad += !same(x, cuattn::cpu::fp8_e4m3_to_float(e));
    if (!std::isnan(x)) {
      uint8_t back = 0;
      from_double(DType::fp8_e4m3, &back, 0, x);
      bad += back != e;
    }
  }
  expect(bad == 0, fmt("exhaustive decode / re-encode: %d mismatches", bad));
}

// Rounding of random floats over many binades, ties included, agrees with the library.
static void test_conversions_random() {
  std::mt19937_64 rng(12345);
  int bad = 0;
  for (int i = 0; i < 2000000; ++i) {
    float x;
    if (i % 4 == 0) {  // an exact tie between two f16 / bf16 / fp8 neighbours
      const uint32_t bits = uint32_t(rng()) & 0xffffe000u;
      std::memcpy(&x, &bits, 4);
      x += std::ldexp(std::fabs(x) > 0 ? std::fabs(x) : 1.0f, -11 - int(rng() % 3));
    } else {
      x = float(std::ldexp(double(int64_t(rng() >> 11)) * 0x1p-53 * (rng() & 1 ? 1 : -1), int(rng() % 60) - 40));
    }
    uint16_t h = 0, bf = 0;
    uint8_t e = 0;
    from_double(DType::f16, &h, 0, x);
    from_double(DType::bf16, &bf, 0, x);
    from_double(DType::fp8_e4m3, &e, 0, x);
    if (std::isnan(x)) {  // any NaN (payloads may differ)
      bad += !std::isnan(to_double(DType::f16, &h, 0)) || !std::isnan(to_double(DType::bf16, &bf, 0)) ||
             !std::isnan(to_double(DType::fp8_e4m3, &e, 0));
      continue;
    }
    bad += h != cuattn::cpu::float_to_half(x);
    bad += bf != cuattn::cpu::float_to_bf16(x);
    bad += e != cuattn::cpu::float_to_fp8_e4m3(x);
  }
  expect(bad == 0, fmt("random rounding: %d mismatches", bad));
  // Fixed points: f16 overflow to inf, fp8 saturation, bf16 round to even.
  uint16_t h = 0;
  uint8_t e = 0;
  from_double(DType::f16, &h, 0, 65520.0);
  expect(h == 0x7c00, "f16(65520) = inf");
  from_double(DType::fp8_e4m3, &e, 0, 1e6);
  expect(e == 0x7e, "fp8(1e6) saturates to 448");
  from_double(DType::bf16, &h, 0, 1.0 + 0x1p-8);
  expect(h == 0x3f80, "bf16(1 + 2^-8) rounds to even (1)");
}

// Two queries, three keys, D = 1: the softmax weights written out by hand.
static void test_reference_by_hand() {
  double q[2] = {1.0, 0.0}, k[3] = {0.0, 1.0, 2.0}, v[3] = {1.0, 2.0, 4.0};
  const TensorView qv = cuattn::make_view(q, DType::f64, {1, 2, 1, 1});
  const TensorView kv = cuattn::make_view(k, DType::f64, {1, 3, 1, 1});
  const TensorView vv = cuattn::make_view(v, DType::f64, {1, 3, 1, 1});
  Mask causal;
  causal.causal = true;  // offset 1: query 0 sees keys 0, 1; query 1 sees all three
  const std::vector<double> o = reference_attention(qv, kv, vv, causal, 1.0, Slice{1, 1, 2, true});
  const double w0 = 1.0 / (1.0 + std::exp(1.0)), row0 = w0 * 1.0 + (1 - w0) * 2.0, row1 = (1 + 2 + 4) / 3.0;
  expect(o.size() == 2 && std::fabs(o[0] - row0) < 1e-15 && std::fabs(o[1] - row1) < 1e-15,
         fmt("reference by hand: got %.17g %.17g, want %.17g %.17g", o[0], o[1], row0, row1));
  Mask none;
  none.visible = [](int64_t, int64_t) { return false; };
  const std::vector<double> empty = reference_attention(qv, kv, vv, none, 1.0, Slice{1, 1, 2, true});
  expect(empty[0] == 0 && empty[1] == 0, "a row without a visible key is 0");
}

// The sliced reference equals the whole reference restricted to the slice, for GQA, a window and
// a bhsd-ordered input seen through transpose().
static void test_reference_slice() {
  const int64_t B = 2, S = 37, Hq = 4, Hkv = 2, D = 16;
  std::vector<double> q(size_t(B * Hq * S * D)), k(size_t(B * S * Hkv * D)), v(k.size());
  std::mt19937_64 rng(7);
  std::normal_distribution<double> n;
  for (auto* x : {&q, &k, &v})
    for (double& e : *x) e = n(rng);
  const TensorView qv = transpose(cuattn::make_view(q.data(), DType::f64, {B, Hq, S, D}), 1, 2);
  const TensorView kv = cuattn::make_view(k.data(), DType::f64, {B, S, Hkv, D});
  const TensorView vv = cuattn::make_view(v.data(), DType::f64, {B, S, Hkv, D});
  Mask m;
  m.causal = true, m.left = 5;
  const std::vector<double> whole = reference_attention(qv, kv, vv, m, -1, Slice{B, Hkv, S, true});
  const Slice s{1, 1, 9, false};
  const std::vector<double> part = reference_attention(qv, kv, vv, m, -1, s);
  const TensorView wv = cuattn::make_view(const_cast<double*>(whole.data()), DType::f64, {B, S, Hq, D});
  const std::vector<double> cut = slice_of(wv, Hq / Hkv, s);
  expect(compare(part, cut, DType::f32).rel_l2 == 0, "sliced reference = slice of the whole reference");
}

// compare(): within tolerance passes; a NaN, a wrong result and a size mismatch fail.
static void test_compare() {
  std::vector<double> want = {1, -2, 3, 0.5}, got = want;
  expect(compare(got, want, DType::bf16).ok, "equal results pass");
  got[1] = NAN;
  expect(!compare(got, want, DType::bf16).ok, "a NaN fails");
  got = want;
  got[2] = 3.2;
  expect(!compare(got, want, DType::f16).ok, "a 5 % error fails at f16");
  expect(!compare({1, 2}, want, DType::bf16).ok, "a size mismatch fails");
}

static void test_memory_refusal() {
  bool refused = false;
  try {
    Tensor t({int64_t(1) << 40, 1024}, DType::f32, cuattn::DeviceType::cpu);
  } catch (const TooLarge& e) {
    refused = std::string(e.what()).find("needs") != std::string::npos;
  }
  expect(refused, "a 4 PiB tensor is refused before allocating, with the bytes needed");
  refused = false;
  try {
    Tensor t({int64_t(1) << 40, int64_t(1) << 40}, DType::f32, cuattn::DeviceType::cpu);
  } catch (const TooLarge&) {
    refused = true;
  }
  expect(refused, "a shape whose byte count overflows int64 is refused");
}

int main() {
  test_conversions_exhaustive();
  test_conversions_random();
  test_reference_by_hand();
  test_reference_slice();
  test_compare();
  test_memory_refusal();
  printf("test_harness: %s\n", failures ? fmt("%d FAILED", failures).c_str() : "all passed");
  return failures ? 1 : 0;
}
