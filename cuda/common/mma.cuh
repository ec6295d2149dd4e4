// mma.cuh — warp-level tensor-core primitives (sm80+): ldmatrix and mma.sync m16n8k16.
//
// Fragment layouts (g = lane / 4, t = lane % 4), for a 16x16 A tile, a 16x8 B tile (k x n) and a
// 16x8 f32 accumulator C:
//   A: a0 = (row g,   cols 2t, 2t+1)   a1 = (row g+8, cols 2t, 2t+1)
//      a2 = (row g,   cols 2t+8, +9)   a3 = (row g+8, cols 2t+8, +9)
//   B: b0 = (k 2t, 2t+1; n g)          b1 = (k 2t+8, 2t+9; n g)
//   C: c0, c1 = (row g, cols 2t, 2t+1) c2, c3 = (row g+8, cols 2t, 2t+1)
// So the accumulators of two adjacent n8 tiles, packed to 16 bits, are exactly an A fragment:
// flash attention feeds P = softmax(S) back into the tensor cores without touching shared memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/arch.cuh"
#include "common/types.cuh"

namespace cuattn {

// The A fragment of k16 step kk from a row of f32 accumulators s[n8 tile][4] (n8 tiles 2 kk and
// 2 kk + 1), rounded to 16 bits: how P = softmax(S) feeds the P V product.
template <typename T, int kN>
CUATTN_DEVICE void acc_to_a(const float (&s)[kN][4], int kk, uint32_t (&a)[4]) {
  a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
  a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
  a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// Four 8x8 b16 matrices; lane l supplies the address of row (l % 8) of matrix (l / 8).
CUATTN_DEVICE void ldmatrix_x4(uint32_t (&r)[4], uint32_t smem) {
#ifdef CUATTN_SM80
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem));
#else
  arch_unsupported();
#endif
}

// As ldmatrix_x4, each 8x8 matrix transposed on the way (for B operands stored k-major).
CUATTN_DEVICE void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t smem) {
#ifdef CUATTN_SM80
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem));
#else
  arch_unsupported();
#endif
}

// D = A * B + D, 16x8x16, f32 accumulation, T = __half or __nv_bfloat16.
#define CUATTN_MMA_16816(DT)                                                                     \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." DT "." DT ".f32 {%0, %1, %2, %3}, "        \
               "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"                                  \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                    \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
template <typename T>
CUATTN_DEVICE void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(kIs16Bit<T>, "mma_m16n8k16: T is __half or __nv_bfloat16");
#ifdef CUATTN_SM80
  if constexpr (kIsBf16<T>) CUATTN_MMA_16816("bf16");
  else CUATTN_MMA_16816("f16");
#else
  arch_unsupported();
#endif
}
#undef CUATTN_MMA_16816

}  // namespace cuattn
