// module.cpp — the nanobind module cuattn._cuattn. Thin by design: convert DLPack arrays into
// TensorViews (no casts, no copies: every array argument is .noconvert()), release the GIL, call
// the C++ API, map its exceptions. Argument normalisation, stream resolution and output
// allocation live in python/cuattn/.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>

#include "cuattn/cuattn.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using In = nb::ndarray<nb::ro>;  // any dtype, shape, device; read-only view
using OptIn = std::optional<In>;
using Out = nb::ndarray<>;  // writable
using OptOut = std::optional<Out>;

cuattn::DType parse_dtype(const std::string& s) {
  using cuattn::DType;
  if (s == "float32") return DType::f32;
  if (s == "float16") return DType::f16;
  if (s == "bfloat16") return DType::bf16;
  if (s == "float8_e4m3fn" || s == "fp8_e4m3") return DType::fp8_e4m3;
  throw cuattn::ValueError("unknown dtype '" + s + "'");
}

// DLPack dtype -> cuattn dtype. `real` (from the Python layer) names the true dtype of arrays
// that NumPy can only export as raw uint16/uint8 (ml_dtypes bfloat16 / float8_e4m3fn).
cuattn::DType to_dtype(nb::dlpack::dtype t, const char* name, const std::string& real) {
  using cuattn::DType;
  using code = nb::dlpack::dtype_code;
  if (!real.empty() && t.code == uint8_t(code::UInt)) {
    const DType d = parse_dtype(real);
    if (cuattn::dtype_size(d) * 8 == t.bits) return d;
  }
  if (t.lanes == 1) {
    if (t.code == uint8_t(code::Float) && t.bits == 32) return DType::f32;
    if (t.code == uint8_t(code::Float) && t.bits == 16) return DType::f16;
    if (t.code == uint8_t(code::Float) && t.bits == 64) return DType::f64;
    if (t.code == uint8_t(code::Bfloat) && t.bits == 16) return DType::bf16;
    if (t.code == uint8_t(code::Float8_E4M3FN) && t.bits == 8) return DType::fp8_e4m3;
    if (t.code == uint8_t(code::Int) && t.bits == 32) return DType::i32;
    if (t.code == uint8_t(code::Int) && t.bits == 64) return DType::i64;
    if (t.code == uint8_t(code::UInt) && t.bits == 8) return DType::u8;
    if (t.code == uint8_t(code::UInt) && t.bits == 32) return DType::u32;
  }
  throw cuattn::ValueError(std::string(name) + " has an unsupported dtype (DLPack code " +
                           std::to_string(int(t.code)) + ", " + std::to_string(int(t.bits)) +
                           " bits)");
}

template <class A>
cuattn::TensorView view(const std::optional<A>& a, const char* name, const std::string& real = "") {
  cuattn::TensorView v;
  if (!a) return v;
  const A& x = *a;
  if (x.ndim() > size_t(cuattn::kMaxDims))
    throw cuattn::ValueError(std::string(name) + " has too many dims");
  v.ndim = int(x.ndim());
  v.dtype = to_dtype(x.dtype(), name, real);
  const int dt = x.device_type();
  if (dt == nb::device::cuda::value || dt == nb::device::cuda_managed::value)
    v.device = cuattn::DeviceType::cuda;
  else if (dt == nb::device::cpu::value || dt == nb::device::cuda_host::value)
    v.device = cuattn::DeviceType::cpu;
  else
    throw cuattn::ValueError(std::string(name) + " lives on an unsupported device (DLPack device "
                             "type " + std::to_string(dt) + ")");
  v.device_id = v.device == cuattn::DeviceType::cuda ? x.device_id() : 0;
  v.data = static_cast<char*>(x.data_handle()) + x.byte_offset();
  int64_t running = 1;
  for (int i = v.ndim - 1; i >= 0; --i) {
    v.shape[i] = int64_t(x.shape(size_t(i)));
    v.stride[i] = x.stride_ptr() ? x.stride(size_t(i)) : running;
    running *= v.shape[i];
  }
  return v;
}

cuattn::Stream as_stream(uintptr_t s) { return reinterpret_cast<cuattn::Stream>(s); }

// An owning device allocation behind cuattn.Array (freed with cudaFreeAsync on its stream).
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t nbytes = 0;
  int device = 0;
  uintptr_t stream = 0;
  DeviceBuffer(size_t n, int dev, uintptr_t s) : nbytes(n), device(dev), stream(s) {
    ptr = cuattn::device_malloc(n, dev, as_stream(s));
  }
  ~DeviceBuffer() {
    try {
      cuattn::device_free(ptr, device, as_stream(stream));
    } catch (...) {
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

NB_MODULE(_cuattn, m) {
  m.doc() = "cuattn C++/CUDA core (internal; use the cuattn package)";
  // Plans and device buffers still referenced from module globals when the interpreter exits are
  // released by the OS; nanobind's shutdown leak report about them is noise, not a bug.
  nb::set_leak_warnings(false);

  static nb::exception<cuattn::CudaError> cuda_error(m, "CudaError", PyExc_RuntimeError);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const cuattn::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const cuattn::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const cuattn::NotImplementedError& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    }
  });

  // ---- attention family ---------------------------------------------------------------------
  m.def(
      "attention",
      [](In q, In k, In v, Out out, OptOut lse, OptIn cu_q, OptIn cu_k, OptIn sinks, OptIn bm_num,
         OptIn bm_idx, OptIn bm_pid, OptIn bm_fnum, OptIn bm_fidx, OptIn bm_bits, int bm_block_q,
         int bm_block_kv, int64_t bm_q_len, int64_t bm_kv_len, int64_t max_seqlen_q,
         int64_t max_seqlen_k, bool causal, int64_t window_left, int64_t window_right, double scale,
         double softcap, const std::string& layout, bool check, const std::string& dtype,
         uintptr_t stream) {
        cuattn::AttentionArgs a;
        a.q = view(OptIn(q), "q", dtype);
        a.k = view(OptIn(k), "k", dtype);
        a.v = view(OptIn(v), "v", dtype);
        a.out = view(OptOut(out), "out", dtype);
        a.lse = view(lse, "lse");
        a.cu_seqlens_q = view(cu_q, "cu_seqlens_q");
        a.cu_seqlens_k = view(cu_k, "cu_seqlens_k");
        a.sinks = view(sinks, "sinks");
        a.block_mask.kv_num_blocks = view(bm_num, "block_mask.kv_num_blocks");
        a.block_mask.kv_indices = view(bm_idx, "block_mask.kv_indices");
        a.block_mask.partial_ids = view(bm_pid, "block_mask.partial_ids");
        a.block_mask.full_kv_num_blocks = view(bm_fnum, "block_mask.full_kv_num_blocks");
        a.block_mask.full_kv_indices = view(bm_fidx, "block_mask.full_kv_indices");
        a.block_mask.partial_bits = view(bm_bits, "block_mask.partial_bits");
        a.block_mask.block_q = bm_block_q;
        a.block_mask.block_kv = bm_block_kv;
        a.block_mask.q_len = bm_q_len;
        a.block_mask.kv_len = bm_kv_len;
        a.max_seqlen_q = max_seqlen_q;
        a.max_seqlen_k = max_seqlen_k;
        a.causal = causal;
        a.window_left = window_left;
        a.window_right = window_right;
        a.scale = scale;
        a.softcap = softcap;
        a.layout = cuattn::parse_layout(layout);
        a.check = check;
        nb::gil_scoped_release nogil;
        cuattn::attention(a, as_stream(stream));
      },
      "q"_a.noconvert(), "k"_a.noconvert(), "v"_a.noconvert(), "out"_a.noconvert(),
      "lse"_a.noconvert().none(), "cu_seqlens_q"_a.noconvert().none(),
      "cu_seqlens_k"_a.noconvert().none(), "sinks"_a.noconvert().none(),
      "bm_num"_a.noconvert().none(), "bm_idx"_a.noconvert().none(), "bm_pid"_a.noconvert().none(),
      "bm_fnum"_a.noconvert().none(), "bm_fidx"_a.noconvert().none(),
      "bm_bits"_a.noconvert().none(), "bm_block_q"_a, "bm_block_kv"_a, "bm_q_len"_a,
      "bm_kv_len"_a, "max_seqlen_q"_a, "max_seqlen_k"_a, "causal"_a, "window_left"_a,
      "window_right"_a, "scale"_a, "softcap"_a, "layout"_a, "check"_a, "dtype"_a, "stream"_a,
      "Dense / varlen / block-sparse attention into `out` (see cuattn.attention).");

  m.def(
      "naive_attention",
      [](In q, In k, In v, Out out, bool causal, double scale, const std::string& layout,
         const std::string& dtype, uintptr_t stream) {
        cuattn::NaiveArgs a;
        a.q = view(OptIn(q), "q", dtype);
        a.k = view(OptIn(k), "k", dtype);
        a.v = view(OptIn(v), "v", dtype);
        a.out = view(OptOut(out), "out", dtype);
        a.causal = causal;
        a.scale = scale;
        a.layout = cuattn::parse_layout(layout);
        nb::gil_scoped_release nogil;
        cuattn::naive_attention(a, as_stream(stream));
      },
      "q"_a.noconvert(), "k"_a.noconvert(), "v"_a.noconvert(), "out"_a.noconvert(), "causal"_a,
      "scale"_a, "layout"_a, "dtype"_a, "stream"_a,
      "Attention that materialises the score matrix (see cuattn.naive_attention).");

  m.def(
      "merge_states",
      [](In o_a, In lse_a, In o_b, In lse_b, Out out, OptOut lse_out, const std::string& layout,
         const std::string& dtype, uintptr_t stream) {
        cuattn::MergeArgs a;
        a.o_a = view(OptIn(o_a), "o_a", dtype);
        a.lse_a = view(OptIn(lse_a), "lse_a");
        a.o_b = view(OptIn(o_b), "o_b", dtype);
        a.lse_b = view(OptIn(lse_b), "lse_b");
        a.out = view(OptOut(out), "out", dtype);
        a.lse_out = view(lse_out, "lse_out");
        a.layout = cuattn::parse_layout(layout);
        nb::gil_scoped_release nogil;
        cuattn::merge_states(a, as_stream(stream));
      },
      "o_a"_a.noconvert(), "lse_a"_a.noconvert(), "o_b"_a.noconvert(), "lse_b"_a.noconvert(),
      "out"_a.noconvert(), "lse_out"_a.noconvert().none(), "layout"_a, "dtype"_a, "stream"_a,
      "Merges two partial attention results (see cuattn.merge_states).");

  // ---- paged ----------------------------------------------------------------------------------
  nb::class_<cuattn::DecodePlan>(m, "DecodePlan",
                                 "Host-side decode schedule and device workspace (see "
                                 "cuattn.plan_decode). Reusable for calls of the same shapes.")
      .def_ro("batch", &cuattn::DecodePlan::batch)
      .def_ro("num_splits", &cuattn::DecodePlan::num_splits)
      .def_ro("max_splits", &cuattn::DecodePlan::max_splits)
      .def_ro("chunk_tokens", &cuattn::DecodePlan::chunk_tokens)
      .def_ro("seq_lens", &cuattn::DecodePlan::seq_lens)
      .def_ro("workspace_bytes", &cuattn::DecodePlan::workspace_bytes)
      .def_prop_ro("num_heads_q", [](const cuattn::DecodePlan& p) { return p.opt.num_heads_q; })
      .def_prop_ro("num_heads_kv", [](const cuattn::DecodePlan& p) { return p.opt.num_heads_kv; })
      .def_prop_ro("head_dim", [](const cuattn::DecodePlan& p) { return p.opt.head_dim; })
      .def_prop_ro("page_size", [](const cuattn::DecodePlan& p) { return p.opt.page_size; })
      .def_prop_ro("q_len", [](const cuattn::DecodePlan& p) { return p.opt.seqlen_q; })
      .def_prop_ro("device", [](const cuattn::DecodePlan& p) {
        return p.opt.device == cuattn::DeviceType::cuda ? "cuda:" + std::to_string(p.opt.device_id)
                                                        : std::string("cpu");
      })
      .def("__repr__", [](const cuattn::DecodePlan& p) {
        return "DecodePlan(batch=" + std::to_string(p.batch) +
               ", max_splits=" + std::to_string(p.max_splits) +
               ", chunk_tokens=" + std::to_string(p.chunk_tokens) + ")";
      });

  m.def(
      "paged_attention",
      [](In q, In k_cache, In v_cache, In block_table, In seq_lens, Out out, OptOut lse,
         OptIn sinks, OptIn k_scale_t, OptIn v_scale_t, double k_scale, double v_scale,
         double scale, double softcap, int64_t window_left, int64_t window_right,
         const std::string& kv_layout, bool check, const cuattn::DecodePlan* plan,
         const std::string& dtype, const std::string& kv_dtype, uintptr_t stream) {
        cuattn::PagedArgs a;
        a.q = view(OptIn(q), "q", dtype);
        a.k_cache = view(OptIn(k_cache), "k_cache", kv_dtype);
        a.v_cache = view(OptIn(v_cache), "v_cache", kv_dtype);
        a.block_table = view(OptIn(block_table), "block_table");
        a.seq_lens = view(OptIn(seq_lens), "seq_lens");
        a.out = view(OptOut(out), "out", dtype);
        a.lse = view(lse, "lse");
        a.sinks = view(sinks, "sinks");
        a.k_scale_t = view(k_scale_t, "k_scale");
        a.v_scale_t = view(v_scale_t, "v_scale");
        a.k_scale = k_scale;
        a.v_scale = v_scale;
        a.scale = scale;
        a.softcap = softcap;
        a.window_left = window_left;
        a.window_right = window_right;
        a.kv_layout = cuattn::parse_kv_layout(kv_layout);
        a.check = check;
        a.plan = plan;
        nb::gil_scoped_release nogil;
        cuattn::paged_attention(a, as_stream(stream));
      },
      "q"_a.noconvert(), "k_cache"_a.noconvert(), "v_cache"_a.noconvert(),
      "block_table"_a.noconvert(), "seq_lens"_a.noconvert(), "out"_a.noconvert(),
      "lse"_a.noconvert().none(), "sinks"_a.noconvert().none(), "k_scale_t"_a.noconvert().none(),
      "v_scale_t"_a.noconvert().none(), "k_scale"_a, "v_scale"_a, "scale"_a, "softcap"_a,
      "window_left"_a, "window_right"_a, "kv_layout"_a, "check"_a, "plan"_a.none(), "dtype"_a,
      "kv_dtype"_a, "stream"_a, "Paged KV-cache attention (see cuattn.paged_attention).");

  m.def(
      "append_paged_kv",
      [](In k_new, In v_new, Out k_cache, Out v_cache, In slot_mapping, OptIn k_scale_t,
         OptIn v_scale_t, double k_scale, double v_scale, const std::string& kv_layout, bool check,
         const std::string& dtype, const std::string& kv_dtype, uintptr_t stream) {
        cuattn::AppendArgs a;
        a.k_new = view(OptIn(k_new), "k_new", dtype);
        a.v_new = view(OptIn(v_new), "v_new", dtype);
        a.k_cache = view(OptOut(k_cache), "k_cache", kv_dtype);
        a.v_cache = view(OptOut(v_cache), "v_cache", kv_dtype);
        a.slot_mapping = view(OptIn(slot_mapping), "slot_mapping");
        a.k_scale_t = view(k_scale_t, "k_scale");
        a.v_scale_t = view(v_scale_t, "v_scale");
        a.k_scale = k_scale;
        a.v_scale = v_scale;
        a.kv_layout = cuattn::parse_kv_layout(kv_layout);
        a.check = check;
        nb::gil_scoped_release nogil;
        cuattn::append_paged_kv(a, as_stream(stream));
      },
      "k_new"_a.noconvert(), "v_new"_a.noconvert(), "k_cache"_a.noconvert(),
      "v_cache"_a.noconvert(), "slot_mapping"_a.noconvert(), "k_scale_t"_a.noconvert().none(),
      "v_scale_t"_a.noconvert().none(), "k_scale"_a, "v_scale"_a, "kv_layout"_a, "check"_a,
      "dtype"_a, "kv_dtype"_a, "stream"_a,
      "Writes new tokens into a paged cache (see cuattn.append_paged_kv).");

  m.def(
      "mla_decode",
      [](In q, In kv_cache, In block_table, In seq_lens, Out out, Out lse, double scale,
         int head_dim_v, bool causal, bool check, const cuattn::DecodePlan* plan,
         const std::string& dtype, uintptr_t stream) {
        cuattn::MlaDecodeArgs a;
        a.q = view(OptIn(q), "q", dtype);
        a.kv_cache = view(OptIn(kv_cache), "kv_cache", dtype);
        a.block_table = view(OptIn(block_table), "block_table");
        a.seq_lens = view(OptIn(seq_lens), "seq_lens");
        a.out = view(OptOut(out), "out", dtype);
        a.lse = view(OptOut(lse), "lse");
        a.scale = scale;
        a.head_dim_v = head_dim_v;
        a.causal = causal;
        a.check = check;
        a.plan = plan;
        nb::gil_scoped_release nogil;
        cuattn::mla_decode(a, as_stream(stream));
      },
      "q"_a.noconvert(), "kv_cache"_a.noconvert(), "block_table"_a.noconvert(),
      "seq_lens"_a.noconvert(), "out"_a.noconvert(), "lse"_a.noconvert(), "scale"_a,
      "head_dim_v"_a, "causal"_a, "check"_a, "plan"_a.none(), "dtype"_a, "stream"_a,
      "MLA decode over a paged latent cache (see cuattn.mla_decode).");

  m.def(
      "mla_attention",
      [](In q, In k_latent, In v_latent, In k_proj, In v_proj, Out out, bool causal, double scale,
         const std::string& dtype, uintptr_t stream) {
        cuattn::MlaArgs a;
        a.q = view(OptIn(q), "q", dtype);
        a.k_latent = view(OptIn(k_latent), "k_latent", dtype);
        a.v_latent = view(OptIn(v_latent), "v_latent", dtype);
        a.k_proj = view(OptIn(k_proj), "k_proj", dtype);
        a.v_proj = view(OptIn(v_proj), "v_proj", dtype);
        a.out = view(OptOut(out), "out", dtype);
        a.causal = causal;
        a.scale = scale;
        nb::gil_scoped_release nogil;
        cuattn::mla_attention(a, as_stream(stream));
      },
      "q"_a.noconvert(), "k_latent"_a.noconvert(), "v_latent"_a.noconvert(),
      "k_proj"_a.noconvert(), "v_proj"_a.noconvert(), "out"_a.noconvert(), "causal"_a, "scale"_a,
      "dtype"_a, "stream"_a, "The chapter's multi-head latent attention (see cuattn.mla_attention).");

  m.def(
      "plan_decode",
      [](std::vector<int32_t> seq_lens, int num_heads_q, int num_heads_kv, int head_dim,
         int head_dim_v, int page_size, int q_len, bool cuda, int device_id, int num_sms) {
        cuattn::PlanOptions o;
        o.num_heads_q = num_heads_q;
        o.num_heads_kv = num_heads_kv;
        o.head_dim = head_dim;
        o.head_dim_v = head_dim_v;
        o.page_size = page_size;
        o.seqlen_q = q_len;
        o.device = cuda ? cuattn::DeviceType::cuda : cuattn::DeviceType::cpu;
        o.device_id = device_id;
        o.num_sms = num_sms;
        return cuattn::plan_decode(seq_lens.data(), int(seq_lens.size()), o);
      },
      "seq_lens"_a, "num_heads_q"_a, "num_heads_kv"_a, "head_dim"_a, "head_dim_v"_a,
      "page_size"_a, "q_len"_a, "cuda"_a, "device_id"_a, "num_sms"_a,
      "Builds a DecodePlan from host sequence lengths (see cuattn.plan_decode).");

  // ---- runtime, build and device information ---------------------------------------------------
  nb::class_<DeviceBuffer>(m, "DeviceBuffer", "An owning GPU allocation (cudaMallocAsync).")
      .def(nb::init<size_t, int, uintptr_t>(), "nbytes"_a, "device"_a, "stream"_a)
      .def_prop_ro("ptr", [](const DeviceBuffer& b) { return reinterpret_cast<uintptr_t>(b.ptr); })
      .def_ro("nbytes", &DeviceBuffer::nbytes)
      .def_ro("device", &DeviceBuffer::device);

  m.def(
      "buffer_ndarray",
      [](nb::handle owner, uintptr_t ptr, std::vector<size_t> shape, std::vector<int64_t> strides,
         int code, int bits, bool cuda, int device_id) {
        nb::dlpack::dtype dt{uint8_t(code), uint8_t(bits), 1};
        return nb::ndarray<nb::array_api>(reinterpret_cast<void*>(ptr), shape.size(), shape.data(), owner,
                             strides.data(), dt,
                             cuda ? nb::device::cuda::value : nb::device::cpu::value, device_id);
      },
      "owner"_a, "ptr"_a, "shape"_a, "strides"_a, "code"_a, "bits"_a, "cuda"_a, "device_id"_a,
      "A DLPack-exportable view of memory kept alive by `owner` (for cuattn.Array).");

  m.def(
      "memcpy",
      [](uintptr_t dst, uintptr_t src, size_t nbytes, uintptr_t stream, bool sync) {
        nb::gil_scoped_release nogil;
        cuattn::memcpy_any(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), nbytes,
                           as_stream(stream), sync);
      },
      "dst"_a, "src"_a, "nbytes"_a, "stream"_a, "sync"_a, "cudaMemcpyAsync(cudaMemcpyDefault).");

  m.def("stream_synchronize", [](uintptr_t s) {
    nb::gil_scoped_release nogil;
    cuattn::stream_synchronize(as_stream(s));
  }, "stream"_a, "cudaStreamSynchronize.");

  m.def("stream_is_capturing", [](uintptr_t s) { return cuattn::stream_is_capturing(as_stream(s)); },
        "stream"_a, "cudaStreamIsCapturing != None.");

  m.def(
      "array_info",
      [](In a) {
        const cuattn::TensorView v = view(OptIn(a), "array");
        std::vector<int64_t> shape(v.shape, v.shape + v.ndim), strides(v.stride, v.stride + v.ndim);
        return nb::make_tuple(reinterpret_cast<uintptr_t>(v.data), shape, strides,
                              int(a.dtype().code), int(a.dtype().bits), v.is_cuda(), v.device_id);
      },
      "a"_a.noconvert(), "(ptr, shape, strides in elements, dlpack code, bits, is_cuda, device) of an array.");

  m.def("cuda_available", &cuattn::cuda_available, "True when a usable CUDA GPU is present.");
  m.def("device_count", &cuattn::device_count, "Number of CUDA devices.");
  m.def(
      "build_info",
      []() {
        const cuattn::BuildInfo b = cuattn::build_info();
        nb::dict d;
        d["version"] = b.version;
        d["cuda"] = b.cuda;
        d["cuda_version"] = b.cuda_version;
        d["archs"] = b.archs;
        d["head_dims"] = b.head_dims;
        return d;
      },
      "How this cuattn was built.");
  m.def(
      "device_info",
      [](int device) {
        const cuattn::DeviceInfo i = cuattn::device_info(device);
        nb::dict d;
        d["available"] = i.available;
        d["reason"] = i.reason;
        d["device"] = i.device;
        d["name"] = i.name;
        d["sm_count"] = i.sm_count;
        d["compute_capability"] = nb::make_tuple(i.cc_major, i.cc_minor);
        d["total_memory"] = i.total_memory;
        d["free_memory"] = i.free_memory;
        d["driver_version"] = i.driver_version;
        d["runtime_version"] = i.runtime_version;
        d["l2_bytes"] = i.l2_bytes;
        d["smem_per_block_optin"] = i.smem_per_block_optin;
        d["clock_khz"] = i.clock_khz;
        d["mem_clock_khz"] = i.mem_clock_khz;
        d["mem_bus_width"] = i.mem_bus_width;
        return d;
      },
      "device"_a = 0, "Properties of one CUDA device, or why it is unavailable.");
  m.def("set_num_threads", &cuattn::set_num_threads, "n"_a, "Threads of the CPU backend (n >= 1).");
  m.def("get_num_threads", &cuattn::get_num_threads, "Threads the CPU backend uses.");
}
