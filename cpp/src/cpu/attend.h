// attend.h — the blocked core of the CPU backend, shared by dense, varlen, block-sparse, naive
// and paged attention (defined in attend.cpp).
//
// One call computes a tile of query rows of one (sequence, query head) with flash attention:
// keys in tiles, S = Q K^T and O += P V on a register-blocked GEMM micro-kernel, an online
// softmax in between. Inputs of any dtype are read through a RowSource and converted to float32
// tile by tile, so the extra memory is a few tiles per thread whatever the sequence length.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cuattn/params.h"
#include "cuattn/tensor.h"

namespace cuattn {
namespace cpu {
namespace detail {

// Rows of one (sequence, head) of q, k or v: row j starts at element index(j) of base and its
// elements are contiguous. Dense: row j at (first + j) * row_stride + offset. Paged: row j in
// page pages[j / page_size], slot j % page_size (row_stride is then the slot stride).
struct RowSource {
  const void* base = nullptr;
  DType dtype = DType::f32;
  float scale = 1.f;  // multiplies every element (fp8 cache scales)
  int64_t first = 0, row_stride = 0, offset = 0;
  const int32_t* pages = nullptr;
  int64_t page_stride = 0;
  int page_size = 0;

  int64_t index(int64_t j) const {
    if (!pages) return (first + j) * row_stride + offset;
    return pages[j / page_size] * page_stride + (j % page_size) * row_stride + offset;
  }
};

// The block mask of one (batch, head), as a table over (q block, kv block): kEmpty, kFull, or
// >= 0, the partial block's id in partial_bits.
struct BlockTable {
  const BlockMaskParams* bm = nullptr;
  std::vector<int32_t> state;  // [n_qb, n_kb]
};
BlockTable build_block_table(const BlockMaskParams& bm, int64_t b, int64_t h);

// One sequence and `group` query heads that share one kv head: lq query positions over lk
// keys, key j visible from position i when mask_visible(i, j, offset, causal, window_left,
// window_right) and the block mask (if any) agree. The heads' rows are packed, row r being
// position r / group of head r % group, so a K/V tile is converted once for all of them (GQA).
// Head g's position i reads q row i plus g * q_head_stride and writes element
// o_index0 + i * o_row_stride + g * o_head_stride of o, its lse to lse[g * lse_head_stride + i],
// with the sink sinks[g * sinks_stride] (sinks may be null).
struct HeadProblem {
  RowSource q, k, v;
  int64_t lq = 0, lk = 0, offset = 0;
  int d = 0, dv = 0;
  bool causal = false;
  int window_left = -1, window_right = -1;
  const BlockTable* blocks = nullptr;  // only with group == 1 (a block mask is per head)
  float scale = 1.f, softcap = 0.f;
  const float* sinks = nullptr;
  void* o = nullptr;
  DType o_dtype = DType::f32;
  int64_t o_index0 = 0, o_row_stride = 0;
  float* lse = nullptr;
  int group = 1;
  int64_t q_head_stride = 0, o_head_stride = 0, lse_head_stride = 0, sinks_stride = 0;
};

constexpr int64_t kQueryTile = 256; // query rows a work item owns
constexpr int64_t kKeyTile = 128;   // keys a step of the online softmax covers

// Packed rows [i0, i0 + m) of p (m <= kQueryTile; lq * group rows in all), keys in tiles of
// key_tile (the naive variant passes one tile as long as the sequence).
void attend_rows(const HeadProblem& p, int64_t i0, int64_t m, int64_t key_tile = kKeyTile);

// The work items of a batch, run on the thread pool: sequence b has `problems` problems (a kv
// head's packed query heads, or one head), each of rows(b) packed rows cut into kQueryTile
// tiles; work(b, problem, i0, m) attends rows [i0, i0 + m) of one. A sequence without rows has
// no items, so its keys are never read. Within a problem the last tile runs first: under a causal
// mask it sees the most keys, so the long items start early and the short ones fill the gaps.
void for_each_query_tile(int64_t batch, int64_t problems, const std::function<int64_t(int64_t)>& rows,
                         const std::function<void(int64_t, int64_t, int64_t, int64_t)>& work);

}  // namespace detail
}  // namespace cpu
}  // namespace cuattn
