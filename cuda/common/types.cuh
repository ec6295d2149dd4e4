// types.cuh — the element types the kernels take and the few conversions they need.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <type_traits>

#include "common/arch.cuh"

namespace cuattn {

// The 16-bit element types of q/k/v/o, told apart at compile time (for PTX type suffixes).
template <typename T>
constexpr bool kIsBf16 = std::is_same_v<T, __nv_bfloat16>;
template <typename T>
constexpr bool kIs16Bit = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

// Packs two floats into one 32-bit register of two 16-bit values (low = a), round to nearest.
template <typename T>
CUATTN_DEVICE uint32_t pack2(float a, float b);
template <>
CUATTN_DEVICE uint32_t pack2<__half>(float a, float b) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
CUATTN_DEVICE uint32_t pack2<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Unpacks a 32-bit register of two 16-bit values into floats.
template <typename T>
CUATTN_DEVICE float2 unpack2(uint32_t v);
template <>
CUATTN_DEVICE float2 unpack2<__half>(uint32_t v) {
  return __half22float2(*reinterpret_cast<__half2*>(&v));
}
template <>
CUATTN_DEVICE float2 unpack2<__nv_bfloat16>(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&v));
}

template <typename T>
CUATTN_DEVICE float to_float(T x) {
  return static_cast<float>(x);
}
template <typename T>
CUATTN_DEVICE T from_float(float x);
template <>
CUATTN_DEVICE __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
CUATTN_DEVICE __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Two fp8 e4m3 values (low byte first) -> two f16s, exactly (every e4m3 value is an f16): one
// instruction on sm_89 and later.
CUATTN_DEVICE uint32_t fp8x2_to_f16x2(uint16_t v) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(v), __NV_E4M3);
  return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

// n / d and n % d for 0 <= n < 2^31 and a divisor d >= 1 fixed for the whole kernel, without the
// ~20-instruction integer division: q = (umulhi(n, m) + n) >> s with s = ceil(log2 d) and
// m = floor(2^32 (2^s - d) / d) + 1 (Granlund & Montgomery). Powers of two get m = 1: a shift.
struct FastDivmod {
  int d;
  uint32_t m;
  int s;
  CUATTN_DEVICE explicit FastDivmod(int divisor) : d(max(divisor, 1)) {
    s = d == 1 ? 0 : 32 - __clz(d - 1);
    m = uint32_t((uint64_t(1) << 32) * ((uint64_t(1) << s) - d) / d + 1);
  }
  CUATTN_DEVICE int div(int n) const { return int((__umulhi(uint32_t(n), m) + uint32_t(n)) >> s); }
  CUATTN_DEVICE int mod(int n, int q) const { return n - q * d; }  // q = div(n)
};

}  // namespace cuattn
