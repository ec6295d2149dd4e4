// cpu/convert.cpp — element conversions of the CPU backend (float32 <-> float16 / bfloat16 /
// float8 e4m3fn, all rounding to nearest even), strided load/store by dtype
// and row conversion into float32 scratch.
//
// The conversions work on the bit patterns and never depend on the floating-point environment,
// so the results are the same on every host and match the CUDA intrinsics (__float2half_rn,
// __float2bfloat16_rn, __nv_cvt_float_to_fp8 with __NV_SATFINITE).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "backend.h"

namespace cuattn {
namespace cpu {

namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Rounds a non-negative float to an integer, ties to even (x - floor(x) is exact here).
float round_half_even(float x) {
  float f = std::floor(x);
  const float frac = x - f;
  if (frac > 0.5f || (frac == 0.5f && std::fmod(f, 2.0f) != 0.0f)) f += 1.0f;
  return f;
}

[[noreturn]] void unsupported(const char* what, DType t) {
  throw TypeError(std::string("cpu::") + what + ": unsupported dtype " + dtype_name(t));
}

}  // namespace

// ---- float16 ----------------------------------------------------------------------------------

// Branch-free (bit masks; GCC leaves ?: chains as branches), so a loop over it vectorises: the
// 15-bit magnitude shifted into place is a float32 with exponent bias 15 instead of 127; rebias
// it, except inf/NaN (exponent 31 -> 255) and zero/subnormals ((2^-14 + m 2^-24) - 2^-14, exact).
float half_to_float(uint16_t h) {
  const uint32_t shifted = static_cast<uint32_t>(h & 0x7FFFu) << 13;
  const uint32_t exp = shifted & 0x0F800000u;
  const uint32_t normal = shifted + (112u << 23);
  const float subnormal = bits_float(normal + (1u << 23)) - bits_float(113u << 23);
  const uint32_t inf_nan = 0u - (exp == 0x0F800000u), sub = 0u - (exp == 0);  // all-ones masks
  const uint32_t mag = (normal & ~inf_nan & ~sub) | ((normal + (112u << 23)) & inf_nan) |
                       (float_bits(subnormal) & sub);
  return bits_float(mag | (static_cast<uint32_t>(h & 0x8000u) << 16));
}

uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u)  // NaN: keep it a (quiet) NaN
    return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (a < 0x38800000u) {  // below 2^-14: subnormal, a multiple of 2^-24 (1024 -> min normal)
    const float q = round_half_even(bits_float(a) * 16777216.0f);
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(q));
  }
  // Normal: round the 23-bit mantissa to 10 bits (ties to even); a carry bumps the exponent.
  const uint32_t r = a + 0xFFFu + ((a >> 13) & 1u) - (112u << 23);
  return static_cast<uint16_t>(sign | (r >> 13));
}

// ---- bfloat16 ---------------------------------------------------------------------------------

float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // NaN
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// ---- float8 e4m3fn (bias 7, no infinities, S.1111.111 is NaN, max finite 448) -----------------

float fp8_e4m3_to_float(uint8_t v) {
  const uint32_t exp = (v >> 3) & 0xFu;
  const uint32_t mant = v & 0x7u;
  if (exp == 15 && mant == 7) return std::numeric_limits<float>::quiet_NaN();
  const float mag = exp == 0 ? std::ldexp(static_cast<float>(mant), -9)  // subnormal: m * 2^-9
                             : std::ldexp(static_cast<float>(8 + mant), static_cast<int>(exp) - 10);
  return (v & 0x80u) ? -mag : mag;
}

uint8_t float_to_fp8_e4m3(float x) {
  const uint32_t u = float_bits(x);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint8_t>(sign | 0x7Fu);  // NaN
  // Saturate (infinities included): the format has no inf, and 448 is the largest finite value.
  if (bits_float(a) >= 448.0f) return static_cast<uint8_t>(sign | 0x7Eu);
  if (a < 0x3C800000u) {  // below 2^-6: subnormal, a multiple of 2^-9 (8 -> min normal)
    const float q = round_half_even(bits_float(a) * 512.0f);
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(q));
  }
  // Normal: round the 23-bit mantissa to 3 bits (ties to even), then rebias 127 -> 7.
  const uint32_t r = a + 0x7FFFFu + ((a >> 20) & 1u);
  const int exp = static_cast<int>(r >> 23) - 127 + 7;
  const uint32_t mant = (r >> 20) & 0x7u;
  if (exp > 15 || (exp == 15 && mant == 7)) return static_cast<uint8_t>(sign | 0x7Eu);
  return static_cast<uint8_t>(sign | (static_cast<uint32_t>(exp) << 3) | mant);
}

// ---- strided element access -------------------------------------------------------------------

float load(const void* base, DType t, int64_t idx) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[idx];
    case DType::f16: return half_to_float(static_cast<const uint16_t*>(base)[idx]);
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(base)[idx]);
    case DType::fp8_e4m3: return fp8_e4m3_to_float(static_cast<const uint8_t*>(base)[idx]);
    case DType::f64: return static_cast<float>(static_cast<const double*>(base)[idx]);
    default: unsupported("load", t);
  }
}

void store(void* base, DType t, int64_t idx, float x) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[idx] = x; return;
    case DType::f16: static_cast<uint16_t*>(base)[idx] = float_to_half(x); return;
    case DType::bf16: static_cast<uint16_t*>(base)[idx] = float_to_bf16(x); return;
    case DType::fp8_e4m3: static_cast<uint8_t*>(base)[idx] = float_to_fp8_e4m3(x); return;
    case DType::f64: static_cast<double*>(base)[idx] = x; return;
    default: unsupported("store", t);
  }
}

// ---- rows -------------------------------------------------------------------------------------

// The switch is outside the loop, so the float32 case is a vectorised (scaled) copy.
template <class T, class Cvt>
static void convert_loop(const void* base, int64_t idx, int n, float scale, float* dst, Cvt cvt) {
  const T* src = static_cast<const T*>(base) + idx;
  for (int x = 0; x < n; ++x) dst[x] = cvt(src[x]) * scale;
}

void load_row(const void* base, DType t, int64_t idx, int n, float scale, float* dst) {
  switch (t) {
    case DType::f32: return convert_loop<float>(base, idx, n, scale, dst, [](float x) { return x; });
    case DType::f16:
      return convert_loop<uint16_t>(base, idx, n, scale, dst, [](uint16_t x) { return half_to_float(x); });
    case DType::bf16:
      return convert_loop<uint16_t>(base, idx, n, scale, dst, [](uint16_t x) { return bf16_to_float(x); });
    case DType::fp8_e4m3: {
      static const std::array<float, 256> fp8 = [] {  // every code, decoded once
        std::array<float, 256> t{};
        for (int c = 0; c < 256; ++c) t[c] = fp8_e4m3_to_float(static_cast<uint8_t>(c));
        return t;
      }();
      return convert_loop<uint8_t>(base, idx, n, scale, dst, [](uint8_t x) { return fp8[x]; });
    }
    default:
      for (int x = 0; x < n; ++x) dst[x] = load(base, t, idx + x) * scale;
  }
}

}  // namespace cpu
}  // namespace cuattn
