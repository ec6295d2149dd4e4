// latent_launch.cuh — host launcher of mla_latent_kernel (and its split combine), instantiated
// once per (dtype, latent shape) by the generated files in the build tree (cuda/sources.cmake).
#pragma once

#include "common/launch.cuh"
#include "mla/latent_attention.cuh"

namespace cuattn {

template <typename T, int kDk, int kDv, bool kSharedV, bool kFp8>
void run_mla_latent(const MlaLatentParams& p, cudaStream_t stream) {
  using Tr = LatentTraits<kDk, kDv, kSharedV, kFp8>;
  const int rows = p.num_heads_q * p.seqlen_q;
  const dim3 grid(p.num_splits, (rows + Tr::kBM - 1) / Tr::kBM, p.batch);
  auto kernel = mla_latent_kernel<T, Tr>;
  set_smem_limit(kernel, Tr::kSmem);
  kernel<<<grid, Tr::kThreads, Tr::kSmem, stream>>>(p);
  check_launch("mla_latent_kernel launch");
  if (p.num_splits > 1) {
    const size_t weights = size_t(kCombineRows) * p.num_splits * sizeof(float);
    // Within the default 48 KB of dynamic shared memory (num_splits <= kMaxDecodeSplits = 512).
    mla_latent_combine<T, kDv>
        <<<dim3((rows + kCombineRows - 1) / kCombineRows, p.batch), 32 * kCombineRows, weights, stream>>>(p);
    check_launch("mla_latent_combine launch");
  }
}

}  // namespace cuattn
