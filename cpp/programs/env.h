// env.h — the run environment every program gets from Cli::parse: the common flags, the device
// and its stream, the random generator. Its members are implemented where their subject lives:
// random tensors in tensor.cpp, timing and device set-up in timing.cpp, the header in table.cpp.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "cuattn/cuattn.h"

namespace harness {

using cuattn::DeviceType;
using cuattn::DType;
using cuattn::TensorView;
using Shape = std::vector<int64_t>;

class Tensor;

struct Env {
  std::string program, about;
  DeviceType device = DeviceType::cpu;
  DType dtype = DType::bf16;
  bool check = false, small = false, normal = true;
  int iters = 3, warmup = 1;  // iters >= 1
  uint64_t seed = 0;
  cuattn::Stream stream = nullptr;
  std::string json_path;  // --json: "" none, "-" stdout (the text then goes to stderr)
  FILE* text = stdout;    // where progress lines and the table go

  // Device facts (cuda): name, tensor-core peak (dense fp16/bf16) and the measured copy rate.
  std::string device_name = "cpu";
  int sm_count = 0, cc = 0;
  double clock_ghz = 0, peak_tflops = 0, copy_gbps = 0;
  size_t l2_bytes = 0;

  bool cuda() const { return device == DeviceType::cuda; }
  const char* device_str() const { return cuda() ? "cuda" : "cpu"; }

  // tensor.cpp. Random values (normal, or uniform in [-1, 1) with --init uniform) times `scale`,
  // stored in `dtype` (env.dtype when omitted) on the host and uploaded. Every call draws fresh
  // values. Every allocation is checked against the free memory first (TooLarge, exit 2).
  Tensor random(const Shape& shape, double scale = 1.0);
  Tensor random(const Shape& shape, DType dtype, double scale = 1.0);
  // An output: NaN-poisoned on host and device.
  Tensor empty(const Shape& shape);
  Tensor empty(const Shape& shape, DType dtype);
  // Zero-filled host + device storage for the program to fill, then upload().
  Tensor zeros(const Shape& shape, DType dtype);
  // A uniform random integer in [0, n) and a random permutation of 0 .. n-1 (seeded).
  int64_t randint(int64_t n);
  std::vector<int32_t> permutation(int64_t n);

  // timing.cpp. Median time in ms of `iters` runs of fn after `warmup` runs: CUDA events on
  // env.stream (the L2 is flushed before each timed run), std::chrono on the CPU.
  double time_ms(const std::function<void()>& fn);
  // Device-to-device (cuda) or host (cpu) copy of `bytes` bytes on env.stream.
  void copy(void* dst, const void* src, size_t bytes);
  void sync();
  size_t device_free_bytes() const;
  void setup_device();  // stream, peak numbers, L2 flush buffer (cuda)

  // table.cpp: the run's first lines (device, peaks, dtype, seed, iterations).
  void print_header() const;

 private:
  uint64_t draws_ = 0;
  void* flush_buf_ = nullptr;
};

}  // namespace harness
