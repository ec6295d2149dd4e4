// latent_decode_sm90_narrow.cuh — DeepSeek MLA decode on Hopper (sm_90a) for few query rows:
// the products transposed, so that a unit of kN = 16 or 32 query rows costs the tensor cores
// what its rows need instead of a padded 64.
//
// wgmma's M is 64. With 16 query rows (Hq 16, one new token: the tensor-parallel shard, the
// memory-bound case) a 64-row unit of latent_decode_sm90.cuh spends 3/4 of its products on
// padding. Here the keys are M and the query rows are N:
//
//   S^T = K Q^T   [64 keys x kN]: A = the key panels as they land (K-major), B = Q^T, the
//                 unit's query in shared memory (K-major): wgmma m64nNk16, 36 k-steps in
//                 kChains independent accumulators, added after
//   softmax       over the 64 keys of each column: KeyMajorSoftmax (the column max reduced over
//                 lanes, then over the 4 warps through shared memory)
//   P^T           the probabilities, transposed back by stmatrix into one swizzled panel
//                 [kN rows][64 keys], the K-major B of
//   O^T += V^T P^T  [512 x kN]: A = V^T, the tile's first 512 columns read in place (MN-major),
//                 eight m64 blocks, 4 k-steps each; 4 kN accumulators a thread
//
//   CTA       one an SM: a producer warp (its warpgroup's other warps leave) and one consumer
//             warpgroup (a tile's products are about 1300 clocks of shared-memory operand
//             traffic, against about 4000 to load it at the copy rate)
//   loads     the producer warp's lanes issue TMA tensor copies (boxes as in
//             latent_decode_sm90.cuh; lane j copies box j, its page looked up a tile ahead) into a
//             ring of 8 KB panel slots, as many as fit (25 at kN 16: 2.8 tiles), each with its
//             own barriers: S^T starts on a tile's first panel while the rest land, and each
//             panel is released as soon as its last product completes (the rope panel after S^T,
//             V panels 0-3 and 4-7 after their halves of O^T)
//   pieces    the decode work list with kN-row units, as the other MLA kernels: a whole unit
//             writes its normalised rows, a split piece its rows and LSE in fp32 to its slot,
//             merged by mla_list_combine. The next piece's query is copied (cp.async) once the
//             piece's last S^T completed, under its last O^T and the epilogue.
//
// Same calls as latent_decode_sm90.cuh (16-bit caches, pages of 8, 16, 32 or a multiple of 64),
// for units of at most 32 rows (mla_hopper_ready says which calls). Not the default: on an H200
// it runs within a few per cent of the 64-row kernel at Hq 16 (faster on a skewed batch, slower
// at B32 L4096) and 15 % behind at Hq 32 (bench/NOTES.md); forced by the internal variant narrow=1.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include "common/copy.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "common/wgmma.cuh"
#include "cuattn/mla_params.h"
#include "cuattn/worklist.h"
#include "mla/latent_decode.cuh"       // LatentPiece, store position helpers
#include "mla/latent_decode_sm90.cuh"  // LatentSm90Traits (tile geometry), latent_tma_box

namespace cuattn {

template <int kN_>
struct LatentNarrowTraits {
  static constexpr int kN = kN_;  // query rows a unit: the products' N
  static constexpr int kDk = 576, kDv = 512, kBN = 64;
  static constexpr int kPanels = kDk / 64, kVPanels = kDv / 64;  // 9 panels, the first 8 are V
  static constexpr int kNT = kN / 8;                             // n8 tiles of a product
  static constexpr int kPanelBytes = kBN * 128;                  // [64 keys][128 bytes], swizzled
  static constexpr int kQPanelBytes = kN * 128;                  // [kN rows][128 bytes], swizzled
  static constexpr int kThreads = 256;                           // producer warpgroup + consumer
  // S^T's independent accumulator chains (k-step k of a panel adds into chain k % kChains): a
  // chain of 36 dependent m64nNk16 products would wait out each one's latency.
  static constexpr int kChains = kN == 16 ? 4 : 2;
  // Q, P^T, the column reductions (two buffers, alternate tiles), then the ring: as many panel
  // slots as the rest of the 227 KB holds, each with its barriers (full, empty).
  static constexpr size_t kPOffset = size_t(kPanels) * kQPanelBytes;
  static constexpr size_t kRedOffset = kPOffset + kQPanelBytes;
  static constexpr size_t kRingOffset = (kRedOffset + 2 * 4 * kN * sizeof(float) + 1023) / 1024 * 1024;
  static constexpr size_t kSlotCost = kPanelBytes + 2 * sizeof(uint64_t);
  static constexpr int kSlots = int((227 * 1024 - 1024 - kRingOffset - 64) / kSlotCost);
  static constexpr size_t kBarOffset = kRingOffset + size_t(kSlots) * kPanelBytes;
  static constexpr size_t kSmem = kBarOffset + 2 * kSlots * sizeof(uint64_t) + 1024;  // + alignment
  static_assert(kN == 16 || kN == 32, "units of 16 or 32 query rows");
  static_assert(kQPanelBytes % 1024 == 0, "swizzled panels stay 1024-byte aligned");
  static_assert(kSlots >= 2 * kPanels, "the ring holds two tiles");
  static_assert(kSmem <= 227 * 1024, "Q, P and the ring fit an SM's 227 KB");
};

// The producer: one warp's lanes copy each tile panel by panel into the ring's panel slots (tile
// gt's panel pn is ring panel g = 9 gt + pn, in slot g % kSlots, so the ring holds kSlots / 9
// tiles, not a whole number), lane 0 announcing each panel's bytes on its `full` barrier first.
// Boxes of pages past the piece's keys are not copied (their table entries may be junk); the
// consumer zeroes those V rows.
template <typename Tr>
struct LatentPanelProducer {
  StageBarriers<Tr::kSlots> ring;  // indexed by ring panel g
  unsigned char* slots;            // kSlots panels of kPanelBytes
  const CUtensorMap* map;
  int box;  // keys a box: min(page size, 64)

  CUATTN_DEVICE static int index(int gt, int pn) { return gt * Tr::kPanels + pn; }
  CUATTN_DEVICE unsigned char* panel(int gt, int pn) const {
    return slots + (index(gt, pn) % Tr::kSlots) * Tr::kPanelBytes;
  }

  CUATTN_DEVICE void produce(const MlaLatentParams& p, const LatentPiece& u, int t_base, int lane) const {
    // Lane j copies box j of each tile (at most 8 boxes: pages of 8 or more), its page looked up
    // a tile ahead.
    const LatentTilePages<Tr::kBN> pages{p, u, box, lane};
    int raw = pages.first();
    for (int it = 0; it < u.n_tiles; ++it) {
      const int gt = t_base + it, n0 = u.n_begin + it * Tr::kBN, boxes = pages.boxes(it);
      const int next = pages.load(it + 1);
      const int page = pages.page(raw), slot = (n0 + lane * box) % p.page_size;  // the box's page, first slot
      for (int pn = 0; pn < Tr::kPanels; ++pn) {
        const int g = index(gt, pn);
        ring.wait_free(g);
        uint64_t* full = &ring.full[g % Tr::kSlots];
        if (lane == 0) mbar_arrive_expect_tx(full, uint32_t(boxes * box * 128));
        __syncwarp();
        if (lane < boxes) latent_tma_box(panel(gt, pn) + lane * box * 128, map, full, slot, page, pn);
      }
      raw = next;
    }
  }
};

template <typename T, int kN>
__global__ void __launch_bounds__(LatentNarrowTraits<kN>::kThreads, 1)
mla_decode_sm90_narrow_kernel(const __grid_constant__ MlaLatentParams p, const __grid_constant__ CUtensorMap kv_map) {
#ifdef CUATTN_SM90A
  using Tr = LatentNarrowTraits<kN>;
  constexpr int kBN = Tr::kBN, kNT = Tr::kNT, kQ = 2 * kNT, kVP = Tr::kVPanels, kC = Tr::kChains;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* const base = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* const sQ = base;
  unsigned char* const sP = base + Tr::kPOffset;
  float* const s_red = reinterpret_cast<float*>(base + Tr::kRedOffset);  // [2][4 warps][kN]
  uint64_t* const bars = reinterpret_cast<uint64_t*>(base + Tr::kBarOffset);
  const LatentPanelProducer<Tr> src{{bars, bars + Tr::kSlots}, base + Tr::kRingOffset, &kv_map, min(p.page_size, kBN)};

  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int i = 0; i < Tr::kSlots; ++i) {
      mbar_init(&src.ring.full[i], 1);   // the producer's expect_tx
      mbar_init(&src.ring.empty[i], 4);  // one arrival a consumer warp
    }
    mbar_fence_init();
  }
  __syncthreads();
  grid_dependency_wait();  // the work list (and everything before it in the stream) is complete
  launch_dependents();  // the combine may be scheduled from now on (it waits for this grid)

  const WorkList& list = p.list;
  WorkPiece piece;

  // ---- producer warp --------------------------------------------------------------------------
  if (tid < 128) {
    if (tid >= 32) return;
    int t_base = 0;
    for (bool more = list.first(blockIdx.x, piece); more; more = list.next(blockIdx.x, piece)) {
      const LatentPiece u(p, piece, kN, kBN);
      src.produce(p, u, t_base, tid);
      t_base += u.n_tiles;
    }
    return;
  }

  // ---- consumer warpgroup ---------------------------------------------------------------------
  const int ctid = tid - 128, warp = ctid / 32, lane = tid % 32, g = lane / 4;
  const int rows = p.num_heads_q * p.seqlen_q;
  const float sl2 = p.scale * kLog2e;
  constexpr int kQReady = 1, kReduced = 2, kPReady = 3;  // named barriers of the 128 consumers
  auto sync_wg = [] { named_barrier_sync(kReduced, 128); };
  const uint32_t q_addr = smem_addr(sQ), p_addr = smem_addr(sP);
  int t_base = 0;

  // A unit's query into sQ: the consumer warpgroup's copies.
  auto copy_q = [&](const WorkPiece& w) { copy_latent_q<T, kN, 128, 2>(sQ, p, w, rows, ctid); };
  bool q_copied = false;  // the piece's query was copied during the previous piece's last tile

  for (bool more = list.first(blockIdx.x, piece); more;) {
    const LatentPiece u(p, piece, kN, kBN);
    const int row0 = u.row0;
    WorkPiece next = piece;
    const bool has_next = list.next(blockIdx.x, next);

    // The query (every consumer warp is past the previous piece's epilogue).
    if (!q_copied) copy_q(piece);
    cp_async_wait<0>();
    fence_proxy_async();  // before wgmma reads it
    named_barrier_sync(kQReady, 128);
    q_copied = false;

    KeyMajorSoftmax<kNT> softmax;
    softmax.init();
    float o[kVP][kNT][4];  // O^T: V panel j's 64 columns x the unit's kN rows
#pragma unroll
    for (int j = 0; j < kVP; ++j)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) o[j][nt][0] = o[j][nt][1] = o[j][nt][2] = o[j][nt][3] = 0.f;
    // Keys every row of the unit sees: tiles below n_clear need no mask.
    const int n_clear = u.visible_end(p, row0);

    for (int it = 0; it < u.n_tiles; ++it) {
      const int gt = t_base + it, n0 = u.n_begin + it * kBN;
      auto panel_addr = [&](int pn) { return smem_addr(src.panel(gt, pn)); };

      // S^T = K Q^T, each panel's four k-steps issued as soon as it has landed, k-step k into
      // chain k % kC (independent accumulators, summed after).
      float sc[kC][kNT][4];
#pragma unroll
      for (int pn = 0; pn < Tr::kPanels; ++pn) {
        src.ring.wait_landed(src.index(gt, pn));
        wgmma_fence();  // after each wait: else ptxas serialises every wgmma (a wait in the chain)
        const uint64_t k_desc = wgmma_desc(panel_addr(pn), 16, 1024);
        const uint64_t q_desc = wgmma_desc(q_addr + pn * Tr::kQPanelBytes, 16, 1024);
#pragma unroll
        for (int k = 0; k < 4; ++k)  // (descriptors advance by address / 16 in their low bits)
          wgmma_ss<T, kN>(sc[k % kC], k_desc + k * 2, q_desc + k * 2, pn > 0 || k >= kC);
      }
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int c = 0; c < kC; ++c) fence_operands(sc[c]);
      if (lane == 0) src.ring.release(src.index(gt, Tr::kPanels - 1));  // the rope columns are done
      float (&s)[kNT][4] = sc[0];
#pragma unroll
      for (int c = 1; c < kC; ++c)
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nt][e] += sc[c][nt][e];

      // Keys past a column's limit: -inf (the junk of uncopied boxes included).
      if (n0 + kBN > n_clear) {
#pragma unroll
        for (int i = 0; i < kQ; ++i) {
          const int last = u.visible_end(p, row0 + KeyMajorSoftmax<kNT>::column(i, lane));
#pragma unroll
          for (int hf = 0; hf < 2; ++hf)
            if (n0 + warp * 16 + g + 8 * hf >= last) s[i / 2][i % 2 + 2 * hf] = -CUDART_INF_F;
        }
      }
      float mx[kQ], alpha[kQ];
      softmax.tile_max(s, s_red + (gt % 2) * 4 * kN, warp, lane, sync_wg, mx);
      softmax.update_to(s, sl2, mx, alpha);
      rescale_columns(o, alpha);

      // P^T into sP: the pair (key g, columns 2t, 2t + 1) of n8 tile nt, keys 8 hf.., is row g of
      // 8x8 matrix (nt, hf); stored transposed, row = query 8 nt + l % 8, 16-byte chunk 2 warp + hf.
#pragma unroll
      for (int nt2 = 0; nt2 < kNT; nt2 += 2) {
        const uint32_t r[4] = {pack2<T>(s[nt2][0], s[nt2][1]), pack2<T>(s[nt2][2], s[nt2][3]),
                               pack2<T>(s[nt2 + 1][0], s[nt2 + 1][1]), pack2<T>(s[nt2 + 1][2], s[nt2 + 1][3])};
        const int m = lane / 8, q = 8 * (nt2 + m / 2) + lane % 8, chunk = 2 * warp + m % 2;
        stmatrix_x4_trans(p_addr + q * 128 + ((chunk ^ (q % 8)) * 16), r);
      }
      // V rows of keys past the piece (uncopied boxes, or the rest of a page): zero, since P = 0
      // times a NaN left there would be NaN. Their K rows needed nothing (masked above).
      const int valid = u.n_end - n0;
      if (valid < kBN) {
        constexpr int kChunks = kVP * 8;  // 16-byte chunks of a key's 512 V columns
        for (int e = ctid; e < (kBN - valid) * kChunks; e += 128) {
          const int r = valid + e / kChunks, pn = (e % kChunks) / 8, ch = e % 8;
          *reinterpret_cast<uint4*>(src.panel(gt, pn) + r * 128 + ((ch ^ (r % 8)) * 16)) = make_uint4(0, 0, 0, 0);
        }
      }
      fence_proxy_async();  // P^T and the zeros, before wgmma reads them
      named_barrier_sync(kPReady, 128);

      // O^T += V^T P^T: V panel j (columns 64 j..) is A, MN-major, k-step k at key row 16 k; P^T
      // k-step k at byte 32 k of its rows. Two halves of four panels, each k-step across the four
      // (so that consecutive products are independent), one commit group a half, whose panels are
      // released as soon as it completes.
      const uint64_t p_desc = wgmma_desc(p_addr, 16, 1024);
      wgmma_fence();
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
          for (int j = 4 * half; j < 4 * half + 4; ++j)
            wgmma_ss<T, kN, false, true>(o[j], wgmma_desc(panel_addr(j), Tr::kPanelBytes, 1024) + k * 128,
                                         p_desc + k * 2, true);
        wgmma_commit();
      }
      // Every warp's S^T is done (the reduction's barrier in tile_max): sQ is free for the next
      // piece's query, copied under this last O^T.
      if (it == u.n_tiles - 1 && has_next) {
        copy_q(next);
        q_copied = true;
      }
      wgmma_wait<1>();
      if (lane == 0)
        for (int j = 0; j < 4; ++j) src.ring.release(src.index(gt, j));
      wgmma_wait<0>();
      if (lane == 0)
        for (int j = 4; j < kVP; ++j) src.ring.release(src.index(gt, j));
#pragma unroll
      for (int j = 0; j < kVP; ++j) fence_operands(o[j]);
    }
    t_base += u.n_tiles;

    // ---- epilogue: each column's sum over the warpgroup, then the unit's normalised rows -------
    float factor[kQ], lse[kQ];
    softmax.finalize(sl2, s_red + (t_base % 2) * 4 * kN, warp, lane, sync_wg, factor, lse);
    const int slot = partial_slot(blockIdx.x, piece.split);
    const bool whole = piece.num_splits == 1;
#pragma unroll
    for (int i = 0; i < kQ; ++i) {
      const int rl = KeyMajorSoftmax<kNT>::column(i, lane), row = row0 + rl;
      if (row >= rows) continue;
      const int nt = i / 2, e = i % 2, token = row / p.num_heads_q, h = row % p.num_heads_q;
      T* out = latent_out_row<T>(p, u.b, token, h);
      float* part = latent_part_row<kN>(p, slot, rl);
#pragma unroll
      for (int j = 0; j < kVP; ++j)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int col = 64 * j + 16 * warp + g + 8 * hf;
          const float v = o[j][nt][e + 2 * hf] * factor[i];
          if (whole) out[col] = from_float<T>(v);
          else part[col] = v;
        }
      if (warp == 0 && g == 0) store_latent_lse<kN>(p, u.b, token, h, rl, slot, whole, lse[i]);
    }
    piece = next;
    more = has_next;
  }
#else
  arch_unsupported();
#endif
}

}  // namespace cuattn
