// cuattn/mla_params.h — parameters of the multi-head latent attention kernels (cuda/mla/) and
// their launch functions. The host API (mla_decode, mla_attention) fills these; the kernels see
// nothing else of the host code.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuattn/params.h"
#include "cuattn/worklist.h"

struct CUstream_st;

namespace cuattn {

// The kernel of an MLA decode call on the work list: the portable one (mma.sync, sm80+) or the
// sm_90a one (TMA, wgmma; its unit size picks the 64-row or the narrow kernel).
enum class MlaListKernel { portable, sm90 };

// Latent attention: every query head attends to one shared kv "head" per sequence.
// Query rows: the Hq heads of Sq new tokens, packed as row r = t * Hq + h. Token t sees keys
// j <= seq_len - Sq + t when causal. K is the first head_dim columns of each cache entry; V is
// the first head_dim_v columns of the same entry (v_cache == nullptr: DeepSeek's 576-wide latent,
// V = its first 512 columns) or of a separate cache with the same paging.
// Key j of sequence b lives in page block_table[b][j / page_size], slot j % page_size; with
// block_table == nullptr page b holds the whole sequence (a contiguous [B, Sk, *] latent seen as
// one page of Sk slots a sequence), and seq_lens == nullptr means every sequence has page_size keys.
struct MlaLatentParams {
  const void* q = nullptr;        // [b, sq, hq, head_dim] (q_dtype)
  const void* k_cache = nullptr;  // [num_pages, page_size, >= head_dim] via strides
  const void* v_cache = nullptr;  // [num_pages, page_size, >= head_dim_v] via strides, or null
  const int32_t* block_table = nullptr;  // [b, max_blocks] or null
  const int32_t* seq_lens = nullptr;     // [b] or null
  void* o = nullptr;                     // [b, sq, hq, head_dim_v] (q_dtype)
  float* lse = nullptr;                  // [b, hq, sq]; may be null
  const float* k_scale_ptr = nullptr;    // fp8 caches: device scalar, overrides k_scale
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_page_stride = 0, k_slot_stride = 0;
  int64_t v_page_stride = 0, v_slot_stride = 0;
  int64_t bt_batch_stride = 0;
  int64_t o_batch_stride = 0, o_row_stride = 0, o_head_stride = 0;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;

  int batch = 0, seqlen_q = 1, num_heads_q = 0;
  int head_dim = 0, head_dim_v = 0;
  int page_size = 0, max_blocks = 0, num_pages = 0;  // page ids are clamped to [0, num_pages)
  bool causal = true;
  float scale = 0.f;    // softmax scale (the fp8 dequantisation scale is applied on top)
  float k_scale = 1.f;  // fp8 caches: stored = x / k_scale (K and V share the cache and scale)
  DType q_dtype = DType::f16;   // q and o
  DType kv_dtype = DType::f16;  // q_dtype or fp8_e4m3 (fp8 only with v_cache == nullptr)

  // Split-KV: sequence b's keys are cut into chunks of chunk_tokens (a multiple of 32), one CTA
  // per (chunk, 64-row tile); with num_splits > 1 each writes its normalised partial output and
  // LSE to the workspace and mla_latent_combine merges them.
  int num_splits = 1, chunk_tokens = 0;
  float* part_o = nullptr;    // [b, num_splits, hq * sq, head_dim_v]
  float* part_lse = nullptr;  // [b, num_splits, hq * sq]

  // mla_decode on the decode work list (mla_list_decode): units of list.s.rows query rows (the
  // portable kernel: 16; the sm_90a kernels: 64, or 16 / 32 for the narrow one), granules of 64
  // keys; the host sets list.s (all but ctas) and the arrays' storage (seq_start [batch + 1],
  // seq_lens [batch]), which the launcher fills on the device from seq_lens. Split pieces leave
  // their rows in part_o [2 ctas slots, rows, 512] and part_lse [2 ctas slots, rows]
  // (partial_slot).
  WorkList list;
  MlaListKernel list_kernel = MlaListKernel::portable;
};

// Batched matrix product on the tensor cores, fp32 accumulation, C in the inputs' dtype:
// C[z] = A[z] B[z] for z = (z1, z2) in [batch1, batch2), A [M, K] row-major, B [K, N] either
// row-major (b_n_major false: element (k, n) at k * ldb + n) or column-major (b_n_major true:
// element (k, n) at n * ldb + k), C [M, N] row-major. Pointers advance by z1 * *_stride1 +
// z2 * *_stride2 elements. Leading dims and strides, and the contiguous dims (K of A, N or K of
// B, N of C), must be multiples of 8 elements.
struct GemmParams {
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t a_stride1 = 0, a_stride2 = 0, b_stride1 = 0, b_stride2 = 0, c_stride1 = 0, c_stride2 = 0;
  int m = 0, n = 0, k = 0, batch1 = 1, batch2 = 1;
  bool b_n_major = false;
  DType dtype = DType::f16;
};

// The chapter's per-pair MLA (the baseline the program compares against): for every visible
// (query, key) pair it re-projects the key's latents through Kp[h] and Vp[h]. Same tensors as
// MlaArgs, bhsd q/out, fp32 accumulation.
struct MlaPerPairParams {
  const void* q = nullptr;         // [b, h, sq, d]
  const void* k_latent = nullptr;  // [b, sk, l]
  const void* v_latent = nullptr;  // [b, sk, l]
  const void* k_proj = nullptr;    // [h, l, d]
  const void* v_proj = nullptr;    // [h, l, dv]
  void* o = nullptr;               // [b, h, sq, dv]
  int64_t q_stride[3] = {}, o_stride[3] = {};                      // b, h, s
  int64_t kl_stride[2] = {}, vl_stride[2] = {};                    // b, s
  int64_t kp_stride[2] = {}, vp_stride[2] = {};                    // h, l
  int batch = 0, heads = 0, seqlen_q = 0, seqlen_k = 0, latent = 0, head_dim = 0, head_dim_v = 0;
  bool causal = true;
  float scale = 0.f;
  DType dtype = DType::f16;
};

namespace cuda {
// Defined in cuda/mla/ when built with CUDA. All run on `stream`, allocate nothing and never sync.
bool mla_latent_supported(DType q, DType kv, int head_dim, int head_dim_v, bool shared_v);
void mla_latent_attention(const MlaLatentParams& p, CUstream_st* stream);
// DeepSeek MLA decode (576/512, v_cache null, seq_lens set) on the work list (p.list) with
// p.list_kernel: the portable kernel (units of p.list.s.rows = 16 query rows) or an sm_90a one
// (64 rows; 16 or 32: the narrow one, for calls of at most 32 query rows), where
// mla_hopper_ready says it can run the call on the current device.
void mla_list_decode(const MlaLatentParams& p, CUstream_st* stream);
bool mla_hopper_ready(const MlaLatentParams& p, bool narrow);
void gemm(const GemmParams& p, CUstream_st* stream);
void mla_per_pair(const MlaPerPairParams& p, CUstream_st* stream);
int mla_sm_count();  // SMs of the current device (cached)
}  // namespace cuda

}  // namespace cuattn
