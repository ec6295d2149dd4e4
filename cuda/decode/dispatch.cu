// dispatch.cu — kernels::paged_attention: the paged decode instantiation for the call's q dtype
// and head dim, launched as the host's DecodeConfig asks (decode/paged/launch.cuh).
#include "common/dispatch.cuh"
#include "common/types.cuh"
#include "cuattn/launch.h"

namespace cuattn {

// Defined (explicitly instantiated) in the generated paged_*.cu files.
template <typename T, int kD>
void run_paged(const PagedParams& p, const DecodeConfig& c, const SplitWorkspace& ws, cudaStream_t stream);

namespace {
template <typename T>
void run(const PagedParams& p, const DecodeConfig& c, const SplitWorkspace& ws, cudaStream_t s) {
  dispatch_head_dim<kPagedHeadDims>(p.head_dim, [&](auto d) { run_paged<T, decltype(d)::value>(p, c, ws, s); });
}
}  // namespace

void kernels::paged_attention(const PagedParams& p, const DecodeConfig& c, const SplitWorkspace& ws, Stream stream) {
  if (p.q_dtype == DType::bf16) run<__nv_bfloat16>(p, c, ws, stream);
  else run<__half>(p, c, ws, stream);
}

}  // namespace cuattn
