// page_order.cuh — the order in which the TMA producer visits a piece's pages (a policy of the
// producer: the kernel's masks and key ranges never see it).
//
// A box is min(page size, tile) keys of one page, what one tensor copy reads; a tile is a whole
// number of boxes. Pages come in whatever order the cache's owner allocated them, and a random
// order costs DRAM efficiency: when every CTA visits its pages grouped by address range, all of
// them sweep the cache together (random pages, B16 L8192: +1.8 %, as much as pages in address
// order give; bench/NOTES.md). So the boxes after the first `reorder_after` tiles (in sequence
// order while the order is made: its page-id loads queue behind the first tiles' copies, and
// ordering after 3 tiles instead of 8 lost 2 % at B16) are visited grouped by their page's
// address range, in sequence order within a range (order_boxes: a stable counting sort of up to
// kOrderBoxes boxes by three idle producer warps); further boxes keep sequence order. The order
// depends on the page ids alone, so results stay bitwise reproducible. Box i holds keys
// first + i * box .. + box - 1 wherever it is visited.
#pragma once

#include <cstdint>

#include "common/copy.cuh"
#include "decode/paged/paged_kv.cuh"

namespace cuattn {

inline constexpr int kOrderBoxes = 1024;  // boxes one sort orders (the rest keep sequence order)

// The sort: boxes 0 .. n - 1 of a CTA's reordered range
// (box i: keys first_key + i * box_keys ..) grouped into 32 address ranges of their pages, in
// sequence order within a range, s_order[position] = i. Three warps (w = 0, 1, 2; named barrier
// 3) each take a third of the boxes in rounds of 32: they count each range, then place each box
// after the earlier ones of its range (those of the warps before w, of earlier rounds, and of
// lower lanes in this round: match_any ranks a round's boxes of one range by lane). A stable
// counting sort, so the order depends on the page ids alone.
template <typename KV>
CUATTN_DEVICE void order_boxes(int w, int lane, int n, int first_key, int box_keys, const PagedKV<KV>& kv, int* s_order,
                               uint8_t* s_bucket, int* s_count) {
  constexpr int kRanges = 32;  // one a lane
  const int per = (n + 2) / 3, i0 = min(n, w * per), i1 = min(n, i0 + per);
  int* count = s_count + w * kRanges;  // this warp's boxes per range, then its next positions
  count[lane] = 0;
#pragma unroll 4
  for (int i = i0 + lane; i < i1; i += 32) {  // each box's address range, the page ids in flight
    const int j = first_key + i * box_keys;
    const int id = kv.page(kv.page_id(j));
    s_bucket[i] = uint8_t(int64_t(id) * kRanges / kv.num_pages);
  }
  __syncwarp();
  auto round = [&](int base, int& k, unsigned& same) {  // true: lane's box is in this warp's third
    const int i = base + lane;
    k = i < i1 ? s_bucket[i] : kRanges + lane;  // past the end: a range of its own
    same = __match_any_sync(~0u, k);
    return i < i1;
  };
  for (int base = i0; base < i1; base += 32) {
    int k;
    unsigned same;
    if (round(base, k, same) && lane == __ffs(same) - 1) count[k] += __popc(same);
    __syncwarp();
  }
  named_barrier_sync(3, 96);
  // Range `lane`: its first position overall, plus the boxes of the warps before this one.
  const int c0 = s_count[lane], c1 = s_count[kRanges + lane], c2 = s_count[2 * kRanges + lane];
  const int total = c0 + c1 + c2;
  int incl = total;
#pragma unroll
  for (int o = 1; o < 32; o *= 2) {
    const int y = __shfl_up_sync(~0u, incl, o);
    if (lane >= o) incl += y;
  }
  named_barrier_sync(3, 96);  // every warp has read every count
  count[lane] = incl - total + (w > 0 ? c0 : 0) + (w > 1 ? c1 : 0);
  __syncwarp();
  for (int base = i0; base < i1; base += 32) {
    int k;
    unsigned same;
    const bool mine = round(base, k, same);
    if (mine) s_order[count[k] + __popc(same & ((1u << lane) - 1u))] = base + lane;
    __syncwarp();
    if (mine && lane == __ffs(same) - 1) count[k] += __popc(same);
    __syncwarp();
  }
}


// Which box a piece's tile position visits. Sequence order (reorder false: persistent CTAs, which
// keep one order buffer for a piece they have not started, short pieces, reorder_after 0) or, for
// positions o_first .. o_end - 1 (tiles o_tile on), the sorted order in s_order.
struct BoxOrder {
  bool reorder;
  int o_tile, o_first, o_end;  // first reordered tile; its first box; the end of the sorted boxes
  const int* s_order;          // [position - o_first] -> box - o_first

  CUATTN_DEVICE BoxOrder(bool allowed, int reorder_after, int min_tiles, int n_tiles, int boxes_per_tile,
                         const int* order)
      : o_tile(max(reorder_after, min_tiles)), s_order(order) {
    o_first = o_tile * boxes_per_tile;
    o_end = min(n_tiles * boxes_per_tile, o_first + kOrderBoxes);
    reorder = allowed && reorder_after > 0 && o_end - o_first > 1;
  }
  CUATTN_DEVICE int at(int pos) const {
    return reorder && pos >= o_first && pos < o_end ? o_first + s_order[pos - o_first] : pos;
  }
  // The producer reads the order for the first time when it loads the page ids of tile o_tile,
  // right after issuing tile o_tile - 1.
  CUATTN_DEVICE bool needed_after(int tile) const { return reorder && tile + 1 == o_tile; }
};

}  // namespace cuattn
