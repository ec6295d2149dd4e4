// dispatch.cu — kernels::attention: the flash instantiation the host chose (FlashConfig: the
// instantiated (head dim, v head dim) pair that covers the call with the least padding), run by
// the Hopper kernel (flash_fwd_sm90.cuh) where the config asks for it and the call allows it, by
// the portable one otherwise.
#include "common/dispatch.cuh"
#include "common/types.cuh"
#include "cuattn/launch.h"

namespace cuattn {

// Defined (explicitly instantiated) in the generated flash_fwd_*.cu files.
template <typename T, int kD, int kDv>
void run_flash_fwd(const AttnParams& p, cudaStream_t stream);
// Defined in the generated flash_fwd_sm90_*.cu files; false when the call cannot take that path.
template <typename T, int kD, int kDv>
bool run_flash_fwd_sm90(const AttnParams& p, const FlashConfig& c, cudaStream_t stream);

namespace {
template <typename T>
void run(const AttnParams& p, const FlashConfig& c, cudaStream_t s) {
  dispatch_flash_dims(c.head_dim, c.head_dim_v, [&](auto d, auto dv) {
    constexpr int kD = decltype(d)::value, kDv = decltype(dv)::value;
    if (c.hopper && run_flash_fwd_sm90<T, kD, kDv>(p, c, s)) return;
    run_flash_fwd<T, kD, kDv>(p, s);
  });
}
}  // namespace

void kernels::attention(const AttnParams& p, const FlashConfig& c, Stream stream) {
  if (p.dtype == DType::bf16) run<__nv_bfloat16>(p, c, stream);
  else run<__half>(p, c, stream);
}

}  // namespace cuattn
