// timing.cpp — see timing.h.
#include "timing.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common.h"

#ifdef CUATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace harness {

#ifdef CUATTN_WITH_CUDA
void ck(int status, const char* what) {
  const cudaError_t e = static_cast<cudaError_t>(status);
  if (e != cudaSuccess) {
    cudaGetLastError();
    throw cuattn::CudaError(fmt("%s: %s (%s)", what, cudaGetErrorName(e), cudaGetErrorString(e)));
  }
}
#endif

double median(std::vector<double> v) {
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

namespace {

// run(i) for i in [0, warmup + n), each started on an idle device with a cold L2 and timed alone
// (CUDA events on env.stream, std::chrono on the CPU); the times in ms of the last n.
std::vector<double> timed_runs(Env& env, int64_t warmup, int64_t n, const std::function<void(int64_t)>& run) {
  std::vector<double> ms;
#ifdef CUATTN_WITH_CUDA
  if (env.cuda()) {
    struct Scratch {  // freed however the loop ends
      void* flush = nullptr;
      cudaEvent_t ev[2] = {nullptr, nullptr};
      ~Scratch() {
        if (flush) cudaFree(flush);
        for (cudaEvent_t e : ev)
          if (e) cudaEventDestroy(e);
      }
    } s;
    const size_t flush_bytes = 2 * env.l2_bytes;
    if (flush_bytes) ck(cudaMalloc(&s.flush, flush_bytes), "cudaMalloc (L2 flush)");
    for (cudaEvent_t& e : s.ev) ck(cudaEventCreate(&e), "cudaEventCreate");
    for (int64_t i = 0; i < warmup + n; ++i) {
      if (s.flush) ck(cudaMemsetAsync(s.flush, int(i & 0xff), flush_bytes, env.stream), "L2 flush");
      env.sync();
      ck(cudaEventRecord(s.ev[0], env.stream), "cudaEventRecord");
      run(i);
      ck(cudaEventRecord(s.ev[1], env.stream), "cudaEventRecord");
      ck(cudaEventSynchronize(s.ev[1]), "cudaEventSynchronize");
      float t = 0;
      ck(cudaEventElapsedTime(&t, s.ev[0], s.ev[1]), "cudaEventElapsedTime");
      if (i >= warmup) ms.push_back(t);
    }
    return ms;
  }
#endif
  for (int64_t i = 0; i < warmup + n; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run(i);
    const auto t1 = std::chrono::steady_clock::now();
    if (i >= warmup) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return ms;
}

}  // namespace

std::vector<double> time_each(Env& env, int64_t warmup, int64_t n, const std::function<void(int64_t)>& fn) {
  return timed_runs(env, warmup, n, fn);
}

std::vector<double> time_loops(Env& env, int64_t warmup, int64_t n, int64_t steps,
                               const std::function<void(int64_t)>& fn) {
  std::vector<double> ms = timed_runs(env, warmup, n, [&](int64_t) {
    for (int64_t t = 0; t < steps; ++t) fn(t);
  });
  for (double& x : ms) x /= double(std::max<int64_t>(steps, 1));
  return ms;
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

void Env::setup_device() {
#ifdef CUATTN_WITH_CUDA
  const int dev = 0;
  ck(cudaSetDevice(dev), "cudaSetDevice");
  ck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  cudaDeviceProp p;
  ck(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
  int clock_khz = 0, l2 = 0;
  // CUDA 13 removed cudaDeviceProp::clockRate; the attribute remains.
  ck(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev), "clock rate");
  ck(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), "L2 size");
  device_name = p.name;
  sm_count = p.multiProcessorCount;
  cc = p.major * 10 + p.minor;
  clock_ghz = clock_khz * 1e-6;
  l2_bytes = size_t(l2);
  // Dense fp16/bf16 tensor-core FLOPs per clock per SM: 1024 (sm_70), 2048 (sm_80/86/89),
  // 4096 (sm_90), 8192 (sm_100).
  const double per_clk = p.major >= 10 ? 8192 : p.major == 9 ? 4096 : p.major == 8 ? 2048 : 1024;
  peak_tflops = sm_count * clock_khz * 1e3 * per_clk * 1e-12;
  if (l2_bytes) ck(cudaMalloc(&flush_buf_, 2 * l2_bytes), "cudaMalloc (L2 flush)");
  // Copy bandwidth: a large device-to-device copy, bytes read + written.
  const size_t n = std::min<size_t>(size_t(1) << 30, device_free_bytes() / 8);
  void *a = nullptr, *b = nullptr;
  ck(cudaMalloc(&a, n), "cudaMalloc (copy test)");
  ck(cudaMalloc(&b, n), "cudaMalloc (copy test)");
  ck(cudaMemset(a, 0, n), "cudaMemset");
  const int saved_iters = iters, saved_warmup = warmup;
  iters = 10, warmup = 2;
  const double ms = time_ms([&] { ck(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream), "copy"); });
  iters = saved_iters, warmup = saved_warmup;
  copy_gbps = 2.0 * double(n) / (ms * 1e-3) / 1e9;
  cudaFree(a);
  cudaFree(b);
#endif
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

}  // namespace harness
