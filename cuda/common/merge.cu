// merge.cu — merge_states: two partial attention results over disjoint key sets become one,
// through the shared LSE combine (softmax.cuh). One warp per (b, s, h) row, 8 values a lane.
#include "common/launch.cuh"
#include "common/softmax.cuh"
#include "common/types.cuh"
#include "cuattn/launch.h"

namespace cuattn {
namespace {

template <typename T>
__global__ void merge_states_kernel(const __grid_constant__ MergeParams p) {
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int64_t rows = int64_t(p.batch) * p.seqlen * p.num_heads;
  if (row >= rows) return;
  const int h = int(row % p.num_heads), s = int(row / p.num_heads % p.seqlen), b = int(row / p.num_heads / p.seqlen);
  const float lse[2] = {p.lse_a[b * p.la_stride[0] + h * p.la_stride[1] + s * p.la_stride[2]],
                        p.lse_b[b * p.lb_stride[0] + h * p.lb_stride[1] + s * p.lb_stride[2]]};
  const float mx = fmaxf(lse[0], lse[1]);
  float w[2] = {combine_weight(lse[0], mx), combine_weight(lse[1], mx)};
  const float sum = w[0] + w[1];
  const float merged = combined_lse(mx, sum);
  if (sum > 0.f) w[0] /= sum, w[1] /= sum;
  const T* oa = static_cast<const T*>(p.o_a) + b * p.oa_stride[0] + s * p.oa_stride[1] + h * p.oa_stride[2];
  const T* ob = static_cast<const T*>(p.o_b) + b * p.ob_stride[0] + s * p.ob_stride[1] + h * p.ob_stride[2];
  T* o = static_cast<T*>(p.o) + b * p.o_stride[0] + s * p.o_stride[1] + h * p.o_stride[2];
  for (int d = lane; d < p.head_dim; d += 32) {
    // A split with weight 0 contributes nothing, even if its output holds garbage.
    float x = 0.f;
    if (w[0] > 0.f) x += w[0] * to_float(oa[d]);
    if (w[1] > 0.f) x += w[1] * to_float(ob[d]);
    o[d] = from_float<T>(x);
  }
  if (p.lse != nullptr && lane == 0) p.lse[b * p.l_stride[0] + h * p.l_stride[1] + s * p.l_stride[2]] = merged;
}

}  // namespace

void kernels::merge_states(const MergeParams& p, Stream stream) {
  const int64_t rows = int64_t(p.batch) * p.seqlen * p.num_heads;
  if (p.dtype == DType::bf16)
    merge_states_kernel<__nv_bfloat16><<<unsigned((rows + 7) / 8), 256, 0, stream>>>(p);
  else
    merge_states_kernel<__half><<<unsigned((rows + 7) / 8), 256, 0, stream>>>(p);
  check_launch("merge_states_kernel launch");
}
}  // namespace cuattn
