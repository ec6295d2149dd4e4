// cuattn/worklist.h — the decode scheduler: one balanced work list for a persistent grid.
//
// A decode call is a set of work units: for every sequence b, `units` of them (kv heads x row
// chunks), each reading all seq_len[b] keys of its sequence once. The scheduler lays the units
// end to end on one line of cost, in granules of `granule` keys:
//
//     | unit (0,0)          | unit (0,1)          | ... | unit (b,u)             | ...
//     | oh | keys of seq 0  | oh | keys of seq 0  |     | oh | keys of seq b     |
//
// where `oh` (`overhead` granules) stands for a unit's fixed set-up and write-out, so that many
// short units are not mistaken for no work. The line, `total` granules long, is cut into `ctas`
// equal shares, one for each CTA of a persistent grid: CTA g owns positions
// [total * g / ctas, total * (g + 1) / ctas). Its share is a run of pieces, each a key range of
// one unit. A unit whose keys fall in more than one share is split, and the splits may start and
// end anywhere on granule boundaries, so one long sequence is read by as many CTAs as its length
// asks for while short ones stay whole. This is the balance of FlashMLA's and FlashInfer's
// schedulers, kept to one array: `seq_start[b]`, where sequence b's units begin on the line.
//
// Everything else is arithmetic on that array, done by each CTA for itself: no per-piece list,
// the same answer on the host (plan_decode) and on the device (built from seq_lens without a
// host sync), and the same split of the same lengths on every run, so results are bitwise
// reproducible.
//
// Mixed batches. When sequences have different numbers of query tokens (cu_seqlens_q: chunked
// prefills beside decodes), a sequence's unit count follows its own tokens: kv heads x row chunks
// of `rows` query rows, group rows a token (seq_units, written by the builders). A sequence of no
// query tokens has no units and takes no room on the line.
//
// Split units. A split piece leaves its normalised partial output and LSE in a slot of the
// workspace, and the last of the unit's pieces to finish merges all of them in split order
// (one combine, fixed order). Slots need no allocation by length: a piece that is a unit's first
// split ends its CTA's share, and any later split begins one, so a CTA holds at most two split
// pieces and `partial_slot` gives each its own: 2 * ctas slots cover every call.
#pragma once

#include <cstdint>

#include "cuattn/params.h"  // CUATTN_HD

namespace cuattn {

struct WorkListShape {
  int batch = 0;     // sequences
  int units = 1;     // units a sequence has (kv heads x row chunks), >= 1
  int granule = 64;  // keys a position stands for (the kernel's tile, a multiple of the page), >= 1
  int overhead = 1;  // positions a unit's set-up and write-out are worth, >= 1
  int ctas = 1;      // CTAs of the persistent grid, >= 1
  // Query rows a unit holds (MLA decode: 16, or 64 for the sm_90a kernel). Mixed batches (the
  // builders' cu_seqlens_q): units of a sequence of t query tokens are
  // heads_kv * ceil(group * t / rows), t clamped to [0, max_tokens].
  int heads_kv = 1, group = 1, rows = 16, max_tokens = 1;
};

// Units of a sequence with `tokens` query tokens in a mixed batch.
CUATTN_HD int packed_units(int64_t tokens, const WorkListShape& s) {
  const int64_t t = tokens < 0 ? 0 : tokens > s.max_tokens ? s.max_tokens : tokens;
  return int(s.heads_kv * ((s.group * t + s.rows - 1) / s.rows));
}

// A sequence's length as the list counts it: clamped to [0, max_len] (both builders).
CUATTN_HD int64_t clamp_len(int64_t len, int64_t max_len) { return len < 0 ? 0 : len > max_len ? max_len : len; }

// Units of sequence b: s.units, or in a mixed batch (cu_seqlens_q set) those of its query tokens.
CUATTN_HD int seq_unit_count(const int32_t* cu_seqlens_q, int b, const WorkListShape& s) {
  return cu_seqlens_q ? packed_units(int64_t(cu_seqlens_q[b + 1]) - cu_seqlens_q[b], s) : s.units;
}

// Positions one unit of a sequence of `len` keys takes on the line.
CUATTN_HD int64_t unit_cost(int64_t len, const WorkListShape& s) {
  return s.overhead + (len > 0 ? (len + s.granule - 1) / s.granule : 0);
}

// One key range of one unit, in a CTA's share.
struct WorkPiece {
  int seq = 0, unit = 0;
  int64_t key_begin = 0, key_end = 0;  // keys [key_begin, key_end) of the sequence (empty: a unit of no keys)
  int split = 0, num_splits = 1;       // this piece's place among its unit's pieces
  int first_cta = 0;                   // the CTA holding split 0
};

struct WorkList {
  WorkListShape s;
  const int64_t* seq_start = nullptr;  // [batch + 1]: line position of sequence b's first unit; [batch] = total
  const int32_t* seq_lens = nullptr;   // [batch], the lengths the list was built from (already clamped)
  const int32_t* seq_units = nullptr;  // [batch] units of each sequence (mixed batches), else s.units each

  CUATTN_HD int units_of(int b) const { return seq_units != nullptr ? seq_units[b] : s.units; }

  CUATTN_HD int64_t total() const { return seq_start[s.batch]; }
  // CTAs with a non-empty share: never more than there are positions, so every share has one.
  CUATTN_HD int active_ctas() const {
    const int64_t t = total();
    return int(t < s.ctas ? t : s.ctas);
  }
  // Share of CTA g: [begin(g), begin(g + 1)).
  CUATTN_HD int64_t begin(int g) const { return total() * g / active_ctas(); }
  // The CTA whose share holds position x (0 <= x < total).
  CUATTN_HD int cta_of(int64_t x) const {
    const int n = active_ctas();
    const int64_t g = ((x + 1) * n - 1) / total();
    return int(g < n - 1 ? g : n - 1);
  }
  // The sequence whose units hold position x (0 <= x < total): the last b with seq_start[b] <= x
  // (a sequence of no units starts where the next one does, so the last such b holds x). First a
  // guess in proportion to x, whose two bounds are read together: right at once for a batch of
  // equal lengths (a CTA's start-up then waits out one round trip, not one a halving); otherwise
  // a binary search.
  CUATTN_HD int seq_of(int64_t x) const {
    const int64_t t = total();
    int guess = t > 0 ? int(x * s.batch / t) : 0;
    guess = guess < 0 ? 0 : guess > s.batch - 1 ? s.batch - 1 : guess;
    const int64_t at = seq_start[guess], next = seq_start[guess + 1];
    if (at <= x && x < next) return guess;
    int lo = 0, hi = s.batch - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (seq_start[mid] <= x) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  // The piece of unit (b, u) in the share [lo, hi), if it has one (false otherwise).
  CUATTN_HD bool piece(int b, int u, int64_t lo, int64_t hi, WorkPiece& p) const {
    const int64_t len = seq_lens[b];
    const int64_t cost = unit_cost(len, s);
    const int64_t unit0 = seq_start[b] + int64_t(u) * cost;  // where the unit begins
    const int64_t keys0 = unit0 + s.overhead, keys1 = unit0 + cost;  // where its keys lie
    p.seq = b, p.unit = u;
    if (len == 0) {  // nothing to read: the share holding the unit's start writes its empty rows
      p.key_begin = p.key_end = 0, p.split = 0, p.num_splits = 1;
      p.first_cta = cta_of(unit0);
      return lo <= unit0 && unit0 < hi;
    }
    const int64_t a = lo > keys0 ? lo : keys0, e = hi < keys1 ? hi : keys1;
    if (a >= e) return false;  // this share holds only the unit's overhead, or none of it
    p.key_begin = (a - keys0) * s.granule;
    p.key_end = (e - keys0) * s.granule < len ? (e - keys0) * s.granule : len;
    p.first_cta = cta_of(keys0);
    p.num_splits = cta_of(keys1 - 1) - p.first_cta + 1;
    p.split = cta_of(a) - p.first_cta;
    return true;
  }

  // CTA g's pieces, in line order:
  //   WorkPiece p;
  //   for (bool more = list.first(g, p); more; more = list.next(g, p)) run(p);
  CUATTN_HD bool first(int g, WorkPiece& p) const {
    if (g >= active_ctas()) return false;
    const int64_t lo = begin(g);
    const int b = seq_of(lo);
    return scan(g, b, int((lo - seq_start[b]) / unit_cost(seq_lens[b], s)), p);
  }
  CUATTN_HD bool next(int g, WorkPiece& p) const {
    return p.unit + 1 < units_of(p.seq) ? scan(g, p.seq, p.unit + 1, p) : scan(g, p.seq + 1, 0, p);
  }
  // The first piece of CTA g's share in unit (b, u) or a later one.
  CUATTN_HD bool scan(int g, int b, int u, WorkPiece& p) const {
    const int64_t lo = begin(g), hi = begin(g + 1);
    for (; b < s.batch && seq_start[b] < hi; ++b, u = 0)
      for (; u < units_of(b); ++u) {
        if (seq_start[b] + int64_t(u) * unit_cost(seq_lens[b], s) >= hi) return false;
        if (piece(b, u, lo, hi, p)) return true;
      }
    return false;
  }
};

// The workspace slot of a split piece (num_splits > 1) held by CTA g: a first split ends its
// CTA's share and every later split begins one, so the two never collide.
CUATTN_HD int partial_slot(int g, int split) { return 2 * g + (split == 0 ? 1 : 0); }
// The slot of split `split` of a unit whose split 0 is held by `first_cta`: split i > 0 is held by
// CTA first_cta + i (the shares between a unit's first and last split hold nothing else).
CUATTN_HD int split_slot(int first_cta, int split) { return partial_slot(first_cta + split, split); }

// The line for `lens` (clamped to [0, max_len]): seq_start[0..batch] and the clamped lengths;
// with cu_seqlens_q [batch + 1] (mixed batches) also each sequence's units, seq_units [batch].
// The host builder; the device builder (kernels::build_worklist) computes the same integers.
inline void build_worklist(const int32_t* lens, const WorkListShape& s, int64_t max_len, int64_t* seq_start,
                           int32_t* clamped_lens, const int32_t* cu_seqlens_q = nullptr,
                           int32_t* seq_units = nullptr) {
  int64_t at = 0;
  for (int b = 0; b < s.batch; ++b) {
    const int64_t len = clamp_len(lens[b], max_len);
    clamped_lens[b] = int32_t(len);
    const int units = seq_unit_count(cu_seqlens_q, b, s);
    if (cu_seqlens_q) seq_units[b] = units;
    seq_start[b] = at;
    at += int64_t(units) * unit_cost(len, s);
  }
  seq_start[s.batch] = at;
}

}  // namespace cuattn
