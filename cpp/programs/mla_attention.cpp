// mla_attention — multi-head latent attention (DeepSeek). Keys and values are cached as one small
// latent vector per token instead of H heads of K and V, and expanded by per-head projections:
//
//   prefill (the chapter's formulation, cuattn::mla_attention):
//     out[b,h] = softmax(q[b,h] (Kl[b] Kp[h])ᵀ · scale) (Vl[b] Vp[h])
//     q [B, H, S, D], latents [B, S, L], projections [H, L, D]; computed exactly, never by
//     re-projecting per (query, key) pair.
//   decode (DeepSeek-V3, cuattn::mla_decode): the projections are absorbed into q and the output,
//     so all Hq query heads attend over one paged latent cache of 576 = 512 latent + 64 rope
//     columns per token, V being its first 512 columns; block size 64, scale mscale²/√192.
//
//   ./mla_attention                              both parts at the default GPU sizes
//   ./mla_attention --part decode --decode-cases 128x8192h128
//   ./mla_attention --check --device cpu --small
//
// FLOPs: prefill 4·B·H·S²·D (halved for causal) for attention + 2·B·S·L·H·(D+Dv) to expand the
// latents; decode 2·B·Hq·Sq·L·(576+512). Decode bytes = the latent cache read once.
#include <algorithm>
#include <cmath>
#include <memory>

#include "harness.h"

using namespace harness;

// K[b, h, s, :] = Kl[b, s, :] · Kp[h] for batches < nb, heads < nh: the exact expansion the
// oracle compares against, in float32 on the host. Returns [nb, nh, S, E].
static Tensor expand_latent(const Tensor& latent, const Tensor& proj, int64_t nb, int64_t nh) {
  const int64_t S = latent.shape[1], L = latent.shape[2], E = proj.shape[2];
  std::vector<float> lat = to_floats(latent.host_view()), w = to_floats(proj.host_view());
  Tensor out({nb, nh, S, E}, DType::f32, DeviceType::cpu);
  float* o = out.host_as<float>();
  parallel_for(nb * S, [&](int64_t bs) {
    const int64_t b = bs / S, s = bs % S;
    const float* x = lat.data() + (b * S + s) * L;
    for (int64_t h = 0; h < nh; ++h) {
      float* dst = o + ((b * nh + h) * S + s) * E;
      std::fill(dst, dst + E, 0.f);
      for (int64_t l = 0; l < L; ++l) {
        const float xl = x[l];
        const float* wr = w.data() + (h * L + l) * E;
        for (int64_t e = 0; e < E; ++e) dst[e] += xl * wr[e];
      }
    }
  });
  return out;
}

int main(int argc, char** argv) {
  int64_t B, H, S, D, L, block;
  std::string part, decode_cases;
  bool non_causal = false;
  Cli cli("mla_attention", "multi-head latent attention: the chapter's MLA and DeepSeek-V3 decode");
  cli.flag(&part, "--part", {"both"}, "prefill, decode or both");
  cli.flag(&B, "--batch,-b", {4, 1, 2}, "prefill: batch size");
  cli.flag(&H, "--heads", {32, 8, 3}, "prefill: heads");
  cli.flag(&S, "--seqlen,-s", {4096, 512, 33}, "prefill: sequence length");
  cli.flag(&D, "--headdim,-d", {128, 64, 32}, "prefill: head dim (of q, K and V)");
  cli.flag(&L, "--latent", {512, 128, 48}, "prefill: latent dim");
  cli.flag(&non_causal, "--non-causal", "prefill: no causal mask");
  cli.flag(&decode_cases, "--decode-cases",
           {"128x8192h128,64x4096h128,64x4096h128q2,32x4096h16,4x32768h16", "4x512h16,2x1024h16q2", "2x70h4,1x33h4q2"},
           "decode sweep: BxL[hH][qQ] = batch x cached tokens, H query heads (128), Q new tokens (1)");
  cli.flag(&block, "--block-size", {64}, "decode: tokens per cache page");
  Env env = cli.parse(argc, argv, DType::bf16);
  if (part != "both" && part != "prefill" && part != "decode") usage_error(env, "--part must be prefill, decode or both");
  std::vector<Case> cases;
  try {
    cases = parse_cases(decode_cases);
  } catch (const std::exception& e) {
    usage_error(env, e.what());
  }
  Table table(env);

  // ---- 1. Prefill: the chapter's MLA, with MHA of the same shape as the reference point. ------
  if (part != "decode") {
    const bool causal = !non_causal;
    Tensor q = env.random({B, H, S, D});
    Tensor k_latent = env.random({B, S, L}), v_latent = env.random({B, S, L});
    // Projections scaled by 1/√L so the expanded K and V have unit variance.
    Tensor k_proj = env.random({H, L, D}, 1.0 / std::sqrt(double(L)));
    Tensor v_proj = env.random({H, L, D}, 1.0 / std::sqrt(double(L)));
    Tensor out = env.empty({B, H, S, D});
    const std::string shape = fmt("B%lld H%lld S%lld D%lld L%lld%s", (long long)B, (long long)H, (long long)S,
                                  (long long)D, (long long)L, causal ? " causal" : "");
    const double attn_flops = 4.0 * B * H * S * S * D * (causal ? 0.5 : 1.0);
    const double esize = cuattn::dtype_size(env.dtype);

    cuattn::MlaArgs a;
    a.q = q.view(), a.k_latent = k_latent.view(), a.v_latent = v_latent.view();
    a.k_proj = k_proj.view(), a.v_proj = v_proj.view(), a.out = out.view();
    a.causal = causal;
    Row& mla = table.add("mla_attention", shape);
    mla.flops = attn_flops + 2.0 * B * S * L * H * (D + D);
    mla.set("cache / token", bytes_str(2 * L * esize));
    table.run(mla, {&out}, [&] { cuattn::mla_attention(a, env.stream); });

    // MHA with K and V given per head: the same attention without the expansion, and the cache
    // it would need.
    Tensor k = env.random({B, H, S, D}), v = env.random({B, H, S, D});
    Tensor out_mha = env.empty({B, H, S, D});
    cuattn::AttentionArgs m;
    m.q = q.view(), m.k = k.view(), m.v = v.view(), m.out = out_mha.view();
    m.causal = causal;
    m.layout = cuattn::Layout::bhsd;
    Row& mha = table.add("mha (K, V per head)", shape);
    mha.flops = attn_flops;
    mha.set("cache / token", bytes_str(2 * H * D * esize));
    table.run(mha, {&out_mha}, [&] { cuattn::attention(m, env.stream); });

    if (env.check) {
      // Oracle: expand the latents on the host, then the CPU backend's dense attention.
      const Slice slice = choose_slice(B, H, S, S, D, 1);
      table.check(mla, [&] {
        Tensor kx = expand_latent(k_latent, k_proj, slice.batches, slice.kv_heads);
        Tensor vx = expand_latent(v_latent, v_proj, slice.batches, slice.kv_heads);
        cuattn::AttentionArgs host = m;
        host.q = q.host_view(), host.k = kx.host_view(), host.v = vx.host_view();
        Tensor want = oracle_attention(host, slice);
        return compare_slice(out, want, cuattn::Layout::bhsd, 1, slice, env);
      });
      table.check(mha, [&] {
        cuattn::AttentionArgs host = m;
        host.q = q.host_view(), host.k = k.host_view(), host.v = v.host_view();
        Tensor want = oracle_attention(host, slice);
        return compare_slice(out_mha, want, cuattn::Layout::bhsd, 1, slice, env);
      });
    }
  }

  // ---- 2. Decode: DeepSeek-V3 over a paged latent cache. ---------------------------------------
  if (part != "prefill") {
    constexpr int64_t kDk = 576, kDv = 512;  // 512 latent + 64 rope; V = the first 512
    // DeepSeek-V3: softmax scale = mscale² / √(qk_head_dim = 192), mscale = 0.1 ln(40) + 1 (YaRN).
    const double mscale = 0.1 * std::log(40.0) + 1.0;
    const double scale = mscale * mscale / std::sqrt(192.0);
    for (const Case& c : cases) {
      const int64_t Bd = c.batch, Ld = c.len, Hq = c.get('h', 128), T = c.get('q', 1);
      if (T < 1 || T > Ld) usage_error(env, "decode cases need 1 <= Q <= L");
      const int64_t blocks = (Ld + block - 1) / block, N = Bd * blocks;
      const std::string shape = fmt("B%lld L%lld Hq%lld%s bs%lld", (long long)Bd, (long long)Ld, (long long)Hq,
                                    T > 1 ? fmt(" q%lld", (long long)T).c_str() : "", (long long)block);
      Tensor cache = env.random({N, block, kDk});
      Tensor block_table = env.zeros({Bd, blocks}, DType::i32), seq_lens = env.zeros({Bd}, DType::i32);
      const std::vector<int32_t> pages = env.permutation(N);
      std::copy(pages.begin(), pages.end(), block_table.host_as<int32_t>());
      std::fill(seq_lens.host_as<int32_t>(), seq_lens.host_as<int32_t>() + Bd, int32_t(Ld));
      block_table.upload(env.stream), seq_lens.upload(env.stream);
      Tensor q = env.random({Bd, T, Hq, kDk});
      Tensor out = env.empty({Bd, T, Hq, kDv}), out_plan = env.empty({Bd, T, Hq, kDv});

      cuattn::MlaDecodeArgs a;
      a.q = q.view(), a.kv_cache = cache.view(), a.block_table = block_table.view();
      a.seq_lens = seq_lens.view(), a.out = out.view();
      a.scale = scale;
      a.head_dim_v = int(kDv);
      const double flops = 2.0 * Bd * Hq * T * Ld * (kDk + kDv);
      const double bytes = double(Bd) * Ld * kDk * cuattn::dtype_size(env.dtype);
      // Compute-bound when the arithmetic intensity is above the device's ridge point.
      const Bound bound = env.cuda() && flops / bytes > env.peak_tflops * 1e3 / env.copy_gbps
                              ? Bound::compute : Bound::memory;

      Row& dec = table.add("mla_decode", shape);
      dec.flops = flops, dec.bytes = bytes, dec.bound = bound;
      dec.set("cache / token", bytes_str(double(kDk * cuattn::dtype_size(env.dtype))));
      table.run(dec, {&out}, [&] { cuattn::mla_decode(a, env.stream); });

      Row& planned = table.add("mla_decode + plan", shape);
      planned.flops = flops, planned.bytes = bytes, planned.bound = bound;
      planned.set("cache / token", bytes_str(double(kDk * cuattn::dtype_size(env.dtype))));
      std::shared_ptr<cuattn::DecodePlan> plan;
      cuattn::MlaDecodeArgs ap = a;
      ap.out = out_plan.view();
      try {
        cuattn::PlanOptions opt;
        opt.num_heads_q = int(Hq), opt.num_heads_kv = 1, opt.head_dim = int(kDk), opt.head_dim_v = int(kDv);
        opt.page_size = int(block), opt.seqlen_q = int(T), opt.device = env.device;
        plan = cuattn::plan_decode(seq_lens.host_as<int32_t>(), int(Bd), opt);
        ap.plan = plan.get();
        planned.note = fmt("%d split(s) of %d tokens", plan->max_splits, plan->chunk_tokens);
        table.run(planned, {&out_plan}, [&] { cuattn::mla_decode(ap, env.stream); });
      } catch (const std::exception& e) {
        planned.error = std::string("plan_decode: ") + e.what();
      }

      if (env.check) {
        // Oracle: the latent cache gathered on the host into a dense one-head K [L, 1, 576] per
        // sequence, V = its first 512 columns, then the CPU backend's dense attention.
        const int64_t nb = check_count(Bd, 2.0 * Hq * T * Ld * (kDk + kDv));
        TensorView k_view = cache.host_view({N, block, 1, kDk}), v_view = k_view;
        v_view.shape[3] = kDv;  // V: the first 512 columns of the same memory
        Tensor want;
        std::string oracle_error;
        try {
          want = oracle_paged(q.host_view(), k_view, v_view, block_table, seq_lens, nb, 1.0, 1.0, scale);
        } catch (const std::exception& e) {
          oracle_error = e.what();
        }
        auto compare_out = [&](Tensor& t) {
          if (!oracle_error.empty()) throw cuattn::Error(oracle_error);
          t.download(env.stream);
          CheckResult r = compare(to_floats(narrow(t.host_view(), 0, 0, nb)), to_floats(want.host_view()), env.dtype);
          if (nb < Bd) r.note = fmt("checked: first %lld sequences", (long long)nb);
          return r;
        };
        table.check(dec, [&] { return compare_out(out); });
        table.check(planned, [&] { return compare_out(out_plan); });
      }
    }
  }

  table.footnote("cache / token: bytes cached per token and layer (MLA: two latents of L; MHA: K "
                 "and V of every head). DeepSeek-V3 caches 576 values per token for 128 heads.");
  table.footnote("ANCHORS (H100): MLA decode >= 2700 GB/s when memory-bound, >= 500 TFLOP/s at "
                 "B128 L8192 H128 s_q 1 (FlashMLA: 580-660 on H800).");
  return table.print();
}
