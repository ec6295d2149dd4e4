// launch.cuh — the launcher habits every kernel follows: shared memory from the traits, the
// dynamic-shared-memory attribute set once per (kernel, device), the launch on the caller's
// stream, then a check that turns a failed launch into cuattn::CudaError.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <string>

#include "cuattn/tensor.h"

namespace cuattn {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw CudaError(std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
  }
}

inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// Raises a kernel's dynamic shared memory limit (needed above 48 KB) once per device.
template <typename Kernel>
void set_smem_limit(Kernel kernel, size_t bytes) {
  static std::atomic<uint64_t> done{0};
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  const uint64_t bit = dev < 64 ? (uint64_t(1) << dev) : 0;
  if (bit && (done.load(std::memory_order_relaxed) & bit)) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
             "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  done.fetch_or(bit, std::memory_order_relaxed);
}

}  // namespace cuattn
