// paged_launch.cuh — host launcher of paged_decode_kernel, instantiated once per (q dtype,
// head dim) by the generated files in the build tree; each instance holds the 16-bit-cache and
// the fp8-cache kernels.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "common/launch.cuh"
#include "common/tma_host.cuh"
#include "cuattn/cuattn.h"
#include "decode/paged_decode.cuh"

namespace cuattn {

// Split decision + workspace of one call (cuda/decode/dispatch.cu): from the plan when given,
// else from shapes alone, with a per-(device, stream) cached workspace. No host sync either way.
SplitWorkspace decode_workspace(const PagedParams& p, const DecodePlan* plan, int row_chunks,
                                cudaStream_t stream);
int sm_count();  // of the current device (cached)

// The TMA variant: D <= 128 (rows of 128 or 256 bytes in 128-byte panels; fp8 D64's 64-byte rows
// in one 64-byte-swizzled panel), when the build and the device have sm_90a code, the page size
// divides a tile (Tr::kBN keys) or is a multiple of it and TMA can describe both caches. False:
// nothing launched. kPersistent: a grid of more CTAs than fit on the GPU at once (or than
// max_ctas) is launched as one wave of at most that many CTAs that take its units in turn
// (paged_decode_kernel's work units, numbered in 32 bits), with the merge scratch past the ring;
// false (nothing launched) for a grid that fits, or one of 2^31 units or more.
template <typename T, int kD, bool kFp8, bool kWide = false, bool kPersistent = false>
bool run_paged_tma(const PagedParams& p, const SplitWorkspace& ws, dim3 grid, cudaStream_t stream, bool pdl,
                   int reorder_after, int max_ctas = INT32_MAX) {
  using Tr = PagedTraits<kD, kFp8, kWide>;
  constexpr int kRowBytes = kD * (kFp8 ? 1 : 2);
  if constexpr (kD > 128) {
    // D256: 16-bit spills at 255 registers; fp8 streamed 13 % slower than its row copies (H200,
    // B64 L4096: 2116 against 2428 GB/s).
    return false;
  } else {
    // A tile's kBN keys in whole boxes that never cross a page: pages of 16 slots or more that
    // divide kBN or are a multiple of it (a page of 48 or 80 would leave a tile straddling pages
    // at a varying slot).
    const bool boxes_fit =
        p.page_size >= 16 && (Tr::kBN % p.page_size == 0 || p.page_size % Tr::kBN == 0);
    if (!boxes_fit || p.num_pages <= 0) return false;
    auto kernel = paged_decode_kernel<T, kD, kFp8, true, kWide, kPersistent>;
    const size_t smem = kPersistent ? Tr::kTmaRingBytes + Tr::kMergeBytes : std::max(Tr::kTmaRingBytes, Tr::kMergeBytes);
    if (!prepare_sm90a_kernel(kernel, smem)) return false;
    if constexpr (kPersistent) {
      const int64_t wave = std::min<int64_t>(int64_t(sm_count()) * resident_ctas(kernel, Tr::kBlock, smem), max_ctas);
      const int64_t units = int64_t(grid.x) * grid.y * grid.z;
      if (wave <= 0 || units <= wave || units > INT32_MAX) return false;
      grid = dim3(unsigned(wave));
    }
    const int box = std::min(p.page_size, Tr::kBN);
    PagedTmaMaps maps;
    maps.reorder_after = reorder_after;
    // The maps describe the caches' true rows (head_dim == kD: the paged kernels take D = Dv in
    // {64, 128, 256}), so a box never reaches past a row into the next one.
    constexpr int kBoxBytes = kRowBytes < 128 ? kRowBytes : 128;
    if (!make_tma_map(&maps.k, p.kv_dtype, p.k_cache, p.head_dim, p.page_size, p.num_heads_kv, p.num_pages,
                      p.k_slot_stride, p.k_head_stride, p.k_page_stride, box, kBoxBytes) ||
        !make_tma_map(&maps.v, p.kv_dtype, p.v_cache, p.head_dim_v, p.page_size, p.num_heads_kv, p.num_pages,
                      p.v_slot_stride, p.v_head_stride, p.v_page_stride, box, kBoxBytes))
      return false;
    launch_kernel(kernel, grid, Tr::kBlock, smem, stream, pdl, p, ws, maps);
    return true;
  }
}

// One kernel: the TMA variant where it applies, else the row-copy (sm90) / cp.async (sm80) one.
// Rows of at most 128 bytes (fp8 D64 / D128, 16-bit D64) on a grid of one CTA an SM or less take
// the 8-warp TMA shape (PagedTraits). On sm90 the kernel is launched with programmatic dependent
// launch: its CTAs may be scheduled while the previous kernel in the stream finishes, and wait
// for it in the kernel. Experiment switches, read every call so that variants can be compared in
// one process: CUATTN_DECODE_ROW_COPIES=1 (no TMA), CUATTN_DECODE_WIDE=0 (no 8 warps),
// CUATTN_PDL=0 (a plain launch), CUATTN_DECODE_PAGE_ORDER=N (the TMA kernel visits pages grouped
// by address after N tiles, for every grid; 0: in sequence order throughout),
// CUATTN_DECODE_PERSISTENT=0 (fp8 grids of several waves as they are, not persistent),
// CUATTN_DECODE_PERSISTENT_CTAS=N (at most N persistent CTAs, on any fp8 grid of more units:
// tests run the persistent kernel on small problems with it).
template <typename T, int kD, bool kFp8>
void launch_paged(const PagedParams& p, const SplitWorkspace& ws, dim3 grid, cudaStream_t stream) {
  using Tr = PagedTraits<kD, kFp8>;
  auto env_off = [](const char* name, char off) {
    const char* v = std::getenv(name);
    return v != nullptr && v[0] == off;
  };
  const bool tma = !env_off("CUATTN_DECODE_ROW_COPIES", '1');
  const bool pdl = !env_off("CUATTN_PDL", '0');
  const bool one_wave = int64_t(grid.x) * grid.y * grid.z <= sm_count();  // one CTA an SM or less
  // Page order (the kernel's "order of the boxes"): after 8 tiles, where it was measured to help
  // (random pages, H100): a grid of one wave (B1 +1.9 %, B16 +1.8 %) or CTAs of 4096 keys or more
  // (B64 L4096 +1.0 %); several waves of 2048-key CTAs lost 0.1-0.4 % (B256 L2048).
  int reorder = 0;
  if (const char* v = std::getenv("CUATTN_DECODE_PAGE_ORDER")) {
    reorder = std::atoi(v);
  } else {
    const int64_t keys = ws.chunk_tokens > 0 ? ws.chunk_tokens : int64_t(p.max_blocks) * p.page_size;
    if (one_wave || keys >= 4096) reorder = 8;
  }
  if constexpr (kFp8 && kD <= 128) {
    // Persistent CTAs for fp8 grids of several waves (H100, fp8 D128: B64 L4096 +1.3 %, B128
    // L4096 +3.2 %, B256 L2048 +4.7 %). 16-bit caches lost 1-2 %: their kernel runs two CTAs an
    // SM, but with the merge scratch past its 96 KB ring only one fits (bench/NOTES.md).
    const char* cv = std::getenv("CUATTN_DECODE_PERSISTENT_CTAS");
    const int cap = cv != nullptr ? std::max(std::atoi(cv), 0) : 0;
    if (tma && !env_off("CUATTN_DECODE_PERSISTENT", '0') && (!one_wave || cap > 0) &&
        run_paged_tma<T, kD, kFp8, false, true>(p, ws, grid, stream, pdl, 0, cap > 0 ? cap : INT32_MAX))
      return;
  }
  if constexpr (kD * (kFp8 ? 1 : 2) <= 128) {
    if (tma && !env_off("CUATTN_DECODE_WIDE", '0') && one_wave &&
        run_paged_tma<T, kD, kFp8, true>(p, ws, grid, stream, pdl, reorder))
      return;
  }
  if (tma && run_paged_tma<T, kD, kFp8>(p, ws, grid, stream, pdl, reorder)) return;
  auto kernel = paged_decode_kernel<T, kD, kFp8>;
  const size_t smem = std::max(Tr::kRingBytes, Tr::kMergeBytes);
  set_smem_limit(kernel, smem);
  launch_kernel(kernel, grid, Tr::kBlock, smem, stream, pdl, p, ws, PagedTmaMaps{});
}

template <typename T, int kD>
void run_paged(const PagedParams& p, const DecodePlan* plan, cudaStream_t stream) {
  constexpr int kRows = PagedTraits<kD>::kRows;  // query rows of a CTA (the same for fp8)
  static_assert(kRows == PagedTraits<kD, true>::kRows, "one row-chunk count for both caches");
  const int group = p.num_heads_q / p.num_heads_kv;
  const int row_chunks = (group * p.seqlen_q + kRows - 1) / kRows;
  const SplitWorkspace ws = decode_workspace(p, plan, row_chunks, stream);
  const dim3 grid(ws.max_splits, p.num_heads_kv * row_chunks, p.batch);
  if (p.kv_dtype == DType::fp8_e4m3)
    launch_paged<T, kD, true>(p, ws, grid, stream);
  else
    launch_paged<T, kD, false>(p, ws, grid, stream);
  check_launch("paged_decode_kernel launch");
}

}  // namespace cuattn
