// persistent_decode — a serving engine's decode loop. Each of T steps appends one new token per
// sequence to the paged KV cache (cuattn::append_paged_kv) and attends over the grown sequences
// (cuattn::paged_attention). The step reads its inputs from fixed "static" buffers that the host
// refills before each step (q, new k/v, slot mapping, lengths), so that one step can be captured
// in a CUDA graph and replayed: a replay costs one launch instead of the host work of two API
// calls. A DecodePlan, made once on the host for the final lengths, fixes the split-KV schedule
// and workspace so that the step does no host work, allocation or sync.
//
//   ./persistent_decode                           B64, 4096 cached tokens, 64 steps (GPU)
//   ./persistent_decode --steps 256 --context 1024
//   ./persistent_decode --check --device cpu --small
//
// Rows: eager without a plan, eager with the plan, and (GPU) the captured step replayed per step.
// Time is per step; bytes per step = K and V of every sequence read once (the mean over steps).
#include <algorithm>
#include <cstring>
#include <memory>

#include "harness.h"

#ifdef CUATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

using namespace harness;

static int run(int argc, char** argv) {
  int64_t B, Hq, Hkv, D, L0, T, P;
  Cli cli("persistent_decode", "a decode loop: append + paged attention per step, eager and as a CUDA graph");
  cli.flag(&B, "--batch,-b", {64, 4, 3}, {1, kMaxBatch}, "sequences");
  cli.flag(&Hq, "--heads", {32, 8, 4}, {1, kMaxHeads}, "query heads");
  cli.flag(&Hkv, "--kv-heads", {8, 2, 2}, {1, kMaxHeads}, "kv heads");
  cli.flag(&D, "--headdim,-d", {128, 64, 64}, kHeadDims, "head dim");
  cli.flag(&L0, "--context,-L", {4096, 512, 40}, {0, kMaxLen}, "tokens cached before the first step");
  cli.flag(&T, "--steps,-T", {64, 8, 5}, {1, 65536}, "decode steps (one new token per sequence each)");
  cli.flag(&P, "--page-size", {16, 16, 4}, {1, kMaxPage}, "tokens per cache page");
  Env env = cli.parse(argc, argv, DType::bf16);
  if (Hq % Hkv != 0) usage_error(fmt("--heads (%lld) must be a multiple of --kv-heads (%lld)", (long long)Hq, (long long)Hkv));

  Table table(env);

  // The cache has room for the final lengths L0 + T; pages in random order.
  const int64_t Lmax = L0 + T, blocks = (Lmax + P - 1) / P, N = B * blocks;
  Tensor k_cache = env.random({N, P, Hkv, D}), v_cache = env.random({N, P, Hkv, D});
  const PageTable pt = make_page_table(env, B, Lmax, P);  // its seq_lens are unused: see lens_all
  const Tensor& block_table = pt.block_table;

  // Every step's inputs, made up front: step t writes token L0 + t of each sequence.
  Tensor q_all = env.random({T, B, Hq, D});
  Tensor k_all = env.random({T, B, Hkv, D}), v_all = env.random({T, B, Hkv, D});
  Tensor slots_all = env.zeros({T, B}, DType::i64), lens_all = env.zeros({T, B}, DType::i32);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t j = L0 + t;
      slots_all.host_as<int64_t>()[t * B + b] = int64_t(pt.page(b, j / P)) * P + j % P;
      lens_all.host_as<int32_t>()[t * B + b] = int32_t(j + 1);
    }
  slots_all.upload(env.stream), lens_all.upload(env.stream);

  // The static buffers one step reads and writes.
  Tensor q = env.zeros({B, Hq, D}, env.dtype), k_new = env.zeros({B, Hkv, D}, env.dtype);
  Tensor v_new = env.zeros({B, Hkv, D}, env.dtype);
  Tensor slots = env.zeros({B}, DType::i64), lens = env.zeros({B}, DType::i32);
  Tensor out = env.empty({B, Hq, D});

  // stage(t): copy step t's inputs into the static buffers (what the host does between steps).
  auto stage = [&](int64_t t) {
    for (auto [dst, src] : {std::pair<Tensor*, Tensor*>{&q, &q_all}, {&k_new, &k_all}, {&v_new, &v_all},
                            {&slots, &slots_all}, {&lens, &lens_all}})
      env.copy(dst->data(), static_cast<char*>(src->data()) + t * dst->bytes(), dst->bytes());
  };
  // step(plan): the work of one decode step on the static buffers.
  cuattn::AppendArgs ap;
  ap.k_new = k_new.view(), ap.v_new = v_new.view();
  ap.k_cache = k_cache.view(), ap.v_cache = v_cache.view();
  ap.slot_mapping = slots.view();
  cuattn::PagedArgs pa;
  pa.q = q.view(), pa.k_cache = k_cache.view(), pa.v_cache = v_cache.view();
  pa.block_table = block_table.view(), pa.seq_lens = lens.view(), pa.out = out.view();
  auto step = [&](const cuattn::DecodePlan* plan) {
    cuattn::append_paged_kv(ap, env.stream);
    cuattn::PagedArgs a = pa;
    a.plan = plan;
    cuattn::paged_attention(a, env.stream);
  };

  // The plan covers the final lengths; earlier steps read their real lengths from `lens`.
  std::shared_ptr<cuattn::DecodePlan> plan;
  std::string plan_error;
  try {
    const std::vector<int32_t> final_lens(static_cast<size_t>(B), static_cast<int32_t>(Lmax));
    cuattn::PlanOptions opt;
    opt.num_heads_q = int(Hq), opt.num_heads_kv = int(Hkv), opt.head_dim = int(D);
    opt.page_size = int(P), opt.device = env.device;
    plan = cuattn::plan_decode(final_lens.data(), int(B), opt);
  } catch (const std::exception& e) {
    plan_error = std::string("plan_decode: ") + e.what();
  }

  // --check reference: the final step over dense K/V rebuilt on the host (initial cache + the T
  // appended tokens) in float64. The first sequences if B is large.
  const int64_t nb = check_count(B, 4.0 * Hq * Lmax * D);
  std::vector<double> want;  // computed once, by the first check that needs it
  auto reference = [&]() -> const std::vector<double>& {
    if (!want.empty()) return want;
    const std::vector<double> kn = to_doubles(k_all.host_view()), vn = to_doubles(v_all.host_view());
    Mask causal;
    causal.causal = true;
    for (int64_t b = 0; b < nb; ++b) {
      const int32_t* row = block_table.host_as<int32_t>() + b * blocks;
      std::vector<double> kb = gather_pages(k_cache.host_view(), row, Lmax);
      std::vector<double> vb = gather_pages(v_cache.host_view(), row, Lmax);
      for (int64_t t = 0; t < T; ++t) {  // token L0 + t was appended by step t
        std::copy_n(kn.begin() + (t * B + b) * Hkv * D, Hkv * D, kb.begin() + (L0 + t) * Hkv * D);
        std::copy_n(vn.begin() + (t * B + b) * Hkv * D, Hkv * D, vb.begin() + (L0 + t) * Hkv * D);
      }
      const TensorView qb = narrow(q_all.host_view({T * B, 1, Hq, D}), 0, (T - 1) * B + b, 1);  // the last step's
      const std::vector<double> o = reference_attention(
          qb, cuattn::make_view(kb.data(), DType::f64, {1, Lmax, Hkv, D}),
          cuattn::make_view(vb.data(), DType::f64, {1, Lmax, Hkv, D}), causal, -1, Slice{1, Hkv, 1, true});
      want.insert(want.end(), o.begin(), o.end());
    }
    return want;
  };
  auto check_final = [&](Row& row) {
    if (!env.check) return;
    table.check(row, [&] {
      CheckResult r = compare_first(out, {B, 1, Hq, D}, nb, reference(), env);
      r.note = fmt("final step%s", nb < B ? fmt(", first %lld sequences", (long long)nb).c_str() : "");
      return r;
    });
  };

  const std::string shape = fmt("B%lld L%lld+%lld P%lld H%lld/%lld D%lld", (long long)B, (long long)L0,
                                (long long)T, (long long)P, (long long)Hq, (long long)Hkv, (long long)D);
  double bytes = 0;  // mean K + V bytes read per step
  for (int64_t t = 0; t < T; ++t) bytes += 2.0 * B * (L0 + t + 1) * Hkv * D * cuattn::dtype_size(env.dtype);
  bytes /= double(T);
  // Each row times the whole T-step loop (row.repeat = T); the table shows the time per step.
  auto per_step = [&](Row& row) {
    if (row.ms < 0) return;
    row.set("loop (ms)", fmt("%.3f", row.ms * double(T)));
    row.set("us / step", fmt("%.1f", row.ms * 1e3));
  };

  // 1. Eager, no plan: splits chosen from the shapes at every call.
  Row& eager = table.add("eager", shape);
  eager.bytes = bytes, eager.bound = Bound::memory, eager.repeat = int(T);
  table.run(eager, {&out}, [&] {
    for (int64_t t = 0; t < T; ++t) stage(t), step(nullptr);
  });
  per_step(eager);
  check_final(eager);

  // 2. Eager with the plan.
  Row& planned = table.add("eager + plan", shape);
  planned.bytes = bytes, planned.bound = Bound::memory, planned.repeat = int(T);
  if (plan) {
    planned.note = fmt("%d split(s) of %d tokens", plan->max_splits, plan->chunk_tokens);
    table.run(planned, {&out}, [&] {
      for (int64_t t = 0; t < T; ++t) stage(t), step(plan.get());
    });
    per_step(planned);
    check_final(planned);
  } else {
    planned.error = plan_error;
  }

#ifdef CUATTN_WITH_CUDA
  // 3. CUDA graph: capture one step (append + paged attention with the plan) on the stream, then
  //    per step: stage the inputs and replay it. A capture the library does not support yet is
  //    reported in the table, not fatal.
  if (env.cuda()) {
    Row& graphed = table.add("graph + plan (replay)", shape);
    graphed.bytes = bytes, graphed.bound = Bound::memory, graphed.repeat = int(T);
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    std::string why = plan ? "" : plan_error;
    if (why.empty()) {
      env.sync();
      cudaError_t e = cudaStreamBeginCapture(env.stream, cudaStreamCaptureModeGlobal);
      if (e != cudaSuccess) {
        why = std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(e);
      } else {
        try {
          step(plan.get());
        } catch (const std::exception& ex) {
          why = ex.what();
        }
        e = cudaStreamEndCapture(env.stream, &graph);  // always end the capture
        if (why.empty() && e != cudaSuccess) why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(e);
        if (why.empty() && (e = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess)
          why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(e);
      }
      cudaGetLastError();  // capture errors are not sticky; clear them
    }
    if (!why.empty()) {
      graphed.note = "capture failed: " + why;
    } else {
      size_t nodes = 0;
      cudaGraphGetNodes(graph, nullptr, &nodes);
      graphed.note = fmt("one step = %zu graph node(s)", nodes);
      table.run(graphed, {&out}, [&] {
        for (int64_t t = 0; t < T; ++t) {
          stage(t);
          cudaError_t e = cudaGraphLaunch(exec, env.stream);
          if (e != cudaSuccess) throw cuattn::CudaError(std::string("cudaGraphLaunch: ") + cudaGetErrorString(e));
        }
      });
      per_step(graphed);
      check_final(graphed);
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
#endif
  if (!env.cuda()) table.footnote("the CUDA-graph row runs on the GPU only.");

  table.footnote("per step: stage (5 small copies into the static buffers) + append_paged_kv + "
                 "paged_attention; GB/s on the mean K + V bytes of a step.");
  return table.print();
}

int main(int argc, char** argv) { return guarded(argc, argv, run); }
