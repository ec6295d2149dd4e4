// latent_decode.cuh — DeepSeek MLA decode on the decode work list (cuattn/worklist.h): one
// persistent CTA an SM takes its share of (sequence, 16 query rows, key range) pieces, so that a
// long sequence is read by as many SMs as its length asks for and a batch that is not a whole
// number of waves still fills the GPU. Portable mma.sync path (sm80+).
//
// A unit is 16 query rows (row r = token t * Hq + head h) of one sequence; every row attends to
// the same 576-wide latent keys, whose first 512 columns are V, so K and V come from one read of
// each 64-key tile.
//
//   warps    8. Warp w loads keys 8 w.. 8 w + 7 of every tile (cp.async, kStages tiles in flight),
//            computes S for those 8 keys over all 576 columns with Q held in registers (the unit's
//            16 x 576 query as 36 A fragments, read once a piece), and writes them to shared
//            memory; after one barrier every warp reads the 16 x 64 scores and runs the same online
//            softmax on them (identical maxima and sums, no further talk), then accumulates its
//            own 64 of the 512 output columns: O[:, 64 w..] += P V[:, 64 w..].
//   fp8      the raw e4m3 tiles stream into a ring of kStages; warp w widens its own 8 keys into
//            the one 16-bit tile just before S (exact: every e4m3 value is an f16 and a bf16).
//   pieces   a unit whose keys all lie in this CTA's share writes its normalised rows; a split
//            piece writes them and its LSE, in fp32, to its slot (partial_slot), and
//            mla_list_combine merges a unit's slots afterwards with combine_splits, in split
//            order (the same bits for the same inputs).
#pragma once

#include <cuda_runtime.h>

#include "common/copy.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "cuattn/mla_params.h"
#include "cuattn/worklist.h"
#include "mla/latent_attention.cuh"  // latent_key_offset

namespace cuattn {

template <bool kFp8_, int kStages_>
struct LatentDecodeTraits {
  static constexpr bool kFp8 = kFp8_;
  static constexpr int kStages = kStages_;
  static constexpr int kDk = 576, kDv = 512, kRows = 16, kBN = 64;
  static constexpr int kWarps = 8, kThreads = 32 * kWarps;
  static constexpr int kKeysPerWarp = kBN / kWarps;     // 8: one n8 tile of S
  static constexpr int kColsPerWarp = kDv / kWarps;     // 64 output columns
  static constexpr int kOT = kColsPerWarp / 8;          // 8 accumulator tiles
  static constexpr int kKSteps = kDk / 16;              // 36 k16 steps of S
  static constexpr int kStride = kDk + 8;               // elements: +16 bytes, no bank conflicts
  static constexpr int kElemBytes = kFp8 ? 1 : 2;
  static constexpr int kChunksPerKey = kDk * kElemBytes / 16;
  static constexpr int kSStride = kBN + 4;              // floats
  static constexpr size_t kTileBytes = size_t(kBN) * kStride * 2;          // a 16-bit tile
  static constexpr size_t kRawBytes = kFp8 ? size_t(kBN) * kDk : 0;        // an fp8 tile
  static constexpr size_t kRingBytes = kStages * (kFp8 ? kRawBytes : kTileBytes);
  static constexpr size_t kWideBytes = kFp8 ? kTileBytes : 0;
  static constexpr size_t kSBytes = size_t(kRows) * kSStride * 4;
  static constexpr size_t kSmem = kRingBytes + kWideBytes + kSBytes;
  static_assert(kKeysPerWarp == 8 && kKSteps % 2 == 0 && kStages >= 2, "latent decode shape");
  static_assert((kKeysPerWarp * kChunksPerKey) % 32 == 0, "a warp's copies are whole rounds");
};

// One piece of the list as an MLA kernel sees it: sequence b's keys [n_begin, n_end) for the
// unit's query rows [row0, row0 + unit_rows), n_end cut at the unit's last row's causal limit,
// in n_tiles tiles of bn keys.
struct LatentPiece {
  int b, row0, seq_len, n_begin, n_end, n_tiles;
  CUATTN_DEVICE LatentPiece(const MlaLatentParams& p, const WorkPiece& piece, int unit_rows, int bn)
      : b(piece.seq), row0(piece.unit * unit_rows), seq_len(p.list.seq_lens[piece.seq]),
        n_begin(int(piece.key_begin)), n_end(int(piece.key_end)) {
    if (p.causal) n_end = min(n_end, visible_end(p, row0 + unit_rows - 1));
    n_tiles = n_end > n_begin ? (n_end - n_begin + bn - 1) / bn : 0;
  }
  // Keys row `row` (of the sequence's rows, token-major) may see: [.., visible_end).
  CUATTN_DEVICE int visible_end(const MlaLatentParams& p, int row) const {
    if (!p.causal) return n_end;
    const int token = min(row / p.num_heads_q, p.seqlen_q - 1);
    return min(n_end, seq_len - p.seqlen_q + token + 1);
  }
};

// Where a unit's row goes: query row (token, head h) of sequence b in out (a whole unit), or row
// rl of split slot `slot` (units of kRows rows) in the fp32 partials; and its LSE beside it.
template <typename T>
CUATTN_DEVICE T* latent_out_row(const MlaLatentParams& p, int b, int token, int h) {
  return static_cast<T*>(p.o) + b * p.o_batch_stride + token * p.o_row_stride + h * p.o_head_stride;
}
template <int kRows>
CUATTN_DEVICE float* latent_part_row(const MlaLatentParams& p, int slot, int rl) {
  return p.part_o + (int64_t(slot) * kRows + rl) * 512;
}
template <int kRows>
CUATTN_DEVICE void store_latent_lse(const MlaLatentParams& p, int b, int token, int h, int rl, int slot, bool whole,
                                    float lse) {
  if (!whole) p.part_lse[int64_t(slot) * kRows + rl] = lse;
  else if (p.lse != nullptr) p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + token] = lse;
}

// A unit's normalised output for one query row, this thread's share: columns col0 + 8 ot (+ 1) of
// accumulator half hf times f, to out with the row's LSE (a whole unit), or in fp32 to row rl of
// the split slot with its LSE (mla_list_combine merges them). The LSE by `lse_writer` threads.
template <typename T, int kRows, int kOT>
CUATTN_DEVICE void store_latent_row(const MlaLatentParams& p, int b, int row, int rl, int slot, bool whole,
                                    int col0, const float (&o)[kOT][4], int hf, float f, float lse,
                                    bool lse_writer) {
  const int token = row / p.num_heads_q, h = row % p.num_heads_q;
  if (whole) {
    T* out = latent_out_row<T>(p, b, token, h);
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot)
      *reinterpret_cast<uint32_t*>(out + col0 + ot * 8) = pack2<T>(o[ot][2 * hf] * f, o[ot][2 * hf + 1] * f);
    if (lse_writer) store_latent_lse<kRows>(p, b, token, h, rl, slot, true, lse);
  } else {
    float* out = latent_part_row<kRows>(p, slot, rl);
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot)
      *reinterpret_cast<float2*>(out + col0 + ot * 8) = make_float2(o[ot][2 * hf] * f, o[ot][2 * hf + 1] * f);
    if (lse_writer) store_latent_lse<kRows>(p, b, token, h, rl, slot, false, lse);
  }
}

// Requests keys [n0, n0 + kBN) of sequence b, keys >= n_end zero-filled; warp w copies its own 8
// keys (lane k < 8 looks up key 8 w + k's page and passes the row's offset to the others).
template <typename Tr>
CUATTN_DEVICE void latent_copy_tile(unsigned char* dst, const MlaLatentParams& p, int b, int n0, int n_end,
                                    int warp, int lane) {
  constexpr int kCPK = Tr::kChunksPerKey, kRowBytes = Tr::kFp8 ? Tr::kDk : Tr::kStride * 2;
  const int my_key = n0 + warp * 8 + lane % 8;
  const int64_t my_off =
      my_key < n_end ? latent_key_offset(p, b, my_key, p.k_page_stride, p.k_slot_stride) * Tr::kElemBytes : -1;
  const unsigned char* base = static_cast<const unsigned char*>(p.k_cache);
#pragma unroll
  for (int i = 0; i < 8 * kCPK / 32; ++i) {
    const int c = lane + 32 * i, k = c / kCPK, off = (c % kCPK) * 16;
    const int64_t row = __shfl_sync(0xffffffffu, my_off, k);
    cp_async_16(dst + (warp * 8 + k) * kRowBytes + off, row >= 0 ? base + row + off : base, row >= 0);
  }
}

// Widens this warp's 8 keys of a raw fp8 tile [kBN x 576] into the 16-bit tile [kBN x kStride].
template <typename T, typename Tr>
CUATTN_DEVICE void latent_widen_keys(T* dst, const unsigned char* raw, int warp, int lane) {
  constexpr int kGroups = Tr::kDk / 8;  // 8 values a group
#pragma unroll 6
  for (int c = lane; c < 8 * kGroups; c += 32) {
    const int r = warp * 8 + c / kGroups, col = (c % kGroups) * 8;
    *reinterpret_cast<uint4*>(dst + r * Tr::kStride + col) =
        widen_fp8x8<T>(*reinterpret_cast<const uint2*>(raw + r * Tr::kDk + col));
  }
}

template <typename T, typename Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1) mla_list_decode_kernel(const __grid_constant__ MlaLatentParams p) {
  constexpr int kBN = Tr::kBN, kStages = Tr::kStages, kOT = Tr::kOT, kKSteps = Tr::kKSteps;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* ring = smem;
  T* wide = reinterpret_cast<T*>(smem + Tr::kRingBytes);  // fp8: the widened tile
  float* sS = reinterpret_cast<float*>(smem + Tr::kRingBytes + Tr::kWideBytes);
  constexpr size_t kSlotBytes = Tr::kFp8 ? Tr::kRawBytes : Tr::kTileBytes;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const WorkList& list = p.list;
  const int rows = p.num_heads_q * p.seqlen_q;
  const float k_scale = Tr::kFp8 ? (p.k_scale_ptr != nullptr ? *p.k_scale_ptr : p.k_scale) : 1.f;
  const float sl2 = p.scale * k_scale * kLog2e;

  WorkPiece piece;
  for (bool more = list.first(blockIdx.x, piece); more; more = list.next(blockIdx.x, piece)) {
    const LatentPiece u(p, piece, Tr::kRows, kBN);
    const int b = u.b, row0 = u.row0, n_begin = u.n_begin, n_end = u.n_end, n_tiles = u.n_tiles;

    __syncthreads();  // every warp is done with the previous piece's tiles and scores
    auto issue = [&](int it) {
      if (it < n_tiles)
        latent_copy_tile<Tr>(ring + (it % kStages) * kSlotBytes, p, b, n_begin + it * kBN, n_end, warp, lane);
      cp_async_commit();  // an empty group past the end keeps the wait counts uniform
    };
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) issue(s);

    // The unit's 16 x 576 query as A fragments (rows past the last one are zero).
    uint32_t qa[kKSteps][4];
    {
      const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride;
      const T* src[2];
      bool ok[2];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int row = row0 + g + 8 * hf;
        ok[hf] = row < rows;
        src[hf] = ok[hf] ? q + (row / p.num_heads_q) * p.q_row_stride + (row % p.num_heads_q) * p.q_head_stride : q;
      }
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        const int c = ks * 16 + 2 * t;
        qa[ks][0] = ok[0] ? *reinterpret_cast<const uint32_t*>(src[0] + c) : 0u;
        qa[ks][1] = ok[1] ? *reinterpret_cast<const uint32_t*>(src[1] + c) : 0u;
        qa[ks][2] = ok[0] ? *reinterpret_cast<const uint32_t*>(src[0] + c + 8) : 0u;
        qa[ks][3] = ok[1] ? *reinterpret_cast<const uint32_t*>(src[1] + c + 8) : 0u;
      }
    }

    OnlineSoftmax<1> softmax;
    softmax.init();
    float o[1][kOT][4];
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot) o[0][ot][0] = o[0][ot][1] = o[0][ot][2] = o[0][ot][3] = 0.f;

    for (int it = 0; it < n_tiles; ++it) {
      const int n0 = n_begin + it * kBN;
      cp_async_wait<kStages - 2>();  // this warp's copies of tile it have landed
      __syncthreads();               // every warp is done with tile it - 1 (its slot is reused now)
      issue(it + kStages - 1);
      const unsigned char* slot = ring + (it % kStages) * kSlotBytes;
      const T* tile = reinterpret_cast<const T*>(slot);
      if constexpr (Tr::kFp8) {
        latent_widen_keys<T, Tr>(wide, slot, warp, lane);
        __syncwarp();
        tile = wide;
      }

      // S for this warp's 8 keys: two independent accumulators, 18 k16 steps each.
      float s0[4] = {0.f, 0.f, 0.f, 0.f}, s1[4] = {0.f, 0.f, 0.f, 0.f};
      const uint32_t k_base = smem_addr(tile + (warp * 8 + lane % 8) * Tr::kStride + (lane / 8) * 8);
#pragma unroll
      for (int k32 = 0; k32 < kKSteps / 2; ++k32) {
        uint32_t kb[4];
        ldmatrix_x4(kb, k_base + 2 * (k32 * 32));
        mma_m16n8k16<T>(s0, qa[2 * k32], kb[0], kb[1]);
        mma_m16n8k16<T>(s1, qa[2 * k32 + 1], kb[2], kb[3]);
      }
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int rl = g + 8 * hf;
        const int last = u.visible_end(p, row0 + rl);  // keys < last
        const int j = n0 + warp * 8 + 2 * t;
        float2 v;
        v.x = j < last ? s0[2 * hf] + s1[2 * hf] : -CUDART_INF_F;
        v.y = j + 1 < last ? s0[2 * hf + 1] + s1[2 * hf + 1] : -CUDART_INF_F;
        *reinterpret_cast<float2*>(sS + rl * Tr::kSStride + warp * 8 + 2 * t) = v;
      }
      __syncthreads();  // the 16 x 64 scores are complete, and every warp's keys are in the tile

      // The same online softmax in every warp, over all 64 keys.
      float sc[1][kBN / 8][4];
      scores_from_smem<kBN, Tr::kSStride>(sS, g, t, sc);
      float alpha[2];
      softmax.update(sc, sl2, alpha);
      rescale_output(o, alpha);

      // O[:, 64 warp..] += P V[:, 64 warp..], V = the first 512 columns of the tile.
      accumulate_pv<T, kBN, kOT, Tr::kStride>(
          sc[0],
          smem_addr(tile + (lane % 8 + ((lane / 8) % 2) * 8) * Tr::kStride + warp * Tr::kColsPerWarp + (lane / 16) * 8),
          o[0]);
    }
    cp_async_wait<0>();  // the empty groups past the end

    // ---- epilogue: the unit's normalised rows, to out (a whole unit) or to its split slot ------
    float factor[2], lse[2];
    softmax.finalize(sl2, false, 0.f, factor, lse);
    const int slot = partial_slot(blockIdx.x, piece.split);
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int rl = g + 8 * hf, row = row0 + rl;
      if (row < rows)
        store_latent_row<T, Tr::kRows, kOT>(p, b, row, rl, slot, piece.num_splits == 1,
                                            warp * Tr::kColsPerWarp + 2 * t, o[0], hf, factor[hf] * k_scale,
                                            lse[hf], warp == 0 && t == 0);
    }
  }
}

// Merges the split units of the list (units of kRows query rows): a CTA a query row (grid (rows,
// batch)), its kCombineQuarters warps a quarter of the 512 output columns each, so a unit split n
// ways is read by four warps a row, each with 16 of its splits' loads in flight (one warp a row,
// streaming them, the merge of a sequence split 86 ways took 28 us on an H100, latency-bound). A
// row whose unit was not split was written by the decode kernel and is skipped. Dynamic shared
// memory: each warp's weights, one a CTA of the list.
constexpr int kCombineQuarters = 4;
template <typename T, int kRows>
__global__ void __launch_bounds__(32 * kCombineQuarters) mla_list_combine(const __grid_constant__ MlaLatentParams p) {
  constexpr int kCols = 512 / kCombineQuarters, kPer = kCols / 32;
  extern __shared__ float s_weights[];
  const int quarter = threadIdx.x / 32, lane = threadIdx.x % 32, row = blockIdx.x, b = blockIdx.y;
  // Launched as a programmatic dependent of the decode kernel: wait for it before reading anything
  // (the list and the partials), and in every CTA, so that this grid's end also means the decode
  // kernel's (the next kernel in the stream may wait on this one only).
  grid_dependency_wait();
  const WorkList& list = p.list;
  const int64_t len = list.seq_lens[b];
  if (len == 0) return;
  const int64_t cost = unit_cost(len, list.s);
  const int64_t unit0 = list.seq_start[b] + int64_t(row / kRows) * cost;
  const int first = list.cta_of(unit0 + list.s.overhead);
  const int n = list.cta_of(unit0 + cost - 1) - first + 1;
  if (n == 1) return;
  const int rl = row % kRows;
  float acc[kPer];
  const float lse = combine_splits<kPer, 16, 16>(
      n, [&](int i) { return __ldcg(p.part_lse + int64_t(split_slot(first, i)) * kRows + rl); },
      [&](int i) { return latent_part_row<kRows>(p, split_slot(first, i), rl) + quarter * kCols; },
      s_weights + quarter * list.s.ctas, lane, kCols, acc);
  const int token = row / p.num_heads_q, h = row % p.num_heads_q;
  T* out = latent_out_row<T>(p, b, token, h) + quarter * kCols;
#pragma unroll
  for (int c = 0; c < kPer; c += 2)
    *reinterpret_cast<uint32_t*>(out + lane * kPer + c) = pack2<T>(acc[c], acc[c + 1]);
  if (quarter == 0 && lane == 0) store_latent_lse<kRows>(p, b, token, h, rl, 0, true, lse);
}

}  // namespace cuattn
