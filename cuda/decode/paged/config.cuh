// config.cuh — the paged decode kernel's shapes (PagedTraits: warps, key tile, ring depth, register
// split, shared-memory sizes), its TMA descriptors, and the shared storage of its pipeline.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include "common/types.cuh"
#include "cuattn/launch.h"

// Timeline hook: bench/trace_decode.cu defines it to record %globaltimer at five points of every
// CTA (start, first tile landed, loop done, partial written, merge done). Empty otherwise.
#ifndef CUATTN_TRACE
#define CUATTN_TRACE(i)
#endif
// Per tile: (tile, 0: landed / 1: softmax done / 2: PV issued), same use.
#ifndef CUATTN_TRACE_TILE
#define CUATTN_TRACE_TILE(it, ph)
#endif

namespace cuattn {

template <int kD_, bool kFp8 = false, bool kWide = false>
struct PagedTraits {
  static constexpr int kD = kD_, kDv = kD_;
  // Consumer warps, 16 keys of a tile each: 4, or 8 (kWide) on 128-key tiles, two an SM
  // sub-partition. The launcher takes the wide shape for rows of at most 128 bytes (fp8 D64 /
  // D128, 16-bit D64) when the grid is one CTA an SM or less: one 4-warp CTA alone on an SM
  // leaves such a tile's latency-bound chain of ldmatrix, (widening,) MMAs and softmax exposed,
  // where several waves put two on an SM anyway and overlap their starts and ends (NOTES).
  static constexpr int kWarps = kWide ? 8 : 4;
  static constexpr int kBN = 16 * kWarps, kThreads = 32 * kWarps, kRows = kDecodeRows;  // kThreads: consumers
  static constexpr int kBlock = 2 * kThreads;                                   // + as many producers
  // sm90 up to D128: the producers hand registers to the consumers (setmaxnreg), as many as the
  // register file holds at kBlock threads an SM, two CTAs of 4 + 4 warps or one of 8 + 8:
  // kThreads x (40 + 216) = 64K / (CTAs an SM).
  static constexpr bool kRegRealloc = kD <= 128;
  static constexpr int kProducerRegs = 40, kConsumerRegs = 216;
  // Persistent CTAs: the producer also walks the work (the list's pieces, each sequence's rows),
  // which spilled at 40 registers.
  static constexpr int kPersistentProducerRegs = 48, kPersistentConsumerRegs = 208;
  // Ring depth, measured (H100, bench/NOTES.md): 16-bit K/V 3 tiles (2 at D256; 4 or more at D128
  // lost 2-16 %). fp8 tiles hold half the bytes: D64 and D256 gain from more tiles (6: +5 %;
  // 4: one CTA an SM needs them), D128 loses 3-4 % at 6; wide (128-key) tiles: 3, but 6 for fp8
  // D64's 16 KB tiles (B16 +14 %: three were too few bytes in flight for one CTA an SM; 8 gave
  // no more, and fp8 D128 lost 3 % at 4).
  static constexpr int kStages =
      kWide ? (kFp8 && kD == 64 ? 6 : 3) : kFp8 ? (kD == 64 ? 6 : kD == 128 ? 3 : 4) : (kD <= 128 ? 3 : 2);
  static constexpr int kStride = kD + 8;  // 16-bit smem rows, padded (conflict-free ldmatrix)
  // The ring of the row-copy / cp.async paths (padded rows; the TMA ring is never larger).
  static constexpr size_t kRingBytes = size_t(kStages) * 2 * kBN * (kFp8 ? kD + 16 : 2 * kStride);
  // The TMA ring: unpadded swizzled rows, plus the slack to align it to 1024 bytes (the kernel
  // rounds its start up).
  static constexpr size_t kTmaRingBytes = size_t(kStages) * 2 * kBN * kD * (kFp8 ? 1 : 2) + 1024;
  // The merge at the end reuses the ring: every consumer warp's 16 rows of O, maxima and sums.
  static constexpr size_t kMergeBytes = size_t(kWarps) * 16 * (kD + 2) * sizeof(float);
  // Where a persistent CTA's merge scratch starts: past the ring when producers (sm90) may already
  // be filling it with the next piece's tiles; in it when the consumers copy (sm80: they wait for
  // each other after every piece) or when the producer waits for the epilogue
  // (SplitWorkspace::scratch_in_ring, the kernel's `drain`).
  template <bool kTma, bool kBulk>
  static constexpr size_t scratch_offset() {
    return !kBulk ? 0 : kTma ? kTmaRingBytes : kRingBytes;
  }
  // CTAs an SM the registers are budgeted for (128 a thread at two). sm90: two 4-warp CTAs up to
  // D128 (on sm_90a the producers hand theirs to the consumers), one at D256 (its ring alone fills
  // most of shared memory) and one of the 8-warp shape. sm80 (the cp.async path, compiled per
  // architecture): two only where two rings fit an A100's 164 KB; bf16 D128's 104 KB ring fits
  // once, and at two it spilled 80 bytes.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  static constexpr int kMinBlocks = 2 * kRingBytes <= 160 * 1024 && kWarps == 4 ? 2 : 1;
#else
  static constexpr int kMinBlocks = kD <= 128 && kWarps == 4 ? 2 : 1;
#endif
};

// The K and V caches as 4-d tensors (dim, slot, kv head, page) read in boxes of 128 bytes of
// columns (64 for fp8 D64) x min(page size, 64) slots, swizzled to match (built on the host:
// common/tma_host.cuh).
struct PagedTmaMaps {
  CUtensorMap k, v;
  // > 0: visit the boxes grouped by page address after this many tiles (at least kStages) in
  // sequence order (the kernel's "order of the boxes"); 0: in sequence order throughout.
  int reorder_after = 0;
};

}  // namespace cuattn
