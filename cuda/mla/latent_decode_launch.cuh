// latent_decode_launch.cuh — host launcher of mla_list_decode_kernel: the work list built on the
// device from seq_lens, the persistent grid (one CTA an SM), then the split combine. Instantiated
// per dtype by latent_decode_{f16,bf16}.cu.
#pragma once

#include <algorithm>
#include <string>

#include "common/launch.cuh"
#include "cuattn/launch.h"
#include "mla/latent_decode.cuh"

namespace cuattn {

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
  const int64_t max_len = p.num_pages > 0 ? int64_t(p.max_blocks) * p.page_size : 0;
  kernels::build_worklist(p.seq_lens, p.list.s, max_len, const_cast<int64_t*>(p.list.seq_start),
                          const_cast<int32_t*>(p.list.seq_lens), stream);
  kernel<<<ctas, Deep::kThreads, smem, stream>>>(p);
  check_launch("mla_list_decode_kernel launch");
  const int rows = p.num_heads_q * p.seqlen_q;
  mla_list_combine<T><<<dim3((rows + kCombineRows - 1) / kCombineRows, p.batch), 32 * kCombineRows,
                        size_t(kCombineRows) * ctas * sizeof(float), stream>>>(p);
  check_launch("mla_list_combine launch");
}

template <typename T>
void run_mla_list(const MlaLatentParams& p, cudaStream_t stream) {
  if (p.kv_dtype == DType::fp8_e4m3) launch_mla_list<T, true, 4>(p, stream);
  else launch_mla_list<T, false, 3>(p, stream);
}

}  // namespace cuattn
