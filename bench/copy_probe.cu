// bench/copy_probe.cu — how fast can an H100 stream HBM into shared memory through the copy engine,
// by copy size and access pattern, with no compute at all? The question behind it: the paged
// decode kernel's 256-byte row copies reach ~2.87 TB/s in-kernel where cuDNN's decode reads 3.04.
//
// Each CTA streams its share of a 512 MB buffer in 32 KB tiles through a 3-stage shared-memory
// ring: a producer warpgroup issues bulk copies (cp.async.bulk, completing on the stage's full
// mbarrier), one consumer warp waits for each tile and releases it at once. Modes:
//   rows256    128 copies of 256 B a tile (one per producer thread), the CTA's rows contiguous
//   nhd256     128 copies of 256 B a tile, rows 2 KB apart: 8 CTAs read one region interleaved,
//              as the 8 kv heads of an NHD page do
//   chunk4k    8 copies of 4 KB a tile
//   tile32k    1 copy of 32 KB a tile
//   tma_rows   4 TMA tensor copies a tile (boxes of 64 rows x 64 columns of 16-bit, 128-byte
//              swizzle, L2 promotion 256 B: the flash kernel's maps), the CTA's rows contiguous
//   tma_nhd    16 TMA tensor copies a tile, one per NHD page (16 slots x 8 kv heads x 128 dims)
//              and 64-column panel, this CTA's kv head only: what a TMA decode ring would issue
//   ldg        no copies: every thread reads 16 bytes at a time into registers (the read ceiling)
//   ldg256     the same with the .L2::256B prefetch hint (TMA maps above ask L2 for 256 B too)
// GB/s = bytes / median CUDA-event time over 15 calls, a 256 MB zeroing L2 flush before each (as
// bench.py), for 128 CTAs (one an SM, like cuDNN's decode) and 264 (two an SM, like ours).
// Arguments: the MiB streamed (default 512: B16 L8192's K and V; 128 is B1 L32768's) and the
// flush, `write` (zeroing, default) or `read` (a kernel reads the flush buffer: L2 left clean).
// The fastest mode at a size is a ceiling for any kernel that reads those bytes once.
// Not part of the build:
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Icuda -Icpp/include -Icpp/src \
//     -o /tmp/cp bench/copy_probe.cu && /tmp/cp [MiB=512] [write|read]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/copy.cuh"
#include "common/tma_host.cuh"  // make_tma_map

using namespace cuattn;

constexpr int kTile = 32768, kStages = 3, kProducers = 128, kBlock = kProducers + 32;
enum Mode { kRows256, kNhd256, kChunk4k, kTile32k, kTmaRows, kTmaNhd, kLdg, kLdg256, kModes };
const char* kNames[] = {"rows256", "nhd256", "chunk4k", "tile32k", "tma_rows", "tma_nhd", "ldg", "ldg256"};

// 16 bytes through the non-coherent path with a 256-byte L2 prefetch hint.
__device__ __forceinline__ uint4 ld_l2_256(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__global__ void __launch_bounds__(kBlock)
probe(const char* src, size_t per_cta, int mode, unsigned* sink, const __grid_constant__ CUtensorMap map) {
  extern __shared__ __align__(128) char ring_raw[];
  char* ring = ring_raw + (1024 - smem_addr(ring_raw) % 1024) % 1024;  // the 128-byte swizzle's alignment
  __shared__ __align__(8) uint64_t full[kStages], empty[kStages];
  const int tid = threadIdx.x, n_tiles = int(per_cta / kTile);
  const char* base = src + blockIdx.x * per_cta;
  if (mode == kLdg || mode == kLdg256) {  // all 160 threads: 16-byte loads, 16 in flight each, folded
    const uint4* p = reinterpret_cast<const uint4*>(base);
    const size_t n = per_cta / 16;
    unsigned acc = 0;
    for (size_t i = tid; i < n; i += 16 * kBlock) {
      uint4 v[16];
#pragma unroll
      for (int u = 0; u < 16; ++u) {
        const bool in = i + u * kBlock < n;
        v[u] = !in ? make_uint4(0, 0, 0, 0) : mode == kLdg ? __ldcs(p + i + u * kBlock) : ld_l2_256(p + i + u * kBlock);
      }
#pragma unroll
      for (int u = 0; u < 16; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    if (acc == 0x12345678u) sink[0] = acc;  // keeps the loads
    return;
  }
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) mbar_init(&full[s], kProducers), mbar_init(&empty[s], 32);
    mbar_fence_init();
  }
  __syncthreads();
  if (tid >= 32) {  // producers
    const int t = tid - 32;
    for (int it = 0; it < n_tiles; ++it) {
      const int s = it % kStages;
      if (it >= kStages) mbar_wait(&empty[s], uint32_t(it / kStages - 1) & 1u);
      char* dst = ring + s * kTile;
      uint32_t bytes = 0;
      const char* from = nullptr;
      if (mode == kRows256) {
        bytes = 256, from = base + size_t(it) * kTile + t * 256;
        dst += t * 256;
      } else if (mode == kNhd256) {  // this CTA is head h of a group of 8 sharing one region
        const int h = blockIdx.x % 8;
        const size_t row = size_t(it) * 128 + t;
        bytes = 256, from = src + (blockIdx.x / 8) * 8 * per_cta + (row * 8 + h) * 256;
        dst += t * 256;
      } else if (mode == kTmaRows || mode == kTmaNhd) {
        if (t == 0) {
          mbar_arrive_expect_tx(&full[s], kTile);
          if (mode == kTmaRows) {  // rows of 256 B; this CTA's start at blockIdx.x * per_cta
            const int row0 = int(blockIdx.x * (per_cta / 256) + size_t(it) * 128);
            for (int rb = 0; rb < 2; ++rb)
              for (int pn = 0; pn < 2; ++pn)
                tma_load_4d(dst + (rb * 2 + pn) * 8192, &map, &full[s], 64 * pn, row0 + 64 * rb, 0, 0);
          } else {  // pages of 32 KB: 8 of this group's pages a tile, head h's 16 rows of each
            const int h = blockIdx.x % 8;
            const int page0 = int((blockIdx.x / 8) * 8 * per_cta / kTile + size_t(it) * 8);
            for (int pg = 0; pg < 8; ++pg)
              for (int pn = 0; pn < 2; ++pn)
                tma_load_4d(dst + (pg * 2 + pn) * 2048, &map, &full[s], 64 * pn, 0, h, page0 + pg);
          }
        } else {
          mbar_arrive_expect_tx(&full[s], 0);
        }
        continue;
      } else if (mode == kChunk4k) {
        if (t < 8) bytes = 4096, from = base + size_t(it) * kTile + t * 4096, dst += t * 4096;
      } else if (t == 0) {
        bytes = kTile, from = base + size_t(it) * kTile;
      }
      mbar_arrive_expect_tx(&full[s], bytes);
      if (bytes) bulk_copy(dst, from, bytes, &full[s]);
    }
  } else {  // the consumer warp: wait, release
    for (int it = 0; it < n_tiles; ++it) {
      const int s = it % kStages;
      mbar_wait(&full[s], uint32_t(it / kStages) & 1u);
      mbar_arrive(&empty[s]);
    }
  }
}

// The read flush: every line of the 256 MB buffer read once (folded into *sink so it stays).
__global__ void read_flush(const uint4* p, size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    acc ^= p[i].x;
  if (acc == 0x12345678u) *sink = acc;
}

int main(int argc, char** argv) {
  const size_t total = size_t(argc > 1 ? atoi(argv[1]) : 512) << 20, flush_bytes = size_t(256) << 20;
  const bool read_flush_mode = argc > 2 && std::string(argv[2]) == "read";
  char *src, *flush;
  unsigned* sink;
  cudaMalloc(&src, total + (size_t(8) << 20));
  cudaMalloc(&flush, flush_bytes);
  cudaMalloc(&sink, 4);
  cudaMemset(src, 1, total);
  const int smem = kStages * kTile + 1024;
  CUtensorMap rows_map, nhd_map;
  const bool maps_ok =
      make_tma_map(&rows_map, DType::bf16, src, 128, int64_t(total / 256), 1, 1, 128, 128, 128, 64) &&
      make_tma_map(&nhd_map, DType::bf16, src, 128, 16, 8, int64_t(total / kTile), 1024, 128, 16384, 16);
  if (!maps_ok) printf("tensor maps unavailable: the tma modes will not run\n");
  cudaFuncSetAttribute(probe, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaMemset(flush, 0, flush_bytes);
  printf("%zu MiB streamed, %s flush\n", total >> 20, read_flush_mode ? "read" : "zeroing");
  printf("%-8s %6s %10s %8s\n", "mode", "CTAs", "median us", "GB/s");
  for (int grid : {128, 264}) {
    const size_t per_cta = total / grid / kTile * kTile;
    for (int mode = 0; mode < kModes; ++mode) {
      if ((mode == kTmaRows || mode == kTmaNhd) && !maps_ok) continue;
      const CUtensorMap& map = mode == kTmaNhd ? nhd_map : rows_map;
      std::vector<float> ms;
      for (int rep = 0; rep < 18; ++rep) {
        if (read_flush_mode)
          read_flush<<<1056, 256>>>(reinterpret_cast<const uint4*>(flush), flush_bytes / 16, sink);
        else
          cudaMemsetAsync(flush, 0, flush_bytes);
        cudaEventRecord(e0);
        probe<<<grid, kBlock, smem>>>(src, per_cta, mode, sink, map);
        cudaEventRecord(e1);
        cudaEventSynchronize(e1);
        float t;
        cudaEventElapsedTime(&t, e0, e1);
        if (rep >= 3) ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      printf("%-8s %6d %10.1f %8.0f\n", kNames[mode], grid, med * 1e3, per_cta * grid / (med * 1e6));
    }
  }
  printf("err: %s\n", cudaGetErrorString(cudaGetLastError()));
}
