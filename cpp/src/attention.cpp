// attention.cpp — host entry points for dense / varlen / block-sparse attention, the naive
// baseline and merge_states: validate, resolve layouts into [b, s, h, d] strides, dispatch.
#include <algorithm>
#include <cmath>

#include "backend.h"
#include "cuattn/launch.h"
#include "validate.h"

namespace cuattn {
using namespace detail;

Layout parse_layout(const std::string& s) {
  if (s == "bshd") return Layout::bshd;
  if (s == "bhsd") return Layout::bhsd;
  value_error("layout must be 'bshd' or 'bhsd', got '", s, "'");
}

KVLayout parse_kv_layout(const std::string& s) {
  if (s == "NHD") return KVLayout::NHD;
  if (s == "HND") return KVLayout::HND;
  value_error("kv_layout must be 'NHD' or 'HND', got '", s, "'");
}

namespace {

// A 4-D (or varlen 3-D) q/k/v/out tensor seen as [b, s, h, d].
struct Bshd {
  int64_t b = 0, s = 0, h = 0, d = 0;
  int64_t sb = 0, ss = 0, sh = 0;
};

Bshd as_bshd(const TensorView& t, const char* name, Layout layout, bool varlen) {
  require_last_contiguous(t, name);
  Bshd r;
  if (varlen) {
    require_ndim(t, name, 3, "[total_tokens, heads, head_dim] (varlen)");
    r.b = 1;
    r.s = t.shape[0], r.h = t.shape[1], r.d = t.shape[2];
    r.sb = 0, r.ss = t.stride[0], r.sh = t.stride[1];
  } else if (layout == Layout::bshd) {
    require_ndim(t, name, 4, "[batch, seqlen, heads, head_dim] (layout='bshd')");
    r.b = t.shape[0], r.s = t.shape[1], r.h = t.shape[2], r.d = t.shape[3];
    r.sb = t.stride[0], r.ss = t.stride[1], r.sh = t.stride[2];
  } else {
    require_ndim(t, name, 4, "[batch, heads, seqlen, head_dim] (layout='bhsd')");
    r.b = t.shape[0], r.h = t.shape[1], r.s = t.shape[2], r.d = t.shape[3];
    r.sb = t.stride[0], r.sh = t.stride[1], r.ss = t.stride[2];
  }
  return r;
}

const char* layout_desc(Layout l, bool varlen) {
  if (varlen) return "(varlen [total, heads, head_dim])";
  return l == Layout::bshd ? "(layout='bshd' [batch, seqlen, heads, head_dim])"
                           : "(layout='bhsd' [batch, heads, seqlen, head_dim])";
}

void check_head_dims(const TensorView& q, int d, int dv) {
  if (d < 1 || dv < 1) value_error("head_dim must be >= 1, got q head_dim ", d, ", v head_dim ", dv);
  if (!q.is_cuda()) return;
  if (d > kMaxHeadDim || d % kHeadDimMultiple != 0 || dv > kMaxHeadDim || dv % kHeadDimMultiple != 0)
    value_error("head_dim ", d, " (v head_dim ", dv, ") is not supported on the GPU: it must be a multiple of ",
                kHeadDimMultiple, " and at most ", kMaxHeadDim);
#ifdef CUATTN_WITH_CUDA
  if (!cuda::attention_supported(q.dtype, d, dv)) {
    std::string dims;
    for (const HeadDimPair& k : kFlashHeadDims)
      if (head_dim_built(k.d)) dims += cat(dims.empty() ? "" : ", ", k.d, "/", k.dv);
    value_error("head_dim ", d, " with v head_dim ", dv, " has no GPU kernel in this build "
                "(head_dim/v head_dim: ", dims, ")");
  }
#endif
}

void check_window(int64_t left, int64_t right) {
  if (left < -1 || right < -1)
    value_error("window must be (left, right) with each >= 0 or -1 (unbounded), got (", left,
                ", ", right, ")");
}

void fill_block_mask(const BlockMaskArgs& m, const TensorView& q, int64_t B, int64_t Hq,
                     int64_t Sq, int64_t Sk, BlockMaskParams& bp) {
  const char* names[5] = {"block_mask.kv_num_blocks", "block_mask.kv_indices",
                          "block_mask.partial_ids", "block_mask.full_kv_num_blocks",
                          "block_mask.full_kv_indices"};
  const TensorView* ts[5] = {&m.kv_num_blocks, &m.kv_indices, &m.partial_ids,
                             &m.full_kv_num_blocks, &m.full_kv_indices};
  if (m.block_q < 1 || m.block_kv < 1)
    value_error("block_mask block sizes must be >= 1, got (", m.block_q, ", ", m.block_kv, ")");
  if (m.q_len != Sq || m.kv_len != Sk)
    value_error("block_mask was built for Q_LEN=", m.q_len, ", KV_LEN=", m.kv_len,
                " but the inputs have Sq=", Sq, ", Sk=", Sk);
  const int64_t nqb = (Sq + m.block_q - 1) / m.block_q, nkb = (Sk + m.block_kv - 1) / m.block_kv;
  const int64_t mb = m.kv_num_blocks.present() && m.kv_num_blocks.ndim == 3 ? m.kv_num_blocks.shape[0] : -2;
  const int64_t mh = mb != -2 ? m.kv_num_blocks.shape[1] : -2;
  if (mb != 1 && mb != B) value_error("block_mask batch dim must be 1 or ", B, ", got ", mb);
  if (mh != 1 && mh != Hq) value_error("block_mask head dim must be 1 or ", Hq, ", got ", mh);
  for (int i = 0; i < 5; ++i) {
    require(*ts[i], names[i]);
    require_dtype(*ts[i], names[i], {DType::i32});
    require_same_device(*ts[i], names[i], q, "q");
    const bool idx = i == 1 || i == 2 || i == 4;
    if (idx) require_shape(*ts[i], names[i], {mb, mh, nqb, nkb}, "[B|1, H|1, n_q_blocks, n_kv_blocks]");
    else require_shape(*ts[i], names[i], {mb, mh, nqb}, "[B|1, H|1, n_q_blocks]");
    // Contiguous rows: the kernels index [b, h, qb(, n)] with the strides of the first two dims.
    if (ts[i]->shape[ts[i]->ndim - 1] > 1 && ts[i]->stride[ts[i]->ndim - 1] != 1)
      value_error(names[i], " must be contiguous in its last dim");
    if (idx && nqb > 1 && ts[i]->stride[2] != nkb) value_error(names[i], " must be C-contiguous");
  }
  if (m.kv_indices.stride[0] != m.partial_ids.stride[0] || m.kv_indices.stride[1] != m.partial_ids.stride[1] ||
      m.kv_indices.stride[0] != m.full_kv_indices.stride[0] || m.kv_indices.stride[1] != m.full_kv_indices.stride[1] ||
      m.kv_num_blocks.stride[0] != m.full_kv_num_blocks.stride[0] ||
      m.kv_num_blocks.stride[1] != m.full_kv_num_blocks.stride[1])
    value_error("block_mask index arrays must share one layout (C-contiguous)");
  const int64_t wpr = (m.block_kv + 31) / 32;
  require(m.partial_bits, "block_mask.partial_bits");
  require_dtype(m.partial_bits, "block_mask.partial_bits", {DType::u32, DType::i32});
  require_shape(m.partial_bits, "block_mask.partial_bits", {-1, m.block_q, wpr},
                "[n_partial, block_q, ceil(block_kv / 32)]");
  require_same_device(m.partial_bits, "block_mask.partial_bits", q, "q");
  if (m.partial_bits.numel() > 0 &&
      (m.partial_bits.stride[2] != 1 || m.partial_bits.stride[1] != wpr ||
       m.partial_bits.stride[0] != wpr * m.block_q))
    value_error("block_mask.partial_bits must be C-contiguous");
  const int64_t np = m.partial_bits.shape[0];

  if (!q.is_cuda()) {  // CPU: validate the contents
    const auto* num = static_cast<const int32_t*>(m.kv_num_blocks.data);
    const auto* fnum = static_cast<const int32_t*>(m.full_kv_num_blocks.data);
    const auto* ind = static_cast<const int32_t*>(m.kv_indices.data);
    const auto* pid = static_cast<const int32_t*>(m.partial_ids.data);
    const auto* find = static_cast<const int32_t*>(m.full_kv_indices.data);
    for (int64_t b = 0; b < mb; ++b)
      for (int64_t h = 0; h < mh; ++h)
        for (int64_t qb = 0; qb < nqb; ++qb) {
          const int64_t r = b * m.kv_num_blocks.stride[0] + h * m.kv_num_blocks.stride[1] + qb;
          const int64_t ri = b * m.kv_indices.stride[0] + h * m.kv_indices.stride[1] + qb * nkb;
          if (num[r] < 0 || num[r] > nkb || fnum[r] < 0 || fnum[r] > nkb)
            value_error("block_mask block counts out of range [0, ", nkb, "] at (", b, ", ", h,
                        ", ", qb, "): ", num[r], " partial, ", fnum[r], " full");
          for (int64_t n = 0; n < num[r]; ++n)
            if (ind[ri + n] < 0 || ind[ri + n] >= nkb || pid[ri + n] < 0 || pid[ri + n] >= np)
              value_error("block_mask.kv_indices/partial_ids out of range at (", b, ", ", h, ", ",
                          qb, ", ", n, "): block ", ind[ri + n], " of ", nkb, ", partial id ",
                          pid[ri + n], " of ", np);
          for (int64_t n = 0; n < fnum[r]; ++n)
            if (find[ri + n] < 0 || find[ri + n] >= nkb)
              value_error("block_mask.full_kv_indices out of range at (", b, ", ", h, ", ", qb,
                          ", ", n, "): block ", find[ri + n], " of ", nkb);
        }
  }
  bp.kv_num_blocks = static_cast<const int32_t*>(m.kv_num_blocks.data);
  bp.kv_indices = static_cast<const int32_t*>(m.kv_indices.data);
  bp.partial_ids = static_cast<const int32_t*>(m.partial_ids.data);
  bp.full_kv_num_blocks = static_cast<const int32_t*>(m.full_kv_num_blocks.data);
  bp.full_kv_indices = static_cast<const int32_t*>(m.full_kv_indices.data);
  bp.partial_bits = static_cast<const uint32_t*>(m.partial_bits.data);
  bp.num_stride_b = mb == 1 ? 0 : m.kv_num_blocks.stride[0];
  bp.num_stride_h = mh == 1 ? 0 : m.kv_num_blocks.stride[1];
  bp.idx_stride_b = mb == 1 ? 0 : m.kv_indices.stride[0];
  bp.idx_stride_h = mh == 1 ? 0 : m.kv_indices.stride[1];
  bp.block_q = m.block_q;
  bp.block_kv = m.block_kv;
  bp.words_per_row = int(wpr);
  bp.n_qb = int(nqb);
  bp.n_kb = int(nkb);
  bp.n_partial = int(np);
}

// q, k, v, out as [b, s, h, d] views, after every check they share: present, usable device,
// compute dtype, one dtype and device, 16-byte GPU alignment, consistent shapes, GQA ratio.
struct Qkvo {
  Bshd q, k, v, o;
};

Qkvo check_qkvo(const TensorView& tq, const TensorView& tk, const TensorView& tv,
                const TensorView& to, Layout layout, bool varlen) {
  require(tq, "q");
  require(tk, "k");
  require(tv, "v");
  require(to, "out");
  require_cuda_usable(tq, "q");
  require_compute_dtype(tq, "q");
  for (auto [t, n] : {std::pair{&tk, "k"}, {&tv, "v"}, {&to, "out"}}) {
    require_same_dtype(*t, n, tq, "q");
    require_same_device(*t, n, tq, "q");
  }
  Qkvo r{as_bshd(tq, "q", layout, varlen), as_bshd(tk, "k", layout, varlen),
         as_bshd(tv, "v", layout, varlen), as_bshd(to, "out", layout, varlen)};
  const Bshd &q = r.q, &k = r.k, &v = r.v, &o = r.o;
  const char* ld = layout_desc(layout, varlen);
  if (k.b != q.b) value_error("k batch ", k.b, " != q batch ", q.b, " ", ld);
  if (v.b != q.b) value_error("v batch ", v.b, " != q batch ", q.b, " ", ld);
  if (v.s != k.s) value_error("v seqlen ", v.s, " != k seqlen ", k.s, " ", ld);
  if (v.h != k.h) value_error("v heads ", v.h, " != k heads ", k.h, " ", ld);
  if (k.d != q.d) value_error("k head_dim ", k.d, " != q head_dim ", q.d, " ", ld);
  if (k.h < 1 || q.h % k.h != 0)
    value_error("num_heads_q (", q.h, ") must be a multiple of num_heads_kv (", k.h, ")");
  if (o.b != q.b || o.s != q.s || o.h != q.h || o.d != v.d)
    value_error("out has shape ", shape_str(to), "; expected q's shape with head_dim ", v.d, " ", ld);
  if (q.d < 1 || v.d < 1) value_error("head_dim must be >= 1, got q head_dim ", q.d, ", v head_dim ", v.d);
  for (auto [t, n] : {std::pair{&tq, "q"}, {&tk, "k"}, {&tv, "v"}, {&to, "out"}}) require_gpu_aligned(*t, n);
  return r;
}

// Pointers, strides, dims and dtype of q, k, v, out into the kernel params.
void fill_qkvo(AttnParams& p, const TensorView& tq, const TensorView& tk, const TensorView& tv,
               const TensorView& to, const Qkvo& x) {
  p.q = tq.data, p.k = tk.data, p.v = tv.data, p.o = to.data;
  p.q_batch_stride = x.q.sb, p.q_row_stride = x.q.ss, p.q_head_stride = x.q.sh;
  p.k_batch_stride = x.k.sb, p.k_row_stride = x.k.ss, p.k_head_stride = x.k.sh;
  p.v_batch_stride = x.v.sb, p.v_row_stride = x.v.ss, p.v_head_stride = x.v.sh;
  p.o_batch_stride = x.o.sb, p.o_row_stride = x.o.ss, p.o_head_stride = x.o.sh;
  p.batch = as_int32(x.q.b, "batch"), p.seqlen_q = as_int32(x.q.s, "seqlen_q");
  p.seqlen_k = as_int32(x.k.s, "seqlen_k");
  p.num_heads_q = as_int32(x.q.h, "num_heads_q"), p.num_heads_kv = as_int32(x.k.h, "num_heads_kv");
  p.head_dim = as_int32(x.q.d, "head_dim"), p.head_dim_v = as_int32(x.v.d, "head_dim_v");
  p.dtype = tq.dtype;
}

}  // namespace

void attention(const AttentionArgs& a, Stream stream) {
  const bool varlen = a.cu_seqlens_q.present() || a.cu_seqlens_k.present();
  if (varlen && !(a.cu_seqlens_q.present() && a.cu_seqlens_k.present()))
    value_error("varlen attention needs both cu_seqlens_q and cu_seqlens_k");
  if (varlen && a.layout != Layout::bshd)
    value_error("varlen attention takes packed [total, heads, head_dim] arrays; layout must be "
                "'bshd'");
  if (varlen && a.block_mask.present())
    value_error("block_mask cannot be combined with cu_seqlens (use a document mask instead)");
  const Qkvo x = check_qkvo(a.q, a.k, a.v, a.out, a.layout, varlen);
  const Bshd &q = x.q, &k = x.k;
  check_head_dims(a.q, int(q.d), int(x.v.d));
  check_window(a.window_left, a.window_right);
  check_sinks(a.sinks, a.q, q.h);

  AttnParams p;
  fill_qkvo(p, a.q, a.k, a.v, a.out, x);
  // Contents: CPU data always, GPU data with check (every array in one sync).
  DeviceReads reads(stream, !a.q.is_cuda() || a.check || env_check());
  const int r_sinks = reads.add(a.sinks);
  int r_cq = -1, r_ck = -1;
  if (varlen) {
    for (auto [t, n] : {std::pair{&a.cu_seqlens_q, "cu_seqlens_q"}, {&a.cu_seqlens_k, "cu_seqlens_k"}})
      require_cu_seqlens(*t, n, a.q);
    if (a.cu_seqlens_q.shape[0] != a.cu_seqlens_k.shape[0])
      value_error("cu_seqlens_q has ", a.cu_seqlens_q.shape[0], " entries but cu_seqlens_k has ",
                  a.cu_seqlens_k.shape[0]);
    p.batch = as_int32(a.cu_seqlens_q.shape[0] - 1, "number of sequences");
    if (a.q.is_cuda() && (a.max_seqlen_q < 0 || a.max_seqlen_k < 0))
      value_error("max_seqlen_q and max_seqlen_k are required when cu_seqlens live on the GPU "
                  "(they size the grid without a device sync)");
    r_cq = reads.add(a.cu_seqlens_q), r_ck = reads.add(a.cu_seqlens_k);
  }
  reads.fetch();
  check_sink_values(reads.floats(r_sinks));
  if (varlen) {
    if (reads.enabled()) {
      const int64_t mq = check_cu_seqlens(reads.ints(r_cq), "cu_seqlens_q", q.s);
      const int64_t mk = check_cu_seqlens(reads.ints(r_ck), "cu_seqlens_k", k.s);
      if (a.max_seqlen_q >= 0 && a.max_seqlen_q < mq)
        value_error("max_seqlen_q = ", a.max_seqlen_q, " is less than the longest q sequence (", mq, ")");
      if (a.max_seqlen_k >= 0 && a.max_seqlen_k < mk)
        value_error("max_seqlen_k = ", a.max_seqlen_k, " is less than the longest k sequence (", mk, ")");
      p.seqlen_q = as_int32(a.max_seqlen_q >= 0 ? a.max_seqlen_q : mq, "max_seqlen_q");
      p.seqlen_k = as_int32(a.max_seqlen_k >= 0 ? a.max_seqlen_k : mk, "max_seqlen_k");
    } else {
      p.seqlen_q = as_int32(a.max_seqlen_q, "max_seqlen_q");
      p.seqlen_k = as_int32(a.max_seqlen_k, "max_seqlen_k");
    }
    p.total_q = q.s;
    p.total_k = k.s;
    p.cu_seqlens_q = static_cast<const int32_t*>(a.cu_seqlens_q.data);
    p.cu_seqlens_k = static_cast<const int32_t*>(a.cu_seqlens_k.data);
    p.cu_seqlens_q_stride = a.cu_seqlens_q.stride[0], p.cu_seqlens_k_stride = a.cu_seqlens_k.stride[0];
  }

  if (a.lse.present()) {
    require_dtype(a.lse, "lse", {DType::f32});
    require_same_device(a.lse, "lse", a.q, "q");
    require_last_contiguous(a.lse, "lse");
    if (varlen) {
      require_shape(a.lse, "lse", {q.h, q.s}, "[num_heads_q, total_q] (varlen)");
      p.lse_batch_stride = 0;
      p.lse_head_stride = a.lse.stride[0];
    } else {
      require_shape(a.lse, "lse", {q.b, q.h, q.s}, "[batch, num_heads_q, seqlen_q]");
      p.lse_batch_stride = a.lse.stride[0];
      p.lse_head_stride = a.lse.stride[1];
    }
    p.lse = static_cast<float*>(a.lse.data);
  }

  if (a.block_mask.present()) fill_block_mask(a.block_mask, a.q, q.b, q.h, q.s, k.s, p.block_mask);

  p.sinks = a.sinks.present() ? static_cast<const float*>(a.sinks.data) : nullptr;
  p.sinks_stride = a.sinks.present() ? a.sinks.stride[0] : 1;
  p.causal = a.causal;
  p.window_left = int(std::min<int64_t>(a.window_left, INT32_MAX));
  p.window_right = int(std::min<int64_t>(a.window_right, INT32_MAX));
  p.scale = resolve_scale(a.scale, p.head_dim);
  p.scale_log2 = p.scale * kLog2e;
  p.softcap = check_softcap(a.softcap);
  const BlockMaskArgs& m = a.block_mask;
  require_no_overlap({{&a.out, "out"}, {&a.lse, "lse"}},
                     {{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"}, {&a.cu_seqlens_q, "cu_seqlens_q"},
                      {&a.cu_seqlens_k, "cu_seqlens_k"}, {&a.sinks, "sinks"},
                      {&m.kv_num_blocks, "block_mask.kv_num_blocks"},
                      {&m.kv_indices, "block_mask.kv_indices"},
                      {&m.partial_ids, "block_mask.partial_ids"},
                      {&m.full_kv_num_blocks, "block_mask.full_kv_num_blocks"},
                      {&m.full_kv_indices, "block_mask.full_kv_indices"},
                      {&m.partial_bits, "block_mask.partial_bits"}});

  // Zero-size problems: nothing to compute (rows of an empty kv are still written below).
  if (p.batch == 0 || q.s == 0 || q.h == 0) return;

  run_on(a.q, [&] { cpu::attention(p); }, [&] { cuda::attention(p, a.variant, stream); });
}

void naive_attention(const NaiveArgs& a, Stream stream) {
  const Qkvo x = check_qkvo(a.q, a.k, a.v, a.out, a.layout, false);
  const Bshd &q = x.q, &k = x.k;
  AttnParams p;
  fill_qkvo(p, a.q, a.k, a.v, a.out, x);
  p.causal = a.causal;
  p.scale = resolve_scale(a.scale, p.head_dim);
  p.scale_log2 = p.scale * kLog2e;
  require_no_overlap({{&a.out, "out"}}, {{&a.q, "q"}, {&a.k, "k"}, {&a.v, "v"}});
  if (p.batch == 0 || q.s == 0 || q.h == 0) return;
  run_on(a.q, [&] { cpu::naive_attention(p); }, [&] {
    // The B*H*Sq*Sk float scores, stream-ordered: allocated, used and freed on `stream`; never
    // while capturing (refused before anything is captured).
    if (stream_is_capturing(stream))
      value_error("naive_attention cannot run under CUDA-graph capture: it allocates its score "
                  "matrix for each call; call it outside the capture");
    const size_t bytes = size_t(q.b) * q.h * q.s * std::max<int64_t>(k.s, 1) * sizeof(float);
    void* ws = device_malloc(bytes, a.q.device_id, stream);
    try {
      cuda::naive_attention(p, ws, stream);
    } catch (...) {
      device_free(ws, a.q.device_id, stream);
      throw;
    }
    device_free(ws, a.q.device_id, stream);
  });
}

void merge_states(const MergeArgs& a, Stream stream) {
  require(a.o_a, "o_a");
  require(a.o_b, "o_b");
  require(a.lse_a, "lse_a");
  require(a.lse_b, "lse_b");
  require(a.out, "out");
  require_cuda_usable(a.o_a, "o_a");
  require_compute_dtype(a.o_a, "o_a");
  for (auto [t, n] : {std::pair{&a.o_b, "o_b"}, {&a.out, "out"}}) require_same_dtype(*t, n, a.o_a, "o_a");
  for (auto [t, n] : {std::pair{&a.o_b, "o_b"}, {&a.out, "out"}, {&a.lse_a, "lse_a"}, {&a.lse_b, "lse_b"}})
    require_same_device(*t, n, a.o_a, "o_a");
  // What attention returns: o [b, s, h, d] / [b, h, s, d] with lse [b, h, s], or varlen (3-D)
  // o [total, h, d] with lse [h, total].
  const bool varlen = a.o_a.ndim == 3;
  if (varlen && a.layout != Layout::bshd)
    value_error("merge_states of varlen [total, heads, head_dim] results takes layout 'bshd'");
  const Bshd oa = as_bshd(a.o_a, "o_a", a.layout, varlen);
  const Bshd ob = as_bshd(a.o_b, "o_b", a.layout, varlen);
  const Bshd o = as_bshd(a.out, "out", a.layout, varlen);
  if (ob.b != oa.b || ob.s != oa.s || ob.h != oa.h || ob.d != oa.d)
    value_error("o_b has shape ", shape_str(a.o_b), " but o_a has ", shape_str(a.o_a));
  if (o.b != oa.b || o.s != oa.s || o.h != oa.h || o.d != oa.d)
    value_error("out has shape ", shape_str(a.out), " but o_a has ", shape_str(a.o_a));
  if (oa.d < 1) value_error("head_dim must be >= 1, got o_a shape ", shape_str(a.o_a));
  MergeParams p;
  auto lse3 = [&](const TensorView& t, const char* n, int64_t* st) {
    require_dtype(t, n, {DType::f32});
    if (varlen) {
      require_shape(t, n, {oa.h, oa.s}, "[heads, total] (varlen)");
      st[0] = 0, st[1] = t.stride[0], st[2] = t.stride[1];
      return;
    }
    require_shape(t, n, {oa.b, oa.h, oa.s}, "[batch, heads, seqlen]");
    for (int i = 0; i < 3; ++i) st[i] = t.stride[i];
  };
  lse3(a.lse_a, "lse_a", p.la_stride);
  lse3(a.lse_b, "lse_b", p.lb_stride);
  if (a.lse_out.present()) {
    require_same_device(a.lse_out, "lse_out", a.o_a, "o_a");
    lse3(a.lse_out, "lse_out", p.l_stride);
    p.lse = static_cast<float*>(a.lse_out.data);
  }
  for (auto [t, n] : {std::pair{&a.o_a, "o_a"}, {&a.o_b, "o_b"}, {&a.out, "out"}}) require_gpu_aligned(*t, n);
  p.o_a = a.o_a.data, p.o_b = a.o_b.data, p.o = a.out.data;
  p.lse_a = static_cast<const float*>(a.lse_a.data);
  p.lse_b = static_cast<const float*>(a.lse_b.data);
  const Bshd* src[3] = {&oa, &ob, &o};
  int64_t* dst[3] = {p.oa_stride, p.ob_stride, p.o_stride};
  for (int i = 0; i < 3; ++i) dst[i][0] = src[i]->sb, dst[i][1] = src[i]->ss, dst[i][2] = src[i]->sh;
  p.batch = as_int32(oa.b, "batch"), p.seqlen = as_int32(oa.s, "seqlen");
  p.num_heads = as_int32(oa.h, "num_heads"), p.head_dim = as_int32(oa.d, "head_dim");
  p.dtype = a.o_a.dtype;
  require_no_overlap({{&a.out, "out"}, {&a.lse_out, "lse_out"}},
                     {{&a.o_a, "o_a"}, {&a.lse_a, "lse_a"}, {&a.o_b, "o_b"}, {&a.lse_b, "lse_b"}});
  if (p.batch == 0 || p.seqlen == 0 || p.num_heads == 0) return;
  run_on(a.o_a, [&] { cpu::merge_states(p); }, [&] { cuda::merge_states(p, stream); });
}

}  // namespace cuattn
