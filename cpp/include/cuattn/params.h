// cuattn/params.h — flat parameter structs shared by the CPU backend and the CUDA kernels.
//
// The host API (cuattn.h) validates TensorViews and fills these once: layouts are resolved into
// strides (bshd and bhsd become the same [b, s, h, d] indexing), the scale is folded, window bounds
// are normalised. Every pointer carries its logical shape in a comment; strides are in elements.
// Kernels take them as `const __grid_constant__` parameters.
#pragma once

#include <cstdint>

#include "cuattn/tensor.h"

#if defined(__CUDACC__)
#define CUATTN_HD __host__ __device__ __forceinline__
#else
#define CUATTN_HD inline
#endif

namespace cuattn {

// FlexAttention-style block sparsity (see python/cuattn/block_mask.py).
// For query block qb of (batch b, head h): `kv_num_blocks` partial kv blocks listed in
// `kv_indices` (per-element mask bits in `partial_bits[partial_ids[...]]`), and
// `full_kv_num_blocks` fully visible kv blocks listed in `full_kv_indices`. Blocks in neither
// list are empty and never touched.
struct BlockMaskParams {
  const int32_t* kv_num_blocks = nullptr;       // [mb, mh, n_qb]
  const int32_t* kv_indices = nullptr;          // [mb, mh, n_qb, n_kb]
  const int32_t* partial_ids = nullptr;         // [mb, mh, n_qb, n_kb]
  const int32_t* full_kv_num_blocks = nullptr;  // [mb, mh, n_qb]
  const int32_t* full_kv_indices = nullptr;     // [mb, mh, n_qb, n_kb]
  const uint32_t* partial_bits = nullptr;       // [n_partial, block_q, words_per_row]
  int64_t num_stride_b = 0, num_stride_h = 0;   // for the *_num_blocks arrays (q stride 1)
  int64_t idx_stride_b = 0, idx_stride_h = 0;   // for the index arrays (q stride n_kb, kb 1)
  int block_q = 0, block_kv = 0, words_per_row = 0;
  int n_qb = 0, n_kb = 0, n_partial = 0;
  bool present() const { return kv_num_blocks != nullptr; }
};

// Dense / varlen / masked attention.
// Dense: sequence b's rows start at b * *_batch_stride. Varlen: *_batch_stride is 0 and the rows
// of sequence b start at cu_seqlens_*[b]; seqlen_q/k are then the maxima (grid sizing only).
struct AttnParams {
  const void* q = nullptr;  // [b, sq, hq, d]
  const void* k = nullptr;  // [b, sk, hkv, d]
  const void* v = nullptr;  // [b, sk, hkv, dv]
  void* o = nullptr;        // [b, sq, hq, dv]
  float* lse = nullptr;     // [b, hq, sq] (varlen: [hq, total_q]); row stride 1; may be null
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  int64_t o_batch_stride = 0, o_row_stride = 0, o_head_stride = 0;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;
  const int32_t* cu_seqlens_q = nullptr;  // [b + 1] or null
  const int32_t* cu_seqlens_k = nullptr;  // [b + 1] or null
  const float* sinks = nullptr;           // [hq] or null
  int64_t cu_seqlens_q_stride = 1, cu_seqlens_k_stride = 1, sinks_stride = 1;
  BlockMaskParams block_mask;

  int batch = 0, num_heads_q = 0, num_heads_kv = 0;
  int seqlen_q = 0, seqlen_k = 0;  // max over sequences for varlen
  int64_t total_q = 0, total_k = 0;  // varlen: rows of the packed arrays (kernels clamp to them)
  int head_dim = 0, head_dim_v = 0;
  bool causal = false;
  int window_left = -1, window_right = -1;  // -1: unbounded
  float scale = 0.f;       // softmax scale
  float scale_log2 = 0.f;  // scale * log2(e), for exp2
  float softcap = 0.f;     // 0: off
  DType dtype = DType::f16;  // q, k, v and o
};

// Paged KV-cache attention (decode, or Sq new tokens per sequence, causal among them).
// Page p, slot t, kv head h of the K cache is at k_cache + p*k_page_stride + t*k_slot_stride +
// h*k_head_stride (NHD and HND layouts and strided views all reduce to these three strides).
// Mixed batches (cu_seqlens_q set): q, o and lse are packed, *_batch_stride 0, and sequence b's
// n_b = cu_seqlens_q[b + 1] - cu_seqlens_q[b] new tokens are rows cu_seqlens_q[b].. of them;
// seqlen_q is then the longest n_b (grid sizing only).
struct PagedParams {
  const void* q = nullptr;        // [b, sq, hq, d]; mixed: [total_q, hq, d]
  const void* k_cache = nullptr;  // [num_pages, page_size, hkv, d] via strides
  const void* v_cache = nullptr;  // [num_pages, page_size, hkv, dv] via strides
  const int32_t* block_table = nullptr;  // [b, max_blocks]
  const int32_t* seq_lens = nullptr;     // [b] tokens in the cache, new ones included
  const int32_t* cu_seqlens_q = nullptr;  // [b + 1] or null (uniform: seqlen_q rows each)
  void* o = nullptr;     // [b, sq, hq, dv]; mixed: [total_q, hq, dv]
  float* lse = nullptr;  // [b, hq, sq] (mixed: [hq, total_q]); row stride 1; may be null
  const float* sinks = nullptr;        // [hq] or null
  const float* k_scale_ptr = nullptr;  // device scalar; overrides k_scale when set
  const float* v_scale_ptr = nullptr;
  int64_t seq_lens_stride = 1, sinks_stride = 1, cu_seqlens_q_stride = 1;
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_page_stride = 0, k_slot_stride = 0, k_head_stride = 0;
  int64_t v_page_stride = 0, v_slot_stride = 0, v_head_stride = 0;
  int64_t bt_batch_stride = 0;
  int64_t o_batch_stride = 0, o_row_stride = 0, o_head_stride = 0;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;

  int batch = 0, seqlen_q = 1, num_heads_q = 0, num_heads_kv = 0;
  int64_t total_q = 0;  // mixed: rows of the packed q (kernels clamp to them)
  int head_dim = 0, head_dim_v = 0;
  int page_size = 0, num_pages = 0, max_blocks = 0;
  bool causal = true;  // token t of sq (mixed: of n_b) sees keys j <= seq_len - sq + t
  int window_left = -1, window_right = -1;
  float scale = 0.f, scale_log2 = 0.f, softcap = 0.f;
  float k_scale = 1.f, v_scale = 1.f;  // dequantisation scales for fp8 caches
  DType q_dtype = DType::f16;   // q and o
  DType kv_dtype = DType::f16;  // caches: f16, bf16, fp8_e4m3 (or f32 on the CPU)
};

// Writes T new tokens into a paged cache: token i goes to flat slot slot_mapping[i]
// (page = slot / page_size, offset = slot % page_size); negative slots are skipped.
struct AppendParams {
  const void* k_new = nullptr;  // [t, hkv, d]
  const void* v_new = nullptr;  // [t, hkv, dv]
  void* k_cache = nullptr;      // as PagedParams
  void* v_cache = nullptr;
  const int64_t* slot_mapping = nullptr;  // [t]
  int64_t slot_mapping_stride = 1;
  const float* k_scale_ptr = nullptr;
  const float* v_scale_ptr = nullptr;
  int64_t kn_row_stride = 0, kn_head_stride = 0;
  int64_t vn_row_stride = 0, vn_head_stride = 0;
  int64_t k_page_stride = 0, k_slot_stride = 0, k_head_stride = 0;
  int64_t v_page_stride = 0, v_slot_stride = 0, v_head_stride = 0;
  int num_tokens = 0, num_heads_kv = 0, head_dim = 0, head_dim_v = 0;
  int page_size = 0, num_pages = 0;
  float k_scale = 1.f, v_scale = 1.f;  // the cache stores x / scale
  DType new_dtype = DType::f16;
  DType kv_dtype = DType::f16;
};

// Merges two partial attention results over disjoint key sets:
// out = (exp(lse_a) o_a + exp(lse_b) o_b) / (exp(lse_a) + exp(lse_b)), lse = log of the sum.
struct MergeParams {
  const void* o_a = nullptr;   // [b, s, h, d]
  const float* lse_a = nullptr;  // [b, h, s]
  const void* o_b = nullptr;   // [b, s, h, d]
  const float* lse_b = nullptr;  // [b, h, s]
  void* o = nullptr;           // [b, s, h, d]
  float* lse = nullptr;        // [b, h, s]; may be null
  int64_t oa_stride[3] = {}, ob_stride[3] = {}, o_stride[3] = {};  // b, s, h
  int64_t la_stride[3] = {}, lb_stride[3] = {}, l_stride[3] = {};  // b, h, s
  int batch = 0, seqlen = 0, num_heads = 0, head_dim = 0;
  DType dtype = DType::f16;
};

// Which kernel variant a call launches: chosen on the host by one function of shapes and device
// (choose_flash_config / choose_decode_config), stored in a DecodePlan, taken by the launchers.
// A variant the call cannot take (no sm_90a code on the device, a page size TMA cannot tile,
// tensors TMA cannot describe) falls back to the portable kernel.
struct FlashConfig {
  int head_dim = 0, head_dim_v = 0;  // the instantiation (>= the call's, padded)
  bool hopper = false;               // the sm_90a kernel (else the portable mma.sync one)
  bool alt_tile = false;             // its longer key tile where the pair has one (D128: 176, D192: 112, D256: 80; default at D192 / D256)
};

struct DecodeConfig {
  bool tma = true;           // TMA-fed ring (else row copies on sm90 / cp.async on sm80)
  bool wide = false;         // the 8-warp TMA kernel (rows of at most 128 bytes)
  bool persistent = false;   // persistent CTAs (fp8 caches, D <= 128) for grids of several waves
  int persistent_ctas = 0;   // > 0: at most this many persistent CTAs (and persistent on any grid
                             // of more units); 0: one wave
  int page_order_after = 0;  // > 0: a CTA visits its pages grouped by address after this many tiles
  bool list = false;         // the work-list schedule: a persistent grid takes balanced key ranges of
                             // every (sequence, kv head) from one list built on the device
  int list_ctas = 0;         // > 0: at most this many CTAs for the list (else the occupancy's)
  int list_granule = 0;      // > 0: keys a position of the list stands for (else kListGranule)
  int list_overhead = 0;     // > 0: positions a unit's set-up is worth (else kListOverhead)
  bool drain = false;        // persistent kernels: merge scratch in the ring (SplitWorkspace::scratch_in_ring)
  bool pdl = true;           // programmatic dependent launch (sm90)
  int sm_count = 1;          // of the device (a persistent grid is one wave)
};

// Is key j visible from query i of a sequence with offset o = sk - sq (dense masks only)?
// Shared by the CPU backend and the CUDA mask policies, so both read the same definition.
CUATTN_HD constexpr bool mask_visible(int64_t i, int64_t j, int64_t offset, bool causal, int left,
                                   int right) {
  const int64_t diag = i + offset;
  if (causal && j > diag) return false;
  if (left >= 0 && j < diag - left) return false;
  if (right >= 0 && j > diag + right) return false;
  return true;
}

}  // namespace cuattn
