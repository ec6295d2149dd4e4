// tensor.cpp — dtype names and sizes, and make_view (contiguous row-major TensorViews).
#include <initializer_list>
#include <string>

#include "cuattn/tensor.h"

namespace cuattn {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::fp8_e4m3: return "float8_e4m3fn";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
    case DType::u32: return "uint32";
  }
  return "unknown";
}

int dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::fp8_e4m3: return 1;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
    case DType::u32: return 4;
  }
  throw TypeError("dtype_size: unknown dtype " + std::to_string(static_cast<int>(t)));
}

TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                     DeviceType device, int device_id) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    throw ValueError("make_view: " + std::to_string(shape.size()) + " dims, at most " +
                     std::to_string(kMaxDims) + " supported");
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.device_id = device_id;
  v.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) v.shape[i++] = s;
  // Row-major: the last dim has stride 1, each earlier one the product of the later sizes.
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.stride[d] = stride;
    stride *= v.shape[d];
  }
  return v;
}

}  // namespace cuattn
