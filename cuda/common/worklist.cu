// worklist.cu — kernels::build_worklist: the decode scheduler's line (cuattn/worklist.h) built on
// the device from seq_lens (and cu_seqlens_q in mixed batches), so that a call without a plan
// needs no host sync and a captured graph rebuilds it on every replay from the lengths of that step.
//
// One CTA of 1024 threads: thread t takes a contiguous run of sequences, sums their costs, the
// CTA scans the 1024 sums (warp shuffles, then one warp over the 32 warp totals), and each thread
// writes its run's starts. The same integers as the host's build_worklist, in any order of
// summation, because they are integers.
#include "common/arch.cuh"
#include "common/launch.cuh"
#include "cuattn/launch.h"
#include "cuattn/worklist.h"

namespace cuattn {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ int64_t warp_inclusive_scan(int64_t x, int lane) {
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const int64_t y = __shfl_up_sync(0xffffffffu, x, off);
    if (lane >= off) x += y;
  }
  return x;
}

// Positions of sequence b on the line (and its units, when `units` is not null).
__device__ __forceinline__ int64_t seq_cost(const int32_t* lens, const int32_t* cu_q, int b, const WorkListShape& s,
                                            int64_t max_len, int* units = nullptr) {
  const int u = seq_unit_count(cu_q, b, s);
  if (units) *units = u;
  return int64_t(u) * unit_cost(clamp_len(lens[b], max_len), s);
}

__global__ void __launch_bounds__(kThreads) build_worklist_kernel(const int32_t* __restrict__ lens,
                                                                  const WorkListShape s, const int64_t max_len,
                                                                  int64_t* __restrict__ seq_start,
                                                                  int32_t* __restrict__ clamped,
                                                                  const int32_t* __restrict__ cu_q,
                                                                  int32_t* __restrict__ seq_units,
                                                                  const bool early_dependents) {
  if (early_dependents) launch_dependents();
  __shared__ int64_t warp_total[kThreads / 32];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int per = (s.batch + kThreads - 1) / kThreads;
  const int b0 = min(t * per, s.batch), b1 = min(b0 + per, s.batch);
  int64_t mine = 0;
  for (int b = b0; b < b1; ++b) mine += seq_cost(lens, cu_q, b, s, max_len);
  const int64_t incl = warp_inclusive_scan(mine, lane);
  if (lane == 31) warp_total[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int64_t w = warp_inclusive_scan(warp_total[lane], lane);
    warp_total[lane] = w;  // inclusive over warps 0..lane
  }
  __syncthreads();
  int64_t at = incl - mine + (warp > 0 ? warp_total[warp - 1] : 0);  // exclusive start of this run
  for (int b = b0; b < b1; ++b) {
    int units = 0;
    clamped[b] = int32_t(clamp_len(lens[b], max_len));
    seq_start[b] = at;
    at += seq_cost(lens, cu_q, b, s, max_len, &units);
    if (cu_q) seq_units[b] = units;
  }
  if (t == kThreads - 1) seq_start[s.batch] = warp_total[31];
}

}  // namespace

void kernels::build_worklist(const int32_t* seq_lens, const WorkListShape& s, int64_t max_len, int64_t* seq_start,
                             int32_t* clamped_lens, Stream stream, const int32_t* cu_seqlens_q,
                             int32_t* seq_units, bool early_dependents) {
  build_worklist_kernel<<<1, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      seq_lens, s, max_len, seq_start, clamped_lens, cu_seqlens_q, seq_units, early_dependents);
  check_launch("build_worklist_kernel launch");
}

}  // namespace cuattn
