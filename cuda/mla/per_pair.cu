// per_pair.cu — the chapter's MLA kernel, kept as the baseline the program measures against:
// for every visible (query, key) pair it re-projects the key's latents, k = Kl[j] Kp[h] and
// v = Vl[j] Vp[h], so it costs L (D + Dv) multiply-adds a pair instead of D + Dv. The chapter's
// bugs are fixed: fp32 accumulation throughout (16-bit inputs are widened on load), and no
// fixed-size local arrays (the query, the projected row and the output accumulator live in
// dynamic shared memory sized from D, L and Dv; threads loop over them in strides).
//
// One CTA per (query, head, batch); an online softmax over the visible keys.
#include <math_constants.h>

#include "common/launch.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "cuattn/mla_params.h"

namespace cuattn {
namespace {

constexpr int kThreads = 128;

template <typename T>
__device__ __forceinline__ float ld(const void* base, int64_t i) {
  return to_float(static_cast<const T*>(base)[i]);
}

// Sum over the CTA (every thread gets it); `red` holds kThreads / 32 floats.
__device__ __forceinline__ float block_sum(float x, float* red) {
  x = warp_sum(x);
  __syncthreads();  // the previous call's readers are done with red
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = x;
  __syncthreads();
  float s = 0.f;
  for (int w = 0; w < kThreads / 32; ++w) s += red[w];
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) mla_per_pair_kernel(const __grid_constant__ MlaPerPairParams p) {
  extern __shared__ float sm[];
  float* q = sm;                    // [D]
  float* lat = q + p.head_dim;      // [L] the key's latent row
  float* acc = lat + p.latent;      // [Dv]
  float* red = acc + p.head_dim_v;  // [kThreads / 32]
  const int i = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x;
  const int D = p.head_dim, L = p.latent, Dv = p.head_dim_v;
  for (int d = tid; d < D; d += kThreads) q[d] = ld<T>(p.q, b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2] + d);
  for (int e = tid; e < Dv; e += kThreads) acc[e] = 0.f;
  const int last = p.causal ? min(p.seqlen_k, i + p.seqlen_k - p.seqlen_q + 1) : p.seqlen_k;  // keys < last
  const int64_t kp0 = h * p.kp_stride[0], vp0 = h * p.vp_stride[0];
  float m = -CUDART_INF_F, l = 0.f;
  for (int j = 0; j < last; ++j) {
    __syncthreads();  // everyone is done with the previous latent row
    for (int x = tid; x < L; x += kThreads) lat[x] = ld<T>(p.k_latent, b * p.kl_stride[0] + j * p.kl_stride[1] + x);
    __syncthreads();
    float part = 0.f;  // sum over this thread's d of q[d] * (Kl[j] Kp[h])[d]
    for (int d = tid; d < D; d += kThreads) {
      float kd = 0.f;
      for (int x = 0; x < L; ++x) kd += lat[x] * ld<T>(p.k_proj, kp0 + x * p.kp_stride[1] + d);
      part += q[d] * kd;
    }
    const float s = block_sum(part, red) * p.scale;
    const float m_new = fmaxf(m, s);
    const float alpha = __expf(m - m_new), w = __expf(s - m_new);
    l = l * alpha + w;
    m = m_new;
    __syncthreads();
    for (int x = tid; x < L; x += kThreads) lat[x] = ld<T>(p.v_latent, b * p.vl_stride[0] + j * p.vl_stride[1] + x);
    __syncthreads();
    for (int e = tid; e < Dv; e += kThreads) {
      float ve = 0.f;
      for (int x = 0; x < L; ++x) ve += lat[x] * ld<T>(p.v_proj, vp0 + x * p.vp_stride[1] + e);
      acc[e] = acc[e] * alpha + w * ve;
    }
  }
  T* o = static_cast<T*>(p.o) + b * p.o_stride[0] + h * p.o_stride[1] + i * p.o_stride[2];
  for (int e = tid; e < Dv; e += kThreads) o[e] = from_float<T>(l > 0.f ? acc[e] / l : 0.f);
}

}  // namespace

namespace cuda {
void mla_per_pair(const MlaPerPairParams& p, CUstream_st* stream) {
  if (p.batch == 0 || p.heads == 0 || p.seqlen_q == 0) return;
  if (p.heads > 65535 || p.batch > 65535)
    throw ValueError("the per-pair MLA kernel supports at most 65535 heads and 65535 sequences");
  const size_t smem = (size_t(p.head_dim) + p.latent + p.head_dim_v + kThreads / 32) * sizeof(float);
  if (smem > 48 * 1024)
    throw ValueError("the per-pair MLA kernel keeps q, one latent row and the output row in 48 KB of "
                     "shared memory: head_dim + latent_dim + head_dim_v must be below 12000, got " +
                     std::to_string(p.head_dim + p.latent + p.head_dim_v));
  const dim3 grid(p.seqlen_q, p.heads, p.batch);
  if (p.dtype == DType::bf16) mla_per_pair_kernel<__nv_bfloat16><<<grid, kThreads, smem, stream>>>(p);
  else mla_per_pair_kernel<__half><<<grid, kThreads, smem, stream>>>(p);
  check_launch("mla_per_pair_kernel launch");
}
}  // namespace cuda
}  // namespace cuattn
