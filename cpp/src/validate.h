// validate.h — argument checks shared by every host entry point. Each failure throws
// ValueError / CudaError with the argument's name and the bad value in the message.
#pragma once

#include <cmath>
#include <initializer_list>
#include <sstream>
#include <string>

#include "cuattn/cuattn.h"

namespace cuattn {
namespace detail {

template <class... A>
std::string cat(const A&... a) {
  std::ostringstream os;
  (os << ... << a);
  return os.str();
}

template <class... A>
[[noreturn]] void value_error(const A&... a) {
  throw ValueError(cat(a...));
}

std::string shape_str(const TensorView& t);

void require(const TensorView& t, const char* name);  // present
void require_ndim(const TensorView& t, const char* name, int ndim, const char* layout);
void require_dtype(const TensorView& t, const char* name, std::initializer_list<DType> ok);
void require_same_dtype(const TensorView& t, const char* name, const TensorView& ref,
                        const char* ref_name);
void require_same_device(const TensorView& t, const char* name, const TensorView& ref,
                         const char* ref_name);
// Last dim has unit stride (or size <= 1).
void require_last_contiguous(const TensorView& t, const char* name);
// GPU tensors: 16-byte-aligned base and every stride (but the last) a multiple of 16 bytes.
void require_gpu_aligned(const TensorView& t, const char* name);
// Exactly these dims (-1 = any).
void require_shape(const TensorView& t, const char* name, std::initializer_list<int64_t> dims,
                   const char* layout);
// A float32 scalar (numel 1) on ref's device.
void require_scalar(const TensorView& t, const char* name, const TensorView& ref);

// A CUDA tensor without a usable GPU (or without a CUDA build) -> CudaError.
void require_cuda_usable(const TensorView& t, const char* name);

// Compute dtypes: CPU f32/f16/bf16, GPU f16/bf16 (float32 on the GPU gets a "convert" message).
void require_compute_dtype(const TensorView& t, const char* name);

// Copies n int32/int64 values that may live on the GPU to the host (one sync for GPU data).
std::vector<int64_t> read_ints(const TensorView& t, Stream stream);

// Is CUATTN_CHECK=1 set in the environment (GPU contents validation)?
bool env_check();

// Softmax scale: user value when >= 0, else 1/sqrt(d).
inline float resolve_scale(double scale, int d) {
  return scale >= 0 ? float(scale) : float(1.0 / std::sqrt(double(d)));
}

constexpr float kLog2e = 1.4426950408889634f;

// Validates a paged_attention call and fills its params (paged.cpp); mla_decode reuses it.
PagedParams paged_params(const PagedArgs& a, Stream stream);

}  // namespace detail
}  // namespace cuattn
