// flash_launch.cuh — host launcher of flash_fwd_kernel, instantiated once per (dtype, head dim)
// by the generated files in the build tree (cuda/sources.cmake).
#pragma once

#include "common/launch.cuh"
#include "cuattn/launch.h"
#include "flash/flash_fwd.cuh"

namespace cuattn {

template <typename T, int kD, int kDv>
void run_flash_fwd(const AttnParams& p, cudaStream_t stream) {
  using Tr = FlashTraits<kD, kDv>;
  const size_t smem = Tr::kSmemElems * sizeof(T);
  const dim3 grid((p.seqlen_q + Tr::kBM - 1) / Tr::kBM, p.num_heads_q, p.batch);
  if (grid.x == 0) return;
  static_assert(Tr::kBM == kFlashTileQ && Tr::kBN == kFlashTileKV,
                "block masks come in multiples of the tile the host checks them against");
  if (p.block_mask.present()) {
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
