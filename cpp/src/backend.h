// backend.h — what the host API dispatches to, once the arguments are validated and the params
// structs filled. The CPU backend is the oracle of the programs and of ctest; the CUDA backend
// runs the kernels in cuda/ on the caller's stream.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cuattn/cuattn.h"
#include "cuattn/mla_params.h"
#include "cuattn/params.h"
#include "scheduler.h"

namespace cuattn {
namespace cpu {
// Blocked (flash-style) over query tiles x key tiles, threads over (sequence, kv head, query tile);
// fp32 scores and accumulation, fp64 softmax denominators.
void attention(const AttnParams& p);
// Same function, but materialises a query tile's scores over all keys first (the chapter's naive
// version: one key tile as long as the sequence).
void naive_attention(const AttnParams& p);
void paged_attention(const PagedParams& p);
void append_paged_kv(const AppendParams& p);
void merge_states(const MergeParams& p);

// Element conversions used by the backend and by host code that builds temporaries.
float load(const void* base, DType t, int64_t idx);
void store(void* base, DType t, int64_t idx, float x);
float fp8_e4m3_to_float(uint8_t v);
uint8_t float_to_fp8_e4m3(float x);  // round to nearest even, saturating to +-448
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
// dst[x] = element idx + x of base, times scale, for x < n (a contiguous row of any dtype).
void load_row(const void* base, DType t, int64_t idx, int n, float scale, float* dst);

// Runs fn(i) for i in [0, n) on up to get_num_threads() threads of one persistent pool (OpenMP's
// where the compiler has it); inline when called from inside a work item. Rethrows the first
// exception of an item.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);
}  // namespace cpu

namespace cuda {
// Makes `device` current for the scope of a call (kernels launch on the current device).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// GPU dispatch (dispatch.cpp, CUDA builds): the kernels' limits, the variant (choose_*_config
// with the call's internal `variant` string over it), the split-KV workspace, then the launch
// through cuattn/launch.h. Run with the tensors' device current.
void attention(const AttnParams& p, const std::string& variant, Stream stream);
void naive_attention(const AttnParams& p, void* workspace, Stream stream);
void paged_attention(const PagedParams& p, const DecodePlan* plan, const std::string& variant, Stream stream);
void append_paged_kv(const AppendParams& p, Stream stream);
void merge_states(const MergeParams& p, Stream stream);
// mla_decode on the decode work list: the list's shape and its workspace (the plan's, else the
// cached one) into p, then the launch of `kernel` (list, hopper or narrow; the sm_90a ones only
// where mla_hopper_usable).
void mla_list_decode(MlaLatentParams& p, const DecodePlan* plan, Stream stream, MlaKernel kernel);
// Can the sm_90a MLA decode kernel (narrow: the one for at most 32 query rows) run this call
// (device, build, cache, alignment, rows, the plan's workspace)?
bool mla_hopper_usable(const MlaLatentParams& p, const DecodePlan* plan, bool narrow);
// True where the CUDA build has a kernel for this (dtype, head dim, head dim v) combination.
bool attention_supported(DType t, int d, int dv);
bool paged_supported(DType q, DType kv, int d, int dv);
// Allocates a plan's device workspace (partial outputs and lse of every split).
void plan_workspace(DecodePlan& plan);
void plan_free(DecodePlan& plan);  // cudaFree: waits for work that may still use it

// CUDA runtime pieces (runtime.cpp).
DeviceProps current_device_props();  // of the current device, cached
// A zeroed device allocation of `bytes` on `device` (a sync), and its release (cudaFree: waits
// for work that may still use it).
void* alloc_zeroed(size_t bytes, int device);
void free_sync(void* ptr, int device);
// Copies device byte ranges (src, bytes) back to back into host memory at dst, with one stream
// sync: the copies are enqueued on `stream` into one pinned staging buffer (grown as needed,
// shared by the process under a lock), then the stream is synchronised once.
void copy_to_host(const std::vector<std::pair<const void*, size_t>>& ranges, char* dst, Stream stream);
// The plan-less split workspace: one growing buffer per (device, stream), stream-ordered
// (cudaMallocAsync / cudaFreeAsync / cudaMemsetAsync on `stream`: no host sync), all zeros when
// it grows. Its counter region keeps the size it was zeroed with: `counter_bytes` is raised to
// it. Under CUDA-graph capture it cannot grow (ValueError); a buffer a capture used is never
// freed, nor given to a later call that is not capturing (see runtime.cpp).
void* cached_workspace(size_t& counter_bytes, size_t partial_bytes, Stream stream);
}  // namespace cuda

// Runs `gpu` (with the tensor's device current) for a CUDA tensor, `cpu` otherwise.
template <class CpuFn, class GpuFn>
void run_on(const TensorView& t, CpuFn cpu, GpuFn gpu) {
  if (t.is_cuda()) {
#ifdef CUATTN_WITH_CUDA
    cuda::DeviceGuard guard(t.device_id);
    gpu();
#else
    (void)gpu;  // unreachable: require_cuda_usable() rejected the tensor
#endif
  } else {
    cpu();
  }
}
}  // namespace cuattn
