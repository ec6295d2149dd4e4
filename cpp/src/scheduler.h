// scheduler.h — the host's choices for the kernels, as pure functions of shapes and device
// properties: how many splits each sequence's KV range is cut into so that batch x kv-heads x
// splits fills the GPU (flash-decoding), and which kernel variant a call runs. Used by
// plan_decode (from the real lengths; the result is stored in the plan) and by plan-less calls
// (from shapes alone, no sync). Tests and benchmarks override the variant through an internal
// `variant` string (AttentionArgs / PagedArgs), never through the environment.
#pragma once

#include <cstdint>
#include <string>

#include "cuattn/cuattn.h"
#include "cuattn/launch.h"

namespace cuattn {

struct DeviceProps {
  int sm_count = 1;
  int cc_major = 0, cc_minor = 0;
};

// One CTA per SM: the TMA-fed paged kernel streams as fast with one CTA an SM as with two, and
// fewer splits mean less merging (decode_sweep, H100: B16 L8192 2770 GB/s with 1 split vs 2722
// with 2; B2 L32768 2487 with 8 splits vs 2160 with 17).
constexpr int kCtasPerSm = 1;

// A paged decode call (or a plan) as the scheduler sees it.
struct DecodeShape {
  int64_t batch = 0, heads_q = 1, heads_kv = 1, seqlen_q = 1, page_size = 1;
  int64_t total_len = 0, max_len = 0;  // tokens of all sequences / of the longest
  int split_sms = 0;                   // SMs the splits should fill (plan_decode's num_sms); 0: the device's
  int ctas_per_sm = kCtasPerSm;        // CTAs an SM the splits aim for
};

struct DecodeSchedule {
  int chunk_tokens = 0;  // KV tokens per split, a multiple of the page size
  int max_splits = 1;    // splits of the longest sequence
  DecodeConfig config;
};

// Row chunks of kDecodeRows query rows (GQA group x new tokens) per kv head.
int64_t decode_row_chunks(int64_t heads_q, int64_t heads_kv, int64_t seqlen_q);

// Chunk size for `batch` sequences of at most `max_len` tokens (or total_len tokens in all).
int choose_chunk(int64_t batch, int64_t heads_kv, int64_t total_len, int64_t max_len,
                 int64_t page_size, int num_sms, int ctas_per_sm);

// The splits and the kernel variant of a decode call.
DecodeSchedule choose_decode(const DecodeShape& s, const DeviceProps& dev);
DecodeConfig choose_decode_config(const DecodeShape& s, int chunk_tokens, int max_splits,
                                  const DeviceProps& dev);

// mla_decode's kernel: the decode work list with the portable kernel (16-row units), the
// per-sequence split kernel (64 query rows a CTA), or the work list with an sm_90a kernel (TMA,
// wgmma): 64-row units (hopper), or for at most 32 query rows the narrow one (16- or 32-row
// units, the products transposed so that no tensor-core row is padding).
enum class MlaKernel { list, split, hopper, narrow };
struct MlaDecodeChoice {
  MlaKernel kernel = MlaKernel::list;
  MlaKernel fallback = MlaKernel::list;  // where the sm_90a kernel cannot run the call
  bool forced = false;                   // the variant asked for this kernel: no fallback
};
// On sm_90 the 64-row sm_90a kernel (H100, bf16, page 64, same run: 1.2-4.1x faster than either
// portable kernel at Hq 16-128, B1-128; on an H200 the narrow one runs within a few per cent of
// it at Hq 16, ahead on some rows and behind on others, and 15 % behind at Hq 32, so it is not
// chosen); elsewhere, and for calls it cannot run, by shape: the split kernel
// reads each key tile for 64 query rows instead of 16, which wins once its CTAs alone fill the GPU
// at Hq x Sq > 64 (H100: B64 / B128 at Hq 128 1.10-1.27x faster; the list wins at Hq <= 64 and at
// B1 Hq 128). The internal variant forces one ("list=1", "list=0", "hopper=1", "narrow=1";
// ValueError for another).
MlaDecodeChoice choose_mla_decode(int64_t batch, int64_t rows, const DeviceProps& dev, const std::string& variant);

// The flash instantiation and kernel of an attention call; false when no instantiation covers
// its head dims in this build.
bool choose_flash_config(const AttnParams& p, const DeviceProps& dev, FlashConfig& out);

// Applies an internal variant string ("key=value,...", see AttentionArgs / PagedArgs::variant)
// over a chosen config; ValueError for an unknown key or a value that is not an integer.
void apply_variant(const std::string& variant, FlashConfig& c);
// ctas_per_sm: set when the string has it (it changes the splits of a plan-less call).
void apply_variant(const std::string& variant, DecodeConfig& c, int* ctas_per_sm = nullptr);

}  // namespace cuattn
