// flash_fwd_sm90.cuh — tiled flash attention forward on Hopper (sm_90a): TMA loads, wgmma.
//
// The same algorithm as flash_fwd.cuh (same grid, mask policies, online softmax, epilogue), with
// Hopper's two engines doing the heavy lifting:
//
//   CTA        3 warpgroups (384 threads): a producer and 2 consumers; setmaxnreg moves the
//              registers to the consumers (24 / 240 a thread). kBM = 128 query rows: consumer w
//              owns rows 64w..64w+63
//   loads      one producer thread drives the tensor memory accelerator (TMA): Q once, then K/V
//              tiles of kBN keys into a kStages-deep ring, as 64-column panels with the 128-byte
//              swizzle (wgmma.cuh). A tile's arrival completes its "full" mbarrier; each
//              consumer warp's arrival on its "empty" mbarrier hands the slot back
//   S = Q K^T  wgmma m64n{kBN}k16, both operands from shared memory, D / 16 steps
//   O += P V   wgmma m64n{Dv, whole panels}k16 with P from registers (the S accumulators rounded to 16 bits are
//              the A operand as they stand), V transposed from shared memory
//   pipeline   a consumer issues S(j) and P(j-1) V(j-1) together, waits for S(j) only, and runs
//              the softmax of tile j while P V still has the tensor cores; the two consumers take
//              turns issuing (named barriers), so one's softmax overlaps the other's GEMMs
//   softmax    OnlineSoftmax on the accumulators (the wgmma layout is mma.sync's, per warp)
//   epilogue   O / l staged in the warpgroup's own Q rows, stored 16 bytes wide
//
// Everything outside the math is the portable kernel's: FlashSeq, FlashTiles, mask_scores.
//
// Tiles per (D, Dv) (flash_sm90_kv_tile): 128 x 128 where the consumer's O and S accumulators and the
// packed P fit its 240 registers together (Dv <= 128: 64 + 64 + 32 a thread) and two ring stages
// fit 227 KB; 128 x 64 for Dv = 192 and 256 (O alone is 96 / 128 registers a thread, and a
// 128-key ring of D 192 or 256 would not fit). D = 96 is stored as two panels, the second half
// zero (TMA fills the columns past the tensor's head dim with zeros, as it does for any padded
// D): S = Q K^T runs its 6 k-steps over the real 96 columns, P V runs N = 128 over the padded V
// and the epilogue stores 96. That keeps every operand in the one layout the D = 64 / 128
// kernels use (whole 64-column panels, 128-byte swizzle): tiles of 96 would need a 64-byte
// swizzled 32-column tail panel for Q, K and V, a second tensor map each, and P V split in two.
//
// Instantiated for every (D, Dv) pair of kFlashHeadDims (16-bit q/k/v); the host picks it when
// the device is sm_90, the binary has sm_90a code and the tensors can be described by TMA
// (flash/dispatch.cu), for every pair by default (the internal variant "portable=1" asks for the
// portable kernel instead).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include "common/copy.cuh"
#include "common/mask.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "common/wgmma.cuh"
#include "cuattn/params.h"
#include "flash/flash_common.cuh"

namespace cuattn {

// Tensor maps of q, k, v viewed as 4-d [batch][rows][heads][dim] (dim innermost), boxes of one
// 64-element panel x the tile's rows. Built on the host (flash_launch_sm90.cuh).
struct FlashTmaMaps {
  CUtensorMap q, k, v;
};

// Keys a kv tile holds, per (D, Dv): see the header comment. `alt`: the longer key tiles
// (FlashConfig::alt_tile, calls without a block mask: a tile that does not divide 128 keys cannot
// hold whole mask blocks), FlashAttention-3's for these dims: D128 176 keys (214,016 bytes), D192
// 112 (222,208 bytes), D256 80 (230,400 bytes), two stages each. Fewer barrier and softmax rounds
// per key, and a wider S = Q K^T; the consumers' S, P and O (D256: 40 + 20 + 128 registers a
// thread) stay inside their 240. Other pairs have none (alt gives their one tile).
constexpr int flash_sm90_kv_tile(int d, int dv, bool alt) {
  if (d == 128 && dv == 128) return alt ? 176 : 128;
  if (d == 192 && dv == 192) return alt ? 112 : 64;
  if (d == 256 && dv == 256) return alt ? 80 : 64;
  return 128;
}
template <int kD, int kDv>
inline constexpr bool kFlashSm90HasAltTile = flash_sm90_kv_tile(kD, kDv, true) != flash_sm90_kv_tile(kD, kDv, false);

template <int kD_, int kDv_, bool kAlt = false>
struct FlashSm90Traits {
  static constexpr int kD = kD_, kDv = kDv_;
  static constexpr int kBM = 128, kBN = flash_sm90_kv_tile(kD, kDv, kAlt);
  static constexpr int kConsumers = 2;                  // math warpgroups, 64 rows each
  static constexpr int kThreads = 128 * (kConsumers + 1);  // + the producer warpgroup
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;  // setmaxnreg split of 64K
  static constexpr int kStages = 2;  // K/V ring depth
  // 64-column panels of Q / K and of V; the last one zero past the head dim (D = 96).
  static constexpr int kPanelsK = (kD + 63) / 64, kPanelsV = (kDv + 63) / 64;
  static constexpr int kDvPad = 64 * kPanelsV;  // columns of the O accumulator (N of P V)
  static constexpr int kQPanelBytes = kBM * 128, kKVPanelBytes = kBN * 128;
  static constexpr int kQBytes = kPanelsK * kQPanelBytes;
  static constexpr int kKBytes = kPanelsK * kKVPanelBytes, kVBytes = kPanelsV * kKVPanelBytes;
  // Q, kStages K tiles, kStages V tiles; + 1024 to align the start to the swizzle pattern.
  static constexpr size_t kSmemBytes = size_t(kQBytes) + kStages * (size_t(kKBytes) + kVBytes) + 1024;
  static_assert(kD % 16 == 0 && kDv % 8 == 0, "S = Q K^T takes k-steps of 16, O n8 blocks");
  static_assert(kSmemBytes + 128 <= 227 * 1024, "the ring and the barriers fit an SM's 227 KB");
  static_assert(kPanelsV <= kPanelsK, "the epilogue stages O in the Q tile");
  static_assert(kBN % 16 == 0 && kBN <= 256, "P V takes k-steps of 16 keys; a TMA box holds 256 rows at most");
  static_assert(kConsumers * 64 == kBM, "one 64-row slab per consumer warpgroup");
};

template <typename T, int kD, int kDv, bool kBlockSparse, bool kAlt = false>
__global__ void __launch_bounds__(FlashSm90Traits<kD, kDv, kAlt>::kThreads, 1)
flash_fwd_sm90_kernel(const __grid_constant__ AttnParams p, const __grid_constant__ FlashTmaMaps maps) {
#ifdef CUATTN_SM90A
  using Tr = FlashSm90Traits<kD, kDv, kAlt>;
  static_assert(!kBlockSparse || (Tr::kBN % 32 == 0 && 128 % Tr::kBN == 0),
                "block-mask words and 128-key mask blocks cover whole tiles");
  constexpr int kBM = Tr::kBM, kBN = Tr::kBN, kStages = Tr::kStages;
  constexpr int kNT = kBN / 8, kOT = Tr::kDvPad / 8, kKT = kBN / 16;  // n8 blocks of S and O; k16 steps of P V
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t bars[1 + 4 * kStages];
  uint64_t* const bar_q = bars;
  uint64_t* const full_k = bars + 1;
  uint64_t* const full_v = full_k + kStages;
  uint64_t* const empty_k = full_v + kStages;
  uint64_t* const empty_v = empty_k + kStages;
  unsigned char* const sQ = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  auto sK = [&](int s) { return sQ + Tr::kQBytes + s * Tr::kKBytes; };
  auto sV = [&](int s) { return sQ + Tr::kQBytes + kStages * Tr::kKBytes + s * Tr::kVBytes; };

  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, wg = tid / 128;

  const FlashSeq seq(p, b);
  const int m0 = m_block * kBM;
  if (m0 >= seq.len_q) return;
  const int rows_here = min(kBM, seq.len_q - m0);

  const DenseMask mask(seq.len_q, seq.len_k, p.causal, p.window_left, p.window_right);
  const FlashTiles<kBlockSparse, kBN> tiles(p, mask, b, h, m0, rows_here);
  const int n_tiles = tiles.count;

  if (tid == 0) {
    mbar_init(bar_q, 1);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full_k[s], 1);
      mbar_init(&full_v[s], 1);
      mbar_init(&empty_k[s], 4 * Tr::kConsumers);  // one arrival per consumer warp
      mbar_init(&empty_v[s], 4 * Tr::kConsumers);
    }
    mbar_fence_init();
  }
  __syncthreads();

  // ---- producer warpgroup: one thread issues every TMA load ------------------------------------
  if (wg == 0) {
    setmaxnreg_dec<Tr::kProducerRegs>();
    if (tid == 0 && n_tiles > 0) {
      const int hk = h / (p.num_heads_q / p.num_heads_kv);
      const int tb = p.cu_seqlens_q ? 0 : b;  // the tensor maps' batch coordinate
      mbar_arrive_expect_tx(bar_q, Tr::kQBytes);
      for (int pn = 0; pn < Tr::kPanelsK; ++pn)
        tma_load_4d(sQ + pn * Tr::kQPanelBytes, &maps.q, bar_q, 64 * pn, int(seq.q_start) + m0, h, tb);
      for (int it = 0; it < n_tiles; ++it) {
        const int s = it % kStages;
        const uint32_t reuse = (it / kStages - 1) & 1;  // parity of the slot's previous release
        int pattern;
        const int row = int(seq.k_start) + tiles.start(it, pattern);
        if (it >= kStages) mbar_wait(&empty_k[s], reuse);
        mbar_arrive_expect_tx(&full_k[s], Tr::kKBytes);
        for (int pn = 0; pn < Tr::kPanelsK; ++pn)
          tma_load_4d(sK(s) + pn * Tr::kKVPanelBytes, &maps.k, &full_k[s], 64 * pn, row, hk, tb);
        if (it >= kStages) mbar_wait(&empty_v[s], reuse);
        mbar_arrive_expect_tx(&full_v[s], Tr::kVBytes);
        for (int pn = 0; pn < Tr::kPanelsV; ++pn)
          tma_load_4d(sV(s) + pn * Tr::kKVPanelBytes, &maps.v, &full_v[s], 64 * pn, row, hk, tb);
      }
    }
    return;
  }

  // ---- consumer warpgroups ---------------------------------------------------------------------
  setmaxnreg_inc<Tr::kConsumerRegs>();
  const int cw = wg - 1, warp = (tid / 32) % 4, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  OnlineSoftmax<1> softmax;
  softmax.init();
  float o[1][kOT][4];
#pragma unroll
  for (int ot = 0; ot < kOT; ++ot) o[0][ot][0] = o[0][ot][1] = o[0][ot][2] = o[0][ot][3] = 0.f;

  const bool softcap = p.softcap > 0.f;
  const float cap_in = p.scale / (softcap ? p.softcap : 1.f);
  const float sl2 = softcap ? kLog2e : p.scale_log2;
  const uint32_t q_addr = smem_addr(sQ) + cw * 64 * 128;  // this warpgroup's rows, panel 0
  const int row0 = m0 + cw * 64 + warp * 16 + g;           // this thread's first row

  // S = Q K^T of tile `it` (issued, not waited for): D / 16 steps, 4 per 128-byte panel row.
  float sc[1][kNT][4];
  auto issue_s = [&](int it) {
    const int s = it % kStages;
    mbar_wait(&full_k[s], (it / kStages) & 1);
    const uint32_t k_addr = smem_addr(sK(s));
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kD / 16; ++ks)
      wgmma_ss<T, kBN>(sc[0], wgmma_desc(q_addr + (ks / 4) * Tr::kQPanelBytes + (ks % 4) * 32, 16, 1024),
                       wgmma_desc(k_addr + (ks / 4) * Tr::kKVPanelBytes + (ks % 4) * 32, 16, 1024), ks > 0);
    wgmma_commit();
  };
  // O += P V of tile `it`: kBN / 16 steps of 16 keys (16 rows of the V tile = 2048 bytes a panel),
  // all kDvPad columns at once (the panels kBN * 128 bytes apart).
  uint32_t pa[kKT][4];
  auto issue_pv = [&](int it) {
    const int s = it % kStages;
    mbar_wait(&full_v[s], (it / kStages) & 1);
    const uint32_t v_addr = smem_addr(sV(s));
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk)
      wgmma_rs<T, Tr::kDvPad>(o[0], pa[kk], wgmma_desc(v_addr + kk * 2048, Tr::kKVPanelBytes, 1024), true);
    wgmma_commit();
  };
  // The softmax of tile `it` on the landed S; returns the factor O must be rescaled by.
  auto softmax_tile = [&](int it, float (&alpha)[2]) {
    int pattern;
    const int n0 = tiles.start(it, pattern);
    if (softcap) softcap_scores(sc, p.softcap, cap_in);
    if (pattern >= 0 || mask.is_partial(m0, m0 + rows_here - 1, n0, kBN))
      mask_scores<kBlockSparse>(sc, mask, tiles.bsm, pattern, row0, n0, t);
    softmax.update(sc, sl2, alpha);
  };
  auto pack_p = [&] {
#pragma unroll
    for (int kk = 0; kk < kKT; ++kk) acc_to_a<T>(sc[0], kk, pa[kk]);
  };
  auto release = [&](uint64_t* bar) {
    if (lane == 0) mbar_arrive(bar);
  };

  // The two warpgroups take turns issuing their GEMMs (named barriers 3 and 4), so that one's
  // softmax runs while the other's GEMMs have the tensor cores. Warpgroup 0 goes first.
  constexpr int kTurnBar = 3;
  int issues_left = n_tiles + 1;  // S(0), then S(it) + PV(it-1) per tile, then the last PV
  auto my_turn = [&] { named_barrier_sync(kTurnBar + cw, 256); };
  auto your_turn = [&] {
    // The second warpgroup's last hand-over would have no taker.
    if (cw == 0 || --issues_left > 0) named_barrier_arrive(kTurnBar + (1 - cw), 256);
  };
  if (cw == 1 && n_tiles > 0) named_barrier_arrive(kTurnBar, 256);

  // Software pipeline: while the tensor cores run S(it) and P(it-1) V(it-1), the warpgroup waits
  // only for S(it), then does its softmax as P V finishes.
  if (n_tiles > 0) {
    mbar_wait(bar_q, 0);
    my_turn();
    issue_s(0);
    your_turn();
    wgmma_wait<0>();
    fence_operands(sc[0]);
    release(&empty_k[0]);
    float alpha[2];
    softmax_tile(0, alpha);  // O is still 0: no rescale
    pack_p();
    for (int it = 1; it < n_tiles; ++it) {
      my_turn();
      issue_s(it);
      issue_pv(it - 1);
      your_turn();
      wgmma_wait<1>();  // S(it) landed; P V may still run
      fence_operands(sc[0]);
      release(&empty_k[it % kStages]);
      softmax_tile(it, alpha);
      wgmma_wait<0>();
      fence_operands(o[0]);
      fence_operands(pa);
      release(&empty_v[(it - 1) % kStages]);
      rescale_output(o, alpha);
      pack_p();
    }
    my_turn();
    issue_pv(n_tiles - 1);
    your_turn();
    wgmma_wait<0>();
    fence_operands(o[0]);
    fence_operands(pa);
    release(&empty_v[(n_tiles - 1) % kStages]);
  }

  // ---- epilogue: normalise, stage in this warpgroup's Q rows (same swizzle), store -------------
  float factor[2], lse[2];
  const bool has_sink = p.sinks != nullptr;
  softmax.finalize(sl2, has_sink, has_sink ? p.sinks[h] * kLog2e : 0.f, factor, lse);
  unsigned char* const sO = sQ + cw * 64 * 128;
#pragma unroll
  for (int ot = 0; ot < kOT; ++ot)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = warp * 16 + g + 8 * hf;  // row within the warpgroup
      const int chunk = (ot % 8) ^ (r % 8);
      *reinterpret_cast<uint32_t*>(sO + (ot / 8) * Tr::kQPanelBytes + r * 128 + chunk * 16 + t * 4) =
          pack2<T>(o[0][ot][2 * hf] * factor[hf], o[0][ot][2 * hf + 1] * factor[hf]);
    }
  named_barrier_sync(1 + cw, 128);
  const int wrows = min(64, max(rows_here - cw * 64, 0));
  T* out = static_cast<T*>(p.o) + b * p.o_batch_stride + (seq.q_start + m0 + cw * 64) * p.o_row_stride +
           h * p.o_head_stride;
  constexpr int kChunksPerRow = Tr::kDvPad / 8;
#pragma unroll
  for (int i = 0; i < 64 * kChunksPerRow / 128; ++i) {
    const int c = (tid % 128) + 128 * i;
    const int r = c / kChunksPerRow, cc = c % kChunksPerRow;
    if (r < wrows && cc * 8 < p.head_dim_v)
      *reinterpret_cast<uint4*>(out + r * p.o_row_stride + cc * 8) = *reinterpret_cast<const uint4*>(
          sO + (cc / 8) * Tr::kQPanelBytes + r * 128 + ((cc % 8) ^ (r % 8)) * 16);
  }
  if (p.lse != nullptr && t == 0) {
    float* l = p.lse + b * p.lse_batch_stride + h * p.lse_head_stride + seq.q_start + m0;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int r = cw * 64 + warp * 16 + g + 8 * hf;
      if (r < rows_here) l[r] = lse[hf];
    }
  }
#else
  arch_unsupported();
#endif
}

}  // namespace cuattn
