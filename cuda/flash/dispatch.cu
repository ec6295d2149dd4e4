// dispatch.cu — picks the flash kernel instantiation for a call: the instantiated
// (head dim, v head dim) pair that covers the request with the least padding, run by the Hopper
// kernel (flash_fwd_sm90.cuh) where it applies and by the portable one otherwise.
// CUATTN_FLASH_PORTABLE=1 in the environment forces the portable kernel (for tests and
// comparisons on Hopper).
#include <cstdlib>

#include "backend.h"
#include "common/launch.cuh"
#include "common/types.cuh"

namespace cuattn {

// Defined (explicitly instantiated) in the generated flash_fwd_*.cu files.
template <typename T, int kD, int kDv>
void run_flash_fwd(const AttnParams& p, cudaStream_t stream);
// Defined in the generated flash_fwd_sm90_*.cu files; false when the call cannot take that path.
template <typename T, int kD>
bool run_flash_fwd_sm90(const AttnParams& p, cudaStream_t stream);

namespace {

struct HeadDims {
  int d, dv;
};

constexpr HeadDims kFlashDims[] = {
#if CUATTN_HDIM_64
    {64, 64},
#endif
#if CUATTN_HDIM_96
    {96, 96},
#endif
#if CUATTN_HDIM_128
    {128, 128},
#endif
#if CUATTN_HDIM_192
    {192, 128},
    {192, 192},
#endif
#if CUATTN_HDIM_256
    {256, 256},
#endif
    {0, 0}};

bool pick(int d, int dv, HeadDims& out) {
  bool found = false;
  for (const HeadDims& k : kFlashDims)
    if (k.d >= d && k.dv >= dv && k.d > 0 && (!found || k.d + k.dv < out.d + out.dv)) out = k, found = true;
  return found;
}

bool portable_only() {
  static const bool forced = [] {
    const char* e = std::getenv("CUATTN_FLASH_PORTABLE");
    return e != nullptr && e[0] != '\0' && e[0] != '0';
  }();
  return forced;
}

template <typename T>
void run(const AttnParams& p, HeadDims k, cudaStream_t s) {
  switch (k.d * 1000 + k.dv) {
#if CUATTN_HDIM_64
    case 64064:
      if (!portable_only() && run_flash_fwd_sm90<T, 64>(p, s)) return;
      return run_flash_fwd<T, 64, 64>(p, s);
#endif
#if CUATTN_HDIM_96
    case 96096: return run_flash_fwd<T, 96, 96>(p, s);
#endif
#if CUATTN_HDIM_128
    case 128128:
      if (!portable_only() && run_flash_fwd_sm90<T, 128>(p, s)) return;
      return run_flash_fwd<T, 128, 128>(p, s);
#endif
#if CUATTN_HDIM_192
    case 192128: return run_flash_fwd<T, 192, 128>(p, s);
    case 192192: return run_flash_fwd<T, 192, 192>(p, s);
#endif
#if CUATTN_HDIM_256
    case 256256: return run_flash_fwd<T, 256, 256>(p, s);
#endif
    default: break;
  }
  throw ValueError("no flash kernel for head_dim " + std::to_string(p.head_dim));
}

}  // namespace

namespace cuda {

bool attention_supported(DType t, int d, int dv) {
  HeadDims k{};
  return (t == DType::f16 || t == DType::bf16) && d % 8 == 0 && dv % 8 == 0 && pick(d, dv, k);
}

void attention(const AttnParams& p, Stream stream) {
  if (p.batch > 65535 || p.num_heads_q > 65535)
    throw ValueError("the GPU kernel supports at most 65535 sequences and 65535 heads, got batch " +
                     std::to_string(p.batch) + ", heads " + std::to_string(p.num_heads_q));
  HeadDims k{};
  if (!pick(p.head_dim, p.head_dim_v, k))
    throw ValueError("no GPU kernel for head_dim " + std::to_string(p.head_dim) + " / " +
                     std::to_string(p.head_dim_v) + " in this build");
  if (p.dtype == DType::bf16) run<__nv_bfloat16>(p, k, stream);
  else run<__half>(p, k, stream);
}

}  // namespace cuda
}  // namespace cuattn
