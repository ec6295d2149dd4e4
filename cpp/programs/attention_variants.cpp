// attention_variants — a comparison table of attention variants, measured: one row per attention variant,
// each with its time, throughput and what it keeps in memory per token.
//
//   dense           every query sees every key: O(S²) work, O(S) memory (scores never stored)
//   causal          keys up to the query's position: half the work, tiles above the diagonal skipped
//   sliding window  the last W+1 keys: O(S·W) work
//   block-sparse    a document mask (causal inside each document, nothing across) as a
//                   FlexAttention-style BlockMask: empty blocks skipped, full blocks unmasked,
//                   per-element bits only on partial blocks
//   GQA             Hq query heads share Hq/G kv heads: the KV cache shrinks G-fold
//   paged decode    one new token per sequence over a paged KV cache: memory-bound
//   MLA decode      DeepSeek-V3: 128 query heads over one 576-wide latent per token
//
//   ./attention_variants                       B1 H16 S16384 D128 on the GPU
//   ./attention_variants --check --device cpu --small
//
// FLOPs: 4·H·D per visible (query, key) pair; MLA 2·B·Hq·L·(576+512). Decode bytes: the cache
// read once.
#include <algorithm>
#include <cmath>

#include "harness.h"

using namespace harness;

// A FlexAttention-style block mask for a mask given per element, shared by every batch and head
// ([1, 1, ...] tensors): for each query block, the kv blocks where every element is visible
// (full: no per-element test) and those where only some are (partial: one bit per element).
struct BlockMask {
  Tensor kv_num_blocks, kv_indices, partial_ids, full_kv_num_blocks, full_kv_indices, partial_bits;
  int block_q = 0, block_kv = 0;
  int64_t len = 0, n_full = 0, n_partial = 0;
  double visible = 0;  // visible (query, key) pairs

  cuattn::BlockMaskArgs args() const {
    cuattn::BlockMaskArgs a;
    a.kv_num_blocks = kv_num_blocks.view(), a.kv_indices = kv_indices.view();
    a.partial_ids = partial_ids.view(), a.full_kv_num_blocks = full_kv_num_blocks.view();
    a.full_kv_indices = full_kv_indices.view(), a.partial_bits = partial_bits.view();
    a.block_q = block_q, a.block_kv = block_kv;
    a.q_len = a.kv_len = len;
    return a;
  }
};

static BlockMask build_block_mask(Env& env, int64_t S, int bq, int bkv,
                                  const std::function<bool(int64_t, int64_t)>& visible) {
  const int64_t nq = (S + bq - 1) / bq, nk = (S + bkv - 1) / bkv, words = (bkv + 31) / 32;
  // Classify every block (in parallel over query blocks): 0 empty, 1 full, 2 partial.
  require_memory(double(nq) * double(nk) + 8.0 * double(nq), 0, "the block mask's block kinds");
  std::vector<int8_t> kind(size_t(nq * nk), 0);
  std::vector<double> seen(size_t(nq), 0);
#pragma omp parallel for schedule(dynamic)
  for (int64_t qb = 0; qb < nq; ++qb) {
    for (int64_t kb = 0; kb < nk; ++kb) {
      int64_t n = 0, total = 0;
      for (int64_t i = qb * bq; i < std::min(S, (qb + 1) * bq); ++i)
        for (int64_t j = kb * bkv; j < std::min(S, (kb + 1) * bkv); ++j) n += visible(i, j), ++total;
      kind[size_t(qb * nk + kb)] = n == 0 ? 0 : n == total ? 1 : 2;
      seen[size_t(qb)] += double(n);
    }
  }
  BlockMask m;
  m.block_q = bq, m.block_kv = bkv, m.len = S;
  for (double s : seen) m.visible += s;
  for (int8_t k : kind) m.n_full += k == 1, m.n_partial += k == 2;
  m.kv_num_blocks = env.zeros({1, 1, nq}, DType::i32);
  m.full_kv_num_blocks = env.zeros({1, 1, nq}, DType::i32);
  m.kv_indices = env.zeros({1, 1, nq, nk}, DType::i32);
  m.partial_ids = env.zeros({1, 1, nq, nk}, DType::i32);
  m.full_kv_indices = env.zeros({1, 1, nq, nk}, DType::i32);
  m.partial_bits = env.zeros({m.n_partial, bq, words}, DType::u32);
  int64_t next_partial = 0;
  for (int64_t qb = 0; qb < nq; ++qb) {
    int32_t np = 0, nf = 0;
    for (int64_t kb = 0; kb < nk; ++kb) {
      const int8_t k = kind[size_t(qb * nk + kb)];
      if (k == 1) m.full_kv_indices.host_as<int32_t>()[qb * nk + nf++] = int32_t(kb);
      if (k != 2) continue;
      m.kv_indices.host_as<int32_t>()[qb * nk + np] = int32_t(kb);
      m.partial_ids.host_as<int32_t>()[qb * nk + np++] = int32_t(next_partial);
      // Bit (j % 32) of word j / 32 of row i: element (qb·bq + i, kb·bkv + j) is visible.
      uint32_t* bits = m.partial_bits.host_as<uint32_t>() + next_partial * bq * words;
      for (int64_t i = 0; i < bq && qb * bq + i < S; ++i)
        for (int64_t j = 0; j < bkv && kb * bkv + j < S; ++j)
          if (visible(qb * bq + i, kb * bkv + j)) bits[i * words + j / 32] |= 1u << (j % 32);
      ++next_partial;
    }
    m.kv_num_blocks.host_as<int32_t>()[qb] = np;
    m.full_kv_num_blocks.host_as<int32_t>()[qb] = nf;
  }
  for (Tensor* t : {&m.kv_num_blocks, &m.full_kv_num_blocks, &m.kv_indices, &m.partial_ids,
                    &m.full_kv_indices, &m.partial_bits})
    t->upload(env.stream);
  return m;
}

static int run(int argc, char** argv) {
  int64_t B, H, G, S, D, W, doc, block_q, block_kv, dB, dL, page, mla_B, mla_L, mla_H;
  Cli cli("attention_variants", "attention variants side by side, measured");
  cli.flag(&B, "--batch,-b", {1, 1, 1}, {1, kMaxBatch}, "prefill rows: batch size");
  cli.flag(&H, "--heads", {16, 4, 4}, {1, kMaxHeads}, "prefill rows and paged decode: query heads");
  cli.flag(&G, "--gqa", {4, 4, 2}, {1, kMaxHeads}, "GQA and paged decode: query heads per kv head");
  // The block mask is built on the host by testing every (query, key) pair: S stays moderate.
  cli.flag(&S, "--seqlen,-s", {16384, 1024, 520}, {1, 65536}, "prefill rows: sequence length");
  cli.flag(&D, "--headdim,-d", {128, 64, 64}, kHeadDims, "head dim (not MLA)");
  cli.flag(&W, "--window,-w", {1024, 128, 16}, {0, kMaxLen}, "sliding window: keys i-W .. i");
  cli.flag(&doc, "--doc-len", {1024, 256, 260}, {1, kMaxLen}, "block-sparse: document length");
  cli.flag(&block_q, "--block-q", {128}, {1, 1024}, "block-sparse: query block size");
  cli.flag(&block_kv, "--block-kv", {128, 128, 64}, {1, 1024}, "block-sparse: key block size");
  cli.flag(&dB, "--decode-batch", {64, 8, 2}, {1, kMaxBatch}, "paged decode: sequences");
  cli.flag(&dL, "--decode-len", {4096, 1024, 70}, {1, kMaxLen}, "paged decode: cached tokens per sequence");
  cli.flag(&page, "--page-size", {16, 16, 16}, {1, kMaxPage}, "paged decode: tokens per page");
  cli.flag(&mla_B, "--mla-batch", {64, 2, 2}, {1, kMaxBatch}, "MLA decode: sequences");
  cli.flag(&mla_L, "--mla-len", {4096, 512, 70}, {1, kMaxLen}, "MLA decode: cached tokens per sequence");
  cli.flag(&mla_H, "--mla-heads", {128, 16, 4}, {1, kMaxHeads}, "MLA decode: query heads");
  Env env = cli.parse(argc, argv, DType::bf16);
  if (H % G != 0) usage_error(fmt("--heads (%lld) must be a multiple of --gqa (%lld)", (long long)H, (long long)G));
  const double esize = cuattn::dtype_size(env.dtype);
  const std::string prefill = fmt("B%lld H%lld S%lld D%lld", (long long)B, (long long)H, (long long)S, (long long)D);
  Table table(env);

  // ---- Prefill variants: one dense-attention call each, differing in mask and kv heads. -------
  Tensor q = env.random({B, S, H, D});
  Tensor k = env.random({B, S, H, D}), v = env.random({B, S, H, D});
  Tensor k_gqa = env.random({B, S, H / G, D}), v_gqa = env.random({B, S, H / G, D});
  Tensor out = env.empty({B, S, H, D});

  // One prefill row: attention with `mask` (the block mask, when given, expresses the same mask)
  // over k/v or their GQA versions; --check against the float64 reference with that mask.
  auto prefill_row = [&](const std::string& name, cuattn::AttentionArgs a, const Mask& mask, double pairs,
                         const std::string& note) {
    const int64_t Hkv = a.k.shape[2];
    Row& row = table.add(name, prefill + (Hkv != H ? fmt("/%lld", (long long)Hkv) : ""));
    row.flops = 4.0 * B * H * D * pairs;
    row.set("KV / token", bytes_str(2 * Hkv * D * esize));
    row.note = note;
    a.out = out.view();
    a.causal = mask.causal, a.window_left = mask.left, a.window_right = mask.right;
    table.run(row, {&out}, [&] { cuattn::attention(a, env.stream); });
    if (env.check) {
      const Tensor& kk = Hkv == H ? k : k_gqa;
      const Tensor& vv = Hkv == H ? v : v_gqa;
      const Slice slice = choose_slice(B, Hkv, S, S, D, H / Hkv, mask);
      table.check(row, [&] {
        const std::vector<double> want = reference_attention(q.host_view(), kk.host_view(), vv.host_view(), mask, -1, slice);
        return compare_slice(out, false, want, H / Hkv, slice, env);
      });
    }
  };

  cuattn::AttentionArgs dense;
  dense.q = q.view(), dense.k = k.view(), dense.v = v.view();
  Mask none, causal, window;
  causal.causal = true;
  window = causal;
  window.left = W, window.right = 0;
  prefill_row("dense", dense, none, visible_pairs(S, S, none), "every pair");
  prefill_row("causal", dense, causal, visible_pairs(S, S, causal), "tiles above the diagonal skipped");
  prefill_row(fmt("sliding window W=%lld", (long long)W), dense, window, visible_pairs(S, S, window), "O(S·W) work");

  // Block-sparse: documents of `doc` tokens, causal inside each, invisible across.
  {
    Mask documents;
    documents.visible = [&](int64_t i, int64_t j) { return i / doc == j / doc && j <= i; };
    BlockMask bm = build_block_mask(env, S, int(block_q), int(block_kv), documents.visible);
    cuattn::AttentionArgs a = dense;
    a.block_mask = bm.args();
    prefill_row(fmt("block-sparse (doc %lld)", (long long)doc), a, documents, bm.visible,
                fmt("%lld full + %lld partial blocks of %lldx%lld", (long long)bm.n_full, (long long)bm.n_partial,
                    (long long)block_q, (long long)block_kv));
  }

  cuattn::AttentionArgs gqa = dense;
  gqa.k = k_gqa.view(), gqa.v = v_gqa.view();
  prefill_row(fmt("GQA causal (G=%lld)", (long long)G), gqa, causal, visible_pairs(S, S, causal),
              fmt("%lld query heads per kv head", (long long)G));

  // ---- Paged decode: one new token per sequence, GQA heads, pages in random order. ----------
  {
    const int64_t Hkv = H / G, blocks = (dL + page - 1) / page, N = dB * blocks;
    Tensor k_cache = env.random({N, page, Hkv, D}), v_cache = env.random({N, page, Hkv, D});
    const PageTable pt = make_page_table(env, dB, dL, page);
    const Tensor &block_table = pt.block_table, &seq_lens = pt.seq_lens;
    Tensor qd = env.random({dB, H, D}), od = env.empty({dB, H, D});
    cuattn::PagedArgs a;
    a.q = qd.view(), a.k_cache = k_cache.view(), a.v_cache = v_cache.view();
    a.block_table = block_table.view(), a.seq_lens = seq_lens.view(), a.out = od.view();
    Row& row = table.add("paged decode", fmt("B%lld L%lld H%lld/%lld D%lld", (long long)dB, (long long)dL,
                                             (long long)H, (long long)Hkv, (long long)D));
    row.bytes = 2.0 * dB * dL * Hkv * D * esize, row.bound = Bound::memory;
    row.flops = 4.0 * dB * H * D * dL;
    row.set("KV / token", bytes_str(2 * Hkv * D * esize));
    row.note = fmt("%lld-token pages, random order", (long long)page);
    table.run(row, {&od}, [&] { cuattn::paged_attention(a, env.stream); });
    if (env.check)
      table.check(row, [&] {
        const int64_t nb = check_count(dB, 4.0 * H * dL * D);
        const std::vector<double> want =
            reference_paged(qd.host_view({dB, 1, H, D}), k_cache.host_view(), v_cache.host_view(), block_table, seq_lens, nb);
        return compare_first(od, {dB, 1, H, D}, nb, want, env);
      });
  }

  // ---- MLA decode (DeepSeek-V3): 576-wide latent cache, V = its first 512 columns. -----------
  {
    constexpr int64_t kDk = 576, kDv = 512, kBlock = 64;
    const double mscale = 0.1 * std::log(40.0) + 1.0, scale = mscale * mscale / std::sqrt(192.0);
    const int64_t blocks = (mla_L + kBlock - 1) / kBlock, N = mla_B * blocks;
    Tensor cache = env.random({N, kBlock, kDk});
    const PageTable pt = make_page_table(env, mla_B, mla_L, kBlock);
    const Tensor &block_table = pt.block_table, &seq_lens = pt.seq_lens;
    Tensor qm = env.random({mla_B, 1, mla_H, kDk}), om = env.empty({mla_B, 1, mla_H, kDv});
    cuattn::MlaDecodeArgs a;
    a.q = qm.view(), a.kv_cache = cache.view(), a.block_table = block_table.view();
    a.seq_lens = seq_lens.view(), a.out = om.view();
    a.scale = scale;
    Row& row = table.add("MLA decode", fmt("B%lld L%lld Hq%lld 576/512", (long long)mla_B, (long long)mla_L,
                                           (long long)mla_H));
    row.flops = 2.0 * mla_B * mla_H * mla_L * (kDk + kDv);
    row.bytes = double(mla_B) * mla_L * kDk * esize;
    row.bound = env.cuda() && row.flops / row.bytes > env.peak_tflops * 1e3 / env.copy_gbps ? Bound::compute
                                                                                             : Bound::memory;
    row.set("KV / token", bytes_str(kDk * esize));
    row.note = fmt("one latent for %lld query heads", (long long)mla_H);
    table.run(row, {&om}, [&] { cuattn::mla_decode(a, env.stream); });
    if (env.check)
      table.check(row, [&] {
        const int64_t nb = check_count(mla_B, 2.0 * mla_H * mla_L * (kDk + kDv));
        TensorView kv = cache.host_view({N, kBlock, 1, kDk}), vv = kv;
        vv.shape[3] = kDv;
        const std::vector<double> want = reference_paged(qm.host_view(), kv, vv, block_table, seq_lens, nb, 1.0, 1.0, scale);
        return compare_first(om, om.shape, nb, want, env);
      });
  }

  table.footnote("KV / token: bytes cached per token and layer. FLOPs on visible pairs (4·H·D each); "
                 "MLA 2·B·Hq·L·(576+512); decode GB/s on the cache read once.");
  table.footnote("PyTorch FlexAttention on an H100 (B1 H16 S16384 D128): causal 2.67 ms, window 1024 "
                 "0.427 ms, document 1024 0.267 ms; the goals here are <= 1.97, 0.28 and 0.18 ms.");
  return table.print();
}

int main(int argc, char** argv) { return guarded(argc, argv, run); }
