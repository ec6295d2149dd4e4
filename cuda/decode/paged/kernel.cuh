// kernel.cuh — paged_decode_kernel: attention of a few new tokens over a paged KV cache, at the memory-bandwidth
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

#include <type_traits>

#include "common/copy.cuh"
#include "common/mask.cuh"
#include "common/mma.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "cuattn/launch.h"
#include "cuattn/params.h"
#include "decode/paged/config.cuh"
#include "decode/paged/paged_kv.cuh"
#include "decode/paged/producers.cuh"
#include "decode/paged/scheduler.cuh"

namespace cuattn {

// kTma (sm_90a, D <= 128, a page size that divides a tile of kBN keys or is a multiple of it): the
// ring is filled by TMA tensor copies (TmaBoxProducer) instead of one bulk copy per row
// (BulkRowProducer; sm80: CpAsyncCopier). kWide: 8 consumer warps on 128-key tiles (PagedTraits).
// kPersistent: one wave of CTAs walking the grid's pieces or the work list (scheduler.cuh).
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
  constexpr bool kBulk = CUATTN_BULK_COPY;
  // Where the tiles come from (producers.cuh), and the ring they land in: kStages K/V tiles, the
  // MMA operands (16-bit caches) or raw e4m3 bytes (fp8); the TMA ring is 1024-byte aligned.
  using Source = std::conditional_t<kTma, TmaBoxProducer<Tr, KV, kPersistent>,
                                    std::conditional_t<kBulk, BulkRowProducer<Tr, KV>, CpAsyncCopier<Tr, KV>>>;
  using Ring = typename Source::Ring;
  using Panels = TmaPanels<Tr, int(sizeof(KV))>;  // the TMA ring's swizzled layout
  constexpr int kRawStride = Ring::kRowStride;  // elements of KV per smem row (the ring's layout)
  extern __shared__ __align__(16) unsigned char smem_raw[];

  CUATTN_TRACE(0);
  // Launched with programmatic dependent launch on sm90 (the launcher): the CTAs may start while
  // the previous kernel in the stream (say, the one that appended this step's keys) drains.
  // Everything below reads its outputs, so wait for it here. No kernel here triggers its
  // dependents early (griddepcontrol.launch_dependents): a decode grid scheduled while
  // append_paged_kv still ran was 2 % slower at B16 (bench/NOTES.md, seventh session).
  grid_dependency_wait();
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int group = p.num_heads_q / p.num_heads_kv;

  // sm90: warps kWarps..2*kWarps-1 are producers that only copy; the consumers release each ring
  // slot they have read. sm80: the producer warps leave at once and the consumers copy.
  const bool producer = warp >= Tr::kWarps;
  __shared__ __align__(8) uint64_t full[Tr::kStages];   // tile landed, one phase per use
  __shared__ __align__(8) uint64_t empty[Tr::kStages];  // every consumer is done with it
  __shared__ __align__(8) uint64_t order_ready;         // TMA: the order of the boxes is made
  constexpr int kOrderBoxesHere = kTma ? kOrderBoxes : 1;
  __shared__ int s_order[kOrderBoxesHere];                // [position - o_first] -> box - o_first
  __shared__ uint8_t s_bucket[kOrderBoxesHere];           // [box - o_first] -> address range of its page
  __shared__ int s_count[kTma ? 3 * 32 : 1];
  __shared__ int s_first_key[kTma ? Tr::kStages : 1][kTma ? kBN / 16 : 1];  // [stage][box]: its first key
  __shared__ int s_last;                                  // split-KV: this CTA merges the unit
  if constexpr (kBulk) {
    if (tid == 0) {
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
  const Ring ring{{full, empty}, reinterpret_cast<KV*>(smem_raw + (kTma ? (1024 - smem_addr(smem_raw) % 1024) % 1024 : 0))};
  Source src = [&] {
    if constexpr (kTma) {
      const int box = min(p.page_size, kBN);
      return Source{ring, maps, s_first_key, &order_ready, s_order, s_bucket, s_count, box, kBN / box, warp, lane};
    } else {
      return Source(ring, tid);
    }
  }();
  // The consumers (warps 0..kWarps-1) synchronise among themselves (named barrier 1): the
  // producer warps have left by then.
  auto consumer_sync = [] { named_barrier_sync(1, Tr::kThreads); };

  // ---- one piece of work (scheduler.cuh): its 16 query rows over keys k_begin .. k_end - 1 ------
  int tiles_before = 0;  // ring tiles of this CTA's earlier pieces
  auto run_unit = [&](const Work& w) {
    const int b = w.b, yy = w.yy, L = w.L, split = w.split, nsplits = w.nsplits;
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
    lo = max(lo, w.k_begin);
    hi = min(hi, w.k_end);
    const int tile0 = lo / kBN * kBN;  // tiles are aligned to kBN keys of the sequence
    const int n_tiles = hi > lo ? (hi - tile0 + kBN - 1) / kBN : 0;
    const PieceTiles u{lo, hi, tile0, n_tiles, tiles_before};
    tiles_before += n_tiles;
    const PagedKV<KV> kv(p, b, hk);

    if constexpr (kBulk) {
      if (producer) {
        src.produce(u, kv);
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

    src.start(u, kv);

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
      const int stage = (u.t_base + it) % Tr::kStages;
      // This warp's 16 keys of the tile, n0 .. n0 + 15 (TMA: where the producer put this warp's box).
      const int n0 = src.land(u, kv, it);
      if (it == 0) CUATTN_TRACE(1);
      CUATTN_TRACE_TILE(it, 0);

      const KV* sk = ring.k(stage);
      const KV* sv = ring.v(stage);

      // S = Q K^T over this warp's 16 keys of the tile.
      float s[1][2][4] = {{{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}}};
      const uint32_t k_base = smem_addr(sk), v_base = smem_addr(sv);
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        uint32_t kb[4];
        if constexpr (kFp8) {  // two k steps at once: matrices (keys 0-7 | 8-15) x (step ks | ks + 1)
          if (ks % 2 == 1) continue;
          const int kr = warp * 16 + lane % 8 + ((lane / 8) % 2) * 8, kc = ks + lane / 16;  // row, 16-byte chunk
          ldmatrix_x4(kb, k_base + (kTma ? Panels::offset(kr, kc) : kr * kRawStride + kc * 16));
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
          ldmatrix_x4(kb, k_base + Panels::offset(kr, kc));
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
          ldmatrix_x4_trans(vb, v_base + (kTma ? Panels::offset(vr, vc) : vr * kRawStride + vc * 16));
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
          ldmatrix_x4_trans(vb, v_base + Panels::offset(vr, vc));
        } else {
          ldmatrix_x4_trans(vb, v_base + 2 * ((warp * 16 + lane % 8 + ((lane / 8) % 2) * 8) * Tr::kStride + dp * 16 + (lane / 16) * 8));
        }
        mma_m16n8k16<T>(o[0][2 * dp], pa, vb[0], vb[1]);
        mma_m16n8k16<T>(o[0][2 * dp + 1], pa, vb[2], vb[3]);
      }
      src.release(u, it);
      CUATTN_TRACE_TILE(it, 2);
    }
    CUATTN_TRACE(2);
    src.finish();
    consumer_sync();  // the ring is free (every tile landed and was used): reuse it for the merge

    // ---- merge the warps' states: per row, each warp's max m_w and sum l_w; O_w rescaled to the
    // common max and summed in a fixed order (deterministic) ---------------------------------------
    constexpr int kW = Tr::kWarps;
    // In the ring (free by then), or past it when the ring already holds the next unit's tiles
    // (a persistent CTA whose producer runs ahead: not with ws.scratch_in_ring, see run_piece).
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
    float* wo = ws.o + piece_slot<kPersistent>(ws, w, split) * 16 * kDv;
    float* wl = ws.lse + piece_slot<kPersistent>(ws, w, split) * 16;
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
          nsplits, [&](int sp) { return __ldcg(ws.lse + piece_slot<kPersistent>(ws, w, sp) * 16 + r); },
          [&](int sp) { return ws.o + (piece_slot<kPersistent>(ws, w, sp) * 16 + r) * kDv; }, s_w, lane, kDv, acc);
      float* orow = s_ow + r * kDv;  // free again: every partial row was written before the count
#pragma unroll
      for (int c = 0; c < kPer; ++c) orow[lane * kPer + c] = acc[c];
      __syncwarp();
      store_row(r, orow, lse);
    }
    consumer_sync();
    CUATTN_TRACE(4);
  };

  // A persistent CTA whose epilogue scratch lies in the ring (ws.scratch_in_ring, sm90): producer
  // and consumers meet at named barrier 2 after every piece, the consumers once its epilogue is
  // over, the producer once it has issued the piece's tiles (long before: it waits there), so the
  // producer writes the next piece's tiles only into a ring that no epilogue uses any more. Both
  // sides walk the same pieces (zero-tile pieces and skipped row chunks alike), so the barrier's
  // uses pair up; neither side can run a piece ahead of the other. (A count in shared memory
  // polled by the producer did the same, but compute-sanitizer's racecheck sees no ordering in it.)
  const bool drain = kBulk && kPersistent && ws.scratch_in_ring;
  // TMA: the one issuing producer warp (the sorters have left); row copies: every producer thread.
  constexpr int kDrainThreads = Tr::kThreads + (kTma ? 32 : Tr::kThreads);
  auto run_piece = [&](const Work& w) {
    run_unit(w);
    if (drain) {
      if (!producer) fence_proxy_async();  // this thread's scratch accesses before the copies that reuse the bytes
      named_barrier_sync(2, kDrainThreads);
    }
  };
  // sm80 persistent CTAs: the consumers meet after every piece (the merge scratch is the ring).
  auto between = [] {
    if constexpr (!kBulk) named_barrier_sync(1, Tr::kThreads);
  };
  // Each role runs its pieces after its setmaxnreg, so that ptxas compiles each copy of run_unit
  // under that role's register budget (one loop after both would have the smaller one).
  if (producer) {
    if constexpr (kBulk && Tr::kRegRealloc)  // the whole warpgroup
      setmaxnreg_dec<kPersistent ? Tr::kPersistentProducerRegs : Tr::kProducerRegs>();
    // TMA: one producer warp; the sorter warps leave (a persistent CTA never orders). Row copies:
    // every producer thread copies a row of every tile.
    if (kTma && kPersistent && warp != Tr::kWarps) return;
    for_each_piece<kPersistent>(p, ws, run_piece, between);
    return;
  }
  if constexpr (kBulk && Tr::kRegRealloc) setmaxnreg_inc<kPersistent ? Tr::kPersistentConsumerRegs : Tr::kConsumerRegs>();
  for_each_piece<kPersistent>(p, ws, run_piece, between);
}

}  // namespace cuattn
