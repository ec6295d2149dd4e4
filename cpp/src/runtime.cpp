// runtime.cpp — build/device information and the few CUDA runtime calls the host layer makes
// (device memory for cuattn.Array and the programs, the device properties the kernel variants are
// chosen from, the decode plans' and the plan-less calls' split workspaces). Without CUDA every
// GPU request throws.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <vector>

#include "cuattn/cuattn.h"
#include "backend.h"
#include "cuattn/launch.h"
#include "validate.h"

#ifdef CUATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace cuattn {

#ifdef CUATTN_WITH_CUDA
static void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear non-sticky errors so the next call can proceed
    throw CudaError(detail::cat(what, " failed: ", cudaGetErrorName(e), " (",
                                cudaGetErrorString(e), ")"));
  }
}
#else
[[noreturn]] static void no_cuda(const char* what) {
  throw CudaError(detail::cat(what, ": this cuattn build has no CUDA support (built without nvcc)"));
}
#endif

#ifdef CUATTN_WITH_CUDA
cuda::DeviceGuard::DeviceGuard(int device) {
  int cur = 0;
  cuda_check(cudaGetDevice(&cur), "cudaGetDevice");
  if (cur != device) {
    cuda_check(cudaSetDevice(device), "cudaSetDevice");
    prev_ = cur;
  }
}
cuda::DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0) cudaSetDevice(prev_);
}

DeviceProps cuda::current_device_props() {
  static std::mutex mu;
  static std::map<int, DeviceProps> cache;
  int dev = 0;
  cuda_check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  const auto it = cache.find(dev);
  if (it != cache.end()) return it->second;
  DeviceProps d;
  cuda_check(cudaDeviceGetAttribute(&d.sm_count, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  cuda_check(cudaDeviceGetAttribute(&d.cc_major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  cuda_check(cudaDeviceGetAttribute(&d.cc_minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute");
  cache.emplace(dev, d);
  return d;
}

void* cuda::alloc_zeroed(size_t bytes, int device) {
  int cur = 0;
  cuda_check(cudaGetDevice(&cur), "cudaGetDevice");
  cuda_check(cudaSetDevice(device), "cudaSetDevice");
  void* ptr = nullptr;
  cudaError_t e = cudaMalloc(&ptr, bytes);
  if (e == cudaSuccess) e = cudaMemset(ptr, 0, bytes);
  cudaSetDevice(cur);
  cuda_check(e, "plan_decode workspace allocation");
  return ptr;
}

void cuda::free_sync(void* ptr, int device) {
  if (ptr == nullptr) return;
  int cur = 0;
  cudaGetDevice(&cur);
  cudaSetDevice(device);
  cudaFree(ptr);  // synchronises: no launch can still be using it
  cudaSetDevice(cur);
}

void cuda::copy_to_host(const std::vector<std::pair<const void*, size_t>>& ranges, char* dst,
                        Stream stream) {
  size_t total = 0;
  for (const auto& r : ranges) total += r.second;
  if (total == 0) return;
  // Pinned, so that the copies are truly asynchronous and one sync waits for all of them (a
  // copy into pageable memory would return only once it is done: one sync per array).
  static std::mutex mu;
  static char* staging = nullptr;
  static size_t staging_bytes = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (staging_bytes < total) {
    if (staging) cuda_check(cudaFreeHost(staging), "cudaFreeHost(check staging)");
    staging = nullptr;
    staging_bytes = 0;
    const size_t bytes = std::max<size_t>((total + 4095) / 4096 * 4096, 64 << 10);
    // Portable: pinned for every device's context (the arrays may live on any device).
    cuda_check(cudaHostAlloc(reinterpret_cast<void**>(&staging), bytes, cudaHostAllocPortable),
               "cudaHostAlloc(check staging)");
    staging_bytes = bytes;
  }
  size_t off = 0;
  for (const auto& r : ranges) {
    cuda_check(cudaMemcpyAsync(staging + off, r.first, r.second, cudaMemcpyDefault, stream),
               "cudaMemcpyAsync(check read-back)");
    off += r.second;
  }
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize(check read-back)");
  std::memcpy(dst, staging, total);
}

void* cuda::cached_workspace(size_t& counter_bytes, size_t partial_bytes, Stream stream) {
  // Lifetime: a call captured into a CUDA graph bakes the buffer's address into the graph, which
  // may be replayed at any time until it is destroyed, and cuattn cannot know when that is. So a
  // buffer handed to a capturing call is marked `captured`, and from then on it is never freed
  // and never given to a call that is not capturing: such a call (or a growth) retires it to
  // `retired`, kept for the life of the process, and takes a fresh buffer. Graphs captured on
  // one stream share its captured buffer, as eager calls on one stream share theirs: replay them
  // in stream order with each other. A capturing call that would need a larger buffer is refused
  // (it would allocate while capturing).
  struct Cached {
    void* ptr = nullptr;
    size_t bytes = 0, counter_bytes = 0;
    bool captured = false;
  };
  static std::mutex mu;
  static std::map<std::pair<int, Stream>, Cached> cache;
  static std::vector<void*> retired;  // captured buffers that a graph may still use
  int dev = 0;
  cuda_check(cudaGetDevice(&dev), "cudaGetDevice");
  const bool capturing = stream_is_capturing(stream);
  std::lock_guard<std::mutex> lock(mu);
  Cached& w = cache[{dev, stream}];
  const bool small = w.counter_bytes < counter_bytes || w.bytes < w.counter_bytes + partial_bytes;
  if (capturing && small)
    throw ValueError("paged_attention needs plan= (from plan_decode) under CUDA-graph capture: "
                     "without one it would allocate its split-KV workspace while capturing");
  if (small || (w.captured && !capturing)) {
    // Headroom in both regions, so that it grows rarely; never smaller than before.
    const size_t counters = std::max((counter_bytes + counter_bytes / 2 + 255) / 256 * 256, w.counter_bytes);
    const size_t partials = std::max(partial_bytes * 3 / 2, w.bytes - w.counter_bytes);
    if (w.ptr && w.captured) retired.push_back(w.ptr);
    else if (w.ptr) cuda_check(cudaFreeAsync(w.ptr, stream), "cudaFreeAsync(decode workspace)");
    w = Cached{};
    cuda_check(cudaMallocAsync(&w.ptr, counters + partials, stream), "cudaMallocAsync(decode workspace)");
    cuda_check(cudaMemsetAsync(w.ptr, 0, counters + partials, stream), "cudaMemsetAsync(decode workspace)");
    w.bytes = counters + partials;
    w.counter_bytes = counters;
  }
  w.captured = w.captured || capturing;
  counter_bytes = w.counter_bytes;
  return w.ptr;
}
#endif

BuildInfo build_info() {
  BuildInfo b;
  b.version = CUATTN_VERSION;
#ifdef CUATTN_WITH_CUDA
  b.cuda = true;
  b.cuda_version = CUATTN_CUDA_VERSION_STR;
  b.archs = CUATTN_CUDA_ARCHS_STR;
  for (const HeadDimPair& k : kFlashHeadDims)
    if (head_dim_built(k.d) && (b.head_dims.empty() || b.head_dims.back() != k.d)) b.head_dims.push_back(k.d);
#endif
  return b;
}

int device_count() {
#ifdef CUATTN_WITH_CUDA
  static std::atomic<int> cached{-1};  // devices do not come and go within a process
  const int c = cached.load(std::memory_order_relaxed);
  if (c >= 0) return c;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    n = 0;
  }
  cached.store(n, std::memory_order_relaxed);
  return n;
#else
  return 0;
#endif
}

bool cuda_available() { return device_count() > 0; }

DeviceInfo device_info(int device) {
  DeviceInfo d;
  d.device = device;
#ifdef CUATTN_WITH_CUDA
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  cudaDriverGetVersion(&d.driver_version);
  cudaRuntimeGetVersion(&d.runtime_version);
  if (e != cudaSuccess) {
    cudaGetLastError();
    d.reason = detail::cat("cudaGetDeviceCount: ", cudaGetErrorString(e));
    return d;
  }
  if (device < 0 || device >= n) {
    d.reason = n == 0 ? std::string("no CUDA device found")
                      : detail::cat("device ", device, " out of range (", n, " devices)");
    return d;
  }
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, device) != cudaSuccess) {
    cudaGetLastError();
    d.reason = "cudaGetDeviceProperties failed";
    return d;
  }
  d.available = true;
  d.name = p.name;
  d.sm_count = p.multiProcessorCount;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.total_memory = p.totalGlobalMem;
  d.l2_bytes = size_t(p.l2CacheSize);
  d.smem_per_block_optin = p.sharedMemPerBlockOptin;
  d.mem_bus_width = p.memoryBusWidth;
  cudaDeviceGetAttribute(&d.clock_khz, cudaDevAttrClockRate, device);
  cudaDeviceGetAttribute(&d.mem_clock_khz, cudaDevAttrMemoryClockRate, device);
  int cur = 0;
  cudaGetDevice(&cur);
  if (cur == device) {
    size_t f = 0, t = 0;
    if (cudaMemGetInfo(&f, &t) == cudaSuccess) d.free_memory = f;
    else cudaGetLastError();
  }
#else
  d.reason = "cuattn was built without CUDA (no nvcc at build time)";
#endif
  return d;
}

void* device_malloc(size_t bytes, int device, Stream stream) {
#ifdef CUATTN_WITH_CUDA
  int cur = 0;
  cuda_check(cudaGetDevice(&cur), "cudaGetDevice");
  if (cur != device) cuda_check(cudaSetDevice(device), "cudaSetDevice");
  void* p = nullptr;
  cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 1, stream);
  if (cur != device) cudaSetDevice(cur);
  cuda_check(e, detail::cat("cudaMallocAsync(", bytes, " bytes)").c_str());
  return p;
#else
  no_cuda("device_malloc");
#endif
}

void device_free(void* ptr, int device, Stream stream) {
#ifdef CUATTN_WITH_CUDA
  if (!ptr) return;
  int cur = 0;
  cudaGetDevice(&cur);
  if (cur != device) cudaSetDevice(device);
  cudaError_t e = cudaFreeAsync(ptr, stream);
  if (cur != device) cudaSetDevice(cur);
  cuda_check(e, "cudaFreeAsync");
#else
  (void)ptr;
  (void)device;
  (void)stream;
#endif
}

void memcpy_any(void* dst, const void* src, size_t bytes, Stream stream, bool sync) {
#ifdef CUATTN_WITH_CUDA
  if (bytes == 0) return;
  cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream), "cudaMemcpyAsync");
  if (sync) cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
#else
  std::memcpy(dst, src, bytes);
  (void)stream;
  (void)sync;
#endif
}

void stream_synchronize(Stream stream) {
#ifdef CUATTN_WITH_CUDA
  cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
#else
  (void)stream;
#endif
}

bool stream_is_capturing(Stream stream) {
#ifdef CUATTN_WITH_CUDA
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  cuda_check(cudaStreamIsCapturing(stream, &st), "cudaStreamIsCapturing");
  return st != cudaStreamCaptureStatusNone;
#else
  (void)stream;
  return false;
#endif
}

void stream_wait(Stream waiting, Stream signalling) {
#ifdef CUATTN_WITH_CUDA
  cudaEvent_t ev = nullptr;
  cuda_check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  cudaError_t e = cudaEventRecord(ev, signalling);
  if (e == cudaSuccess) e = cudaStreamWaitEvent(waiting, ev, 0);
  cudaEventDestroy(ev);  // released once the wait is done
  cuda_check(e, "stream_wait (cudaEventRecord / cudaStreamWaitEvent)");
#else
  (void)waiting;
  (void)signalling;
#endif
}

}  // namespace cuattn
