// naive.cu — the chapter's baseline: materialise S = scale * Q K^T for a whole (batch, head),
// softmax it row by row in place, then O = P V. O(Sq * Sk) memory; three plain launches with
// shared-memory tiling and fp32 arithmetic. Used only for comparisons.
#include "common/launch.cuh"
#include "common/softmax.cuh"  // warp_max, warp_sum
#include "common/types.cuh"
#include "cuattn/launch.h"

#include <math_constants.h>

namespace cuattn {
namespace {

constexpr int kTile = 16;

// S[bh, i, j] = scale * q_i . k_j, or -inf above the causal diagonal. Grid (Sk/16, Sq/16, B*H).
template <typename T>
__global__ void naive_scores(const __grid_constant__ AttnParams p, float* S) {
  __shared__ float sq[kTile][kTile + 1], sk[kTile][kTile + 1];
  const int bh = blockIdx.z, b = bh / p.num_heads_q, h = bh % p.num_heads_q;
  const int hk = h / (p.num_heads_q / p.num_heads_kv);
  const int i = blockIdx.y * kTile + threadIdx.y, j = blockIdx.x * kTile + threadIdx.x;
  const T* q = static_cast<const T*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
  const int kj = blockIdx.x * kTile + threadIdx.y;  // the k row this thread loads
  float acc = 0.f;
  for (int d0 = 0; d0 < p.head_dim; d0 += kTile) {
    const int d = d0 + threadIdx.x;
    sq[threadIdx.y][threadIdx.x] = (i < p.seqlen_q && d < p.head_dim) ? to_float(q[int64_t(i) * p.q_row_stride + d]) : 0.f;
    sk[threadIdx.y][threadIdx.x] = (kj < p.seqlen_k && d < p.head_dim) ? to_float(k[int64_t(kj) * p.k_row_stride + d]) : 0.f;
    __syncthreads();
#pragma unroll
    for (int x = 0; x < kTile; ++x) acc += sq[threadIdx.y][x] * sk[threadIdx.x][x];
    __syncthreads();
  }
  if (i < p.seqlen_q && j < p.seqlen_k) {
    const bool visible = !p.causal || j <= i + (p.seqlen_k - p.seqlen_q);
    S[(int64_t(bh) * p.seqlen_q + i) * p.seqlen_k + j] = visible ? acc * p.scale : -CUDART_INF_F;
  }
}

// In place: each row of S becomes softmax(row); rows with no visible key become 0. One warp a row.
__global__ void naive_softmax(float* S, int64_t rows, int cols) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  float* s = S + row * cols;
  float mx = -CUDART_INF_F;
  for (int j = lane; j < cols; j += 32) mx = fmaxf(mx, s[j]);
  mx = warp_max(mx);
  float sum = 0.f;
  if (mx != -CUDART_INF_F)
    for (int j = lane; j < cols; j += 32) sum += __expf(s[j] - mx);
  sum = warp_sum(sum);
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  for (int j = lane; j < cols; j += 32) s[j] = mx == -CUDART_INF_F ? 0.f : __expf(s[j] - mx) * inv;
}

// O[b, i, h, :] = P[bh, i, :] V. Grid (Dv/16, Sq/16, B*H).
template <typename T>
__global__ void naive_pv(const __grid_constant__ AttnParams p, const float* P) {
  __shared__ float sp[kTile][kTile + 1], sv[kTile][kTile + 1];
  const int bh = blockIdx.z, b = bh / p.num_heads_q, h = bh % p.num_heads_q;
  const int hk = h / (p.num_heads_q / p.num_heads_kv);
  const int i = blockIdx.y * kTile + threadIdx.y, e = blockIdx.x * kTile + threadIdx.x;
  const T* v = static_cast<const T*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
  const float* prow = P + int64_t(bh) * p.seqlen_q * p.seqlen_k;
  float acc = 0.f;
  for (int j0 = 0; j0 < p.seqlen_k; j0 += kTile) {
    const int jp = j0 + threadIdx.x, jv = j0 + threadIdx.y;
    sp[threadIdx.y][threadIdx.x] = (i < p.seqlen_q && jp < p.seqlen_k) ? prow[int64_t(i) * p.seqlen_k + jp] : 0.f;
    sv[threadIdx.y][threadIdx.x] = (jv < p.seqlen_k && e < p.head_dim_v) ? to_float(v[int64_t(jv) * p.v_row_stride + e]) : 0.f;
    __syncthreads();
#pragma unroll
    for (int x = 0; x < kTile; ++x) acc += sp[threadIdx.y][x] * sv[x][threadIdx.x];
    __syncthreads();
  }
  if (i < p.seqlen_q && e < p.head_dim_v) {
    T* o = static_cast<T*>(p.o) + b * p.o_batch_stride + int64_t(i) * p.o_row_stride + h * p.o_head_stride;
    o[e] = from_float<T>(acc);
  }
}

template <typename T>
void run_naive(const AttnParams& p, float* S, cudaStream_t s) {
  const int bh = p.batch * p.num_heads_q;
  const dim3 block(kTile, kTile);
  naive_scores<T><<<dim3(std::max((p.seqlen_k + kTile - 1) / kTile, 1), (p.seqlen_q + kTile - 1) / kTile, bh), block, 0, s>>>(p, S);
  check_launch("naive_scores launch");
  const int64_t rows = int64_t(bh) * p.seqlen_q;
  naive_softmax<<<unsigned((rows + 7) / 8), 256, 0, s>>>(S, rows, p.seqlen_k);
  check_launch("naive_softmax launch");
  naive_pv<T><<<dim3((p.head_dim_v + kTile - 1) / kTile, (p.seqlen_q + kTile - 1) / kTile, bh), block, 0, s>>>(p, S);
  check_launch("naive_pv launch");
}

}  // namespace

void kernels::naive_attention(const AttnParams& p, float* scores, Stream stream) {
  if (p.dtype == DType::bf16) run_naive<__nv_bfloat16>(p, scores, stream);
  else run_naive<__half>(p, scores, stream);
}
}  // namespace cuattn
