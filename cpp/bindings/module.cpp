// module.cpp — the nanobind module cuattn._cuattn. Thin by design: the C++ argument structs are
// Python classes filled by name; their tensor fields turn DLPack arrays into TensorViews (no casts,
// no copies); each call releases the GIL, calls the C++ API and maps its exceptions. Argument normalisation, stream resolution and output
// allocation live in python/cuattn/.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <memory>
#include <optional>
#include <string>

#include "cuattn/cuattn.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using In = nb::ndarray<nb::ro>;  // any dtype, shape, device; read-only view
using OptIn = std::optional<In>;
using Out = nb::ndarray<>;  // writable

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
    throw cuattn::ValueError(std::string(name) + " has " + std::to_string(x.ndim()) +
                             " dims; at most " + std::to_string(cuattn::kMaxDims) + " are supported");
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

// ---- argument structs ---------------------------------------------------------------------------
// Each C++ argument struct is a Python class filled by name (a new field is one line below). A
// tensor field takes None, an array (DLPack capsule or object) or a pair (array, dtype name) for a
// raw unsigned view of a dtype its producer cannot export (NumPy bfloat16 / float8_e4m3fn, uint8
// fp8 caches). The struct holds the imported arrays until it is dropped, so every view it hands to
// C++ stays valid for the call.
template <class A>
struct Bound : A {
  std::vector<In> held;  // every array a field was given (a cleared field's too, until the end)
  std::shared_ptr<const cuattn::DecodePlan> plan_ref;
  Bound() { held.reserve(8); }
};

std::string py_type(nb::handle x) { return nb::type_name(x.type()).c_str(); }

cuattn::TensorView to_view(nb::handle x, const char* name, bool writable, const std::string& real,
                           std::optional<In>& held) {
  if (writable) {
    Out o;
    if (nb::try_cast(x, o, false)) {
      held = In(o);
      return view(std::optional<Out>(o), name, real);
    }
  }
  In i;
  if (nb::try_cast(x, i, false)) {
    if (writable)
      throw cuattn::ValueError(std::string(name) + " is read-only; an output must be writable");
    held = i;
    return view(held, name, real);
  }
  throw cuattn::TypeError(std::string(name) + " must be an array with __dlpack__, got " +
                          py_type(x));
}

template <class A>
void set_tensor(Bound<A>& a, cuattn::TensorView& field, const char* name, bool writable,
                nb::handle x) {
  if (x.is_none()) {
    field = cuattn::TensorView{};
    return;
  }
  nb::handle arr = x;
  std::string real;
  if (nb::isinstance<nb::tuple>(x) && nb::len(x) == 2) {
    arr = x[0];
    if (!nb::try_cast(x[1], real, false))
      throw cuattn::TypeError(std::string(name) + ": the dtype name of (array, dtype) must be a str");
  }
  std::optional<In> held;
  field = to_view(arr, name, writable, real, held);
  a.held.push_back(std::move(*held));
}

// Binds tensor field `f` of A as property `name` (error messages say `what`, default `name`).
template <class A>
void tensor(nb::class_<Bound<A>>& c, const char* name, cuattn::TensorView A::*f,
            bool writable = false, const char* what = nullptr) {
  const char* shown = what ? what : name;
  c.def_prop_rw(
      name, [f](const Bound<A>& a) { return (a.*f).present(); },
      [f, shown, writable](Bound<A>& a, nb::handle x) { set_tensor(a, a.*f, shown, writable, x); },
      nb::arg("value").none());
}
template <class A>
void output(nb::class_<Bound<A>>& c, const char* name, cuattn::TensorView A::*f) {
  tensor(c, name, f, true);
}

template <class A>
nb::class_<Bound<A>> args_class(nb::module_& m, const char* name) {
  nb::class_<Bound<A>> c(m, name);
  c.def(nb::init<>());
  return c;
}

// The optional decode plan of a paged / MLA call (a DecodePlan or None).
template <class A>
void plan_field(nb::class_<Bound<A>>& c) {
  c.def_prop_rw(
      "plan", [](const Bound<A>& a) { return a.plan != nullptr; },
      [](Bound<A>& a, nb::handle x) {
        std::shared_ptr<cuattn::DecodePlan> p;
        if (!x.is_none() && !nb::try_cast(x, p, false))
          throw cuattn::TypeError("plan must be a DecodePlan (from cuattn.plan_decode) or None, got " +
                                  py_type(x));
        a.plan_ref = p;
        a.plan = p.get();
      },
      nb::arg("value").none());
}

template <class A>
void layout_field(nb::class_<Bound<A>>& c) {
  c.def_prop_rw(
      "layout", [](const Bound<A>& a) { return a.layout == cuattn::Layout::bshd ? "bshd" : "bhsd"; },
      [](Bound<A>& a, const std::string& s) { a.layout = cuattn::parse_layout(s); });
}
template <class A>
void kv_layout_field(nb::class_<Bound<A>>& c) {
  c.def_prop_rw(
      "kv_layout",
      [](const Bound<A>& a) { return a.kv_layout == cuattn::KVLayout::NHD ? "NHD" : "HND"; },
      [](Bound<A>& a, const std::string& s) { a.kv_layout = cuattn::parse_kv_layout(s); });
}

// Binds `name(args, stream)`: the C++ call with the GIL released.
template <class A>
void call(nb::module_& m, const char* name, void (*f)(const A&, cuattn::Stream), const char* doc) {
  m.def(
      name,
      [f](const Bound<A>& a, uintptr_t stream) {
        nb::gil_scoped_release nogil;
        f(a, as_stream(stream));
      },
      "args"_a, "stream"_a, doc);
}

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

  // ---- argument structs (fields by name; see Bound) and the calls --------------------------------
  using namespace cuattn;
  auto bm = args_class<BlockMaskArgs>(m, "BlockMaskArgs");
  tensor(bm, "kv_num_blocks", &BlockMaskArgs::kv_num_blocks, false, "block_mask.kv_num_blocks");
  tensor(bm, "kv_indices", &BlockMaskArgs::kv_indices, false, "block_mask.kv_indices");
  tensor(bm, "partial_ids", &BlockMaskArgs::partial_ids, false, "block_mask.partial_ids");
  tensor(bm, "full_kv_num_blocks", &BlockMaskArgs::full_kv_num_blocks, false,
         "block_mask.full_kv_num_blocks");
  tensor(bm, "full_kv_indices", &BlockMaskArgs::full_kv_indices, false,
         "block_mask.full_kv_indices");
  tensor(bm, "partial_bits", &BlockMaskArgs::partial_bits, false, "block_mask.partial_bits");
  bm.def_rw("block_q", &BlockMaskArgs::block_q)
      .def_rw("block_kv", &BlockMaskArgs::block_kv)
      .def_rw("q_len", &BlockMaskArgs::q_len)
      .def_rw("kv_len", &BlockMaskArgs::kv_len);

  auto at = args_class<AttentionArgs>(m, "AttentionArgs");
  tensor(at, "q", &AttentionArgs::q);
  tensor(at, "k", &AttentionArgs::k);
  tensor(at, "v", &AttentionArgs::v);
  output(at, "out", &AttentionArgs::out);
  output(at, "lse", &AttentionArgs::lse);
  tensor(at, "cu_seqlens_q", &AttentionArgs::cu_seqlens_q);
  tensor(at, "cu_seqlens_k", &AttentionArgs::cu_seqlens_k);
  tensor(at, "sinks", &AttentionArgs::sinks);
  at.def_prop_rw(
      "block_mask", [](const Bound<AttentionArgs>& a) { return a.block_mask.present(); },
      [](Bound<AttentionArgs>& a, const Bound<BlockMaskArgs>& b) {
        a.block_mask = b;
        a.held.insert(a.held.end(), b.held.begin(), b.held.end());
      });
  at.def_rw("max_seqlen_q", &AttentionArgs::max_seqlen_q)
      .def_rw("max_seqlen_k", &AttentionArgs::max_seqlen_k)
      .def_rw("causal", &AttentionArgs::causal)
      .def_rw("window_left", &AttentionArgs::window_left)
      .def_rw("window_right", &AttentionArgs::window_right)
      .def_rw("scale", &AttentionArgs::scale)
      .def_rw("softcap", &AttentionArgs::softcap)
      .def_rw("check", &AttentionArgs::check)
      .def_rw("variant", &AttentionArgs::variant);  // internal: tests and bench pick kernels
  layout_field(at);
  call(m, "attention", &cuattn::attention,
       "Dense / varlen / block-sparse attention into args.out (see cuattn.attention).");

  auto na = args_class<NaiveArgs>(m, "NaiveArgs");
  tensor(na, "q", &NaiveArgs::q);
  tensor(na, "k", &NaiveArgs::k);
  tensor(na, "v", &NaiveArgs::v);
  output(na, "out", &NaiveArgs::out);
  na.def_rw("causal", &NaiveArgs::causal).def_rw("scale", &NaiveArgs::scale);
  layout_field(na);
  call(m, "naive_attention", &cuattn::naive_attention,
       "Attention that materialises the score matrix (see cuattn.naive_attention).");

  auto mg = args_class<MergeArgs>(m, "MergeArgs");
  tensor(mg, "o_a", &MergeArgs::o_a);
  tensor(mg, "lse_a", &MergeArgs::lse_a);
  tensor(mg, "o_b", &MergeArgs::o_b);
  tensor(mg, "lse_b", &MergeArgs::lse_b);
  output(mg, "out", &MergeArgs::out);
  output(mg, "lse_out", &MergeArgs::lse_out);
  layout_field(mg);
  call(m, "merge_states", &cuattn::merge_states,
       "Merges two partial attention results (see cuattn.merge_states).");

  // ---- paged ----------------------------------------------------------------------------------
  nb::class_<cuattn::DecodePlan>(m, "DecodePlan",
                                 "Host-side decode schedule and device workspace (see "
                                 "cuattn.plan_decode). Reusable for calls of the same shapes.")
      .def_ro("batch", &cuattn::DecodePlan::batch)
      .def_ro("max_splits", &cuattn::DecodePlan::max_splits)
      .def_ro("chunk_tokens", &cuattn::DecodePlan::chunk_tokens)
      .def_ro("seq_lens", &cuattn::DecodePlan::seq_lens)
      .def_ro("workspace_bytes", &cuattn::DecodePlan::workspace_bytes)
      .def_ro("split_capacity", &cuattn::DecodePlan::split_capacity)
      .def(
          "update",
          [](cuattn::DecodePlan& p, const std::vector<int32_t>& seq_lens) {
            cuattn::update_plan(p, seq_lens.data(), int(seq_lens.size()));
          },
          nb::arg("seq_lens"), "New lengths, same batch, same workspace (see cuattn.DecodePlan.update).")
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

  auto pa = args_class<PagedArgs>(m, "PagedArgs");
  tensor(pa, "q", &PagedArgs::q);
  tensor(pa, "k_cache", &PagedArgs::k_cache);
  tensor(pa, "v_cache", &PagedArgs::v_cache);
  tensor(pa, "block_table", &PagedArgs::block_table);
  tensor(pa, "seq_lens", &PagedArgs::seq_lens);
  output(pa, "out", &PagedArgs::out);
  output(pa, "lse", &PagedArgs::lse);
  tensor(pa, "sinks", &PagedArgs::sinks);
  tensor(pa, "cu_seqlens_q", &PagedArgs::cu_seqlens_q);
  tensor(pa, "k_scale_t", &PagedArgs::k_scale_t, false, "k_scale");
  tensor(pa, "v_scale_t", &PagedArgs::v_scale_t, false, "v_scale");
  pa.def_rw("max_seqlen_q", &PagedArgs::max_seqlen_q)
      .def_rw("k_scale", &PagedArgs::k_scale)
      .def_rw("v_scale", &PagedArgs::v_scale)
      .def_rw("scale", &PagedArgs::scale)
      .def_rw("softcap", &PagedArgs::softcap)
      .def_rw("window_left", &PagedArgs::window_left)
      .def_rw("window_right", &PagedArgs::window_right)
      .def_rw("causal", &PagedArgs::causal)
      .def_rw("check", &PagedArgs::check)
      .def_rw("variant", &PagedArgs::variant);  // internal: tests and bench pick kernels
  kv_layout_field(pa);
  plan_field(pa);
  call(m, "paged_attention", &cuattn::paged_attention,
       "Paged KV-cache attention (see cuattn.paged_attention).");

  auto ap = args_class<AppendArgs>(m, "AppendArgs");
  tensor(ap, "k_new", &AppendArgs::k_new);
  tensor(ap, "v_new", &AppendArgs::v_new);
  output(ap, "k_cache", &AppendArgs::k_cache);
  output(ap, "v_cache", &AppendArgs::v_cache);
  tensor(ap, "slot_mapping", &AppendArgs::slot_mapping);
  tensor(ap, "k_scale_t", &AppendArgs::k_scale_t, false, "k_scale");
  tensor(ap, "v_scale_t", &AppendArgs::v_scale_t, false, "v_scale");
  ap.def_rw("k_scale", &AppendArgs::k_scale)
      .def_rw("v_scale", &AppendArgs::v_scale)
      .def_rw("check", &AppendArgs::check);
  kv_layout_field(ap);
  call(m, "append_paged_kv", &cuattn::append_paged_kv,
       "Writes new tokens into a paged cache (see cuattn.append_paged_kv).");

  auto md = args_class<MlaDecodeArgs>(m, "MlaDecodeArgs");
  tensor(md, "q", &MlaDecodeArgs::q);
  tensor(md, "kv_cache", &MlaDecodeArgs::kv_cache);
  tensor(md, "block_table", &MlaDecodeArgs::block_table);
  tensor(md, "seq_lens", &MlaDecodeArgs::seq_lens);
  output(md, "out", &MlaDecodeArgs::out);
  output(md, "lse", &MlaDecodeArgs::lse);
  tensor(md, "kv_scale_t", &MlaDecodeArgs::kv_scale_t, false, "kv_scale");
  md.def_rw("kv_scale", &MlaDecodeArgs::kv_scale)
      .def_rw("scale", &MlaDecodeArgs::scale)
      .def_rw("head_dim_v", &MlaDecodeArgs::head_dim_v)
      .def_rw("causal", &MlaDecodeArgs::causal)
      .def_rw("check", &MlaDecodeArgs::check)
      .def_rw("variant", &MlaDecodeArgs::variant);  // internal: tests and bench pick kernels
  plan_field(md);
  call(m, "mla_decode", &cuattn::mla_decode,
       "MLA decode over a paged latent cache (see cuattn.mla_decode).");

  auto ml = args_class<MlaArgs>(m, "MlaArgs");
  tensor(ml, "q", &MlaArgs::q);
  tensor(ml, "k_latent", &MlaArgs::k_latent);
  tensor(ml, "v_latent", &MlaArgs::v_latent);
  tensor(ml, "k_proj", &MlaArgs::k_proj);
  tensor(ml, "v_proj", &MlaArgs::v_proj);
  output(ml, "out", &MlaArgs::out);
  ml.def_rw("causal", &MlaArgs::causal).def_rw("scale", &MlaArgs::scale);
  ml.def_prop_rw(  // internal: tests and bench pick the order (0 auto, 1 materialise, 2 absorb, 3 per pair)
      "method", [](const Bound<MlaArgs>& a) { return int(a.method); },
      [](Bound<MlaArgs>& a, int v) {
        if (v < 0 || v > 3) throw cuattn::ValueError("mla_attention method must be 0..3");
        a.method = MlaMethod(v);
      });
  call(m, "mla_attention", &cuattn::mla_attention,
       "Multi-head latent attention (see cuattn.mla_attention).");

  nb::class_<PlanOptions>(m, "PlanOptions")
      .def(nb::init<>())
      .def_rw("num_heads_q", &PlanOptions::num_heads_q)
      .def_rw("num_heads_kv", &PlanOptions::num_heads_kv)
      .def_rw("head_dim", &PlanOptions::head_dim)
      .def_rw("head_dim_v", &PlanOptions::head_dim_v)
      .def_rw("page_size", &PlanOptions::page_size)
      .def_rw("seqlen_q", &PlanOptions::seqlen_q)
      .def_rw("device_id", &PlanOptions::device_id)
      .def_rw("num_sms", &PlanOptions::num_sms)
      .def_prop_rw(
          "cuda", [](const PlanOptions& o) { return o.device == DeviceType::cuda; },
          [](PlanOptions& o, bool cuda) { o.device = cuda ? DeviceType::cuda : DeviceType::cpu; });
  m.def(
      "plan_decode",
      [](const std::vector<int32_t>& seq_lens, const PlanOptions& opt) {
        return cuattn::plan_decode(seq_lens.data(), int(seq_lens.size()), opt);
      },
      "seq_lens"_a, "options"_a,
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

  m.def("stream_wait", [](uintptr_t waiting, uintptr_t signalling) {
    cuattn::stream_wait(as_stream(waiting), as_stream(signalling));
  }, "waiting"_a, "signalling"_a, "Orders `waiting` after the work queued on `signalling` (an event).");

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
