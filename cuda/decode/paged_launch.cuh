// paged_launch.cuh — host launcher of paged_decode_kernel, instantiated once per (q dtype,
// head dim) by the generated files in the build tree; each instance holds the 16-bit-cache and
// the fp8-cache kernels.
#pragma once

#include "common/launch.cuh"
#include "cuattn/cuattn.h"
#include "decode/paged_decode.cuh"

namespace cuattn {

// Split decision + workspace of one call (cuda/decode/dispatch.cu): from the plan when given,
// else from shapes alone, with a per-(device, stream) cached workspace. No host sync either way.
SplitWorkspace decode_workspace(const PagedParams& p, const DecodePlan* plan, int row_chunks,
                                cudaStream_t stream);

template <typename T, int kD>
void run_paged(const PagedParams& p, const DecodePlan* plan, cudaStream_t stream) {
  using Tr = PagedTraits<kD>;
  const int group = p.num_heads_q / p.num_heads_kv;
  const int row_chunks = (group * p.seqlen_q + Tr::kRows - 1) / Tr::kRows;
  const SplitWorkspace ws = decode_workspace(p, plan, row_chunks, stream);
  const dim3 grid(ws.max_splits, p.num_heads_kv * row_chunks, p.batch);
  const bool fp8 = p.kv_dtype == DType::fp8_e4m3;
  const size_t ring = size_t(Tr::kStages) * 2 * Tr::kBN * (fp8 ? (kD + 16) : Tr::kStride * 2);
  const size_t wide = fp8 ? 2 * Tr::kTileElems * sizeof(T) : 0;
  const size_t merge = (2 * 4 * 16 + 4 * 16 * kD) * sizeof(float);
  const size_t smem = std::max(ring + wide, merge);
  if (fp8) {
    auto kernel = paged_decode_kernel<T, kD, true>;
    set_smem_limit(kernel, smem);
    kernel<<<grid, Tr::kBlock, smem, stream>>>(p, ws);
  } else {
    auto kernel = paged_decode_kernel<T, kD, false>;
    set_smem_limit(kernel, smem);
    kernel<<<grid, Tr::kBlock, smem, stream>>>(p, ws);
  }
  check_launch("paged_decode_kernel launch");
}

}  // namespace cuattn
