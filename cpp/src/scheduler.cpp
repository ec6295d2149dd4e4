// scheduler.cpp — see scheduler.h.
#include "scheduler.h"

#include <algorithm>

namespace cuattn {

int choose_chunk(int64_t batch, int64_t heads_kv, int64_t total_len, int64_t max_len,
                 int page_size, int num_sms) {
  const int64_t ps = std::max(page_size, 1);
  const int64_t longest = std::max<int64_t>(max_len, 1);
  const int64_t target = int64_t(std::max(num_sms, 1)) * kCtasPerSm;  // CTAs we would like
  int64_t chunk = longest;  // one split per sequence
  if (batch * heads_kv < target) {
    // Spread all tokens over the target number of CTAs.
    const int64_t per_cta = (std::max<int64_t>(total_len, 1) * heads_kv + target - 1) / target;
    chunk = std::max<int64_t>(per_cta, kMinChunk);
  }
  chunk = std::max<int64_t>(chunk, (longest + kMaxSplitsPerSeq - 1) / kMaxSplitsPerSeq);
  chunk = std::min(chunk, longest);
  chunk = (chunk + ps - 1) / ps * ps;  // whole pages: a split never shares a page
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
