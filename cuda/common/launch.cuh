// launch.cuh — the launcher habits every kernel follows: shared memory from the traits, the
// dynamic-shared-memory attribute set once per (kernel, device), the launch on the caller's
// stream, then a check that turns a failed launch into cuattn::CudaError.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <string>
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

// fn(device) for `key` (a kernel's address, or nullptr for a device property) on the current
// device, computed once per (key, device) under a lock and cached. Each call site (each fn type)
// keeps its own cache. Kernel keys are addresses: kernels of one signature share a function type.
template <typename V, typename Fn>
V once_per_device(const void* key, Fn fn) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, V> cache;
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(mu);
  const auto it = cache.find({key, dev});
  if (it != cache.end()) return it->second;
  const V v = fn(dev);
  cache.emplace(std::make_pair(key, dev), v);
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

}  // namespace cuattn
