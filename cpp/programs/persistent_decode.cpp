// persistent_decode — a decode lab: a serving engine's decode loop over a batch of
// sequences of mixed lengths, run three ways. Each of T steps grows every sequence by one token:
// its new k/v are appended to the paged KV cache (cuattn::append_paged_kv), then its new query
// attends over the whole sequence (cuattn::paged_attention).
//
//   1. per sequence    the naive engine: for each sequence, an append and a paged_attention on
//                      B=1 views of the batch's tensors (q, out, block-table row, length: no
//                      copies), with splits chosen from the shapes: 2·B library calls a step
//   2. batched + plan  one batched append and one paged_attention with a DecodePlan: the
//                      scheduler spreads all the sequences' key ranges over the SMs in one launch
//   3. graph replay    (GPU) step 2, its input copy included, captured once as a CUDA graph; each
//                      step points the graph's copy at its own record and replays it: one launch
//
// Every step starts by copying its inputs (q, new k/v, slot mapping, lengths: one record a step,
// made up front) into the static buffers that the step reads, with one device-to-device copy, as
// an engine refills a captured graph's inputs before a replay. All three ways pay for it; in way
// 3 it is a node of the graph.
//
//   ./persistent_decode                               B1 and B32, mean context 1024 (GPU)
//   ./persistent_decode --cases 8x4096 --skew 0       equal lengths
//   ./persistent_decode --lengths 4096,256,256,64 -T 128
//   ./persistent_decode --check --device cpu --small
//
// Time, two ways: "us / step", the median over steps of one step's latency, each step started on
// an idle device with a cold L2, its host launch cost included (time_each); "back to back", the
// time of the whole T-step loop issued without waiting, over T (time_loops: the serving case,
// where one step's launches overlap the step before it). Bytes: K and V of every sequence read
// once, the mean over a run's steps.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>

#include "harness.h"

#ifdef CUATTN_WITH_CUDA
#include <cuda_runtime.h>
#endif

using namespace harness;

namespace {

struct Problem {
  int64_t Hq, Hkv, D, T, P;
  std::vector<int64_t> len0;  // cached tokens of each sequence before the first step
};

// B lengths spread evenly over mean ± skew %, in random order (their mean is `mean`).
std::vector<int64_t> spread(Env& env, int64_t B, int64_t mean, int64_t skew) {
  const std::vector<int32_t> order = env.permutation(B);
  std::vector<int64_t> len(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i)
    len[size_t(order[size_t(i)])] = std::llround(double(mean) * (1 + skew / 100.0 * (2 * (i + 0.5) / double(B) - 1)));
  return len;
}

int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

// A view of `shape` at byte `offset` of buf's memory (device copy on cuda) or of its host copy.
TensorView part(const Tensor& buf, int64_t offset, DType t, std::initializer_list<int64_t> shape, bool host = false) {
  char* base = static_cast<char*>(host ? const_cast<Tensor&>(buf).host_data() : buf.data());
  return cuattn::make_view(base + offset, t, shape, host ? DeviceType::cpu : buf.device);
}

void run_case(Env& env, Table& table, const Problem& pr) {
  const int64_t B = int64_t(pr.len0.size()), Hq = pr.Hq, Hkv = pr.Hkv, D = pr.D, T = pr.T, P = pr.P;
  const int64_t ds = cuattn::dtype_size(env.dtype), tok = Hkv * D * ds;  // bytes of one token's k
  std::vector<int64_t> len_final(pr.len0);
  for (int64_t& l : len_final) l += T;
  const int64_t lo = *std::min_element(pr.len0.begin(), pr.len0.end());
  const int64_t hi = *std::max_element(pr.len0.begin(), pr.len0.end());
  double mean = 0;
  for (int64_t l : pr.len0) mean += double(l) / double(B);

  // The cache: every sequence has pages for the longest one's final length, in random order.
  const int64_t Lmax = hi + T, blocks = (Lmax + P - 1) / P, N = B * blocks;
  Tensor k_cache = env.random({N, P, Hkv, D}), v_cache = env.random({N, P, Hkv, D});
  const PageTable pt = make_page_table(env, B, Lmax, P);  // its seq_lens are unused: see o_len

  // One record of inputs a step, each part 256-byte aligned: q, new k, new v, slot mapping, lengths.
  const int64_t o_q = 0, o_k = align256(B * Hq * D * ds), o_v = align256(o_k + B * tok);
  const int64_t o_slot = align256(o_v + B * tok), o_len = align256(o_slot + 8 * B), rec = align256(o_len + 4 * B);
  Tensor records = env.zeros({T, rec}, DType::u8), live = env.zeros({rec}, DType::u8);
  {
    Tensor q = env.random({T, B, Hq, D}), k = env.random({T, B, Hkv, D}), v = env.random({T, B, Hkv, D});
    unsigned char* r = records.host_as<unsigned char>();
    for (int64_t t = 0; t < T; ++t, r += rec) {
      std::memcpy(r + o_q, q.host_as<unsigned char>() + t * B * Hq * D * ds, size_t(B * Hq * D * ds));
      std::memcpy(r + o_k, k.host_as<unsigned char>() + t * B * tok, size_t(B * tok));
      std::memcpy(r + o_v, v.host_as<unsigned char>() + t * B * tok, size_t(B * tok));
      for (int64_t b = 0; b < B; ++b) {  // step t writes token len0 + t
        const int64_t j = pr.len0[size_t(b)] + t, slot = int64_t(pt.page(b, j / P)) * P + j % P;
        const int32_t len = int32_t(j + 1);
        std::memcpy(r + o_slot + 8 * b, &slot, 8);
        std::memcpy(r + o_len + 4 * b, &len, 4);
      }
    }
    records.upload(env.stream);
  }
  auto record = [&](int64_t t) -> const unsigned char* { return records.host_as<unsigned char>() + t * rec; };
  auto slot_of = [&](int64_t t, int64_t b) {
    int64_t s;
    std::memcpy(&s, record(t) + o_slot + 8 * b, 8);
    return s;
  };
  auto stage = [&](int64_t t) { env.copy(live.data(), static_cast<const char*>(records.data()) + t * rec, size_t(rec)); };

  // The batched step's arguments, on the static buffers.
  Tensor out = env.empty({B, Hq, D});
  cuattn::AppendArgs ap;
  ap.k_new = part(live, o_k, env.dtype, {B, Hkv, D}), ap.v_new = part(live, o_v, env.dtype, {B, Hkv, D});
  ap.k_cache = k_cache.view(), ap.v_cache = v_cache.view();
  ap.slot_mapping = part(live, o_slot, DType::i64, {B});
  cuattn::PagedArgs pa;
  pa.q = part(live, o_q, env.dtype, {B, Hq, D}), pa.k_cache = k_cache.view(), pa.v_cache = v_cache.view();
  pa.block_table = pt.block_table.view(), pa.seq_lens = part(live, o_len, DType::i32, {B}), pa.out = out.view();
  // Way 1's: the same tensors, sequence b's slice of each.
  std::vector<cuattn::AppendArgs> ap1(static_cast<size_t>(B), ap);
  std::vector<cuattn::PagedArgs> pa1(static_cast<size_t>(B), pa);
  for (int64_t b = 0; b < B; ++b) {
    cuattn::AppendArgs& a = ap1[size_t(b)];
    a.k_new = narrow(ap.k_new, 0, b, 1), a.v_new = narrow(ap.v_new, 0, b, 1);
    a.slot_mapping = narrow(ap.slot_mapping, 0, b, 1);
    cuattn::PagedArgs& p = pa1[size_t(b)];
    p.q = narrow(pa.q, 0, b, 1), p.out = narrow(pa.out, 0, b, 1);
    p.block_table = narrow(pa.block_table, 0, b, 1), p.seq_lens = narrow(pa.seq_lens, 0, b, 1);
  }

  // The plan covers the final lengths; earlier steps read their real lengths from the record.
  std::shared_ptr<cuattn::DecodePlan> plan;
  std::string plan_error;
  try {
    std::vector<int32_t> planned(len_final.begin(), len_final.end());
    cuattn::PlanOptions opt;
    opt.num_heads_q = int(Hq), opt.num_heads_kv = int(Hkv), opt.head_dim = int(D);
    opt.page_size = int(P), opt.device = env.device;
    plan = cuattn::plan_decode(planned.data(), int(B), opt);
  } catch (const std::exception& e) {
    plan_error = std::string("plan_decode: ") + e.what();
  }
  cuattn::PagedArgs pa_plan = pa;
  pa_plan.plan = plan.get();
  auto batched = [&] {
    cuattn::append_paged_kv(ap, env.stream);
    cuattn::paged_attention(pa_plan, env.stream);
  };

  // --check: the caches as they must be after the loop (every new token in its slot) and as each
  // way starts from them (those slots poisoned, so that a missing append shows as NaN).
  std::vector<unsigned char> want_k, want_v, start_k, start_v;
  if (env.check) {
    require_memory(4.0 * double(k_cache.bytes()), 0, "the --check copies of the caches");
    for (auto [cache, want, start, off] : {std::tuple{&k_cache, &want_k, &start_k, o_k}, {&v_cache, &want_v, &start_v, o_v}}) {
      want->assign(cache->host_as<unsigned char>(), cache->host_as<unsigned char>() + cache->bytes());
      *start = *want;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t b = 0; b < B; ++b) {
          std::memcpy(want->data() + slot_of(t, b) * tok, record(t) + off + b * tok, size_t(tok));
          std::memset(start->data() + slot_of(t, b) * tok, 0xff, size_t(tok));
        }
    }
  }
  auto reset = [&] {
    if (!env.check) return;
    std::copy(start_k.begin(), start_k.end(), k_cache.host_as<unsigned char>());
    std::copy(start_v.begin(), start_v.end(), v_cache.host_as<unsigned char>());
    k_cache.upload(env.stream), v_cache.upload(env.stream);
  };
  // The reference: the last step's output over the expected caches, for the first nb sequences;
  // the caches themselves are compared for the same sequences, token by token, exactly.
  const int64_t nb = check_count(B, 4.0 * Hq * double(Lmax) * D);
  std::vector<double> want_out;  // computed by the first check that needs it
  auto check = [&](Row& row) {
    if (!env.check) return;
    table.check(row, [&] {
      const TensorView wk = cuattn::make_view(want_k.data(), env.dtype, {N, P, Hkv, D});
      const TensorView wv = cuattn::make_view(want_v.data(), env.dtype, {N, P, Hkv, D});
      if (want_out.empty()) {
        Tensor lens({B}, DType::i32, DeviceType::cpu);
        std::copy(len_final.begin(), len_final.end(), lens.host_as<int32_t>());
        want_out = reference_paged(part(records, (T - 1) * rec + o_q, env.dtype, {B, 1, Hq, D}, true), wk, wv,
                                   pt.block_table, lens, nb);
      }
      CheckResult r = compare_first(out, {B, 1, Hq, D}, nb, want_out, env);
      for (auto [cache, want, name] : {std::tuple{&k_cache, wk, "K"}, {&v_cache, wv, "V"}}) {
        cache->download(env.stream);
        std::vector<double> got, expect;
        for (int64_t b = 0; b < nb; ++b) {
          const int32_t* row_b = pt.block_table.host_as<int32_t>() + b * blocks;
          const std::vector<double> g = gather_pages(cache->host_view(), row_b, len_final[size_t(b)]);
          const std::vector<double> e = gather_pages(want, row_b, len_final[size_t(b)]);
          got.insert(got.end(), g.begin(), g.end()), expect.insert(expect.end(), e.begin(), e.end());
        }
        const CheckResult c = compare(got, expect, env.dtype);
        if (c.nan || c.max_abs > 0) {
          r.ok = false, r.nan |= c.nan;
          r.note += fmt("%s%s cache differs (%s)", r.note.empty() ? "" : "; ", name,
                        c.nan ? "NaN" : fmt("max abs %.1e", c.max_abs).c_str());
        }
      }
      r.note = fmt("last step's output + caches%s%s%s", nb < B ? fmt(", first %lld sequences", (long long)nb).c_str() : "",
                   r.note.empty() ? "" : "; ", r.note.c_str());
      return r;
    });
  };

  std::string shape = lo == hi ? fmt("B%lld L%lld", (long long)B, (long long)lo)
                               : fmt("B%lld L%lld..%lld (mean %.0f)", (long long)B, (long long)lo, (long long)hi, mean);
  shape += fmt(" T%lld P%lld H%lld/%lld D%lld", (long long)T, (long long)P, (long long)Hq, (long long)Hkv, (long long)D);
  double bytes = 0;  // K + V read per step, the mean over the T steps
  for (int64_t l : pr.len0) bytes += 2.0 * double(tok) * (double(l) * T + T * (T + 1) / 2.0) / double(T);
  // Each way: warm-up runs of the T-step loop, then timed runs, every step timed on its own.
  auto time_steps = [&](Row& row, const char* calls, const std::function<void(int64_t)>& step) {
    row.bytes = bytes, row.bound = Bound::memory;
    reset();
    double loop_ms = -1;  // back to back, a step
    const bool ran = table.measure(row, {&out}, [&] {
      const double cold = median(time_each(env, env.warmup * T, env.iters * T, [&](int64_t i) { step(i % T); }));
      loop_ms = median(time_loops(env, env.warmup, env.iters, T, step));
      return cold;
    });
    if (!ran) return;
    row.set("us / step", fmt("%.1f", row.ms * 1e3));
    if (loop_ms > 0) {
      row.set("back to back us / step", fmt("%.1f", loop_ms * 1e3));
      const double gbps = bytes / (loop_ms * 1e-3) / 1e9;
      row.set("back to back GB/s", fmt(gbps >= 100 ? "%.0f" : "%.2f", gbps));
    }
    row.set("tokens/s", fmt("%.0f", double(B) / (row.ms * 1e-3)));
    row.set("MB / step", fmt("%.2f", bytes / 1e6));
    row.set("calls / step", calls);
    check(row);
  };
  auto speedup = [](Row& fast, const Row& slow, const char* than) {
    if (fast.ms > 0 && slow.ms > 0) fast.set("speed-up", fmt("%.2fx %s", slow.ms / fast.ms, than));
  };

  // 1. One launch per sequence per step.
  Row& per_seq = table.add("1 per sequence", shape);
  per_seq.note = "splits from shapes";
  time_steps(per_seq, fmt("1 + %lld", (long long)(2 * B)).c_str(), [&](int64_t t) {
    stage(t);
    for (int64_t b = 0; b < B; ++b) {
      cuattn::append_paged_kv(ap1[size_t(b)], env.stream);
      cuattn::paged_attention(pa1[size_t(b)], env.stream);
    }
  });

  // 2. One batched append and one planned paged_attention per step.
  Row& planned = table.add("2 batched + plan", shape);
  if (plan) {
    planned.note = fmt("plan: %d split(s) of %d tokens at most", plan->max_splits, plan->chunk_tokens);
    time_steps(planned, "1 + 2", [&](int64_t t) { stage(t), batched(); });
    speedup(planned, per_seq, "vs 1");
  } else {
    planned.error = plan_error;
  }

#ifdef CUATTN_WITH_CUDA
  // 3. Way 2's step captured once in a CUDA graph; per step: stage the inputs, replay. A failed
  //    capture is the row's error (a plan promises a capturable step); the other rows stand.
  if (env.cuda()) {
    Row& graphed = table.add("3 graph replay", shape);
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
          stage(0);  // the input copy: a node of the graph, pointed at step t's record before each replay
          batched();
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
    // The graph's one memcpy node: the input copy, re-aimed at each step's record.
    cudaGraphNode_t copy_node = nullptr;
    if (why.empty()) {
      size_t count = 0;
      cudaGraphGetNodes(graph, nullptr, &count);
      std::vector<cudaGraphNode_t> nodes(count);
      cudaGraphGetNodes(graph, nodes.data(), &count);
      for (cudaGraphNode_t n : nodes) {
        cudaGraphNodeType type;
        if (cudaGraphNodeGetType(n, &type) == cudaSuccess && type == cudaGraphNodeTypeMemcpy) {
          if (copy_node) why = "the graph holds more than one copy";
          copy_node = n;
        }
      }
      if (!copy_node && why.empty()) why = "the graph holds no input copy";
      graphed.note = fmt("the step = %zu graph node(s), its input copy included", count);
    }
    if (!why.empty()) {
      graphed.error = "capture failed: " + why;
    } else {
      time_steps(graphed, "1", [&](int64_t t) {
        ck(cudaGraphExecMemcpyNodeSetParams1D(exec, copy_node, live.data(),
                                              static_cast<const char*>(records.data()) + t * rec, size_t(rec),
                                              cudaMemcpyDefault),
           "cudaGraphExecMemcpyNodeSetParams1D");
        ck(cudaGraphLaunch(exec, env.stream), "cudaGraphLaunch");
      });
      speedup(graphed, planned, "vs 2");
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
#endif
}

int run(int argc, char** argv) {
  std::vector<Case> cases;
  std::vector<int64_t> lengths;
  int64_t B = 0, L = -1, skew, Hq, Hkv, D, T, P;
  Cli cli("persistent_decode",
          "a decode loop over a mixed-length batch, three ways: a launch per sequence, one planned launch, a CUDA graph");
  cli.flag(&cases, "--cases", Def("1x1024,32x1024", "1x512,4x512", "1x40,3x40"), CaseSpec{{1, kMaxBatch}, {0, kMaxLen}},
           "batch x mean cached length: rows for each case");
  cli.flag(&B, "--batch,-b", Def(""), {1, kMaxBatch}, "every case's batch");
  cli.flag(&L, "--context,-L", Def(""), {0, kMaxLen}, "every case's mean cached length (tokens before the first step)");
  cli.flag(&skew, "--skew", Def(90), {0, 100}, "cached lengths spread evenly over the mean +- this %, shuffled");
  cli.flag(&lengths, "--lengths", Def(""), {0, kMaxLen},
           "the cached lengths themselves, cycled over the batch (their count unless -b): one case, "
           "instead of --cases, -L, --skew");
  cli.flag(&Hq, "--heads", {32, 8, 4}, {1, kMaxHeads}, "query heads");
  cli.flag(&Hkv, "--kv-heads", {8, 2, 2}, {1, kMaxHeads}, "kv heads");
  cli.flag(&D, "--headdim,-d", {128, 64, 64}, kHeadDims, "head dim");
  cli.flag(&T, "--steps,-T", {64, 8, 5}, {1, 65536}, "decode steps a run (one new token per sequence each)");
  cli.flag(&P, "--page-size", {16, 16, 4}, {1, kMaxPage}, "tokens per cache page");
  Env env = cli.parse(argc, argv, DType::bf16);
  if (Hq % Hkv != 0) usage_error(fmt("--heads (%lld) must be a multiple of --kv-heads (%lld)", (long long)Hq, (long long)Hkv));

  // The cases after the overrides, each once.
  std::vector<Problem> problems;
  if (!lengths.empty()) {
    Problem p{Hq, Hkv, D, T, P, {}};
    for (int64_t b = 0; b < (B ? B : int64_t(lengths.size())); ++b) p.len0.push_back(lengths[size_t(b) % lengths.size()]);
    problems.push_back(p);
  } else {
    std::vector<std::pair<int64_t, int64_t>> seen;
    for (const Case& c : cases) {
      const std::pair<int64_t, int64_t> bl{B ? B : c.batch, L >= 0 ? L : c.len};
      if (std::find(seen.begin(), seen.end(), bl) != seen.end()) continue;
      seen.push_back(bl);
      problems.push_back({Hq, Hkv, D, T, P, spread(env, bl.first, bl.second, skew)});
    }
  }

  Table table(env);
  for (const Problem& p : problems) run_case(env, table, p);
  if (!env.cuda()) table.footnote("way 3 (CUDA graph) runs on the GPU only.");
  table.footnote("a step: one copy of its inputs into the static buffers, then 1: per sequence an append_paged_kv "
                 "and a paged_attention on B=1 views; 2: one append_paged_kv and one paged_attention with a plan; "
                 "3: one launch of the graph of 2's step, its input copy included. calls / step: copies + library "
                 "calls, or graph launches.");
  table.footnote(fmt("us / step: the median over %lld steps (%d run(s) of the %lld-step loop after %d warm-up run(s)) of "
                     "one step's latency, each step started on an idle device with a cold L2, its host launch cost "
                     "included; back to back: the %lld-step loop issued without waits (the L2 flushed once before it), "
                     "over %lld, the median of %d run(s). GB/s: K and V of every sequence read once, the mean over a "
                     "run's steps.",
                     (long long)(env.iters * T), env.iters, (long long)T, env.warmup, (long long)T, (long long)T,
                     env.iters));
  return table.print();
}

}  // namespace

int main(int argc, char** argv) { return guarded(argc, argv, run); }
