// paged.cpp — host entry points for the paged KV cache: paged_attention, append_paged_kv and
// the decode plan.
#include <algorithm>
#include <cmath>

#include "backend.h"
#include "cuattn/launch.h"
#include "scheduler.h"
#include "validate.h"

namespace cuattn {
using namespace detail;

namespace {

// A cache tensor seen as [pages, slots, heads, d] through strides.
struct CacheView {
  int64_t n = 0, bs = 0, h = 0, d = 0;
  int64_t sp = 0, ss = 0, sh = 0;
};

CacheView as_cache(const TensorView& t, const char* name, KVLayout layout) {
  require_last_contiguous(t, name);
  CacheView c;
  if (layout == KVLayout::NHD) {
    require_ndim(t, name, 4, "[num_blocks, block_size, num_heads_kv, head_dim] (kv_layout='NHD')");
    c.n = t.shape[0], c.bs = t.shape[1], c.h = t.shape[2], c.d = t.shape[3];
    c.sp = t.stride[0], c.ss = t.stride[1], c.sh = t.stride[2];
  } else {
    require_ndim(t, name, 4, "[num_blocks, num_heads_kv, block_size, head_dim] (kv_layout='HND')");
    c.n = t.shape[0], c.h = t.shape[1], c.bs = t.shape[2], c.d = t.shape[3];
    c.sp = t.stride[0], c.sh = t.stride[1], c.ss = t.stride[2];
  }
  return c;
}

// "64, 128, 256": the paged head dims this build has kernels for.
[[maybe_unused]] std::string built_paged_head_dims() {
  std::string r;
  for (int d : kPagedHeadDims)
    if (head_dim_built(d)) r += cat(r.empty() ? "" : ", ", d);
  return r.empty() ? "none" : r;
}

void check_kv_dtype(const TensorView& cache, const char* name, const TensorView& q) {
  if (cache.dtype == DType::fp8_e4m3) return;
  if (cache.dtype != q.dtype)
    value_error(name, " has dtype ", dtype_name(cache.dtype), "; expected q's dtype ",
                dtype_name(q.dtype), " or fp8_e4m3 (float8_e4m3fn, or uint8 with "
                "kv_cache_dtype='fp8_e4m3')");
}

// Validates seq_lens and the block-table entries a sequence reads (CPU data always; GPU data
// only when asked), and for a mixed batch the query counts against them: every sequence's new
// tokens are in its cache. Returns the longest query count (seqlen_q for a uniform batch).
int64_t check_paged_contents(const std::vector<int64_t>& lens, const std::vector<int64_t>& table,
                             const std::vector<int64_t>& cu_q, int64_t total_q, int64_t seqlen_q,
                             int64_t max_blocks, int64_t page_size, int64_t num_pages) {
  for (size_t b = 0; b < lens.size(); ++b) {
    const int64_t L = lens[b];
    if (L < 0 || L > max_blocks * page_size)
      value_error("seq_lens[", b, "] = ", L, " is out of range [0, ", max_blocks * page_size,
                  "] (block_table has ", max_blocks, " blocks of ", page_size, " per sequence)");
    for (int64_t i = 0; i < (L + page_size - 1) / page_size; ++i) {
      const int64_t id = table[b * size_t(max_blocks) + size_t(i)];
      if (id < 0 || id >= num_pages)
        value_error("block_table[", b, ", ", i, "] = ", id, " is out of range [0, ", num_pages,
                    ") (num_blocks of the cache)");
    }
  }
  if (cu_q.empty()) return seqlen_q;
  const int64_t longest = check_cu_seqlens(cu_q, "cu_seqlens_q", total_q);
  for (size_t b = 0; b < lens.size(); ++b) {
    const int64_t n = cu_q[b + 1] - cu_q[b];
    if (n > lens[b])
      value_error("cu_seqlens_q[", b + 1, "] - cu_seqlens_q[", b, "] = ", n, " new tokens for "
                  "sequence ", b, ", but seq_lens[", b, "] = ", lens[b], ": the cache must hold "
                  "every new token");
  }
  return longest;
}

}  // namespace

PagedParams detail::paged_params(const PagedArgs& a, Stream stream, const char* kn,
                                  const char* vn) {
  for (auto [t, n] : {std::pair{&a.q, "q"}, {&a.k_cache, kn}, {&a.v_cache, vn},
                      {&a.block_table, "block_table"}, {&a.seq_lens, "seq_lens"}, {&a.out, "out"}})
    require(*t, n);
  require_cuda_usable(a.q, "q");
  require_compute_dtype(a.q, "q");
  require_same_dtype(a.out, "out", a.q, "q");
  for (auto [t, n] : {std::pair{&a.k_cache, kn}, {&a.v_cache, vn},
                      {&a.block_table, "block_table"}, {&a.seq_lens, "seq_lens"}, {&a.out, "out"}})
    require_same_device(*t, n, a.q, "q");
  check_kv_dtype(a.k_cache, kn, a.q);
  require_same_dtype(a.v_cache, vn, a.k_cache, kn);

  // q: [B, Hq, D] (one token), [B, Sq, Hq, D], or packed [total_q, Hq, D] with cu_seqlens_q.
  require_last_contiguous(a.q, "q");
  const bool mixed = a.cu_seqlens_q.present();
  if (mixed) {
    require_cu_seqlens(a.cu_seqlens_q, "cu_seqlens_q", a.q);
    if (a.q.ndim != 3)
      value_error("with cu_seqlens_q, q must be packed [total_q, num_heads_q, head_dim], got shape ",
                  shape_str(a.q));
    if (a.q.is_cuda() && a.max_seqlen_q < 0)
      value_error("max_seqlen_q is required when cu_seqlens_q lives on the GPU (it sizes the grid "
                  "without a device sync)");
    if (a.plan)
      value_error("plan= cannot be combined with cu_seqlens_q: a DecodePlan schedules one q_len "
                  "for every sequence, and a mixed batch has a query count per sequence (call "
                  "without plan=)");
  } else {
    if (a.max_seqlen_q >= 0)
      value_error("max_seqlen_q = ", a.max_seqlen_q, " is given without cu_seqlens_q (it only "
                  "sizes mixed batches)");
    if (a.q.ndim != 3 && a.q.ndim != 4)
      value_error("q must be [batch, num_heads_q, head_dim] or [batch, seqlen_q, num_heads_q, "
                  "head_dim], got shape ", shape_str(a.q));
  }
  const bool multi = a.q.ndim == 4;
  const int64_t B = mixed ? a.cu_seqlens_q.shape[0] - 1 : a.q.shape[0];
  const int64_t T = mixed ? a.q.shape[0] : 0;  // packed rows
  int64_t Sq = mixed ? a.max_seqlen_q : multi ? a.q.shape[1] : 1;  // mixed: known after the reads
  const int64_t Hq = a.q.shape[multi ? 2 : 1], D = a.q.shape[multi ? 3 : 2];
  const char* batch_from = mixed ? "cu_seqlens_q describes" : "q has batch";
  const CacheView k = as_cache(a.k_cache, kn, a.kv_layout);
  const CacheView v = as_cache(a.v_cache, vn, a.kv_layout);
  if (v.n != k.n || v.bs != k.bs || v.h != k.h)
    value_error(vn, " shape ", shape_str(a.v_cache), " does not match ", kn, " ",
                shape_str(a.k_cache));
  if (k.d != D) value_error(kn, " head_dim ", k.d, " != q head_dim ", D);
  if (k.h < 1 || Hq % k.h != 0)
    value_error("num_heads_q (", Hq, ") must be a multiple of num_heads_kv (", k.h, ")");
  if (k.bs < 1) value_error("block_size must be >= 1, got ", k.bs);
  if (D < 1 || v.d < 1) value_error("head_dim must be >= 1");
  if (mixed) require_shape(a.out, "out", {T, Hq, v.d}, "[total_q, num_heads_q, head_dim_v]");
  else if (multi) require_shape(a.out, "out", {B, Sq, Hq, v.d}, "[batch, seqlen_q, num_heads_q, head_dim_v]");
  else require_shape(a.out, "out", {B, Hq, v.d}, "[batch, num_heads_q, head_dim_v]");
  require_last_contiguous(a.out, "out");
  require_dtype(a.block_table, "block_table", {DType::i32});
  require_ndim(a.block_table, "block_table", 2, "[batch, max_blocks_per_seq]");
  if (a.block_table.shape[0] != B)
    value_error("block_table has ", a.block_table.shape[0], " rows but ", batch_from, " ", B,
                mixed ? " sequence(s) (its shape[0] - 1)" : "");
  require_last_contiguous(a.block_table, "block_table");
  require_dtype(a.seq_lens, "seq_lens", {DType::i32});
  require_shape(a.seq_lens, "seq_lens", {B}, "[batch]");
  require_last_contiguous(a.seq_lens, "seq_lens");  // the kernels read it as contiguous
  if (a.window_left < -1 || a.window_right < -1)
    value_error("window must be (left, right) with each >= 0 or -1 (unbounded), got (",
                a.window_left, ", ", a.window_right, ")");
  check_sinks(a.sinks, a.q, Hq);
  check_dequant_scale(a.k_scale, {&a.k_scale_t, "k_scale"}, {&a.q, "q"});
  check_dequant_scale(a.v_scale, {&a.v_scale_t, "v_scale"}, {&a.q, "q"});
  for (auto [t, n] : {std::pair{&a.q, "q"}, {&a.k_cache, kn}, {&a.v_cache, vn}, {&a.out, "out"}})
    require_gpu_aligned(*t, n);

  PagedParams p;
  if (a.lse.present()) {
    require_dtype(a.lse, "lse", {DType::f32});
    require_same_device(a.lse, "lse", a.q, "q");
    if (mixed) require_shape(a.lse, "lse", {Hq, T}, "[num_heads_q, total_q]");
    else if (multi) require_shape(a.lse, "lse", {B, Hq, Sq}, "[batch, num_heads_q, seqlen_q]");
    else require_shape(a.lse, "lse", {B, Hq}, "[batch, num_heads_q]");
    require_last_contiguous(a.lse, "lse");
    p.lse = static_cast<float*>(a.lse.data);
    p.lse_batch_stride = mixed ? 0 : a.lse.stride[0];
    p.lse_head_stride = a.lse.stride[mixed ? 0 : 1];
  }
  if (a.plan) {
    const PlanOptions& o = a.plan->opt;
    if (a.plan->batch != B || o.num_heads_q != Hq || o.num_heads_kv != k.h || o.head_dim != D ||
        o.page_size != k.bs || o.seqlen_q != Sq || o.device != a.q.device)
      value_error("plan was made for batch ", a.plan->batch, ", heads ", o.num_heads_q, "/",
                  o.num_heads_kv, ", head_dim ", o.head_dim, ", page_size ", o.page_size,
                  ", seqlen_q ", o.seqlen_q, " on ", o.device == DeviceType::cuda ? "cuda" : "cpu",
                  " but is used with batch ", B, ", heads ", Hq, "/", k.h, ", head_dim ", D,
                  ", page_size ", k.bs, ", seqlen_q ", Sq);
  }
  // Contents: CPU data always; GPU data with check, every array in one sync.
  DeviceReads reads(stream, !a.q.is_cuda() || a.check || env_check());
  const int r_sinks = reads.add(a.sinks);
  const int r_ks = reads.add(a.k_scale_t), r_vs = reads.add(a.v_scale_t);
  const int r_lens = reads.add(a.seq_lens), r_table = reads.add(a.block_table);
  const int r_cu = reads.add(a.cu_seqlens_q);
  reads.fetch();
  check_sink_values(reads.floats(r_sinks));
  check_dequant_scale_value("k_scale", reads.floats(r_ks));
  check_dequant_scale_value("v_scale", reads.floats(r_vs));
  if (reads.enabled()) {
    const int64_t longest = check_paged_contents(reads.ints(r_lens), reads.ints(r_table),
                                                 reads.ints(r_cu), T, Sq, a.block_table.shape[1],
                                                 k.bs, k.n);
    if (mixed && a.max_seqlen_q >= 0 && a.max_seqlen_q < longest)
      value_error("max_seqlen_q = ", a.max_seqlen_q, " is less than the longest query sequence (",
                  longest, ")");
    if (mixed && a.max_seqlen_q < 0) Sq = longest;
  }
  require_no_overlap({{&a.out, "out"}, {&a.lse, "lse"}},
                     {{&a.q, "q"}, {&a.k_cache, kn}, {&a.v_cache, vn},
                      {&a.block_table, "block_table"}, {&a.seq_lens, "seq_lens"},
                      {&a.cu_seqlens_q, "cu_seqlens_q"}, {&a.sinks, "sinks"},
                      {&a.k_scale_t, "k_scale"}, {&a.v_scale_t, "v_scale"}});

  p.q = a.q.data;
  p.k_cache = a.k_cache.data;
  p.v_cache = a.v_cache.data;
  p.block_table = static_cast<const int32_t*>(a.block_table.data);
  p.seq_lens = static_cast<const int32_t*>(a.seq_lens.data);
  p.o = a.out.data;
  p.sinks = a.sinks.present() ? static_cast<const float*>(a.sinks.data) : nullptr;
  p.seq_lens_stride = a.seq_lens.stride[0], p.sinks_stride = a.sinks.present() ? a.sinks.stride[0] : 1;
  p.k_scale_ptr = a.k_scale_t.present() ? static_cast<const float*>(a.k_scale_t.data) : nullptr;
  p.v_scale_ptr = a.v_scale_t.present() ? static_cast<const float*>(a.v_scale_t.data) : nullptr;
  p.cu_seqlens_q = mixed ? static_cast<const int32_t*>(a.cu_seqlens_q.data) : nullptr;
  p.cu_seqlens_q_stride = mixed ? a.cu_seqlens_q.stride[0] : 1;
  p.total_q = T;
  // Rows of a sequence: the second dim of [B, Sq, Hq, D], the first of packed [total_q, Hq, D].
  p.q_batch_stride = mixed ? 0 : a.q.stride[0];
  p.q_row_stride = multi ? a.q.stride[1] : mixed ? a.q.stride[0] : 0;
  p.q_head_stride = a.q.stride[multi ? 2 : 1];
  p.k_page_stride = k.sp, p.k_slot_stride = k.ss, p.k_head_stride = k.sh;
  p.v_page_stride = v.sp, p.v_slot_stride = v.ss, p.v_head_stride = v.sh;
  p.bt_batch_stride = a.block_table.stride[0];
  p.o_batch_stride = mixed ? 0 : a.out.stride[0];
  p.o_row_stride = multi ? a.out.stride[1] : mixed ? a.out.stride[0] : 0;
  p.o_head_stride = a.out.stride[multi ? 2 : 1];
  p.batch = as_int32(B, "batch"), p.seqlen_q = as_int32(Sq, mixed ? "max_seqlen_q" : "seqlen_q");
  p.num_heads_q = as_int32(Hq, "num_heads_q"), p.num_heads_kv = as_int32(k.h, "num_heads_kv");
  p.head_dim = as_int32(D, "head_dim"), p.head_dim_v = as_int32(v.d, "head_dim_v");
  p.page_size = as_int32(k.bs, "block_size"), p.num_pages = as_int32(k.n, "num_blocks");
  p.max_blocks = as_int32(a.block_table.shape[1], "max_blocks_per_seq");
  p.causal = a.causal;
  p.window_left = int(std::min<int64_t>(a.window_left, INT32_MAX));
  p.window_right = int(std::min<int64_t>(a.window_right, INT32_MAX));
  p.scale = resolve_scale(a.scale, p.head_dim);
  p.scale_log2 = p.scale * kLog2e;
  p.softcap = check_softcap(a.softcap);
  p.k_scale = float(a.k_scale);
  p.v_scale = float(a.v_scale);
  p.q_dtype = a.q.dtype;
  p.kv_dtype = a.k_cache.dtype;
  return p;
}

void paged_attention(const PagedArgs& a, Stream stream) {
  const PagedParams p = paged_params(a, stream, "k_cache", "v_cache");
#ifdef CUATTN_WITH_CUDA
  if (a.q.is_cuda() && !cuda::paged_supported(p.q_dtype, p.kv_dtype, p.head_dim, p.head_dim_v))
    value_error("no GPU paged kernel for q ", dtype_name(p.q_dtype), ", cache ", dtype_name(p.kv_dtype),
                ", head_dim ", p.head_dim, "/", p.head_dim_v, " in this build (head dims ",
                built_paged_head_dims(), ")");
#endif
  if (p.batch == 0 || p.seqlen_q == 0 || p.num_heads_q == 0) return;
  run_on(a.q, [&] { cpu::paged_attention(p); }, [&] { cuda::paged_attention(p, a.plan, a.variant, stream); });
}

void append_paged_kv(const AppendArgs& a, Stream stream) {
  for (auto [t, n] : {std::pair{&a.k_new, "k_new"}, {&a.v_new, "v_new"}, {&a.k_cache, "k_cache"},
                      {&a.v_cache, "v_cache"}, {&a.slot_mapping, "slot_mapping"}})
    require(*t, n);
  require_cuda_usable(a.k_new, "k_new");
  require_compute_dtype(a.k_new, "k_new");
  require_same_dtype(a.v_new, "v_new", a.k_new, "k_new");
  for (auto [t, n] : {std::pair{&a.v_new, "v_new"}, {&a.k_cache, "k_cache"}, {&a.v_cache, "v_cache"},
                      {&a.slot_mapping, "slot_mapping"}})
    require_same_device(*t, n, a.k_new, "k_new");
  check_kv_dtype(a.k_cache, "k_cache", a.k_new);
  require_same_dtype(a.v_cache, "v_cache", a.k_cache, "k_cache");
  require_ndim(a.k_new, "k_new", 3, "[num_tokens, num_heads_kv, head_dim]");
  require_ndim(a.v_new, "v_new", 3, "[num_tokens, num_heads_kv, head_dim]");
  require_last_contiguous(a.k_new, "k_new");
  require_last_contiguous(a.v_new, "v_new");
  const CacheView k = as_cache(a.k_cache, "k_cache", a.kv_layout);
  const CacheView v = as_cache(a.v_cache, "v_cache", a.kv_layout);
  const int64_t T = a.k_new.shape[0];
  if (a.k_new.shape[1] != k.h || a.k_new.shape[2] != k.d)
    value_error("k_new has shape ", shape_str(a.k_new), " but the cache holds ", k.h,
                " heads of head_dim ", k.d);
  if (a.v_new.shape[0] != T || a.v_new.shape[1] != v.h || a.v_new.shape[2] != v.d)
    value_error("v_new has shape ", shape_str(a.v_new), "; expected (", T, ", ", v.h, ", ", v.d, ")");
  if (v.n != k.n || v.bs != k.bs || v.h != k.h)
    value_error("v_cache shape ", shape_str(a.v_cache), " does not match k_cache ", shape_str(a.k_cache));
  if (k.d < 1 || v.d < 1) value_error("head_dim must be >= 1, got ", k.d, " (k) and ", v.d, " (v)");
  require_dtype(a.slot_mapping, "slot_mapping", {DType::i64});
  require_shape(a.slot_mapping, "slot_mapping", {T}, "[num_tokens]");
  require_last_contiguous(a.slot_mapping, "slot_mapping");
  check_dequant_scale(a.k_scale, {&a.k_scale_t, "k_scale"}, {&a.k_new, "k_new"});
  check_dequant_scale(a.v_scale, {&a.v_scale_t, "v_scale"}, {&a.k_new, "k_new"});
  for (auto [t, n] : {std::pair{&a.k_new, "k_new"}, {&a.v_new, "v_new"}, {&a.k_cache, "k_cache"}, {&a.v_cache, "v_cache"}})
    require_gpu_aligned(*t, n);
  // Contents: CPU data always; GPU data with check, every array in one sync.
  DeviceReads reads(stream, !a.k_new.is_cuda() || a.check || env_check());
  const int r_ks = reads.add(a.k_scale_t), r_vs = reads.add(a.v_scale_t);
  const int r_slots = reads.add(a.slot_mapping);
  reads.fetch();
  check_dequant_scale_value("k_scale", reads.floats(r_ks));
  check_dequant_scale_value("v_scale", reads.floats(r_vs));
  const std::vector<int64_t> slots = reads.ints(r_slots);
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i] >= k.n * k.bs)
      value_error("slot_mapping[", i, "] = ", slots[i], " is out of range (the cache has ",
                  k.n * k.bs, " slots)");
  AppendParams p;
  p.k_new = a.k_new.data, p.v_new = a.v_new.data;
  p.k_cache = a.k_cache.data, p.v_cache = a.v_cache.data;
  p.slot_mapping = static_cast<const int64_t*>(a.slot_mapping.data);
  p.slot_mapping_stride = a.slot_mapping.stride[0];
  p.k_scale_ptr = a.k_scale_t.present() ? static_cast<const float*>(a.k_scale_t.data) : nullptr;
  p.v_scale_ptr = a.v_scale_t.present() ? static_cast<const float*>(a.v_scale_t.data) : nullptr;
  p.kn_row_stride = a.k_new.stride[0], p.kn_head_stride = a.k_new.stride[1];
  p.vn_row_stride = a.v_new.stride[0], p.vn_head_stride = a.v_new.stride[1];
  p.k_page_stride = k.sp, p.k_slot_stride = k.ss, p.k_head_stride = k.sh;
  p.v_page_stride = v.sp, p.v_slot_stride = v.ss, p.v_head_stride = v.sh;
  p.num_tokens = as_int32(T, "num_tokens"), p.num_heads_kv = as_int32(k.h, "num_heads_kv");
  p.head_dim = as_int32(k.d, "head_dim"), p.head_dim_v = as_int32(v.d, "head_dim_v");
  p.page_size = as_int32(k.bs, "block_size"), p.num_pages = as_int32(k.n, "num_blocks");
  p.k_scale = float(a.k_scale), p.v_scale = float(a.v_scale);
  // The caches are written in place: they are the outputs, everything else is read.
  require_no_overlap({{&a.k_cache, "k_cache"}, {&a.v_cache, "v_cache"}},
                     {{&a.k_new, "k_new"}, {&a.v_new, "v_new"}, {&a.slot_mapping, "slot_mapping"},
                      {&a.k_scale_t, "k_scale"}, {&a.v_scale_t, "v_scale"}});
  p.new_dtype = a.k_new.dtype;
  p.kv_dtype = a.k_cache.dtype;
  if (T == 0 || k.h == 0) return;
  run_on(a.k_new, [&] { cpu::append_paged_kv(p); }, [&] { cuda::append_paged_kv(p, stream); });
}

DecodePlan::~DecodePlan() {
#ifdef CUATTN_WITH_CUDA
  cuda::plan_free(*this);
#endif
}

namespace {

// The plan's schedule for these lengths (plan_decode, update_plan): splits, chunk and kernel
// variant for the plan's shapes on its device; `capped`: at most plan.split_capacity splits (its
// workspace's), longer splits instead of more.
void schedule_plan(DecodePlan& plan, const int32_t* seq_lens_host, int batch, const char* who, bool capped) {
  const PlanOptions& opt = plan.opt;
  std::vector<int32_t> lens(seq_lens_host, seq_lens_host + batch);
  for (int b = 0; b < batch; ++b)
    if (lens[size_t(b)] < 0) value_error(who, ": seq_lens[", b, "] = ", lens[size_t(b)], " is negative");
  DecodeShape s;
  s.batch = batch, s.heads_q = opt.num_heads_q, s.heads_kv = opt.num_heads_kv, s.seqlen_q = opt.seqlen_q;
  s.page_size = opt.page_size;
  for (int32_t L : lens) s.total_len += L, s.max_len = std::max<int64_t>(s.max_len, L);
  s.split_sms = std::max(opt.num_sms, 0);
  DeviceProps dev;  // a CPU plan: splits for num_sms (or 1)
  if (opt.device == DeviceType::cuda) {
    const DeviceInfo d = device_info(opt.device_id);
    if (!d.available) throw CudaError(cat(who, " on cuda: ", d.reason));
    dev.sm_count = d.sm_count, dev.cc_major = d.cc_major, dev.cc_minor = d.cc_minor;
  } else if (opt.num_sms > 0) {
    dev.sm_count = opt.num_sms;
  }
  DecodeSchedule d = choose_decode(s, dev);
  if (capped && d.max_splits > plan.split_capacity) {
    const int64_t ps = std::max(opt.page_size, 1);
    const int64_t chunk = (s.max_len + plan.split_capacity - 1) / plan.split_capacity;
    d.chunk_tokens = int(std::min<int64_t>((chunk + ps - 1) / ps * ps, INT32_MAX / 2));
    d.max_splits = int(std::max<int64_t>(1, (s.max_len + d.chunk_tokens - 1) / d.chunk_tokens));
  }
  plan.seq_lens = std::move(lens);
  plan.max_splits = d.max_splits;
  plan.chunk_tokens = d.chunk_tokens;
  plan.config = d.config;
}

}  // namespace

void update_plan(DecodePlan& plan, const int32_t* seq_lens_host, int batch) {
  if (batch != plan.batch)
    value_error("plan.update: the plan was made for batch ", plan.batch, ", got ", batch, " lengths");
  schedule_plan(plan, seq_lens_host, batch, "plan.update", true);
}

std::shared_ptr<DecodePlan> plan_decode(const int32_t* seq_lens_host, int batch,
                                        const PlanOptions& opt) {
  if (batch < 0) value_error("batch must be >= 0, got ", batch);
  if (opt.num_heads_q < 1 || opt.num_heads_kv < 1 || opt.num_heads_q % opt.num_heads_kv != 0)
    value_error("plan_decode: num_q_heads (", opt.num_heads_q, ") must be a positive multiple of "
                "num_kv_heads (", opt.num_heads_kv, ")");
  if (opt.head_dim < 1) value_error("plan_decode: head_dim must be >= 1, got ", opt.head_dim);
  if (opt.page_size < 1) value_error("plan_decode: page_size must be >= 1, got ", opt.page_size);
  if (opt.seqlen_q < 1) value_error("plan_decode: q_len must be >= 1, got ", opt.seqlen_q);
  auto plan = std::make_shared<DecodePlan>();
  plan->opt = opt;
  if (plan->opt.head_dim_v < 1) plan->opt.head_dim_v = opt.head_dim;
  plan->batch = batch;
  schedule_plan(*plan, seq_lens_host, batch, "plan_decode", false);
  plan->split_capacity = plan->max_splits;
#ifdef CUATTN_WITH_CUDA
  if (opt.device == DeviceType::cuda) cuda::plan_workspace(*plan);
#endif
  return plan;
}

}  // namespace cuattn
