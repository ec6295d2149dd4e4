// scheduler.cpp — see scheduler.h.
#include "scheduler.h"

#include <algorithm>
#include <map>

#include "validate.h"

namespace cuattn {

int64_t decode_row_chunks(int64_t heads_q, int64_t heads_kv, int64_t seqlen_q) {
  const int64_t group = heads_q / std::max<int64_t>(heads_kv, 1);
  return (group * seqlen_q + kDecodeRows - 1) / kDecodeRows;
}

int choose_chunk(int64_t batch, int64_t heads_kv, int64_t total_len, int64_t max_len,
                 int64_t page_size, int num_sms, int ctas_per_sm) {
  const int64_t ps = std::max<int64_t>(page_size, 1);
  const int64_t longest = std::max<int64_t>(max_len, 1);
  const int64_t target = int64_t(std::max(num_sms, 1)) * std::max(ctas_per_sm, 1);  // CTAs we would like
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
    chunk = std::max<int64_t>((mean + splits - 1) / splits, kMinDecodeChunk);
  }
  chunk = std::max<int64_t>(chunk, (longest + kMaxDecodeSplits - 1) / kMaxDecodeSplits);
  chunk = (chunk + ps - 1) / ps * ps;  // whole pages: a split never shares a page
  chunk = std::min(chunk, (longest + ps - 1) / ps * ps);
  return int(std::min<int64_t>(chunk, INT32_MAX / 2));
}

DecodeConfig choose_decode_config(const DecodeShape& s, int chunk_tokens, int max_splits,
                                  const DeviceProps& dev) {
  DecodeConfig c;
  c.sm_count = std::max(dev.sm_count, 1);
  const int64_t ctas = int64_t(max_splits) * s.heads_kv * decode_row_chunks(s.heads_q, s.heads_kv, s.seqlen_q) * s.batch;
  const bool one_wave = ctas <= c.sm_count;  // one CTA an SM or less
  // Rows of at most 128 bytes (fp8 D64 / D128, 16-bit D64) on a grid of one wave take the 8-warp
  // TMA kernel (the launcher knows the row size).
  c.wide = one_wave;
  // Persistent CTAs for grids of several waves, where the kernel has them (fp8; H100, fp8 D128:
  // B64 L4096 +1.3 %, B128 L4096 +3.2 %, B256 L2048 +4.7 %). 16-bit caches lost 1-2 %: their
  // kernel runs two CTAs an SM, but with the merge scratch past its 96 KB ring only one fits.
  c.persistent = !one_wave;
  // Page order: after 8 tiles, where it was measured to help (random pages, H100): a grid of one
  // wave (B1 +1.9 %, B16 +1.8 %) or CTAs of 4096 keys or more (B64 L4096 +1.0 %); several waves
  // of 2048-key CTAs lost 0.1-0.4 % (B256 L2048).
  if (one_wave || chunk_tokens >= 4096) c.page_order_after = 8;
  return c;
}

DecodeSchedule choose_decode(const DecodeShape& s, const DeviceProps& dev) {
  DecodeSchedule r;
  const int sms = s.split_sms > 0 ? s.split_sms : dev.sm_count;
  r.chunk_tokens = choose_chunk(s.batch, s.heads_kv, s.total_len, s.max_len, s.page_size, sms, s.ctas_per_sm);
  r.max_splits = int(std::max<int64_t>(1, (s.max_len + r.chunk_tokens - 1) / r.chunk_tokens));
  r.config = choose_decode_config(s, r.chunk_tokens, r.max_splits, dev);
  return r;
}

bool choose_flash_config(const AttnParams& p, const DeviceProps& dev, FlashConfig& out) {
  bool found = false;
  for (const HeadDimPair& k : kFlashHeadDims)
    if (head_dim_built(k.d) && k.d >= p.head_dim && k.dv >= p.head_dim_v &&
        (!found || k.d + k.dv < out.head_dim + out.head_dim_v)) {
      out.head_dim = k.d, out.head_dim_v = k.dv;
      found = true;
    }
  // The Hopper kernel on sm_90, for every instantiation (it also needs sm_90a code in the build
  // and more than one kv tile: the launcher checks those).
  out.hopper = found && dev.cc_major == 9 && dev.cc_minor == 0;
  // Its longer key tile (128 x 112 at D192, 128 x 80 at D256; calls without a block mask) at
  // D192 and D256: 2-15 % faster there on every benchmark row (H100, bench/NOTES.md); at D128
  // (128 x 176) it won at S16k and lost at S8k, so D128 keeps 128 x 128.
  out.alt_tile = out.head_dim_v >= 192;
  return found;
}

namespace {

// "a=1,b=2" -> {a: 1, b: 2}; every key must be one of `keys`.
std::map<std::string, int> parse_variant(const std::string& spec, std::initializer_list<const char*> keys) {
  std::map<std::string, int> r;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    const std::string item = spec.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return key == k; }))
      detail::value_error("variant: unknown setting '", key, "' in '", spec, "'");
    try {
      size_t used = 0;
      const std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
      r[key] = std::stoi(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
    } catch (const std::exception&) {
      detail::value_error("variant: '", item, "' needs an integer value");
    }
  }
  return r;
}

}  // namespace

void apply_variant(const std::string& variant, FlashConfig& c) {
  if (variant.empty()) return;
  const auto v = parse_variant(variant, {"portable", "hopper", "alt_tile"});
  const bool portable = v.count("portable") && v.at("portable") != 0;
  if (portable && v.count("hopper") && v.at("hopper") != 0)
    detail::value_error("variant: 'portable' and 'hopper' both set in '", variant, "'");
  if (portable) c.hopper = false;
  // The Hopper kernel for any instantiation (the launcher still falls back to the portable one
  // where the device, the build or the call rule it out), or off.
  if (v.count("hopper")) c.hopper = v.at("hopper") != 0;
  // The Hopper kernel's longer key tile (1) or its 128 x 128 / 128 x 64 one (0), where the pair has both.
  if (v.count("alt_tile")) c.alt_tile = v.at("alt_tile") != 0;
}

void apply_variant(const std::string& variant, DecodeConfig& c, int* ctas_per_sm) {
  if (variant.empty()) return;
  const auto v = parse_variant(variant, {"tma", "wide", "persistent", "persistent_ctas", "page_order",
                                         "pdl", "ctas_per_sm", "list", "list_ctas", "list_granule",
                                         "list_overhead", "drain"});
  const auto get = [&](const char* k, auto& field) {
    if (v.count(k)) field = std::remove_reference_t<decltype(field)>(v.at(k));
  };
  get("tma", c.tma);
  get("wide", c.wide);
  get("pdl", c.pdl);
  get("drain", c.drain);
  get("page_order", c.page_order_after);
  // A cap on the persistent CTAs runs them on any grid of more units; persistent=0 wins.
  if (v.count("persistent_ctas") && v.at("persistent_ctas") > 0) {
    c.persistent_ctas = v.at("persistent_ctas");
    c.persistent = true;
  }
  get("persistent", c.persistent);
  // The work list; a cap on its CTAs turns it on; list=0 wins.
  if (v.count("list_ctas") && v.at("list_ctas") > 0) {
    c.list_ctas = v.at("list_ctas");
    c.list = true;
  }
  get("list", c.list);
  // The list's cost model (experiments): a granule of 16..8192 keys in whole 16-key steps (a
  // piece may start inside a tile: the kernel masks by key range), an overhead of 1..1024.
  if (v.count("list_granule")) c.list_granule = std::clamp(v.at("list_granule"), 16, 8192) / 16 * 16;
  if (v.count("list_overhead")) c.list_overhead = std::clamp(v.at("list_overhead"), 1, 1024);
  if (ctas_per_sm != nullptr && v.count("ctas_per_sm"))
    *ctas_per_sm = std::clamp(v.at("ctas_per_sm"), 1, 64);
}

MlaDecodeChoice choose_mla_decode(int64_t batch, int64_t rows, const DeviceProps& dev, const std::string& variant) {
  MlaDecodeChoice c;
  const bool wide_and_full = rows > 64 && batch * ((rows + 63) / 64) >= dev.sm_count;
  c.fallback = wide_and_full ? MlaKernel::split : MlaKernel::list;
  c.kernel = dev.cc_major == 9 && dev.cc_minor == 0 ? MlaKernel::hopper : c.fallback;
  if (variant.empty()) return c;
  c.forced = true;
  if (variant == "list=1") c.kernel = MlaKernel::list;
  else if (variant == "list=0") c.kernel = MlaKernel::split;
  else if (variant == "hopper=1") c.kernel = MlaKernel::hopper;
  else if (variant == "narrow=1") c.kernel = MlaKernel::narrow;
  else
    detail::value_error("mla_decode: unknown variant '", variant,
                        "' (internal: list=0, list=1, hopper=1 or narrow=1)");
  return c;
}

}  // namespace cuattn
