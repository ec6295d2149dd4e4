// tma_host.cuh — host side of the Hopper kernels: the driver's tensor-map encoder, 4-d tensor maps
// with the 128-byte swizzle (flash forward, paged decode), and the check that a kernel runs
// sm_90a code on the current device.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include <cstdint>

#include "common/launch.cuh"
#include "cuattn/params.h"

namespace cuattn {

// The driver's cuTensorMapEncodeTiled, found once through the runtime (cuattn does not link
// libcuda, so that the CPU backend imports on machines without a driver). Null if unavailable.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A 16-bit or fp8 tensor seen as [batch][rows][heads][dim] (strides in elements, dim contiguous),
// read in boxes of box_bytes (128: 64 or 128 elements, the 128-byte swizzle; 64: the 64-byte
// swizzle) x box_rows; out-of-range elements read as zero.
// False when TMA cannot describe it.
inline bool make_tma_map(CUtensorMap* map, DType dtype, const void* base, int64_t dim, int64_t rows,
                         int64_t heads, int64_t batch, int64_t row_stride, int64_t head_stride,
                         int64_t batch_stride, int box_rows, int box_bytes = 128) {
  const auto encode = tensor_map_encoder();
  if (encode == nullptr || reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  if (dtype != DType::f16 && dtype != DType::bf16 && dtype != DType::fp8_e4m3) return false;
  if (box_bytes != 128 && box_bytes != 64) return false;
  const int64_t es = dtype == DType::fp8_e4m3 ? 1 : 2;  // bytes per element
  const cuuint64_t dims[4] = {cuuint64_t(dim), cuuint64_t(rows), cuuint64_t(heads), cuuint64_t(batch)};
  cuuint64_t strides[3];
  const int64_t bytes[3] = {es * row_stride, es * head_stride, es * batch_stride};
  for (int i = 0; i < 4; ++i)
    if (dims[i] == 0 || dims[i] > (cuuint64_t(1) << 32)) return false;
  for (int i = 0; i < 3; ++i) {
    // A dimension of extent 1 is never stepped along: any valid stride describes it.
    const int64_t s = dims[i + 1] == 1 ? 16 : bytes[i];
    if (s <= 0 || s % 16 != 0 || s >= (int64_t(1) << 40)) return false;
    strides[i] = cuuint64_t(s);
  }
  // Encoding costs about a microsecond of host time; a call on the same arrays as a recent one
  // (the common case: a layer's buffers, a benchmark loop) reuses its maps.
  struct Entry {
    const void* base;
    cuuint64_t dims[4], strides[3];
    int box_rows, box_bytes;
    DType dtype;
    CUtensorMap map;
  };
  thread_local Entry cache[8] = {};
  thread_local unsigned next = 0;
  for (const Entry& e : cache)
    if (e.base == base && e.dtype == dtype && e.box_rows == box_rows && e.box_bytes == box_bytes && e.dims[0] == dims[0] &&
        e.dims[1] == dims[1] && e.dims[2] == dims[2] && e.dims[3] == dims[3] && e.strides[0] == strides[0] &&
        e.strides[1] == strides[1] && e.strides[2] == strides[2]) {
      *map = e.map;
      return true;
    }
  const cuuint32_t box[4] = {cuuint32_t(box_bytes / es), cuuint32_t(box_rows), 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  const CUtensorMapDataType type = dtype == DType::bf16   ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                   : dtype == DType::f16  ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                          : CU_TENSOR_MAP_DATA_TYPE_UINT8;
  const CUresult r = encode(map, type,
                            4, const_cast<void*>(base), dims, strides, box, elem_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE,
                            box_bytes == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return false;
  Entry& e = cache[next++ % 8];
  e.base = base;
  e.dtype = dtype;
  e.box_rows = box_rows;
  e.box_bytes = box_bytes;
  for (int i = 0; i < 4; ++i) e.dims[i] = dims[i];
  for (int i = 0; i < 3; ++i) e.strides[i] = strides[i];
  e.map = *map;
  return true;
}

// Does `kernel` run sm_90a code on the current device? Asked once per (kernel, device), when its
// shared memory limit is raised too. A kernel JIT-compiled from older PTX reports binaryVersion
// 90 too, hence the PTX version check.
template <typename Kernel>
bool prepare_sm90a_kernel(Kernel kernel, size_t smem_bytes) {
#if !CUATTN_BUILD_SM90A
  return false;
#endif
  return once_per_device<bool>(reinterpret_cast<const void*>(kernel), [&](int dev) {
    cudaFuncAttributes attr{};
    int major = 0, minor = 0;
    const bool ok = cudaFuncGetAttributes(&attr, kernel) == cudaSuccess &&
                    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess &&
                    major == 9 && minor == 0 && attr.binaryVersion == 90 && attr.ptxVersion == 90;
    cudaGetLastError();
    if (ok)
      check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes)),
                 "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    return ok;
  });
}

}  // namespace cuattn
