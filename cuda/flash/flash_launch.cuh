// flash_launch.cuh — host launcher of flash_fwd_kernel, instantiated once per (dtype, head dim)
// by the generated files in the build tree (cuda/sources.cmake).
#pragma once

#include "common/launch.cuh"
#include "flash/flash_fwd.cuh"

namespace cuattn {

template <typename T, int kD, int kDv>
void run_flash_fwd(const AttnParams& p, cudaStream_t stream) {
  using Tr = FlashTraits<kD, kDv>;
  const size_t smem = Tr::kSmemElems * sizeof(T);
  const dim3 grid((p.seqlen_q + Tr::kBM - 1) / Tr::kBM, p.num_heads_q, p.batch);
  if (grid.x == 0) return;
  if (p.block_mask.present()) {
    if (p.block_mask.block_q % Tr::kBM != 0 || p.block_mask.block_kv % Tr::kBN != 0)
      throw ValueError("block_mask block_size (" + std::to_string(p.block_mask.block_q) + ", " +
                       std::to_string(p.block_mask.block_kv) + ") is not supported on the GPU: use "
                       "multiples of (" + std::to_string(Tr::kBM) + ", " + std::to_string(Tr::kBN) +
                       "), e.g. the default 128");
    auto kernel = flash_fwd_kernel<T, kD, kDv, true>;
    set_smem_limit(kernel, smem);
    kernel<<<grid, Tr::kThreads, smem, stream>>>(p);
  } else {
    auto kernel = flash_fwd_kernel<T, kD, kDv, false>;
    set_smem_limit(kernel, smem);
    kernel<<<grid, Tr::kThreads, smem, stream>>>(p);
  }
  check_launch("flash_fwd_kernel launch");
}

}  // namespace cuattn
