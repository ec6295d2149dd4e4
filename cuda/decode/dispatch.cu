// dispatch.cu — paged decode: kernel choice, the split-KV workspace (plan-owned or cached per
// device and stream) and the plan's device allocation.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>

#include "backend.h"
#include "common/launch.cuh"
#include "common/types.cuh"
#include "decode/paged_decode.cuh"
#include "scheduler.h"

namespace cuattn {

template <typename T, int kD>
void run_paged(const PagedParams& p, const DecodePlan* plan, cudaStream_t stream);

namespace {

constexpr int kRowsPerChunk = 16;

// Byte layout of a split workspace: the counters first, then partial O and partial LSE. The
// kernels return every counter they use to zero, so a counter region that only ever grows (and is
// zeroed when it does) is all zeros between launches, whatever shapes earlier calls had; partials
// need no initialisation.
struct WorkspaceLayout {
  size_t counter_bytes, o_bytes, lse_bytes;
  size_t total() const { return counter_bytes + o_bytes + lse_bytes; }
};

WorkspaceLayout layout(int64_t batch, int64_t units, int64_t max_splits, int64_t dv) {
  WorkspaceLayout l;
  // one merge count per unit, rounded to 256 bytes so the partials stay aligned
  l.counter_bytes = (size_t(batch * units) * sizeof(int) + 255) / 256 * 256;
  l.o_bytes = size_t(batch * units * max_splits * kRowsPerChunk * dv) * sizeof(float);
  l.lse_bytes = size_t(batch * units * max_splits * kRowsPerChunk) * sizeof(float);
  return l;
}

SplitWorkspace carve(void* base, const WorkspaceLayout& l, int chunk, int max_splits) {
  SplitWorkspace ws;
  char* c = static_cast<char*>(base);
  ws.counters = reinterpret_cast<int*>(c);
  ws.o = reinterpret_cast<float*>(c + l.counter_bytes);
  ws.lse = reinterpret_cast<float*>(c + l.counter_bytes + l.o_bytes);
  ws.chunk_tokens = chunk;
  ws.max_splits = max_splits;
  return ws;
}

// Workspace for plan-less calls: one growing buffer per (device, stream), stream-ordered
// (cudaMallocAsync / cudaFreeAsync / cudaMemsetAsync on the caller's stream: no host sync).
// Its counter region keeps the size it was zeroed with (see WorkspaceLayout).
struct CachedWorkspace {
  void* ptr = nullptr;
  size_t bytes = 0, counter_bytes = 0;
};

// Returns the workspace and rewrites l.counter_bytes to the cached counter region's size.
void* cached_workspace(WorkspaceLayout& l, cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, CachedWorkspace> cache;
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  CachedWorkspace& w = cache[{dev, stream}];
  if (w.counter_bytes < l.counter_bytes || w.bytes < w.counter_bytes + l.o_bytes + l.lse_bytes) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    check_cuda(cudaStreamIsCapturing(stream, &st), "cudaStreamIsCapturing");
    if (st != cudaStreamCaptureStatusNone)
      throw ValueError("paged_attention needs plan= (from plan_decode) under CUDA-graph capture: "
                       "without one it would allocate its split-KV workspace while capturing");
    // Headroom in both regions, so that it grows rarely; never smaller than before.
    const size_t counters =
        std::max((l.counter_bytes + l.counter_bytes / 2 + 255) / 256 * 256, w.counter_bytes);
    const size_t partials = std::max((l.o_bytes + l.lse_bytes) * 3 / 2, w.bytes - w.counter_bytes);
    if (w.ptr) check_cuda(cudaFreeAsync(w.ptr, stream), "cudaFreeAsync(decode workspace)");
    w.ptr = nullptr;
    w.bytes = w.counter_bytes = 0;
    check_cuda(cudaMallocAsync(&w.ptr, counters + partials, stream), "cudaMallocAsync(decode workspace)");
    check_cuda(cudaMemsetAsync(w.ptr, 0, counters + partials, stream), "cudaMemsetAsync(decode workspace)");
    w.bytes = counters + partials;
    w.counter_bytes = counters;
  }
  l.counter_bytes = w.counter_bytes;
  return w.ptr;
}

template <typename T>
void run(const PagedParams& p, const DecodePlan* plan, cudaStream_t s) {
  switch (p.head_dim) {
#if CUATTN_HDIM_64
    case 64: return run_paged<T, 64>(p, plan, s);
#endif
#if CUATTN_HDIM_128
    case 128: return run_paged<T, 128>(p, plan, s);
#endif
#if CUATTN_HDIM_256
    case 256: return run_paged<T, 256>(p, plan, s);
#endif
    default: break;
  }
  throw ValueError("no paged kernel for head_dim " + std::to_string(p.head_dim));
}

}  // namespace

int sm_count() {
  return once_per_device<int>(nullptr, [](int dev) {
    int n = 0;
    check_cuda(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    return n;
  });
}

SplitWorkspace decode_workspace(const PagedParams& p, const DecodePlan* plan, int row_chunks,
                                cudaStream_t stream) {
  const int units = p.num_heads_kv * row_chunks;
  if (plan != nullptr) {
    const WorkspaceLayout l = layout(p.batch, units, plan->max_splits, p.head_dim_v);
    if (plan->workspace == nullptr || plan->workspace_bytes < l.total())
      throw ValueError("plan has no device workspace for this call (make it with device='cuda')");
    return carve(plan->workspace, l, plan->chunk_tokens, plan->max_splits);
  }
  // From shapes alone: the capacity of the block table bounds every sequence.
  const int64_t capacity = int64_t(p.max_blocks) * p.page_size;
  const int chunk = choose_chunk(p.batch, p.num_heads_kv, int64_t(p.batch) * capacity, capacity,
                                 p.page_size, sm_count());
  const int max_splits = int(std::max<int64_t>(1, (capacity + chunk - 1) / chunk));
  if (max_splits == 1) return carve(nullptr, layout(0, 0, 0, 0), chunk, 1);
  WorkspaceLayout l = layout(p.batch, units, max_splits, p.head_dim_v);
  void* base = cached_workspace(l, stream);
  return carve(base, l, chunk, max_splits);
}

namespace cuda {

bool paged_supported(DType q, DType kv, int d, int dv) {
  if (q != DType::f16 && q != DType::bf16) return false;
  if (kv != q && kv != DType::fp8_e4m3) return false;
  if (d != dv) return false;
  switch (d) {
#if CUATTN_HDIM_64
    case 64: return true;
#endif
#if CUATTN_HDIM_128
    case 128: return true;
#endif
#if CUATTN_HDIM_256
    case 256: return true;
#endif
    default: return false;
  }
}

void paged_attention(const PagedParams& p, const DecodePlan* plan, Stream stream) {
  if (p.batch > 65535) throw ValueError("the GPU paged kernel supports at most 65535 sequences");
  // The kernel addresses a row inside the cache with 32-bit page/slot strides.
  const auto fits = [&](int64_t page_stride, int64_t slot_stride) {
    return std::abs(page_stride) < INT32_MAX && std::abs(slot_stride) * p.page_size < INT32_MAX / 2;
  };
  if (!fits(p.k_page_stride, p.k_slot_stride) || !fits(p.v_page_stride, p.v_slot_stride))
    throw ValueError("the GPU paged kernel needs cache page and slot strides under 2^31 elements, got "
                     "k (" + std::to_string(p.k_page_stride) + ", " + std::to_string(p.k_slot_stride) +
                     "), v (" + std::to_string(p.v_page_stride) + ", " + std::to_string(p.v_slot_stride) + ")");
  if (p.q_dtype == DType::bf16) run<__nv_bfloat16>(p, plan, stream);
  else run<__half>(p, plan, stream);
}

void plan_workspace(DecodePlan& plan) {
  const int group = plan.opt.num_heads_q / plan.opt.num_heads_kv;
  const int row_chunks = (group * plan.opt.seqlen_q + kRowsPerChunk - 1) / kRowsPerChunk;
  const WorkspaceLayout l = layout(plan.batch, int64_t(plan.opt.num_heads_kv) * row_chunks,
                                   plan.max_splits, plan.opt.head_dim_v);
  int cur = 0;
  check_cuda(cudaGetDevice(&cur), "cudaGetDevice");
  check_cuda(cudaSetDevice(plan.opt.device_id), "cudaSetDevice");
  void* ptr = nullptr;
  cudaError_t e = cudaMalloc(&ptr, std::max<size_t>(l.total(), 16));
  if (e == cudaSuccess) e = cudaMemset(ptr, 0, std::max<size_t>(l.total(), 16));
  cudaSetDevice(cur);
  check_cuda(e, "plan_decode workspace allocation");
  plan.workspace = ptr;
  plan.workspace_bytes = std::max<size_t>(l.total(), 16);
}

void plan_free(DecodePlan& plan) {
  if (plan.workspace == nullptr) return;
  int cur = 0;
  cudaGetDevice(&cur);
  cudaSetDevice(plan.opt.device_id);
  cudaFree(plan.workspace);  // synchronises: no launch can still be using it
  cudaSetDevice(cur);
  plan.workspace = nullptr;
}

}  // namespace cuda
}  // namespace cuattn
