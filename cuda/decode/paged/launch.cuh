// launch.cuh — host launcher of paged_decode_kernel, instantiated once per (q dtype,
// head dim) by the generated files in the build tree; each instance holds the 16-bit-cache and
// the fp8-cache kernels.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/launch.cuh"
#include "common/tma_host.cuh"
#include "cuattn/launch.h"
#include "decode/paged/kernel.cuh"

namespace cuattn {

// The work-list schedule (ws.list set): a persistent grid of as many CTAs of `kernel` as fit at
// once (at most kListCtasPerSm an SM, and DecodeConfig::list_ctas), each taking its share of the
// list that kernels::build_worklist writes from seq_lens on the device just before, on the same
// stream (no host sync: the lengths never leave the device, and a captured graph rebuilds the
// list from each replay's lengths). Returns the workspace with the list's CTA count and the grid.
template <typename Kernel>
SplitWorkspace with_work_list(Kernel kernel, int threads, size_t smem, const PagedParams& p, const DecodeConfig& c,
                              SplitWorkspace ws, dim3& grid, cudaStream_t stream) {
  int64_t ctas = int64_t(c.sm_count) * std::min(std::max(resident_ctas(kernel, threads, smem), 1), kListCtasPerSm);
  if (c.list_ctas > 0) ctas = std::min<int64_t>(ctas, c.list_ctas);
  // A unit's splits are at most the CTAs; the merge keeps kMaxDecodeSplits weights a warp.
  ctas = std::min<int64_t>(ctas, kMaxDecodeSplits);
  ws.list.s.ctas = int(ctas);
  const int64_t max_len = p.num_pages > 0 ? int64_t(p.max_blocks) * p.page_size : 0;
  // The host carved these arrays from writable workspace; the kernel only reads them.
  kernels::build_worklist(p.seq_lens, ws.list.s, max_len, const_cast<int64_t*>(ws.list.seq_start),
                          const_cast<int32_t*>(ws.list.seq_lens), stream, p.cu_seqlens_q,
                          const_cast<int32_t*>(ws.list.seq_units));
  grid = dim3(unsigned(ctas));
  return ws;
}

// The TMA variant: D <= 128 (rows of 128 or 256 bytes in 128-byte panels; fp8 D64's 64-byte rows
// in one 64-byte-swizzled panel), when the build and the device have sm_90a code, the page size
// divides a tile (Tr::kBN keys) or is a multiple of it and TMA can describe both caches. False:
// nothing launched. kPersistent: the work list's grid (ws.list set: with_work_list), or else a
// grid of more CTAs than fit on the GPU at once (or than DecodeConfig::persistent_ctas) launched
// as one wave of at most that many CTAs that take its units in turn (paged_decode_kernel's work
// units, numbered in 32 bits); either way with the merge scratch past the ring (in it with
// DecodeConfig::drain: SplitWorkspace::scratch_in_ring). False (nothing
// launched) for a grid that fits, or one of 2^31 units or more, when there is no list.
template <typename T, int kD, bool kFp8, bool kWide = false, bool kPersistent = false>
bool run_paged_tma(const PagedParams& p, const DecodeConfig& c, const SplitWorkspace& ws, dim3 grid,
                   cudaStream_t stream) {
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
    // A persistent CTA keeps its merge scratch past the ring, unless it drains (c.drain): then in
    // it. The kernel's limit is raised once, to the larger layout, so that either may follow.
    const bool in_ring = kPersistent && c.drain;
    const size_t unit_smem = std::max(Tr::kTmaRingBytes, Tr::kMergeBytes);
    const size_t limit = kPersistent ? Tr::kTmaRingBytes + Tr::kMergeBytes : unit_smem;
    const size_t smem = in_ring ? unit_smem : limit;
    if (!prepare_sm90a_kernel(kernel, limit)) return false;
    SplitWorkspace w = ws;
    w.scratch_in_ring = in_ring;
    if (kPersistent && ws.list.seq_start != nullptr) {
      w = with_work_list(kernel, Tr::kBlock, smem, p, c, w, grid, stream);
    } else if constexpr (kPersistent) {
      const int64_t wave = std::min<int64_t>(int64_t(c.sm_count) * resident_ctas(kernel, Tr::kBlock, smem),
                                             c.persistent_ctas > 0 ? c.persistent_ctas : INT32_MAX);
      const int64_t units = int64_t(grid.x) * grid.y * grid.z;
      if (wave <= 0 || units <= wave || units > INT32_MAX) return false;
      grid = dim3(unsigned(wave));
    }
    const int box = std::min(p.page_size, Tr::kBN);
    PagedTmaMaps maps;
    maps.reorder_after = kPersistent ? 0 : c.page_order_after;  // a persistent CTA keeps its order
    // The maps describe the caches' true rows (head_dim == kD: the paged kernels take D = Dv in
    // {64, 128, 256}), so a box never reaches past a row into the next one.
    constexpr int kBoxBytes = kRowBytes < 128 ? kRowBytes : 128;
    if (!make_tma_map(&maps.k, p.kv_dtype, p.k_cache, p.head_dim, p.page_size, p.num_heads_kv, p.num_pages,
                      p.k_slot_stride, p.k_head_stride, p.k_page_stride, box, kBoxBytes) ||
        !make_tma_map(&maps.v, p.kv_dtype, p.v_cache, p.head_dim_v, p.page_size, p.num_heads_kv, p.num_pages,
                      p.v_slot_stride, p.v_head_stride, p.v_page_stride, box, kBoxBytes))
      return false;
    launch_kernel(kernel, grid, Tr::kBlock, smem, stream, c.pdl, p, w, maps);
    return true;
  }
}

// One kernel, as the config asks where the build, the device and the call allow it: persistent
// CTAs (fp8 caches of D <= 128 only), the 8-warp TMA kernel (rows of at most 128 bytes), the
// 4-warp TMA kernel, else the row-copy (sm90) / cp.async (sm80) one. On sm90 the kernel is
// launched with programmatic dependent launch (config.pdl): its CTAs may be scheduled while the
// previous kernel in the stream finishes, and wait for it in the kernel.
template <typename T, int kD, bool kFp8>
void launch_paged(const PagedParams& p, const DecodeConfig& c, const SplitWorkspace& ws, dim3 grid,
                  cudaStream_t stream) {
  using Tr = PagedTraits<kD, kFp8>;
  if (ws.list.seq_start != nullptr) {  // the work list: a persistent kernel of every kind
    if constexpr (kD * (kFp8 ? 1 : 2) <= 128) {
      if (c.tma && c.wide && run_paged_tma<T, kD, kFp8, true, true>(p, c, ws, grid, stream)) return;
    }
    if (c.tma && run_paged_tma<T, kD, kFp8, false, true>(p, c, ws, grid, stream)) return;
    auto kernel = paged_decode_kernel<T, kD, kFp8, false, false, true>;
    // The scratch past the ring where the kernel runs sm90 code (its producers run ahead) unless
    // it drains (c.drain), in it on sm80 code (Tr::scratch_offset); kernel_has_pdl tells which
    // code the device runs.
    // The limit is raised once, to the larger layout, so that either may follow.
    const bool sm90 = kernel_has_pdl(kernel);
    const size_t unit_smem = std::max(Tr::kRingBytes, Tr::kMergeBytes);
    const size_t limit = sm90 ? Tr::kRingBytes + Tr::kMergeBytes : unit_smem;
    const size_t smem = sm90 && !c.drain ? limit : unit_smem;
    set_smem_limit(kernel, limit);
    SplitWorkspace w = ws;
    w.scratch_in_ring = c.drain;
    w = with_work_list(kernel, Tr::kBlock, smem, p, c, w, grid, stream);
    launch_kernel(kernel, grid, Tr::kBlock, smem, stream, c.pdl, p, w, PagedTmaMaps{});
    return;
  }
  if constexpr (kFp8 && kD <= 128) {
    if (c.tma && c.persistent && run_paged_tma<T, kD, kFp8, false, true>(p, c, ws, grid, stream)) return;
  }
  if constexpr (kD * (kFp8 ? 1 : 2) <= 128) {
    if (c.tma && c.wide && run_paged_tma<T, kD, kFp8, true>(p, c, ws, grid, stream)) return;
  }
  if (c.tma && run_paged_tma<T, kD, kFp8>(p, c, ws, grid, stream)) return;
  auto kernel = paged_decode_kernel<T, kD, kFp8>;
  const size_t smem = std::max(Tr::kRingBytes, Tr::kMergeBytes);
  set_smem_limit(kernel, smem);
  launch_kernel(kernel, grid, Tr::kBlock, smem, stream, c.pdl, p, ws, PagedTmaMaps{});
}

template <typename T, int kD>
void run_paged(const PagedParams& p, const DecodeConfig& c, const SplitWorkspace& ws, cudaStream_t stream) {
  static_assert(PagedTraits<kD>::kRows == kDecodeRows && PagedTraits<kD, true>::kRows == kDecodeRows,
                "a CTA holds kDecodeRows query rows (the host sizes the workspace by them)");
  const int group = p.num_heads_q / p.num_heads_kv;
  const int row_chunks = (group * p.seqlen_q + kDecodeRows - 1) / kDecodeRows;
  const dim3 grid(ws.max_splits, p.num_heads_kv * row_chunks, p.batch);
  if (p.kv_dtype == DType::fp8_e4m3)
    launch_paged<T, kD, true>(p, c, ws, grid, stream);
  else
    launch_paged<T, kD, false>(p, c, ws, grid, stream);
  check_launch("paged_decode_kernel launch");
}

}  // namespace cuattn
