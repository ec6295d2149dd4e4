// harness.cpp — see harness.h.
#include "harness.h"

#include "backend.h"  // the CPU backend's element conversions

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cctype>
#include <cstdarg>
#include <cstring>
#include <random>
#include <thread>

#ifdef CUATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace harness {

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return buf;
}

void usage_error(const Env& env, const std::string& msg) {
  fprintf(stderr, "%s: %s (see --help)\n", env.program.c_str(), msg.c_str());
  exit(kExitUsage);
}

void progress(const char* f, ...) {
  va_list ap;
  va_start(ap, f);
  vfprintf(stdout, f, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
}

std::string bytes_str(double b) {
  if (b >= 1024.0 * 1024 * 1024) return fmt("%.2f GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt("%.1f MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt("%.1f KiB", b / 1024.0);
  return fmt("%.0f B", b);
}

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  const int64_t threads = std::min<int64_t>(n, std::max(1u, std::thread::hardware_concurrency()));
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (int64_t i = t; i < n; i += threads) fn(i);
    });
  for (auto& th : pool) th.join();
}

#ifdef CUATTN_WITH_CUDA
static void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw cuattn::CudaError(fmt("%s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e)));
  }
}
#endif

// ---------------------------------------------------------------------------------------------
// Element conversions: the CPU backend's (round to nearest even), plus the integer dtypes.

float to_float(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::f16: return cuattn::cpu::half_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::bf16: return cuattn::cpu::bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::fp8_e4m3: return cuattn::cpu::fp8_e4m3_to_float(static_cast<const uint8_t*>(base)[i]);
    case DType::f64: return float(static_cast<const double*>(base)[i]);
    case DType::i32: return float(static_cast<const int32_t*>(base)[i]);
    case DType::i64: return float(static_cast<const int64_t*>(base)[i]);
    case DType::u8: return float(static_cast<const uint8_t*>(base)[i]);
    case DType::u32: return float(static_cast<const uint32_t*>(base)[i]);
  }
  return NAN;
}

void from_float(DType t, void* base, int64_t i, float x) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[i] = x; return;
    case DType::f16: static_cast<uint16_t*>(base)[i] = cuattn::cpu::float_to_half(x); return;
    case DType::bf16: static_cast<uint16_t*>(base)[i] = cuattn::cpu::float_to_bf16(x); return;
    case DType::fp8_e4m3: static_cast<uint8_t*>(base)[i] = cuattn::cpu::float_to_fp8_e4m3(x); return;
    case DType::f64: static_cast<double*>(base)[i] = x; return;
    case DType::i32: static_cast<int32_t*>(base)[i] = int32_t(x); return;
    case DType::i64: static_cast<int64_t*>(base)[i] = int64_t(x); return;
    case DType::u8: static_cast<uint8_t*>(base)[i] = uint8_t(x); return;
    case DType::u32: static_cast<uint32_t*>(base)[i] = uint32_t(x); return;
  }
}

static const char* dtype_short(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::fp8_e4m3: return "fp8";
    default: return cuattn::dtype_name(t);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor.

Tensor::Tensor(Shape s, DType t, DeviceType d) : shape(std::move(s)), dtype(t), device(d) {
  host_.assign(bytes(), 0);
#ifdef CUATTN_WITH_CUDA
  if (device == DeviceType::cuda) ck(cudaMalloc(&dev_, std::max<size_t>(bytes(), 16)), "cudaMalloc");
#endif
}

Tensor::Tensor(Tensor&& o) noexcept
    : shape(std::move(o.shape)), dtype(o.dtype), device(o.device), host_(std::move(o.host_)),
      dev_(o.dev_) {
  o.dev_ = nullptr;
}

Tensor& Tensor::operator=(Tensor&& o) noexcept {
  if (this != &o) {
    this->~Tensor();
    shape = std::move(o.shape), dtype = o.dtype, device = o.device;
    host_ = std::move(o.host_), dev_ = o.dev_;
    o.dev_ = nullptr;
  }
  return *this;
}

Tensor::~Tensor() {
#ifdef CUATTN_WITH_CUDA
  if (dev_) cudaFree(dev_);
#endif
  dev_ = nullptr;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

size_t Tensor::bytes() const { return size_t(numel()) * cuattn::dtype_size(dtype); }

void* Tensor::data() const {
  return device == DeviceType::cuda ? dev_ : const_cast<unsigned char*>(host_.data());
}

static TensorView contiguous_view(void* data, DType t, const Shape& shape, DeviceType d) {
  TensorView v;
  v.data = data, v.dtype = t, v.device = d, v.ndim = int(shape.size());
  int64_t stride = 1;
  for (int i = v.ndim - 1; i >= 0; --i) {
    v.shape[i] = shape[size_t(i)];
    v.stride[i] = stride;
    stride *= shape[size_t(i)];
  }
  return v;
}

static void same_numel(const Tensor& t, const Shape& as) {
  int64_t n = 1;
  for (int64_t s : as) n *= s;
  if (n != t.numel())
    throw cuattn::ValueError("view " + shape_str(as) + " of a tensor of shape " + shape_str(t.shape));
}

TensorView Tensor::view() const { return contiguous_view(data(), dtype, shape, device); }
TensorView Tensor::view(const Shape& as) const {
  same_numel(*this, as);
  return contiguous_view(data(), dtype, as, device);
}
TensorView Tensor::host_view() const {
  return contiguous_view(const_cast<unsigned char*>(host_.data()), dtype, shape, DeviceType::cpu);
}
TensorView Tensor::host_view(const Shape& as) const {
  same_numel(*this, as);
  return contiguous_view(const_cast<unsigned char*>(host_.data()), dtype, as, DeviceType::cpu);
}

void Tensor::upload(cuattn::Stream s) {
#ifdef CUATTN_WITH_CUDA
  if (device == DeviceType::cuda && bytes()) {
    ck(cudaMemcpyAsync(dev_, host_.data(), bytes(), cudaMemcpyHostToDevice, s), "upload");
    ck(cudaStreamSynchronize(s), "upload sync");
  }
#else
  (void)s;
#endif
}

void Tensor::download(cuattn::Stream s) {
#ifdef CUATTN_WITH_CUDA
  if (device == DeviceType::cuda && bytes()) {
    ck(cudaMemcpyAsync(host_.data(), dev_, bytes(), cudaMemcpyDeviceToHost, s), "download");
    ck(cudaStreamSynchronize(s), "download sync");
  }
#else
  (void)s;
#endif
}

void Tensor::poison(cuattn::Stream s) {
  std::fill(host_.begin(), host_.end(), 0xff);  // NaN in f32, f16, bf16 and fp8 e4m3
#ifdef CUATTN_WITH_CUDA
  if (device == DeviceType::cuda && bytes()) ck(cudaMemsetAsync(dev_, 0xff, bytes(), s), "poison");
#else
  (void)s;
#endif
}

TensorView narrow(TensorView v, int dim, int64_t start, int64_t len) {
  if (dim < 0 || dim >= v.ndim || start < 0 || len < 0 || start + len > v.shape[dim])
    throw cuattn::ValueError(fmt("narrow(dim %d, start %lld, len %lld) out of range", dim,
                                 (long long)start, (long long)len));
  v.data = static_cast<char*>(v.data) + start * v.stride[dim] * cuattn::dtype_size(v.dtype);
  v.shape[dim] = len;
  return v;
}

// Calls fn(flat output index, element offset) for every element of a strided view, row-major.
static void for_each_element(const TensorView& v, const std::function<void(int64_t, int64_t)>& fn) {
  if (v.ndim == 0) {
    fn(0, 0);
    return;
  }
  int64_t n = v.numel();
  if (n == 0) return;
  const int last = v.ndim - 1;
  const int64_t inner = v.shape[last], rows = n / inner;
  // One outer index per row, parallel over rows.
  parallel_for(std::min<int64_t>(rows, 64), [&](int64_t part) {
    for (int64_t r = part; r < rows; r += std::min<int64_t>(rows, 64)) {
      int64_t off = 0, rem = r;
      for (int d = last - 1; d >= 0; --d) {
        off += (rem % v.shape[d]) * v.stride[d];
        rem /= v.shape[d];
      }
      for (int64_t x = 0; x < inner; ++x) fn(r * inner + x, off + x * v.stride[last]);
    }
  });
}

std::vector<float> to_floats(const TensorView& v) {
  std::vector<float> out(size_t(v.numel()));
  for_each_element(v, [&](int64_t i, int64_t off) { out[size_t(i)] = to_float(v.dtype, v.data, off); });
  return out;
}

Tensor to_f32(const TensorView& v) {
  Shape shape(v.shape, v.shape + v.ndim);
  Tensor t(shape, DType::f32, DeviceType::cpu);
  float* out = t.host_as<float>();
  for_each_element(v, [&](int64_t i, int64_t off) { out[i] = to_float(v.dtype, v.data, off); });
  return t;
}

// ---------------------------------------------------------------------------------------------
// Random numbers: splitmix64, one stream per chunk of 64 Ki elements so that the values depend
// on (seed, tensor, index) only and generation can run on all threads.

static uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static void fill_random(Tensor& t, uint64_t seed, bool normal, double scale) {
  constexpr int64_t kChunk = 1 << 16;
  const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
  void* base = t.host_data();
  parallel_for(chunks, [&](int64_t c) {
    uint64_t s = seed ^ (0x632be59bd9b4e019ull * uint64_t(c + 1));
    splitmix(s);
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; ++i) {
      double x;
      if (normal) {  // Box-Muller, one value per pair of uniforms
        const double u1 = (double((splitmix(s) >> 11) + 1)) * 0x1p-53;  // (0, 1]
        const double u2 = double(splitmix(s) >> 11) * 0x1p-53;
        x = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      } else {
        x = double(splitmix(s) >> 11) * 0x1p-52 - 1.0;  // [-1, 1)
      }
      from_float(t.dtype, base, i, float(x * scale));
    }
  });
}

Tensor Env::random(const Shape& shape, double scale) { return random(shape, dtype, scale); }

Tensor Env::random(const Shape& shape, DType t, double scale) {
  Tensor x(shape, t, device);
  fill_random(x, seed * 0x9e3779b97f4a7c15ull + (++draws_) * 0xd1b54a32d192ed03ull, normal, scale);
  x.upload(stream);
  return x;
}

Tensor Env::empty(const Shape& shape) { return empty(shape, dtype); }

Tensor Env::empty(const Shape& shape, DType t) {
  Tensor x(shape, t, device);
  x.poison(stream);
  sync();
  return x;
}

Tensor Env::zeros(const Shape& shape, DType t) {
  Tensor x(shape, t, device);
  x.upload(stream);
  return x;
}

int64_t Env::randint(int64_t n) {
  uint64_t s = seed ^ (0xa0761d6478bd642full * (++draws_));
  return n > 0 ? int64_t(splitmix(s) % uint64_t(n)) : 0;
}

std::vector<int32_t> Env::permutation(int64_t n) {
  std::vector<int32_t> p;
  p.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = int32_t(i);
  uint64_t s = seed ^ (0xe7037ed1a0b428dbull * (++draws_));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[size_t(i)], p[splitmix(s) % uint64_t(i + 1)]);
  return p;
}

// ---------------------------------------------------------------------------------------------
// Timing and device helpers.

static double median(std::vector<double> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double Env::time_ms(const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  if (cuda()) {
#ifdef CUATTN_WITH_CUDA
    sync();
    std::vector<cudaEvent_t> ev(size_t(2 * iters));
    for (auto& e : ev) ck(cudaEventCreate(&e), "cudaEventCreate");
    for (int i = 0; i < iters; ++i) {
      // Flush the L2 so that memory-bound kernels read from HBM, as they would in a model.
      if (flush_buf_) ck(cudaMemsetAsync(flush_buf_, i & 0xff, 2 * l2_bytes, stream), "L2 flush");
      ck(cudaEventRecord(ev[size_t(2 * i)], stream), "cudaEventRecord");
      fn();
      ck(cudaEventRecord(ev[size_t(2 * i + 1)], stream), "cudaEventRecord");
    }
    ck(cudaEventSynchronize(ev.back()), "cudaEventSynchronize");
    for (int i = 0; i < iters; ++i) {
      float t = 0;
      ck(cudaEventElapsedTime(&t, ev[size_t(2 * i)], ev[size_t(2 * i + 1)]), "cudaEventElapsedTime");
      ms.push_back(t);
    }
    for (auto& e : ev) cudaEventDestroy(e);
#endif
  } else {
    for (int i = 0; i < iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      fn();
      const auto t1 = std::chrono::steady_clock::now();
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
  }
  return median(ms);
}

void Env::copy(void* dst, const void* src, size_t bytes) {
#ifdef CUATTN_WITH_CUDA
  if (cuda()) {
    ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream), "cudaMemcpyAsync");
    return;
  }
#endif
  std::memcpy(dst, src, bytes);
}

void Env::sync() {
#ifdef CUATTN_WITH_CUDA
  if (cuda()) ck(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
#endif
}

size_t Env::device_free_bytes() const {
#ifdef CUATTN_WITH_CUDA
  size_t f = 0, t = 0;
  if (cuda() && cudaMemGetInfo(&f, &t) == cudaSuccess) return f;
  cudaGetLastError();
#endif
  return 0;
}

MemProbe::MemProbe(const Env& env) : env_(env) {
#ifdef CUATTN_WITH_CUDA
  if (!env.cuda()) return;
  int dev = 0;
  cudaGetDevice(&dev);
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess) {
    uint64_t zero = 0;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero);
  }
  cudaGetLastError();
  free_before_ = env.device_free_bytes();
#endif
}

size_t MemProbe::peak_bytes() const {
  size_t peak = 0;
#ifdef CUATTN_WITH_CUDA
  if (!env_.cuda()) return 0;
  cudaDeviceSynchronize();
  int dev = 0;
  cudaGetDevice(&dev);
  cudaMemPool_t pool;
  uint64_t high = 0;
  if (cudaDeviceGetDefaultMemPool(&pool, dev) == cudaSuccess &&
      cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &high) == cudaSuccess)
    peak = size_t(high);
  cudaGetLastError();
  const size_t now = env_.device_free_bytes();
  if (free_before_ > now) peak = std::max(peak, free_before_ - now);
#endif
  return peak;
}

// ---------------------------------------------------------------------------------------------
// Command line.

Def::Def(int all) : cuda(std::to_string(all)), cpu(cuda), small(cuda) {}
Def::Def(int a, int b, int c) : cuda(std::to_string(a)), cpu(std::to_string(b)), small(std::to_string(c)) {}
Def::Def(const char* all) : cuda(all), cpu(all), small(all) {}
Def::Def(const char* a, const char* b, const char* c) : cuda(a), cpu(b), small(c) {}

static std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p - start));
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

Cli::Cli(std::string program, std::string about)
    : program_(std::move(program)), about_(std::move(about)) {}

void Cli::flag(int64_t* out, const std::string& names, Def def, const std::string& help) {
  flags_.push_back({split(names, ','), Kind::i64, out, def, help});
}
void Cli::flag(double* out, const std::string& names, Def def, const std::string& help) {
  flags_.push_back({split(names, ','), Kind::f64, out, def, help});
}
void Cli::flag(std::string* out, const std::string& names, Def def, const std::string& help) {
  flags_.push_back({split(names, ','), Kind::str, out, def, help});
}
void Cli::flag(bool* out, const std::string& names, const std::string& help) {
  flags_.push_back({split(names, ','), Kind::boolean, out, Def("off"), help});
}

void Cli::usage(FILE* f) const {
  fprintf(f, "usage: %s [flags]\n\n%s\n\n", program_.c_str(), about_.c_str());
  auto line = [&](const std::string& left, const std::string& help) {
    if (left.size() <= 26) fprintf(f, "  %-26s %s\n", left.c_str(), help.c_str());
    else fprintf(f, "  %s\n  %-26s %s\n", left.c_str(), "", help.c_str());
  };
  fprintf(f, "flags (default on cuda / on cpu / with --small):\n");
  for (const Flag& fl : flags_) {
    std::string left;
    // Short names first ("-b, --batch").
    std::vector<std::string> names = fl.names;
    std::sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
      return a.size() < b.size();
    });
    for (size_t i = 0; i < names.size(); ++i) left += (i ? ", " : "") + names[i];
    if (fl.kind == Kind::i64) left += " N";
    else if (fl.kind == Kind::f64) left += " X";
    else if (fl.kind == Kind::str) left += " S";
    std::string d;
    if (fl.kind == Kind::boolean) d = "off";
    else if (fl.def.cuda == fl.def.cpu && fl.def.cpu == fl.def.small) d = fl.def.cuda;
    else d = fl.def.cuda + " / " + fl.def.cpu + " / " + fl.def.small;
    line(left, fl.help + " (" + d + ")");
  }
  fprintf(f, "\ncommon flags:\n");
  line("--device cpu|cuda", "where to run (cuda when a GPU is usable, else cpu)");
  line("--dtype f16|bf16|f32", "element type of q/k/v/out (f32: CPU only)");
  line("--check", "compare every variant with the CPU backend on the same inputs; exit 1 when");
  line("", "rel-L2 > 1e-2 (bf16), 2e-3 (f16), 1e-4 (f32), or on any NaN");
  line("--iters N", "timed iterations, median reported (20 on cuda, 3 on cpu)");
  line("--warmup N", "untimed runs first (3 on cuda, 1 on cpu)");
  line("--small", "tiny sizes: the whole program runs in seconds on a CPU");
  line("--seed N", "random seed (fresh by default; printed)");
  line("--init normal|uniform", "distribution of the random inputs (normal)");
  line("-h, --help", "this text");
  fprintf(f, "\nexit status: 0 ok, 1 a check failed or a variant raised an error, 2 bad flags,\n"
             "77 --device cuda without a usable GPU.\n");
}

static bool parse_int(const std::string& s, int64_t* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  const long long x = std::strtoll(s.c_str(), &end, 10);
  if (*end) return false;
  *v = x;
  return true;
}

static bool parse_double(const std::string& s, double* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtod(s.c_str(), &end);
  return *end == 0;
}

Env Cli::parse(int argc, char** argv, DType default_dtype) {
  // Common flags live in the same list as the program's, after them.
  std::string device_s, dtype_s, init_s = "normal";
  int64_t iters = -1, warmup = -1, seed = -1;
  bool check = false, small = false;
  const size_t n_prog = flags_.size();
  flag(&device_s, "--device", Def(""), "");
  flag(&dtype_s, "--dtype", Def(""), "");
  flag(&check, "--check", "");
  flag(&iters, "--iters", Def(-1), "");
  flag(&warmup, "--warmup", Def(-1), "");
  flag(&small, "--small", "");
  flag(&seed, "--seed", Def(-1), "");
  flag(&init_s, "--init", Def("normal"), "");

  auto fail = [&](const std::string& msg) {
    fprintf(stderr, "%s: %s\n\n", program_.c_str(), msg.c_str());
    flags_.erase(flags_.begin() + long(n_prog), flags_.end());
    usage(stderr);
    exit(kExitUsage);
  };

  // 1. Collect the given values.
  std::vector<std::string> given(flags_.size());
  std::vector<bool> seen(flags_.size(), false);
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool has_value = false;
    if (arg == "-h" || arg == "--help") {
      flags_.erase(flags_.begin() + long(n_prog), flags_.end());
      usage(stdout);
      exit(0);
    }
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1), arg = arg.substr(0, eq), has_value = true;
    }
    size_t k = 0;
    for (; k < flags_.size(); ++k)
      if (std::find(flags_[k].names.begin(), flags_[k].names.end(), arg) != flags_[k].names.end()) break;
    if (k == flags_.size()) fail("unknown flag '" + arg + "'");
    if (flags_[k].kind == Kind::boolean) {
      if (has_value && value != "1" && value != "0" && value != "true" && value != "false")
        fail(arg + " is a switch; it takes no value");
      *static_cast<bool*>(flags_[k].out) = !has_value || value == "1" || value == "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) fail(arg + " needs a value");
      value = argv[++i];
    }
    given[k] = value, seen[k] = true;
  }
  // --small (a switch) is set by now; the device decides the remaining defaults.
  const size_t i_device = n_prog;
  Env env;
  env.program = program_;
  if (seen[i_device]) {
    if (given[i_device] == "cuda") env.device = DeviceType::cuda;
    else if (given[i_device] == "cpu") env.device = DeviceType::cpu;
    else fail("--device must be cpu or cuda, got '" + given[i_device] + "'");
  } else {
    env.device = cuattn::cuda_available() ? DeviceType::cuda : DeviceType::cpu;
  }
  if (env.device == DeviceType::cuda && !cuattn::cuda_available()) {
    const cuattn::DeviceInfo d = cuattn::device_info(0);
    fprintf(stderr, "%s: --device cuda asked for, but no GPU is usable: %s\n"
                    "(run with --device cpu to use the CPU backend)\n",
            program_.c_str(), d.reason.empty() ? "no CUDA device" : d.reason.c_str());
    exit(kExitNoGpu);
  }

  // 2. Every flag gets its value or its default for this device.
  for (size_t k = 0; k < flags_.size(); ++k) {
    Flag& fl = flags_[k];
    if (fl.kind == Kind::boolean) continue;
    const std::string& v = seen[k] ? given[k]
                           : small ? fl.def.small
                           : env.device == DeviceType::cuda ? fl.def.cuda : fl.def.cpu;
    const std::string name = fl.names[0];
    if (fl.kind == Kind::i64) {
      if (!parse_int(v, static_cast<int64_t*>(fl.out))) fail(name + " needs an integer, got '" + v + "'");
    } else if (fl.kind == Kind::f64) {
      if (!parse_double(v, static_cast<double*>(fl.out))) fail(name + " needs a number, got '" + v + "'");
    } else {
      *static_cast<std::string*>(fl.out) = v;
    }
  }
  flags_.erase(flags_.begin() + long(n_prog), flags_.end());

  env.check = check, env.small = small;
  env.dtype = default_dtype;
  if (!dtype_s.empty()) {
    if (dtype_s == "f16" || dtype_s == "fp16" || dtype_s == "float16") env.dtype = DType::f16;
    else if (dtype_s == "bf16" || dtype_s == "bfloat16") env.dtype = DType::bf16;
    else if (dtype_s == "f32" || dtype_s == "fp32" || dtype_s == "float32") env.dtype = DType::f32;
    else fail("--dtype must be f16, bf16 or f32, got '" + dtype_s + "'");
  }
  if (env.dtype == DType::f32 && env.device == DeviceType::cuda)
    fail("--dtype f32 runs on the CPU only; the GPU kernels take f16 or bf16");
  if (init_s == "normal") env.normal = true;
  else if (init_s == "uniform") env.normal = false;
  else fail("--init must be normal or uniform, got '" + init_s + "'");
  const bool gpu = env.device == DeviceType::cuda;
  env.iters = int(iters > 0 ? iters : gpu ? 20 : 3);
  env.warmup = int(warmup >= 0 ? warmup : gpu ? 3 : 1);
  if (seed >= 0) {
    env.seed = uint64_t(seed);
  } else {
    std::random_device rd;
    env.seed = (uint64_t(rd()) << 20 ^ uint64_t(rd())) % 1000000007ull;
  }

  // 3. The device: stream, tensor-core peak, copy bandwidth, an L2-sized flush buffer.
  if (gpu) {
#ifdef CUATTN_WITH_CUDA
    try {
      int dev = 0;
      ck(cudaSetDevice(dev), "cudaSetDevice");
      ck(cudaStreamCreateWithFlags(&env.stream, cudaStreamNonBlocking), "cudaStreamCreate");
      cudaDeviceProp p;
      ck(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
      int clock_khz = 0, l2 = 0;
      // CUDA 13 removed cudaDeviceProp::clockRate; the attribute remains.
      ck(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev), "clock rate");
      ck(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "L2 size");
      env.device_name = p.name;
      env.sm_count = p.multiProcessorCount;
      env.cc = p.major * 10 + p.minor;
      env.clock_ghz = clock_khz * 1e-6;
      env.l2_bytes = size_t(l2);
      // Dense fp16/bf16 tensor-core FLOPs per clock per SM: 1024 (sm_70), 2048 (sm_80/86/89),
      // 4096 (sm_90), 8192 (sm_100).
      const double per_clk = p.major >= 10 ? 8192 : p.major == 9 ? 4096 : p.major == 8 ? 2048 : 1024;
      env.peak_tflops = env.sm_count * clock_khz * 1e3 * per_clk * 1e-12;
      if (env.l2_bytes) ck(cudaMalloc(&env.flush_buf_, 2 * env.l2_bytes), "cudaMalloc (L2 flush)");
      // Copy bandwidth: a large device-to-device copy, bytes read + written.
      size_t free_b = 0, total_b = 0;
      ck(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
      const size_t n = std::min<size_t>(size_t(1) << 30, free_b / 8);
      void *a = nullptr, *b = nullptr;
      ck(cudaMalloc(&a, n), "cudaMalloc (copy test)");
      ck(cudaMalloc(&b, n), "cudaMalloc (copy test)");
      ck(cudaMemset(a, 0, n), "cudaMemset");
      const int saved_iters = env.iters, saved_warmup = env.warmup;
      env.iters = 10, env.warmup = 2;
      const double ms = env.time_ms([&] { ck(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, env.stream), "copy"); });
      env.iters = saved_iters, env.warmup = saved_warmup;
      env.copy_gbps = 2.0 * n / (ms * 1e-3) / 1e9;
      cudaFree(a);
      cudaFree(b);
    } catch (const std::exception& e) {
      fprintf(stderr, "%s: setting up the GPU failed: %s\n", program_.c_str(), e.what());
      exit(kExitMismatch);
    }
#endif
  }

  env.about = about_;
  return env;
}

void Env::print_header() const {
  printf("%s — %s\n", program.c_str(), about.c_str());
  if (cuda())
    printf("device: cuda, %s (sm_%d, %d SMs, %.2f GHz): tensor peak %.0f TFLOP/s (fp16/bf16 dense), "
           "copy %.0f GB/s (measured, read + write)\n",
           device_name.c_str(), cc, sm_count, clock_ghz, peak_tflops, copy_gbps);
  else
    printf("device: cpu (%u threads) — the CPU backend; no peak numbers\n",
           std::max(1u, std::thread::hardware_concurrency()));
  printf("dtype %s, seed %llu, %s inputs, median of %d runs after %d warm-up%s%s\n\n",
         dtype_short(dtype), (unsigned long long)seed, normal ? "normal" : "uniform",
         iters, warmup, small ? ", --small" : "", check ? ", --check" : "");
  fflush(stdout);
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  for (const std::string& part : split(s, ',')) {
    int64_t v;
    if (!parse_int(part, &v)) throw cuattn::ValueError("bad list element '" + part + "' in '" + s + "'");
    out.push_back(v);
  }
  return out;
}

int64_t Case::get(char key, int64_t fallback) const {
  for (const auto& kv : opt)
    if (kv.first == key) return kv.second;
  return fallback;
}

std::vector<Case> parse_cases(const std::string& s) {
  std::vector<Case> out;
  for (const std::string& part : split(s, ',')) {
    Case c;
    const char* p = part.c_str();
    char* end = nullptr;
    c.batch = std::strtoll(p, &end, 10);
    if (end == p || *end != 'x') throw cuattn::ValueError("bad case '" + part + "': expected BxL[p16][h128]...");
    p = end + 1;
    c.len = std::strtoll(p, &end, 10);
    if (end == p) throw cuattn::ValueError("bad case '" + part + "': expected BxL[p16][h128]...");
    p = end;
    while (*p) {
      const char key = *p++;
      const int64_t v = std::strtoll(p, &end, 10);
      if (end == p || !std::isalpha(static_cast<unsigned char>(key)))
        throw cuattn::ValueError("bad case '" + part + "': expected letter-number options");
      c.opt.push_back({key, v});
      p = end;
    }
    out.push_back(c);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Checks.

double tolerance(DType t) {
  switch (t) {
    case DType::bf16: return 1e-2;
    case DType::f16: return 2e-3;
    default: return 1e-4;
  }
}

CheckResult compare(const std::vector<float>& got, const std::vector<float>& want, DType t) {
  CheckResult r;
  r.done = true;
  if (got.size() != want.size()) {
    r.ok = false;
    r.note = fmt("size mismatch: %zu vs %zu", got.size(), want.size());
    return r;
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) {
      r.nan = true;
      continue;
    }
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * want[i];
    r.max_abs = std::max(r.max_abs, std::fabs(d));
  }
  r.rel_l2 = std::sqrt(num / std::max(den, 1e-30));
  if (den == 0 && num == 0) r.rel_l2 = 0;
  r.ok = !r.nan && r.rel_l2 <= tolerance(t);
  return r;
}

std::string Slice::describe() const {
  if (whole) return "";
  return fmt("checked: %lld batch(es), %lld kv head(s), last %lld rows", (long long)batches,
             (long long)kv_heads, (long long)rows);
}

Slice choose_slice(int64_t B, int64_t Hkv, int64_t Sq, int64_t Sk, int64_t D, int64_t group,
                   int64_t window_left, double budget) {
  Slice s;
  s.batches = B, s.kv_heads = Hkv, s.rows = Sq;
  auto first_key = [&](int64_t rows) {
    return window_left >= 0 ? std::max<int64_t>(0, std::min(Sk, Sk - rows - window_left)) : 0;
  };
  auto cost = [&] {
    return 4.0 * s.batches * s.kv_heads * group * s.rows * double(Sk - first_key(s.rows)) * D;
  };
  while (cost() > budget && s.batches > 1) s.batches = std::max<int64_t>(1, s.batches / 2);
  while (cost() > budget && s.rows > 128) s.rows = std::max<int64_t>(128, s.rows / 2);
  while (cost() > budget && s.kv_heads > 1) s.kv_heads = std::max<int64_t>(1, s.kv_heads / 2);
  s.first_key = first_key(s.rows);
  s.whole = s.batches == B && s.kv_heads == Hkv && s.rows == Sq;
  return s;
}

// Dims of (batch, seq, head) in a 4-D q/k/v/out for a layout.
static void layout_dims(cuattn::Layout l, int* b, int* s, int* h) {
  *b = 0;
  if (l == cuattn::Layout::bshd) *s = 1, *h = 2;
  else *h = 1, *s = 2;
}

Tensor oracle_attention(cuattn::AttentionArgs a, const Slice& s) {
  if (a.cu_seqlens_q.present()) throw cuattn::ValueError("oracle_attention: varlen is not sliced");
  int db, ds, dh;
  layout_dims(a.layout, &db, &ds, &dh);
  const int64_t Sq = a.q.shape[ds], Sk = a.k.shape[ds];
  const int64_t group = a.q.shape[dh] / a.k.shape[dh];
  if (a.block_mask.present() && (s.rows != Sq || s.first_key != 0))
    throw cuattn::ValueError("oracle_attention: a block mask needs every row and key");
  auto cut = [&](TensorView v, int64_t heads, int64_t start, int64_t len) {
    v = narrow(v, db, 0, s.batches);
    v = narrow(v, dh, 0, heads);
    return narrow(v, ds, start, len);
  };
  Tensor q = to_f32(cut(a.q, s.kv_heads * group, Sq - s.rows, s.rows));
  Tensor k = to_f32(cut(a.k, s.kv_heads, s.first_key, Sk - s.first_key));
  Tensor v = to_f32(cut(a.v, s.kv_heads, s.first_key, Sk - s.first_key));
  Shape out_shape = q.shape;
  out_shape.back() = a.v.shape[3];
  Tensor out(out_shape, DType::f32, DeviceType::cpu);
  a.q = q.host_view(), a.k = k.host_view(), a.v = v.host_view(), a.out = out.host_view();
  a.lse = TensorView();
  if (a.sinks.present()) a.sinks = narrow(a.sinks, 0, 0, s.kv_heads * group);
  cuattn::attention(a);
  return out;
}

std::vector<float> slice_output(const TensorView& out_host, cuattn::Layout layout, int64_t group,
                                const Slice& s) {
  int db, ds, dh;
  layout_dims(layout, &db, &ds, &dh);
  TensorView v = narrow(out_host, db, 0, s.batches);
  v = narrow(v, dh, 0, s.kv_heads * group);
  v = narrow(v, ds, out_host.shape[ds] - s.rows, s.rows);
  return to_floats(v);
}

CheckResult compare_slice(Tensor& out, const Tensor& want, cuattn::Layout layout, int64_t group,
                          const Slice& s, const Env& env) {
  out.download(env.stream);
  CheckResult r = compare(slice_output(out.host_view(), layout, group, s), to_floats(want.host_view()),
                          env.dtype);
  r.note = s.describe();
  return r;
}

std::vector<float> gather_pages(const TensorView& c, const int32_t* row, int64_t len, double scale) {
  const int64_t bs = c.shape[1], H = c.shape[2], D = c.shape[3];
  std::vector<float> out(size_t(len * H * D));
  parallel_for(len, [&](int64_t j) {
    const int64_t page = row[j / bs], slot = j % bs;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t src = page * c.stride[0] + slot * c.stride[1] + h * c.stride[2];
      float* dst = out.data() + (j * H + h) * D;
      for (int64_t x = 0; x < D; ++x) dst[x] = float(to_float(c.dtype, c.data, src + x) * scale);
    }
  });
  return out;
}

Tensor oracle_paged(const TensorView& q, const TensorView& k_cache, const TensorView& v_cache,
                    const Tensor& block_table, const Tensor& seq_lens, int64_t nb, double k_scale,
                    double v_scale, double scale) {
  const int64_t T = q.shape[1], Hq = q.shape[2], D = q.shape[3];
  const int64_t Hkv = k_cache.shape[2], Dv = v_cache.shape[3], max_blocks = block_table.shape[1];
  Tensor out({nb, T, Hq, Dv}, DType::f32, DeviceType::cpu);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t len = seq_lens.host_as<int32_t>()[b];
    const int32_t* row = block_table.host_as<int32_t>() + b * max_blocks;
    std::vector<float> k = gather_pages(k_cache, row, len, k_scale);
    std::vector<float> v = gather_pages(v_cache, row, len, v_scale);
    Tensor qb = to_f32(narrow(q, 0, b, 1));
    cuattn::AttentionArgs a;
    a.q = qb.host_view();
    a.k = cuattn::make_view(k.data(), DType::f32, {1, len, Hkv, D});
    a.v = cuattn::make_view(v.data(), DType::f32, {1, len, Hkv, Dv});
    a.out = narrow(out.host_view(), 0, b, 1);
    a.causal = true;
    a.scale = scale;
    cuattn::attention(a);
  }
  return out;
}

int64_t check_count(int64_t n, double cost_each, double budget) {
  return std::max<int64_t>(1, std::min<int64_t>(n, int64_t(budget / std::max(cost_each, 1.0))));
}

double visible_pairs(int64_t Sq, int64_t Sk, bool causal, int64_t left, int64_t right) {
  double n = 0;
  const int64_t offset = Sk - Sq;
  for (int64_t i = 0; i < Sq; ++i) {
    const int64_t diag = i + offset;
    int64_t lo = 0, hi = Sk - 1;
    if (causal) hi = std::min(hi, diag);
    if (right >= 0) hi = std::min(hi, diag + right);
    if (left >= 0) lo = std::max(lo, diag - left);
    if (hi >= lo) n += double(hi - lo + 1);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// The table.

void Row::set(const std::string& column, const std::string& value) {
  for (auto& kv : extra)
    if (kv.first == column) {
      kv.second = value;
      return;
    }
  extra.push_back({column, value});
}

Table::Table(Env& env) : env_(env) { env.print_header(); }

Row& Table::add(const std::string& variant, const std::string& shape) {
  rows_.emplace_back();
  Row& r = rows_.back();
  r.variant = variant, r.shape = shape, r.device = env_.device_str();
  return r;
}

static std::string gbps_str(double g) { return fmt(g < 10 ? "%.2f" : g < 100 ? "%.1f" : "%.0f", g); }

bool Table::run(Row& row, std::vector<Tensor*> outputs, const std::function<void()>& fn) {
  try {
    for (Tensor* t : outputs) t->poison(env_.stream);
    row.ms = env_.time_ms(fn) / std::max(row.repeat, 1);
    env_.sync();
  } catch (const cuattn::NotImplementedError& e) {  // not on this device yet: a note, not a failure
    row.note += (row.note.empty() ? "" : "; ") + std::string("not run: ") + e.what();
    row.ms = -1;
    progress("  %-24s %-32s not run: %s", row.variant.c_str(), row.shape.c_str(), e.what());
    return false;
  } catch (const std::exception& e) {
    row.error = e.what();
    row.ms = -1;
    progress("  %-24s %-32s error: %s", row.variant.c_str(), row.shape.c_str(), e.what());
    return false;
  }
  std::string rate;
  if (row.flops > 0) {
    const double t = row.flops / (row.ms * 1e-3) / 1e12;
    rate += fmt(t < 1 ? "  %.3f TFLOP/s" : "  %.1f TFLOP/s", t);
  }
  if (row.bytes > 0) rate += "  " + gbps_str(row.bytes / (row.ms * 1e-3) / 1e9) + " GB/s";
  if (row.repeat > 1) rate += fmt("  (per call, %d calls per run)", row.repeat);
  progress("  %-24s %-32s %10.4f ms%s", row.variant.c_str(), row.shape.c_str(), row.ms, rate.c_str());
  return true;
}

void Table::check(Row& row, const std::function<CheckResult()>& fn) {
  if (row.ms < 0) return;  // it never ran (an error, or skipped)
  try {
    row.check = fn();
  } catch (const std::exception& e) {
    row.check = CheckResult();
    row.check.done = true, row.check.ok = false;
    row.check.note = std::string("oracle error: ") + e.what();
  }
}

int Table::print() const {
  // Which optional columns have anything in them?
  bool any_flops = false, any_bytes = false, any_mem = false, any_check = false;
  std::vector<std::string> extra_cols;
  for (const Row& r : rows_) {
    any_flops |= r.flops > 0;
    any_bytes |= r.bytes > 0;
    any_mem |= r.extra_bytes >= 0;
    any_check |= r.check.done;
    for (const auto& kv : r.extra)
      if (std::find(extra_cols.begin(), extra_cols.end(), kv.first) == extra_cols.end())
        extra_cols.push_back(kv.first);
  }
  std::vector<std::string> head = {"variant", "shape", "device", "time (ms)"};
  if (any_flops) head.push_back("TFLOP/s");
  if (any_bytes) head.push_back("GB/s");
  head.push_back("% of peak");
  if (any_mem) head.push_back("extra mem");
  for (const auto& c : extra_cols) head.push_back(c);
  if (any_check) head.push_back("err (rel-L2, max abs)");
  head.push_back("note");

  int exit_code = 0;
  std::vector<std::vector<std::string>> cells;
  for (const Row& r : rows_) {
    std::vector<std::string> c = {r.variant, r.shape, r.device};
    const bool ran = r.ms >= 0;
    c.push_back(ran ? fmt(r.ms < 0.1 ? "%.4f" : r.ms < 10 ? "%.3f" : "%.2f", r.ms) : "-");
    const double s = r.ms * 1e-3;
    const double tflops = ran && r.flops > 0 ? r.flops / s / 1e12 : 0;
    const double gbps = ran && r.bytes > 0 ? r.bytes / s / 1e9 : 0;
    if (any_flops) c.push_back(tflops > 0 ? fmt(tflops < 1 ? "%.3f" : "%.1f", tflops) : "-");
    if (any_bytes) c.push_back(gbps > 0 ? gbps_str(gbps) : "-");
    std::string peak = "-";
    if (ran && env_.cuda()) {
      if (r.bound == Bound::compute && tflops > 0 && env_.peak_tflops > 0)
        peak = fmt("%.1f%% tensor", 100 * tflops / env_.peak_tflops);
      if (r.bound == Bound::memory && gbps > 0 && env_.copy_gbps > 0)
        peak = fmt("%.1f%% copy", 100 * gbps / env_.copy_gbps);
    }
    c.push_back(peak);
    if (any_mem) c.push_back(r.extra_bytes >= 0 ? bytes_str(r.extra_bytes) : "-");
    for (const auto& col : extra_cols) {
      std::string v = "-";
      for (const auto& kv : r.extra)
        if (kv.first == col) v = kv.second;
      c.push_back(v);
    }
    if (any_check) {
      if (!r.check.done) c.push_back("-");
      else if (r.check.nan) c.push_back("NaN FAIL");
      else if (!r.check.note.empty() && r.check.note.rfind("oracle error", 0) == 0) c.push_back("FAIL");
      else
        c.push_back(fmt("%.1e, %.1e %s", r.check.rel_l2, r.check.max_abs, r.check.ok ? "ok" : "FAIL"));
    }
    std::string note = r.note;
    if (!r.check.note.empty()) note += (note.empty() ? "" : "; ") + r.check.note;
    if (!r.error.empty()) note += (note.empty() ? "" : "; ") + std::string("ERROR (see below)");
    c.push_back(note);
    cells.push_back(c);
    if (!r.error.empty() || (r.check.done && !r.check.ok)) exit_code = kExitMismatch;
  }

  std::vector<size_t> w(head.size());
  for (size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& c : cells)
    for (size_t i = 0; i < c.size(); ++i) w[i] = std::max(w[i], c[i].size());
  auto print_line = [&](const std::vector<std::string>& c) {
    std::string line;
    for (size_t i = 0; i < c.size(); ++i) {
      const bool last = i + 1 == c.size();
      const bool right = i >= 3 && !last;  // numbers right-aligned
      std::string pad(w[i] - c[i].size(), ' ');
      line += right ? pad + c[i] : (last ? c[i] : c[i] + pad);
      if (!last) line += " | ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    printf("%s\n", line.c_str());
  };
  printf("\n");
  print_line(head);
  std::vector<std::string> rule;
  for (size_t i = 0; i < head.size(); ++i) rule.push_back(std::string(w[i], '-'));
  print_line(rule);
  for (const auto& c : cells) print_line(c);
  printf("\n");
  if (env_.cuda())
    printf("%% of peak: of the tensor-core peak (%.0f TFLOP/s, SMs x clock x flop/clk) for "
           "compute-bound rows, of the measured copy rate (%.0f GB/s) for memory-bound rows. "
           "L2 flushed before each timed run.\n",
           env_.peak_tflops, env_.copy_gbps);
  for (const auto& n : notes_) printf("%s\n", n.c_str());
  for (const Row& r : rows_)
    if (!r.error.empty()) printf("error in %s (%s): %s\n", r.variant.c_str(), r.shape.c_str(), r.error.c_str());
  if (any_check) {
    bool all = true;
    for (const Row& r : rows_) all &= r.error.empty() && (!r.check.done || r.check.ok);
    printf(all ? "all results match the CPU backend\n" : "MISMATCH: see the err column\n");
  }
  fflush(stdout);
  return exit_code;
}

}  // namespace harness
