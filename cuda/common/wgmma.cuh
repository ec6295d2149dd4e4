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

// Four 8x8 b16 matrices to shared memory, each transposed on the way (sm_90): register r[m] of
// lane l holds (row l / 4, columns 2 (l % 4), + 1) of matrix m, the accumulator pair layout, and
// lane l supplies the address of row (l % 8) of stored matrix (l / 8), i.e. of column l % 8 of
// the registers' matrix. How transposed scores (S^T) become a K-major P^T operand.
CUATTN_DEVICE void stmatrix_x4_trans(uint32_t smem, const uint32_t (&r)[4]) {
#ifdef CUATTN_SM90
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(smem), "r"(r[0]),
               "r"(r[1]), "r"(r[2]), "r"(r[3])
               : "memory");
#else
  arch_unsupported();
#endif
}

// ---- one family for every width N = 8, 16, ..., 256 --------------------------------------------
// Inline asm names its operands by number, and an m64nNk16 product has N / 2 accumulator
// operands (%0 .. %(N/2 - 1), n8 block j = d[j][0..3]) before its inputs. The tables below give,
// for k = N / 8 n8 blocks: CUATTN_ACC_k(d) the accumulator operands, CUATTN_REGS_k their register
// list, CUATTN_NEXT_k the names of the six operands after them (the inputs). CUATTN_WGMMA_WIDTHS
// lists the (N, k) pairs; each wrapper picks its own with `if constexpr`.
#define CUATTN_ACC4(d, j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define CUATTN_ACC_1(d) CUATTN_ACC4(d, 0)
#define CUATTN_ACC_2(d) CUATTN_ACC_1(d), CUATTN_ACC4(d, 1)
#define CUATTN_ACC_3(d) CUATTN_ACC_2(d), CUATTN_ACC4(d, 2)
#define CUATTN_ACC_4(d) CUATTN_ACC_3(d), CUATTN_ACC4(d, 3)
#define CUATTN_ACC_5(d) CUATTN_ACC_4(d), CUATTN_ACC4(d, 4)
#define CUATTN_ACC_6(d) CUATTN_ACC_5(d), CUATTN_ACC4(d, 5)
#define CUATTN_ACC_7(d) CUATTN_ACC_6(d), CUATTN_ACC4(d, 6)
#define CUATTN_ACC_8(d) CUATTN_ACC_7(d), CUATTN_ACC4(d, 7)
#define CUATTN_ACC_9(d) CUATTN_ACC_8(d), CUATTN_ACC4(d, 8)
#define CUATTN_ACC_10(d) CUATTN_ACC_9(d), CUATTN_ACC4(d, 9)
#define CUATTN_ACC_11(d) CUATTN_ACC_10(d), CUATTN_ACC4(d, 10)
#define CUATTN_ACC_12(d) CUATTN_ACC_11(d), CUATTN_ACC4(d, 11)
#define CUATTN_ACC_13(d) CUATTN_ACC_12(d), CUATTN_ACC4(d, 12)
#define CUATTN_ACC_14(d) CUATTN_ACC_13(d), CUATTN_ACC4(d, 13)
#define CUATTN_ACC_15(d) CUATTN_ACC_14(d), CUATTN_ACC4(d, 14)
#define CUATTN_ACC_16(d) CUATTN_ACC_15(d), CUATTN_ACC4(d, 15)
#define CUATTN_ACC_17(d) CUATTN_ACC_16(d), CUATTN_ACC4(d, 16)
#define CUATTN_ACC_18(d) CUATTN_ACC_17(d), CUATTN_ACC4(d, 17)
#define CUATTN_ACC_19(d) CUATTN_ACC_18(d), CUATTN_ACC4(d, 18)
#define CUATTN_ACC_20(d) CUATTN_ACC_19(d), CUATTN_ACC4(d, 19)
#define CUATTN_ACC_21(d) CUATTN_ACC_20(d), CUATTN_ACC4(d, 20)
#define CUATTN_ACC_22(d) CUATTN_ACC_21(d), CUATTN_ACC4(d, 21)
#define CUATTN_ACC_23(d) CUATTN_ACC_22(d), CUATTN_ACC4(d, 22)
#define CUATTN_ACC_24(d) CUATTN_ACC_23(d), CUATTN_ACC4(d, 23)
#define CUATTN_ACC_25(d) CUATTN_ACC_24(d), CUATTN_ACC4(d, 24)
#define CUATTN_ACC_26(d) CUATTN_ACC_25(d), CUATTN_ACC4(d, 25)
#define CUATTN_ACC_27(d) CUATTN_ACC_26(d), CUATTN_ACC4(d, 26)
#define CUATTN_ACC_28(d) CUATTN_ACC_27(d), CUATTN_ACC4(d, 27)
#define CUATTN_ACC_29(d) CUATTN_ACC_28(d), CUATTN_ACC4(d, 28)
#define CUATTN_ACC_30(d) CUATTN_ACC_29(d), CUATTN_ACC4(d, 29)
#define CUATTN_ACC_31(d) CUATTN_ACC_30(d), CUATTN_ACC4(d, 30)
#define CUATTN_ACC_32(d) CUATTN_ACC_31(d), CUATTN_ACC4(d, 31)
#define CUATTN_REGS_1 "%0, %1, %2, %3"
#define CUATTN_REGS_2 CUATTN_REGS_1 ", %4, %5, %6, %7"
#define CUATTN_REGS_3 CUATTN_REGS_2 ", %8, %9, %10, %11"
#define CUATTN_REGS_4 CUATTN_REGS_3 ", %12, %13, %14, %15"
#define CUATTN_REGS_5 CUATTN_REGS_4 ", %16, %17, %18, %19"
#define CUATTN_REGS_6 CUATTN_REGS_5 ", %20, %21, %22, %23"
#define CUATTN_REGS_7 CUATTN_REGS_6 ", %24, %25, %26, %27"
#define CUATTN_REGS_8 CUATTN_REGS_7 ", %28, %29, %30, %31"
#define CUATTN_REGS_9 CUATTN_REGS_8 ", %32, %33, %34, %35"
#define CUATTN_REGS_10 CUATTN_REGS_9 ", %36, %37, %38, %39"
#define CUATTN_REGS_11 CUATTN_REGS_10 ", %40, %41, %42, %43"
#define CUATTN_REGS_12 CUATTN_REGS_11 ", %44, %45, %46, %47"
#define CUATTN_REGS_13 CUATTN_REGS_12 ", %48, %49, %50, %51"
#define CUATTN_REGS_14 CUATTN_REGS_13 ", %52, %53, %54, %55"
#define CUATTN_REGS_15 CUATTN_REGS_14 ", %56, %57, %58, %59"
#define CUATTN_REGS_16 CUATTN_REGS_15 ", %60, %61, %62, %63"
#define CUATTN_REGS_17 CUATTN_REGS_16 ", %64, %65, %66, %67"
#define CUATTN_REGS_18 CUATTN_REGS_17 ", %68, %69, %70, %71"
#define CUATTN_REGS_19 CUATTN_REGS_18 ", %72, %73, %74, %75"
#define CUATTN_REGS_20 CUATTN_REGS_19 ", %76, %77, %78, %79"
#define CUATTN_REGS_21 CUATTN_REGS_20 ", %80, %81, %82, %83"
#define CUATTN_REGS_22 CUATTN_REGS_21 ", %84, %85, %86, %87"
#define CUATTN_REGS_23 CUATTN_REGS_22 ", %88, %89, %90, %91"
#define CUATTN_REGS_24 CUATTN_REGS_23 ", %92, %93, %94, %95"
#define CUATTN_REGS_25 CUATTN_REGS_24 ", %96, %97, %98, %99"
#define CUATTN_REGS_26 CUATTN_REGS_25 ", %100, %101, %102, %103"
#define CUATTN_REGS_27 CUATTN_REGS_26 ", %104, %105, %106, %107"
#define CUATTN_REGS_28 CUATTN_REGS_27 ", %108, %109, %110, %111"
#define CUATTN_REGS_29 CUATTN_REGS_28 ", %112, %113, %114, %115"
#define CUATTN_REGS_30 CUATTN_REGS_29 ", %116, %117, %118, %119"
#define CUATTN_REGS_31 CUATTN_REGS_30 ", %120, %121, %122, %123"
#define CUATTN_REGS_32 CUATTN_REGS_31 ", %124, %125, %126, %127"
#define CUATTN_NEXT_1 "%4", "%5", "%6", "%7", "%8", "%9"
#define CUATTN_NEXT_2 "%8", "%9", "%10", "%11", "%12", "%13"
#define CUATTN_NEXT_3 "%12", "%13", "%14", "%15", "%16", "%17"
#define CUATTN_NEXT_4 "%16", "%17", "%18", "%19", "%20", "%21"
#define CUATTN_NEXT_5 "%20", "%21", "%22", "%23", "%24", "%25"
#define CUATTN_NEXT_6 "%24", "%25", "%26", "%27", "%28", "%29"
#define CUATTN_NEXT_7 "%28", "%29", "%30", "%31", "%32", "%33"
#define CUATTN_NEXT_8 "%32", "%33", "%34", "%35", "%36", "%37"
#define CUATTN_NEXT_9 "%36", "%37", "%38", "%39", "%40", "%41"
#define CUATTN_NEXT_10 "%40", "%41", "%42", "%43", "%44", "%45"
#define CUATTN_NEXT_11 "%44", "%45", "%46", "%47", "%48", "%49"
#define CUATTN_NEXT_12 "%48", "%49", "%50", "%51", "%52", "%53"
#define CUATTN_NEXT_13 "%52", "%53", "%54", "%55", "%56", "%57"
#define CUATTN_NEXT_14 "%56", "%57", "%58", "%59", "%60", "%61"
#define CUATTN_NEXT_15 "%60", "%61", "%62", "%63", "%64", "%65"
#define CUATTN_NEXT_16 "%64", "%65", "%66", "%67", "%68", "%69"
#define CUATTN_NEXT_17 "%68", "%69", "%70", "%71", "%72", "%73"
#define CUATTN_NEXT_18 "%72", "%73", "%74", "%75", "%76", "%77"
#define CUATTN_NEXT_19 "%76", "%77", "%78", "%79", "%80", "%81"
#define CUATTN_NEXT_20 "%80", "%81", "%82", "%83", "%84", "%85"
#define CUATTN_NEXT_21 "%84", "%85", "%86", "%87", "%88", "%89"
#define CUATTN_NEXT_22 "%88", "%89", "%90", "%91", "%92", "%93"
#define CUATTN_NEXT_23 "%92", "%93", "%94", "%95", "%96", "%97"
#define CUATTN_NEXT_24 "%96", "%97", "%98", "%99", "%100", "%101"
#define CUATTN_NEXT_25 "%100", "%101", "%102", "%103", "%104", "%105"
#define CUATTN_NEXT_26 "%104", "%105", "%106", "%107", "%108", "%109"
#define CUATTN_NEXT_27 "%108", "%109", "%110", "%111", "%112", "%113"
#define CUATTN_NEXT_28 "%112", "%113", "%114", "%115", "%116", "%117"
#define CUATTN_NEXT_29 "%116", "%117", "%118", "%119", "%120", "%121"
#define CUATTN_NEXT_30 "%120", "%121", "%122", "%123", "%124", "%125"
#define CUATTN_NEXT_31 "%124", "%125", "%126", "%127", "%128", "%129"
#define CUATTN_NEXT_32 "%128", "%129", "%130", "%131", "%132", "%133"
#define CUATTN_WGMMA_WIDTHS(X) \
  X(8, 1) X(16, 2) X(24, 3) X(32, 4) X(40, 5) X(48, 6) X(56, 7) X(64, 8) \
  X(72, 9) X(80, 10) X(88, 11) X(96, 12) X(104, 13) X(112, 14) X(120, 15) X(128, 16) \
  X(136, 17) X(144, 18) X(152, 19) X(160, 20) X(168, 21) X(176, 22) X(184, 23) X(192, 24) \
  X(200, 25) X(208, 26) X(216, 27) X(224, 28) X(232, 29) X(240, 30) X(248, 31) X(256, 32)

// D (+)= A B, A and B from shared memory, each K-major ("0") or MN-major ("1"): TA, TB.
// Inputs: desc_a, desc_b, the accumulate flag.
#define CUATTN_WGMMA_SS(N, K, DT, TA, TB) CUATTN_WGMMA_SS_(N, K, DT, TA, TB, CUATTN_NEXT_##K)
#define CUATTN_WGMMA_SS_(N, K, DT, TA, TB, ...) CUATTN_WGMMA_SS__(N, K, DT, TA, TB, __VA_ARGS__)
#define CUATTN_WGMMA_SS__(N, K, DT, TA, TB, A, B, P, ...)                                     \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " P ", 0;\n"                              \
               " wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." DT "." DT " {" CUATTN_REGS_##K \
               "}, " A ", " B ", p, 1, 1, " TA ", " TB ";\n}\n"                             \
               : CUATTN_ACC_##K(d)                                                           \
               : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)))

// D (+)= A B, A from registers (the mma.sync A fragment of this warp's 16 rows), B from shared
// memory MN-major (trans-b = 1). Inputs: a[0..3], desc_b, the accumulate flag.
#define CUATTN_WGMMA_RS(N, K, DT) CUATTN_WGMMA_RS_(N, K, DT, CUATTN_NEXT_##K)
#define CUATTN_WGMMA_RS_(N, K, DT, ...) CUATTN_WGMMA_RS__(N, K, DT, __VA_ARGS__)
#define CUATTN_WGMMA_RS__(N, K, DT, A0, A1, A2, A3, B, P)                                    \
  asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, " P ", 0;\n"                              \
               " wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." DT "." DT " {" CUATTN_REGS_##K \
               "}, {" A0 ", " A1 ", " A2 ", " A3 "}, " B ", p, 1, 1, 1;\n}\n"                  \
               : CUATTN_ACC_##K(d)                                                           \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(int(accumulate)))

// One `if constexpr (N == n)` arm per width; the chain ends in the empty statement after it.
#define CUATTN_SS_DT(n, k, DT)                                                 \
  if constexpr (kAMnMajor && kBMnMajor) CUATTN_WGMMA_SS(n, k, DT, "1", "1");   \
  else if constexpr (kAMnMajor) CUATTN_WGMMA_SS(n, k, DT, "1", "0");           \
  else if constexpr (kBMnMajor) CUATTN_WGMMA_SS(n, k, DT, "0", "1");           \
  else CUATTN_WGMMA_SS(n, k, DT, "0", "0");
#define CUATTN_SS_ARM(n, k)                                              \
  if constexpr (N == n) {                                                \
    if constexpr (kIsBf16<T>) { CUATTN_SS_DT(n, k, "bf16") }             \
    else { CUATTN_SS_DT(n, k, "f16") }                                   \
  } else
#define CUATTN_RS_ARM(n, k)                                              \
  if constexpr (N == n) {                                                \
    if constexpr (kIsBf16<T>) CUATTN_WGMMA_RS(n, k, "bf16");             \
    else CUATTN_WGMMA_RS(n, k, "f16");                                   \
  } else

// d[N/8][4] = (accumulate ? d : 0) + A(64 x 16) B(16 x N), both from shared memory: the S-style
// product (B K-major), or with kBMnMajor an O-style one whose A is in shared memory (P written
// there by another warpgroup) and B MN-major, or with kAMnMajor a transposed O-style one
// (O^T = V^T P^T: A = V^T read in place from V's rows, MN-major; B = P^T, K-major).
template <typename T, int N, bool kBMnMajor = false, bool kAMnMajor = false>
CUATTN_DEVICE void wgmma_ss(float (&d)[N / 8][4], uint64_t desc_a, uint64_t desc_b, bool accumulate) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 up to 256");
#ifdef CUATTN_SM90A
  CUATTN_WGMMA_WIDTHS(CUATTN_SS_ARM) {}
#else
  arch_unsupported();
#endif
}

// O-style product: d[N/8][4] = (accumulate ? d : 0) + A(64 x 16, registers) B(16 x N, MN-major).
template <typename T, int N>
CUATTN_DEVICE void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t desc_b, bool accumulate) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 up to 256");
#ifdef CUATTN_SM90A
  CUATTN_WGMMA_WIDTHS(CUATTN_RS_ARM) {}
#else
  arch_unsupported();
#endif
}

#undef CUATTN_SS_ARM
#undef CUATTN_SS_DT
#undef CUATTN_RS_ARM
#undef CUATTN_WGMMA_WIDTHS
#undef CUATTN_WGMMA_SS
#undef CUATTN_WGMMA_SS_
#undef CUATTN_WGMMA_SS__
#undef CUATTN_WGMMA_RS
#undef CUATTN_WGMMA_RS_
#undef CUATTN_WGMMA_RS__
#undef CUATTN_ACC4
#undef CUATTN_ACC_1
#undef CUATTN_ACC_2
#undef CUATTN_ACC_3
#undef CUATTN_ACC_4
#undef CUATTN_ACC_5
#undef CUATTN_ACC_6
#undef CUATTN_ACC_7
#undef CUATTN_ACC_8
#undef CUATTN_ACC_9
#undef CUATTN_ACC_10
#undef CUATTN_ACC_11
#undef CUATTN_ACC_12
#undef CUATTN_ACC_13
#undef CUATTN_ACC_14
#undef CUATTN_ACC_15
#undef CUATTN_ACC_16
#undef CUATTN_ACC_17
#undef CUATTN_ACC_18
#undef CUATTN_ACC_19
#undef CUATTN_ACC_20
#undef CUATTN_ACC_21
#undef CUATTN_ACC_22
#undef CUATTN_ACC_23
#undef CUATTN_ACC_24
#undef CUATTN_ACC_25
#undef CUATTN_ACC_26
#undef CUATTN_ACC_27
#undef CUATTN_ACC_28
#undef CUATTN_ACC_29
#undef CUATTN_ACC_30
#undef CUATTN_ACC_31
#undef CUATTN_ACC_32
#undef CUATTN_REGS_1
#undef CUATTN_REGS_2
#undef CUATTN_REGS_3
#undef CUATTN_REGS_4
#undef CUATTN_REGS_5
#undef CUATTN_REGS_6
#undef CUATTN_REGS_7
#undef CUATTN_REGS_8
#undef CUATTN_REGS_9
#undef CUATTN_REGS_10
#undef CUATTN_REGS_11
#undef CUATTN_REGS_12
#undef CUATTN_REGS_13
#undef CUATTN_REGS_14
#undef CUATTN_REGS_15
#undef CUATTN_REGS_16
#undef CUATTN_REGS_17
#undef CUATTN_REGS_18
#undef CUATTN_REGS_19
#undef CUATTN_REGS_20
#undef CUATTN_REGS_21
#undef CUATTN_REGS_22
#undef CUATTN_REGS_23
#undef CUATTN_REGS_24
#undef CUATTN_REGS_25
#undef CUATTN_REGS_26
#undef CUATTN_REGS_27
#undef CUATTN_REGS_28
#undef CUATTN_REGS_29
#undef CUATTN_REGS_30
#undef CUATTN_REGS_31
#undef CUATTN_REGS_32
#undef CUATTN_NEXT_1
#undef CUATTN_NEXT_2
#undef CUATTN_NEXT_3
#undef CUATTN_NEXT_4
#undef CUATTN_NEXT_5
#undef CUATTN_NEXT_6
#undef CUATTN_NEXT_7
#undef CUATTN_NEXT_8
#undef CUATTN_NEXT_9
#undef CUATTN_NEXT_10
#undef CUATTN_NEXT_11
#undef CUATTN_NEXT_12
#undef CUATTN_NEXT_13
#undef CUATTN_NEXT_14
#undef CUATTN_NEXT_15
#undef CUATTN_NEXT_16
#undef CUATTN_NEXT_17
#undef CUATTN_NEXT_18
#undef CUATTN_NEXT_19
#undef CUATTN_NEXT_20
#undef CUATTN_NEXT_21
#undef CUATTN_NEXT_22
#undef CUATTN_NEXT_23
#undef CUATTN_NEXT_24
#undef CUATTN_NEXT_25
#undef CUATTN_NEXT_26
#undef CUATTN_NEXT_27
#undef CUATTN_NEXT_28
#undef CUATTN_NEXT_29
#undef CUATTN_NEXT_30
#undef CUATTN_NEXT_31
#undef CUATTN_NEXT_32

}  // namespace cuattn
