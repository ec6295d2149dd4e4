// cuattn/tensor.h — the non-owning tensor view every public function takes, dtypes, errors.
//
// A TensorView is what a DLPack capsule, a NumPy array or a raw cudaMalloc'd pointer becomes at
// the C++ boundary: a pointer, a dtype, a device and up to 8 dims of shape and element strides.
// It owns nothing; the caller keeps the memory alive for the duration of the call (and, for GPU
// calls, until the work on the stream has finished).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace cuattn {

enum class DType : int { f32 = 0, f16, bf16, fp8_e4m3, f64, i32, i64, u8, u32 };
enum class DeviceType : int { cpu = 1, cuda = 2 };

const char* dtype_name(DType t);
int dtype_size(DType t);  // bytes per element

constexpr int kMaxDims = 8;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::f32;
  DeviceType device = DeviceType::cpu;
  int device_id = 0;
  int ndim = -1;  // -1: absent (an optional argument that was not given)
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};  // in elements, not bytes

  bool present() const { return ndim >= 0; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  int64_t size(int i) const { return shape[i < 0 ? i + ndim : i]; }
  int64_t st(int i) const { return stride[i < 0 ? i + ndim : i]; }
  bool is_cuda() const { return device == DeviceType::cuda; }
};

// Builds a contiguous (row-major) view; for programs and tests.
TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                     DeviceType device = DeviceType::cpu, int device_id = 0);

// Errors. The bindings map them to Python's ValueError / TypeError / cuattn.CudaError.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct ValueError : Error {
  using Error::Error;
};
struct TypeError : Error {
  using Error::Error;
};
struct CudaError : Error {
  using Error::Error;
};
// A variant that this build does not run on this device yet (Python: NotImplementedError).
struct NotImplementedError : Error {
  using Error::Error;
};

}  // namespace cuattn
