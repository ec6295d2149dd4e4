// tensor.cpp — see tensor.h. Also Env's random tensors.
#include "tensor.h"
#include "timing.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>

#include <unistd.h>

#ifdef CUATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace harness {

// ---------------------------------------------------------------------------------------------
// Element conversions. One IEEE-style format with E exponent bits and M mantissa bits (bias
// 2^(E-1) - 1) covers f16 (5, 10), bf16 (8, 7) and fp8 e4m3 (4, 3). e4m3 ("fn") has no inf:
// its all-ones exponent holds numbers up to 448 and only mantissa 7 there is NaN.

struct Format {
  int E, M;
  bool e4m3;
};
constexpr Format kF16{5, 10, false}, kBF16{8, 7, false}, kE4M3{4, 3, true};

static double decode(uint32_t bits, Format f) {
  const int bias = (1 << (f.E - 1)) - 1, all_ones = (1 << f.E) - 1;
  const double sign = (bits >> (f.E + f.M)) & 1 ? -1.0 : 1.0;
  const int field = int((bits >> f.M) & uint32_t(all_ones));
  const uint32_t mant = bits & ((1u << f.M) - 1);
  if (f.e4m3 ? field == all_ones && mant == (1u << f.M) - 1 : field == all_ones)
    return mant || f.e4m3 ? NAN : sign * INFINITY;
  if (field == 0) return sign * std::ldexp(double(mant), 1 - bias - f.M);  // subnormal
  return sign * std::ldexp(double((1u << f.M) + mant), field - bias - f.M);
}

static uint32_t encode(double x, Format f) {
  const int bias = (1 << (f.E - 1)) - 1, all_ones = (1 << f.E) - 1;
  const uint32_t sign = std::signbit(x) ? 1u << (f.E + f.M) : 0u;
  if (std::isnan(x)) return f.e4m3 ? sign | 0x7fu : sign | uint32_t(all_ones) << f.M | 1u << (f.M - 1);
  const uint32_t max_field = f.e4m3 ? uint32_t(all_ones) : uint32_t(all_ones - 1);
  const uint32_t max_mant = f.e4m3 ? (1u << f.M) - 2 : (1u << f.M) - 1;
  const uint32_t overflow = f.e4m3 ? sign | max_field << f.M | max_mant : sign | uint32_t(all_ones) << f.M;
  const double a = std::fabs(x);
  if (a == 0) return sign;
  if (std::isinf(a)) return overflow;
  int e = 0;
  std::frexp(a, &e);
  e = std::max(e - 1, 1 - bias);  // a in [2^e, 2^(e+1)); subnormals share the smallest step
  double q = std::nearbyint(std::ldexp(a, f.M - e));  // with the implicit bit: < 2^(M+1)
  if (q >= std::ldexp(1.0, f.M + 1)) q /= 2, ++e;
  uint32_t field = 0, mant = uint32_t(q);
  if (q >= std::ldexp(1.0, f.M)) field = uint32_t(e + bias), mant -= 1u << f.M;
  if (field > max_field || (field == max_field && mant > max_mant)) return overflow;
  return sign | field << f.M | mant;
}

double to_double(DType t, const void* base, int64_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::f16: return decode(static_cast<const uint16_t*>(base)[i], kF16);
    case DType::bf16: return decode(static_cast<const uint16_t*>(base)[i], kBF16);
    case DType::fp8_e4m3: return decode(static_cast<const uint8_t*>(base)[i], kE4M3);
    case DType::f64: return static_cast<const double*>(base)[i];
    case DType::i32: return static_cast<const int32_t*>(base)[i];
    case DType::i64: return double(static_cast<const int64_t*>(base)[i]);
    case DType::u8: return static_cast<const uint8_t*>(base)[i];
    case DType::u32: return static_cast<const uint32_t*>(base)[i];
  }
  return NAN;
}

void from_double(DType t, void* base, int64_t i, double x) {
  switch (t) {
    case DType::f32: static_cast<float*>(base)[i] = float(x); return;
    case DType::f16: static_cast<uint16_t*>(base)[i] = uint16_t(encode(x, kF16)); return;
    case DType::bf16: static_cast<uint16_t*>(base)[i] = uint16_t(encode(x, kBF16)); return;
    case DType::fp8_e4m3: static_cast<uint8_t*>(base)[i] = uint8_t(encode(x, kE4M3)); return;
    case DType::f64: static_cast<double*>(base)[i] = x; return;
    case DType::i32: static_cast<int32_t*>(base)[i] = int32_t(x); return;
    case DType::i64: static_cast<int64_t*>(base)[i] = int64_t(x); return;
    case DType::u8: static_cast<uint8_t*>(base)[i] = uint8_t(x); return;
    case DType::u32: static_cast<uint32_t*>(base)[i] = uint32_t(x); return;
  }
}

// ---------------------------------------------------------------------------------------------
// Memory checks.

// MemAvailable from /proc/meminfo (what can be allocated without swapping), else the free pages.
static double host_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kib = 0;
  while (f >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024.0;
    f.ignore(1 << 10, '\n');
  }
  return double(sysconf(_SC_AVPHYS_PAGES)) * double(sysconf(_SC_PAGESIZE));
}

static double device_free_bytes() {
#ifdef CUATTN_WITH_CUDA
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) return double(free_b);
  cudaGetLastError();
#endif
  return 0;
}

void require_memory(double host_bytes, double device_bytes, const std::string& what) {
  constexpr double kSpare = 256.0 * 1024 * 1024;  // left for the library, the oracle, the OS
  auto refuse = [&](double need, double have, const char* where) {
    throw TooLarge(fmt("%s needs %s (%.0f bytes) of %s memory, but %s is available: choose smaller "
                       "sizes", what.c_str(), bytes_str(need).c_str(), need, where,
                       bytes_str(have).c_str()));
  };
  if (host_bytes > 0) {
    const double have = host_available_bytes();
    if (host_bytes + kSpare > have) refuse(host_bytes, have, "host");
  }
  if (device_bytes > 0) {
    const double have = device_free_bytes();
    if (device_bytes + kSpare > have) refuse(device_bytes, have, "device");
  }
}

double shape_bytes(const Shape& shape, DType dtype) {
  double n = cuattn::dtype_size(dtype);
  for (int64_t s : shape) {
    if (s < 0) throw TooLarge("a tensor of shape " + shape_str(shape) + " has a negative size");
    n *= double(s);
  }
  if (n > 0x1p62) throw TooLarge(fmt("a tensor of shape %s needs %.3g bytes", shape_str(shape).c_str(), n));
  return n;
}

// ---------------------------------------------------------------------------------------------
// Tensor.

Tensor::Tensor(Shape s, DType t, DeviceType d) : shape(std::move(s)), dtype(t), device(d) {
  const double b = shape_bytes(shape, dtype);
  require_memory(b, device == DeviceType::cuda ? b : 0,
                 fmt("a %s tensor of shape %s", cuattn::dtype_name(dtype), shape_str(shape).c_str()));
  host_.assign(bytes(), 0);
#ifdef CUATTN_WITH_CUDA
  if (device == DeviceType::cuda) ck(cudaMalloc(&dev_, std::max<size_t>(bytes(), 16)), "cudaMalloc");
#endif
}

Tensor::Tensor(Tensor&& o) noexcept
    : shape(std::move(o.shape)), dtype(o.dtype), device(o.device), host_(std::move(o.host_)), dev_(o.dev_) {
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

size_t Tensor::bytes() const { return size_t(numel()) * size_t(cuattn::dtype_size(dtype)); }

void* Tensor::data() const {
  return device == DeviceType::cuda ? dev_ : const_cast<unsigned char*>(host_.data());
}

static TensorView contiguous_view(void* data, DType t, const Shape& shape, DeviceType d) {
  if (shape.size() > size_t(cuattn::kMaxDims)) throw cuattn::ValueError("view of more than 8 dims");
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
TensorView Tensor::host_view() const { return host_view(shape); }
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
    throw cuattn::ValueError(fmt("narrow(dim %d, start %lld, len %lld) of a dim of %lld", dim,
                                 (long long)start, (long long)len, (long long)(dim >= 0 && dim < v.ndim ? v.shape[dim] : -1)));
  v.data = static_cast<char*>(v.data) + start * v.stride[dim] * cuattn::dtype_size(v.dtype);
  v.shape[dim] = len;
  return v;
}

TensorView transpose(TensorView v, int a, int b) {
  std::swap(v.shape[a], v.shape[b]);
  std::swap(v.stride[a], v.stride[b]);
  return v;
}

std::vector<double> to_doubles(const TensorView& v) {
  const int64_t n = v.ndim <= 0 ? 1 : v.numel();
  std::vector<double> out(size_t(std::max<int64_t>(n, 0)));
  if (n <= 0) return out;
  const int last = std::max(v.ndim - 1, 0);
  const int64_t inner = v.ndim ? v.shape[last] : 1, rows = n / inner;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off = 0, rem = r;
    for (int d = last - 1; d >= 0; --d) {
      off += (rem % v.shape[d]) * v.stride[d];
      rem /= v.shape[d];
    }
    for (int64_t x = 0; x < inner; ++x)
      out[size_t(r * inner + x)] = to_double(v.dtype, v.data, off + x * (v.ndim ? v.stride[last] : 0));
  }
  return out;
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
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
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
      from_double(t.dtype, base, i, x * scale);
    }
  }
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
  if (n < 0 || n > INT32_MAX) throw TooLarge(fmt("%lld pages do not fit int32 page ids", (long long)n));
  require_memory(4.0 * double(n), 0, fmt("a permutation of %lld pages", (long long)n));
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = int32_t(i);
  uint64_t s = seed ^ (0xe7037ed1a0b428dbull * (++draws_));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[size_t(i)], p[splitmix(s) % uint64_t(i + 1)]);
  return p;
}

PageTable make_page_table(Env& env, int64_t B, int64_t len, int64_t page_size) {
  PageTable t;
  t.blocks = (len + page_size - 1) / page_size, t.pages = B * t.blocks;
  if (t.pages > INT32_MAX) throw TooLarge(fmt("%lld pages do not fit int32 page ids", (long long)t.pages));
  t.block_table = env.zeros({B, t.blocks}, DType::i32);
  t.seq_lens = env.zeros({B}, DType::i32);
  const std::vector<int32_t> order = env.permutation(t.pages);
  std::copy(order.begin(), order.end(), t.block_table.host_as<int32_t>());
  std::fill_n(t.seq_lens.host_as<int32_t>(), B, int32_t(len));
  t.block_table.upload(env.stream), t.seq_lens.upload(env.stream);
  return t;
}

}  // namespace harness
