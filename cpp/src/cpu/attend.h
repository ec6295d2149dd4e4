// attend.h — the per-(sequence, head) core of the CPU backend, shared by dense, varlen,
// block-sparse and paged attention (defined in attention.cpp).
#pragma once

#include <cstdint>

#include "cuattn/tensor.h"

namespace cuattn {
namespace cpu {
namespace detail {

// Extra visibility test on top of the causal / window mask (the block mask); null = none.
using ExtraMaskFn = bool (*)(const void* ctx, int64_t i, int64_t j);

void attend_head(const float* q, const float* k, const float* v, int64_t lq, int64_t lk, int d,
                 int dv, int64_t offset, bool causal, int window_left, int window_right,
                 ExtraMaskFn extra, const void* extra_ctx, float scale, float softcap,
                 const float* sink, bool materialise, void* o, DType o_dtype, int64_t o_index0,
                 int64_t o_row_stride, float* lse);

}  // namespace detail
}  // namespace cpu
}  // namespace cuattn
