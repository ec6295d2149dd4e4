// latent_decode_sm90.cuh — DeepSeek MLA decode on Hopper (sm_90a): the work list of
// latent_decode.cuh with TMA loads and wgmma, units of 64 query rows.
//
// A unit is 64 query rows (row r = token * Hq + head; rows past Hq x Sq are zero) of one
// sequence; every row attends to the same 576-wide latent keys, whose first 512 columns are V.
//
//   CTA       one an SM, 3 warpgroups: a producer warp (the other three warps of its warpgroup
//             leave) and two consumer warpgroups; setmaxnreg moves the registers to the
//             consumers
//   loads     the producer warp's lanes issue TMA tensor copies of a 64-key tile, one per (box,
//             64-column panel): a box is a page (pages of 8, 16 or 32 slots) or 64 slots of one
//             (pages a multiple of 64), 9 panels of [64 keys][128 bytes] with the 128-byte swizzle,
//             into a 2-stage ring (StageBarriers); the block table is read a tile ahead
//             (LatentTilePages), so no lookup sits between a free slot and its copies. Q (64 x 576, 72 KB) and two tiles fill the
//             shared memory, so the ring cannot be deeper: one tile lands while the other is used
//   S = Q K^T consumer c computes the scores of keys 32 c .. 32 c + 31 of the tile for all 64 rows:
//             wgmma m64n32k16, 36 k-steps, Q and K from shared memory
//   softmax   the two consumers exchange their rows' tile maxima through shared memory and both
//             go on from the same maximum (OnlineSoftmax::tile_max / update_to), so both rescale
//             by the same factors; each keeps the sum of its own keys until the end
//   O += P V  consumer c owns output columns 256 c .. 256 c + 255 (m64n256, 128 accumulators a
//             thread): its own 32 keys' P from registers (wgmma with A in registers), the other
//             consumer's 32 from shared memory (it writes its P there, swizzled, before a
//             barrier), V = the tile's first 512 columns, read in place (MN-major)
//   pieces    as in latent_decode.cuh: a whole unit writes its normalised rows, a split piece its
//             rows and LSE in fp32 to its slot (64 rows a slot), merged by mla_list_combine. The
//             next piece's query is copied (cp.async) once the piece's last P V is issued (both
//             consumers' S are done by then), so it lands under that P V and the epilogue
//   schedule  each tile's S, softmax and P V one after another, while the other ring slot loads
//             (issuing S of tile i + 1 with P V of tile i instead holds both slots, so no tile
//             loads while the tensor cores work: 5-25 % slower on an H100, bench/NOTES.md)
//
// Page sizes other than 8, 16, 32 or a multiple of 64, fp8 caches and other devices are not
// taken (mla_hopper_ready says which calls are).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include "common/copy.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "common/wgmma.cuh"
#include "cuattn/mla_params.h"
#include "cuattn/worklist.h"
#include "mla/latent_decode.cuh"  // LatentPiece

namespace cuattn {

struct LatentSm90Traits {
  static constexpr int kDk = 576, kDv = 512, kRows = 64, kBN = 64, kStages = 2;
  static constexpr int kPanels = kDk / 64;             // 9 panels of 64 columns
  static constexpr int kPanelBytes = kBN * 128;        // [64 rows][128 bytes], swizzled
  static constexpr int kQBytes = kPanels * kRows * 128;
  static constexpr int kTileBytes = kPanels * kPanelBytes;
  static constexpr int kPBytes = kRows * kBN * 2;      // P, one 64 x 64 panel
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kProducerRegs = 56, kConsumerRegs = 224;  // 56 x 128 + 224 x 256 <= 64K
  static constexpr int kKeysPerWg = kBN / kConsumers;  // 32: S is m64n32
  static constexpr int kColsPerWg = kDv / kConsumers;  // 256: O is m64n256
  static constexpr int kOT = kColsPerWg / 8;           // 32 accumulator n8 blocks
  // Q, the ring, P, the rows' exchange (a float a row a consumer), the barriers (full, empty).
  static constexpr size_t kRingOffset = kQBytes;
  static constexpr size_t kPOffset = kRingOffset + kStages * size_t(kTileBytes);
  static constexpr size_t kExchOffset = kPOffset + kPBytes;
  static constexpr size_t kBarOffset = kExchOffset + kConsumers * kRows * sizeof(float);
  static constexpr size_t kSmem = kBarOffset + 2 * kStages * sizeof(uint64_t) + 1024;  // + alignment
  static_assert(kSmem <= 227 * 1024, "Q, two tiles and P fit an SM's 227 KB");
  static_assert(kProducerRegs * 128 + kConsumerRegs * 256 <= 65536, "the register split fits");
};

// One TMA box of the latent cache: the keys of page `page` (at most 64) from slot `slot` on,
// columns 64 pn .. 64 pn + 63, into a swizzled panel at dst, completing on `bar`.
CUATTN_DEVICE void latent_tma_box(unsigned char* dst, const CUtensorMap* map, uint64_t* bar, int slot, int page,
                                  int pn) {
  tma_load_4d(dst, map, bar, 64 * pn, slot, page, 0);
}

// The block-table entries of a piece's tiles, for a producer warp that looks them up a tile
// ahead: lane j reads the entry of box j of tile `it` (entry 0 of the row when the tile has no box
// j — a piece with tiles has keys, so its row has entries; no branch, so nothing waits for the
// load there) and clamps it into the cache a tile later, after the slot waits, so the round trip
// stays off the copies' path. (Looked up box by box as the copies were issued, a dependent load
// before each tile held the narrow kernel to 0.35-0.49 x copy on an H200.)
template <int kBN>
struct LatentTilePages {
  const MlaLatentParams& p;
  const LatentPiece& u;
  int box, lane;  // keys a box: min(page size, kBN), so at most kBN / 8 boxes a tile

  CUATTN_DEVICE int boxes(int it) const {  // boxes of tile it holding keys < n_end (0 past the last)
    const int n0 = u.n_begin + it * kBN;
    return it < u.n_tiles ? min(kBN / box, (u.n_end - n0 + box - 1) / box) : 0;
  }
  CUATTN_DEVICE int load(int it) const {  // the raw entry of this lane's box of tile it
    if (p.block_table == nullptr) return u.b;
    const int col = lane < boxes(it) ? (u.n_begin + it * kBN + lane * box) / p.page_size : 0;
    return p.block_table[int64_t(u.b) * p.bt_batch_stride + col];
  }
  CUATTN_DEVICE int first() const { return u.n_tiles > 0 ? load(0) : 0; }  // a [B, 0] table has no entry 0
  CUATTN_DEVICE int page(int raw) const { return p.block_table == nullptr ? raw : min(max(raw, 0), p.num_pages - 1); }
};

// A unit's kRows x 576 query into sQ as 9 swizzled panels of [kRows rows][128 bytes] (the K-major
// wgmma operand), rows past the call's `rows` (Hq x Sq) zero: thread `tid` of kThreads issues its
// 16-byte cp.async copies, all in flight and committed as one group, not waited for.
template <typename T, int kRows, int kThreads, int kUnroll>
CUATTN_DEVICE void copy_latent_q(unsigned char* sQ, const MlaLatentParams& p, const WorkPiece& w, int rows,
                                 int tid) {
  const T* q = static_cast<const T*>(p.q) + w.seq * p.q_batch_stride;
  const int row0 = w.unit * kRows;
  constexpr int kChunksPerRow = 576 / 8, kPerThread = kRows * kChunksPerRow / kThreads;
  static_assert(kRows * kChunksPerRow % kThreads == 0, "whole rounds of 16-byte copies");
#pragma unroll kUnroll
  for (int i = 0; i < kPerThread; ++i) {
    const int e = i * kThreads + tid, r = e / kChunksPerRow, cc = e % kChunksPerRow, row = row0 + r;
    const bool ok = row < rows;
    const T* from = ok ? q + (row / p.num_heads_q) * p.q_row_stride + (row % p.num_heads_q) * p.q_head_stride : q;
    cp_async_16(sQ + (cc / 8) * (kRows * 128) + r * 128 + (((cc % 8) ^ (r % 8)) * 16), from + cc * 8, ok);
  }
  cp_async_commit();
}

// The producer: one warp's lanes copy a tile's (box, panel) pairs, lane 0 announcing the bytes
// on the tile's `full` barrier first. Boxes of pages past the piece's keys are not copied (their
// table entries may be junk); the consumers zero the V rows past the keys (zero_tail).
struct LatentTmaProducer {
  using Tr = LatentSm90Traits;
  StageBarriers<Tr::kStages> ring;
  unsigned char* tiles;  // kStages tiles of kTileBytes
  const CUtensorMap* map;
  int box;               // keys a box: min(page size, 64)

  CUATTN_DEVICE unsigned char* tile(int gt) const { return tiles + (gt % Tr::kStages) * Tr::kTileBytes; }

  CUATTN_DEVICE void produce(const MlaLatentParams& p, const LatentPiece& u, int t_base, int lane) const {
    const LatentTilePages<Tr::kBN> pages{p, u, box, lane};
    int raw = pages.first();
    for (int it = 0; it < u.n_tiles; ++it) {
      const int gt = t_base + it, n0 = u.n_begin + it * Tr::kBN, boxes = pages.boxes(it);
      const int next = pages.load(it + 1);  // used a tile later
      ring.wait_free(gt);
      const int page = pages.page(raw);     // lane j: box j's page
      uint64_t* full = &ring.full[gt % Tr::kStages];
      if (lane == 0) mbar_arrive_expect_tx(full, uint32_t(boxes * box * 128 * Tr::kPanels));
      __syncwarp();
      // The (box, panel) copies over the lanes, box j's page from lane j (a uniform trip count).
      unsigned char* dst = tile(gt);
      for (int i0 = 0; i0 < boxes * Tr::kPanels; i0 += 32) {
        const int i = i0 + lane, j = i / Tr::kPanels, pn = i % Tr::kPanels;
        const int pg = __shfl_sync(0xffffffffu, page, j & 31);
        if (i < boxes * Tr::kPanels)
          latent_tma_box(dst + pn * Tr::kPanelBytes + j * box * 128, map, full, (n0 + j * box) % p.page_size, pg, pn);
      }
      raw = next;
    }
  }

  // Consumer warpgroup c: waits for ring tile gt; in a tile that holds keys past the piece's end
  // (valid < 64 of them count), zeroes those V rows of its own 256 columns (P = 0 times a NaN
  // left in such a row would be NaN; its K rows need nothing, the mask overwrites their scores).
  // Called after both consumers' S of the tile completed (they read every column of K).
  CUATTN_DEVICE void zero_tail(int gt, int valid, int c, int ctid) const {
    if (valid >= Tr::kBN) return;
    unsigned char* t = tile(gt);
    constexpr int kChunks = 4 * 8;  // 16-byte chunks of a row in this consumer's 4 panels
    for (int e = ctid; e < (Tr::kBN - valid) * kChunks; e += 128) {
      const int r = valid + e / kChunks, pn = 4 * c + (e % kChunks) / 8, ch = e % 8;
      *reinterpret_cast<uint4*>(t + pn * Tr::kPanelBytes + r * 128 + ((ch ^ (r % 8)) * 16)) = make_uint4(0, 0, 0, 0);
    }
    fence_proxy_async();  // before wgmma (and later TMA) reach these rows
  }
};

template <typename T>
__global__ void __launch_bounds__(LatentSm90Traits::kThreads, 1)
mla_decode_sm90_kernel(const __grid_constant__ MlaLatentParams p, const __grid_constant__ CUtensorMap kv_map) {
#ifdef CUATTN_SM90A
  using Tr = LatentSm90Traits;
  constexpr int kBN = Tr::kBN, kOT = Tr::kOT, kKW = Tr::kKeysPerWg;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* const sQ = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* const sP = sQ + Tr::kPOffset;
  float* const s_exch = reinterpret_cast<float*>(sQ + Tr::kExchOffset);  // [consumer][row]
  uint64_t* const bars = reinterpret_cast<uint64_t*>(sQ + Tr::kBarOffset);
  const LatentTmaProducer src{{bars, bars + Tr::kStages}, sQ + Tr::kRingOffset, &kv_map, min(p.page_size, kBN)};

  const int tid = threadIdx.x, wg = tid / 128;
  if (tid == 0) {
    for (int s = 0; s < Tr::kStages; ++s) {
      mbar_init(&src.ring.full[s], 1);
      mbar_init(&src.ring.empty[s], 4 * Tr::kConsumers);  // one arrival a consumer warp
    }
    mbar_fence_init();
  }
  __syncthreads();
  grid_dependency_wait();  // the work list (and everything before it in the stream) is complete
  launch_dependents();  // the combine may be scheduled from now on (it waits for this grid)

  const WorkList& list = p.list;
  WorkPiece piece;

  // ---- producer warp --------------------------------------------------------------------------
  if (wg == 0) {
    setmaxnreg_dec<Tr::kProducerRegs>();
    if (tid >= 32) return;
    int t_base = 0;
    for (bool more = list.first(blockIdx.x, piece); more; more = list.next(blockIdx.x, piece)) {
      const LatentPiece u(p, piece, Tr::kRows, kBN);
      src.produce(p, u, t_base, tid);
      t_base += u.n_tiles;
    }
    return;
  }

  // ---- consumer warpgroups --------------------------------------------------------------------
  setmaxnreg_inc<Tr::kConsumerRegs>();
  const int c = wg - 1, ctid = tid % 128, warp = ctid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int r0 = warp * 16 + g;  // this thread's rows of the unit: r0 and r0 + 8
  const int rows = p.num_heads_q * p.seqlen_q;
  const float sl2 = p.scale * kLog2e;
  constexpr int kAll = 1, kQReady = 2, kMaxReady = 3, kPReady = 4;  // named barriers, 256 threads
  auto sync_consumers = [](int id) { named_barrier_sync(id, 256); };
  const uint32_t q_addr = smem_addr(sQ);
  int t_base = 0;

  // A unit's query into sQ: the consumers' 256 threads' copies (thread c 128 + ctid).
  auto copy_q = [&](const WorkPiece& w) { copy_latent_q<T, Tr::kRows, 256, 6>(sQ, p, w, rows, c * 128 + ctid); };
  bool q_copied = false;  // the piece's query was copied during the previous piece's last tile

  for (bool more = list.first(blockIdx.x, piece); more;) {
    const LatentPiece u(p, piece, Tr::kRows, kBN);
    const int b = u.b, row0 = u.row0;
    WorkPiece next = piece;
    const bool has_next = list.next(blockIdx.x, next);

    // The query: both consumers have finished with the previous piece's Q, P and exchange.
    sync_consumers(kAll);
    if (!q_copied) copy_q(piece);
    cp_async_wait<0>();
    fence_proxy_async();  // before wgmma reads them
    sync_consumers(kQReady);
    q_copied = false;

    OnlineSoftmax<1> softmax;
    softmax.init();
    float o[1][kOT][4];
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot) o[0][ot][0] = o[0][ot][1] = o[0][ot][2] = o[0][ot][3] = 0.f;
    float sc[1][kKW / 8][4];
    uint32_t pa[kKW / 16][4];
    float alpha[2];
    // Keys every row of the unit sees: tiles below it need no mask.
    const int n_clear = u.visible_end(p, row0);

    // ---- the steps of one tile ---------------------------------------------------------------
    // S = Q K^T for this consumer's 32 keys (rows 32 c.. of every K panel): issued and committed.
    auto issue_s = [&](int it) {
      const int gt = t_base + it;
      const uint32_t k_addr = smem_addr(src.tile(gt)) + c * kKW * 128;
      src.ring.wait_landed(gt);
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < Tr::kDk / 16; ++ks)
        wgmma_ss<T, kKW>(sc[0], wgmma_desc(q_addr + (ks / 4) * (Tr::kRows * 128) + (ks % 4) * 32, 16, 1024),
                         wgmma_desc(k_addr + (ks / 4) * Tr::kPanelBytes + (ks % 4) * 32, 16, 1024), ks > 0);
      wgmma_commit();
    };
    // The landed S of tile `it`: masked, one maximum a row over both consumers' keys, turned
    // into P; alpha: the factor O is to be rescaled by.
    auto softmax_tile = [&](int it) {
      fence_operands(sc[0]);
      const int n0 = u.n_begin + it * kBN;
      if (n0 + kBN > n_clear) {  // keys past some row's end: -inf
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int last = u.visible_end(p, row0 + r0 + 8 * hf);
#pragma unroll
          for (int nt = 0; nt < kKW / 8; ++nt) {
            const int j = n0 + c * kKW + nt * 8 + 2 * t;
            if (j >= last) sc[0][nt][2 * hf] = -CUDART_INF_F;
            if (j + 1 >= last) sc[0][nt][2 * hf + 1] = -CUDART_INF_F;
          }
        }
      }
      float mx[2];
      softmax.tile_max(sc, mx);
      if (t == 0) s_exch[c * Tr::kRows + r0] = mx[0], s_exch[c * Tr::kRows + r0 + 8] = mx[1];
      sync_consumers(kMaxReady);
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) mx[hf] = fmaxf(mx[hf], s_exch[(1 - c) * Tr::kRows + r0 + 8 * hf]);
      softmax.update_to(sc, sl2, mx, alpha);
    };
    // P of tile `it`: this consumer's 32 keys as wgmma A fragments and into sP for the other
    // consumer (16-byte chunk 4 c + nt of each row, swizzled); the tile's V rows past the piece
    // zeroed; then both consumers' P are there.
    auto publish_p = [&](int it) {
#pragma unroll
      for (int kk = 0; kk < kKW / 16; ++kk) acc_to_a<T>(sc[0], kk, pa[kk]);
      unsigned char* sp = sP;
#pragma unroll
      for (int nt = 0; nt < kKW / 8; ++nt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int r = r0 + 8 * hf, chunk = (4 * c + nt) ^ (r % 8);
          *reinterpret_cast<uint32_t*>(sp + r * 128 + chunk * 16 + t * 4) =
              pack2<T>(sc[0][nt][2 * hf], sc[0][nt][2 * hf + 1]);
        }
      fence_proxy_async();
      src.zero_tail(t_base + it, u.n_end - u.n_begin - it * kBN, c, ctid);
      sync_consumers(kPReady);
    };
    // O[:, 256 c..] += P V of tile `it`: own keys (registers), then the other consumer's (shared
    // memory); V rows 16 kk.. of this consumer's panels 4 c..4 c + 3 (2048 bytes a 16-row step).
    auto issue_pv = [&](int it) {
      const uint32_t v_addr = smem_addr(src.tile(t_base + it)) + 4 * c * Tr::kPanelBytes;
      const uint32_t p_addr = smem_addr(sP);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kKW / 16; ++kk) {
        const int own = 2 * c + kk, other = 2 * (1 - c) + kk;  // 16-key steps of the tile
        wgmma_rs<T, Tr::kColsPerWg>(o[0], pa[kk], wgmma_desc(v_addr + own * 2048, Tr::kPanelBytes, 1024), true);
        wgmma_ss<T, Tr::kColsPerWg, true>(o[0], wgmma_desc(p_addr + other * 32, 16, 1024),
                                          wgmma_desc(v_addr + other * 2048, Tr::kPanelBytes, 1024), true);
      }
      wgmma_commit();
      // After the piece's last P V is issued both consumers' S are done (kMaxReady, kPReady passed):
      // sQ is free for the next piece's query, which lands under this P V and the epilogue.
      if (it == u.n_tiles - 1 && has_next) {
        copy_q(next);
        q_copied = true;
      }
    };
    // After P V of tile `it` completed: its registers are free again and its ring slot released.
    auto pv_done = [&](int it) {
      fence_operands(o[0]);
      fence_operands(pa);
      if (lane == 0) src.ring.release(t_base + it);
    };

    for (int it = 0; it < u.n_tiles; ++it) {
      issue_s(it);
      wgmma_wait<0>();
      softmax_tile(it);
      rescale_output(o, alpha);
      publish_p(it);
      issue_pv(it);
      wgmma_wait<0>();
      pv_done(it);
    }
    t_base += u.n_tiles;

    // ---- epilogue: the row sums of both consumers, then the unit's normalised rows -------------
    {
      float l[2];
      softmax.row_totals(l);
      // The exchange's last reads (the other consumer's maxima) came before kPReady.
      if (t == 0) s_exch[c * Tr::kRows + r0] = l[0], s_exch[c * Tr::kRows + r0 + 8] = l[1];
      sync_consumers(kMaxReady);
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) l[hf] = s_exch[r0 + 8 * hf] + s_exch[Tr::kRows + r0 + 8 * hf];
      softmax.set_row_totals(l);
    }
    float factor[2], lse[2];
    softmax.finalize(sl2, false, 0.f, factor, lse);
    const int slot = partial_slot(blockIdx.x, piece.split);
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int rl = r0 + 8 * hf, row = row0 + rl;
      if (row < rows)
        store_latent_row<T, Tr::kRows, kOT>(p, b, row, rl, slot, piece.num_splits == 1,
                                            c * Tr::kColsPerWg + 2 * t, o[0], hf, factor[hf], lse[hf],
                                            c == 0 && t == 0);
    }
    piece = next;
    more = has_next;
  }
#else
  arch_unsupported();
#endif
}

}  // namespace cuattn
