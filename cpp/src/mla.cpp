// mla.cpp — multi-head latent attention: mla_attention, computed exactly and
// without the seed's per-(query, key) re-projection, and DeepSeek-V3's mla_decode over a paged
// latent cache. Two exact orders of the same products for mla_attention:
//   materialise: K_h = Kl Kp[h], V_h = Vl Vp[h] once per head, then flash attention;
//   absorb:      q'_h = q_h Kp[h]^T (latent space), attention over the shared latents (one kv
//                head for all H query heads), then out_h = o'_h Vp[h].
// The host picks whichever needs fewer FLOPs (absorb wins for short q, materialise for prefill).
// On the GPU the projections are tensor-core GEMMs (cuda/mla/gemm.cu), materialise runs the
// flash kernel through attention(), and absorb and mla_decode run the latent-attention kernel
// (cuda/mla/latent_attention.cuh).
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend.h"
#include "cuattn/mla_params.h"
#include "scheduler.h"
#include "validate.h"

namespace cuattn {
using namespace detail;

namespace {

// FLOPs of both orders (multiply-adds x 2) for Sq queries over Sk keys (causal masking ignored:
// it scales both attention terms alike).
//   materialise: K_h, V_h for every key and head, then attention in head dims D / Dv;
//   absorb:      q' for every query and head, attention in the latent dim (L for QK^T and PV),
//                then the output projection for every query and head.
double cost_materialise(double B, double H, double Sq, double Sk, double L, double D, double Dv) {
  return 2 * B * Sk * H * L * (D + Dv) + 2 * B * H * Sq * Sk * (D + Dv);
}
double cost_absorb(double B, double H, double Sq, double Sk, double L, double D, double Dv) {
  return 2 * B * H * Sq * L * (D + Dv) + 4 * B * H * Sq * Sk * L;
}

// out[m, h, e] = sum_l a[m, l] * w[h, l, e] over float buffers; a has row stride lda.
void project(const float* a, int64_t M, int64_t L, int64_t lda, int64_t a_head_stride,
             const float* w, int64_t H, int64_t E, float* out) {
  cpu::parallel_for(M * H, [&](int64_t mh) {
    const int64_t m = mh / H, h = mh % H;
    const float* ar = a + m * lda + h * a_head_stride;
    float* o = out + (m * H + h) * E;
    std::vector<double> acc(size_t(E), 0.0);
    for (int64_t l = 0; l < L; ++l) {
      const double x = ar[l];
      const float* wr = w + (h * L + l) * E;
      for (int64_t e = 0; e < E; ++e) acc[size_t(e)] += x * wr[e];
    }
    for (int64_t e = 0; e < E; ++e) o[e] = float(acc[size_t(e)]);
  });
}

// Copies a strided tensor of up to 4 dims into a contiguous float buffer.
std::vector<float> to_float(const TensorView& t) {
  std::vector<float> out(size_t(t.numel()));
  int64_t idx[4] = {0, 0, 0, 0};
  int64_t shape[4] = {1, 1, 1, 1}, stride[4] = {0, 0, 0, 0};
  const int off = 4 - t.ndim;
  for (int i = 0; i < t.ndim; ++i) shape[off + i] = t.shape[i], stride[off + i] = t.stride[i];
  size_t n = 0;
  for (idx[0] = 0; idx[0] < shape[0]; ++idx[0])
    for (idx[1] = 0; idx[1] < shape[1]; ++idx[1])
      for (idx[2] = 0; idx[2] < shape[2]; ++idx[2])
        for (idx[3] = 0; idx[3] < shape[3]; ++idx[3])
          out[n++] = cpu::load(t.data, t.dtype,
                               idx[0] * stride[0] + idx[1] * stride[1] + idx[2] * stride[2] + idx[3] * stride[3]);
  return out;
}

#ifdef CUATTN_WITH_CUDA
// A stream-ordered device temporary (cudaMallocAsync / cudaFreeAsync on the call's stream).
struct DeviceBuffer {
  void* ptr = nullptr;
  int device;
  Stream stream;
  DeviceBuffer(size_t bytes, int dev, Stream s) : device(dev), stream(s) { ptr = device_malloc(bytes, dev, s); }
  ~DeviceBuffer() {
    try {
      device_free(ptr, device, stream);
    } catch (...) {  // a destructor must not throw; the launch error (if any) is already thrown
    }
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Splits of the latent kernel without a plan, from shapes alone (no sync): enough (sequence,
// row tile, split) CTAs to give every SM one (the kernel runs one 512-thread CTA an SM), never
// a split shorter than 256 keys.
void choose_latent_splits(MlaLatentParams& p, int64_t max_keys) {
  constexpr int64_t kMinChunk = 256, kBM = 64;
  const int64_t ctas = int64_t(p.batch) * ((int64_t(p.num_heads_q) * p.seqlen_q + kBM - 1) / kBM);
  const int64_t want = (int64_t(cuda::mla_sm_count()) + ctas - 1) / std::max<int64_t>(ctas, 1);
  const int64_t most = std::max<int64_t>(1, (max_keys + kMinChunk - 1) / kMinChunk);
  const int64_t splits = std::clamp<int64_t>(want, 1, most);
  const int64_t chunk = std::max<int64_t>(32, ((max_keys + splits - 1) / splits + 31) / 32 * 32);
  p.chunk_tokens = int(std::min<int64_t>(chunk, INT32_MAX / 2));
  p.num_splits = int(std::max<int64_t>(1, (max_keys + chunk - 1) / chunk));
}

size_t latent_workspace_bytes(const MlaLatentParams& p) {
  const size_t rows = size_t(p.batch) * p.num_splits * p.num_heads_q * p.seqlen_q;
  return rows * (size_t(p.head_dim_v) + 1) * sizeof(float);
}

void carve_latent_workspace(MlaLatentParams& p, void* base) {
  p.part_o = static_cast<float*>(base);
  p.part_lse = p.part_o + size_t(p.batch) * p.num_splits * p.num_heads_q * p.seqlen_q * p.head_dim_v;
}

// Runs the latent kernel without a plan, its splits chosen (choose_latent_splits): with more
// than one, a temporary split workspace.
void run_latent(MlaLatentParams& p, int device, Stream stream) {
  if (p.num_splits == 1) return cuda::mla_latent_attention(p, stream);
  DeviceBuffer ws(latent_workspace_bytes(p), device, stream);
  carve_latent_workspace(p, ws.ptr);
  cuda::mla_latent_attention(p, stream);
}

GemmParams gemm_params(DType t, int64_t m, int64_t n, int64_t k, int64_t batch1, int64_t batch2) {
  GemmParams g;
  g.dtype = t;
  g.m = int(m), g.n = int(n), g.k = int(k), g.batch1 = int(batch1), g.batch2 = int(batch2);
  return g;
}

void mla_attention_gpu(const MlaArgs& a, MlaMethod method, double scale, Stream stream) {
  const int64_t B = a.q.shape[0], H = a.q.shape[1], Sq = a.q.shape[2], D = a.q.shape[3];
  const int64_t Sk = a.k_latent.shape[1], L = a.k_latent.shape[2], Dv = a.v_proj.shape[2];
  const TensorView &q = a.q, &kl = a.k_latent, &vl = a.v_latent, &kp = a.k_proj, &vp = a.v_proj;
  for (auto [t, n] : {std::pair{&q, "q"}, {&kl, "k_latent"}, {&vl, "v_latent"}, {&kp, "k_proj"},
                      {&vp, "v_proj"}, {&a.out, "out"}})
    require_gpu_aligned(*t, n);
  if (std::max({B, H, Sq, Sk, D, L, Dv}) > INT32_MAX / 2)
    value_error("mla_attention on the GPU: dims must be below 2^30, got shapes q ", shape_str(q),
                ", k_latent ", shape_str(kl));
  if (method != MlaMethod::per_pair && (D % 8 || L % 8 || Dv % 8))
    value_error("mla_attention on the GPU needs head_dim, latent_dim and head_dim_v that are "
                "multiples of 8 (16-byte rows for the tensor-core GEMMs), got ", D, ", ", L, ", ", Dv);
  const bool flash_ok = cuda::attention_supported(q.dtype, int(D), int(Dv));
  const bool latent_ok = cuda::mla_latent_supported(q.dtype, q.dtype, int(L), int(L), false);
  if (method == MlaMethod::materialise && !flash_ok)
    value_error("mla_attention: no GPU flash kernel for head_dim ", D, "/", Dv, " (", dtype_name(q.dtype),
                ") in this build, so the materialised order cannot run; use _method='absorb'");
  if (method == MlaMethod::absorb && !latent_ok)
    value_error("mla_attention: the GPU latent kernel takes latent_dim <= 512, got ", L,
                "; use _method='materialise'");
  if (B == 0 || H == 0 || Sq == 0) return;
  if (Sk == 0) method = MlaMethod::per_pair;  // no key: every order writes zeros; this one has no
                                              // temporaries and no kernel that needs Sk >= 1
  // Both exact orders allocate stream-ordered temporaries; under capture they would be
  // allocated while capturing, which is refused before anything is captured.
  if (method != MlaMethod::per_pair && stream_is_capturing(stream))
    value_error("mla_attention cannot run under CUDA-graph capture: it allocates temporaries (the "
                "projected K/V, or q' and o') and takes no plan= to hold them; call it outside "
                "the capture (_method='per_pair' allocates nothing)");
  const int dev = q.device_id;
  const int64_t es = dtype_size(q.dtype);

  if (method == MlaMethod::per_pair) {
    MlaPerPairParams p;
    p.q = q.data, p.k_latent = kl.data, p.v_latent = vl.data, p.k_proj = kp.data, p.v_proj = vp.data;
    p.o = a.out.data;
    for (int i = 0; i < 3; ++i) p.q_stride[i] = q.stride[i], p.o_stride[i] = a.out.stride[i];
    for (int i = 0; i < 2; ++i)
      p.kl_stride[i] = kl.stride[i], p.vl_stride[i] = vl.stride[i], p.kp_stride[i] = kp.stride[i],
      p.vp_stride[i] = vp.stride[i];
    p.batch = int(B), p.heads = int(H), p.seqlen_q = int(Sq), p.seqlen_k = int(Sk);
    p.latent = int(L), p.head_dim = int(D), p.head_dim_v = int(Dv);
    p.causal = a.causal, p.scale = float(scale), p.dtype = q.dtype;
    return cuda::mla_per_pair(p, stream);
  }

  if (method == MlaMethod::materialise) {
    // K_h[b] = Kl[b] Kp[h], V_h[b] = Vl[b] Vp[h] into [B, H, Sk, *], then flash attention (bhsd).
    DeviceBuffer kbuf(size_t(B * H * Sk * D * es), dev, stream), vbuf(size_t(B * H * Sk * Dv * es), dev, stream);
    for (auto [lat, proj, buf, E] : {std::tuple{&kl, &kp, &kbuf, D}, {&vl, &vp, &vbuf, Dv}}) {
      GemmParams g = gemm_params(q.dtype, Sk, E, L, B, H);
      g.a = lat->data, g.lda = lat->stride[1], g.a_stride1 = lat->stride[0], g.a_stride2 = 0;
      g.b = proj->data, g.ldb = proj->stride[1], g.b_stride1 = 0, g.b_stride2 = proj->stride[0];
      g.c = buf->ptr, g.ldc = E, g.c_stride1 = H * Sk * E, g.c_stride2 = Sk * E;
      cuda::gemm(g, stream);
    }
    AttentionArgs at;
    at.q = q;
    at.k = make_view(kbuf.ptr, q.dtype, {B, H, Sk, D}, DeviceType::cuda, dev);
    at.v = make_view(vbuf.ptr, q.dtype, {B, H, Sk, Dv}, DeviceType::cuda, dev);
    at.out = a.out;
    at.causal = a.causal;
    at.scale = scale;
    at.layout = Layout::bhsd;
    return attention(at, stream);
  }

  // absorb: q'[b, s, h] = q[b, h, s] Kp[h]^T, latent attention, out[b, h, s] = o'[b, s, h] Vp[h].
  DeviceBuffer qa(size_t(B * Sq * H * L * es), dev, stream), oa(size_t(B * Sq * H * L * es), dev, stream);
  GemmParams g = gemm_params(q.dtype, Sq, L, D, B, H);
  g.a = q.data, g.lda = q.stride[2], g.a_stride1 = q.stride[0], g.a_stride2 = q.stride[1];
  g.b = kp.data, g.ldb = kp.stride[1], g.b_stride1 = 0, g.b_stride2 = kp.stride[0], g.b_n_major = true;
  g.c = qa.ptr, g.ldc = H * L, g.c_stride1 = Sq * H * L, g.c_stride2 = L;
  cuda::gemm(g, stream);

  MlaLatentParams p;
  p.q = qa.ptr, p.o = oa.ptr;
  p.q_batch_stride = p.o_batch_stride = Sq * H * L;
  p.q_row_stride = p.o_row_stride = H * L;
  p.q_head_stride = p.o_head_stride = L;
  p.k_cache = kl.data, p.v_cache = vl.data;  // one page of Sk slots a sequence
  p.k_page_stride = kl.stride[0], p.k_slot_stride = kl.stride[1];
  p.v_page_stride = vl.stride[0], p.v_slot_stride = vl.stride[1];
  p.batch = int(B), p.seqlen_q = int(Sq), p.num_heads_q = int(H);
  p.head_dim = p.head_dim_v = int(L);
  p.page_size = int(Sk), p.max_blocks = 1, p.num_pages = int(B);
  p.causal = a.causal;
  p.scale = float(scale);
  p.q_dtype = p.kv_dtype = q.dtype;
  if (int64_t(H) * Sq > int64_t(65535) * 64) value_error("mla_attention: heads x seqlen_q is too large for the GPU kernel");
  choose_latent_splits(p, Sk);
  run_latent(p, dev, stream);

  g = gemm_params(q.dtype, Sq, Dv, L, B, H);
  g.a = oa.ptr, g.lda = H * L, g.a_stride1 = Sq * H * L, g.a_stride2 = L;
  g.b = vp.data, g.ldb = vp.stride[1], g.b_stride1 = 0, g.b_stride2 = vp.stride[0];
  g.c = a.out.data, g.ldc = a.out.stride[2], g.c_stride1 = a.out.stride[0], g.c_stride2 = a.out.stride[1];
  cuda::gemm(g, stream);
}
#endif

// Every input rule of mla_attention; the dims are read from the shapes afterwards.
void validate_mla(const MlaArgs& a) {
  for (auto [t, n] : {std::pair{&a.q, "q"}, {&a.k_latent, "k_latent"}, {&a.v_latent, "v_latent"},
                      {&a.k_proj, "k_proj"}, {&a.v_proj, "v_proj"}, {&a.out, "out"}})
    require(*t, n);
  require_cuda_usable(a.q, "q");
  require_compute_dtype(a.q, "q");
  for (auto [t, n] : {std::pair{&a.k_latent, "k_latent"}, {&a.v_latent, "v_latent"},
                      {&a.k_proj, "k_proj"}, {&a.v_proj, "v_proj"}, {&a.out, "out"}}) {
    require_same_dtype(*t, n, a.q, "q");
    require_same_device(*t, n, a.q, "q");
    require_last_contiguous(*t, n);
  }
  require_last_contiguous(a.q, "q");
  require_ndim(a.q, "q", 4, "[batch, heads, seqlen_q, head_dim]");
  const int64_t B = a.q.shape[0], H = a.q.shape[1], Sq = a.q.shape[2], D = a.q.shape[3];
  require_ndim(a.k_latent, "k_latent", 3, "[batch, seqlen_k, latent_dim]");
  const int64_t Sk = a.k_latent.shape[1], L = a.k_latent.shape[2];
  require_shape(a.k_latent, "k_latent", {B, Sk, L}, "[batch, seqlen_k, latent_dim]");
  require_shape(a.v_latent, "v_latent", {B, Sk, L}, "[batch, seqlen_k, latent_dim]");
  require_shape(a.k_proj, "k_proj", {H, L, D}, "[heads, latent_dim, head_dim]");
  require_ndim(a.v_proj, "v_proj", 3, "[heads, latent_dim, head_dim_v]");
  const int64_t Dv = a.v_proj.shape[2];
  require_shape(a.v_proj, "v_proj", {H, L, Dv}, "[heads, latent_dim, head_dim_v]");
  require_shape(a.out, "out", {B, H, Sq, Dv}, "[batch, heads, seqlen_q, head_dim_v]");
  if (D < 1 || L < 1 || Dv < 1) value_error("head_dim and latent_dim must be >= 1");
  for (auto [v, n] : {std::pair{B, "batch"}, {H, "heads"}, {Sq, "seqlen_q"}, {Sk, "seqlen_k"},
                      {D, "head_dim"}, {L, "latent_dim"}, {Dv, "head_dim_v"}})
    as_int32(v, n);
  require_no_overlap({{&a.out, "out"}}, {{&a.q, "q"}, {&a.k_latent, "k_latent"},
                                         {&a.v_latent, "v_latent"}, {&a.k_proj, "k_proj"},
                                         {&a.v_proj, "v_proj"}});
}

// The order an mla_attention call with these (validated) arguments computes: the forced one, or
// whichever needs fewer FLOPs, unless this build has no GPU kernel for it and has one for the
// other. The CPU has no per-pair order: it runs absorb for it.
MlaMethod choose_method(const MlaArgs& a) {
  const int64_t B = a.q.shape[0], H = a.q.shape[1], Sq = a.q.shape[2], D = a.q.shape[3];
  const int64_t Sk = a.k_latent.shape[1], L = a.k_latent.shape[2], Dv = a.v_proj.shape[2];
  if (!a.q.is_cuda() && a.method == MlaMethod::per_pair) return MlaMethod::absorb;
  if (a.method != MlaMethod::automatic) return a.method;
  MlaMethod method = cost_absorb(B, H, Sq, Sk, L, D, Dv) < cost_materialise(B, H, Sq, Sk, L, D, Dv)
                         ? MlaMethod::absorb
                         : MlaMethod::materialise;
#ifdef CUATTN_WITH_CUDA
  if (a.q.is_cuda()) {
    const bool flash_ok = cuda::attention_supported(a.q.dtype, int(D), int(Dv));
    const bool latent_ok = cuda::mla_latent_supported(a.q.dtype, a.q.dtype, int(L), int(L), false);
    if (method == MlaMethod::materialise && !flash_ok && latent_ok) method = MlaMethod::absorb;
    if (method == MlaMethod::absorb && !latent_ok && flash_ok) method = MlaMethod::materialise;
  }
#endif
  return method;
}

}  // namespace

MlaMethod mla_method(const MlaArgs& a) {
  validate_mla(a);
  return choose_method(a);
}

void mla_attention(const MlaArgs& a, Stream stream) {
  validate_mla(a);
  const int64_t B = a.q.shape[0], H = a.q.shape[1], Sq = a.q.shape[2], D = a.q.shape[3];
  const int64_t Sk = a.k_latent.shape[1], L = a.k_latent.shape[2], Dv = a.v_proj.shape[2];
  const double scale = resolve_scale(a.scale, int(D));
  const MlaMethod method = choose_method(a);
  if (a.q.is_cuda()) {
#ifdef CUATTN_WITH_CUDA
    cuda::DeviceGuard guard(a.q.device_id);
    mla_attention_gpu(a, method, scale, stream);
#endif
    return;
  }
  if (B == 0 || H == 0 || Sq == 0) return;
  (void)stream;

  const std::vector<float> q = to_float(a.q);          // [B, H, Sq, D]
  const std::vector<float> kl = to_float(a.k_latent);  // [B, Sk, L]
  const std::vector<float> vl = to_float(a.v_latent);
  const std::vector<float> kp = to_float(a.k_proj);    // [H, L, D]
  const std::vector<float> vp = to_float(a.v_proj);    // [H, L, Dv]

  AttnParams p;  // causal with the bottom-right rule (offset Sk - Sq), as attention()
  p.batch = int(B), p.seqlen_q = int(Sq), p.seqlen_k = int(Sk), p.num_heads_q = int(H);
  p.causal = a.causal;
  p.scale = float(scale);
  p.scale_log2 = p.scale * kLog2e;
  p.dtype = DType::f32;

  std::vector<float> out_f(size_t(B * H * Sq * Dv));  // [B, H, Sq, Dv]
  if (method != MlaMethod::materialise) {  // absorb (the CPU has no per-pair order)
    // q'[b, s, h, l] = sum_d q[b, h, s, d] Kp[h, l, d]: project with the transposed weights.
    std::vector<float> kpt(size_t(H * D * L));  // [H, D, L]
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < L; ++l)
        for (int64_t d = 0; d < D; ++d) kpt[size_t((h * D + d) * L + l)] = kp[size_t((h * L + l) * D + d)];
    std::vector<float> qa(size_t(B * Sq * H * L));  // [B, Sq, H, L]
    for (int64_t b = 0; b < B; ++b)
      project(q.data() + b * H * Sq * D, Sq, D, D, Sq * D, kpt.data(), H, L, qa.data() + b * Sq * H * L);
    std::vector<float> oa(size_t(B * Sq * H * L));  // [B, Sq, H, L]
    p.q = qa.data();
    p.q_batch_stride = Sq * H * L, p.q_row_stride = H * L, p.q_head_stride = L;
    p.k = kl.data(), p.v = vl.data();  // one shared kv head: [B, Sk, 1, L]
    p.k_batch_stride = p.v_batch_stride = Sk * L, p.k_row_stride = p.v_row_stride = L;
    p.k_head_stride = p.v_head_stride = L;
    p.o = oa.data();
    p.o_batch_stride = Sq * H * L, p.o_row_stride = H * L, p.o_head_stride = L;
    p.num_heads_kv = 1, p.head_dim = int(L), p.head_dim_v = int(L);
    cpu::attention(p);
    std::vector<float> o2(size_t(B * Sq * H * Dv));  // [B, Sq, H, Dv]
    project(oa.data(), B * Sq, L, H * L, L, vp.data(), H, Dv, o2.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < Sq; ++s)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t e = 0; e < Dv; ++e)
            out_f[size_t(((b * H + h) * Sq + s) * Dv + e)] = o2[size_t(((b * Sq + s) * H + h) * Dv + e)];
  } else {
    std::vector<float> k(size_t(B * Sk * H * D)), v(size_t(B * Sk * H * Dv));  // [B, Sk, H, *]
    project(kl.data(), B * Sk, L, L, 0, kp.data(), H, D, k.data());
    project(vl.data(), B * Sk, L, L, 0, vp.data(), H, Dv, v.data());
    p.q = q.data();  // [B, H, Sq, D], indexed as [b, s, h, d] through strides
    p.q_batch_stride = H * Sq * D, p.q_row_stride = D, p.q_head_stride = Sq * D;
    p.k = k.data(), p.v = v.data();
    p.k_batch_stride = Sk * H * D, p.k_row_stride = H * D, p.k_head_stride = D;
    p.v_batch_stride = Sk * H * Dv, p.v_row_stride = H * Dv, p.v_head_stride = Dv;
    p.o = out_f.data();  // [B, H, Sq, Dv]
    p.o_batch_stride = H * Sq * Dv, p.o_row_stride = Dv, p.o_head_stride = Sq * Dv;
    p.num_heads_kv = int(H), p.head_dim = int(D), p.head_dim_v = int(Dv);
    cpu::attention(p);
  }
  // Store in out's dtype and strides.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < Sq; ++s)
        for (int64_t e = 0; e < Dv; ++e)
          cpu::store(a.out.data, a.out.dtype,
                     b * a.out.stride[0] + h * a.out.stride[1] + s * a.out.stride[2] + e,
                     out_f[size_t(((b * H + h) * Sq + s) * Dv + e)]);
}

void mla_decode(const MlaDecodeArgs& a, Stream stream) {
  require(a.kv_cache, "kv_cache");
  require(a.q, "q");
  if (!(finite_f32(a.scale, "scale") > 0))
    value_error("mla_decode needs an explicit scale > 0 (DeepSeek-V3 uses mscale^2/sqrt(192)), got ",
                a.scale);
  if (!(finite_f32(a.kv_scale, "kv_scale") > 0)) value_error("kv_scale must be > 0, got ", a.kv_scale);
  require_ndim(a.q, "q", 4, "[batch, seqlen_q, num_heads_q, 576]");
  const int64_t dk = a.q.shape[3];
  // The latent cache as a one-head NHD cache; V is a narrower view of the same memory.
  TensorView kc = a.kv_cache;
  if (kc.ndim == 3) {
    kc.ndim = 4;
    kc.shape[3] = kc.shape[2], kc.stride[3] = kc.stride[2];
    kc.shape[2] = 1, kc.stride[2] = kc.shape[3];
  } else if (!(kc.ndim == 4 && kc.shape[2] == 1)) {
    value_error("kv_cache must be [num_blocks, block_size, ", dk, "] or [num_blocks, block_size, 1, ",
                dk, "], got shape ", shape_str(a.kv_cache));
  }
  if (a.head_dim_v < 1 || a.head_dim_v > kc.shape[3])
    value_error("head_dim_v ", a.head_dim_v, " must be in [1, ", kc.shape[3], "]");
  TensorView vc = kc;
  vc.shape[3] = a.head_dim_v;
  PagedArgs pa;
  pa.q = a.q;
  pa.k_cache = kc;
  pa.v_cache = vc;
  pa.block_table = a.block_table;
  pa.seq_lens = a.seq_lens;
  pa.out = a.out;
  pa.lse = a.lse;
  pa.k_scale_t = pa.v_scale_t = a.kv_scale_t;
  pa.k_scale = pa.v_scale = a.kv_scale;
  pa.scale = a.scale;
  pa.causal = a.causal;
  pa.check = a.check;
  pa.plan = a.plan;
  // Validates (and checks contents if asked), naming the one cache as the caller knows it.
  const PagedParams pp = paged_params(pa, stream, "kv_cache", "kv_cache");
  if (!a.q.is_cuda()) {
    if (pp.batch > 0 && pp.seqlen_q > 0 && pp.num_heads_q > 0) cpu::paged_attention(pp);
    return;
  }
#ifdef CUATTN_WITH_CUDA
  if (!cuda::mla_latent_supported(pp.q_dtype, pp.kv_dtype, pp.head_dim, pp.head_dim_v, true))
    value_error("mla_decode on the GPU takes q float16/bfloat16 with head_dim 576, head_dim_v 512 "
                "and a cache of q's dtype or fp8_e4m3; got q ", dtype_name(pp.q_dtype), ", cache ",
                dtype_name(pp.kv_dtype), ", head dims ", pp.head_dim, "/", pp.head_dim_v);
  if (pp.batch == 0 || pp.seqlen_q == 0 || pp.num_heads_q == 0) return;
  if (int64_t(pp.num_heads_q) * pp.seqlen_q > int64_t(65535) * 64)
    value_error("mla_decode: num_heads_q x seqlen_q is too large for the GPU kernel");
  MlaLatentParams p;
  p.q = pp.q, p.k_cache = pp.k_cache, p.v_cache = nullptr;
  p.block_table = pp.block_table, p.seq_lens = pp.seq_lens;
  p.o = pp.o, p.lse = pp.lse, p.k_scale_ptr = pp.k_scale_ptr;
  p.q_batch_stride = pp.q_batch_stride, p.q_row_stride = pp.q_row_stride, p.q_head_stride = pp.q_head_stride;
  p.k_page_stride = pp.k_page_stride, p.k_slot_stride = pp.k_slot_stride;
  p.bt_batch_stride = pp.bt_batch_stride;
  p.o_batch_stride = pp.o_batch_stride, p.o_row_stride = pp.o_row_stride, p.o_head_stride = pp.o_head_stride;
  p.lse_batch_stride = pp.lse_batch_stride, p.lse_head_stride = pp.lse_head_stride;
  p.batch = pp.batch, p.seqlen_q = pp.seqlen_q, p.num_heads_q = pp.num_heads_q;
  p.head_dim = pp.head_dim, p.head_dim_v = pp.head_dim_v;
  p.page_size = pp.page_size, p.max_blocks = pp.max_blocks, p.num_pages = pp.num_pages;
  p.causal = pp.causal;
  p.scale = pp.scale;
  p.k_scale = pp.k_scale;
  p.q_dtype = pp.q_dtype, p.kv_dtype = pp.kv_dtype;
  cuda::DeviceGuard guard(a.q.device_id);
  const MlaDecodeChoice choice =
      choose_mla_decode(p.batch, int64_t(p.num_heads_q) * p.seqlen_q, cuda::current_device_props(), a.variant);
  MlaKernel kernel = choice.kernel;
  const bool sm90 = kernel == MlaKernel::hopper || kernel == MlaKernel::narrow;
  if (sm90 && !cuda::mla_hopper_usable(p, a.plan, kernel == MlaKernel::narrow)) {
    if (choice.forced)
      value_error("mla_decode: the sm_90a kernel (variant ", a.variant, ") cannot run this call: it needs an "
                  "sm_90 device and a build with sm_90a code, a 16-bit cache with pages of 8, 16, 32 or a "
                  "multiple of 64 slots, q rows 16-byte aligned, for narrow=1 at most 32 query rows, and "
                  "a plan (if given) made for this device's SM count (page size ", p.page_size,
                  ", num_heads_q x seqlen_q ", int64_t(p.num_heads_q) * p.seqlen_q, ")");
    kernel = choice.fallback;
  }
  if (kernel != MlaKernel::split && p.seq_lens != nullptr) {
    if (a.plan == nullptr && stream_is_capturing(stream))
      value_error("mla_decode needs plan= (from plan_decode) under CUDA-graph capture");
    return cuda::mla_list_decode(p, a.plan, stream, kernel);
  }
  if (a.plan == nullptr) {
    choose_latent_splits(p, int64_t(p.max_blocks) * p.page_size);
    if (p.num_splits > 1 && stream_is_capturing(stream))
      value_error("mla_decode needs plan= (from plan_decode) under CUDA-graph capture: without "
                  "one it would allocate its split-KV workspace while capturing");
    return run_latent(p, a.q.device_id, stream);
  }
  // With a plan: its splits and its workspace; no host work beyond filling the params.
  p.num_splits = std::max(a.plan->max_splits, 1);
  p.chunk_tokens = p.num_splits == 1 ? INT32_MAX / 2 : std::max(a.plan->chunk_tokens, 1);
  if (p.num_splits > 1) {
    if (a.plan->workspace == nullptr || a.plan->workspace_bytes < latent_workspace_bytes(p))
      value_error("plan has no device workspace large enough for this call (make it with "
                  "device='cuda', head_dim=576, head_dim_v=", p.head_dim_v, ")");
    carve_latent_workspace(p, a.plan->workspace);
  }
  cuda::mla_latent_attention(p, stream);
#endif
}

}  // namespace cuattn
