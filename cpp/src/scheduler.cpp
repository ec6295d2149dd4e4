// scheduler.cpp — see scheduler.h.
#include "scheduler.h"

#include <algorithm>
#include <cstdlib>

namespace cuattn {

int ctas_per_sm() {
  static const int n = [] {
    const char* e = std::getenv("CUATTN_DECODE_CTAS_PER_SM");
    const int v = e ? std::atoi(e) : 0;
    return v >= 1 && v <= 64 ? v : kCtasPerSm;
  }();
  return n;
}

int choose_chunk(int64_t batch, int64_t heads_kv, int64_t total_len, int64_t max_len,
                 int page_size, int num_sms) {
  const int64_t ps = std::max(page_size, 1);
  const int64_t longest = std::max<int64_t>(max_len, 1);
  const int64_t target = int64_t(std::max(num_sms, 1)) * ctas_per_sm();  // CTAs we would like
  int64_t chunk = longest;  // one split per sequence
  const int64_t units = std::max<int64_t>(batch * heads_kv, 1);
  if (units < target) {
    // At most target CTAs: each (sequence, kv head) cut into target / units splits (rounded
    // down) of the mean length each. A few CTAs past one a SM double up on their SMs and hold
    // back the end of the call (H100, decode_sweep: B1 L32768 16 splits = 128 CTAs 2089 GB/s,
    // 17 = 136 CTAs 1955; B3 L16384 5 splits 2305, 6 splits 2142; B6 L8192 2 splits (96 CTAs)
    // 2333, 3 splits 2150). Even half the SMs busy beats a partial second wave: B9 L8192 1 split
    // (72 CTAs) 2503, 2 splits 2357.
    const int64_t splits = std::max<int64_t>(target / units, 1);
    const int64_t mean = (std::max<int64_t>(total_len, 1) + batch - 1) / std::max<int64_t>(batch, 1);
    chunk = std::max<int64_t>((mean + splits - 1) / splits, kMinChunk);
  }
  chunk = std::max<int64_t>(chunk, (longest + kMaxSplitsPerSeq - 1) / kMaxSplitsPerSeq);
  chunk = (chunk + ps - 1) / ps * ps;  // whole pages: a split never shares a page
  chunk = std::min(chunk, (longest + ps - 1) / ps * ps);
  return int(std::min<int64_t>(chunk, INT32_MAX / 2));
}

SplitPlan plan_splits(const int32_t* seq_lens, int batch, const PlanOptions& opt, int num_sms) {
  SplitPlan s;
  int64_t total = 0, longest = 0;
  for (int b = 0; b < batch; ++b) {
    total += std::max(seq_lens[b], 0);
    longest = std::max<int64_t>(longest, seq_lens[b]);
  }
  s.chunk_tokens = choose_chunk(batch, opt.num_heads_kv, total, longest, opt.page_size, num_sms);
  s.num_splits.resize(size_t(batch));
  for (int b = 0; b < batch; ++b) {
    const int64_t L = std::max(seq_lens[b], 0);
    s.num_splits[size_t(b)] = int32_t(std::max<int64_t>(1, (L + s.chunk_tokens - 1) / s.chunk_tokens));
    s.max_splits = std::max(s.max_splits, int(s.num_splits[size_t(b)]));
  }
  return s;
}

}  // namespace cuattn
