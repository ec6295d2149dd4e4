// latent_attention.cuh — multi-head latent attention over one shared kv "head" (portable
// mma.sync path, sm80+): DeepSeek MLA decode (K = the 576-wide latent, V = its first 512
// columns) and the absorbed form of mla_attention (K = k_latent, V = v_latent, both L wide).
//
// Grid: (split, row tile, batch). A CTA owns kBM = 64 query rows (row r = token t * Hq + head h:
// all heads of all new tokens share the keys, so they share the MMA M dimension) and streams the
// kBN = 32 keys of its split's tiles through shared memory:
//
//   warps      16 = 4 row groups (16 rows each) x 4 slices of Dv. The 64 x 512 fp32 output does
//              not fit one warp's registers, so warp (g, s) owns rows 16 g.. x columns
//              s Dv / 4.. (64 accumulators a thread for Dv = 512).
//   S          computed once: warp (g, s) computes S for its 16 rows x keys 8 s..8 s + 7 over the
//              whole Dk, masked, into shared memory (fp32). The four warps of a row group then
//              read the same 16 x 32 block and run the same online softmax on it, so they keep
//              identical row maxima and sums without talking to each other.
//   K / V      when V is part of K, K(j + 1) is requested at the top of iteration j and lands
//              during all of it: into the second K buffer (16-bit caches), or raw into the other
//              slot of a byte ring (fp8), whose tile is widened to f16/bf16 through registers
//              into the one K tile at the top of its iteration. A separate V (absorbed form)
//              has one buffer, requested while S is computed; K(j + 1) then follows S.
//   paging     key j of the sequence is slot j % page_size of page block_table[j / page_size]
//              (page = the batch index when there is no block table: a contiguous latent);
//              rows past the split's end are zero-filled and masked.
//   split-KV   with several splits each CTA writes its normalised partial output and LSE, and
//              mla_latent_combine merges them (one warp per query row, combine_splits).
#pragma once

#include <cuda_runtime.h>

#include "common/copy.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "cuattn/mla_params.h"

namespace cuattn {

template <int kDk_, int kDv_, bool kSharedV_, bool kFp8_>
struct LatentTraits {
  static constexpr int kDk = kDk_, kDv = kDv_;
  static constexpr bool kSharedV = kSharedV_, kFp8 = kFp8_;
  static constexpr int kBM = 64, kBN = 32;
  static constexpr int kWarps = 16, kThreads = 32 * kWarps;
  static constexpr int kSliceCols = kDv / 4;  // output columns of one warp
  static constexpr int kOT = kSliceCols / 8;  // its n8 accumulator tiles
  static constexpr int kQStride = kDk + 8, kKStride = kDk + 8, kVStride = kDv + 8;  // +16 bytes
  static constexpr int kSStride = kBN + 4;                                           // floats
  static constexpr int kKBufs = kSharedV && !kFp8 ? 2 : 1;
  static constexpr size_t kQBytes = size_t(kBM) * kQStride * 2;
  static constexpr size_t kKBytes = size_t(kBN) * kKStride * 2;
  static constexpr size_t kVBytes = kSharedV ? 0 : size_t(kBN) * kVStride * 2;
  static constexpr size_t kSBytes = size_t(kBM) * kSStride * 4;
  static constexpr size_t kRawBytes = kFp8 ? size_t(kBN) * kDk : 0;  // one fp8 tile
  static constexpr size_t kSmem = kQBytes + kKBufs * kKBytes + kVBytes + kSBytes + 2 * kRawBytes;
  static_assert(kDk % 32 == 0 && kDv % 64 == 0 && kDv <= kDk, "latent dims");
  static_assert(!kFp8 || kSharedV, "fp8 caches hold K and V in one latent");
};

// The page holding key j of sequence b (its block-table entry clamped into the cache).
CUATTN_DEVICE int latent_page(const MlaLatentParams& p, int b, int j) {
  if (p.block_table == nullptr) return b;
  const int page = p.block_table[b * p.bt_batch_stride + j / p.page_size];
  return min(max(page, 0), p.num_pages - 1);
}

// Where key j of sequence b starts in a cache (elements), its page clamped into the cache.
CUATTN_DEVICE int64_t latent_key_offset(const MlaLatentParams& p, int b, int j, int64_t page_stride,
                                        int64_t slot_stride) {
  return latent_page(p, b, j) * page_stride + int64_t(j % p.page_size) * slot_stride;
}

// Requests keys [n0, n0 + kBN) of a cache (element size kBytes) into a [kBN x kCols] tile with
// row stride kStride elements; keys >= n_end and bytes past `valid` elements of a row are
// zero-filled without reading.
template <int kBytes, int kCols, int kStride, int kThreads, int kBN>
CUATTN_DEVICE void load_key_tile(unsigned char* smem, const void* cache, const MlaLatentParams& p, int b,
                                 int n0, int n_end, int64_t page_stride, int64_t slot_stride, int valid,
                                 int tid) {
  constexpr int kChunks = kCols * kBytes / 16;  // 16-byte chunks per row
  const unsigned char* base = static_cast<const unsigned char*>(cache);
  for (int c = tid; c < kBN * kChunks; c += kThreads) {
    const int r = c / kChunks, off = (c % kChunks) * 16;
    const int j = n0 + r;
    const bool ok = j < n_end && off < valid * kBytes;
    const unsigned char* src =
        ok ? base + (latent_key_offset(p, b, j, page_stride, slot_stride) * kBytes + off) : base;
    cp_async_16(smem + (r * kStride) * kBytes + off, src, ok);
  }
}

// Eight fp8 e4m3 values (low byte first) widened to eight f16/bf16 (exact: every e4m3 value is
// an f16 and a bf16).
template <typename T>
CUATTN_DEVICE uint4 widen_fp8x8(uint2 v) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint16_t pair = uint16_t(((i < 2 ? v.x : v.y) >> (16 * (i % 2))) & 0xffffu);
    w[i] = fp8x2_to_f16x2(pair);
    if constexpr (kIsBf16<T>) {
      const float2 f = unpack2<__half>(w[i]);
      w[i] = pack2<T>(f.x, f.y);
    }
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}

// Widens a raw fp8 e4m3 tile [kBN x kDk] to f16/bf16 [kBN x kStride].
template <typename T, int kBN, int kDk, int kStride, int kThreads>
CUATTN_DEVICE void widen_fp8_tile(T* dst, const unsigned char* raw, int tid) {
  constexpr int kGroups = kDk / 8;
  for (int c = tid; c < kBN * kGroups; c += kThreads) {
    const int r = c / kGroups, col = (c % kGroups) * 8;
    *reinterpret_cast<uint4*>(dst + r * kStride + col) =
        widen_fp8x8<T>(*reinterpret_cast<const uint2*>(raw + r * kDk + col));
  }
}

// A 16-row group's fp32 scores over kBN keys from shared memory (the group's first row at `rows`,
// row stride kSStride floats) into the accumulator layout: rows g and g + 8, columns 2 t, 2 t + 1
// of every n8 tile. Warps that share a row group read the same scores, so the same online
// softmax on them keeps identical maxima and sums without further talk.
template <int kBN, int kSStride>
CUATTN_DEVICE void scores_from_smem(const float* rows, int g, int t, float (&sc)[1][kBN / 8][4]) {
#pragma unroll
  for (int nt = 0; nt < kBN / 8; ++nt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float2 v = *reinterpret_cast<const float2*>(rows + (g + 8 * hf) * kSStride + nt * 8 + 2 * t);
      sc[0][nt][2 * hf] = v.x, sc[0][nt][2 * hf + 1] = v.y;
    }
}

// O += P V over kBN keys for one warp's kOT n8 output tiles: P in the accumulator layout; v_lane
// the shared address of this lane's ldmatrix.trans row at key 0 of the warp's first column
// (keys lane % 8 + 8 ((lane / 8) % 2), columns + 8 (lane / 16)); kVStride the V rows' stride in
// elements.
template <typename T, int kBN, int kOT, int kVStride>
CUATTN_DEVICE void accumulate_pv(const float (&p)[kBN / 8][4], uint32_t v_lane, float (&o)[kOT][4]) {
#pragma unroll
  for (int kk = 0; kk < kBN / 16; ++kk) {
    uint32_t pa[4];
    acc_to_a<T>(p, kk, pa);
#pragma unroll
    for (int dp = 0; dp < kOT / 2; ++dp) {
      uint32_t vb[4];
      ldmatrix_x4_trans(vb, v_lane + 2 * (kk * 16 * kVStride + dp * 16));
      mma_m16n8k16<T>(o[2 * dp], pa, vb[0], vb[1]);
      mma_m16n8k16<T>(o[2 * dp + 1], pa, vb[2], vb[3]);
    }
  }
}

template <typename T, typename Tr>
__global__ void __launch_bounds__(Tr::kThreads, 1) mla_latent_kernel(const __grid_constant__ MlaLatentParams p) {
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kDk = Tr::kDk, kOT = Tr::kOT, kThreads = Tr::kThreads;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = reinterpret_cast<T*>(smem_raw + Tr::kQBytes);  // K(j) in sK + (j % kKBufs) tile
  T* sV = reinterpret_cast<T*>(smem_raw + Tr::kQBytes + Tr::kKBufs * Tr::kKBytes);
  float* sS = reinterpret_cast<float*>(smem_raw + Tr::kQBytes + Tr::kKBufs * Tr::kKBytes + Tr::kVBytes);
  unsigned char* sRaw = reinterpret_cast<unsigned char*>(sS) + Tr::kSBytes;  // fp8: two tiles

  const int split = blockIdx.x, row0 = blockIdx.y * kBM, b = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int rg = warp / 4, slice = warp % 4;  // row group, output slice (= key octet of S)
  const int g = lane / 4, t = lane % 4;
  const int rows = p.num_heads_q * p.seqlen_q;

  // ---- this CTA's keys: its split's chunk, cut at the last key its rows may see --------------
  int seq_len = p.seq_lens != nullptr ? p.seq_lens[b] : p.page_size;
  if (p.block_table != nullptr) seq_len = min(max(seq_len, 0), p.max_blocks * p.page_size);
  const int n_begin = split * p.chunk_tokens;
  int n_end = min(seq_len, n_begin + p.chunk_tokens);
  if (p.causal) {
    const int last_token = min(p.seqlen_q - 1, (row0 + kBM - 1) / p.num_heads_q);
    n_end = min(n_end, seq_len - p.seqlen_q + last_token + 1);
  }
  const int n_tiles = n_end > n_begin ? (n_end - n_begin + kBN - 1) / kBN : 0;

  const float k_scale = Tr::kFp8 ? (p.k_scale_ptr != nullptr ? *p.k_scale_ptr : p.k_scale) : 1.f;
  const float sl2 = p.scale * k_scale * kLog2e;
  const void* v_cache = Tr::kSharedV ? p.k_cache : p.v_cache;
  const int64_t v_page_stride = Tr::kSharedV ? p.k_page_stride : p.v_page_stride;
  const int64_t v_slot_stride = Tr::kSharedV ? p.k_slot_stride : p.v_slot_stride;

  // Issues K(it): into its 16-bit buffer, or raw into the fp8 ring.
  auto load_k = [&](int it) {
    const int n0 = n_begin + it * kBN;
    if constexpr (Tr::kFp8)
      load_key_tile<1, kDk, kDk, kThreads, kBN>(sRaw + (it % 2) * Tr::kRawBytes, p.k_cache, p, b, n0, n_end,
                                                p.k_page_stride, p.k_slot_stride, p.head_dim, tid);
    else
      load_key_tile<2, kDk, Tr::kKStride, kThreads, kBN>(
          reinterpret_cast<unsigned char*>(sK) + (it % Tr::kKBufs) * Tr::kKBytes, p.k_cache, p, b, n0, n_end,
          p.k_page_stride, p.k_slot_stride, p.head_dim, tid);
  };

  // ---- prologue: Q (zero rows past the last one) and K(0) -------------------------------------
  if (n_tiles > 0) {
    constexpr int kChunks = kDk / 8;
    const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride;
    for (int c = tid; c < kBM * kChunks; c += kThreads) {
      const int r = c / kChunks, col = (c % kChunks) * 8;
      const int row = row0 + r;
      const bool ok = row < rows && col < p.head_dim;
      const T* src = ok ? q + (row / p.num_heads_q) * p.q_row_stride + (row % p.num_heads_q) * p.q_head_stride + col : q;
      cp_async_16(sQ + r * Tr::kQStride + col, src, ok);
    }
    load_k(0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
  }

  OnlineSoftmax<1> softmax;
  softmax.init();
  float o[1][kOT][4];
#pragma unroll
  for (int ot = 0; ot < kOT; ++ot) o[0][ot][0] = o[0][ot][1] = o[0][ot][2] = o[0][ot][3] = 0.f;
  const uint32_t q_base = smem_addr(sQ);
  const int first_row = rg * 16 + g;  // this thread's accumulator rows: first_row, first_row + 8

  for (int it = 0; it < n_tiles; ++it) {
    const int n0 = n_begin + it * kBN;
    if constexpr (Tr::kFp8) {
      widen_fp8_tile<T, kBN, kDk, Tr::kKStride, kThreads>(sK, sRaw + (it % 2) * Tr::kRawBytes, tid);
      __syncthreads();
    }
    T* k_tile = sK + (it % Tr::kKBufs) * (Tr::kKBytes / 2);
    if (Tr::kSharedV && it + 1 < n_tiles) {  // the other K buffer / raw slot: free since the
      load_k(it + 1);                        // last iteration's closing barrier
      cp_async_commit();
    }
    if constexpr (!Tr::kSharedV) {
      load_key_tile<2, Tr::kDv, Tr::kVStride, kThreads, kBN>(reinterpret_cast<unsigned char*>(sV), v_cache, p, b,
                                                              n0, n_end, v_page_stride, v_slot_stride,
                                                              p.head_dim_v, tid);
      cp_async_commit();
    }

    // S[16 rows of the group, keys 8 slice..] = Q K^T over the whole Dk: two k16 steps a pass.
    float s[4] = {0.f, 0.f, 0.f, 0.f};
    const uint32_t k_base = smem_addr(k_tile);
#pragma unroll 4
    for (int k32 = 0; k32 < kDk / 32; ++k32) {
      uint32_t kb[4], qa[4];
      ldmatrix_x4(kb, k_base + 2 * ((slice * 8 + lane % 8) * Tr::kKStride + k32 * 32 + (lane / 8) * 8));
      ldmatrix_x4(qa, q_base + 2 * ((rg * 16 + lane % 16) * Tr::kQStride + k32 * 32 + (lane / 16) * 8));
      mma_m16n8k16<T>(s, qa, kb[0], kb[1]);
      ldmatrix_x4(qa, q_base + 2 * ((rg * 16 + lane % 16) * Tr::kQStride + k32 * 32 + 16 + (lane / 16) * 8));
      mma_m16n8k16<T>(s, qa, kb[2], kb[3]);
    }
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int rl = first_row + 8 * hf;
      const int token = (row0 + rl) / p.num_heads_q;
      const int last = p.causal ? min(n_end, seq_len - p.seqlen_q + token + 1) : n_end;  // keys < last
      const int j = n0 + slice * 8 + 2 * t;
      float2 v;
      v.x = j < last ? s[2 * hf] : -CUDART_INF_F;
      v.y = j + 1 < last ? s[2 * hf + 1] : -CUDART_INF_F;
      *reinterpret_cast<float2*>(sS + rl * Tr::kSStride + slice * 8 + 2 * t) = v;
    }
    if constexpr (!Tr::kSharedV) cp_async_wait<0>();  // V(it) (K(it + 1) is not asked for yet)
    __syncthreads();  // S complete; V(it) landed; every warp is done reading K(it) for S
    if (!Tr::kSharedV && it + 1 < n_tiles) {  // the one K buffer: S is done with it
      load_k(it + 1);
      cp_async_commit();
    }

    // The row group's 16 x 32 scores; the same softmax in all 4 warps.
    float sc[1][kBN / 8][4];
    scores_from_smem<kBN, Tr::kSStride>(sS + rg * 16 * Tr::kSStride, g, t, sc);
    float alpha[2];
    softmax.update(sc, sl2, alpha);
    rescale_output(o, alpha);

    // O[:, slice] += P V[:, slice]; V is the first Dv columns of K(it) or its own tile.
    const uint32_t v_base = Tr::kSharedV ? k_base : smem_addr(sV);
    constexpr int kVS = Tr::kSharedV ? Tr::kKStride : Tr::kVStride;
    accumulate_pv<T, kBN, kOT, kVS>(
        sc[0], v_base + 2 * ((lane % 8 + ((lane / 8) % 2) * 8) * kVS + slice * Tr::kSliceCols + (lane / 16) * 8),
        o[0]);
    cp_async_wait<0>();
    __syncthreads();  // K(it + 1) landed; every warp is done with S, V(it) and K(it)
  }

  // ---- epilogue: the normalised rows, to out (one split) or to the split workspace ------------
  float factor[2], lse[2];
  softmax.finalize(sl2, false, 0.f, factor, lse);
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = row0 + first_row + 8 * hf;
    if (row >= rows) continue;
    const int token = row / p.num_heads_q, h = row % p.num_heads_q;
    const float f = factor[hf] * k_scale;
    const int col0 = slice * Tr::kSliceCols + 2 * t;
    if (p.num_splits == 1) {
      T* out = static_cast<T*>(p.o) + b * p.o_batch_stride + token * p.o_row_stride + h * p.o_head_stride;
#pragma unroll
      for (int ot = 0; ot < kOT; ++ot) {
        const int col = col0 + ot * 8;
        if (col < p.head_dim_v)
          *reinterpret_cast<uint32_t*>(out + col) = pack2<T>(o[0][ot][2 * hf] * f, o[0][ot][2 * hf + 1] * f);
      }
      if (p.lse != nullptr && slice == 0 && t == 0)
        p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + token] = lse[hf];
    } else {
      const int64_t prow = (int64_t(b) * p.num_splits + split) * rows + row;
      float* out = p.part_o + prow * p.head_dim_v;
#pragma unroll
      for (int ot = 0; ot < kOT; ++ot) {
        const int col = col0 + ot * 8;
        if (col < p.head_dim_v)
          *reinterpret_cast<float2*>(out + col) = make_float2(o[0][ot][2 * hf] * f, o[0][ot][2 * hf + 1] * f);
      }
      if (slice == 0 && t == 0) p.part_lse[prow] = lse[hf];
    }
  }
}

// Merges the splits of kCombineRows query rows a CTA (grid (row groups, batch)), one warp a row,
// with the decode kernels' one split combine (combine_splits). Dynamic shared memory: each warp's
// num_splits weights.
constexpr int kCombineRows = 4;
template <typename T, int kDv>
__global__ void __launch_bounds__(32 * kCombineRows) mla_latent_combine(const __grid_constant__ MlaLatentParams p) {
  constexpr int kPer = kDv / 32, kPre = 2048 / kDv > 1 ? 2048 / kDv : 2;
  extern __shared__ float s_weights[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows = p.num_heads_q * p.seqlen_q;
  const int row = blockIdx.x * kCombineRows + warp, b = blockIdx.y;
  if (row >= rows) return;
  const int token = row / p.num_heads_q, h = row % p.num_heads_q;
  const int64_t first = int64_t(b) * p.num_splits * rows + row;  // split i: first + i * rows
  float acc[kPer];
  const float lse = combine_splits<kPer, kPre>(
      p.num_splits, [&](int i) { return __ldcg(p.part_lse + first + int64_t(i) * rows); },
      [&](int i) { return p.part_o + (first + int64_t(i) * rows) * p.head_dim_v; }, s_weights + warp * p.num_splits,
      lane, p.head_dim_v, acc);
  T* out = static_cast<T*>(p.o) + b * p.o_batch_stride + token * p.o_row_stride + h * p.o_head_stride;
#pragma unroll
  for (int c = 0; c < kPer; c += 2) {
    const int col = lane * kPer + c;
    if (col < p.head_dim_v) *reinterpret_cast<uint32_t*>(out + col) = pack2<T>(acc[c], acc[c + 1]);
  }
  if (p.lse != nullptr && lane == 0)
    p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + token] = lse;
}

}  // namespace cuattn
