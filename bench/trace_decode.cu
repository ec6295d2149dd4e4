// bench/trace_decode.cu — per-CTA timeline of the paged decode kernel (globaltimer at kernel start,
// first tile landed, loop done, partial written, merge done) and, for 4 CTAs, per tile (wait for the
// tile, QK + softmax, PV), B sequences, H32/8 D128 bf16 page 16, a 256 MB zeroing L2 flush before
// each call (as bench.py). The ring is filled by TMA tensor copies, or with `rows` by one bulk copy
// per row; with `fp8` the caches are fp8 e4m3 (scales 1). Not part of the build: nvcc -std=c++17 -O3
//   -gencode=arch=compute_90a,code=sm_90a -Icuda -Icpp/include -Icpp/src -o /tmp/td
//   bench/trace_decode.cu && /tmp/td [L=32768] [splits=32] [B=1] [tma|rows] [bf16|fp8|fp8n]
// (fp8: the 8-warp TMA kernel of one-wave grids; fp8n: the 4-warp one of several waves)
#include <cstdio>
#include <vector>
#include <algorithm>
#include <random>
__device__ unsigned long long g_trace[8192 * 8];
#define CUATTN_TRACE(i) do { if (threadIdx.x == 0) { unsigned long long t_; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_)); \
  const unsigned c_ = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x; g_trace[c_ * 8 + (i)] = t_; \
  if ((i) == 0) { unsigned s_; asm volatile("mov.u32 %0, %%smid;" : "=r"(s_)); g_trace[c_ * 8 + 7] = s_; } } } while (0)
// Per-tile timeline of a few CTAs (blockIdx.x == 0, y == 0, z < 4; consumer thread 0): tile landed, softmax done, PV issued.
__device__ unsigned long long g_tiles[4][1024][3];
#define CUATTN_TRACE_TILE(it, ph) do { if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z < 4 && (it) < 1024) { \
  unsigned long long t_; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t_)); g_tiles[blockIdx.z][it][ph] = t_; } } while (0)
#include "decode/paged/kernel.cuh"
#include "common/tma_host.cuh"  // make_tma_map
#include <cstring>
using namespace cuattn;
__global__ void fill(__nv_bfloat16* x, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15;
    x[i] = __float2bfloat16((h & 0xffff) / 32768.f - 1.f);
  }
}
__global__ void fill_fp8(uint8_t* x, size_t n, unsigned seed) {  // e4m3 bytes, never the NaN 0x7f / 0xff
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed; h ^= h >> 13; h *= 0x5bd1e995; h ^= h >> 15;
    x[i] = uint8_t((h & 0x80) | (h & 0x37));  // |x| < 2
  }
}
// kWide: the 8-warp kernel on 128-key tiles, which the launcher picks for an fp8 cache on a grid
// of one CTA an SM or less (TMA only).
template <bool kFp8, bool kWide>
int run(int argc, char** argv);
int main(int argc, char** argv) {
  const bool rows = argc > 4 && std::strcmp(argv[4], "rows") == 0;
  if (argc > 5 && std::strcmp(argv[5], "fp8") == 0) return rows ? run<true, false>(argc, argv) : run<true, true>(argc, argv);
  if (argc > 5 && std::strcmp(argv[5], "fp8n") == 0) return run<true, false>(argc, argv);  // fp8, 4 warps (several waves)
  return run<false, false>(argc, argv);
}
template <bool kFp8, bool kWide>
int run(int argc, char** argv) {
  int B = argc > 3 ? atoi(argv[3]) : 1, L = argc > 1 ? atoi(argv[1]) : 32768, ps = 16, Hq = 32, Hk = 8, D = 128;
  int splits = argc > 2 ? atoi(argv[2]) : 32;
  int nb = B * L / ps;
  size_t kvn = size_t(nb) * ps * Hk * D;
  const int es = kFp8 ? 1 : 2;  // bytes per cache element
  void *kc, *vc; __nv_bfloat16 *q, *o; int *table, *lens; float *wo, *wl; int* cnt;
  cudaMalloc(&kc, kvn * es); cudaMalloc(&vc, kvn * es); cudaMalloc(&q, B * Hq * D * 2); cudaMalloc(&o, B * Hq * D * 2);
  if (kFp8) fill_fp8<<<1024, 256>>>(static_cast<uint8_t*>(kc), kvn, 1), fill_fp8<<<1024, 256>>>(static_cast<uint8_t*>(vc), kvn, 2);
  else fill<<<1024, 256>>>(static_cast<__nv_bfloat16*>(kc), kvn, 1), fill<<<1024, 256>>>(static_cast<__nv_bfloat16*>(vc), kvn, 2);
  fill<<<1, 256>>>(q, B * Hq * D, 3);
  std::vector<int> t(nb); for (int i = 0; i < nb; ++i) t[i] = i; std::shuffle(t.begin(), t.end(), std::mt19937(5));
  cudaMalloc(&table, nb * 4); cudaMemcpy(table, t.data(), nb * 4, cudaMemcpyHostToDevice);
  std::vector<int> lh(B, L); cudaMalloc(&lens, B * 4); cudaMemcpy(lens, lh.data(), B * 4, cudaMemcpyHostToDevice);
  cudaMalloc(&wo, size_t(B) * Hk * splits * 16 * D * 4); cudaMalloc(&wl, size_t(B) * Hk * splits * 16 * 4);
  cudaMalloc(&cnt, B * Hk * 4); cudaMemset(cnt, 0, B * Hk * 4);
  PagedParams p; p.q = q; p.k_cache = kc; p.v_cache = vc; p.block_table = table; p.seq_lens = lens; p.o = o;
  p.q_batch_stride = Hq * D; p.q_head_stride = D;
  p.k_page_stride = p.v_page_stride = ps * Hk * D; p.k_slot_stride = p.v_slot_stride = Hk * D; p.k_head_stride = p.v_head_stride = D;
  p.bt_batch_stride = nb / B; p.o_batch_stride = Hq * D; p.o_head_stride = D;
  p.batch = B; p.seqlen_q = 1; p.num_heads_q = Hq; p.num_heads_kv = Hk; p.head_dim = p.head_dim_v = D;
  p.page_size = ps; p.num_pages = nb; p.max_blocks = nb / B; p.scale = 1.f / sqrtf(D); p.q_dtype = DType::bf16;
  p.kv_dtype = kFp8 ? DType::fp8_e4m3 : DType::bf16;
  SplitWorkspace ws; ws.o = wo; ws.lse = wl; ws.counters = cnt; ws.chunk_tokens = (L + splits - 1) / splits; ws.max_splits = splits;
  const bool tma = !(argc > 4 && std::strcmp(argv[4], "rows") == 0);
  auto kern = tma ? paged_decode_kernel<__nv_bfloat16, 128, kFp8, true, kWide>
                  : paged_decode_kernel<__nv_bfloat16, 128, kFp8, false, kWide>;
  using Tr = PagedTraits<128, kFp8, kWide>;
  const size_t smem = std::max({Tr::kRingBytes, Tr::kTmaRingBytes, Tr::kMergeBytes});  // either ring, or the merge
  cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
  PagedTmaMaps maps{};
  maps.reorder_after = 8;  // as the library does by default
  if (tma && (!make_tma_map(&maps.k, p.kv_dtype, p.k_cache, D, ps, Hk, nb, p.k_slot_stride, p.k_head_stride, p.k_page_stride, std::min(ps, Tr::kBN)) ||
              !make_tma_map(&maps.v, p.kv_dtype, p.v_cache, D, ps, Hk, nb, p.v_slot_stride, p.v_head_stride, p.v_page_stride, std::min(ps, Tr::kBN)))) {
    printf("make_tma_map failed\n");
    return 1;
  }
  printf("ring filled by %s\n", tma ? "TMA tensor copies" : "bulk row copies");
  void* flush; const size_t flush_bytes = size_t(256) << 20; cudaMalloc(&flush, flush_bytes);
  dim3 grid(splits, Hk, B);
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  for (int rep = 0; rep < 6; ++rep) {
    cudaMemsetAsync(flush, 0, flush_bytes);
    cudaEventRecord(e0);
    kern<<<grid, Tr::kBlock, smem>>>(p, ws, maps);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms, e0, e1);
    std::vector<unsigned long long> tr(8192 * 8);
    cudaMemcpyFromSymbol(tr.data(), g_trace, tr.size() * 8);
    int n = splits * Hk * B;
    unsigned long long t0 = ~0ull;
    for (int i = 0; i < n; ++i) t0 = std::min(t0, tr[i * 8]);
    auto stat = [&](int k, const char* name) {
      std::vector<double> v; for (int i = 0; i < n; ++i) if (tr[i * 8 + k] >= t0) v.push_back((tr[i * 8 + k] - t0) / 1000.0);
      if (v.empty()) return; std::sort(v.begin(), v.end());
      printf("  %-22s n=%4zu min %7.2f p10 %7.2f med %7.2f p90 %7.2f max %7.2f us\n", name, v.size(), v[0],
             v[v.size() / 10], v[v.size() / 2], v[v.size() * 9 / 10], v.back());
    };
    printf("rep %d: event %.2f us = %.0f GB/s (B %d, L %d, %d splits, %d CTAs, %s)\n", rep, ms * 1000,
           2.0 * es * B * L * Hk * D / (ms * 1e6), B, L, splits, n, kFp8 ? (kWide ? "fp8 cache, 8 warps" : "fp8 cache, 4 warps") : "bf16 cache");
    if (rep >= 4) {
      std::vector<unsigned long long> tt(4 * 1024 * 3);
      cudaMemcpyFromSymbol(tt.data(), g_tiles, tt.size() * 8);
      const int ntile = (L / splits + Tr::kBN - 1) / Tr::kBN;
      for (int c = 0; c < std::min(B, 4); ++c) {
        auto at = [&](int i, int ph) { return double(tt[(c * 1024 + i) * 3 + ph]) / 1000.0; };
        double wait = 0, qk = 0, pv = 0;
        for (int i = 1; i < ntile; ++i)
          wait += at(i, 0) - at(i - 1, 2), qk += at(i, 1) - at(i, 0), pv += at(i, 2) - at(i, 1);
        const double n1 = ntile - 1;
        printf("  CTA z=%d: %d tiles, per tile (us): wait %.3f, QK+softmax %.3f, PV %.3f; periods:",
               c, ntile, wait / n1, qk / n1, pv / n1);
        for (int i = 1; i < std::min(ntile, 7); ++i) printf(" %.2f", at(i, 0) - at(i - 1, 0));
        printf("\n");
      }
      stat(0, "start"); stat(1, "first tile landed"); stat(2, "loop done"); stat(3, "partial written"); stat(4, "merge done");
      auto span = [&](int k0, int k1, const char* name) {  // per CTA: event k1 minus event k0
        std::vector<double> v; for (int i = 0; i < n; ++i) if (tr[i * 8 + k0] >= t0 && tr[i * 8 + k1] >= tr[i * 8 + k0]) v.push_back((tr[i * 8 + k1] - tr[i * 8 + k0]) / 1000.0);
        if (v.empty()) return; std::sort(v.begin(), v.end());
        double sum = 0; for (double x : v) sum += x;
        printf("  %-22s n=%4zu min %7.2f med %7.2f max %7.2f mean %7.2f us\n", name, v.size(), v[0], v[v.size() / 2], v.back(), sum / v.size());
      };
      span(0, 1, "CTA: to first tile"); span(0, 2, "CTA: start to loop done");
      if (rep == 5) {  // is the spread of 'loop done' a property of the sequence, the kv head or the SM?
        auto done = [&](int i) { return (tr[i * 8 + 2] - t0) / 1000.0; };
        auto group = [&](const char* name, int ng, auto key) {
          std::vector<double> lo(ng, 1e30), hi(ng, 0), sum(ng, 0); std::vector<int> cnt(ng, 0);
          for (int i = 0; i < n; ++i) { const int k = key(i); const double d = done(i);
            lo[k] = std::min(lo[k], d); hi[k] = std::max(hi[k], d); sum[k] += d; ++cnt[k]; }
          printf("  loop done by %s (mean/min/max):", name);
          for (int k = 0; k < ng; ++k) if (cnt[k]) printf(" [%d] %.1f/%.1f/%.1f", k, sum[k] / cnt[k], lo[k], hi[k]);
          printf("\n");
        };
        group("sequence", B, [&](int i) { return i / (splits * Hk); });
        group("kv head", Hk, [&](int i) { return i / splits % Hk; });
        group("smid/8", 17, [&](int i) { return int(tr[i * 8 + 7]) / 8; });
        printf("  (smid, loop done) in smid order:");
        std::vector<std::pair<int, double>> v; for (int i = 0; i < n; ++i) v.push_back({int(tr[i * 8 + 7]), done(i)});
        std::sort(v.begin(), v.end()); for (auto& x : v) printf(" %d:%.1f", x.first, x.second); printf("\n");
      } }
    cudaMemcpyToSymbol(g_trace, std::vector<unsigned long long>(8192 * 8, 0).data(), 8192 * 8 * 8);
  }
  printf("err: %s\n", cudaGetErrorString(cudaGetLastError()));
  return 0;
}
