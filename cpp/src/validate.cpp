// validate.cpp — shared argument checks (see validate.h).
#include "validate.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend.h"
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
  if (t.ndim > kMaxDims)
    value_error(name, " has ", t.ndim, " dims; at most ", kMaxDims, " are supported");
  for (int i = 0; i < t.ndim; ++i)
    if (t.shape[i] < 0) value_error(name, " has a negative size ", t.shape[i], " in dim ", i);
  if (!t.data && t.numel() > 0)
    value_error(name, " has ", t.numel(), " elements but no data pointer");
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

int DeviceReads::add(const TensorView& t) {
  if (!enabled_ || !t.present()) return -1;
  View v;
  v.t = t;
  const int64_t n = t.numel();
  if (n > 0) {
    int64_t lo = 0, hi = 0;  // element offsets (from t.data) of the lowest and highest element
    for (int i = 0; i < t.ndim; ++i) {
      const int64_t e = (t.shape[i] - 1) * t.stride[i];
      (e < 0 ? lo : hi) += e;
    }
    v.lo = lo;
    v.bytes = size_t((hi - lo + 1) * dtype_size(t.dtype));
  }
  views_.push_back(v);
  return int(views_.size()) - 1;
}

void DeviceReads::fetch() {
  fetched_ = true;
  std::vector<std::pair<const void*, size_t>> ranges;
  size_t total = 0;
  for (View& v : views_) {
    if (!v.t.is_cuda() || v.bytes == 0) continue;
    v.offset = total;
    total += v.bytes;
    ranges.emplace_back(static_cast<const char*>(v.t.data) + v.lo * dtype_size(v.t.dtype), v.bytes);
  }
  if (ranges.empty()) return;
  if (stream_is_capturing(stream_))
    value_error("check=True (or CUATTN_CHECK=1) reads index arrays back with a device sync, which "
                "is not allowed while a stream is being captured into a CUDA graph: validate the "
                "inputs before capturing, or pass check=False");
  host_.resize(total);
#ifdef CUATTN_WITH_CUDA
  cuda::copy_to_host(ranges, host_.data(), stream_);
#endif
}

std::vector<char> DeviceReads::elements(int i) const {
  if (i < 0) return {};
  const View& v = views_[size_t(i)];
  const TensorView& t = v.t;
  const int64_t n = t.numel();
  const int es = dtype_size(t.dtype);
  std::vector<char> out(size_t(std::max<int64_t>(n, 0) * es));
  if (n <= 0) return out;
  if (t.is_cuda() && !fetched_) throw Error("DeviceReads: a device view was read before fetch()");
  // The lowest element, in host memory: where it lies (CPU data) or in the fetched copy.
  const char* first = t.is_cuda() ? host_.data() + v.offset
                                  : static_cast<const char*>(t.data) + v.lo * es;
  std::vector<int64_t> idx(size_t(t.ndim), 0);
  for (int64_t e = 0; e < n; ++e) {
    int64_t off = -v.lo;
    for (int k = 0; k < t.ndim; ++k) off += idx[size_t(k)] * t.stride[k];
    std::memcpy(out.data() + e * es, first + off * es, size_t(es));
    for (int k = t.ndim - 1; k >= 0; --k) {
      if (++idx[size_t(k)] < t.shape[k]) break;
      idx[size_t(k)] = 0;
    }
  }
  return out;
}

std::vector<int64_t> DeviceReads::ints(int i) const {
  const std::vector<char> raw = elements(i);
  if (i < 0) return {};
  const bool i32 = views_[size_t(i)].t.dtype == DType::i32;
  std::vector<int64_t> out(raw.size() / (i32 ? 4 : 8));
  for (size_t k = 0; k < out.size(); ++k) {
    if (i32) {
      int32_t v;
      std::memcpy(&v, raw.data() + k * 4, 4);
      out[k] = v;
    } else {
      std::memcpy(&out[k], raw.data() + k * 8, 8);
    }
  }
  return out;
}

std::vector<float> DeviceReads::floats(int i) const {
  const std::vector<char> raw = elements(i);  // float32 only (checked by the callers)
  std::vector<float> out(raw.size() / 4);
  if (!out.empty()) std::memcpy(out.data(), raw.data(), raw.size());
  return out;
}

void require_cu_seqlens(const TensorView& t, const char* name, const TensorView& q) {
  require_dtype(t, name, {DType::i32});
  require_ndim(t, name, 1, "[num_sequences + 1]");
  require_same_device(t, name, q, "q");
  require_last_contiguous(t, name);
  if (t.shape[0] < 1) value_error(name, " must have at least one entry ([num_sequences + 1])");
}

int64_t check_cu_seqlens(const std::vector<int64_t>& cu, const char* name, int64_t total) {
  if (cu.empty()) value_error(name, " must have at least one element");
  if (cu[0] != 0) value_error(name, "[0] must be 0, got ", cu[0]);
  int64_t mx = 0;
  for (size_t i = 1; i < cu.size(); ++i) {
    if (cu[i] < cu[i - 1])
      value_error(name, " must be non-decreasing, but ", name, "[", i, "] = ", cu[i], " < ",
                  name, "[", i - 1, "] = ", cu[i - 1]);
    mx = std::max(mx, cu[i] - cu[i - 1]);
  }
  if (cu.back() != total)
    value_error(name, "[-1] = ", cu.back(), " must equal the ", total, " packed rows given");
  return mx;
}

int as_int32(int64_t v, const char* what) {
  if (v > INT_MAX)
    value_error(what, " = ", v, " exceeds ", INT_MAX, ", the largest size the kernels index with "
                "32-bit integers");
  return int(v);
}

float finite_f32(double v, const char* name) {
  if (!std::isfinite(float(v)))
    value_error(name, " must be a finite number (as float32), got ", v);
  return float(v);
}

float check_softcap(double softcap) {
  const float c = finite_f32(softcap, "softcap");
  if (!(c >= 0)) value_error("softcap must be >= 0 (0 = off), got ", softcap);
  return c;
}

void check_sinks(const TensorView& sinks, const TensorView& q, int64_t hq) {
  if (!sinks.present()) return;
  require(sinks, "sinks");
  require_dtype(sinks, "sinks", {DType::f32});
  require_shape(sinks, "sinks", {hq}, "[num_heads_q]");
  require_same_device(sinks, "sinks", q, "q");
  require_last_contiguous(sinks, "sinks");
}

void check_sink_values(const std::vector<float>& v) {
  for (size_t h = 0; h < v.size(); ++h)
    if (std::isnan(v[h]) || v[h] == INFINITY)
      value_error("sinks[", h, "] = ", v[h], " must be finite or -inf (no sink)");
}

void check_dequant_scale(double value, const Named& t, const Named& ref) {
  const char* name = t.second;
  if (!(finite_f32(value, name) > 0)) value_error(name, " must be > 0, got ", value);
  if (!t.first->present()) return;
  require(*t.first, name);
  require_dtype(*t.first, name, {DType::f32});
  if (t.first->numel() != 1)
    value_error(name, " must hold one float32 value, got shape ", shape_str(*t.first));
  require_same_device(*t.first, name, *ref.first, ref.second);
}

void check_dequant_scale_value(const char* name, const std::vector<float>& value) {
  if (value.empty()) return;
  const float v = value[0];
  if (!std::isfinite(v) || !(v > 0)) value_error(name, " holds ", v, "; it must be finite and > 0");
}

namespace {

// A view's bytes as a base address and (size, byte stride) dims: positive strides, sizes > 1,
// the largest stride first. The view covers base + sum i_k stride_k + [0, elem).
struct Span {
  int64_t base = 0, elem = 0;
  int n = 0;
  int64_t size[kMaxDims] = {}, stride[kMaxDims] = {};

  explicit Span(const TensorView& t)
      : base(int64_t(reinterpret_cast<uintptr_t>(t.data))), elem(dtype_size(t.dtype)) {
    for (int i = 0; i < t.ndim; ++i) {
      if (t.shape[i] <= 1) continue;
      int64_t s = t.stride[i] * elem;
      if (s < 0) base += (t.shape[i] - 1) * s, s = -s;
      int k = n++;
      for (; k > 0 && stride[k - 1] < s; --k) size[k] = size[k - 1], stride[k] = stride[k - 1];
      size[k] = t.shape[i], stride[k] = s;
    }
  }
  // Bytes from the base covered by dims from..n-1.
  int64_t extent(int from) const {
    int64_t e = elem;
    for (int k = from; k < n; ++k) e += (size[k] - 1) * stride[k];
    return e;
  }
};

// Do a (dims ia.., based at 0) and b (dims ib.., based at off) share a byte? Peels the largest
// stride s while both views lie in bands of width <= s along it (row i of a at i*s, row j of b at
// off + j*s): only rows with |off - (i - j) s| < s can meet, at most two values of i - j.
// Views that cannot be peeled are taken to overlap when their byte ranges do.
bool may_overlap(const Span& a, int ia, const Span& b, int ib, int64_t off) {
  if (off >= a.extent(ia) || -off >= b.extent(ib)) return false;
  const int64_t s = std::max(ia < a.n ? a.stride[ia] : 0, ib < b.n ? b.stride[ib] : 0);
  if (s == 0) return true;
  const bool pa = ia < a.n && a.stride[ia] == s, pb = ib < b.n && b.stride[ib] == s;
  const int ja = ia + int(pa), jb = ib + int(pb);
  if (a.extent(ja) > s || b.extent(jb) > s) return true;
  const int64_t na = pa ? a.size[ia] : 1, nb = pb ? b.size[ib] : 1;
  const int64_t k0 = off >= 0 ? off / s : -((-off + s - 1) / s);  // floor(off / s)
  for (int64_t k = k0; k <= k0 + 1; ++k)
    if (k >= -(nb - 1) && k <= na - 1 && may_overlap(a, ja, b, jb, off - k * s)) return true;
  return false;
}

bool overlaps(const TensorView& a, const TensorView& b) {
  if (a.device != b.device || a.device_id != b.device_id) return false;
  const Span sa(a), sb(b);
  return may_overlap(sa, 0, sb, 0, sb.base - sa.base);
}

// Does an output write some byte twice (a stride-0 or interleaved dim)? Conservative: each
// stride must step past everything the smaller strides cover.
bool self_overlaps(const TensorView& t) {
  const Span s(t);
  for (int k = 0; k < s.n; ++k)
    if (s.stride[k] < s.extent(k + 1)) return true;
  return false;
}

bool active(const Named& x) { return x.first->present() && x.first->numel() > 0; }

}  // namespace

void require_no_overlap(std::initializer_list<Named> outputs, std::initializer_list<Named> inputs) {
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    if (!active(*o)) continue;
    if (self_overlaps(*o->first))
      value_error(o->second, " (shape ", shape_str(*o->first), ") has strides under which two of "
                  "its elements share memory (e.g. a stride of 0); an output must not");
    for (auto p = outputs.begin(); p != o; ++p)
      if (active(*p) && overlaps(*o->first, *p->first))
        value_error(o->second, " and ", p->second, " share memory; outputs must not overlap");
    for (const Named& i : inputs)
      if (active(i) && overlaps(*o->first, *i.first))
        value_error("output ", o->second, " shares memory with input ", i.second,
                    "; outputs must not overlap inputs (pass a separate buffer)");
  }
}

bool env_check() {
  const char* s = std::getenv("CUATTN_CHECK");
  return s && s[0] && std::strcmp(s, "0") != 0;
}

}  // namespace detail
}  // namespace cuattn
