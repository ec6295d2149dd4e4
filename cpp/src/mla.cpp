// mla.cpp — the chapter's multi-head latent attention, computed exactly and without the seed's
// per-(query, key) re-projection. Two exact orders of the same products:
//   materialise: K_h = Kl Kp[h], V_h = Vl Vp[h] once per head, then flash attention;
//   absorb:      q'_h = q_h Kp[h]^T (latent space), attention over the shared latents (one kv
//                head for all H query heads), then out_h = o'_h Vp[h].
// The host picks whichever needs fewer FLOPs (absorb wins for short q, materialise for prefill).
#include <cmath>
#include <vector>

#include "backend.h"
#include "validate.h"

namespace cuattn {
using namespace detail;

namespace {

// FLOPs of both orders (multiply-adds x 2).
double cost_materialise(double B, double H, double S, double L, double D, double Dv) {
  return 2 * B * S * H * L * (D + Dv) + 2 * B * H * S * S * (D + Dv);
}
double cost_absorb(double B, double H, double S, double L, double D, double Dv) {
  return 2 * B * H * S * L * (D + Dv) + 4 * B * H * S * S * L;
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

}  // namespace

void mla_attention(const MlaArgs& a, Stream stream) {
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
  require_ndim(a.q, "q", 4, "[batch, heads, seqlen, head_dim]");
  const int64_t B = a.q.shape[0], H = a.q.shape[1], S = a.q.shape[2], D = a.q.shape[3];
  require_ndim(a.k_latent, "k_latent", 3, "[batch, seqlen, latent_dim]");
  const int64_t L = a.k_latent.shape[2];
  require_shape(a.k_latent, "k_latent", {B, S, L}, "[batch, seqlen, latent_dim]");
  require_shape(a.v_latent, "v_latent", {B, S, L}, "[batch, seqlen, latent_dim]");
  require_shape(a.k_proj, "k_proj", {H, L, D}, "[heads, latent_dim, head_dim]");
  require_ndim(a.v_proj, "v_proj", 3, "[heads, latent_dim, head_dim_v]");
  const int64_t Dv = a.v_proj.shape[2];
  require_shape(a.v_proj, "v_proj", {H, L, Dv}, "[heads, latent_dim, head_dim_v]");
  require_shape(a.out, "out", {B, H, S, Dv}, "[batch, heads, seqlen, head_dim_v]");
  if (D < 1 || L < 1 || Dv < 1) value_error("head_dim and latent_dim must be >= 1");
  if (a.q.is_cuda())
    throw NotImplementedError("mla_attention runs on the CPU backend only in this version (its GPU "
                              "path, projection GEMMs + the flash kernel, is not built yet); pass "
                              "CPU arrays");
  for (auto [v, n] : {std::pair{B, "batch"}, {H, "heads"}, {S, "seqlen"}, {D, "head_dim"},
                      {L, "latent_dim"}, {Dv, "head_dim_v"}})
    as_int32(v, n);
  const float scale = resolve_scale(a.scale, int(D));
  require_no_overlap({{&a.out, "out"}}, {{&a.q, "q"}, {&a.k_latent, "k_latent"},
                                         {&a.v_latent, "v_latent"}, {&a.k_proj, "k_proj"},
                                         {&a.v_proj, "v_proj"}});
  if (B == 0 || H == 0 || S == 0) return;
  (void)stream;

  const std::vector<float> q = to_float(a.q);    // [B, H, S, D]
  const std::vector<float> kl = to_float(a.k_latent);  // [B, S, L]
  const std::vector<float> vl = to_float(a.v_latent);
  const std::vector<float> kp = to_float(a.k_proj);    // [H, L, D]
  const std::vector<float> vp = to_float(a.v_proj);    // [H, L, Dv]

  AttnParams p;
  p.batch = int(B), p.seqlen_q = int(S), p.seqlen_k = int(S), p.num_heads_q = int(H);
  p.causal = a.causal;
  p.scale = scale;
  p.scale_log2 = scale * kLog2e;
  p.dtype = DType::f32;
  // q stays [B, H, S, D]: indexed as [b, s, h, d] through strides.
  p.q = q.data();
  p.q_batch_stride = H * S * D, p.q_row_stride = D, p.q_head_stride = S * D;

  std::vector<float> out_f;  // [B, H, S, Dv]
  if (cost_absorb(B, H, S, L, D, Dv) < cost_materialise(B, H, S, L, D, Dv)) {
    // q'[b, s, h, l] = sum_d q[b, h, s, d] Kp[h, l, d]: project with the transposed weights.
    std::vector<float> kpt(size_t(H * D * L));  // [H, D, L]
    for (int64_t h = 0; h < H; ++h)
      for (int64_t l = 0; l < L; ++l)
        for (int64_t d = 0; d < D; ++d) kpt[size_t((h * D + d) * L + l)] = kp[size_t((h * L + l) * D + d)];
    std::vector<float> qa(size_t(B * S * H * L));  // [B, S, H, L]
    for (int64_t b = 0; b < B; ++b)
      project(q.data() + b * H * S * D, S, D, D, S * D, kpt.data(), H, L, qa.data() + b * S * H * L);
    std::vector<float> oa(size_t(B * S * H * L));  // [B, S, H, L]
    p.q = qa.data();
    p.q_batch_stride = S * H * L, p.q_row_stride = H * L, p.q_head_stride = L;
    p.k = kl.data(), p.v = vl.data();  // one shared kv head: [B, S, 1, L]
    p.k_batch_stride = p.v_batch_stride = S * L, p.k_row_stride = p.v_row_stride = L;
    p.k_head_stride = p.v_head_stride = L;
    p.o = oa.data();
    p.o_batch_stride = S * H * L, p.o_row_stride = H * L, p.o_head_stride = L;
    p.num_heads_kv = 1, p.head_dim = int(L), p.head_dim_v = int(L);
    cpu::attention(p);
    std::vector<float> o2(size_t(B * S * H * Dv));  // [B, S, H, Dv]
    project(oa.data(), B * S, L, H * L, L, vp.data(), H, Dv, o2.data());
    out_f.resize(size_t(B * H * S * Dv));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t e = 0; e < Dv; ++e)
            out_f[size_t(((b * H + h) * S + s) * Dv + e)] = o2[size_t(((b * S + s) * H + h) * Dv + e)];
  } else {
    std::vector<float> k(size_t(B * S * H * D)), v(size_t(B * S * H * Dv));  // [B, S, H, *]
    project(kl.data(), B * S, L, L, 0, kp.data(), H, D, k.data());
    project(vl.data(), B * S, L, L, 0, vp.data(), H, Dv, v.data());
    out_f.resize(size_t(B * H * S * Dv));
    p.k = k.data(), p.v = v.data();
    p.k_batch_stride = S * H * D, p.k_row_stride = H * D, p.k_head_stride = D;
    p.v_batch_stride = S * H * Dv, p.v_row_stride = H * Dv, p.v_head_stride = Dv;
    p.o = out_f.data();  // [B, H, S, Dv]
    p.o_batch_stride = H * S * Dv, p.o_row_stride = Dv, p.o_head_stride = S * Dv;
    p.num_heads_kv = int(H), p.head_dim = int(D), p.head_dim_v = int(Dv);
    cpu::attention(p);
  }
  // Store in out's dtype and strides.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t e = 0; e < Dv; ++e)
          cpu::store(a.out.data, a.out.dtype,
                     b * a.out.stride[0] + h * a.out.stride[1] + s * a.out.stride[2] + e,
                     out_f[size_t(((b * H + h) * S + s) * Dv + e)]);
}

}  // namespace cuattn
