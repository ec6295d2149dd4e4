// latent_decode_launch.cuh — host launchers of the work-list MLA decode kernels
// (mla_list_decode_kernel, and on sm_90a mla_decode_sm90_kernel and the narrow one): the work
// list built on the device from seq_lens, the persistent grid (one CTA an SM), then the split
// combine. Instantiated per dtype by latent_decode_{f16,bf16}.cu.
#pragma once

#include <algorithm>
#include <string>

#include "common/launch.cuh"
#include "common/tma_host.cuh"
#include "cuattn/launch.h"
#include "mla/latent_decode.cuh"
#include "mla/latent_decode_sm90.cuh"
#include "mla/latent_decode_sm90_narrow.cuh"

namespace cuattn {

// The list's line for p.list.s (ctas set), built on the device from seq_lens, each clamped to the
// block table's capacity. early_dependents: the decode kernel after it (a programmatic dependent
// that waits first) may be scheduled under the build.
inline void build_mla_list(const MlaLatentParams& p, cudaStream_t stream, bool early_dependents) {
  const int64_t max_len = p.num_pages > 0 ? int64_t(p.max_blocks) * p.page_size : 0;
  kernels::build_worklist(p.seq_lens, p.list.s, max_len, const_cast<int64_t*>(p.list.seq_start),
                          const_cast<int32_t*>(p.list.seq_lens), stream, nullptr, nullptr, early_dependents);
}

// The split combine after either decode kernel (units of kRows query rows).
template <typename T, int kRows>
void launch_mla_list_combine(const MlaLatentParams& p, cudaStream_t stream) {
  const int rows = p.num_heads_q * p.seqlen_q;
  // Programmatic dependent launch: it may be scheduled under the decode kernel's tail (the sm_90a
  // kernels trigger it once they have waited for the list; the portable one when it completes),
  // and waits for it (grid_dependency_wait) before reading anything. A CTA a row.
  launch_kernel(mla_list_combine<T, kRows>, dim3(rows, p.batch), dim3(32 * kCombineQuarters),
                size_t(kCombineQuarters) * p.list.s.ctas * sizeof(float), stream, true, p);
  check_launch("mla_list_combine launch");
}

// The deepest ring the device's shared memory per block holds (kDeep stages, else 2).
template <typename T, bool kFp8, int kDeep>
void launch_mla_list(MlaLatentParams p, cudaStream_t stream) {
  using Deep = LatentDecodeTraits<kFp8, kDeep>;
  using Shallow = LatentDecodeTraits<kFp8, 2>;
  const size_t optin = once_per_device<size_t>(nullptr, [](int dev) {
    int v = 0;
    check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
    return size_t(v);
  }, 1);
  const bool deep = optin >= Deep::kSmem;
  auto kernel = deep ? mla_list_decode_kernel<T, Deep> : mla_list_decode_kernel<T, Shallow>;
  const size_t smem = deep ? Deep::kSmem : Shallow::kSmem;
  if (optin < smem)
    throw ValueError("mla_decode needs " + std::to_string(smem) + " bytes of shared memory a block; this device has " +
                     std::to_string(optin));
  set_smem_limit(kernel, smem);
  const int sms = std::max(cuda::mla_sm_count(), 1);
  // The workspace holds two slots for each of kListCtasPerSm CTAs an SM (one fits today).
  const int per_sm = std::min(std::max(resident_ctas(kernel, Deep::kThreads, smem), 1), kListCtasPerSm);
  const int ctas = std::min(sms * per_sm, kMaxDecodeSplits);
  p.list.s.ctas = ctas;
  build_mla_list(p, stream, false);  // this kernel is launched in stream order
  kernel<<<ctas, Deep::kThreads, smem, stream>>>(p);
  check_launch("mla_list_decode_kernel launch");
  launch_mla_list_combine<T, Deep::kRows>(p, stream);
}

// ---- sm_90a ----------------------------------------------------------------------------------
// Page sizes whose 64-key tiles are whole TMA boxes at 1024-byte steps of the swizzled panels.
inline bool mla_sm90_page_ok(int page) {
  return page > 0 && (page % 64 == 0 || page == 8 || page == 16 || page == 32);
}

// The latent cache as a 4-d tensor [1][num_pages][page_size][576] for TMA, boxes of 64 columns x
// min(page, 64) slots. False when TMA cannot describe it.
inline bool mla_sm90_map(CUtensorMap* map, const MlaLatentParams& p) {
  return make_tma_map(map, p.kv_dtype, p.k_cache, 576, p.page_size, p.num_pages, 1, p.k_slot_stride,
                      p.k_page_stride, 0, std::min(p.page_size, 64));
}

// Can the sm_90a kernel (narrow: mla_decode_sm90_narrow_kernel, for at most 32 query rows; else
// mla_decode_sm90_kernel) run this call on this device (sm_90a code, a 16-bit cache of a page size
// it takes, TMA-describable, q rows 16-byte aligned)? Raises its shared-memory limit once.
template <typename T>
bool mla_sm90_ready(const MlaLatentParams& p, bool narrow) {
  if (p.kv_dtype != p.q_dtype || !mla_sm90_page_ok(p.page_size) || p.num_pages <= 0) return false;
  if (reinterpret_cast<uintptr_t>(p.q) % 16 != 0 || p.q_batch_stride % 8 != 0 || p.q_row_stride % 8 != 0 ||
      p.q_head_stride % 8 != 0)
    return false;
  const int rows = p.num_heads_q * p.seqlen_q;
  if (narrow && rows > 32) return false;
  const bool prepared =
      !narrow ? prepare_sm90a_kernel(mla_decode_sm90_kernel<T>, LatentSm90Traits::kSmem)
      : rows <= 16 ? prepare_sm90a_kernel(mla_decode_sm90_narrow_kernel<T, 16>, LatentNarrowTraits<16>::kSmem)
                   : prepare_sm90a_kernel(mla_decode_sm90_narrow_kernel<T, 32>, LatentNarrowTraits<32>::kSmem);
  if (!prepared) return false;
  CUtensorMap map;
  return mla_sm90_map(&map, p);
}

// Runs a list of kRows-row units on the sm_90a kernel for that size (64: mla_decode_sm90_kernel;
// 16 or 32: the narrow one; the host asked mla_sm90_ready first). One CTA an SM (their shared
// memory); the workspace's slots (two a CTA of at most 64 rows) fit it.
template <typename T, int kRows>
void launch_mla_sm90(MlaLatentParams p, cudaStream_t stream) {
  constexpr bool kNarrow = kRows < 64;
  CUtensorMap map;
  if (!mla_sm90_ready<T>(p, kNarrow) || !mla_sm90_map(&map, p))
    throw ValueError("mla_decode: the sm_90a kernel cannot run this call");
  p.list.s.ctas = std::min(std::max(cuda::mla_sm_count(), 1), kMaxDecodeSplits);
  build_mla_list(p, stream, true);
  // Both kernels wait for the list's build (grid_dependency_wait) after setting up their shared
  // memory: launched as programmatic dependents of a build that lets them start at once, their
  // launch and that set-up overlap the build (on an H200 they start 1.1-1.6 us before its end,
  // which takes 2.3 us; without the early trigger they started after it).
  if constexpr (kNarrow) {
    using Tr = LatentNarrowTraits<kRows>;
    launch_kernel(mla_decode_sm90_narrow_kernel<T, kRows>, dim3(p.list.s.ctas), dim3(Tr::kThreads), Tr::kSmem, stream,
                  true, p, map);
    check_launch("mla_decode_sm90_narrow_kernel launch");
  } else {
    using Tr = LatentSm90Traits;
    launch_kernel(mla_decode_sm90_kernel<T>, dim3(p.list.s.ctas), dim3(Tr::kThreads), Tr::kSmem, stream, true, p, map);
    check_launch("mla_decode_sm90_kernel launch");
  }
  launch_mla_list_combine<T, kRows>(p, stream);
}

template <typename T>
void run_mla_list(const MlaLatentParams& p, cudaStream_t stream) {
  if (p.list_kernel == MlaListKernel::sm90) {
    switch (p.list.s.rows) {
      case 16: return launch_mla_sm90<T, 16>(p, stream);
      case 32: return launch_mla_sm90<T, 32>(p, stream);
      case 64: return launch_mla_sm90<T, 64>(p, stream);
      default: throw ValueError("mla_decode: no sm_90a kernel for units of " + std::to_string(p.list.s.rows) + " rows");
    }
  } else if (p.kv_dtype == DType::fp8_e4m3) {
    launch_mla_list<T, true, 4>(p, stream);
  } else {
    launch_mla_list<T, false, 3>(p, stream);
  }
}

}  // namespace cuattn
