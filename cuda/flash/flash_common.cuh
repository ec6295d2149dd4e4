// flash_common.cuh — what the two flash forward kernels (flash_fwd.cuh: mma.sync, sm80+;
// flash_fwd_sm90.cuh: wgmma + TMA, sm_90a) share: where a sequence's rows are, which kv tiles a q
// tile visits, and the per-element mask on a tile of scores in the accumulator layout.
#pragma once

#include <math_constants.h>

#include "common/mask.cuh"
#include "cuattn/params.h"

namespace cuattn {

// Sequence b: offsets of its first query / key row in the (packed, for varlen) arrays and its
// lengths, clamped to the packed arrays so that corrupt cu_seqlens cannot cause an
// out-of-bounds access.
struct FlashSeq {
  int64_t q_start = 0, k_start = 0;
  int len_q, len_k;

  CUATTN_DEVICE FlashSeq(const AttnParams& p, int b) : len_q(p.seqlen_q), len_k(p.seqlen_k) {
    if (p.cu_seqlens_q) {
      q_start = clamp64(p.cu_seqlens_q[b], 0, p.total_q);
      k_start = clamp64(p.cu_seqlens_k[b], 0, p.total_k);
      len_q = int(clamp64(p.cu_seqlens_q[b + 1] - q_start, 0, min64(p.total_q - q_start, p.seqlen_q)));
      len_k = int(clamp64(p.cu_seqlens_k[b + 1] - k_start, 0, p.total_k - k_start));
    }
  }
};

struct NoBlockMask {};

// The kv tiles of kBN keys that query rows [m0, m0 + rows) visit, in order: the tiles of the
// dense mask's key range, or the block mask's full then partial blocks.
template <bool kBlockSparse, int kBN>
struct FlashTiles {
  int tile0 = 0, count = 0;
  [[no_unique_address]] std::conditional_t<kBlockSparse, BlockSparseMask, NoBlockMask> bsm;

  CUATTN_DEVICE FlashTiles(const AttnParams& p, const DenseMask& mask, int b, int h, int m0, int rows)
      : bsm(make_bsm(p, b, h, m0)) {
    int lo, hi;
    mask.key_range(m0, m0 + rows - 1, lo, hi);
    tile0 = lo / kBN;
    count = hi > lo ? (hi + kBN - 1) / kBN - tile0 : 0;
    if constexpr (kBlockSparse) count = hi > lo ? bsm.num_tiles() : 0;
  }

  // First key of tile `it`; `pattern` gets the block mask's partial pattern id, or -1 when the
  // tile needs no bits (dense, or a full block).
  CUATTN_DEVICE int start(int it, int& pattern) const {
    if constexpr (kBlockSparse) {
      return bsm.tile_start(it, pattern);
    } else {
      pattern = -1;
      return (tile0 + it) * kBN;
    }
  }

 private:
  static CUATTN_DEVICE auto make_bsm(const AttnParams& p, int b, int h, int m0) {
    if constexpr (kBlockSparse) return BlockSparseMask(p.block_mask, b, h, m0, kBN);
    else return NoBlockMask{};
  }
};

// Sets the scores of masked (query, key) pairs to -inf. s holds kM m16 row tiles x kN n8 column
// tiles in the mma accumulator layout (mma.cuh); this thread's rows are row0 + 16 mt + 8 hf
// (row0 includes the lane's g), its columns n0 + 8 nt + 2 t + {0, 1}. Called on partial tiles
// only: the dense mask as one visible key interval per row, the block mask's bits when
// pattern >= 0.
template <bool kBlockSparse, int kM, int kN, typename Bsm>
CUATTN_DEVICE void mask_scores(float (&s)[kM][kN][4], const DenseMask& mask, const Bsm& bsm, int pattern,
                               int row0, int n0, int t) {
  static_assert(kN % 4 == 0 || !kBlockSparse, "block-mask words cover 32 keys");
  constexpr int kWords = (kN + 3) / 4;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
    uint32_t words[2][kWords];  // block-mask bits of this thread's two rows
#pragma unroll
    for (int hf = 0; hf < 2; ++hf)
#pragma unroll
      for (int w = 0; w < kWords; ++w) words[hf][w] = ~0u;
    if constexpr (kBlockSparse) {
      if (pattern >= 0)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int i = min(row0 + mt * 16 + 8 * hf, mask.len_q - 1);  // rows past the end read a valid row
#pragma unroll
          for (int w = 0; w < kWords; ++w) words[hf][w] = bsm.word(pattern, i, n0, w);
        }
    }
    int jlo[2], jhi[2];  // visible keys of this thread's two rows, relative to n0
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      mask.row_range(row0 + mt * 16 + 8 * hf, jlo[hf], jhi[hf]);
      jlo[hf] -= n0, jhi[hf] -= n0;
    }
#pragma unroll
    for (int nt = 0; nt < kN; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = nt * 8 + 2 * t + (e % 2);
        const bool bit = (words[e / 2][nt / 4] >> (c % 32)) & 1u;  // c / 32 == nt / 4
        if (!bit || c < jlo[e / 2] || c >= jhi[e / 2]) s[mt][nt][e] = -CUDART_INF_F;
      }
  }
}

}  // namespace cuattn
