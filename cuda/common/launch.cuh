// launch.cuh — the launcher habits every kernel follows: shared memory from the traits, the
// dynamic-shared-memory attribute set once per (kernel, device), the launch on the caller's
// stream, then a check that turns a failed launch into cuattn::CudaError.
#pragma once

#include <cuda_runtime.h>

#include <mutex>
#include <set>
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

// Raises a kernel's dynamic shared memory limit (needed above 48 KB) once per (kernel, device).
// Keyed by the kernel's address: kernels of one signature share a function type, not a limit.
template <typename Kernel>
void set_smem_limit(Kernel kernel, size_t bytes) {
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> done;
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), dev};
  std::lock_guard<std::mutex> lock(mu);
  if (done.count(key)) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
             "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  done.insert(key);
}

}  // namespace cuattn
