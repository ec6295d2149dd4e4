// mla_attention — multi-head latent attention (DeepSeek). Keys and values are cached as one small
// latent vector per token instead of Hkv heads of K and V, and expanded by per-head projections.
// Three parts, each a table:
//
//   cache   KV-cache bytes per token and layer of real models: MHA/GQA (2·Hkv·D values) against
//           MLA (latent L + rope R values: DeepSeek-V2/V3 cache 512 + 64 = 576), worked out.
//   forms   cuattn::mla_attention, out[b,h] = softmax(q[b,h] (Kl[b] Kp[h])ᵀ · scale) (Vl[b] Vp[h]),
//           q [B, H, Sq, D], latents [B, Sk, L], projections [H, L, D], in its three exact orders:
//             per_pair     re-projects the key's latents for every (query, key) pair: L·(D+Dv)
//                          multiply-adds a pair instead of D+Dv (the textbook kernel; GPU only)
//             materialise  K_h = Kl Kp[h], V_h = Vl Vp[h] once, then flash attention
//             absorb       q' = q Kp[h]ᵀ, attention over the shared latents, out = o' Vp[h]
//           timed side by side, with each one's speed-up over per_pair and the order the library
//           picks by itself (cuattn::mla_method). per_pair is first timed on a slice and skipped
//           when the whole case would take longer than --per-pair-cap.
//   decode  cuattn::mla_decode (DeepSeek-V3: all Hq query heads attend over one paged latent
//           cache of 576 columns, V = the first 512; scale mscale²/√192) over batch × context ×
//           heads, 16-bit and fp8 caches: time, GB/s of the cache read, TFLOP/s, and both against
//           the device's ceilings (the copy rate measured at start, the tensor peak computed from
//           the device properties).
//
//   ./mla_attention                                  every part at the default GPU sizes
//   ./mla_attention --part decode --decode-heads 128 --decode-batch 64,128 --cache-dtype same
//   ./mla_attention --part forms --forms 1x4096h32 --per-pair-cap 60
//   ./mla_attention --check --device cpu --small
//
// FLOPs: forms 2·B·Sk·H·L·(D+Dv) to expand the latents + 2·(D+Dv) per visible (query, key) pair
// and head (the materialised order's count, credited to every order so rates compare like times);
// decode 2·B·Hq·Sq·L·(576+512). Decode bytes = the latent cache read once.
#include <algorithm>
#include <cmath>

#include "harness.h"

using namespace harness;

namespace {

constexpr int64_t kDk = 576, kDv = 512;  // DeepSeek's cache: 512 latent + 64 rope; V = the first 512

// ---- 1. cache ----------------------------------------------------------------------------------

// One model's cache: per token and layer either K and V of heads_kv heads of head_dim, or one
// latent of `latent` + `rope` values (heads_kv = 0).
struct CacheModel {
  const char* model;
  const char* attention;
  int64_t layers, heads_kv, head_dim, latent, rope;
  int64_t values() const { return heads_kv > 0 ? 2 * heads_kv * head_dim : latent + rope; }
};

void cache_part(Table& table) {
  // Published configurations. "as MHA" is the same model with K and V of every head cached
  // (value head dim 128), what MLA replaces.
  const CacheModel models[] = {
      {"DeepSeek-V3 (671B)", "MLA 512 + 64", 61, 0, 0, 512, 64},
      {"DeepSeek-V3 (671B)", "as MHA, 128 heads x 128", 61, 128, 128, 0, 0},
      {"DeepSeek-V2 (236B)", "MLA 512 + 64", 60, 0, 0, 512, 64},
      {"DeepSeek-V2-Lite (16B)", "MLA 512 + 64", 27, 0, 0, 512, 64},
      {"DeepSeek-V2-Lite (16B)", "as MHA, 16 heads x 128", 27, 16, 128, 0, 0},
      {"Llama-3.1-8B", "GQA 32/8 x 128", 32, 8, 128, 0, 0},
      {"Llama-3.1-70B", "GQA 64/8 x 128", 80, 8, 128, 0, 0},
      {"Llama-3.1-405B", "GQA 128/8 x 128", 126, 8, 128, 0, 0},
  };
  std::vector<std::vector<std::string>> rows;
  for (const CacheModel& m : models) {
    const int64_t v = m.values();
    rows.push_back({m.model, m.attention, std::to_string(v), bytes_str(2.0 * v), bytes_str(1.0 * v),
                    std::to_string(m.layers), bytes_str(2.0 * v * m.layers),
                    bytes_str(2.0 * v * m.layers * 131072), fmt("%.1fx", double(v) / double(kDk))});
  }
  table.facts("KV cache per token (values and bytes per layer; bf16 = 2 bytes a value, fp8 = 1)",
              {"model", "cached per layer", "values", "bf16", "fp8", "layers", "bf16, all layers",
               "128k tokens, bf16", "vs 576 values"},
              rows, 2);
}

// ---- 2. forms ----------------------------------------------------------------------------------

// Times fn with `iters` runs after `warmup` (the run's settings are restored afterwards).
double time_with(Env& env, int iters, int warmup, const std::function<void()>& fn) {
  const int saved_iters = env.iters, saved_warmup = env.warmup;
  env.iters = iters, env.warmup = warmup;
  try {
    const double ms = env.time_ms(fn);
    env.iters = saved_iters, env.warmup = saved_warmup;
    return ms;
  } catch (...) {
    env.iters = saved_iters, env.warmup = saved_warmup;
    throw;
  }
}

const char* method_name(cuattn::MlaMethod m) {
  switch (m) {
    case cuattn::MlaMethod::per_pair: return "per_pair";
    case cuattn::MlaMethod::materialise: return "materialise";
    case cuattn::MlaMethod::absorb: return "absorb";
    default: return "automatic";
  }
}

// The slice --check compares: choose_slice bounds the attention, and the host expansion of the
// latents (every key of the checked batches and heads) is bounded here too.
Slice mla_slice(int64_t B, int64_t H, int64_t Sq, int64_t Sk, int64_t L, int64_t D, const Mask& mask) {
  Slice s = choose_slice(B, H, Sq, Sk, D, 1, mask);
  auto expand_cost = [&] { return 4.0 * double(s.batches * s.kv_heads) * double(Sk) * double(L) * double(D); };
  while (expand_cost() > 2e9 && s.kv_heads > 1) s.kv_heads = std::max<int64_t>(1, s.kv_heads / 2);
  while (expand_cost() > 2e9 && s.batches > 1) s.batches = std::max<int64_t>(1, s.batches / 2);
  s.whole = s.batches == B && s.kv_heads == H && s.rows == Sq;
  return s;
}

struct FormsOptions {
  int64_t L, D, per_pair_cap_s;
  bool causal;
};

void forms_case(Env& env, Table& table, const Case& c, const FormsOptions& o) {
  const int64_t B = c.batch, Sk = c.len, H = c.get('h', 32), Sq = c.get('q', Sk), L = o.L, D = o.D;
  const std::string shape = fmt("B%lld H%lld Sq%lld Sk%lld L%lld D%lld%s", (long long)B, (long long)H, (long long)Sq,
                                (long long)Sk, (long long)L, (long long)D, o.causal ? " causal" : "");
  Tensor q = env.random({B, H, Sq, D});
  Tensor k_latent = env.random({B, Sk, L}), v_latent = env.random({B, Sk, L});
  // Projections scaled by 1/√L so that the expanded K and V have unit variance.
  Tensor k_proj = env.random({H, L, D}, 1.0 / std::sqrt(double(L)));
  Tensor v_proj = env.random({H, L, D}, 1.0 / std::sqrt(double(L)));
  Mask mask;
  mask.causal = o.causal;
  const double pairs = visible_pairs(Sq, Sk, mask);  // per (batch, head)
  const double flops = 2.0 * B * Sk * H * L * (D + D) + 2.0 * (D + D) * B * H * pairs;

  cuattn::MlaArgs base;
  base.q = q.view(), base.k_latent = k_latent.view(), base.v_latent = v_latent.view();
  base.k_proj = k_proj.view(), base.v_proj = v_proj.view();
  base.causal = o.causal;
  struct Form {
    cuattn::MlaMethod method;
    Row* row;
    Tensor out;
  };
  std::vector<Form> forms;
  for (cuattn::MlaMethod m : {cuattn::MlaMethod::per_pair, cuattn::MlaMethod::materialise, cuattn::MlaMethod::absorb}) {
    Row& r = table.add(method_name(m), shape);
    r.flops = flops;
    forms.push_back({m, &r, env.empty({B, H, Sq, D})});
  }
  try {  // the order the library takes by itself
    cuattn::MlaArgs a = base;
    a.out = forms[0].out.view();
    const char* chosen = method_name(cuattn::mla_method(a));
    for (Form& f : forms) f.row->set("automatic", chosen == std::string(method_name(f.method)) ? "chosen" : "");
  } catch (const std::exception& e) {
    forms[0].row->error = std::string("mla_method: ") + e.what();
  }
  for (Form& f : forms) {
    cuattn::MlaArgs a = base;
    a.out = f.out.view();
    a.method = f.method;
    auto call = [&] { cuattn::mla_attention(a, env.stream); };
    if (f.method != cuattn::MlaMethod::per_pair) {
      table.run(*f.row, {&f.out}, call);
      continue;
    }
    if (!env.cuda()) {
      f.row->note = "not on the CPU (its backend has no per-pair order)";
      continue;
    }
    // Estimate first: the last (up to) 64 query rows over the first (up to) 512 keys, without
    // the mask, timed once and scaled by the visible pairs. Same batches and heads, so the grid
    // (one CTA per query, head and batch) is as full as the whole case's.
    const int64_t sq = std::min<int64_t>(Sq, 64), sk = std::min<int64_t>(Sk, 512);
    cuattn::MlaArgs e = a;
    e.q = narrow(q.view(), 2, Sq - sq, sq), e.out = narrow(f.out.view(), 2, Sq - sq, sq);
    e.k_latent = narrow(k_latent.view(), 1, 0, sk), e.v_latent = narrow(v_latent.view(), 1, 0, sk);
    e.causal = false;
    double est_s = 0;
    try {
      est_s = time_with(env, 1, 1, [&] { cuattn::mla_attention(e, env.stream); }) * 1e-3 * pairs / double(sq * sk);
    } catch (const std::exception& ex) {
      f.row->error = std::string("estimate: ") + ex.what();
      continue;
    }
    if (est_s > double(o.per_pair_cap_s)) {
      f.row->note = fmt("skipped (too slow: est. %.1f s; --per-pair-cap %lld)", est_s, (long long)o.per_pair_cap_s);
      fprintf(env.text, "  %-24s %-32s %s\n", f.row->variant.c_str(), shape.c_str(), f.row->note.c_str());
      continue;
    }
    if (est_s > 0.2) {  // slow: one timed run, no warm-up
      f.row->note = fmt("timed once (est. %.1f s)", est_s);
      table.measure(*f.row, {&f.out}, [&] { return time_with(env, 1, 0, call); });
    } else {
      table.run(*f.row, {&f.out}, call);
    }
  }
  const Row& per_pair = *forms[0].row;
  for (Form& f : forms)
    if (per_pair.ms > 0 && f.row->ms > 0 && &per_pair != f.row) f.row->set("vs per_pair", fmt("%.1fx", per_pair.ms / f.row->ms));

  if (env.check) {
    // Reference: the latents expanded on the host in float64, then dense attention.
    const Slice slice = mla_slice(B, H, Sq, Sk, L, D, mask);
    auto bshd = [](const Tensor& t) { return transpose(t.host_view(), 1, 2); };
    std::vector<double> want;  // computed once, by the first check that needs it
    for (Form& f : forms)
      table.check(*f.row, [&] {
        if (want.empty()) {
          const Tensor kx = reference_expand(k_latent.host_view(), k_proj.host_view(), slice.batches, slice.kv_heads);
          const Tensor vx = reference_expand(v_latent.host_view(), v_proj.host_view(), slice.batches, slice.kv_heads);
          want = reference_attention(bshd(q), kx.host_view(), vx.host_view(), mask, -1, slice);
        }
        return compare_slice(f.out, true, want, 1, slice, env);
      });
  }
}

// ---- 3. decode ---------------------------------------------------------------------------------

struct DecodeOptions {
  std::vector<int64_t> batches, lens, heads;
  int64_t new_tokens, block;
  std::string cache_dtype;  // both | same | fp8
};

void decode_sweep(Env& env, Table& table, const DecodeOptions& o) {
  // DeepSeek-V3: softmax scale = mscale² / √(qk_head_dim = 192), mscale = 0.1 ln(40) + 1 (YaRN).
  const double mscale = 0.1 * std::log(40.0) + 1.0;
  const double scale = mscale * mscale / std::sqrt(192.0);
  std::vector<DType> kv_dtypes;
  if (o.cache_dtype != "fp8") kv_dtypes.push_back(env.dtype);
  if (o.cache_dtype != "same") kv_dtypes.push_back(DType::fp8_e4m3);
  const int64_t T = o.new_tokens, P = o.block;
  for (int64_t Hq : o.heads)
    for (int64_t L : o.lens)
      for (int64_t B : o.batches) {
        const std::string shape = fmt("B%lld L%lld Hq%lld%s bs%lld", (long long)B, (long long)L, (long long)Hq,
                                      T > 1 ? fmt(" q%lld", (long long)T).c_str() : "", (long long)P);
        // The cache refused before its page table is made (a table of billions of pages is slow).
        const int64_t pages = B * ((L + P - 1) / P);
        const double cache_bytes = shape_bytes({pages, P, kDk}, kv_dtypes.front());
        require_memory(cache_bytes, env.cuda() ? cache_bytes : 0, "the latent cache");
        const PageTable pt = make_page_table(env, B, L, P);
        Tensor q = env.random({B, T, Hq, kDk});
        const double flops = 2.0 * B * Hq * T * L * (kDk + kDv);
        const Row* first = nullptr;  // the 16-bit cache's row, for the fp8 speed-up
        for (DType kv : kv_dtypes) {
          const bool fp8 = kv == DType::fp8_e4m3;
          // fp8 stores x / scale: values of unit size stored 16x larger use more of e4m3's range.
          const double kv_scale = fp8 ? 1.0 / 16 : 1.0;
          Tensor cache = env.random({pt.pages, P, kDk}, kv, 1.0 / kv_scale);
          Tensor out = env.empty({B, T, Hq, kDv});
          cuattn::MlaDecodeArgs a;
          a.q = q.view(), a.kv_cache = cache.view(), a.block_table = pt.block_table.view();
          a.seq_lens = pt.seq_lens.view(), a.out = out.view();
          a.scale = scale, a.kv_scale = kv_scale;
          a.head_dim_v = int(kDv);

          Row& r = table.add(fp8 ? "mla_decode fp8" : "mla_decode", shape);
          r.flops = flops, r.bytes = double(B) * L * kDk * cuattn::dtype_size(kv);
          // Compute-bound when the arithmetic intensity is above the device's ridge point.
          r.bound = env.cuda() && flops / r.bytes > env.peak_tflops * 1e3 / env.copy_gbps ? Bound::compute : Bound::memory;
          if (table.run(r, {&out}, [&] { cuattn::mla_decode(a, env.stream); }) && env.cuda()) {
            const double s = r.ms * 1e-3;
            r.set("of copy", fmt("%.2f", r.bytes / s / 1e9 / env.copy_gbps));
            r.set("of tensor peak", fmt("%.2f", flops / s / 1e12 / env.peak_tflops));
          }
          if (fp8 && first && first->ms > 0 && r.ms > 0) r.set("fp8 speed-up", fmt("%.2fx", first->ms / r.ms));
          if (!fp8) first = &r;

          if (env.check) {
            // Reference: each sequence's pages gathered on the host into a one-head K [L, 1, 576],
            // V = its first 512 columns, then float64 attention (the first sequences when large).
            const int64_t nb = check_count(B, 2.0 * Hq * T * L * (kDk + kDv));
            TensorView k_view = cache.host_view({pt.pages, P, 1, kDk}), v_view = k_view;
            v_view.shape[3] = kDv;  // V: the first 512 columns of the same memory
            table.check(r, [&] {
              const std::vector<double> want = reference_paged(q.host_view(), k_view, v_view, pt.block_table, pt.seq_lens,
                                                               nb, kv_scale, kv_scale, scale);
              return compare_first(out, out.shape, nb, want, env);
            });
          }
        }
      }
}

int run(int argc, char** argv) {
  std::string part, cache_dtype;
  std::vector<Case> forms;
  FormsOptions fo;
  bool non_causal = false;
  DecodeOptions d;
  Cli cli("mla_attention", "multi-head latent attention: cache size, the three exact orders, DeepSeek-V3 decode");
  cli.flag(&part, "--part", {"all"}, {"all", "cache", "forms", "decode"}, "which part to run");
  cli.flag(&forms, "--forms", {"1x4096h32,1x1024h16,4x4096h16q1,1x32768h32q1", "1x256h4,2x512h4q1", "1x33h3,2x20h2q1"},
           {{1, kMaxBatch}, {1, kMaxLen}, {{'h', {1, kMaxHeads}}, {'q', {1, kMaxLen}}}},
           "forms: batch x keys, h heads (32), q queries (as many as keys)");
  cli.flag(&fo.L, "--latent", {512, 128, 48}, {1, 8192}, "forms: latent dim");
  cli.flag(&fo.D, "--headdim,-d", {128, 64, 32}, kHeadDims, "forms: head dim (of q, K and V)");
  cli.flag(&non_causal, "--non-causal", "forms: no causal mask");
  cli.flag(&fo.per_pair_cap_s, "--per-pair-cap", {5}, {0, 86400},
           "forms: skip per_pair where its estimated time exceeds this many seconds");
  cli.flag(&d.batches, "--decode-batch", {"1,16,64,128", "1,4", "1,2"}, {1, kMaxBatch}, "decode: batch sizes");
  cli.flag(&d.lens, "--decode-len", {"4096,8192,32768", "256,1024", "33,130"}, {1, kMaxLen},
           "decode: cached tokens per sequence");
  cli.flag(&d.heads, "--decode-heads", {"16,128", "16,128", "4,16"}, {1, kMaxHeads}, "decode: query heads");
  cli.flag(&d.new_tokens, "--new-tokens,-q", {1}, {1, 8}, "decode: new tokens per sequence");
  cli.flag(&d.block, "--block-size", {64}, {1, kMaxPage}, "decode: tokens per cache page");
  cli.flag(&d.cache_dtype, "--cache-dtype", {"both"}, {"both", "same", "fp8"},
           "decode: the cache in q's dtype (same), fp8 e4m3, or both");
  Env env = cli.parse(argc, argv, DType::bf16);
  fo.causal = !non_causal;
  for (int64_t L : d.lens)
    if (d.new_tokens > L)
      usage_error(fmt("--new-tokens %lld exceeds the cached tokens %lld (--decode-len)", (long long)d.new_tokens,
                      (long long)L));
  Table table(env);

  if (part == "all" || part == "cache") cache_part(table);
  if (part == "all" || part == "forms")
    for (const Case& c : forms) forms_case(env, table, c, fo);
  if (part == "all" || part == "decode") decode_sweep(env, table, d);

  if (part == "all" || part == "forms") {
    table.footnote("forms: TFLOP/s credit every order with the materialised order's FLOPs, so the rates "
                   "compare like the times; 'automatic' marks the order cuattn::mla_method picks "
                   "(fewer FLOPs). per_pair is estimated from one timed run on the last 64 query rows "
                   "over the first 512 keys, scaled by the visible (query, key) pairs.");
  }
  if (part == "all" || part == "decode") {
    table.footnote("decode: GB/s count the latent cache read once (B·L·576·bytes per value); TFLOP/s "
                   "2·B·Hq·Sq·L·(576+512). 'of copy': of the device-to-device copy rate measured at "
                   "start (read + write); 'of tensor peak': of SMs x clock x dense bf16 flop/clk, "
                   "computed from the device properties, not measured.");
    table.footnote("for comparison, FlashMLA's dense decode on an H200 (bf16, page 64): 3153-3821 GB/s at "
                   "Hq 16, B64-128, L 4k-8k; 580-584 TFLOP/s at Hq 128 (a bf16 GEMM: 702).");
  }
  return table.print();
}

}  // namespace

int main(int argc, char** argv) { return guarded(argc, argv, run); }
