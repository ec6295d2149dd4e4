// flash_fwd.cuh — tiled flash attention forward, portable tensor-core path (mma.sync, sm80+).
//
// Grid: (q tiles, q heads, batch); the q-tile index runs backwards so that under a causal mask
// the longest tiles start first. A CTA owns kBM = 128 query rows of one head and streams the
// visible K/V tiles of kBN = 64 keys through shared memory:
//
//   warps      4 (D <= 128: each owns 32 rows = two m16 tiles) or 8 (D > 128: 16 rows each)
//   smem       Q [128 x D] (loaded once), K [64 x D] twice, V [64 x Dv], rows padded by 16 bytes
//              so that ldmatrix hits 8 different banks
//   pipeline   cp.async: at the top of iteration j, V(j) and K(j+1) (into the other K buffer) are
//              requested together; V(j) has S = Q K(j)^T and the softmax to land, K(j+1) the
//              whole iteration
//   registers  S and P stay in registers: the S accumulators, rounded to 16 bits, are the A
//              operand of P V (mma.cuh); O accumulates in fp32 and is rescaled by the online
//              softmax (softmax.cuh) and divided by the row sum once at the end
//   masks      tiles outside the mask are never visited; only partial tiles (mask.cuh) pay for
//              the per-element test
//
// Head dims that are not instantiated run on the next larger kernel: the loads zero-fill the
// padded columns and the stores skip them.
#pragma once

#include <cuda_runtime.h>

#include "common/copy.cuh"
#include "common/mask.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "cuattn/params.h"
#include "flash/flash_common.cuh"

namespace cuattn {

template <int kD_, int kDv_>
struct FlashTraits {
  static constexpr int kD = kD_, kDv = kDv_;
  static constexpr int kBM = 128, kBN = 64;
  static constexpr int kWarps = (kD <= 128 && kDv <= 128) ? 4 : 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kRowsPerWarp = kBM / kWarps;
  static constexpr int kMT = kRowsPerWarp / 16;  // m16 tiles per warp
  static constexpr int kNT = kBN / 8;            // n8 tiles of S
  static constexpr int kOT = kDv / 8;            // n8 tiles of O
  static constexpr int kQStride = kD + 8;        // smem row strides (elements), +16 bytes
  static constexpr int kKStride = kD + 8;
  static constexpr int kVStride = kDv + 8;
  static constexpr int kMinBlocksPerSm = kWarps == 4 ? 2 : 1;
  static constexpr size_t kSmemElems = size_t(kBM) * kQStride + 2 * size_t(kBN) * kKStride + size_t(kBN) * kVStride;
  static_assert(kD % 16 == 0 && kDv % 16 == 0, "head dims must be multiples of 16");
  static_assert(kDv <= kD, "the output is staged in the Q tile");
};

// Copies a [kRows x kCols] tile (row stride `ld` elements) into padded shared memory; rows >=
// rows_valid and columns >= cols_valid are zero-filled. All threads of the CTA take part.
// The tile starts at row `row0` of `base`; zero-filled chunks read nothing and are given `base`
// (always a valid address) instead of a possibly out-of-range one. Thread `tid` copies column
// chunk tid % chunks_per_row of every kStep-th row: one running pointer, no hoisted addresses.
template <typename T, int kRows, int kCols, int kStride, int kThreads>
CUATTN_DEVICE void load_tile(T* smem, const T* base, int row0, int64_t ld, int rows_valid,
                             int cols_valid, int tid) {
  constexpr int kChunksPerRow = kCols / 8;
  constexpr int kStep = kThreads / kChunksPerRow;  // rows per pass
  constexpr int kPasses = (kRows + kStep - 1) / kStep;
  const int r0 = tid / kChunksPerRow, col = (tid % kChunksPerRow) * 8;
  if (r0 >= kStep) return;  // threads left over when kThreads % kChunksPerRow != 0
  const T* src = base + int64_t(row0 + r0) * ld + col;
  T* dst = smem + r0 * kStride + col;
  const bool col_ok = col < cols_valid;
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int r = r0 + i * kStep;
    if (kRows % kStep == 0 || r < kRows) {
      const bool ok = col_ok && r < rows_valid;
      cp_async_16(dst, ok ? src : base, ok);
    }
    src += kStep * ld;
    dst += kStep * kStride;
  }
}

template <typename T, int kD, int kDv, bool kBlockSparse>
__global__ void __launch_bounds__(FlashTraits<kD, kDv>::kThreads, FlashTraits<kD, kDv>::kMinBlocksPerSm)
flash_fwd_kernel(const __grid_constant__ AttnParams p) {
  using Tr = FlashTraits<kD, kDv>;
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kMT = Tr::kMT, kNT = Tr::kNT, kOT = Tr::kOT;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK0 = sQ + kBM * Tr::kQStride;  // K(j) lives in sK0 + (j % 2) * kKTile
  constexpr int kKTile = kBN * Tr::kKStride;
  T* sV = sK0 + 2 * kKTile;

  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;  // accumulator row / column pair within an mma tile

  // ---- this sequence ------------------------------------------------------------------------
  const FlashSeq seq(p, b);
  const int64_t q_start = seq.q_start, k_start = seq.k_start;
  const int len_q = seq.len_q, len_k = seq.len_k;
  const int m0 = m_block * kBM;
  if (m0 >= len_q) return;
  const int rows_here = min(kBM, len_q - m0);

  const int hk = h / (p.num_heads_q / p.num_heads_kv);
  const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + (q_start + m0) * p.q_row_stride + h * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + k_start * p.k_row_stride + hk * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + k_start * p.v_row_stride + hk * p.v_head_stride;

  // ---- the kv tiles this q tile visits --------------------------------------------------------
  const DenseMask mask(len_q, len_k, p.causal, p.window_left, p.window_right);
  const FlashTiles<kBlockSparse, kBN> tiles(p, mask, b, h, m0, rows_here);
  const int n_tiles = tiles.count;
  auto tile_start = [&](int it, int& pattern) { return tiles.start(it, pattern); };

  // ---- prologue: Q and the first K tile in flight ----------------------------------------------
  const int rows0 = warp * Tr::kRowsPerWarp;  // this warp's first row in the tile
  if (n_tiles > 0) {
    load_tile<T, kBM, kD, Tr::kQStride, Tr::kThreads>(sQ, q, 0, p.q_row_stride, rows_here, p.head_dim, tid);
    int pat;
    const int n0 = tile_start(0, pat);
    load_tile<T, kBN, kD, Tr::kKStride, Tr::kThreads>(sK0, k, n0, p.k_row_stride, len_k - n0, p.head_dim, tid);
    cp_async_commit();
  }

  OnlineSoftmax<kMT> softmax;
  softmax.init();
  float o[kMT][kOT][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot) o[mt][ot][0] = o[mt][ot][1] = o[mt][ot][2] = o[mt][ot][3] = 0.f;

  // Scores enter the softmax either raw (scale folded into its exp2) or softcapped:
  // cap * tanh(s * scale / cap), whose exp2 then needs only log2(e).
  const bool softcap = p.softcap > 0.f;
  const float cap_in = p.scale / (softcap ? p.softcap : 1.f);
  const float sl2 = softcap ? kLog2e : p.scale_log2;
  const uint32_t q_base = smem_addr(sQ), v_base = smem_addr(sV);

  for (int it = 0; it < n_tiles; ++it) {
    int pattern;
    const int n0 = tile_start(it, pattern);
    cp_async_wait<0>();
    __syncthreads();  // K(it) has landed; every warp is done with V(it - 1) and K(it - 1)
    load_tile<T, kBN, kDv, Tr::kVStride, Tr::kThreads>(sV, v, n0, p.v_row_stride, len_k - n0, p.head_dim_v, tid);
    cp_async_commit();
    if (it + 1 < n_tiles) {
      int pat;
      const int n1 = tile_start(it + 1, pat);
      load_tile<T, kBN, kD, Tr::kKStride, Tr::kThreads>(sK0 + ((it + 1) % 2) * kKTile, k, n1, p.k_row_stride,
                                                        len_k - n1, p.head_dim, tid);
    }
    cp_async_commit();
    const uint32_t k_base = smem_addr(sK0 + (it % 2) * kKTile);

    // S = Q K^T for this warp's rows.
    float s[kMT][kNT][4];
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) s[mt][nt][0] = s[mt][nt][1] = s[mt][nt][2] = s[mt][nt][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks) {
      uint32_t qa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
        ldmatrix_x4(qa[mt], q_base + 2 * ((rows0 + mt * 16 + lane % 16) * Tr::kQStride + ks * 16 + (lane / 16) * 8));
#pragma unroll
      for (int np = 0; np < kNT / 2; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, k_base + 2 * ((np * 16 + lane % 8 + (lane / 16) * 8) * Tr::kKStride + ks * 16 + ((lane / 8) % 2) * 8));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_m16n8k16<T>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma_m16n8k16<T>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }

    // Softcap (rare) and the element mask (boundary tiles only) are whole-tile passes, so the
    // common tile goes straight from the MMAs to the softmax, whose exp2 folds in the scale.
    if (softcap) softcap_scores(s, p.softcap, cap_in);
    if (pattern >= 0 || mask.is_partial(m0, m0 + rows_here - 1, n0, kBN))
      mask_scores<kBlockSparse>(s, mask, tiles.bsm, pattern, m0 + rows0 + g, n0, t);

    float alpha[2 * kMT];
    softmax.update(s, sl2, alpha);
    rescale_output(o, alpha);

    cp_async_wait<1>();
    __syncthreads();  // V(it) has landed (K(it + 1) may still be in flight)

    // O += P V: the probabilities, rounded to 16 bits, are the A operand as they stand.
#pragma unroll
    for (int kk = 0; kk < kBN / 16; ++kk) {
      uint32_t pa[kMT][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) acc_to_a<T>(s[mt], kk, pa[mt]);
#pragma unroll
      for (int dp = 0; dp < kDv / 16; ++dp) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, v_base + 2 * ((kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kVStride + dp * 16 + (lane / 16) * 8));
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          mma_m16n8k16<T>(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma_m16n8k16<T>(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

  // ---- epilogue: normalise, stage this warp's rows in its own part of sQ, store 16 bytes wide --
  float factor[2 * kMT], lse[2 * kMT];
  const bool has_sink = p.sinks != nullptr;
  softmax.finalize(sl2, has_sink, has_sink ? p.sinks[h] * kLog2e : 0.f, factor, lse);
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int r = rows0 + mt * 16 + g + 8 * hf;
        const float f = factor[2 * mt + hf];
        *reinterpret_cast<uint32_t*>(sQ + r * Tr::kQStride + ot * 8 + 2 * t) =
            pack2<T>(o[mt][ot][2 * hf] * f, o[mt][ot][2 * hf + 1] * f);
      }
  __syncwarp();
  T* out = static_cast<T*>(p.o) + b * p.o_batch_stride + (q_start + m0) * p.o_row_stride + h * p.o_head_stride;
  constexpr int kChunksPerRow = kDv / 8;
#pragma unroll
  for (int i = 0; i < Tr::kRowsPerWarp * kChunksPerRow / 32; ++i) {
    const int c = lane + 32 * i;
    const int r = rows0 + c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    if (r < rows_here && col < p.head_dim_v)
      *reinterpret_cast<uint4*>(out + r * p.o_row_stride + col) =
          *reinterpret_cast<const uint4*>(sQ + r * Tr::kQStride + col);
  }
  if (p.lse != nullptr && t == 0) {
    float* l = p.lse + b * p.lse_batch_stride + h * p.lse_head_stride + q_start + m0;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int r = rows0 + mt * 16 + g + 8 * hf;
        if (r < rows_here) l[r] = lse[2 * mt + hf];
      }
  }
}

}  // namespace cuattn
