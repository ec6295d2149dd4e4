// dispatch.cpp — the GPU side of every host entry point, after validation: the limits of the
// kernels, the variant (chosen by scheduler.h's pure functions, with a call's internal `variant`
// string over it), the split-KV workspace, then the launch through cuattn/launch.h.
#ifdef CUATTN_WITH_CUDA
#include <algorithm>
#include <cstdlib>

#include "backend.h"
#include "cuattn/launch.h"
#include "scheduler.h"
#include "validate.h"

namespace cuattn::cuda {
using namespace detail;

namespace {

// Byte layout of a split workspace: the counters first, then partial O and partial LSE. The
// kernels return every counter they use to zero, so a counter region that only ever grows (and is
// zeroed when it does) is all zeros between launches, whatever shapes earlier calls had; partials
// need no initialisation.
struct WorkspaceLayout {
  size_t counter_bytes, o_bytes, lse_bytes;
  size_t list_bytes = 0;  // the work list's arrays (list schedule only)
  int64_t batch = 0;
  size_t total() const { return counter_bytes + o_bytes + lse_bytes + list_bytes; }
};

// The grid schedule: a merge count per unit, max_splits partial slots per unit.
WorkspaceLayout layout(int64_t batch, int64_t units, int64_t max_splits, int64_t dv) {
  WorkspaceLayout l;
  // one merge count per unit, rounded to 256 bytes so the partials stay aligned
  l.counter_bytes = (size_t(batch * units) * sizeof(int) + 255) / 256 * 256;
  l.o_bytes = size_t(batch * units * max_splits * kDecodeRows * dv) * sizeof(float);
  l.lse_bytes = size_t(batch * units * max_splits * kDecodeRows) * sizeof(float);
  return l;
}

// The list schedule (cuattn/worklist.h): a merge count per CTA and two partial slots per CTA
// (partial_slot), for the most CTAs the launcher may run (kListCtasPerSm an SM), then the list:
// seq_start [batch + 1] (int64), the clamped lengths [batch] and the units of each sequence [batch]
// (mixed batches).
WorkspaceLayout list_layout(int64_t batch, int sm_count, int64_t dv) {
  const int64_t ctas = int64_t(std::max(sm_count, 1)) * kListCtasPerSm;
  WorkspaceLayout l = layout(1, ctas, 2, dv);  // 2 * ctas slots, ctas counters
  l.list_bytes = size_t(batch + 1) * sizeof(int64_t) + 2 * size_t(batch) * sizeof(int32_t);
  l.batch = batch;
  return l;
}

SplitWorkspace carve(void* base, const WorkspaceLayout& l, int chunk, int max_splits) {
  SplitWorkspace ws;
  char* c = static_cast<char*>(base);
  ws.counters = reinterpret_cast<int*>(c);
  ws.o = reinterpret_cast<float*>(c + l.counter_bytes);
  ws.lse = reinterpret_cast<float*>(c + l.counter_bytes + l.o_bytes);
  ws.chunk_tokens = chunk;
  ws.max_splits = max_splits;
  if (l.list_bytes > 0) {  // 8-byte aligned: the partials are whole floats of 16-row slots
    char* list = c + l.counter_bytes + l.o_bytes + l.lse_bytes;
    ws.list.seq_start = reinterpret_cast<const int64_t*>(list);
    ws.list.seq_lens = reinterpret_cast<const int32_t*>(list + size_t(l.batch + 1) * sizeof(int64_t));
    ws.list.seq_units = ws.list.seq_lens + l.batch;  // written (and read) in mixed batches only
  }
  return ws;
}

// A plan's workspace serves either schedule (a call's variant may pick the other one), so both
// carve it with one counter region, the larger: then each schedule's partials lie past every
// counter the other uses, and the counters stay zero between launches whichever ran last.
WorkspaceLayout plan_layout(int64_t batch, int64_t units, int max_splits, int sm_count, int64_t dv, bool list) {
  WorkspaceLayout grid = layout(batch, units, max_splits, dv), lst = list_layout(batch, sm_count, dv);
  const size_t counters = std::max(grid.counter_bytes, lst.counter_bytes);
  grid.counter_bytes = lst.counter_bytes = counters;
  return list ? lst : grid;
}

// The host's cached workspace (cached_workspace: it may give a larger counter region) carved by `l`.
SplitWorkspace cached(WorkspaceLayout l, int chunk, int max_splits, Stream stream) {
  void* base = cached_workspace(l.counter_bytes, l.o_bytes + l.lse_bytes + l.list_bytes, stream);
  return carve(base, l, chunk, max_splits);
}

// The list's shape for this call; the launcher sets its CTA count.
void shape_list(SplitWorkspace& ws, const PagedParams& p, int64_t units, const DecodeConfig& c) {
  WorkListShape& s = ws.list.s;
  s.batch = p.batch;
  s.units = int(units);
  s.granule = c.list_granule > 0 ? c.list_granule : kListGranule;
  s.overhead = c.list_overhead > 0 ? c.list_overhead : kListOverhead;
  if (p.cu_seqlens_q != nullptr) {  // mixed batches: units by each sequence's query tokens
    s.heads_kv = p.num_heads_kv, s.group = p.num_heads_q / p.num_heads_kv;
    s.rows = kDecodeRows, s.max_tokens = std::max(p.seqlen_q, 0);  // seqlen_q: the longest
  } else {
    ws.list.seq_units = nullptr;
  }
}

int64_t units_of(const PagedParams& p) {
  return p.num_heads_kv * decode_row_chunks(p.num_heads_q, p.num_heads_kv, p.seqlen_q);
}

}  // namespace

bool attention_supported(DType t, int d, int dv) {
  FlashConfig c;
  AttnParams p;
  p.head_dim = d, p.head_dim_v = dv;
  return (t == DType::f16 || t == DType::bf16) && d % kHeadDimMultiple == 0 && dv % kHeadDimMultiple == 0 &&
         choose_flash_config(p, DeviceProps{}, c);
}

bool paged_supported(DType q, DType kv, int d, int dv) {
  return (q == DType::f16 || q == DType::bf16) && (kv == q || kv == DType::fp8_e4m3) && d == dv &&
         contains(kPagedHeadDims, d) && head_dim_built(d);
}

void attention(const AttnParams& p, const std::string& variant, Stream stream) {
  if (p.batch > kMaxGridYZ || p.num_heads_q > kMaxGridYZ)
    value_error("the GPU kernel supports at most ", kMaxGridYZ, " sequences and ", kMaxGridYZ,
                " heads, got batch ", p.batch, ", heads ", p.num_heads_q);
  FlashConfig c;
  if (!choose_flash_config(p, current_device_props(), c))
    value_error("no GPU kernel for head_dim ", p.head_dim, " / ", p.head_dim_v, " in this build");
  apply_variant(variant, c);
  const BlockMaskParams& m = p.block_mask;
  if (m.present() && (m.block_q % kFlashTileQ != 0 || m.block_kv % kFlashTileKV != 0))
    value_error("block_mask block_size (", m.block_q, ", ", m.block_kv, ") is not supported on the GPU: "
                "use multiples of (", kFlashTileQ, ", ", kFlashTileKV, "), e.g. the default 128");
  kernels::attention(p, c, stream);
}

void naive_attention(const AttnParams& p, void* workspace, Stream stream) {
  if (int64_t(p.batch) * p.num_heads_q > kMaxGridYZ)
    value_error("naive_attention on the GPU supports at most ", kMaxGridYZ, " (batch x heads), got ",
                int64_t(p.batch) * p.num_heads_q);
  kernels::naive_attention(p, static_cast<float*>(workspace), stream);
}

void paged_attention(const PagedParams& p, const DecodePlan* plan, const std::string& variant, Stream stream) {
  if (p.batch > kMaxGridYZ) value_error("the GPU paged kernel supports at most ", kMaxGridYZ, " sequences");
  if (!paged_supported(p.q_dtype, p.kv_dtype, p.head_dim, p.head_dim_v))
    value_error("no paged kernel for head_dim ", p.head_dim, " in this build");
  // The kernel addresses a row inside the cache with 32-bit page/slot strides.
  const auto fits = [&](int64_t page_stride, int64_t slot_stride) {
    return std::abs(page_stride) < INT32_MAX && std::abs(slot_stride) * p.page_size < INT32_MAX / 2;
  };
  if (!fits(p.k_page_stride, p.k_slot_stride) || !fits(p.v_page_stride, p.v_slot_stride))
    value_error("the GPU paged kernel needs cache page and slot strides under 2^31 elements, got k (",
                p.k_page_stride, ", ", p.k_slot_stride, "), v (", p.v_page_stride, ", ", p.v_slot_stride, ")");
  const int64_t units = units_of(p);
  if (plan != nullptr) {
    DecodeConfig c = plan->config;
    apply_variant(variant, c);
    c.list = c.list || p.cu_seqlens_q != nullptr;  // mixed batches run on the work list
    const WorkspaceLayout l = plan_layout(p.batch, units, plan->max_splits, plan->config.sm_count, p.head_dim_v, c.list);
    if (plan->workspace == nullptr || plan->workspace_bytes < l.total())
      value_error("plan has no device workspace for this call (make it with device='cuda')");
    SplitWorkspace ws = carve(plan->workspace, l, plan->chunk_tokens, plan->max_splits);
    if (c.list) shape_list(ws, p, units, c);
    kernels::paged_attention(p, c, ws, stream);
    return;
  }
  // From shapes alone: the capacity of the block table bounds every sequence.
  DecodeShape s;
  s.batch = p.batch, s.heads_q = p.num_heads_q, s.heads_kv = p.num_heads_kv, s.seqlen_q = p.seqlen_q;
  s.page_size = p.page_size;
  s.max_len = int64_t(p.max_blocks) * p.page_size;
  s.total_len = s.batch * s.max_len;
  DecodeConfig unused;  // the variant's ctas_per_sm changes the splits, the rest the config
  apply_variant(variant, unused, &s.ctas_per_sm);
  DecodeSchedule d = choose_decode(s, current_device_props());
  apply_variant(variant, d.config);
  d.config.list = d.config.list || p.cu_seqlens_q != nullptr;  // mixed batches run on the work list
  SplitWorkspace ws = carve(nullptr, layout(0, 0, 0, 0), d.chunk_tokens, 1);
  if (d.config.list) {
    ws = cached(list_layout(p.batch, d.config.sm_count, p.head_dim_v), d.chunk_tokens, 1, stream);
    shape_list(ws, p, units, d.config);
  } else if (d.max_splits > 1) {
    ws = cached(layout(p.batch, units, d.max_splits, p.head_dim_v), d.chunk_tokens, d.max_splits, stream);
  }
  kernels::paged_attention(p, d.config, ws, stream);
}

void append_paged_kv(const AppendParams& p, Stream stream) {
  if (p.head_dim % kHeadDimMultiple != 0 || p.head_dim_v % kHeadDimMultiple != 0)
    value_error("append_paged_kv on the GPU needs head dims that are multiples of ", kHeadDimMultiple,
                ", got ", p.head_dim, " / ", p.head_dim_v);
  if (p.kv_dtype != p.new_dtype && p.kv_dtype != DType::fp8_e4m3)
    value_error("cache dtype must match k_new's or be fp8_e4m3");
  kernels::append_paged_kv(p, stream);
}

void merge_states(const MergeParams& p, Stream stream) { kernels::merge_states(p, stream); }

bool mla_hopper_usable(const MlaLatentParams& p, const DecodePlan* plan, bool narrow) {
  // One CTA an SM with two slots of at most 64 rows each, which the workspace's kListCtasPerSm x
  // two 16-row slots an SM hold (a plan's: for its SM count).
  static_assert(kListCtasPerSm * kDecodeRows >= 64, "the list's slots hold 64-row units");
  return p.seq_lens != nullptr && (plan == nullptr || plan->config.sm_count >= current_device_props().sm_count) &&
         mla_hopper_ready(p, narrow);
}

void mla_list_decode(MlaLatentParams& p, const DecodePlan* plan, Stream stream, MlaKernel kernel) {
  const int sms = current_device_props().sm_count;
  SplitWorkspace ws;
  if (plan != nullptr) {
    const PlanOptions& o = plan->opt;
    const int64_t units = int64_t(o.num_heads_kv) * decode_row_chunks(o.num_heads_q, o.num_heads_kv, o.seqlen_q);
    const WorkspaceLayout l = plan_layout(plan->batch, units, plan->max_splits, plan->config.sm_count, 512, true);
    if (plan->workspace == nullptr || plan->workspace_bytes < l.total() ||
        int64_t(plan->config.sm_count) * kListCtasPerSm < sms)
      value_error("plan has no device workspace for this call (make it with device='cuda', head_dim=576, "
                  "head_dim_v=512)");
    ws = carve(plan->workspace, l, 0, 1);
  } else {
    ws = cached(list_layout(p.batch, sms, 512), 0, 1, stream);
  }
  const bool hopper = kernel == MlaKernel::hopper || kernel == MlaKernel::narrow;
  const bool narrow = kernel == MlaKernel::narrow;
  if (hopper && !mla_hopper_usable(p, plan, narrow)) value_error("mla_decode: the sm_90a kernel cannot run this call");
  const int rows = p.num_heads_q * p.seqlen_q;
  WorkList& list = p.list;
  list.s = WorkListShape{};
  list.s.batch = p.batch;
  list.s.rows = !hopper ? kDecodeRows : !narrow ? 64 : rows <= 16 ? 16 : 32;
  p.list_kernel = hopper ? MlaListKernel::sm90 : MlaListKernel::portable;
  list.s.units = int((int64_t(p.num_heads_q) * p.seqlen_q + list.s.rows - 1) / list.s.rows);
  list.s.granule = kListGranule;
  list.s.overhead = kListOverhead;
  list.seq_start = ws.list.seq_start;
  list.seq_lens = ws.list.seq_lens;
  list.seq_units = nullptr;
  p.part_o = ws.o, p.part_lse = ws.lse;
  mla_list_decode(p, stream);
}

void plan_workspace(DecodePlan& plan) {
  const int64_t units = int64_t(plan.opt.num_heads_kv) *
                        decode_row_chunks(plan.opt.num_heads_q, plan.opt.num_heads_kv, plan.opt.seqlen_q);
  const size_t bytes = std::max<size_t>(
      {plan_layout(plan.batch, units, plan.max_splits, plan.config.sm_count, plan.opt.head_dim_v, false).total(),
       plan_layout(plan.batch, units, plan.max_splits, plan.config.sm_count, plan.opt.head_dim_v, true).total(), 16});
  plan.workspace = alloc_zeroed(bytes, plan.opt.device_id);
  plan.workspace_bytes = bytes;
}

void plan_free(DecodePlan& plan) {
  free_sync(plan.workspace, plan.opt.device_id);
  plan.workspace = nullptr;
}

}  // namespace cuattn::cuda
#endif  // CUATTN_WITH_CUDA
