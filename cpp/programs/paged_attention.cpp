// paged_attention — decode over a vLLM-style paged KV cache. The cache is a pool of pages of
// `page_size` tokens; each sequence owns a list of page ids (its block-table row), here in random
// order, as a serving engine's allocator leaves them. Decode is memory-bound: every step reads
// each sequence's K and V once, so the figure of merit is GB/s against the copy bandwidth.
//
//   ./paged_attention                      the decode cases below + a page-size sweep (GPU)
//   ./paged_attention --cases 64x4096p16 --fp8
//   ./paged_attention --check --device cpu --small
//
// Rows per case: paged attention without a plan (splits chosen from shapes), with a DecodePlan
// (host-side schedule from the real lengths), and the baseline that first gathers the pages into
// a dense [B, L, Hkv, D] tensor and then runs dense attention (what plain PyTorch does). The
// gather is one cuattn::append_paged_kv call that scatters every cached token into a dense
// tensor seen as a cache of one-token pages.
// Bytes = K and V read once: B·L·Hkv·D·2·sizeof(kv).
#include <algorithm>
#include <memory>

#include "harness.h"

using namespace harness;

static int run(int argc, char** argv) {
  int64_t Hq, Hkv, D, Sq;
  std::vector<Case> cases;
  bool fp8 = false, no_gather = false;
  Cli cli("paged_attention", "decode over a paged KV cache vs gathering the pages first");
  cli.flag(&Hq, "--heads", {32, 8, 4}, {1, kMaxHeads}, "query heads");
  cli.flag(&Hkv, "--kv-heads", {8, 2, 2}, {1, kMaxHeads}, "kv heads");
  cli.flag(&D, "--headdim,-d", {128, 128, 64}, kHeadDims, "head dim");
  cli.flag(&Sq, "--new-tokens,-q", {1}, {1, kMaxLen}, "query tokens per sequence (1: decode; more: causal among them)");
  cli.flag(&cases, "--cases",
           {"1x32768p16,16x8192p16,64x4096p16,256x2048p16,64x4096p8,64x4096p32,64x4096p64,64x4096p128",
            "1x2048p16,4x1024p16,8x512p16,8x512p64", "1x100p16,3x37p4q3,2x64p8"},
           {{1, kMaxBatch}, {1, kMaxLen}, {{'p', {1, kMaxPage}}, {'q', {1, kMaxLen}}}},
           "sweep: batch x context length, page size p (16), q new tokens (--new-tokens)");
  cli.flag(&fp8, "--fp8", "fp8 e4m3 KV cache (per-tensor k/v scales)");
  cli.flag(&no_gather, "--no-gather", "skip the gather + dense attention baseline");
  Env env = cli.parse(argc, argv, DType::bf16);
  if (Hq % Hkv != 0) usage_error(fmt("--heads (%lld) must be a multiple of --kv-heads (%lld)", (long long)Hq, (long long)Hkv));
  for (const Case& c : cases)
    if (c.get('q', Sq) > c.len)
      usage_error(fmt("--cases: %lld new tokens (q, --new-tokens) exceed the context length %lld", (long long)c.get('q', Sq),
                      (long long)c.len));

  const DType kv_dtype = fp8 ? DType::fp8_e4m3 : env.dtype;
  // fp8 stores x / scale: keys and values of unit size stored 16x larger use more of e4m3's range.
  const double kv_scale = fp8 ? 1.0 / 16 : 1.0;
  Table table(env);

  for (const Case& c : cases) {
    const int64_t B = c.batch, L = c.len, P = c.get('p', 16), T = c.get('q', Sq);
    const int64_t blocks = (L + P - 1) / P, N = B * blocks;  // pages: per sequence, in all
    const std::string shape = fmt("B%lld L%lld P%lld H%lld/%lld D%lld%s", (long long)B, (long long)L,
                                  (long long)P, (long long)Hq, (long long)Hkv, (long long)D,
                                  T > 1 ? fmt(" q%lld", (long long)T).c_str() : "");

    // The cache: N pages in random order over the sequences.
    Tensor k_cache = env.random({N, P, Hkv, D}, kv_dtype, 1.0 / kv_scale);
    Tensor v_cache = env.random({N, P, Hkv, D}, kv_dtype, 1.0 / kv_scale);
    const PageTable pt = make_page_table(env, B, L, P);
    const Tensor &block_table = pt.block_table, &seq_lens = pt.seq_lens;

    const Shape q_shape = T == 1 ? Shape{B, Hq, D} : Shape{B, T, Hq, D};
    Tensor q = env.random(q_shape);
    Tensor out = env.empty(q_shape), out_plan = env.empty(q_shape);
    const double bytes = 2.0 * B * L * Hkv * D * cuattn::dtype_size(kv_dtype);

    cuattn::PagedArgs a;
    a.q = q.view(), a.k_cache = k_cache.view(), a.v_cache = v_cache.view();
    a.block_table = block_table.view(), a.seq_lens = seq_lens.view(), a.out = out.view();
    a.k_scale = a.v_scale = kv_scale;
    a.causal = true;

    // 1. Paged, splits chosen from the shapes (no host work, no sync).
    Row& paged = table.add("paged", shape);
    paged.bytes = bytes, paged.bound = Bound::memory;
    table.run(paged, {&out}, [&] { cuattn::paged_attention(a, env.stream); });

    // 2. Paged with a DecodePlan made on the host from the real lengths.
    Row& planned = table.add("paged + plan", shape);
    planned.bytes = bytes, planned.bound = Bound::memory;
    std::shared_ptr<cuattn::DecodePlan> plan;
    cuattn::PagedArgs ap = a;
    ap.out = out_plan.view();
    try {
      cuattn::PlanOptions opt;
      opt.num_heads_q = int(Hq), opt.num_heads_kv = int(Hkv), opt.head_dim = int(D);
      opt.page_size = int(P), opt.seqlen_q = int(T), opt.device = env.device;
      plan = cuattn::plan_decode(seq_lens.host_as<int32_t>(), int(B), opt);
      ap.plan = plan.get();
      planned.note = fmt("%d split(s) of %d tokens", plan->max_splits, plan->chunk_tokens);
      table.run(planned, {&out_plan}, [&] { cuattn::paged_attention(ap, env.stream); });
    } catch (const std::exception& e) {
      planned.error = std::string("plan_decode: ") + e.what();
    }

    // 3. Baseline: gather the pages into dense K/V [B, L, Hkv, D], then dense attention.
    //    The dense tensor is a cache of B·L one-token pages; token j of sequence b, cached at
    //    row page·P + slot of the paged cache, goes to dense row b·L + j.
    Row* gathered = nullptr;
    Tensor out_dense;
    // The dense copies (K, V, one slot index per cached token, the output) may not fit where the
    // paged cache does: then the baseline is skipped with a note.
    const double dense_bytes = 2.0 * B * L * Hkv * D * cuattn::dtype_size(kv_dtype) + 8.0 * N * P + double(out.bytes());
    std::string no_room;
    try {
      require_memory(dense_bytes, env.cuda() ? dense_bytes : 0, "the gather baseline's dense copies");
    } catch (const TooLarge& e) {
      no_room = e.what();
    }
    if (!no_gather && !fp8 && !no_room.empty()) table.add("gather + attention", shape).note = "skipped: " + no_room;
    if (!no_gather && !fp8 && no_room.empty()) {
      Tensor k_dense = env.zeros({B, L, Hkv, D}, kv_dtype), v_dense = env.zeros({B, L, Hkv, D}, kv_dtype);
      Tensor slots = env.zeros({N * P}, DType::i64);
      int64_t* slot = slots.host_as<int64_t>();
      for (int64_t i = 0; i < N * P; ++i) slot[i] = -1;  // page tails beyond L: skipped
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < L; ++j) slot[pt.page(b, j / P) * P + j % P] = b * L + j;
      slots.upload(env.stream);
      cuattn::AppendArgs g;
      g.k_new = k_cache.view({N * P, Hkv, D}), g.v_new = v_cache.view({N * P, Hkv, D});
      g.k_cache = k_dense.view({B * L, 1, Hkv, D}), g.v_cache = v_dense.view({B * L, 1, Hkv, D});
      g.slot_mapping = slots.view();
      out_dense = env.empty({B, T, Hq, D});
      cuattn::AttentionArgs d;
      d.q = q.view({B, T, Hq, D}), d.k = k_dense.view(), d.v = v_dense.view(), d.out = out_dense.view();
      d.causal = true;

      gathered = &table.add("gather + attention", shape);
      gathered->bytes = bytes, gathered->bound = Bound::memory;
      gathered->extra_bytes = 2.0 * double(k_dense.bytes());
      if (table.run(*gathered, {&out_dense}, [&] {
            cuattn::append_paged_kv(g, env.stream);
            cuattn::attention(d, env.stream);
          })) {
        const double gather_ms = env.time_ms([&] { cuattn::append_paged_kv(g, env.stream); });
        gathered->set("gather (ms)", fmt("%.4f", gather_ms));
        for (Row* r : {&paged, &planned})
          if (r->ms > 0) r->set("speedup vs gather", fmt("%.2fx", gathered->ms / r->ms));
      }
    }

    // --check: every row against the float64 reference over K/V gathered on the host (the first
    // sequences when the case is large).
    if (env.check) {
      const int64_t nb = check_count(B, 4.0 * Hq * T * L * D);
      std::vector<double> want;  // computed once, by the first check that needs it
      auto compare_out = [&](Tensor& t) {
        if (want.empty())
          want = reference_paged(q.host_view({B, T, Hq, D}), k_cache.host_view(), v_cache.host_view(), block_table,
                                 seq_lens, nb, kv_scale, kv_scale);
        return compare_first(t, {B, T, Hq, D}, nb, want, env);
      };
      table.check(paged, [&] { return compare_out(out); });
      table.check(planned, [&] { return compare_out(out_plan); });
      if (gathered) table.check(*gathered, [&] { return compare_out(out_dense); });
    }
  }

  table.footnote("GB/s: K and V read once (B·L·Hkv·D·2·sizeof(kv)), the same bytes for the gather "
                 "baseline, which also writes and rereads them.");
  table.footnote("goals on an H100 (GQA 32/8, D128, bf16): >= 2600 GB/s at B1 L32768, >= 2800 at B16 L8192, "
                 "B64 L4096 and B256 L2048 (page 16), >= 2.9x a plain-PyTorch gather + SDPA.");
  if (fp8) table.footnote("--fp8: no gather baseline (dense attention takes f16/bf16 only).");
  return table.print();
}

int main(int argc, char** argv) { return guarded(argc, argv, run); }
