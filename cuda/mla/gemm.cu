// gemm.cu — a small batched tensor-core GEMM (mma.sync m16n8k16, fp32 accumulation) for the
// MLA projections: K_h = Kl Kp[h], V_h = Vl Vp[h] (materialise), q' = q Kp[h]^T and
// out = o' Vp[h] (absorb). See GemmParams (cuattn/mla_params.h).
//
// A CTA computes a 64 x 64 tile of C with 4 warps (2 x 2, 32 x 32 each: two m16 x four n8
// accumulator tiles), stepping K by 32: A [64 x 32] and B ([32 x 64] row-major, or [64 x 32]
// when B is column-major) arrive by cp.async, zero-filled past the matrix edges, and are read
// with ldmatrix (transposed for a row-major B, as V in flash attention; plain for a
// column-major B, as K). One buffer: the projections are small next to the attention.
#include "common/copy.cuh"
#include "common/launch.cuh"
#include "common/mma.cuh"
#include "common/types.cuh"
#include "cuattn/mla_params.h"

namespace cuattn {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32, kThreads = 128;
constexpr int kAStride = kBK + 8, kBStride = kBN + 8, kBnStride = kBK + 8;  // +16 bytes a row

// Requests a [kRows x kCols] tile of a row-major matrix (row stride ld) at (r0, c0); rows >=
// rows_valid and columns >= cols_valid are zero-filled.
template <typename T, int kRows, int kCols, int kStride>
__device__ __forceinline__ void load_tile(T* smem, const T* base, int64_t ld, int r0, int c0, int rows_valid,
                                          int cols_valid, int tid) {
  constexpr int kChunks = kCols / 8;
  for (int c = tid; c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = r0 + r < rows_valid && c0 + col < cols_valid;
    cp_async_16(smem + r * kStride + col, ok ? base + int64_t(r0 + r) * ld + c0 + col : base, ok);
  }
}

template <typename T, bool kBNMajor>
__global__ void __launch_bounds__(kThreads) gemm_kernel(const __grid_constant__ GemmParams p) {
  __shared__ __align__(16) T sA[kBM * kAStride];
  __shared__ __align__(16) T sB[kBNMajor ? kBN * kBnStride : kBK * kBStride];
  const int tiles_n = (p.n + kBN - 1) / kBN;
  const int m0 = (blockIdx.x / tiles_n) * kBM, n0 = (blockIdx.x % tiles_n) * kBN;
  const int z2 = blockIdx.y, z1 = blockIdx.z;
  const T* a = static_cast<const T*>(p.a) + z1 * p.a_stride1 + z2 * p.a_stride2;
  const T* b = static_cast<const T*>(p.b) + z1 * p.b_stride1 + z2 * p.b_stride2;
  T* c = static_cast<T*>(p.c) + z1 * p.c_stride1 + z2 * p.c_stride2;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / 2, wn = warp % 2, g = lane / 4, t = lane % 4;

  float acc[2][4][4] = {};
  const uint32_t a_base = smem_addr(sA), b_base = smem_addr(sB);
  for (int k0 = 0; k0 < p.k; k0 += kBK) {
    load_tile<T, kBM, kBK, kAStride>(sA, a, p.lda, m0, k0, p.m, p.k, tid);
    if constexpr (kBNMajor) load_tile<T, kBN, kBK, kBnStride>(sB, b, p.ldb, n0, k0, p.n, p.k, tid);
    else load_tile<T, kBK, kBN, kBStride>(sB, b, p.ldb, k0, n0, p.k, p.n, tid);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kBK / 16; ++ks) {
      uint32_t af[2][4];
#pragma unroll
      for (int mi = 0; mi < 2; ++mi)
        ldmatrix_x4(af[mi], a_base + 2 * ((wm * 32 + mi * 16 + lane % 16) * kAStride + ks * 16 + (lane / 16) * 8));
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t bf[4];
        if constexpr (kBNMajor)
          ldmatrix_x4(bf, b_base + 2 * ((wn * 32 + np * 16 + lane % 8 + (lane / 16) * 8) * kBnStride + ks * 16 +
                                        ((lane / 8) % 2) * 8));
        else
          ldmatrix_x4_trans(bf, b_base + 2 * ((ks * 16 + lane % 8 + ((lane / 8) % 2) * 8) * kBStride + wn * 32 +
                                              np * 16 + (lane / 16) * 8));
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          mma_m16n8k16<T>(acc[mi][2 * np], af[mi], bf[0], bf[1]);
          mma_m16n8k16<T>(acc[mi][2 * np + 1], af[mi], bf[2], bf[3]);
        }
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int row = m0 + wm * 32 + mi * 16 + g + 8 * hf, col = n0 + wn * 32 + nt * 8 + 2 * t;
        if (row < p.m && col < p.n)
          *reinterpret_cast<uint32_t*>(c + int64_t(row) * p.ldc + col) =
              pack2<T>(acc[mi][nt][2 * hf], acc[mi][nt][2 * hf + 1]);
      }
}

template <typename T>
void launch(const GemmParams& p, cudaStream_t stream) {
  const int64_t tiles = int64_t((p.m + kBM - 1) / kBM) * ((p.n + kBN - 1) / kBN);
  if (tiles > INT32_MAX || p.batch1 > 65535 || p.batch2 > 65535)
    throw ValueError("gemm: the problem is too large for one launch (" + std::to_string(tiles) + " tiles, batch " +
                     std::to_string(p.batch1) + " x " + std::to_string(p.batch2) + ")");
  const dim3 grid(unsigned(tiles), p.batch2, p.batch1);
  if (p.b_n_major) gemm_kernel<T, true><<<grid, kThreads, 0, stream>>>(p);
  else gemm_kernel<T, false><<<grid, kThreads, 0, stream>>>(p);
  check_launch("gemm_kernel launch");
}

}  // namespace

namespace cuda {
void gemm(const GemmParams& p, CUstream_st* stream) {
  if (p.m == 0 || p.n == 0 || p.batch1 == 0 || p.batch2 == 0) return;
  if (p.dtype == DType::bf16) launch<__nv_bfloat16>(p, stream);
  else launch<__half>(p, stream);
}
}  // namespace cuda
}  // namespace cuattn
