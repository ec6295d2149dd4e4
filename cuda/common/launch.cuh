// launch.cuh — the launcher habits every kernel follows: shared memory from the traits, the
// dynamic-shared-memory attribute set once per (kernel, device), the launch on the caller's
// stream, then a check that turns a failed launch into cuattn::CudaError.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "cuattn/tensor.h"

namespace cuattn {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw CudaError(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
  }
}

inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// fn(device) for `key` (a kernel's address, or nullptr for a device property) and `detail` (what
// else the answer depends on, e.g. a launch's shared memory) on the current device, computed once
// per (key, detail, device) under a lock and cached. Each call site (each fn type) keeps its own
// cache. Kernel keys are addresses: kernels of one signature share a function type.
template <typename V, typename Fn>
V once_per_device(const void* key, Fn fn, size_t detail = 0) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, size_t, int>, V> cache;
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  const auto k = std::make_tuple(key, detail, dev);
  const auto it = cache.find(k);
  if (it != cache.end()) return it->second;
  const V v = fn(dev);
  cache.emplace(k, v);
  return v;
}

// Raises a kernel's dynamic shared memory limit (needed above 48 KB) once per (kernel, device).
template <typename Kernel>
void set_smem_limit(Kernel kernel, size_t bytes) {
  once_per_device<bool>(reinterpret_cast<const void*>(kernel), [&](int) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
               "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    return true;
  });
}

// How many CTAs of `kernel` (`threads` threads, its block size at every launch; `smem` bytes of
// dynamic shared memory, within the limit set_smem_limit raised) fit on one SM at once, once per
// (kernel, smem, device): one kernel may be launched with more than one layout (a persistent
// decode kernel's scratch past its ring or in it).
template <typename Kernel>
int resident_ctas(Kernel kernel, int threads, size_t smem) {
  return once_per_device<int>(
      reinterpret_cast<const void*>(kernel),
      [&](int) {
        int n = 0;
        check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem),
                   "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
        return n;
      },
      smem);
}

// Whether `kernel` may overlap the kernel before it in the stream (programmatic dependent
// launch): a device of compute capability 9.0 or later running code compiled for sm90 or later,
// where grid_dependency_wait() is a real wait. (An sm80 build's PTX, JIT-compiled for a Hopper
// card, has no wait in it and must be launched the plain way.)
template <typename Kernel>
bool kernel_has_pdl(Kernel kernel) {
  return once_per_device<bool>(reinterpret_cast<const void*>(kernel), [&](int dev) {
    int major = 0;
    cudaFuncAttributes attr{};
    check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev),
               "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
    check_cuda(cudaFuncGetAttributes(&attr, kernel), "cudaFuncGetAttributes");
    return major >= 9 && attr.ptxVersion >= 90;
  });
}

// kernel<<<grid, block, smem, stream>>>(args...), with programmatic stream serialization when
// `pdl` and kernel_has_pdl(kernel): the grid may then be scheduled before the previous kernel in
// the stream has finished. Only kernels that call grid_dependency_wait() (common/arch.cuh) before
// touching global memory may be launched with pdl = true.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool pdl,
                   Args&&... args) {
  if (!pdl || !kernel_has_pdl(kernel)) {
    kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
    return;
  }
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx");
}

}  // namespace cuattn
