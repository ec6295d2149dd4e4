// wgmma.cuh — Hopper warpgroup tensor-core primitives (sm_90a only): shared-memory matrix
// descriptors and wgmma.mma_async m64nNk16 with f32 accumulation.
//
// A warpgroup (4 consecutive warps, 128 threads) computes a 64 x N tile. Warp w of the group
// owns rows 16w..16w+15, and within a warp the accumulator and the register A operand have the
// mma.sync m16n8k16 layouts of mma.cuh, one n8 block after another: d[j][0..3] is n8 block j.
// So the softmax state and the S -> P register reuse of the portable kernel carry over as they
// stand.
//
// Shared-memory operands use the 128-byte swizzle: a tile of R rows x 64 16-bit elements (one
// "panel", 128 bytes per row, 1024-byte aligned) stores the 16-byte chunk c of row r at chunk
// c ^ (r % 8). Wider tiles are several panels one after another. Then
//   K-major operand (the reduction dim contiguous: Q and K for S = Q K^T): rows in groups of 8
//     at SBO = 1024 bytes; k-step s (16 elements) starts at panel s / 4, byte 32 * (s % 4).
//   MN-major operand (the output dim contiguous: V for O = P V, "transposed B"): 64 columns per
//     panel, the next 64 at LBO = the panel size; 8-row groups of the reduction dim at SBO = 1024;
//     k-step s starts at row 16 s.
// The async proxy reads these operands: data written by ordinary stores must be fenced
// (fence_proxy_async) first; data landed by TMA needs only its mbarrier.
//
// The instructions are asynchronous: wgmma_fence() before the first of a batch (the accumulator
// registers were touched by ordinary code), wgmma_commit() after the batch, wgmma_wait<N>() before
// the accumulators are read, then fence_operands() so the compiler cannot hoist those reads above
// the wait.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/arch.cuh"
#include "common/types.cuh"

namespace cuattn {

// A shared-memory matrix descriptor with the 128-byte swizzle (layout type 1 in bits 62-63).
// Tiles are 1024-byte aligned, so the base-offset field stays 0.
CUATTN_DEVICE uint64_t wgmma_desc(uint32_t smem_byte_addr, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return uint64_t((smem_byte_addr & 0x3FFFF) >> 4) | uint64_t((lbo_bytes >> 4) & 0x3FFF) << 16 |
         uint64_t((sbo_bytes >> 4) & 0x3FFF) << 32 | uint64_t(1) << 62;
}

CUATTN_DEVICE void wgmma_fence() {
#ifdef CUATTN_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  arch_unsupported();
#endif
}

CUATTN_DEVICE void wgmma_commit() {
#ifdef CUATTN_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// Waits until at most N committed wgmma groups of this warpgroup are pending.
template <int N>
CUATTN_DEVICE void wgmma_wait() {
#ifdef CUATTN_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// An empty asm that "rewrites" every register of an operand array (f32 accumulators, or the
// 16-bit pairs of a register A operand): orders their later reads after wgmma_wait and their
// earlier writes before the next wgmma, and keeps the compiler from reusing an A operand's
// registers while a wgmma may still be reading them.
CUATTN_DEVICE void fence_register(float& x) { asm volatile("" : "+f"(x)::"memory"); }
CUATTN_DEVICE void fence_register(uint32_t& x) { asm volatile("" : "+r"(x)::"memory"); }
template <typename E, int kN>
CUATTN_DEVICE void fence_operands(E (&d)[kN][4]) {
#pragma unroll
  for (int j = 0; j < kN; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) fence_register(d[j][e]);
}

#define CUATTN_ACC4(d, j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define CUATTN_ACC_N64(d)                                                                       \
  CUATTN_ACC4(d, 0), CUATTN_ACC4(d, 1), CUATTN_ACC4(d, 2), CUATTN_ACC4(d, 3), CUATTN_ACC4(d, 4), \
      CUATTN_ACC4(d, 5), CUATTN_ACC4(d, 6), CUATTN_ACC4(d, 7)
#define CUATTN_ACC_N128(d)                                                                          \
  CUATTN_ACC_N64(d), CUATTN_ACC4(d, 8), CUATTN_ACC4(d, 9), CUATTN_ACC4(d, 10), CUATTN_ACC4(d, 11), \
      CUATTN_ACC4(d, 12), CUATTN_ACC4(d, 13), CUATTN_ACC4(d, 14), CUATTN_ACC4(d, 15)
#define CUATTN_REGS_N64                                                                            \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
  "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define CUATTN_REGS_N128                                                                           \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
  "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "   \
  "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "   \
  "%59, %60, %61, %62, %63}"

// D (+)= A B, A and B from shared memory, both K-major (trans-a = trans-b = 0). Operand numbers:
// the N/2 accumulators, then desc_a, desc_b, the accumulate flag.
#define CUATTN_WGMMA_SS(N, DT, A, B, P)                                                       \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " P ", 0;\n"                              \
               " wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." DT "." DT " " CUATTN_REGS_N##N \
               ", " A ", " B ", p, 1, 1, 0, 0;\n}\n"                                         \
               : CUATTN_ACC_N##N(d)                                                          \
               : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)))

// D (+)= A B, A from registers (the mma.sync A fragment of this warp's 16 rows), B from shared
// memory MN-major (trans-b = 1). Operands: accumulators, a[0..3], desc_b, the accumulate flag.
#define CUATTN_WGMMA_RS(N, DT, A, B, P)                                                       \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " P ", 0;\n"                              \
               " wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." DT "." DT " " CUATTN_REGS_N##N \
               ", " A ", " B ", p, 1, 1, 1;\n}\n"                                            \
               : CUATTN_ACC_N##N(d)                                                          \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)))

// S-style product: d[N/8][4] = (accumulate ? d : 0) + A(64 x 16) B(16 x N).
template <typename T, int N>
CUATTN_DEVICE void wgmma_ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
#ifdef CUATTN_SM90A
  static_assert(N == 64 || N == 128, "instantiated for N = 64 and 128");
  if constexpr (N == 64) {
    if constexpr (kIsBf16<T>) CUATTN_WGMMA_SS(64, "bf16", "%32", "%33", "%34");
    else CUATTN_WGMMA_SS(64, "f16", "%32", "%33", "%34");
  } else {
    if constexpr (kIsBf16<T>) CUATTN_WGMMA_SS(128, "bf16", "%64", "%65", "%66");
    else CUATTN_WGMMA_SS(128, "f16", "%64", "%65", "%66");
  }
#else
  arch_unsupported();
#endif
}

// O-style product: d[N/8][4] = (accumulate ? d : 0) + A(64 x 16, registers) B(16 x N, MN-major).
template <typename T, int N>
CUATTN_DEVICE void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
#ifdef CUATTN_SM90A
  static_assert(N == 64 || N == 128, "instantiated for N = 64 and 128");
  if constexpr (N == 64) {
    if constexpr (kIsBf16<T>) CUATTN_WGMMA_RS(64, "bf16", "{%32, %33, %34, %35}", "%36", "%37");
    else CUATTN_WGMMA_RS(64, "f16", "{%32, %33, %34, %35}", "%36", "%37");
  } else {
    if constexpr (kIsBf16<T>) CUATTN_WGMMA_RS(128, "bf16", "{%64, %65, %66, %67}", "%68", "%69");
    else CUATTN_WGMMA_RS(128, "f16", "{%64, %65, %66, %67}", "%68", "%69");
  }
#else
  arch_unsupported();
#endif
}

#undef CUATTN_WGMMA_SS
#undef CUATTN_WGMMA_RS
#undef CUATTN_REGS_N64
#undef CUATTN_REGS_N128
#undef CUATTN_ACC_N64
#undef CUATTN_ACC_N128
#undef CUATTN_ACC4

}  // namespace cuattn
