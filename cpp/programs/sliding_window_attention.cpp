// sliding_window_attention — local attention costs O(N·W), not O(N²): query i sees only the keys
// i-W .. i (W+1 of them), so the kernel skips every K/V tile outside that band. At a fixed window
// the time per token must stay flat as the sequence grows, while dense causal attention's grows
// linearly with S.
//
//   ./sliding_window_attention                          W 256 and 1024, S 4k .. 128k on the GPU
//   ./sliding_window_attention -w 4096 -s 16384,65536   other sweeps
//   ./sliding_window_attention --bidirectional          window (W, W), no causal mask
//
// FLOPs are counted on the visible (query, key) pairs only: 4·H·D per pair.
#include <algorithm>

#include "harness.h"

using namespace harness;

static int run(int argc, char** argv) {
  int64_t B, H, Hkv, D;
  std::vector<int64_t> windows, seqlens;
  bool bidirectional = false, no_dense = false;
  Cli cli("sliding_window_attention", "sliding-window attention: time per token stays flat as S grows");
  cli.flag(&B, "--batch,-b", {1, 1, 1}, {1, kMaxBatch}, "batch size");
  cli.flag(&H, "--heads", {16, 2, 2}, {1, kMaxHeads}, "query heads");
  cli.flag(&Hkv, "--kv-heads", {0}, {0, kMaxHeads}, "kv heads (0: same as --heads)");
  cli.flag(&D, "--headdim,-d", {128, 64, 64}, kHeadDims, "head dim");
  cli.flag(&windows, "--windows,-w", {"256,1024", "64,256", "8,33"}, {0, kMaxLen},
           "window sizes W: query i sees keys i-W .. i (W+1 keys)");
  cli.flag(&seqlens, "--seqlens,-s", {"4096,8192,16384,32768,65536,131072", "512,1024,2048,4096", "50,130"},
           {1, kMaxLen}, "sequence lengths to sweep");
  cli.flag(&bidirectional, "--bidirectional", "window (W, W) without the causal mask");
  cli.flag(&no_dense, "--no-dense", "skip the dense causal rows (the O(N²) contrast)");
  Env env = cli.parse(argc, argv, DType::bf16);
  if (Hkv == 0) Hkv = H;
  if (H % Hkv != 0) usage_error(fmt("--heads (%lld) must be a multiple of --kv-heads (%lld)", (long long)H, (long long)Hkv));

  Table table(env);
  struct Point { int64_t w, s; double ns_per_token; };
  std::vector<Point> points;

  // One problem: window W (-1 = dense causal) at length S.
  auto run_case = [&](int64_t W, int64_t S) {
    Tensor q = env.random({B, S, H, D}), k = env.random({B, S, Hkv, D}), v = env.random({B, S, Hkv, D});
    Tensor out = env.empty({B, S, H, D});
    Mask mask;
    mask.causal = W < 0 || !bidirectional;
    if (W >= 0) mask.left = W, mask.right = bidirectional ? W : 0;
    cuattn::AttentionArgs a;
    a.q = q.view(), a.k = k.view(), a.v = v.view(), a.out = out.view();
    a.causal = mask.causal, a.window_left = mask.left, a.window_right = mask.right;
    const std::string variant = W < 0 ? "causal (dense)" : fmt("window %s%lld", bidirectional ? "±" : "W=", (long long)W);
    Row& row = table.add(variant, fmt("B%lld H%lld S%lld D%lld", (long long)B, (long long)H, (long long)S, (long long)D));
    const double pairs = visible_pairs(S, S, mask);
    row.flops = 4.0 * B * H * D * pairs;
    if (table.run(row, {&out}, [&] { cuattn::attention(a, env.stream); }) && row.ms > 0) {
      const double ns = row.ms * 1e6 / double(B * S);
      row.set("ns / token", fmt(ns < 10 ? "%.3f" : "%.1f", ns));
      row.set("keys / query", fmt("%.0f", pairs / double(S)));
      points.push_back({W, S, ns});
    }
    if (env.check) {
      const Slice slice = choose_slice(B, Hkv, S, S, D, H / Hkv, mask);
      table.check(row, [&] {
        const std::vector<double> want = reference_attention(q.host_view(), k.host_view(), v.host_view(), mask, -1, slice);
        return compare_slice(out, false, want, H / Hkv, slice, env);
      });
    }
  };

  for (int64_t W : windows)
    for (int64_t S : seqlens) run_case(W, S);
  if (!no_dense)
    for (int64_t S : seqlens) run_case(-1, S);

  // Is the time per token flat? Compare the lengths where the band is fully inside the sequence
  // for almost every query (S >= 8 W); the first W queries see fewer keys.
  for (int64_t W : windows) {
    double lo = 1e30, hi = 0;
    int64_t s0 = 0, s1 = 0, n = 0;
    for (const Point& p : points)
      if (p.w == W && p.s >= 8 * W) {
        if (!n) s0 = p.s;
        s1 = p.s, ++n;
        lo = std::min(lo, p.ns_per_token), hi = std::max(hi, p.ns_per_token);
      }
    if (n >= 2)
      table.footnote(fmt("W=%lld: time per token from S=%lld to S=%lld ranges %.3g .. %.3g ns "
                         "(max/min %.2f; flat means O(N·W))",
                         (long long)W, (long long)s0, (long long)s1, lo, hi, hi / lo));
  }
  table.footnote("FLOPs counted on visible (query, key) pairs: 4·H·D each. The goal on an H100: time per "
                 "token within 10 % of flat from S = 16k to 128k at W = 1024.");
  return table.print();
}

int main(int argc, char** argv) { return guarded(argc, argv, run); }
