// harness.h — what every standalone program shares: flags, random tensors on the host and the
// GPU, timing, the CPU-backend oracle helpers, error measures and the one result table.
//
// A program reads like the experiment it runs:
//
//   int64_t B, S;
//   harness::Cli cli("flash_attention", "naive vs flash attention");
//   cli.flag(&B, "--batch,-b", {8, 1, 1}, "batch size");       // default on cuda / cpu / --small
//   cli.flag(&S, "--seqlen,-s", {4096, 1024, 97}, "sequence length");
//   harness::Env env = cli.parse(argc, argv, DType::f16);      // --device, --dtype, --check, ...
//   harness::Tensor q = env.random({B, S, H, D});              // host copy + device copy
//   harness::Table table(env);
//   harness::Row& row = table.add("flash", "B8 H32 S4096 D128");
//   table.run(row, {&out}, [&] { cuattn::attention(args, env.stream); });
//   row.check = harness::compare(got, want, env.dtype);
//   return table.print();                                      // 0, or 1 on a mismatch / error
//
// Exit codes: 0 success, 1 a check failed or a variant threw, 2 bad flags, 77 a GPU was asked
// for but none is usable (the ctest / automake "skipped" code).
#pragma once

#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "cuattn/cuattn.h"

namespace harness {

using cuattn::DeviceType;
using cuattn::DType;
using cuattn::TensorView;
using Shape = std::vector<int64_t>;

constexpr int kExitMismatch = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoGpu = 77;

// ---------------------------------------------------------------------------------------------
// Element conversions on the host (independent of the library's own).
float to_float(DType t, const void* base, int64_t i);
void from_float(DType t, void* base, int64_t i, float x);  // round to nearest even; fp8 saturates

// ---------------------------------------------------------------------------------------------
// Tensor: a contiguous array with a host copy (always) and, on cuda, a device copy. The host copy
// is where inputs are generated and outputs are read back; view() is what the library gets.
class Tensor {
 public:
  Tensor() = default;
  Tensor(Shape shape, DType dtype, DeviceType device);
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
  const void* host_data() const { return host_.data(); }
  template <class T>
  T* host_as() { return reinterpret_cast<T*>(host_.data()); }
  template <class T>
  const T* host_as() const { return reinterpret_cast<const T*>(host_.data()); }
  void* data() const;  // where it lives: the device copy on cuda, else the host copy

  TensorView view() const;                     // where it lives, contiguous
  TensorView view(const Shape& as) const;      // same memory seen with another contiguous shape
  TensorView host_view() const;                // the host copy
  TensorView host_view(const Shape& as) const;

  void upload(cuattn::Stream s = nullptr);    // host -> device (no-op on the CPU)
  void download(cuattn::Stream s = nullptr);  // device -> host (synchronous; no-op on the CPU)
  void poison(cuattn::Stream s = nullptr);    // NaN bytes (0xff) in both copies

 private:
  std::vector<unsigned char> host_;
  void* dev_ = nullptr;
};

// A view of `len` entries of `dim` starting at `start` (same memory, same strides).
TensorView narrow(TensorView v, int dim, int64_t start, int64_t len);
// Any strided host view -> contiguous floats, and -> a contiguous host float32 Tensor.
std::vector<float> to_floats(const TensorView& host_view);
Tensor to_f32(const TensorView& host_view);
std::string shape_str(const Shape& s);

// ---------------------------------------------------------------------------------------------
// Command line.
// A flag default may depend on the device and on --small: {on cuda, on cpu, with --small}.
struct Def {
  std::string cuda, cpu, small;
  Def(int all);
  Def(int on_cuda, int on_cpu, int with_small);
  Def(const char* all);
  Def(const char* on_cuda, const char* on_cpu, const char* with_small);
};

struct Env;

class Cli {
 public:
  Cli(std::string program, std::string about);
  // names: "--batch,-b". Values are parsed once the device is known.
  void flag(int64_t* out, const std::string& names, Def def, const std::string& help);
  void flag(double* out, const std::string& names, Def def, const std::string& help);
  void flag(std::string* out, const std::string& names, Def def, const std::string& help);
  void flag(bool* out, const std::string& names, const std::string& help);  // a switch, off
  // Parses argv (exits on --help, bad flags, or cuda without a GPU), sets every flag and
  // prepares the device (stream, peak numbers).
  Env parse(int argc, char** argv, DType default_dtype);
  void usage(FILE* f) const;

 private:
  enum class Kind { i64, f64, str, boolean };
  struct Flag {
    std::vector<std::string> names;
    Kind kind;
    void* out;
    Def def;
    std::string help;
  };
  std::string program_, about_;
  std::vector<Flag> flags_;
};

// Parsers for list flags: "256,1024" and sweep cases such as "64x4096p16" (batch x length,
// then letter-number options: p = page size, h = heads, q = query tokens).
std::vector<int64_t> parse_list(const std::string& s);
struct Case {
  int64_t batch = 1, len = 1;
  std::vector<std::pair<char, int64_t>> opt;
  int64_t get(char key, int64_t fallback) const;
};
std::vector<Case> parse_cases(const std::string& s);

// ---------------------------------------------------------------------------------------------
// The run environment: the common flags, the device, the stream, the random generator.
struct Env {
  std::string program, about;
  DeviceType device = DeviceType::cpu;
  DType dtype = DType::bf16;
  bool check = false, small = false, normal = true;
  int iters = 3, warmup = 1;
  uint64_t seed = 0;
  cuattn::Stream stream = nullptr;

  // Device facts (cuda): name, tensor-core peak (dense fp16/bf16) and the measured copy rate.
  std::string device_name = "cpu";
  int sm_count = 0, cc = 0;
  double clock_ghz = 0, peak_tflops = 0, copy_gbps = 0;
  size_t l2_bytes = 0;

  bool cuda() const { return device == DeviceType::cuda; }
  const char* device_str() const { return cuda() ? "cuda" : "cpu"; }

  // Random values (normal, or uniform in [-1, 1) with --init uniform) times `scale`, stored in
  // `dtype` (env.dtype when omitted) on the host and uploaded. Every call draws fresh values.
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

  // Median time in ms of `iters` runs of fn after `warmup` runs: CUDA events on env.stream (the
  // L2 is flushed before each timed run), std::chrono on the CPU.
  double time_ms(const std::function<void()>& fn);
  // Device-to-device (cuda) or host (cpu) copy of `bytes` bytes on env.stream.
  void copy(void* dst, const void* src, size_t bytes);
  void sync();
  size_t device_free_bytes() const;
  void print_header() const;

 private:
  uint64_t draws_ = 0;
  void* flush_buf_ = nullptr;
  friend class Cli;
};

// Peak device memory allocated inside a region: the high-water mark of the stream-ordered pool
// (cudaMallocAsync, which the library uses for workspaces) and the drop in free memory.
class MemProbe {
 public:
  explicit MemProbe(const Env& env);
  size_t peak_bytes() const;  // since construction
 private:
  const Env& env_;
  size_t free_before_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Checks. Tolerances on the rel-L2 error: bf16 1e-2, f16 2e-3, f32 1e-4; any NaN fails.
struct CheckResult {
  bool done = false, ok = true, nan = false;
  double rel_l2 = 0, max_abs = 0;
  std::string note;  // e.g. "batch 0, last 256 rows"
};
double tolerance(DType t);
CheckResult compare(const std::vector<float>& got, const std::vector<float>& want, DType t);

// How much of a dense problem the CPU oracle recomputes: batches [0, batches), kv heads
// [0, kv_heads) (with their query heads), the last `rows` query rows, keys from `first_key` on.
// Large problems are cut down to about `budget` flops so that --check stays quick.
struct Slice {
  int64_t batches = 0, kv_heads = 0, rows = 0, first_key = 0;
  bool whole = true;
  std::string describe() const;
};
// window_left >= 0 lets the slice skip keys no sliced row can see.
Slice choose_slice(int64_t B, int64_t Hkv, int64_t Sq, int64_t Sk, int64_t D, int64_t group,
                   int64_t window_left = -1, double budget = 4e9);

// The oracle for dense attention: `a` as measured but with host views of the inputs; runs the
// CPU backend on float32 copies of the slice and returns its output, laid out like a's output
// restricted to the slice. The window and causal mask keep their meaning on the slice (the last
// rows keep their offset; keys before first_key must be invisible to them).
Tensor oracle_attention(cuattn::AttentionArgs a, const Slice& s);
// The same slice of a measured output (host copy, any layout) as floats.
std::vector<float> slice_output(const TensorView& out_host, cuattn::Layout layout, int64_t group,
                                const Slice& s);
// Downloads a measured dense output and compares its slice with the oracle's output.
CheckResult compare_slice(Tensor& out, const Tensor& want, cuattn::Layout layout, int64_t group,
                          const Slice& s, const Env& env);

// The oracle for paged attention: for each of the first `nb` sequences, its K/V gathered on the
// host from its pages (times the scales), then the CPU backend's dense causal attention (the T
// new tokens are the last T of the sequence). q: host view [B, T, Hq, D]; caches: host views
// [N, P, Hkv, D] of any strides (v may be a narrower view of k's memory, as in MLA); block_table
// int32 [B, max_blocks] and seq_lens int32 [B] host tensors. Returns float32 [nb, T, Hq, Dv].
Tensor oracle_paged(const TensorView& q, const TensorView& k_cache, const TensorView& v_cache,
                    const Tensor& block_table, const Tensor& seq_lens, int64_t nb,
                    double k_scale = 1.0, double v_scale = 1.0, double scale = -1);
// How many of n items of `cost_each` flops fit the oracle's budget (at least 1).
int64_t check_count(int64_t n, double cost_each, double budget = 4e9);

// Gathers sequence b's first `len` tokens from a paged NHD cache (host view, any dtype, times
// `scale`) into dense floats [len, Hkv, D].
std::vector<float> gather_pages(const TensorView& cache_host, const int32_t* block_table_row,
                                int64_t len, double scale = 1.0);

// Visible (query, key) pairs of a dense mask (causal / window, offset Sk - Sq), for FLOP counts.
double visible_pairs(int64_t Sq, int64_t Sk, bool causal, int64_t left, int64_t right);

// ---------------------------------------------------------------------------------------------
// Results: one table format for all programs.
enum class Bound { compute, memory };

struct Row {
  std::string variant, shape, device;
  double ms = -1;                   // per call; < 0: not run
  int repeat = 1;                   // calls per timed run (a loop of steps): ms = run time / repeat
  double flops = 0, bytes = 0;      // of one call; 0 = not reported
  Bound bound = Bound::compute;     // which peak "% of peak" refers to
  double extra_bytes = -1;          // extra memory (workspace, materialised scores), -1 = none
  std::vector<std::pair<std::string, std::string>> extra;  // program-specific columns
  CheckResult check;
  std::string error, note;
  void set(const std::string& column, const std::string& value);
};

class Table {
 public:
  explicit Table(Env& env);  // prints the run's header (device, peaks, dtype, seed)
  Row& add(const std::string& variant, const std::string& shape);
  // Poisons `outputs`, times fn (env.time_ms) and prints a progress line. A cuattn::Error or
  // std::exception thrown by fn is recorded in the row (which then fails) instead of ending the
  // program. Returns true when it ran.
  bool run(Row& row, std::vector<Tensor*> outputs, const std::function<void()>& fn);
  // Runs fn (an oracle comparison) and records a thrown error in the row's check.
  void check(Row& row, const std::function<CheckResult()>& fn);
  void footnote(const std::string& line) { notes_.push_back(line); }
  // Prints the table and the footnotes; returns the exit code (0, or 1 on a failure).
  int print() const;

 private:
  Env& env_;
  std::deque<Row> rows_;  // a deque: add() hands out references that must stay valid
  std::vector<std::string> notes_;
};

// Bad flag values found by a program: message + exit 2.
[[noreturn]] void usage_error(const Env& env, const std::string& msg);

// Runs fn(i) for i in [0, n) on all hardware threads (host-side oracle work).
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// Small formatting helpers.
std::string fmt(const char* f, ...);
std::string bytes_str(double bytes);  // "16.25 GiB"
void progress(const char* f, ...);    // a flushed line on stdout

}  // namespace harness
