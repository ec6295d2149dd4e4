// timing.h — timing and device facts. Env::time_ms (env.h) is the median of --iters runs after
// --warmup untimed ones: CUDA events on the run's stream with the L2 flushed before each timed
// run (as memory-bound kernels would find it in a model), std::chrono on the CPU; time_each times
// the calls of a loop one by one.
// Env::setup_device measures the copy rate and computes the tensor-core peak that the table's
// "% of peak" column refers to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "env.h"

namespace harness {

double median(std::vector<double> v);  // -1 when empty

// The latency of single calls that differ from one to the next (step i of a loop): fn(i) for i in
// [0, warmup + n), each started on an idle device with a cold L2 (flushed, then waited for) and
// timed alone with CUDA events on env.stream (std::chrono on the CPU), so that each time includes
// the call's host launch cost. Returns the times in ms of the last n calls.
std::vector<double> time_each(Env& env, int64_t warmup, int64_t n, const std::function<void(int64_t)>& fn);

// The latency of a call in a loop that keeps the device busy (a serving loop's steps): per run,
// the L2 flushed and waited for, then fn(0), ..., fn(steps - 1) issued back to back and timed
// together. Returns each of the last n runs' time per call in ms (warmup runs first, untimed).
std::vector<double> time_loops(Env& env, int64_t warmup, int64_t n, int64_t steps,
                               const std::function<void(int64_t)>& fn);

// Throws cuattn::CudaError naming `what` unless status (a cudaError_t) is cudaSuccess (cuda builds).
void ck(int status, const char* what);

// Peak device memory allocated inside a region: the high-water mark of the stream-ordered pool
// (cudaMallocAsync, which the library uses for workspaces) and the drop in free memory.
class MemProbe {
 public:
  explicit MemProbe(const Env& env);
  size_t peak_bytes() const;  // since construction; 0 on the CPU
 private:
  const Env& env_;
  size_t free_before_ = 0;
};

}  // namespace harness
