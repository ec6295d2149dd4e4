// cuattn/launch.h — the launch-only interface between the host library and the CUDA kernels.
//
// The host library validates every argument, fills the params structs, chooses the kernel
// variant (a FlashConfig or DecodeConfig), carves the workspace, and only then calls one of the
// launch functions below. They launch on `stream` and check the launch; they validate nothing
// and read no environment. The rules both sides need (head dims, tile sizes, split limits) are
// written once, here.
#pragma once

#include <cstdint>

#include "cuattn/cuattn.h"
#include "cuattn/params.h"
#include "cuattn/worklist.h"

namespace cuattn {

// ---- rules ------------------------------------------------------------------------------------
struct HeadDimPair {
  int d, dv;
};

// The flash kernels' (head dim, v head dim) instantiations, for the head dims a build selects
// (CMake's CUATTN_HEAD_DIMS names the first of each pair; cuda/sources.cmake reads this table).
// Other head dims up to kMaxHeadDim that are multiples of kHeadDimMultiple run padded to the
// smallest pair that covers them.
inline constexpr HeadDimPair kFlashHeadDims[] = {{64, 64}, {96, 96}, {128, 128}, {192, 128}, {192, 192}, {256, 256}};
// The Hopper (sm_90a) flash kernel is instantiated for every pair of kFlashHeadDims and is the
// default on sm_90 for all of them (measured faster than the portable kernel at every pair:
// docs/performance.md); the internal variant "portable=1" (or "hopper=0") asks for the other one.
// Head dims of the paged decode kernels (D == Dv).
inline constexpr int kPagedHeadDims[] = {64, 128, 256};
inline constexpr int kMaxHeadDim = 256, kHeadDimMultiple = 8;

inline constexpr int kMaxGridYZ = 65535;  // batch and heads ride on grid y / z
// The portable flash kernel's tile: query rows x keys a CTA step holds (block masks come in
// multiples of it). The Hopper kernel's is 128 x 128 or 128 x 64, or for calls without a block mask
// the longer 128 x 112 at D192 and 128 x 80 at D256 (the default there) and, with alt_tile, 128 x
// 176 at D128 (flash_fwd_sm90.cuh);
// calls it cannot take run the portable one.
inline constexpr int kFlashTileQ = 128, kFlashTileKV = 64;

// Split-KV decode: a CTA holds kDecodeRows query rows (GQA group x new tokens) of one kv head;
// a sequence is cut into at most kMaxDecodeSplits splits, each at least kMinDecodeChunk keys long
// (shorter ones cost more to merge than they save) unless the sequence is shorter.
inline constexpr int kDecodeRows = 16;
inline constexpr int kMaxDecodeSplits = 512;
inline constexpr int kMinDecodeChunk = 256;
// The decode work list (cuattn/worklist.h) as the paged kernel uses it: positions of 64 keys (the
// 4-warp kernel's tile), a unit's set-up and write-out worth two of them, and at most
// kListCtasPerSm persistent CTAs an SM (the host sizes the partial slots by it; the launcher
// picks the grid from the kernel's occupancy under that cap).
inline constexpr int kListGranule = 64;
inline constexpr int kListOverhead = 2;
inline constexpr int kListCtasPerSm = 4;

// The head dims this build instantiates, in CUDA builds: CMake's CUATTN_HEAD_DIMS as a string,
// e.g. "64:128" (a define with commas would not survive nvcc's command line).
#ifdef CUATTN_BUILT_HEAD_DIMS
inline constexpr char kBuiltHeadDims[] = CUATTN_BUILT_HEAD_DIMS;
#else
inline constexpr char kBuiltHeadDims[] = "";
#endif

template <int N>
constexpr bool contains(const int (&list)[N], int x) {
  for (int v : list)
    if (v == x) return true;
  return false;
}
constexpr bool head_dim_built(int d) {
  int x = 0;
  for (const char* c = kBuiltHeadDims;; ++c) {
    if (*c >= '0' && *c <= '9') {
      x = x * 10 + (*c - '0');
      continue;
    }
    if (d > 0 && x == d) return true;
    if (*c == '\0') return false;
    x = 0;
  }
}

// ---- launches ---------------------------------------------------------------------------------
// Where a paged call's split-KV partial results live (the plan's workspace, or the host's cached
// one); the kernels return every counter they use to zero.
struct SplitWorkspace {
  float* o = nullptr;       // [b, hk * row chunks, max_splits, kDecodeRows, dv]
  float* lse = nullptr;     // [b, hk * row chunks, max_splits, kDecodeRows]
  int* counters = nullptr;  // [b, hk * row chunks], zero between launches
  int chunk_tokens = 0;     // keys per split (a multiple of the page size)
  int max_splits = 1;
  // The work-list schedule (DecodeConfig::list) when list.seq_start is set: the launcher builds
  // the list on the device into these arrays (seq_start [batch + 1], seq_lens [batch]) and runs
  // a persistent grid of list.s.ctas CTAs; partial results then live in 2 * ctas slots of o / lse
  // (partial_slot) and counters are per CTA ([ctas]). The host fills everything but s.ctas.
  WorkList list;
  // Persistent sm90 kernels (DecodeConfig::drain, set by the launcher): the epilogue's scratch
  // lies in the ring, as in a one-unit CTA, instead of past it, and the producer starts a piece
  // only once the consumers are done with the previous one. Less shared memory a CTA (two 16-bit
  // D128 CTAs fit an SM instead of one), but the next piece's first tiles no longer arrive during
  // the epilogue.
  bool scratch_in_ring = false;
};

namespace kernels {
void attention(const AttnParams& p, const FlashConfig& c, Stream stream);
void naive_attention(const AttnParams& p, float* scores, Stream stream);  // scores [b*h, sq, sk]
void paged_attention(const PagedParams& p, const DecodeConfig& c, const SplitWorkspace& ws, Stream stream);
void append_paged_kv(const AppendParams& p, Stream stream);
void merge_states(const MergeParams& p, Stream stream);
// The decode scheduler's line for seq_lens [s.batch] (device), clamped to [0, max_len]:
// seq_start [s.batch + 1] and clamped_lens [s.batch] (device), and with cu_seqlens_q [s.batch + 1]
// (mixed batches) seq_units [s.batch], as build_worklist computes them on the host
// (cuattn/worklist.h). early_dependents: the next kernel in the stream, launched as a programmatic
// dependent that waits (griddepcontrol.wait) before it reads anything, may be scheduled as soon as
// this one starts (its launch and set-up then overlap the build).
void build_worklist(const int32_t* seq_lens, const WorkListShape& s, int64_t max_len, int64_t* seq_start,
                    int32_t* clamped_lens, Stream stream, const int32_t* cu_seqlens_q = nullptr,
                    int32_t* seq_units = nullptr, bool early_dependents = false);
}  // namespace kernels

}  // namespace cuattn
