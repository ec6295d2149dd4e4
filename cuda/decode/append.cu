// append.cu — append_paged_kv: writes new tokens into a paged cache through slot_mapping.
// One thread per 8 elements of a (token, head) row: a 16-byte load, then a 16-byte store into a
// 16-bit cache or an 8-byte store of quantised values into an fp8 cache. Negative slots are
// skipped; slots past the cache are skipped too (clamping, as everywhere on the GPU).
#include "common/launch.cuh"
#include "common/types.cuh"
#include "cuattn/launch.h"

namespace cuattn {
namespace {

template <typename T, bool kFp8>
__global__ void append_kernel(const __grid_constant__ AppendParams p) {
  const int chunks_k = p.head_dim / 8, chunks_v = p.head_dim_v / 8;
  const int per_head = chunks_k + chunks_v;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t total = int64_t(p.num_tokens) * p.num_heads_kv * per_head;
  if (idx >= total) return;
  const int c = int(idx % per_head);
  const int h = int(idx / per_head % p.num_heads_kv);
  const int64_t i = idx / per_head / p.num_heads_kv;
  const int64_t slot = p.slot_mapping[i];
  if (slot < 0 || slot >= int64_t(p.num_pages) * p.page_size) return;
  const int64_t page = slot / p.page_size, off = slot % p.page_size;
  const bool is_k = c < chunks_k;
  const int d = (is_k ? c : c - chunks_k) * 8;
  const T* src = static_cast<const T*>(is_k ? p.k_new : p.v_new) +
                 i * (is_k ? p.kn_row_stride : p.vn_row_stride) + h * (is_k ? p.kn_head_stride : p.vn_head_stride) + d;
  const int64_t dst_off = page * (is_k ? p.k_page_stride : p.v_page_stride) +
                          off * (is_k ? p.k_slot_stride : p.v_slot_stride) +
                          h * (is_k ? p.k_head_stride : p.v_head_stride) + d;
  const uint4 x = *reinterpret_cast<const uint4*>(src);
  const float scale = is_k ? (p.k_scale_ptr ? *p.k_scale_ptr : p.k_scale) : (p.v_scale_ptr ? *p.v_scale_ptr : p.v_scale);
  if constexpr (kFp8) {
    const float inv = 1.f / scale;
    const uint32_t w[4] = {x.x, x.y, x.z, x.w};
    uint32_t packed[2];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = unpack2<T>(w[k]);
      const __nv_fp8x2_storage_t q = __nv_cvt_float2_to_fp8x2(make_float2(f.x * inv, f.y * inv), __NV_SATFINITE, __NV_E4M3);
      if (k % 2 == 0) packed[k / 2] = q;
      else packed[k / 2] |= uint32_t(q) << 16;
    }
    uint8_t* dst = static_cast<uint8_t*>(is_k ? p.k_cache : p.v_cache) + dst_off;
    *reinterpret_cast<uint2*>(dst) = make_uint2(packed[0], packed[1]);
  } else {
    T* dst = static_cast<T*>(is_k ? p.k_cache : p.v_cache) + dst_off;
    if (scale == 1.f) {
      *reinterpret_cast<uint4*>(dst) = x;
    } else {
      const uint32_t w[4] = {x.x, x.y, x.z, x.w};
      uint32_t o[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 f = unpack2<T>(w[k]);
        o[k] = pack2<T>(f.x / scale, f.y / scale);
      }
      *reinterpret_cast<uint4*>(dst) = make_uint4(o[0], o[1], o[2], o[3]);
    }
  }
}

}  // namespace

// Head dims are multiples of 8 and the cache dtype is k_new's or fp8 (the host checked).
void kernels::append_paged_kv(const AppendParams& p, Stream stream) {
  const int64_t total = int64_t(p.num_tokens) * p.num_heads_kv * (p.head_dim + p.head_dim_v) / 8;
  const unsigned blocks = unsigned((total + 255) / 256);
  const bool fp8 = p.kv_dtype == DType::fp8_e4m3;
  if (p.new_dtype == DType::bf16) {
    if (fp8) append_kernel<__nv_bfloat16, true><<<blocks, 256, 0, stream>>>(p);
    else append_kernel<__nv_bfloat16, false><<<blocks, 256, 0, stream>>>(p);
  } else {
    if (fp8) append_kernel<__half, true><<<blocks, 256, 0, stream>>>(p);
    else append_kernel<__half, false><<<blocks, 256, 0, stream>>>(p);
  }
  check_launch("append_kernel launch");
}
}  // namespace cuattn
