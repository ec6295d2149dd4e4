// tensor.h — host/device buffers, the harness's own element conversions and the random numbers.
//
// The conversions are written here, not taken from the library, so that --check compares the
// library with an implementation that shares none of its code.
#pragma once

#include <cstdint>
#include <vector>

#include "common.h"
#include "env.h"

namespace harness {

// Element conversions on the host: round to nearest even; f16/bf16 overflow to inf, fp8 e4m3
// saturates at ±448; NaN stays NaN.
double to_double(DType t, const void* base, int64_t i);
void from_double(DType t, void* base, int64_t i, double x);

// Refuses (TooLarge) `bytes` of host memory beyond what is available, and on cuda `device_bytes`
// beyond cudaMemGetInfo's free memory; `what` names the allocation in the message.
void require_memory(double host_bytes, double device_bytes, const std::string& what);
// Bytes of `shape` in `dtype`; TooLarge on a negative dim or a product beyond 2^62.
double shape_bytes(const Shape& shape, DType dtype);

// Tensor: a contiguous array with a host copy (always) and, on cuda, a device copy. The host copy
// is where inputs are generated and outputs are read back; view() is what the library gets.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, DType dtype, DeviceType device);  // require_memory first
  Tensor(Tensor&& o) noexcept;
  Tensor& operator=(Tensor&& o) noexcept;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  ~Tensor();

  Shape shape;
  DType dtype = DType::f32;
  DeviceType device = DeviceType::cpu;

  int64_t numel() const;
  size_t bytes() const;
  void* host_data() { return host_.data(); }
  template <class T>
  T* host_as() { return reinterpret_cast<T*>(host_.data()); }
  template <class T>
  const T* host_as() const { return reinterpret_cast<const T*>(host_.data()); }
  void* data() const;  // where it lives: the device copy on cuda, else the host copy

  TensorView view() const;                 // where it lives, contiguous
  TensorView view(const Shape& as) const;  // same memory seen with another contiguous shape
  TensorView host_view() const;            // the host copy
  TensorView host_view(const Shape& as) const;

  void upload(cuattn::Stream s = nullptr);    // host -> device (no-op on the CPU)
  void download(cuattn::Stream s = nullptr);  // device -> host (synchronous; no-op on the CPU)
  void poison(cuattn::Stream s = nullptr);    // NaN bytes (0xff) in both copies

 private:
  std::vector<unsigned char> host_;
  void* dev_ = nullptr;
};

// The page bookkeeping of a paged KV cache: B sequences of `len` tokens in pages of `page_size`
// tokens, the B·blocks page ids handed out in random order (as a serving engine's allocator
// leaves them). block_table int32 [B, blocks] and seq_lens int32 [B] (all `len`), uploaded.
struct PageTable {
  int64_t blocks = 0, pages = 0;  // per sequence, in all
  Tensor block_table, seq_lens;
  int32_t page(int64_t b, int64_t i) const { return block_table.host_as<int32_t>()[b * blocks + i]; }
};
PageTable make_page_table(Env& env, int64_t B, int64_t len, int64_t page_size);

// A view of `len` entries of `dim` starting at `start` (same memory, same strides).
TensorView narrow(TensorView v, int dim, int64_t start, int64_t len);
// The same memory with dims a and b swapped (e.g. [B, H, S, D] seen as [B, S, H, D]).
TensorView transpose(TensorView v, int a, int b);
// Any strided host view -> contiguous doubles, row-major over its dims.
std::vector<double> to_doubles(const TensorView& host_view);

}  // namespace harness
