// cuattn/cuattn.h — the public C++ API. No Python here: the bindings and the standalone programs
// both call these functions.
//
// Every function validates its arguments (dtype, shape, strides, device; CPU inputs always, and
// GPU index/length contents only where `check` asks for it), then runs on the device its tensors
// live on: CPU tensors on the CPU backend (threads over tiles), CUDA tensors on the GPU on
// `stream` (no host sync, no allocation unless the doc comment says so). Errors are thrown as
// cuattn::ValueError / TypeError / CudaError with the bad value in the message.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cuattn/params.h"
#include "cuattn/tensor.h"

struct CUstream_st;

namespace cuattn {

using Stream = CUstream_st*;  // == cudaStream_t; nullptr is the legacy default stream

enum class Layout { bshd, bhsd };
enum class KVLayout { NHD, HND };

Layout parse_layout(const std::string& s);      // "bshd" | "bhsd", else ValueError
KVLayout parse_kv_layout(const std::string& s);  // "NHD" | "HND", else ValueError

// Threads of the CPU backend (n >= 1, else ValueError). The default is OpenMP's (which follows
// OMP_NUM_THREADS), or the number of hardware threads in a build without OpenMP.
void set_num_threads(int n);
int get_num_threads();

// ---------------------------------------------------------------------------------------------
// Dense / varlen / block-sparse attention.
struct BlockMaskArgs {
  TensorView kv_num_blocks;       // int32 [mb, mh, n_qb]   (mb in {1, B}, mh in {1, Hq})
  TensorView kv_indices;          // int32 [mb, mh, n_qb, n_kb]
  TensorView partial_ids;         // int32 [mb, mh, n_qb, n_kb]
  TensorView full_kv_num_blocks;  // int32 [mb, mh, n_qb]
  TensorView full_kv_indices;     // int32 [mb, mh, n_qb, n_kb]
  TensorView partial_bits;        // uint32 [n_partial, block_q, ceil(block_kv / 32)]
  int block_q = 0, block_kv = 0;
  int64_t q_len = 0, kv_len = 0;  // the lengths the mask was built for
  bool present() const { return kv_num_blocks.present(); }
};

struct AttentionArgs {
  TensorView q, k, v;  // bshd: [B, S, H, D]; bhsd: [B, H, S, D]; varlen: [T, H, D]
  TensorView out;      // like q, last dim Dv
  TensorView lse;      // optional float32 [B, Hq, Sq]; varlen [Hq, total_q]
  TensorView cu_seqlens_q, cu_seqlens_k;  // optional int32 [n + 1] (varlen)
  TensorView sinks;                       // optional float32 [Hq]
  BlockMaskArgs block_mask;               // optional
  int64_t max_seqlen_q = -1, max_seqlen_k = -1;  // required when cu_seqlens live on the GPU
  bool causal = false;
  int64_t window_left = -1, window_right = -1;  // -1: unbounded
  double scale = -1;                            // < 0: 1/sqrt(D)
  double softcap = 0;
  Layout layout = Layout::bshd;
  bool check = false;  // GPU: validate cu_seqlens contents (one sync)
  // Internal (tests and benchmarks): forces a kernel variant over the chosen one, "portable=1"
  // (the mma.sync kernel on Hopper too). Empty: the default choice.
  std::string variant;
};
void attention(const AttentionArgs& a, Stream stream = nullptr);

// Materialises the [Sq, Sk] score matrix (O(S^2) memory): the baseline flash attention avoids.
// On the GPU it allocates B*H*Sq*Sk floats of workspace with cudaMallocAsync on `stream`.
struct NaiveArgs {
  TensorView q, k, v, out;  // as AttentionArgs (dense only)
  bool causal = false;
  double scale = -1;
  Layout layout = Layout::bshd;
};
void naive_attention(const NaiveArgs& a, Stream stream = nullptr);

// out = merge of two partial results over disjoint key sets. o: [B, S, H, D] (bshd) or
// [B, H, S, D] (bhsd); lse [B, H, S]. Both lse -inf -> out 0, lse -inf.
struct MergeArgs {
  TensorView o_a, lse_a, o_b, lse_b, out, lse_out;  // lse_out optional
  Layout layout = Layout::bshd;
};
void merge_states(const MergeArgs& a, Stream stream = nullptr);

// ---------------------------------------------------------------------------------------------
// Paged KV cache.
struct DecodePlan;

struct PagedArgs {
  TensorView q;                 // [B, Hq, D] or [B, Sq, Hq, D]; mixed: [total_q, Hq, D]
  TensorView k_cache, v_cache;  // NHD [N, bs, Hkv, D] or HND [N, Hkv, bs, D]; fp8 allowed
  TensorView block_table;       // int32 [B, max_blocks]
  TensorView seq_lens;          // int32 [B]
  TensorView out;               // like q, last dim Dv
  TensorView lse;               // optional float32 [B, Hq] or [B, Hq, Sq]; mixed: [Hq, total_q]
  // Mixed batches (chunked prefill beside decodes): optional int32 [B + 1], sequence b's new
  // tokens are q rows cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1, the last ones of its cache.
  // max_seqlen_q (>= every sequence's count) is required when it lives on the GPU (the GPU runs
  // them on the paged kernel's work list).
  TensorView cu_seqlens_q;
  int64_t max_seqlen_q = -1;
  TensorView sinks;             // optional float32 [Hq]
  TensorView k_scale_t, v_scale_t;  // optional float32 device scalars (override k/v_scale)
  double k_scale = 1, v_scale = 1;
  double scale = -1, softcap = 0;
  int64_t window_left = -1, window_right = -1;
  KVLayout kv_layout = KVLayout::NHD;
  bool causal = true;
  bool check = false;                 // GPU: validate block ids and lengths (one sync)
  const DecodePlan* plan = nullptr;   // optional; splits from shapes when null (not with
                                      // cu_seqlens_q: a plan fixes one q_len for every sequence)
  // Internal (tests and benchmarks): forces kernel variants over the chosen ones, a comma list
  // of tma=0|1, wide=0|1, persistent=0|1, persistent_ctas=N, page_order=N, pdl=0|1 and (calls
  // without a plan) ctas_per_sm=N. Empty: the default choice.
  std::string variant;
};
void paged_attention(const PagedArgs& a, Stream stream = nullptr);

struct AppendArgs {
  TensorView k_new, v_new;      // [T, Hkv, D]
  TensorView k_cache, v_cache;  // as PagedArgs
  TensorView slot_mapping;      // int64 [T]; negative = skip
  TensorView k_scale_t, v_scale_t;
  double k_scale = 1, v_scale = 1;
  KVLayout kv_layout = KVLayout::NHD;
  bool check = false;
};
void append_paged_kv(const AppendArgs& a, Stream stream = nullptr);

// DeepSeek-V3 MLA decode over a paged latent cache: kv_cache [N, bs, 576] or [N, bs, 1, 576],
// V = the first head_dim_v (512) columns of each entry. q [B, Sq, Hq, 576], out [B, Sq, Hq, 512],
// lse [B, Hq, Sq]. An fp8 e4m3 cache stores x / kv_scale (kv_scale_t: a float32 device scalar
// that overrides kv_scale). On the GPU: one latent-attention kernel (cuda/mla/), split-KV with
// the plan's workspace, or without a plan a stream-ordered temporary (cudaMallocAsync).
struct MlaDecodeArgs {
  TensorView q, kv_cache, block_table, seq_lens, out, lse;
  TensorView kv_scale_t;  // optional
  double kv_scale = 1;
  double scale = 0;  // required (> 0)
  int head_dim_v = 512;
  bool causal = true;
  bool check = false;
  const DecodePlan* plan = nullptr;
  // Internal (tests and bench): "list=1" / "list=0" force the work list / the per-sequence split
  // kernel ("": chosen by shape).
  std::string variant;
};
void mla_decode(const MlaDecodeArgs& a, Stream stream = nullptr);

// Multi-head latent attention: out[b,h] = softmax(q[b,h] (Kl Kp[h])^T * scale) (Vl Vp[h]), computed exactly
// without per-(query, key) re-projection. Sq queries over Sk keys; causal uses the bottom-right
// rule of attention() (query i sees keys j <= i + Sk - Sq).
enum class MlaMethod {
  automatic,    // whichever of materialise / absorb needs fewer FLOPs
  materialise,  // K_h = Kl Kp[h], V_h = Vl Vp[h], then flash attention
  absorb,       // q' = q Kp[h]^T, attention over the shared latents, out = o' Vp[h]
  per_pair,     // the textbook baseline: re-projects K and V for every (query, key) pair (GPU
                // only; the CPU runs absorb for it)
};
struct MlaArgs {
  TensorView q;                   // [B, H, Sq, D]
  TensorView k_latent, v_latent;  // [B, Sk, L]
  TensorView k_proj, v_proj;      // [H, L, D], [H, L, Dv]
  TensorView out;                 // [B, H, Sq, Dv]
  bool causal = true;
  double scale = -1;
  MlaMethod method = MlaMethod::automatic;  // for benchmarks and tests; results agree
};
void mla_attention(const MlaArgs& a, Stream stream = nullptr);
// The order mla_attention(a) computes (never `automatic`): a.method when forced (per_pair runs
// absorb on the CPU), else the one of fewer FLOPs that this build runs on a's device. Validates
// a as mla_attention does; runs nothing.
MlaMethod mla_method(const MlaArgs& a);

// ---------------------------------------------------------------------------------------------
// Decode scheduling. A plan is made on the host from the sequence lengths (it reads them once),
// fixes the split of every sequence's KV range and owns the device workspace for partial results,
// so that paged_attention / mla_decode with the plan do no host work, allocation or sync and can
// be captured in a CUDA graph.
struct PlanOptions {
  int num_heads_q = 0, num_heads_kv = 0, head_dim = 0, head_dim_v = -1;
  int page_size = 0, seqlen_q = 1;
  DeviceType device = DeviceType::cpu;
  int device_id = 0;
  int num_sms = 0;  // 0: the device's
};
struct DecodePlan {
  PlanOptions opt;
  int batch = 0;
  std::vector<int32_t> seq_lens;    // as planned
  int max_splits = 1;    // splits of the longest sequence (the kernel cuts each by its length)
  int chunk_tokens = 0;  // KV tokens per split (a multiple of page_size)
  int split_capacity = 1;  // the most splits its workspace holds (max_splits when it was made)
  DecodeConfig config;   // the kernel variant for these shapes on this device
  // Device workspace (CUDA plans): partial outputs, lse and merge counters of every split.
  // Allocated by plan_decode, freed (after a device sync) when the plan is destroyed.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  DecodePlan() = default;
  DecodePlan(const DecodePlan&) = delete;
  DecodePlan& operator=(const DecodePlan&) = delete;
  ~DecodePlan();
};
std::shared_ptr<DecodePlan> plan_decode(const int32_t* seq_lens_host, int batch,
                                        const PlanOptions& opt);
// New lengths for a plan (the same batch): its splits are chosen again for them, in the
// workspace it has (no allocation): where the lengths would need more splits than the workspace
// holds, the splits grow longer instead. Calls made after it use the new schedule; a CUDA graph
// captured before keeps the one it captured.
void update_plan(DecodePlan& plan, const int32_t* seq_lens_host, int batch);

// ---------------------------------------------------------------------------------------------
// Small runtime helpers (device memory for cuattn.Array and the programs). All throw CudaError.
void* device_malloc(size_t bytes, int device, Stream stream);  // cudaMallocAsync on stream
void device_free(void* ptr, int device, Stream stream);        // cudaFreeAsync on stream
void memcpy_any(void* dst, const void* src, size_t bytes, Stream stream, bool sync);
void stream_synchronize(Stream stream);
bool stream_is_capturing(Stream stream);  // inside cudaStreamBeginCapture .. EndCapture?
// Work queued on `waiting` from now on waits for the work queued on `signalling` so far (an event;
// no host sync).
void stream_wait(Stream waiting, Stream signalling);

// ---------------------------------------------------------------------------------------------
// Build and device information.
struct BuildInfo {
  bool cuda = false;
  std::string cuda_version;  // of the toolkit the library was built with
  std::string archs;         // e.g. "80;90a"
  std::vector<int> head_dims;
  std::string version;
};
BuildInfo build_info();

struct DeviceInfo {
  bool available = false;
  std::string reason;  // why not, when unavailable
  std::string name;
  int device = 0, sm_count = 0, cc_major = 0, cc_minor = 0;
  size_t total_memory = 0, free_memory = 0;
  int driver_version = 0, runtime_version = 0;
  size_t l2_bytes = 0, smem_per_block_optin = 0;
  int clock_khz = 0, mem_clock_khz = 0, mem_bus_width = 0;
};
bool cuda_available();
int device_count();
DeviceInfo device_info(int device = 0);

}  // namespace cuattn
