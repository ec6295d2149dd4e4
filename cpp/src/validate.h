// validate.h — argument checks shared by every host entry point. Each failure throws
// ValueError / CudaError with the argument's name and the bad value in the message.
#pragma once

#include <cmath>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

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

// Present, at most kMaxDims dims, no negative size, and a data pointer unless it is empty.
void require(const TensorView& t, const char* name);
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

// A CUDA tensor without a usable GPU (or without a CUDA build) -> CudaError.
void require_cuda_usable(const TensorView& t, const char* name);

// Compute dtypes: CPU f32/f16/bf16, GPU f16/bf16 (float32 on the GPU gets a "convert" message).
void require_compute_dtype(const TensorView& t, const char* name);

// The index and scalar arrays one call reads back to validate their contents, in one host sync:
// add() each view (1-D or 2-D, int32/int64/float32, read with its strides), fetch() once, then
// ints(i) / floats(i) give its elements in row-major order. Host views are read where they lie.
// Device views are each copied as the byte range they span into one pinned staging buffer, the
// copies enqueued on the call's stream, then the stream synchronised once: check=True costs one
// sync a call however many arrays it reads. A reader made with `enabled = false` (GPU data
// without check) registers nothing, and every read is empty.
class DeviceReads {
 public:
  DeviceReads(Stream stream, bool enabled) : stream_(stream), enabled_(enabled) {}
  bool enabled() const { return enabled_; }
  // Registers t (absent, or a disabled reader: nothing) and returns its index (-1: not read).
  int add(const TensorView& t);
  // Copies every registered device view to the host (one sync; ValueError under CUDA-graph
  // capture, where a sync is not allowed).
  void fetch();
  // Elements of view i (int32/int64 as int64; float32), empty for i = -1.
  std::vector<int64_t> ints(int i) const;
  std::vector<float> floats(int i) const;

 private:
  struct View {
    TensorView t;
    int64_t lo = 0;      // element offset (from t.data) of its lowest element
    size_t bytes = 0;    // bytes it spans
    size_t offset = 0;   // where the device copy lies in host_
  };
  std::vector<char> elements(int i) const;
  Stream stream_;
  bool enabled_;
  bool fetched_ = false;
  std::vector<View> views_;
  std::vector<char> host_;  // the device views' bytes, after fetch()
};

// cu_seqlens_* arrays: int32 [n + 1] on q's device, contiguous (the kernels index them with
// the stride validated here), at least one entry.
void require_cu_seqlens(const TensorView& t, const char* name, const TensorView& q);
// cu_seqlens contents: start at 0, non-decreasing, last == total (every packed row belongs to a
// sequence, so every row of out and lse is written). Returns the longest sequence.
int64_t check_cu_seqlens(const std::vector<int64_t>& cu, const char* name, int64_t total);

// A size, length or count that the kernels hold in an int: ValueError above INT32_MAX.
int as_int32(int64_t v, const char* what);

// A scalar argument: finite after rounding to float32 (the kernels' type), else ValueError.
float finite_f32(double v, const char* name);

// A named tensor argument for the overlap check; absent or empty tensors are skipped.
using Named = std::pair<const TensorView*, const char*>;
// Outputs must not share memory with any input, with each other, or with themselves (a stride-0
// or interleaved output): ValueError naming both arguments. Exact for views that step through
// the same buffer in bands (e.g. k and v halves of one [N, 2, ...] cache), conservative (refuses)
// for views whose address ranges interleave in any other way.
void require_no_overlap(std::initializer_list<Named> outputs, std::initializer_list<Named> inputs);

// Is CUATTN_CHECK=1 set in the environment (GPU contents validation)?
bool env_check();

// softcap: finite and >= 0 (0 = off).
float check_softcap(double softcap);

// sinks: optional float32 [hq] on q's device, contiguous. check_sink_values: the values read
// back (CPU data, or check=True): NaN or +inf -> ValueError (-inf is allowed: no sink).
void check_sinks(const TensorView& sinks, const TensorView& q, int64_t hq);
void check_sink_values(const std::vector<float>& sinks);

// k_scale / v_scale: the float value finite and > 0; a device scalar t (optional: float32, one
// element, on ref's device). check_dequant_scale_value: its value read back, checked the same
// way (nothing when it was not read).
void check_dequant_scale(double value, const Named& t, const Named& ref);
void check_dequant_scale_value(const char* name, const std::vector<float>& value);

// Softmax scale: user value when > 0; any negative value means the default 1/sqrt(d); 0 and
// non-finite values -> ValueError (0 would need -inf * 0 for masked keys: the kernels refuse it).
inline float resolve_scale(double scale, int d) {
  const float s = finite_f32(scale, "scale");
  if (s == 0) value_error("scale must be > 0 (or negative for the default 1/sqrt(head_dim)), got 0");
  return s > 0 ? s : float(1.0 / std::sqrt(double(d)));
}

constexpr float kLog2e = 1.4426950408889634f;

// Validates a paged_attention call and fills its params (paged.cpp); mla_decode reuses it.
PagedParams paged_params(const PagedArgs& a, Stream stream, const char* k_name = "k_cache",
                         const char* v_name = "v_cache");

}  // namespace detail
}  // namespace cuattn
