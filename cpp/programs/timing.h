// timing.h — timing and device facts. Env::time_ms (env.h) is the median of --iters runs after
// --warmup untimed ones: CUDA events on the run's stream with the L2 flushed before each timed
// run (as memory-bound kernels would find it in a model), std::chrono on the CPU.
// Env::setup_device measures the copy rate and computes the tensor-core peak that the table's
// "% of peak" column refers to.
#pragma once

#include <cstddef>

#include "env.h"

namespace harness {

double median(std::vector<double> v);  // -1 when empty

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
