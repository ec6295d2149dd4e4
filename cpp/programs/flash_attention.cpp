// flash_attention — the classic comparison: naive attention, which writes the [Sq, Sk] score
// matrix of every (batch, head) to memory, soft-maxes it and multiplies it with V, against flash
// attention, which streams K/V tiles through on-chip memory and never stores the scores.
//
//   ./flash_attention                           B8 H32 S4096 D128 fp16 on the GPU (the classic comparison)
//   ./flash_attention --causal --layout bhsd    PyTorch's [B, H, S, D] order
//   ./flash_attention --check --device cpu --small
//
// FLOPs = 4·B·H·Sq·Sk·D (QKᵀ and PV), halved for causal, as FlashAttention's papers count them.
// Extra memory = what a call stores besides q, k and v: the output, plus B·H·Sq·Sk float32
// scores for the naive version. Measured with PyTorch on an H100: naive 25.5 ms with
// 16.25 GiB extra, SDPA 3.85 ms with 0.25 GiB.
#include "harness.h"

using namespace harness;

static int run(int argc, char** argv) {
  int64_t B, H, Hkv, S, Sk, D;
  bool causal = false;
  std::string layout_name;
  Cli cli("flash_attention", "naive attention (materialised S x S scores) vs flash attention");
  cli.flag(&B, "--batch,-b", {8, 1, 2}, {1, kMaxBatch}, "batch size");
  cli.flag(&H, "--heads", {32, 4, 4}, {1, kMaxHeads}, "query heads");
  cli.flag(&Hkv, "--kv-heads", {0}, {0, kMaxHeads}, "kv heads (0: same as --heads; fewer for GQA)");
  cli.flag(&S, "--seqlen,-s", {4096, 1024, 97}, {1, kMaxLen}, "query length");
  cli.flag(&Sk, "--seqlen-k", {0}, {0, kMaxLen}, "key length (0: same as --seqlen)");
  cli.flag(&D, "--headdim,-d", {128, 64, 64}, kHeadDims, "head dim");
  cli.flag(&causal, "--causal", "causal mask: key j visible from query i when j <= i + Sk - Sq");
  cli.flag(&layout_name, "--layout", {"bshd"}, {"bshd", "bhsd"}, "bshd ([B, S, H, D]) or bhsd ([B, H, S, D])");
  Env env = cli.parse(argc, argv, DType::f16);

  if (Hkv == 0) Hkv = H;
  if (Sk == 0) Sk = S;
  if (H % Hkv != 0) usage_error(fmt("--heads (%lld) must be a multiple of --kv-heads (%lld)", (long long)H, (long long)Hkv));
  const bool bhsd = layout_name == "bhsd";
  auto shape = [&](int64_t seq, int64_t heads) { return bhsd ? Shape{B, heads, seq, D} : Shape{B, seq, heads, D}; };

  Table table(env);
  Tensor q = env.random(shape(S, H)), k = env.random(shape(Sk, Hkv)), v = env.random(shape(Sk, Hkv));
  Tensor out_naive = env.empty(shape(S, H)), out_flash = env.empty(shape(S, H));

  const std::string desc = fmt("B%lld H%lld%s S%lld%s D%lld%s %s", (long long)B, (long long)H,
                               Hkv != H ? fmt("/%lld", (long long)Hkv).c_str() : "", (long long)S,
                               Sk != S ? fmt(" Sk%lld", (long long)Sk).c_str() : "", (long long)D,
                               causal ? " causal" : "", layout_name.c_str());
  const double flops = 4.0 * B * H * S * Sk * D * (causal ? 0.5 : 1.0);
  const double out_bytes = double(out_flash.bytes());
  const double score_bytes = 4.0 * B * H * S * Sk;

  // 1. Naive: S = QKᵀ for the whole sequence in memory, softmax, then S·V.
  cuattn::NaiveArgs na;
  na.q = q.view(), na.k = k.view(), na.v = v.view(), na.out = out_naive.view();
  na.causal = causal;
  na.layout = cuattn::parse_layout(layout_name);
  Row& naive = table.add("naive (scores in memory)", desc);
  naive.flops = flops;
  naive.extra_bytes = out_bytes + score_bytes;
  try {
    require_memory(env.cuda() ? 0 : score_bytes, env.cuda() ? score_bytes : 0, "the naive version's scores");
    MemProbe probe(env);
    table.run(naive, {&out_naive}, [&] { cuattn::naive_attention(na, env.stream); });
    if (env.cuda()) naive.set("peak alloc", bytes_str(double(probe.peak_bytes())));
  } catch (const TooLarge& e) {
    naive.note = std::string("skipped: ") + e.what();
  }

  // 2. Flash: K/V tiles streamed past each Q tile with an online softmax.
  cuattn::AttentionArgs fa;
  fa.q = q.view(), fa.k = k.view(), fa.v = v.view(), fa.out = out_flash.view();
  fa.causal = causal;
  fa.layout = na.layout;
  Row& flash = table.add("flash (cuattn::attention)", desc);
  flash.flops = flops;
  flash.extra_bytes = out_bytes;
  {
    MemProbe probe(env);
    table.run(flash, {&out_flash}, [&] { cuattn::attention(fa, env.stream); });
    if (env.cuda()) flash.set("peak alloc", bytes_str(double(probe.peak_bytes())));
  }

  // --check: both against the float64 reference on the same inputs (a slice of them when the
  // problem is large).
  if (env.check) {
    auto bshd = [&](const Tensor& t) { return bhsd ? transpose(t.host_view(), 1, 2) : t.host_view(); };
    Mask mask;
    mask.causal = causal;
    const Slice slice = choose_slice(B, Hkv, S, Sk, D, H / Hkv, mask);
    std::vector<double> want;  // computed once, by the first check that needs it
    auto reference = [&]() -> const std::vector<double>& {
      if (want.empty()) want = reference_attention(bshd(q), bshd(k), bshd(v), mask, -1, slice);
      return want;
    };
    table.check(naive, [&] { return compare_slice(out_naive, bhsd, reference(), H / Hkv, slice, env); });
    table.check(flash, [&] { return compare_slice(out_flash, bhsd, reference(), H / Hkv, slice, env); });
  }

  table.footnote("extra mem: stored besides q, k, v: the output, plus the B·H·Sq·Sk float32 scores "
                 "for naive. peak alloc: device memory the call allocated (stream-ordered pool).");
  table.footnote("PyTorch on an H100 (B8 H32 S4096 D128 fp16): naive 25.5 ms, 16.25 GiB "
                 "extra; SDPA 3.85 ms, 0.25 GiB.");
  return table.print();
}

int main(int argc, char** argv) { return guarded(argc, argv, run); }
