// mla_attention — multi-head latent attention (DeepSeek). Keys and values are cached as one small
// latent vector per token instead of H heads of K and V, and expanded by per-head projections:
//
//   prefill (cuattn::mla_attention):
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

static int run(int argc, char** argv) {
  int64_t B, H, S, D, L, block;
  std::string part;
  std::vector<Case> cases;
  bool non_causal = false;
  Cli cli("mla_attention", "multi-head latent attention: latent attention and DeepSeek-V3 decode");
  cli.flag(&part, "--part", {"both"}, {"prefill", "decode", "both"}, "which part to run");
  cli.flag(&B, "--batch,-b", {4, 1, 2}, {1, kMaxBatch}, "prefill: batch size");
  cli.flag(&H, "--heads", {32, 8, 3}, {1, kMaxHeads}, "prefill: heads");
  cli.flag(&S, "--seqlen,-s", {4096, 512, 33}, {1, kMaxLen}, "prefill: sequence length");
  cli.flag(&D, "--headdim,-d", {128, 64, 32}, kHeadDims, "prefill: head dim (of q, K and V)");
  cli.flag(&L, "--latent", {512, 128, 48}, {1, 8192}, "prefill: latent dim");
  cli.flag(&non_causal, "--non-causal", "prefill: no causal mask");
  cli.flag(&cases, "--decode-cases",
           {"128x8192h128,64x4096h128,64x4096h128q2,32x4096h16,4x32768h16", "4x512h16,2x1024h16q2", "2x70h4,1x33h4q2"},
           {{1, kMaxBatch}, {1, kMaxLen}, {{'h', {1, kMaxHeads}}, {'q', {1, kMaxLen}}}},
           "decode sweep: batch x cached tokens, h query heads (128), q new tokens (1)");
  cli.flag(&block, "--block-size", {64}, {1, kMaxPage}, "decode: tokens per cache page");
  Env env = cli.parse(argc, argv, DType::bf16);
  for (const Case& c : cases)
    if (c.get('q', 1) > c.len)
      usage_error(fmt("--decode-cases: %lld new tokens (q) exceed the cached tokens %lld", (long long)c.get('q', 1),
                      (long long)c.len));
  Table table(env);

  // ---- 1. Prefill: MLA, with MHA of the same shape as the reference point. ------
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
      // Reference: the latents expanded on the host in float64, then dense attention.
      Mask mask;
      mask.causal = causal;
      const Slice slice = choose_slice(B, H, S, S, D, 1, mask);
      auto bshd = [](const Tensor& t) { return transpose(t.host_view(), 1, 2); };
      table.check(mla, [&] {
        const Tensor kx = reference_expand(k_latent.host_view(), k_proj.host_view(), slice.batches, slice.kv_heads);
        const Tensor vx = reference_expand(v_latent.host_view(), v_proj.host_view(), slice.batches, slice.kv_heads);
        const std::vector<double> want = reference_attention(bshd(q), kx.host_view(), vx.host_view(), mask, -1, slice);
        return compare_slice(out, true, want, 1, slice, env);
      });
      table.check(mha, [&] {
        const std::vector<double> want = reference_attention(bshd(q), bshd(k), bshd(v), mask, -1, slice);
        return compare_slice(out_mha, true, want, 1, slice, env);
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
      const int64_t blocks = (Ld + block - 1) / block, N = Bd * blocks;
      const std::string shape = fmt("B%lld L%lld Hq%lld%s bs%lld", (long long)Bd, (long long)Ld, (long long)Hq,
                                    T > 1 ? fmt(" q%lld", (long long)T).c_str() : "", (long long)block);
      Tensor cache = env.random({N, block, kDk});
      const PageTable pt = make_page_table(env, Bd, Ld, block);
      const Tensor &block_table = pt.block_table, &seq_lens = pt.seq_lens;
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
        // Reference: the latent cache gathered on the host into a dense one-head K [L, 1, 576] per
        // sequence, V = its first 512 columns, then float64 attention.
        const int64_t nb = check_count(Bd, 2.0 * Hq * T * Ld * (kDk + kDv));
        TensorView k_view = cache.host_view({N, block, 1, kDk}), v_view = k_view;
        v_view.shape[3] = kDv;  // V: the first 512 columns of the same memory
        std::vector<double> want;  // computed once, by the first check that needs it
        auto compare_out = [&](Tensor& t) {
          if (want.empty()) want = reference_paged(q.host_view(), k_view, v_view, block_table, seq_lens, nb, 1.0, 1.0, scale);
          return compare_first(t, t.shape, nb, want, env);
        };
        table.check(dec, [&] { return compare_out(out); });
        table.check(planned, [&] { return compare_out(out_plan); });
      }
    }
  }

  table.footnote("cache / token: bytes cached per token and layer (MLA: two latents of L; MHA: K "
                 "and V of every head). DeepSeek-V3 caches 576 values per token for 128 heads.");
  table.footnote("goals on an H100: MLA decode >= 2700 GB/s when memory-bound, >= 500 TFLOP/s at "
                 "B128 L8192 H128 s_q 1 (FlashMLA reports 580-660 TFLOP/s on an H800).");
  return table.print();
}

int main(int argc, char** argv) { return guarded(argc, argv, run); }
