// producers.cuh — how K and V tiles reach the paged decode kernel's ring: three producers with one
// interface, chosen by the kernel's template flags.
//
//   TmaBoxProducer   sm_90a, D <= 128, a page size that divides a tile or is a multiple of it: one
//                    producer warp issues TMA tensor copies, one per (box, column panel of 128
//                    bytes, or fp8 D64's 64) of a tile, into 128-byte (64-byte) swizzled panels;
//                    idle producer warps sort the boxes by page address (page_order.cuh)
//   BulkRowProducer  sm90 otherwise (D256, other page sizes): one bulk copy through the copy engine
//                    per K or V row, a producer thread each; rows outside the key range zero-filled
//   CpAsyncCopier    sm80: the producer warps leave; the consumers copy with cp.async, 16 bytes a
//                    thread, eight threads a row, a barrier per tile
//
// The interface, for one piece of work (PieceTiles) over one sequence's pages (PagedKV):
//   produce(u, kv)      the producer warps: issue every tile of the piece as ring slots free up
//   start(u, kv)        the consumers, before the loop (cp.async: the first tiles in flight)
//   land(u, kv, it)     the consumers: wait until tile `it` is in the ring; returns the first key
//                       of the calling warp's 16 rows of it
//   release(u, it)      the consumers: done with tile `it` (its slot may be refilled)
//   finish()            the consumers, after the loop
//
// Page ids are loaded one tile before their copies, so page size hardly matters. Issuing is slow:
// a warp's lanes issue their bulk copies one after another (4 warps took 1.1 us to issue a tile's
// 128, one warp 4 us), so producers that do nothing else keep it off the consumers' path; TMA
// streams 3-7 % faster on 16-bit caches and fp8 far more (bench/NOTES.md): 16 copies a tile issue
// far sooner than 128.
#pragma once

#include <cstdint>

#include "common/copy.cuh"
#include "decode/paged/config.cuh"
#include "decode/paged/page_order.cuh"
#include "decode/paged/paged_kv.cuh"

namespace cuattn {

// The tiles of one piece of work: its keys [lo, hi) in n_tiles tiles of kBN keys from tile0
// (tiles are aligned to kBN keys of the sequence); the piece's tile t is the CTA's ring tile
// t_base + t (a persistent CTA's ring runs on from one piece into the next).
struct PieceTiles {
  int lo, hi, tile0, n_tiles, t_base;
};

// kStages slots of (K tile, V tile) in shared memory, and their barriers (StageBarriers).
template <class Tr, typename KV, int kRawStride>
struct KvRing : StageBarriers<Tr::kStages> {
  static constexpr int kRowStride = kRawStride;                  // elements of KV a ring row
  static constexpr size_t kTile = size_t(Tr::kBN) * kRawStride;  // elements of one K (or V) tile
  KV* base;
  CUATTN_DEVICE KV* k(int stage) const { return base + stage * 2 * kTile; }
  CUATTN_DEVICE KV* v(int stage) const { return k(stage) + kTile; }
};

// The TMA ring's layout: panels of [kBN rows][128 bytes] with the 128-byte swizzle, K's panels
// then V's; rows of 64 bytes (fp8 D64) make one panel of [kBN][64] with the 64-byte swizzle.
template <class Tr, int kKvBytes>
struct TmaPanels {
  static constexpr int kRow = Tr::kD * kKvBytes < 128 ? Tr::kD * kKvBytes : 128;  // bytes of a row in a panel
  static constexpr int kElems = kRow / kKvBytes, kCount = Tr::kD / kElems, kBytes = Tr::kBN * kRow;
  static constexpr int kChunks = kRow / 16;  // 16-byte chunks of a panel row
  static_assert(Tr::kD % kElems == 0 && (kRow == 128 || kRow == 64), "TMA path: 64- or 128-byte panel rows");
  // Byte offset of 16-byte chunk c of row r: the swizzle XORs the chunk index (3 bits for 128-byte
  // rows, 2 for 64-byte ones) with bits of the row's address (bits 7-9, or 7-8 = r / 2).
  CUATTN_DEVICE static int offset(int r, int c) {
    if constexpr (kRow == 128) return (c / 8) * kBytes + r * 128 + ((c % 8) ^ (r % 8)) * 16;
    else return r * 64 + ((c % 4) ^ ((r / 2) % 4)) * 16;
  }
};

// ---- TMA tensor copies ---------------------------------------------------------------------------
// One warp (the first producer warp); lane i copies box i of every tile (a page, or kBN slots of
// one), each column panel of K and of V with one tensor copy, the whole tile on one `full`
// barrier that counts a tile's boxes. Warps kWarps + 1 .. + 3 sort the boxes (page_order.cuh) and
// hand the order to the issuing warp through `order_ready` (each sorter thread arrives after its
// own writes; racecheck flagged a named barrier here). The issuing lane of box i publishes the
// box's first key in first_key[stage][i] before its `full` arrival; each consumer warp reads
// where its 16 rows start after its wait.
template <class Tr, typename KV, bool kPersistent>
struct TmaBoxProducer {
  using Ring = KvRing<Tr, KV, Tr::kD>;
  using Panels = TmaPanels<Tr, int(sizeof(KV))>;
  Ring ring;
  const PagedTmaMaps& maps;
  int (*first_key)[Tr::kBN / 16];  // [stage][box]: the box's first key
  uint64_t* order_ready;
  int* s_order;
  uint8_t* s_bucket;
  int* s_count;
  int box, nbox;  // keys of a box (min(page size, kBN)), boxes of a tile
  int warp, lane;

  CUATTN_DEVICE BoxOrder order(const PieceTiles& u) const {
    return BoxOrder(!kPersistent, maps.reorder_after, Tr::kStages, u.n_tiles, nbox, s_order);
  }

  CUATTN_DEVICE void produce(const PieceTiles& u, const PagedKV<KV>& kv) const {
    const BoxOrder ord = order(u);
    if (warp != Tr::kWarps) {  // sorters (a persistent CTA's left before its first piece)
      if (!ord.reorder || warp > Tr::kWarps + 3) return;
      order_boxes(warp - Tr::kWarps - 1, lane, ord.o_end - ord.o_first, u.tile0 + ord.o_first * box, box, kv, s_order,
                  s_bucket, s_count);
      mbar_arrive(order_ready);  // each thread after its own writes
      return;
    }
    const bool any_keys = u.n_tiles > 0;  // then the table row has at least one entry
    // First key of box `lane` of `tile` (lanes past the tile's boxes: none, and they never read
    // the order before it is there), and the id of its page.
    auto box_key = [&](int tile) { return u.tile0 + (lane < nbox ? ord.at(tile * nbox + lane) : 0) * box; };
    auto box_page = [&](int tile) { return any_keys && lane < nbox ? kv.page_id(box_key(tile)) : 0; };
    int id = box_page(0);
    for (int tile = 0; tile < u.n_tiles; ++tile) {
      // The next tile's page ids, in flight while this tile waits for its slot; the first
      // reordered tile's once the order is there (after tile o_tile - 1 is issued: the tiles
      // before it never wait for the order).
      const bool order_next = ord.needed_after(tile);
      int next = order_next ? 0 : box_page(tile + 1);
      const int gt = u.t_base + tile, stage = gt % Tr::kStages;
      ring.wait_free(gt);
      const int j = box_key(tile);
      // Lane i < nbox publishes box i's first key, then arrives on `full` announcing the box's
      // bytes and copies it: its own arrival orders its write before the consumers' reads, its
      // wait on `empty` their reads of the last use.
      if (lane < nbox) {
        first_key[stage][lane] = j;
        mbar_arrive_expect_tx(&ring.full[stage], uint32_t(2 * box * Tr::kD * sizeof(KV)));
        const int page = kv.page(id), slot = kv.slot(j);
        unsigned char* sk = reinterpret_cast<unsigned char*>(ring.k(stage)) + lane * box * Panels::kRow;
#pragma unroll
        for (int pn = 0; pn < Panels::kCount; ++pn) {
          tma_load_4d(sk + pn * Panels::kBytes, &maps.k, &ring.full[stage], Panels::kElems * pn, slot, kv.head, page);
          tma_load_4d(sk + (Panels::kCount + pn) * Panels::kBytes, &maps.v, &ring.full[stage], Panels::kElems * pn, slot,
                      kv.head, page);
        }
      }
      if (order_next) {
        mbar_wait(order_ready, 0u);
        next = box_page(tile + 1);
      }
      id = next;
    }
  }

  CUATTN_DEVICE void start(const PieceTiles&, const PagedKV<KV>&) {}

  // TMA copied whole boxes: V rows outside the key range hold whatever those slots hold (past the
  // sequence's end, or a clamped page), and P = 0 times a NaN there is NaN. Each warp zeroes its
  // own 16 rows of them (it alone reads them); K rows need nothing, their scores (NaN or not) are
  // overwritten with -inf by the mask.
  CUATTN_DEVICE int land(const PieceTiles& u, const PagedKV<KV>&, int it) const {
    const int gt = u.t_base + it, stage = gt % Tr::kStages;
    ring.wait_landed(gt);
    const int n0 = first_key[stage][warp * 16 / box] + warp * 16 % box;
    if (n0 < u.lo || n0 + 16 > u.hi) {
      unsigned char* sv = reinterpret_cast<unsigned char*>(ring.v(stage));
      constexpr int kRowChunks = Panels::kCount * Panels::kChunks;
      for (int e = lane; e < 16 * kRowChunks; e += 32) {  // 16 rows x their 16-byte chunks
        const int r = warp * 16 + e / kRowChunks, c = e % kRowChunks, j = n0 + r - warp * 16;
        if (j < u.lo || j >= u.hi) *reinterpret_cast<uint4*>(sv + Panels::offset(r, c)) = make_uint4(0, 0, 0, 0);
      }
      fence_proxy_async();  // before the copy engine writes these rows again
      __syncwarp();
    }
    return n0;
  }
  CUATTN_DEVICE void release(const PieceTiles& u, int it) const { ring.release(u.t_base + it); }
  CUATTN_DEVICE void finish() const {}
};

// ---- row copies (bulk copies on sm90, cp.async on sm80) -------------------------------------------
// What both row-copy producers share: which rows a thread copies and the page ids of a tile's rows.
// kBulk: producer thread t moves row t % kBN of K (t < kBN) or of V of every tile. cp.async: the
// consumers' threads, eight a row, each copying 16-byte chunks (tid % 8) + 8c, so every copy
// instruction reads whole 128-byte lines. Page ids are loaded unconditionally, from a clamped
// table index, so the loads never sit behind a branch and nothing waits for them until they are
// used; validity (the key range) and clamping of the id happen at the copy.
template <class Tr, typename KV, bool kBulk>
struct RowCopies {
  static constexpr int kKvBytes = int(sizeof(KV));
  static constexpr int kRawStride = kKvBytes == 1 ? Tr::kD + 16 : Tr::kStride;  // elements a padded row
  static constexpr int kRowBytes = Tr::kD * kKvBytes;
  static constexpr int kChunkElems = 16 / kKvBytes;                     // elements per 16-byte copy
  static constexpr int kCopyChunks = Tr::kD / kChunkElems;              // 16-byte copies per row
  static constexpr int kLanesPerRow = kBulk ? 1 : (kCopyChunks < 8 ? kCopyChunks : 8);
  static constexpr int kPerLane = kCopyChunks / kLanesPerRow;           // cp.async copies per thread and row
  static constexpr int kCopyStep = kBulk ? Tr::kBN : Tr::kThreads / kLanesPerRow;  // rows per pass
  static constexpr int kCopyPasses = Tr::kBN / kCopyStep;
  static_assert(kCopyChunks % kLanesPerRow == 0 && Tr::kBN % kCopyStep == 0, "tiles must split evenly");
  using Ring = KvRing<Tr, KV, kRawStride>;

  Ring ring;
  int r0;        // this thread's first row of a tile
  int col;       // cp.async: its first element of the row
  bool copies_v; // bulk: its rows are V rows
  int warp;

  CUATTN_DEVICE RowCopies(Ring r, int tid)
      : ring(r), r0(kBulk ? tid % Tr::kBN : tid / kLanesPerRow), col(kBulk ? 0 : (tid % kLanesPerRow) * kChunkElems),
        copies_v(kBulk && tid % Tr::kThreads >= Tr::kBN), warp(tid / 32) {}

  // The first of consumer warp `warp`'s 16 keys of tile `it`: rows land where their keys fall.
  CUATTN_DEVICE int warp_first_key(const PieceTiles& u, int it) const { return u.tile0 + it * Tr::kBN + warp * 16; }

  CUATTN_DEVICE void fetch_pages(const PieceTiles& u, const PagedKV<KV>& kv, int tile, int (&ids)[kCopyPasses]) const {
    const bool any_keys = u.n_tiles > 0;
#pragma unroll
    for (int i = 0; i < kCopyPasses; ++i) ids[i] = any_keys ? kv.page_id(u.tile0 + tile * Tr::kBN + r0 + i * kCopyStep) : 0;
  }
};

// sm90: every producer thread copies a row of every tile as soon as the consumers release its
// slot. A row outside the key range is zero-filled instead (ordered before the copy engine's later
// writes to it, and by the thread's own arrival before the consumers' reads). Every producer
// thread arrives on `full` once a tile, every consumer thread on `empty`: each thread's own
// accesses are ordered by its own arrival.
template <class Tr, typename KV>
struct BulkRowProducer : RowCopies<Tr, KV, true> {
  using Base = RowCopies<Tr, KV, true>;
  using Base::Base;
  using Base::copies_v, Base::r0, Base::ring, Base::kCopyPasses, Base::kRawStride, Base::kRowBytes;

  CUATTN_DEVICE void produce(const PieceTiles& u, const PagedKV<KV>& kv) const {
    int ids[kCopyPasses], next[kCopyPasses];
    this->fetch_pages(u, kv, 0, ids);
    for (int tile = 0; tile < u.n_tiles; ++tile) {
      this->fetch_pages(u, kv, tile + 1, next);  // in flight while this tile waits for its slot
      const int gt = u.t_base + tile, stage = gt % Tr::kStages;
      ring.wait_free(gt);
      const int j = u.tile0 + tile * Tr::kBN + r0;
      const bool ok = j >= u.lo && j < u.hi;
      KV* dst = (copies_v ? ring.v(stage) : ring.k(stage)) + r0 * kRawStride;
      if (!ok) {
#pragma unroll
        for (int e = 0; e < kRowBytes / 16; ++e) reinterpret_cast<uint4*>(dst)[e] = make_uint4(0, 0, 0, 0);
        fence_proxy_async();
      }
      mbar_arrive_expect_tx(&ring.full[stage], ok ? kRowBytes : 0);
      if (ok) {
        const int page = kv.page(ids[0]), slot = kv.slot(j);
        bulk_copy(dst, copies_v ? kv.v_row(page, slot) : kv.k_row(page, slot), kRowBytes, &ring.full[stage]);
      }
#pragma unroll
      for (int i = 0; i < kCopyPasses; ++i) ids[i] = next[i];
    }
  }
  CUATTN_DEVICE void start(const PieceTiles&, const PagedKV<KV>&) {}
  CUATTN_DEVICE int land(const PieceTiles& u, const PagedKV<KV>&, int it) const {
    ring.wait_landed(u.t_base + it);
    return this->warp_first_key(u, it);
  }
  CUATTN_DEVICE void release(const PieceTiles& u, int it) const { ring.release(u.t_base + it); }
  CUATTN_DEVICE void finish() const {}
};

// sm80: the consumers copy (the producer warps left before any barrier). kStages - 1 tiles are in
// flight before the loop; at tile `it` the consumers wait for it, meet at a barrier (after which
// every warp is done with tile it - 1, whose slot is refilled) and issue tile it + kStages - 1.
// The page ids of the next tile to issue are in flight a tile ahead.
template <class Tr, typename KV>
struct CpAsyncCopier : RowCopies<Tr, KV, false> {
  using Base = RowCopies<Tr, KV, false>;
  using Base::col, Base::r0, Base::ring, Base::kCopyPasses, Base::kCopyStep, Base::kRawStride, Base::kPerLane,
      Base::kLanesPerRow, Base::kChunkElems;
  int pages[kCopyPasses];  // ids of the next tile to issue (it + kStages - 1 at the loop top)

  CUATTN_DEVICE CpAsyncCopier(typename Base::Ring r, int tid) : Base(r, tid) {}

  CUATTN_DEVICE void issue(const PieceTiles& u, const PagedKV<KV>& kv, int tile, const int (&ids)[kCopyPasses]) const {
    const int stage = (u.t_base + tile) % Tr::kStages;
    KV* sk = ring.k(stage);
    KV* sv = ring.v(stage);
    const int first = u.tile0 + tile * Tr::kBN;
#pragma unroll
    for (int i = 0; i < kCopyPasses; ++i) {
      const int r = r0 + i * kCopyStep;
      const int j = first + r;
      const bool ok = j >= u.lo && j < u.hi;
      const int page = kv.page(ids[i]), slot = kv.slot(j);
      const KV* ks = kv.k_row(page, slot, col);
      const KV* vs = kv.v_row(page, slot, col);
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {  // in bounds even when !ok (then nothing is read)
        const int e = c * kLanesPerRow * kChunkElems;
        cp_async_16(sk + r * kRawStride + col + e, ks + e, ok);
        cp_async_16(sv + r * kRawStride + col + e, vs + e, ok);
      }
    }
  }

  CUATTN_DEVICE void produce(const PieceTiles&, const PagedKV<KV>&) const {}
  // The page ids of the first kStages tiles all in flight, then their copies.
  CUATTN_DEVICE void start(const PieceTiles& u, const PagedKV<KV>& kv) {
    int first[Tr::kStages - 1][kCopyPasses];
#pragma unroll
    for (int s = 0; s < Tr::kStages - 1; ++s) this->fetch_pages(u, kv, s, first[s]);
    this->fetch_pages(u, kv, Tr::kStages - 1, pages);
#pragma unroll
    for (int s = 0; s < Tr::kStages - 1; ++s) {
      if (s < u.n_tiles) issue(u, kv, s, first[s]);
      cp_async_commit();
    }
  }
  CUATTN_DEVICE int land(const PieceTiles& u, const PagedKV<KV>& kv, int it) {
    cp_async_wait<Tr::kStages - 2>();
    named_barrier_sync(1, Tr::kThreads);
    if (it + Tr::kStages - 1 < u.n_tiles) issue(u, kv, it + Tr::kStages - 1, pages);
    cp_async_commit();
    this->fetch_pages(u, kv, it + Tr::kStages, pages);
    return this->warp_first_key(u, it);
  }
  CUATTN_DEVICE void release(const PieceTiles&, int) const {}
  CUATTN_DEVICE void finish() const { cp_async_wait<0>(); }
};

}  // namespace cuattn
