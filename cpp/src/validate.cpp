// validate.cpp — shared argument checks (see validate.h).
#include "validate.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "cuattn/cuattn.h"

namespace cuattn {
namespace detail {

std::string shape_str(const TensorView& t) {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.shape[i];
  os << (t.ndim == 1 ? ",)" : ")");
  return os.str();
}

void require(const TensorView& t, const char* name) {
  if (!t.present()) value_error(name, " is required");
}

void require_ndim(const TensorView& t, const char* name, int ndim, const char* layout) {
  require(t, name);
  if (t.ndim != ndim)
    value_error(name, " must have ", ndim, " dims ", layout, ", got shape ", shape_str(t));
}

void require_dtype(const TensorView& t, const char* name, std::initializer_list<DType> ok) {
  for (DType d : ok)
    if (t.dtype == d) return;
  std::string list;
  for (DType d : ok) list += std::string(list.empty() ? "" : ", ") + dtype_name(d);
  value_error(name, " has dtype ", dtype_name(t.dtype), "; expected ", list);
}

void require_same_dtype(const TensorView& t, const char* name, const TensorView& ref,
                        const char* ref_name) {
  if (t.dtype != ref.dtype)
    value_error(name, " has dtype ", dtype_name(t.dtype), " but ", ref_name, " has ",
                dtype_name(ref.dtype), "; they must match");
}

static std::string device_str(const TensorView& t) {
  return t.is_cuda() ? cat("cuda:", t.device_id) : std::string("cpu");
}

void require_same_device(const TensorView& t, const char* name, const TensorView& ref,
                         const char* ref_name) {
  if (t.device != ref.device || (t.is_cuda() && t.device_id != ref.device_id))
    value_error(name, " is on ", device_str(t), " but ", ref_name, " is on ", device_str(ref),
                "; all arrays must be on the same device");
}

void require_last_contiguous(const TensorView& t, const char* name) {
  if (t.ndim >= 1 && t.numel() > 0 && t.shape[t.ndim - 1] > 1 && t.stride[t.ndim - 1] != 1)
    value_error(name, " must be contiguous in its last dim, got stride ", t.stride[t.ndim - 1],
                " (shape ", shape_str(t), "); pass a copy with a unit last-dim stride");
}

void require_gpu_aligned(const TensorView& t, const char* name) {
  if (!t.is_cuda() || t.numel() == 0) return;
  const int64_t es = dtype_size(t.dtype);
  if (reinterpret_cast<uintptr_t>(t.data) % 16 != 0)
    value_error(name, " data pointer is not 16-byte aligned (address ", t.data,
                "); GPU kernels load 16 bytes at a time");
  for (int i = 0; i + 1 < t.ndim; ++i)
    if (t.shape[i] > 1 && (t.stride[i] * es) % 16 != 0)
      value_error(name, " stride ", t.stride[i], " of dim ", i, " (shape ", shape_str(t),
                  ") is not a multiple of ", 16 / es, " elements (16 bytes)");
}

void require_shape(const TensorView& t, const char* name, std::initializer_list<int64_t> dims,
                   const char* layout) {
  require(t, name);
  bool ok = int(dims.size()) == t.ndim;
  int i = 0;
  for (int64_t d : dims) {
    if (ok && d >= 0 && t.shape[i] != d) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream want;
    want << "(";
    i = 0;
    for (int64_t d : dims) {
      want << (i++ ? ", " : "");
      if (d >= 0) want << d; else want << "*";
    }
    want << ")";
    value_error(name, " has shape ", shape_str(t), "; expected ", want.str(), " ", layout);
  }
}

void require_scalar(const TensorView& t, const char* name, const TensorView& ref) {
  if (!t.present()) return;
  require_dtype(t, name, {DType::f32});
  if (t.numel() != 1) value_error(name, " must hold one float32 value, got shape ", shape_str(t));
  require_same_device(t, name, ref, "q");
}

void require_cuda_usable(const TensorView& t, const char* name) {
  if (!t.present() || !t.is_cuda()) return;
#ifndef CUATTN_WITH_CUDA
  throw CudaError(cat(name, " is a CUDA array but this cuattn build has no CUDA support (it was "
                            "built without nvcc); use CPU arrays or rebuild with nvcc on PATH"));
#else
  if (!cuda_available())
    throw CudaError(cat(name, " is a CUDA array but no usable GPU is present: ",
                        device_info(0).reason));
#endif
}

void require_compute_dtype(const TensorView& t, const char* name) {
  if (t.is_cuda()) {
    if (t.dtype == DType::f32)
      value_error(name, " is float32 on the GPU; the GPU kernels take float16 or bfloat16: "
                        "convert it first (e.g. x.to(torch.bfloat16) or x.astype(cupy.float16))");
    require_dtype(t, name, {DType::f16, DType::bf16});
  } else {
    require_dtype(t, name, {DType::f32, DType::f16, DType::bf16});
  }
}

std::vector<int64_t> read_ints(const TensorView& t, Stream stream) {
  const int64_t n = t.numel();
  std::vector<int64_t> out(size_t(std::max<int64_t>(n, 0)));
  if (n == 0) return out;
  // Gather the (possibly strided, 1-D or 2-D) elements into a host buffer.
  const int es = dtype_size(t.dtype);
  int64_t span = 1;  // elements from the base to one past the last one
  for (int i = 0; i < t.ndim; ++i) span += (t.shape[i] - 1) * t.stride[i];
  std::vector<char> host;
  const char* base = static_cast<const char*>(t.data);
  if (t.is_cuda()) {
    host.resize(size_t(span * es));
    memcpy_any(host.data(), t.data, host.size(), stream, /*sync=*/true);
    base = host.data();
  }
  std::vector<int64_t> idx(size_t(t.ndim), 0);
  for (int64_t e = 0; e < n; ++e) {
    int64_t off = 0;
    for (int i = 0; i < t.ndim; ++i) off += idx[size_t(i)] * t.stride[i];
    const char* p = base + off * es;
    if (t.dtype == DType::i32) {
      int32_t v;
      std::memcpy(&v, p, 4);
      out[size_t(e)] = v;
    } else {
      int64_t v;
      std::memcpy(&v, p, 8);
      out[size_t(e)] = v;
    }
    for (int i = t.ndim - 1; i >= 0; --i) {
      if (++idx[size_t(i)] < t.shape[i]) break;
      idx[size_t(i)] = 0;
    }
  }
  return out;
}

bool env_check() {
  const char* s = std::getenv("CUATTN_CHECK");
  return s && s[0] && std::strcmp(s, "0") != 0;
}

}  // namespace detail
}  // namespace cuattn
