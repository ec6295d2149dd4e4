// oracle.h — the reference that --check compares with: float64, straightforward loops over the
// harness's own element conversions (tensor.h), parallel over rows with OpenMP. It shares no code
// with the library, so on the CPU --check compares the CPU backend with a second implementation.
//
// Large problems are cut down to a slice of about `budget` flops (the first batches and kv heads,
// the last query rows) so that --check stays quick; the row's note then says what was checked.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "env.h"
#include "tensor.h"

namespace harness {

// ---------------------------------------------------------------------------------------------
// Comparing. Tolerances on the rel-L2 error: bf16 1e-2, f16 2e-3, f32 1e-4; any NaN fails.
struct CheckResult {
  bool done = false, ok = true, nan = false;
  double rel_l2 = 0, max_abs = 0;
  std::string note;  // e.g. "checked: 1 batch(es), 2 kv head(s), last 256 rows"
};
double tolerance(DType t);
CheckResult compare(const std::vector<double>& got, const std::vector<double>& want, DType t);

// ---------------------------------------------------------------------------------------------
// Dense attention.

// The dense mask, as the library defines it (offset o = Sk - Sq): key j is visible from query i
// when j <= i + o (causal), i + o - left <= j <= i + o + right (each bound -1: none), and
// visible(i, j) when given (e.g. a document mask).
struct Mask {
  bool causal = false;
  int64_t left = -1, right = -1;
  std::function<bool(int64_t, int64_t)> visible;
};

// Which part of a [B, Sq, Hq, D] problem is checked: batches [0, batches), kv heads
// [0, kv_heads) with their query heads, the last `rows` query rows.
struct Slice {
  int64_t batches = 0, kv_heads = 0, rows = 0;
  bool whole = true;
  std::string describe() const;  // "" when whole
};
Slice choose_slice(int64_t B, int64_t Hkv, int64_t Sq, int64_t Sk, int64_t D, int64_t group,
                   const Mask& mask = Mask(), double budget = 2e9);

// out = softmax(q kᵀ · scale, masked) v on the slice. q [B, Sq, Hq, D], k [B, Sk, Hkv, D],
// v [B, Sk, Hkv, Dv]: host views in this (bshd) order, any dtype and strides (pass a bhsd
// tensor as transpose(view, 1, 2)). scale < 0: 1/√D. A row without a visible key is 0.
// Returns [batches, rows, kv_heads·G, Dv] row-major.
std::vector<double> reference_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                                        const Mask& mask, double scale, const Slice& s);
// The same slice of a measured output (host view in bshd order), row-major.
std::vector<double> slice_of(const TensorView& out, int64_t group, const Slice& s);
// Downloads a measured output ([B, S, H, Dv], or [B, H, S, Dv] when bhsd) and compares its
// slice with want.
CheckResult compare_slice(Tensor& out, bool bhsd, const std::vector<double>& want, int64_t group,
                          const Slice& s, const Env& env);

// MLA prefill: K[b, s, h, :] = latent[b, s, :] · proj[h] for b < nb, h < nh. latent [B, S, L],
// proj [H, L, E] host views. Returns a float64 tensor [nb, S, nh, E] (bshd).
Tensor reference_expand(const TensorView& latent, const TensorView& proj, int64_t nb, int64_t nh);

// ---------------------------------------------------------------------------------------------
// Paged KV caches.

// Sequence b's first `len` tokens from a paged cache [N, P, Hkv, D] (host view, any strides and
// dtype) times `scale`, as float64 [len, Hkv, D]. row: its block-table row.
std::vector<double> gather_pages(const TensorView& cache, const int32_t* row, int64_t len, double scale = 1.0);

// Paged attention for the first nb sequences: each one's K/V gathered from its pages, then
// causal attention of its T new tokens (the last T of the sequence). q [B, T, Hq, D]; caches
// [N, P, Hkv, D] (v may be a narrower view of k's memory, as in MLA); block_table int32
// [B, max_blocks] and seq_lens int32 [B] (host copies). Returns [nb, T, Hq, Dv] row-major.
std::vector<double> reference_paged(const TensorView& q, const TensorView& k_cache, const TensorView& v_cache,
                                    const Tensor& block_table, const Tensor& seq_lens, int64_t nb,
                                    double k_scale = 1.0, double v_scale = 1.0, double scale = -1);
// How many of n sequences of `cost_each` flops fit the budget (at least 1).
int64_t check_count(int64_t n, double cost_each, double budget = 2e9);
// Downloads `out`, seen as `as` ([B, ...]), and compares its first nb batches with want.
CheckResult compare_first(Tensor& out, const Shape& as, int64_t nb, const std::vector<double>& want, const Env& env);

// Visible (query, key) pairs of a dense mask without `visible`, for FLOP counts.
double visible_pairs(int64_t Sq, int64_t Sk, const Mask& mask);

}  // namespace harness
