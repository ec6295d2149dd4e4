// dispatch.cu — latent attention: which instantiation runs a call (cuda/mla/latent_launch.cuh).
#include "common/launch.cuh"
#include "common/types.cuh"
#include "cuattn/mla_params.h"

namespace cuattn {

template <typename T, int kDk, int kDv, bool kSharedV, bool kFp8>
void run_mla_latent(const MlaLatentParams& p, cudaStream_t stream);
template <typename T>
void run_mla_list(const MlaLatentParams& p, cudaStream_t stream);
template <typename T>
bool mla_sm90_ready(const MlaLatentParams& p, bool narrow);

namespace {

// The absorbed form's latent width L runs on the smallest instantiated width >= L (zero-filled).
int padded_latent(int l) {
  for (int w : {64, 128, 256, 512})
    if (l <= w) return w;
  return 0;
}

template <typename T>
void run(const MlaLatentParams& p, cudaStream_t s) {
  if (p.v_cache == nullptr) {
    if (p.kv_dtype == DType::fp8_e4m3) return run_mla_latent<T, 576, 512, true, true>(p, s);
    return run_mla_latent<T, 576, 512, true, false>(p, s);
  }
  switch (padded_latent(p.head_dim)) {
    case 64: return run_mla_latent<T, 64, 64, false, false>(p, s);
    case 128: return run_mla_latent<T, 128, 128, false, false>(p, s);
    case 256: return run_mla_latent<T, 256, 256, false, false>(p, s);
    default: return run_mla_latent<T, 512, 512, false, false>(p, s);
  }
}

}  // namespace

namespace cuda {

bool mla_latent_supported(DType q, DType kv, int head_dim, int head_dim_v, bool shared_v) {
  if (q != DType::f16 && q != DType::bf16) return false;
  if (shared_v) return (kv == q || kv == DType::fp8_e4m3) && head_dim == 576 && head_dim_v == 512;
  return kv == q && head_dim == head_dim_v && head_dim % 8 == 0 && padded_latent(head_dim) > 0;
}

void mla_latent_attention(const MlaLatentParams& p, CUstream_st* stream) {
  if (p.batch == 0 || p.num_heads_q == 0 || p.seqlen_q == 0) return;
  if (p.batch > 65535) throw ValueError("the GPU latent-attention kernel supports at most 65535 sequences");
  if (p.q_dtype == DType::bf16) run<__nv_bfloat16>(p, stream);
  else run<__half>(p, stream);
}

void mla_list_decode(const MlaLatentParams& p, CUstream_st* stream) {
  if (p.batch == 0 || p.num_heads_q == 0 || p.seqlen_q == 0) return;
  if (p.batch > 65535) throw ValueError("the GPU latent-attention kernel supports at most 65535 sequences");
  if (p.q_dtype == DType::bf16) run_mla_list<__nv_bfloat16>(p, stream);
  else run_mla_list<__half>(p, stream);
}

bool mla_hopper_ready(const MlaLatentParams& p, bool narrow) {
  if (p.q_dtype == DType::bf16) return mla_sm90_ready<__nv_bfloat16>(p, narrow);
  return p.q_dtype == DType::f16 && mla_sm90_ready<__half>(p, narrow);
}

int mla_sm_count() {
  return once_per_device<int>(nullptr, [](int dev) {
    int n = 0;
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    return n;
  });
}

}  // namespace cuda
}  // namespace cuattn
