// paged_decode.cuh — attention of a few new tokens over a paged KV cache, at the memory-bandwidth
// limit (flash-decoding on tensor cores).
//
// Grid: (split, kv head x row chunk, sequence). A CTA owns one kv head of one sequence, one split
// of its KV range, and 16 query rows: the whole GQA group of that kv head (rows = token x group
// member), so K and V are read once for all query heads that share them. kPersistent (the TMA
// kernel of 4 consumer warps, for fp8 grids of several waves): one wave of CTAs, each taking those
// work units in turn with its ring running on from one into the next (no ramp between units).
//
//   consumers  kWarps warps (4; 8 at one wave for rows of 128 bytes or less); each takes 16 keys
//              of every tile of 16 x kWarps keys: S = Q K^T (m16n8k16, Q fragments in
//              registers), its own online softmax, O += P V; the warp states merge at the end
//   producers  sm90: as many more warps that only copy, into a kStages-deep ring, a slot
//              completing on its `full` mbarrier and released by the consumers on its `empty`
//              one. Default (sm_90a, D 64 / 128, a page size that divides a tile or is a multiple
//              of it): one warp issues TMA tensor copies, one per (page, 128-byte column panel)
//              of a tile, 128-byte swizzled (fp8 D64: 64-byte rows, 64-byte swizzle); the
//              consumers zero V rows outside the key range (garbage x P = 0 could be NaN).
//              Otherwise (D256, other page sizes, DecodeConfig::tma false): one bulk copy per K or
//              V row, a producer thread each.
//              TMA streams 3-7 % faster on 16-bit caches, and fp8 far more (bench/NOTES.md):
//              16 copies a tile issue far sooner than 128. sm80: the producers leave and the
//              consumers copy with cp.async, 16 bytes a thread, eight threads a row, a barrier per
//              tile. The page ids of a tile are read one tile before its copies are issued, so
//              page size hardly matters
//   fp8        e4m3 pages are copied raw; each warp widens its own fragments in registers after
//              ldmatrix (no widened copy of the tile, no CTA barrier). K: a thread's ldmatrix word
//              holds 4 adjacent dims of one key, so the dims of every 16-wide k step are taken in
//              the order 0 1 4 5 8 9 12 13 | 2 3 6 7 10 11 14 15, and Q's fragments are loaded in
//              the same order. V: a transposed ldmatrix word holds dims 2g, 2g+1 of keys 2t4,
//              2t4+1; a byte permute splits it into an even-dim and an odd-dim pair, so every 16
//              output dims are two n-blocks (even dims, odd dims), un-interleaved at the merge.
//              k_scale folds into the softmax scale, v_scale into the output
//   split-KV   with more than one split, each CTA leaves its normalised partial O and LSE in the
//              workspace; the last CTA of a (sequence, kv head, row chunk) to finish — counted on
//              an atomic — merges them (combine fused into the same launch, no second kernel),
//              loading the first splits' partial rows while it turns their LSEs into weights.
//
// Out-of-range page ids and lengths are clamped: corrupt inputs give unspecified values, never an
// out-of-bounds access.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include "common/copy.cuh"
#include "common/mask.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "cuattn/launch.h"
#include "cuattn/params.h"

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

// The order of the boxes (see paged_decode_kernel): boxes 0 .. n - 1 of a CTA's reordered range
// (box i: keys first_key + i * box_keys ..) grouped into 32 address ranges of their pages, in
// sequence order within a range, s_order[position] = i. Three warps (w = 0, 1, 2; named barrier
// 3) each take a third of the boxes in rounds of 32: they count each range, then place each box
// after the earlier ones of its range (those of the warps before w, of earlier rounds, and of
// lower lanes in this round: match_any ranks a round's boxes of one range by lane). A stable
// counting sort, so the order depends on the page ids alone.
CUATTN_DEVICE void order_boxes(int w, int lane, int n, int first_key, int box_keys, const int32_t* table,
                               const FastDivmod& page_of, int max_blocks, int num_pages, int* s_order,
                               uint8_t* s_bucket, int* s_count) {
  constexpr int kRanges = 32;  // one a lane
  const int per = (n + 2) / 3, i0 = min(n, w * per), i1 = min(n, i0 + per);
  int* count = s_count + w * kRanges;  // this warp's boxes per range, then its next positions
  count[lane] = 0;
#pragma unroll 4
  for (int i = i0 + lane; i < i1; i += 32) {  // each box's address range, the page ids in flight
    const int j = first_key + i * box_keys;
    const int id = min(max(__ldg(table + min(page_of.div(j), max_blocks - 1)), 0), num_pages - 1);
    s_bucket[i] = uint8_t(int64_t(id) * kRanges / num_pages);
  }
  __syncwarp();
  auto round = [&](int base, int& k, unsigned& same) {  // true: lane's box is in this warp's third
    const int i = base + lane;
    k = i < i1 ? s_bucket[i] : kRanges + lane;  // past the end: a range of its own
    same = __match_any_sync(~0u, k);
    return i < i1;
  };
  for (int base = i0; base < i1; base += 32) {
    int k;
    unsigned same;
    if (round(base, k, same) && lane == __ffs(same) - 1) count[k] += __popc(same);
    __syncwarp();
  }
  named_barrier_sync(3, 96);
  // Range `lane`: its first position overall, plus the boxes of the warps before this one.
  const int c0 = s_count[lane], c1 = s_count[kRanges + lane], c2 = s_count[2 * kRanges + lane];
  const int total = c0 + c1 + c2;
  int incl = total;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int y = __shfl_up_sync(~0u, incl, o);
    if (lane >= o) incl += y;
  }
  named_barrier_sync(3, 96);  // every warp has read every count
  count[lane] = incl - total + (w > 0 ? c0 : 0) + (w > 1 ? c1 : 0);
  __syncwarp();
  for (int base = i0; base < i1; base += 32) {
    int k;
    unsigned same;
    const bool mine = round(base, k, same);
    if (mine) s_order[count[k] + __popc(same & ((1u << lane) - 1u))] = base + lane;
    __syncwarp();
    if (mine && lane == __ffs(same) - 1) count[k] += __popc(same);
    __syncwarp();
  }
}

// kTma (sm_90a, D <= 128, a page size that divides a tile of kBN keys or is a multiple of it): the
// ring is filled by TMA tensor copies, one per (page, column panel of 128 bytes, or fp8 D64's 64)
// of a tile, into swizzled panels, instead of one bulk copy per row. kWide: 8 consumer warps on
// 128-key tiles (PagedTraits). kPersistent: see "work units" below.
template <typename T, int kD, bool kFp8, bool kTma = false, bool kWide = false, bool kPersistent = false>
__global__ void __launch_bounds__(PagedTraits<kD, kFp8, kWide>::kBlock,
                                  // a persistent row-copy CTA holds its ring and scratch: one an SM
                                  // (with drain its scratch is in the ring, but its registers are
                                  // still budgeted for one)
                                  kPersistent && !kTma ? 1 : PagedTraits<kD, kFp8, kWide>::kMinBlocks)
paged_decode_kernel(const __grid_constant__ PagedParams p, const __grid_constant__ SplitWorkspace ws,
                    const __grid_constant__ PagedTmaMaps maps) {
  if constexpr (kTma && !CUATTN_BULK_COPY) {  // sm_90a only (the launcher checks): no body below
    arch_unsupported();
    return;
  }
  using Tr = PagedTraits<kD, kFp8, kWide>;
  constexpr int kBN = Tr::kBN, kDv = Tr::kDv, kOT = kDv / 8;
  using KV = std::conditional_t<kFp8, uint8_t, T>;  // element type in global memory
  // MMA operand type: fp8 pages widen to f16 in one instruction (to bf16 it takes four), so with
  // an fp8 cache the MMAs run in f16 whatever q's type (bf16 q is converted, see below).
  using MT = std::conditional_t<kFp8, __half, T>;
  constexpr int kKvBytes = sizeof(KV);
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // Ring of kStages K/V tiles: the MMA operands (16-bit caches) or raw e4m3 bytes (fp8).
  constexpr int kRawStride = kTma ? kD : kFp8 ? kD + 16 : Tr::kStride;  // elements of KV per smem row
  constexpr size_t kRawTile = size_t(kBN) * kRawStride;
  // TMA: panels of [64 rows][128 bytes] with the 128-byte swizzle, K's panels then V's, 1024-byte
  // aligned; rows of 64 bytes (fp8 D64) make one panel of [64][64] with the 64-byte swizzle.
  constexpr int kPanelRow = kD * kKvBytes < 128 ? kD * kKvBytes : 128;  // bytes of a row in a panel
  constexpr int kPanelElems = kPanelRow / kKvBytes, kPanels = kD / kPanelElems, kPanelBytes = kBN * kPanelRow;
  constexpr int kChunks = kPanelRow / 16;  // 16-byte chunks of a panel row
  static_assert(!kTma || (kD % kPanelElems == 0 && (kPanelRow == 128 || kPanelRow == 64)), "TMA path: 64- or 128-byte panel rows");
  // Byte offset of 16-byte chunk c of row r: the swizzle XORs the chunk index (3 bits for 128-byte
  // rows, 2 for 64-byte ones) with bits of the row's address (bits 7-9, or 7-8 = r / 2).
  auto swizzled = [](int r, int c) {
    if constexpr (kPanelRow == 128) return (c / 8) * kPanelBytes + r * 128 + ((c % 8) ^ (r % 8)) * 16;
    else return r * 64 + ((c % 4) ^ ((r / 2) % 4)) * 16;
  };
  KV* ring = reinterpret_cast<KV*>(smem_raw + (kTma ? (1024 - smem_addr(smem_raw) % 1024) % 1024 : 0));

  CUATTN_TRACE(0);
  // Launched with programmatic dependent launch on sm90 (the launcher): the CTAs may start while
  // the previous kernel in the stream (say, the one that appended this step's keys) drains.
  // Everything below reads its outputs, so wait for it here. No kernel here triggers its
  // dependents early (griddepcontrol.launch_dependents): a decode grid scheduled while
  // append_paged_kv still ran was 2 % slower at B16 (bench/NOTES.md, seventh session).
  grid_dependency_wait();
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int group = p.num_heads_q / p.num_heads_kv;

  // ---- work ------------------------------------------------------------------------------------
  // A unit is (sequence, kv head x row chunk): its 16 query rows over every key of the sequence.
  // A piece of work is a key range of one unit, split `split` of the unit's `nsplits`; a split
  // piece leaves a partial result in workspace slot slot(split), and the last of the unit's pieces
  // to count on ws.counters[counter] merges them all in split order.
  //   grid      (default) the launch grid is (split, unit, sequence), every split `chunk_tokens`
  //             keys: a CTA takes the piece of its coordinates.
  //   persistent one wave of CTAs (the launcher), each taking the grid's pieces first,
  //             first + stride, ... in turn (fp8 grids of several waves).
  //   list      (ws.list.seq_start set) one wave of CTAs, CTA g taking the pieces of its share of
  //             the work list (cuattn/worklist.h): every CTA gets the same number of keys whatever
  //             the lengths, so one long sequence is read by as many CTAs as its length asks for.
  // A persistent CTA's ring runs on from one piece into the next (a slot's stage and phase count
  // the tiles of all of its pieces), so the producer copies the next piece's first tiles while the
  // consumers finish the current one, and the epilogue's scratch lies past the ring instead of
  // reusing it (unless ws.scratch_in_ring: then the producer waits for the epilogue, see
  // run_piece). (A separate instantiation: the loop costs the one-unit kernel 1-11 % where it has
  // no use, B16 fp8 D64 the most.)
  // Units of a sequence (grid): kv heads x row chunks of 16 query rows (token, group member).
  const int n_y = kPersistent ? p.num_heads_kv * ((group * p.seqlen_q + 15) / 16) : int(gridDim.y);
  const bool listed = kPersistent && ws.list.seq_start != nullptr;
  struct Work {
    int b, yy;              // sequence, unit of the sequence
    int sq, n_rc;           // the sequence's query tokens, its row chunks per kv head
    int64_t q0;             // its first query row (mixed batches; else 0)
    int L;                  // keys of the sequence (clamped)
    int k_begin, k_end;     // this piece's keys
    int split, nsplits;     // its place among the unit's pieces
    int counter;            // the unit's merge count: ws.counters[counter]
    int64_t slot0;          // grid: the unit's first slot (slot(split) = slot0 + split); list: its first CTA
  };
  auto slot_of = [&](const Work& w, int split) -> int64_t {
    return listed ? split_slot(int(w.slot0), split) : w.slot0 + split;
  };

  // ---- copies and page ids -----------------------------------------------------------------------
  // sm90+ (kBulk): warps kWarps..2*kWarps-1 are producers. Producer thread t moves row t % kBN
  // of K (t < kBN) or of V of every tile with one bulk copy through the copy engine, into the ring
  // slot that the consumers have released (empty barrier), completing on that slot's full barrier; rows
  // outside the key range are zero-filled instead. Issuing is slow: a warp's lanes issue their
  // bulk copies one after another (4 warps took 1.1 us to issue a tile's 128, one warp 4 us), so
  // producers that do nothing else keep it off the consumers' path; when the consumers issued the
  // copies themselves, a tile took 1.1 us to issue and 0.45 us to compute (B16 L8192,
  // bench/NOTES.md).
  // sm80: the producer warps leave at once; the 4 consumer warps copy with cp.async, eight
  // threads a row, each copying 16-byte chunks (tid % 8) + 8c, so every copy instruction reads
  // whole 128-byte lines, and a barrier per tile orders the ring.
  // Either way page ids are loaded one tile before their copies: unconditionally, from a clamped
  // table index, so the loads never sit behind a branch and nothing waits for them until they are
  // used; validity (the key range) and clamping of the id happen at the copy.
  constexpr bool kBulk = CUATTN_BULK_COPY;
  constexpr int kRowBytes = kD * kKvBytes;
  constexpr int kChunkElems = 16 / kKvBytes;                     // elements per 16-byte copy
  constexpr int kCopyChunks = kD / kChunkElems;                  // 16-byte copies per row
  constexpr int kLanesPerRow = kBulk ? 1 : (kCopyChunks < 8 ? kCopyChunks : 8);
  constexpr int kPerLane = kCopyChunks / kLanesPerRow;           // cp.async copies per thread and row
  constexpr int kCopyStep = kBulk ? kBN : Tr::kThreads / kLanesPerRow;  // rows per pass
  constexpr int kCopyPasses = kBN / kCopyStep;
  static_assert(kCopyChunks % kLanesPerRow == 0 && kBN % kCopyStep == 0, "tiles must split evenly");
  const bool producer = warp >= Tr::kWarps;
  const int r0 = kBulk ? tid % kBN : tid / kLanesPerRow;
  const bool copies_v = kBulk && tid % Tr::kThreads >= kBN;  // bulk: this producer's rows are V rows
  const int col = kBulk ? 0 : (tid % kLanesPerRow) * kChunkElems;
  // Every producer thread arrives on `full` once a tile, every consumer thread on `empty`: each
  // thread's own accesses are ordered by its own arrival (no warp-level hand-off to reason about).
  __shared__ __align__(8) uint64_t full[Tr::kStages];   // bulk: tile landed, one phase per use
  __shared__ __align__(8) uint64_t empty[Tr::kStages];  // bulk: every consumer is done with it
  __shared__ __align__(8) uint64_t order_ready;         // TMA: the order of the boxes is made
  constexpr int kOrderBoxes = kTma ? 1024 : 1;            // (the order of the boxes, below)
  __shared__ int s_order[kOrderBoxes];                    // [position - o_first] -> box - o_first
  __shared__ uint8_t s_bucket[kOrderBoxes];               // [box - o_first] -> address range of its page
  __shared__ int s_count[kTma ? 3 * 32 : 1];
  __shared__ int s_first_key[kTma ? Tr::kStages : 1][kTma ? kBN / 16 : 1];  // [stage][box]: its first key
  __shared__ int s_last;                                  // split-KV: this CTA merges the unit
  __shared__ int s_pieces_done;                           // drain: pieces whose epilogue is over
  if constexpr (kBulk) {
    if (tid == 0) {
      s_pieces_done = 0;
#pragma unroll
      for (int st = 0; st < Tr::kStages; ++st)  // TMA: one arrival a box of the tile (the producer's lanes)
        mbar_init(&full[st], kTma ? kBN / min(p.page_size, kBN) : Tr::kThreads), mbar_init(&empty[st], Tr::kThreads);
      if constexpr (kTma) mbar_init(&order_ready, 96);  // the three sorter warps' threads
      mbar_fence_init();
    }
    __syncthreads();
  } else {
    if (producer) return;  // before any barrier: the consumers' barriers count 128 threads
  }

  int tiles_before = 0;  // ring tiles of this CTA's earlier units
  auto run_unit = [&](const Work& w) {
    const int b = w.b, yy = w.yy, L = w.L, split = w.split, nsplits = w.nsplits;
    const int k_begin = w.k_begin, k_end = w.k_end;
    const int hk = yy / w.n_rc, rc = yy % w.n_rc;
    const int rows_total = group * w.sq;  // query rows of this kv head: (token, member)
    // A row chunk past the sequence's rows (mixed batches whose cu_seqlens_q was not checked)
    // has nothing to do: every piece of its unit skips it alike, so no merge waits for it.
    if (rc * 16 >= rows_total) return;

    // Query row r of this CTA is global row R = rc*16 + r: token R / group, head hk*group + R % group.
    const DenseMask mask(w.sq, L, p.causal, p.window_left, p.window_right);
    const int t_lo = (rc * 16) / group;
    const int t_hi = min(rc * 16 + 15, rows_total - 1) / group;
    int lo, hi;
    mask.key_range(t_lo, t_hi, lo, hi);
    lo = max(lo, k_begin);
    hi = min(hi, k_end);
    const int tile0 = lo / kBN * kBN;  // tiles are aligned to kBN keys of the sequence
    const int n_tiles = hi > lo ? (hi - tile0 + kBN - 1) / kBN : 0;
    const int t_base = tiles_before;  // ring tile t of this unit is the CTA's tile t_base + t
    tiles_before += n_tiles;

    const int32_t* table = p.block_table + b * p.bt_batch_stride;
    const KV* kc = static_cast<const KV*>(p.k_cache) + hk * p.k_head_stride;
    const KV* vc = static_cast<const KV*>(p.v_cache) + hk * p.v_head_stride;

    const FastDivmod page_of(p.page_size);
    const bool any_keys = n_tiles > 0;  // then L > 0, so the table row has at least one entry

    // ---- the order of the boxes (TMA) ------------------------------------------------------------
    // A box is min(page size, kBN) keys of one page, what one tensor copy reads; a tile is kBN / box
    // of them. Pages come in whatever order the cache's owner allocated them, and a random order
    // costs DRAM efficiency: when every CTA visits its pages grouped by address range, all of them
    // sweep the cache together (random pages, B16 L8192: +1.8 %, as much as pages in address order
    // give; bench/NOTES.md). So the boxes after the first maps.reorder_after tiles (in
    // sequence order while the order is made: its page-id loads queue behind the first tiles'
    // copies, and ordering after 3 tiles instead of 8 lost 2 % at B16) are visited grouped by their
    // page's address range, in sequence order within a range (order_boxes: a stable counting sort
    // of up to kOrderBoxes boxes by three idle producer warps); further boxes keep sequence order.
    // The order depends on the page ids alone, so results stay bitwise reproducible. Box b holds
    // keys tile0 + b * box .. + box - 1 wherever it is visited: masks and key ranges are unchanged.
    const int box = kTma ? min(p.page_size, kBN) : kBN, nbox = kBN / box;
    const int o_tile = kTma ? max(maps.reorder_after, Tr::kStages) : 0;  // first reordered tile
    const int o_first = o_tile * nbox, o_end = min(n_tiles * nbox, o_first + kOrderBoxes);
    // The same for the whole CTA; never on a persistent one (one order buffer, one unit's boxes).
    const bool reorder = kTma && !kPersistent && maps.reorder_after > 0 && o_end - o_first > 1;
    auto box_at = [&](int pos) { return reorder && pos >= o_first && pos < o_end ? o_first + s_order[pos - o_first] : pos; };
    // The sorter warps hand the order to the producer warp through the order_ready mbarrier (each
    // sorter thread arrives after its own writes; racecheck flagged a named barrier here). The
    // producer tells the consumers where each box of a tile starts: s_first_key[stage][i], written
    // before the tile's `full` arrival, read after its wait.
    auto fetch_pages = [&](int tile, int (&ids)[kCopyPasses]) {
#pragma unroll
      for (int i = 0; i < kCopyPasses; ++i) {
        const int j = tile0 + tile * kBN + r0 + i * kCopyStep;
        ids[i] = any_keys ? __ldg(table + min(page_of.div(j), p.max_blocks - 1)) : 0;
      }
    };
    // Element offsets inside one page fit 32 bits (the launcher checks), so a row's address is one
    // 32x32->64-bit multiply-add past the kv head's base.
    const int k_ps = int(p.k_page_stride), k_ss = int(p.k_slot_stride);
    const int v_ps = int(p.v_page_stride), v_ss = int(p.v_slot_stride);
    auto issue_tile = [&](int tile, const int (&ids)[kCopyPasses]) {  // into ring slot tile % kStages
      const int stage = (t_base + tile) % Tr::kStages;
      KV* sk = ring + stage * 2 * kRawTile;
      KV* sv = sk + kRawTile;
      const int first = tile0 + tile * kBN;
      if constexpr (kBulk) {
        // Each producer thread zero-fills its row if it lies outside the key range (ordered before
        // the copy engine's later writes to it, and by its own arrival before the consumers' reads),
        // else arrives announcing the row's bytes and copies it.
        const int r = r0, j = first + r;
        const bool ok = j >= lo && j < hi;
        KV* dst = (copies_v ? sv : sk) + r * kRawStride;
        if (!ok) {
#pragma unroll
          for (int e = 0; e < kRowBytes / 16; ++e) reinterpret_cast<uint4*>(dst)[e] = make_uint4(0, 0, 0, 0);
          fence_proxy_async();
        }
        mbar_arrive_expect_tx(&full[stage], ok ? kRowBytes : 0);
        if (ok) {
          const int page = min(max(ids[0], 0), p.num_pages - 1);
          const int slot = page_of.mod(j, page_of.div(j));
          const KV* src = copies_v ? vc + (int64_t(page) * v_ps + slot * v_ss) : kc + (int64_t(page) * k_ps + slot * k_ss);
          bulk_copy(dst, src, kRowBytes, &full[stage]);
        }
      } else {
#pragma unroll
        for (int i = 0; i < kCopyPasses; ++i) {
          const int r = r0 + i * kCopyStep;
          const int j = first + r;
          const bool ok = j >= lo && j < hi;
          const int page = min(max(ids[i], 0), p.num_pages - 1);
          const int slot = page_of.mod(j, page_of.div(j));
          const KV* ks = kc + (int64_t(page) * k_ps + (slot * k_ss + col));
          const KV* vs = vc + (int64_t(page) * v_ps + (slot * v_ss + col));
#pragma unroll
          for (int c = 0; c < kPerLane; ++c) {  // in bounds even when !ok (then nothing is read)
            const int e = c * kLanesPerRow * kChunkElems;
            cp_async_16(sk + r * kRawStride + col + e, ks + e, ok);
            cp_async_16(sv + r * kRawStride + col + e, vs + e, ok);
          }
        }
      }
    };

    // ---- producer (sm90, TMA): one warp; lane i copies box i of every tile (a page, or kBN slots of
    // one), each column panel of K and of V with one tensor copy, the whole tile on lane 0's
    // arrival. The other producer warps have nothing to do. -----------------------------------------
    if constexpr (kTma) {
      if (producer) {
        if (warp != Tr::kWarps) {  // warps kWarps + 1 .. + 3 make the order of the boxes
          if (!reorder || warp > Tr::kWarps + 3) return;  // (reorder: one unit, never persistent)
          order_boxes(warp - Tr::kWarps - 1, lane, o_end - o_first, tile0 + o_first * box, box, table, page_of,
                      p.max_blocks, p.num_pages, s_order, s_bucket, s_count);
          mbar_arrive(&order_ready);  // each thread after its own writes
          return;
        }
        // First key of box `lane` of `tile` (lanes past the tile's boxes: none, and they never
        // read the order before it is there).
        auto box_key = [&](int tile) { return tile0 + (lane < nbox ? box_at(tile * nbox + lane) : 0) * box; };
        auto box_page = [&](int tile) {  // id of the page that box `lane` of `tile` reads
          const int j = box_key(tile);
          return any_keys && lane < nbox ? __ldg(table + min(page_of.div(j), p.max_blocks - 1)) : 0;
        };
        int id = box_page(0);
        for (int tile = 0; tile < n_tiles; ++tile) {
          // The next tile's page ids, in flight while this tile waits for its slot; the first
          // reordered tile's once the order is there (after tile o_tile - 1 is issued: the tiles
          // before it never wait for the order).
          const bool order_next = reorder && tile + 1 == o_tile;
          int next = order_next ? 0 : box_page(tile + 1);
          const int gt = t_base + tile, stage = gt % Tr::kStages;
          if (gt >= Tr::kStages) mbar_wait(&empty[stage], uint32_t(gt / Tr::kStages - 1) & 1u);
          const int j = box_key(tile);
          // Lane i < nbox publishes box i's first key, then arrives on `full` announcing the box's
          // bytes (the barrier counts nbox arrivals) and copies it: its own arrival orders its
          // write before the consumers' reads, its wait on `empty` their reads of the last use.
          if (lane < nbox) {
            s_first_key[stage][lane] = j;
            mbar_arrive_expect_tx(&full[stage], uint32_t(2 * box * kD * kKvBytes));
            const int page = min(max(id, 0), p.num_pages - 1);
            const int slot = page_of.mod(j, page_of.div(j));
            unsigned char* sk = reinterpret_cast<unsigned char*>(ring + stage * 2 * kRawTile) + lane * box * kPanelRow;
#pragma unroll
            for (int pn = 0; pn < kPanels; ++pn) {
              tma_load_4d(sk + pn * kPanelBytes, &maps.k, &full[stage], kPanelElems * pn, slot, hk, page);
              tma_load_4d(sk + (kPanels + pn) * kPanelBytes, &maps.v, &full[stage], kPanelElems * pn, slot, hk, page);
            }
          }
          if (order_next) {
            mbar_wait(&order_ready, 0u);
            next = box_page(tile + 1);
          }
          id = next;
        }
        return;
      }
    }

    // ---- producer (sm90): fill the ring as fast as the consumers release it ----------------------
    if constexpr (kBulk && !kTma) {
      if (producer) {
        int ids[kCopyPasses], next[kCopyPasses];
        fetch_pages(0, ids);
        for (int tile = 0; tile < n_tiles; ++tile) {
          fetch_pages(tile + 1, next);  // in flight while this tile waits for its slot
          const int gt = t_base + tile;
          if (gt >= Tr::kStages) mbar_wait(&empty[gt % Tr::kStages], uint32_t(gt / Tr::kStages - 1) & 1u);
          issue_tile(tile, ids);
#pragma unroll
          for (int i = 0; i < kCopyPasses; ++i) ids[i] = next[i];
        }
        return;
      }
    }

    // ---- Q fragments (A operand) straight from global memory, scaled later ----------------------
    constexpr int kKS = kD / 16;
    uint32_t qa[kKS][4];
    {
      // Rows g and g + 8 of the chunk, columns 2*t4 (+1) and 2*t4 + 8 (+9) of every k step.
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int R = rc * 16 + g + 8 * hf;
        const bool valid = R < rows_total;
        const int tq = valid ? R / group : 0, hq = hk * group + (valid ? R % group : 0);
        const T* qrow = static_cast<const T*>(p.q) + b * p.q_batch_stride + (w.q0 + tq) * p.q_row_stride + hq * p.q_head_stride;
#pragma unroll
        for (int ks = 0; ks < kKS; ++ks) {
          // k positions 2t4 (+1) and 2t4 + 8 (+9) of the step are dims c and c + c8 (fp8: K's order)
          const int c = ks * 16 + (kFp8 ? 4 : 2) * t4, c8 = kFp8 ? 2 : 8;
          qa[ks][hf] = valid && c < p.head_dim ? *reinterpret_cast<const uint32_t*>(qrow + c) : 0u;
          qa[ks][hf + 2] = valid && c + c8 < p.head_dim ? *reinterpret_cast<const uint32_t*>(qrow + c + c8) : 0u;
        }
      }
    }
    // bf16 q against an fp8 cache: q to f16 for the f16 MMAs. f16 stops at 65504, so if any of
    // these 16 rows is larger, q is scaled by a power of two (exact) that the score scale undoes.
    float q_unscale = 1.f;
    if constexpr (kFp8 && std::is_same_v<T, __nv_bfloat16>) {
      float big = 0.f;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&qa[ks][i]));
          big = fmaxf(big, fmaxf(fabsf(x.x), fabsf(x.y)));
        }
      big = warp_max(big);
      const float qs = big > 32768.f ? exp2f(-ceilf(log2f(big / 32768.f))) : 1.f;
      q_unscale = 1.f / qs;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&qa[ks][i]));
          qa[ks][i] = pack2<__half>(x.x * qs, x.y * qs);
        }
    }

    // ---- sm80 prologue: the page ids of the first kStages tiles all in flight, then their copies ----
    int pages[kCopyPasses];  // ids of the next tile to issue (it + kStages - 1 at the loop top)
    if constexpr (!kBulk) {
      int first[Tr::kStages - 1][kCopyPasses];
#pragma unroll
      for (int s = 0; s < Tr::kStages - 1; ++s) fetch_pages(s, first[s]);
      fetch_pages(Tr::kStages - 1, pages);
#pragma unroll
      for (int s = 0; s < Tr::kStages - 1; ++s) {
        if (s < n_tiles) issue_tile(s, first[s]);
        cp_async_commit();
      }
    }

    // The consumers (warps 0..kWarps-1) synchronise among themselves (named barrier 1): the
    // producer warps have left by then. Each consumer thread releases a ring slot it has read.
    auto consumer_sync = [] { named_barrier_sync(1, Tr::kThreads); };
    auto release = [&](int stage) { mbar_arrive(&empty[stage]); };

    const float k_scale = p.k_scale_ptr ? *p.k_scale_ptr : p.k_scale;
    const float v_scale = p.v_scale_ptr ? *p.v_scale_ptr : p.v_scale;
    // As in flash_fwd: raw scores with the scale (times k_scale) folded into the exp2, or softcapped.
    const bool softcap = p.softcap > 0.f;
    const float cap_in = p.scale * k_scale * q_unscale / (softcap ? p.softcap : 1.f);
    const float sl2 = softcap ? kLog2e : p.scale * k_scale * q_unscale * kLog2e;

    OnlineSoftmax<1> softmax;
    softmax.init();
    float o[1][kOT][4];
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot) o[0][ot][0] = o[0][ot][1] = o[0][ot][2] = o[0][ot][3] = 0.f;

    for (int it = 0; it < n_tiles; ++it) {
      const int stage = (t_base + it) % Tr::kStages;
      // This warp's 16 keys of the tile: keys n0 .. n0 + 15 (TMA: where the producer put this
      // warp's box, see the order of the boxes).
      int n0 = tile0 + it * kBN + warp * 16;
      if constexpr (kBulk) {
        mbar_wait(&full[stage], uint32_t((t_base + it) / Tr::kStages) & 1u);
        if constexpr (kTma) {
          n0 = s_first_key[stage][warp * 16 / box] + warp * 16 % box;
          // TMA copied whole boxes: V rows outside the key range hold whatever those slots hold
          // (past the sequence's end, or a clamped page), and P = 0 times a NaN there is NaN. Each
          // warp zeroes its own 16 rows of them (it alone reads them); K rows need nothing, their
          // scores (NaN or not) are overwritten with -inf by the mask.
          if (n0 < lo || n0 + 16 > hi) {
            unsigned char* sv = reinterpret_cast<unsigned char*>(ring + stage * 2 * kRawTile + kRawTile);
            for (int e = lane; e < 16 * kPanels * kChunks; e += 32) {  // 16 rows x their 16-byte chunks
              const int r = warp * 16 + e / (kPanels * kChunks), c = e % (kPanels * kChunks), j = n0 + r - warp * 16;
              if (j < lo || j >= hi) *reinterpret_cast<uint4*>(sv + swizzled(r, c)) = make_uint4(0, 0, 0, 0);
            }
            fence_proxy_async();  // before the copy engine writes these rows again
            __syncwarp();
          }
        }
      } else {
        // Tile `it` landed; after the barrier every warp is done with tile it - 1, whose slot we refill.
        cp_async_wait<Tr::kStages - 2>();
        consumer_sync();
        if (it + Tr::kStages - 1 < n_tiles) issue_tile(it + Tr::kStages - 1, pages);
        cp_async_commit();
        fetch_pages(it + Tr::kStages, pages);
      }
      if (it == 0) CUATTN_TRACE(1);
      CUATTN_TRACE_TILE(it, 0);

      const KV* sk = ring + stage * 2 * kRawTile;
      const KV* sv = sk + kRawTile;

      // S = Q K^T over this warp's 16 keys of the tile.
      float s[1][2][4] = {{{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}}};
      const uint32_t k_base = smem_addr(sk), v_base = smem_addr(sv);
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        uint32_t kb[4];
        if constexpr (kFp8) {  // two k steps at once: matrices (keys 0-7 | 8-15) x (step ks | ks + 1)
          if (ks % 2 == 1) continue;
          const int kr = warp * 16 + lane % 8 + ((lane / 8) % 2) * 8, kc = ks + lane / 16;  // row, 16-byte chunk
          ldmatrix_x4(kb, k_base + (kTma ? swizzled(kr, kc) : kr * kRawStride + kc * 16));
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
              mma_m16n8k16<MT>(s[0][nt], qa[ks + h], fp8x2_to_f16x2(uint16_t(kb[2 * h + nt])),
                               fp8x2_to_f16x2(uint16_t(kb[2 * h + nt] >> 16)));
          continue;
        }
        if constexpr (kTma) {  // row kr, 16-byte chunk kc of the row, in 128-byte-swizzled panels
          const int kr = warp * 16 + lane % 8 + (lane / 16) * 8, kc = ks * 2 + (lane / 8) % 2;
          ldmatrix_x4(kb, k_base + swizzled(kr, kc));
        } else {
          ldmatrix_x4(kb, k_base + 2 * ((warp * 16 + lane % 8 + (lane / 16) * 8) * Tr::kStride + ks * 16 + ((lane / 8) % 2) * 8));
        }
        mma_m16n8k16<T>(s[0][0], qa[ks], kb[0], kb[1]);
        mma_m16n8k16<T>(s[0][1], qa[ks], kb[2], kb[3]);
      }
      if (softcap) softcap_scores(s, p.softcap, cap_in);
      if (n0 < lo || n0 + 15 >= hi || mask.is_partial(t_lo, t_hi, n0, 16)) {
        int jlo[2], jhi[2];  // keys row g (+8) may see, relative to n0
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          mask.row_range(min(rc * 16 + g + 8 * hf, rows_total - 1) / group, jlo[hf], jhi[hf]);
          jlo[hf] = max(jlo[hf], lo) - n0, jhi[hf] = min(jhi[hf], hi) - n0;
        }
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int c = nt * 8 + 2 * t4 + (e % 2);
            if (c < jlo[e / 2] || c >= jhi[e / 2]) s[0][nt][e] = -CUDART_INF_F;
          }
      }
      float alpha[2];
      softmax.update(s, sl2, alpha);
      CUATTN_TRACE_TILE(it, 1);
      uint32_t pa[4];
      acc_to_a<MT>(s[0], 0, pa);
      rescale_output(o, alpha);
#pragma unroll
      for (int dp = 0; dp < kDv / 16; ++dp) {
        uint32_t vb[4];
        if constexpr (kFp8) {  // two 16-dim blocks at once: matrices (keys 0-7 | 8-15) x (dp | dp + 1)
          if (dp % 2 == 1) continue;
          const int vr = warp * 16 + lane % 8 + ((lane / 8) % 2) * 8, vc = dp + lane / 16;
          ldmatrix_x4_trans(vb, v_base + (kTma ? swizzled(vr, vc) : vr * kRawStride + vc * 16));
#pragma unroll
          for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int e = 0; e < 2; ++e) {  // even dims (bytes 0, 2 of each word), odd dims (1, 3)
              const uint32_t sel = e ? 0x31u : 0x20u;
              mma_m16n8k16<MT>(o[0][2 * (dp + h) + e], pa, fp8x2_to_f16x2(uint16_t(__byte_perm(vb[2 * h], 0, sel))),
                               fp8x2_to_f16x2(uint16_t(__byte_perm(vb[2 * h + 1], 0, sel))));
            }
          continue;
        }
        if constexpr (kTma) {
          const int vr = warp * 16 + lane % 8 + ((lane / 8) % 2) * 8, vc = dp * 2 + lane / 16;
          ldmatrix_x4_trans(vb, v_base + swizzled(vr, vc));
        } else {
          ldmatrix_x4_trans(vb, v_base + 2 * ((warp * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kStride + dp * 16 + (lane / 16) * 8));
        }
        mma_m16n8k16<T>(o[0][2 * dp], pa, vb[0], vb[1]);
        mma_m16n8k16<T>(o[0][2 * dp + 1], pa, vb[2], vb[3]);
      }
      if constexpr (kBulk) release(stage);
      CUATTN_TRACE_TILE(it, 2);
    }
    CUATTN_TRACE(2);
    if constexpr (!kBulk) cp_async_wait<0>();
    consumer_sync();  // the ring is free (every tile landed and was used): reuse it for the merge

    // ---- merge the warps' states: per row, each warp's max m_w and sum l_w; O_w rescaled to the
    // common max and summed in a fixed order (deterministic) ---------------------------------------
    constexpr int kW = Tr::kWarps;
    // In the ring (free by then), or past it when the ring already holds the next unit's tiles
    // (a persistent CTA whose producer runs ahead: not with ws.scratch_in_ring, see run_units).
    const size_t scratch = kPersistent && !ws.scratch_in_ring ? Tr::template scratch_offset<kTma, kBulk>() : 0;
    float* s_m = reinterpret_cast<float*>(smem_raw + scratch);  // [kW][16]
    float* s_l = s_m + kW * 16;                       // [kW][16]
    float* s_ow = s_l + kW * 16;                      // [kW][16][kDv]
    auto max_of_warps = [&](int r) {
      float m = s_m[r];
#pragma unroll
      for (int w = 1; w < kW; ++w) m = fmaxf(m, s_m[w * 16 + r]);
      return m;
    };
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float l = quad_sum(softmax.row_sum[hf]);
      if (t4 == 0) s_m[warp * 16 + g + 8 * hf] = softmax.row_max[hf] * sl2, s_l[warp * 16 + g + 8 * hf] = l;
    }
    consumer_sync();
    float wscale[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float m = max_of_warps(g + 8 * hf);
      wscale[hf] = m == -CUDART_INF_F ? 0.f : exp2f(softmax.row_max[hf] * sl2 - m);
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float* row = s_ow + (warp * 16 + g + 8 * hf) * kDv;
      const float w = wscale[hf];
      if constexpr (kFp8) {  // n-blocks 2c (dims 16c + 2j) and 2c + 1 (dims 16c + 2j + 1): dims 16c + 4t4 .. + 3
#pragma unroll
        for (int c = 0; c < kOT / 2; ++c)
          *reinterpret_cast<float4*>(row + c * 16 + 4 * t4) =
              make_float4(o[0][2 * c][2 * hf] * w, o[0][2 * c + 1][2 * hf] * w, o[0][2 * c][2 * hf + 1] * w, o[0][2 * c + 1][2 * hf + 1] * w);
      } else {
#pragma unroll
        for (int ot = 0; ot < kOT; ++ot)
          *reinterpret_cast<float2*>(row + ot * 8 + 2 * t4) = make_float2(o[0][ot][2 * hf] * w, o[0][ot][2 * hf + 1] * w);
      }
    }
    consumer_sync();
    auto sum_of_warps = [&](int r, int d) {
      float x = s_ow[r * kDv + d];
#pragma unroll
      for (int w = 1; w < kW; ++w) x += s_ow[(w * 16 + r) * kDv + d];
      return x;
    };

    // Per row: the CTA's max (log2), sum and natural-log LSE of its keys.
    const int rows_here = min(16, rows_total - rc * 16);
    auto row_stats = [&](int r, float& inv, float& lse) {
      const float m = max_of_warps(r);
      if (m == -CUDART_INF_F) {
        inv = 0.f, lse = -CUDART_INF_F;
        return;
      }
      float l = 0.f;
#pragma unroll
      for (int w = 0; w < kW; ++w) l += s_m[w * 16 + r] == -CUDART_INF_F ? 0.f : s_l[w * 16 + r] * exp2f(s_m[w * 16 + r] - m);
      inv = 1.f / l;
      lse = (m + __log2f(l)) * kLn2;
    };
    // Final store of row r (o already normalised over all keys, lse natural): sinks, v_scale, dtype.
    auto store_row = [&](int r, const float* orow, float lse) {
      const int R = rc * 16 + r, tq = R / group, hq = hk * group + R % group;
      float f = v_scale;
      if (p.sinks != nullptr && lse != -CUDART_INF_F) {
        const float sink = p.sinks[hq];
        const float top = fmaxf(lse, sink);
        const float l = __expf(lse - top) + __expf(sink - top);
        f *= __expf(lse - top) / l;
        lse = top + __logf(l);
      }
      T* out = static_cast<T*>(p.o) + b * p.o_batch_stride + (w.q0 + tq) * p.o_row_stride + hq * p.o_head_stride;
      for (int d = lane * 2; d < p.head_dim_v; d += 64)
        *reinterpret_cast<uint32_t*>(out + d) = pack2<T>(orow[d] * f, orow[d + 1] * f);
      if (p.lse != nullptr && lane == 0) p.lse[b * p.lse_batch_stride + hq * p.lse_head_stride + w.q0 + tq] = lse;
    };

    if (nsplits == 1) {
      for (int r = warp; r < rows_here; r += Tr::kWarps) {
        float inv, lse;
        row_stats(r, inv, lse);
        float* orow = s_ow + r * kDv;  // warp 0's slice of row r becomes the result row
        for (int d = lane; d < kDv; d += 32) orow[d] = sum_of_warps(r, d) * inv;
        __syncwarp();
        store_row(r, orow, lse);
      }
      return;
    }

    // ---- split-KV: leave the partial result, the last CTA of this row chunk merges -------------
    float* wo = ws.o + slot_of(w, split) * 16 * kDv;
    float* wl = ws.lse + slot_of(w, split) * 16;
    for (int r = warp; r < rows_here; r += Tr::kWarps) {
      float inv, lse;
      row_stats(r, inv, lse);
      for (int d = lane; d < kDv; d += 32) __stcg(wo + r * kDv + d, sum_of_warps(r, d) * inv);
      if (lane == 0) __stcg(wl + r, lse);
    }
    __threadfence();
    consumer_sync();
    CUATTN_TRACE(3);
    if (tid == 0) {
      const int done = atomicAdd(ws.counters + w.counter, 1);
      s_last = done == nsplits - 1;
      if (s_last) ws.counters[w.counter] = 0;  // ready for the next launch (and graph replays)
    }
    consumer_sync();
    if (!s_last) return;
    __threadfence();

    // Merge the nsplits partials (combine_splits), one warp a row.
    constexpr int kPer = kDv / 32, kPre = 2048 / kDv;  // kPre * kPer = 64 registers of prefetch
    float* s_w = s_ow + 16 * kDv + warp * kMaxDecodeSplits;  // this warp's weights (past the result rows)
    for (int r = warp; r < rows_here; r += Tr::kWarps) {
      float acc[kPer];
      const float lse = combine_splits<kPer, kPre>(
          nsplits, [&](int sp) { return __ldcg(ws.lse + slot_of(w, sp) * 16 + r); },
          [&](int sp) { return ws.o + (slot_of(w, sp) * 16 + r) * kDv; }, s_w, lane, kDv, acc);
      float* orow = s_ow + r * kDv;  // free again: every partial row was written before the count
#pragma unroll
      for (int c = 0; c < kPer; ++c) orow[lane * kPer + c] = acc[c];
      __syncwarp();
      store_row(r, orow, lse);
    }
    consumer_sync();
    CUATTN_TRACE(4);
  };

  // The grid's piece (split, yy, b): false when the sequence has fewer splits.
  auto grid_piece = [&](int split, int yy, int b, Work& w) {
    const int L = p.num_pages > 0 ? min(max(p.seq_lens[b], 0), p.max_blocks * p.page_size) : 0;
    const int chunk = ws.chunk_tokens > 0 ? ws.chunk_tokens : max(L, 1);
    const int nsplits = min(max((L + chunk - 1) / chunk, 1), ws.max_splits);
    const int k_begin = split * chunk;
    const int unit = b * n_y + yy;  // (sequence, kv head, row chunk); < 2^31 (the launcher checks)
    w = Work{b, yy, p.seqlen_q, n_y / p.num_heads_kv, 0, L, k_begin, split == nsplits - 1 ? L : min(L, k_begin + chunk),
             split, nsplits, unit, int64_t(unit) * ws.max_splits};
    return split < nsplits;
  };
  // A persistent CTA whose epilogue scratch lies in the ring (ws.scratch_in_ring, sm90): the
  // producer starts piece n only once the consumers have finished piece n - 1 (its epilogue
  // included) and counted it in s_pieces_done. Zero-tile pieces count too, so the two sides
  // walk the same pieces; the count only grows, so a consumer side that runs ahead through pieces
  // without tiles is never missed.
  const bool drain = kBulk && kPersistent && ws.scratch_in_ring;
  int pieces = 0;  // pieces this thread's role has started
  auto run_piece = [&](const Work& w) {
    if (drain && producer && pieces > 0) {
      if (lane == 0)
        while (smem_count_read(&s_pieces_done) < pieces) __nanosleep(32);
      __syncwarp();
    }
    run_unit(w);
    if (drain && !producer) {
      fence_proxy_async();  // this thread's scratch accesses before the copies that reuse the bytes
      named_barrier_sync(1, Tr::kThreads);
      if (tid == 0) smem_count_publish(&s_pieces_done, pieces + 1);
    }
    ++pieces;
  };
  // Each role runs its units after its setmaxnreg, so that ptxas compiles each copy of run_unit
  // under that role's register budget (one loop after both would have the smaller one).
  auto run_units = [&] {
    Work w;
    if (listed) {  // this CTA's share of the work list, in line order
      const WorkList& list = ws.list;
      WorkPiece pc;
      for (bool more = list.first(blockIdx.x, pc); more; more = list.next(blockIdx.x, pc)) {
        // Mixed batches: the sequence's rows, clamped inside q ([total_q, ...]) whatever cu_seqlens_q holds.
        int sq = p.seqlen_q;
        int64_t q0 = 0;
        if (p.cu_seqlens_q != nullptr) {
          q0 = min(int64_t(max(p.cu_seqlens_q[pc.seq], 0)), p.total_q);
          const int64_t n = int64_t(p.cu_seqlens_q[pc.seq + 1]) - p.cu_seqlens_q[pc.seq];
          sq = int(min(min(max(n, int64_t(0)), int64_t(p.seqlen_q)), p.total_q - q0));
        }
        w = Work{pc.seq, pc.unit, sq, list.units_of(pc.seq) / p.num_heads_kv, q0, list.seq_lens[pc.seq],
                 int(pc.key_begin), int(pc.key_end), pc.split, pc.num_splits, pc.first_cta, pc.first_cta};
        run_piece(w);
        if constexpr (!kBulk) named_barrier_sync(1, Tr::kThreads);  // (sm80: the scratch is the ring)
      }
    } else if constexpr (kPersistent) {
      const int n_units = ws.max_splits * n_y * p.batch;  // < 2^31 (the launcher checks)
      for (int u = blockIdx.x; u < n_units; u += gridDim.x) {
        if (grid_piece(u % ws.max_splits, u / ws.max_splits % n_y, u / ws.max_splits / n_y, w)) run_piece(w);
        if constexpr (!kBulk) named_barrier_sync(1, Tr::kThreads);
      }
    } else {
      if (grid_piece(blockIdx.x, blockIdx.y, blockIdx.z, w)) run_unit(w);
    }
  };
  if (producer) {
    if constexpr (kBulk && Tr::kRegRealloc)  // the whole warpgroup
      setmaxnreg_dec<kPersistent ? Tr::kPersistentProducerRegs : Tr::kProducerRegs>();
    // TMA: one producer warp; the sorter warps leave (a persistent CTA never orders). Row copies:
    // every producer thread copies a row of every tile.
    if (kTma && kPersistent && warp != Tr::kWarps) return;
    run_units();
    return;
  }
  if constexpr (kBulk && Tr::kRegRealloc) setmaxnreg_inc<kPersistent ? Tr::kPersistentConsumerRegs : Tr::kConsumerRegs>();
  run_units();
}

}  // namespace cuattn
