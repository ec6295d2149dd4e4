// scheduler.h — the one decode scheduler: how many splits each sequence's KV range is cut into
// so that batch x kv-heads x splits fills the GPU (flash-decoding). Used by plan_decode (host,
// from the real lengths) and by the plan-less path (from shapes alone, no sync).
#pragma once

#include <cstdint>
#include <vector>

#include "cuattn/cuattn.h"

namespace cuattn {

struct SplitPlan {
  std::vector<int32_t> num_splits;  // per sequence
  int max_splits = 1;
  int chunk_tokens = 0;  // KV tokens per split, a multiple of the page size
};

// Work units are (sequence, kv head, split); we aim for at most ctas_per_sm() CTAs per SM, and never
// cut a split shorter than kMinChunk tokens (below that the merge costs more than it saves).
constexpr int kMinChunk = 256;
constexpr int kMaxSplitsPerSeq = 512;  // the decode kernels' combine holds this many weights
// One CTA per SM: the TMA-fed paged kernel streams as fast with one CTA an SM as with two, and
// fewer splits mean less merging (decode_sweep, H100: B16 L8192 2770 GB/s with 1 split vs 2722
// with 2; B2 L32768 2487 with 8 splits vs 2160 with 17).
constexpr int kCtasPerSm = 1;  // default; CUATTN_DECODE_CTAS_PER_SM=N overrides (experiments)
int ctas_per_sm();

// chunk size for `batch` sequences of at most `max_len` tokens (or total_len tokens in all).
int choose_chunk(int64_t batch, int64_t heads_kv, int64_t total_len, int64_t max_len,
                 int page_size, int num_sms);

SplitPlan plan_splits(const int32_t* seq_lens, int batch, const PlanOptions& opt, int num_sms);

}  // namespace cuattn
