// flash_launch_sm90.cuh — host side of flash_fwd_sm90_kernel: the TMA tensor maps and the launch,
// instantiated once per (dtype, head dim, v head dim) by the generated files in the build tree.
//
// run_flash_fwd_sm90 returns false, launching nothing, when this call cannot take the Hopper
// path: no sm_90a code for this device, at most one kv tile (seqlen_k <= kBN, 64 to 128 keys: the
// producer / consumer set-up would not pay for itself, and tiny calls stay cheaper on the host),
// a block mask whose blocks are not multiples of the 128 x kBN tile, or tensors TMA cannot
// describe (a base not 16-byte aligned, a stride not a multiple of 16 bytes). The caller then
// runs the portable kernel.
#pragma once

#include "common/launch.cuh"
#include "common/tma_host.cuh"
#include "flash/flash_fwd_sm90.cuh"

namespace cuattn {

template <typename T, int kD, int kDv, bool kBlockSparse, bool kAlt>
bool launch_flash_fwd_sm90(const AttnParams& p, cudaStream_t stream) {
  using Tr = FlashSm90Traits<kD, kDv, kAlt>;
  if (p.seqlen_k <= Tr::kBN) return false;
  if (kBlockSparse && (p.block_mask.block_q % Tr::kBM != 0 || p.block_mask.block_kv % Tr::kBN != 0)) return false;
  auto kernel = flash_fwd_sm90_kernel<T, kD, kDv, kBlockSparse, kAlt>;
  if (!prepare_sm90a_kernel(kernel, Tr::kSmemBytes)) return false;
  const bool varlen = p.cu_seqlens_q != nullptr;
  const int64_t nb = varlen ? 1 : p.batch;
  FlashTmaMaps maps;
  if (!make_tma_map(&maps.q, p.dtype, p.q, p.head_dim, varlen ? p.total_q : p.seqlen_q, p.num_heads_q, nb,
                    p.q_row_stride, p.q_head_stride, p.q_batch_stride, Tr::kBM) ||
      !make_tma_map(&maps.k, p.dtype, p.k, p.head_dim, varlen ? p.total_k : p.seqlen_k, p.num_heads_kv, nb,
                    p.k_row_stride, p.k_head_stride, p.k_batch_stride, Tr::kBN) ||
      !make_tma_map(&maps.v, p.dtype, p.v, p.head_dim_v, varlen ? p.total_k : p.seqlen_k, p.num_heads_kv, nb,
                    p.v_row_stride, p.v_head_stride, p.v_batch_stride, Tr::kBN))
    return false;
  const dim3 grid((p.seqlen_q + Tr::kBM - 1) / Tr::kBM, p.num_heads_q, p.batch);
  if (grid.x == 0) return true;
  kernel<<<grid, Tr::kThreads, Tr::kSmemBytes, stream>>>(p, maps);
  check_launch("flash_fwd_sm90_kernel launch");
  return true;
}

// The block-mask kernel for calls with a block mask, else the dense one on the config's tile (the
// longer one, FlashConfig::alt_tile, where this pair has one).
template <typename T, int kD, int kDv>
bool run_flash_fwd_sm90(const AttnParams& p, const FlashConfig& c, cudaStream_t stream) {
  if (p.block_mask.present()) return launch_flash_fwd_sm90<T, kD, kDv, true, false>(p, stream);
  if constexpr (kFlashSm90HasAltTile<kD, kDv>) {
    if (c.alt_tile) return launch_flash_fwd_sm90<T, kD, kDv, false, true>(p, stream);
  }
  return launch_flash_fwd_sm90<T, kD, kDv, false, false>(p, stream);
}

}  // namespace cuattn
