// scheduler.cuh — which pieces of work a paged decode CTA runs, and in which order.
//
// A unit is (sequence, kv head x row chunk): its 16 query rows (token, group member) over every
// key of the sequence. A piece of work is a key range of one unit, split `split` of the unit's
// `nsplits`; a split piece leaves a partial result in workspace slot slot(split), and the last of
// the unit's pieces to count on ws.counters[counter] merges them all in split order
// (combine_splits).
//   grid        (default) the launch grid is (split, unit, sequence), every split `chunk_tokens`
//               keys: a CTA takes the piece of its coordinates.
//   persistent  one wave of CTAs (the launcher), each taking the grid's pieces first,
//               first + stride, ... in turn (fp8 grids of several waves).
//   list        (ws.list.seq_start set) one wave of CTAs, CTA g taking the pieces of its share of
//               the work list (cuattn/worklist.h): every CTA gets the same number of keys whatever
//               the lengths, so one long sequence is read by as many CTAs as its length asks for.
#pragma once

#include <cstdint>

#include "common/types.cuh"
#include "cuattn/launch.h"
#include "cuattn/params.h"
#include "cuattn/worklist.h"

namespace cuattn {

struct Work {
  int b, yy;           // sequence, unit of the sequence
  int sq, n_rc;        // the sequence's query tokens, its row chunks per kv head
  int64_t q0;          // its first query row (mixed batches; else 0)
  int L;               // keys of the sequence (clamped)
  int k_begin, k_end;  // this piece's keys
  int split, nsplits;  // its place among the unit's pieces
  int counter;         // the unit's merge count: ws.counters[counter]
  int64_t slot0;       // grid: the unit's first slot (slot(split) = slot0 + split); list: its first CTA
};

// Units of a sequence: kv heads x row chunks of 16 query rows (token, group member).
template <bool kPersistent>
CUATTN_DEVICE int units_per_sequence(const PagedParams& p) {
  const int group = p.num_heads_q / p.num_heads_kv;
  return kPersistent ? p.num_heads_kv * ((group * p.seqlen_q + 15) / 16) : int(gridDim.y);
}

// The workspace slot of split `split` of w's unit.
template <bool kPersistent>
CUATTN_DEVICE int64_t piece_slot(const SplitWorkspace& ws, const Work& w, int split) {
  return kPersistent && ws.list.seq_start != nullptr ? split_slot(int(w.slot0), split) : w.slot0 + split;
}

// The grid's piece (split, yy, b) of a grid with n_y units a sequence: false when the sequence
// has fewer splits.
CUATTN_DEVICE bool grid_piece(const PagedParams& p, const SplitWorkspace& ws, int n_y, int split, int yy, int b,
                              Work& w) {
  const int L = p.num_pages > 0 ? min(max(p.seq_lens[b], 0), p.max_blocks * p.page_size) : 0;
  const int chunk = ws.chunk_tokens > 0 ? ws.chunk_tokens : max(L, 1);
  const int nsplits = min(max((L + chunk - 1) / chunk, 1), ws.max_splits);
  const int k_begin = split * chunk;
  const int unit = b * n_y + yy;  // (sequence, kv head, row chunk); < 2^31 (the launcher checks)
  w = Work{b, yy, p.seqlen_q, n_y / p.num_heads_kv, 0, L, k_begin, split == nsplits - 1 ? L : min(L, k_begin + chunk),
           split, nsplits, unit, int64_t(unit) * ws.max_splits};
  return split < nsplits;
}

// Runs run(w) for every piece of this CTA, in order. `between()` runs after each slot of a
// persistent CTA's loop, whether it held a piece or not (sm80: the consumers meet there, the
// merge scratch being the ring).
template <bool kPersistent, class Run, class Between>
CUATTN_DEVICE void for_each_piece(const PagedParams& p, const SplitWorkspace& ws, Run&& run, Between&& between) {
  const int n_y = units_per_sequence<kPersistent>(p);
  Work w;
  if (kPersistent && ws.list.seq_start != nullptr) {  // this CTA's share of the work list, in line order
    const WorkList& list = ws.list;
    WorkPiece pc;
    for (bool more = list.first(blockIdx.x, pc); more; more = list.next(blockIdx.x, pc)) {
      // Mixed batches: the sequence's rows, clamped inside q ([total_q, ...]) whatever cu_seqlens_q holds.
      int sq = p.seqlen_q;
      int64_t q0 = 0;
      if (p.cu_seqlens_q != nullptr) {
        q0 = min(int64_t(max(p.cu_seqlens_q[pc.seq], 0)), p.total_q);
        const int64_t n = int64_t(p.cu_seqlens_q[pc.seq + 1]) - p.cu_seqlens_q[pc.seq];
        sq = int(min(min(max(n, int64_t(0)), int64_t(p.seqlen_q)), p.total_q - q0));
      }
      w = Work{pc.seq, pc.unit, sq, list.units_of(pc.seq) / p.num_heads_kv, q0, list.seq_lens[pc.seq],
               int(pc.key_begin), int(pc.key_end), pc.split, pc.num_splits, pc.first_cta, pc.first_cta};
      run(w);
      between();
    }
  } else if constexpr (kPersistent) {
    const int n_units = ws.max_splits * n_y * p.batch;  // < 2^31 (the launcher checks)
    for (int u = blockIdx.x; u < n_units; u += gridDim.x) {
      if (grid_piece(p, ws, n_y, u % ws.max_splits, u / ws.max_splits % n_y, u / ws.max_splits / n_y, w)) run(w);
      between();
    }
  } else {
    if (grid_piece(p, ws, n_y, blockIdx.x, blockIdx.y, blockIdx.z, w)) run(w);
  }
}

}  // namespace cuattn
