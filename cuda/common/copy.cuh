// copy.cuh — asynchronous global->shared copies.
//   cp.async (sm80+): 16 bytes per thread and call; a false predicate zero-fills the destination
//     without reading global memory, which is how tiles are padded past the end of a sequence or a
//     head dim. Completion is tracked per thread in commit groups.
//   cp.async.bulk (sm90+): one thread moves a contiguous run of bytes (a multiple of 16, 16-byte
//     aligned at both ends) through the copy engine; completion is counted in bytes on an
//     mbarrier, so many more bytes can be in flight per SM than per-thread copies allow.
#pragma once

#include "common/arch.cuh"

namespace cuattn {

CUATTN_DEVICE uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1 (.cg); zero-fill when !pred.
CUATTN_DEVICE void cp_async_16(void* smem, const void* gmem, bool pred) {
#ifdef CUATTN_SM80
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)),
               "l"(gmem), "r"(src_bytes));
#else
  arch_unsupported();
#endif
}

CUATTN_DEVICE void cp_async_commit() {
#ifdef CUATTN_SM80
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most N committed groups are still in flight.
template <int N>
CUATTN_DEVICE void cp_async_wait() {
#ifdef CUATTN_SM80
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ---- mbarrier + bulk copy (sm90) -------------------------------------------------------------

CUATTN_DEVICE void mbar_init(uint64_t* bar, int arrivals) {
#ifdef CUATTN_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(arrivals));
#else
  arch_unsupported();
#endif
}

// Makes mbarrier.init visible to the copy engine (then a __syncthreads before any use).
CUATTN_DEVICE void mbar_fence_init() {
#ifdef CUATTN_SM90
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// One arrival that also announces `bytes` more to come from bulk copies in this phase. The copies
// may land before or after it: the phase completes when both counts reach zero.
CUATTN_DEVICE void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef CUATTN_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
#else
  arch_unsupported();
#endif
}

// Spins until the phase with the given parity (0, 1, 0, ... for its 1st, 2nd, 3rd use) completed.
CUATTN_DEVICE void mbar_wait(uint64_t* bar, uint32_t parity) {
#ifdef CUATTN_SM90
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(smem_addr(bar)), "r"(parity)
        : "memory");
  } while (!done);
#else
  arch_unsupported();
#endif
}

// `bytes` (multiple of 16) from global to shared through the copy engine; completes on `bar`.
CUATTN_DEVICE void bulk_copy(void* smem, const void* gmem, uint32_t bytes, uint64_t* bar) {
#ifdef CUATTN_SM90
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_addr(smem)),
      "l"(gmem), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
#else
  arch_unsupported();
#endif
}

// Orders this thread's ordinary shared-memory writes before later copy-engine accesses.
CUATTN_DEVICE void fence_proxy_async() {
#ifdef CUATTN_SM90
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// One plain arrival on `bar` (a consumer releasing a buffer).
CUATTN_DEVICE void mbar_arrive(uint64_t* bar) {
#ifdef CUATTN_SM90
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#else
  arch_unsupported();
#endif
}

// A box of a 4-d tensor (coordinates innermost first, out-of-range elements zero-filled) from
// global to shared through the tensor memory accelerator, laid out and swizzled as the tensor map
// `tmap` (a __grid_constant__ kernel parameter) says; completes on `bar` with the box's full size
// in bytes, out-of-range elements included.
CUATTN_DEVICE void tma_load_4d(void* smem, const void* tmap, uint64_t* bar, int c0, int c1, int c2, int c3) {
#ifdef CUATTN_SM90
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(smem_addr(smem)),
      "l"(reinterpret_cast<uint64_t>(tmap)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar))
      : "memory");
#else
  arch_unsupported();
#endif
}

// The barriers of a kStages-deep ring of tiles filled by a producer and read by consumers. Ring
// tile gt (a CTA's tiles numbered on from one piece of work into the next) lives in slot
// gt % kStages; its `full` barrier completes phase gt / kStages when the tile has landed, its
// `empty` barrier when every consumer has released it.
template <int kStages>
struct StageBarriers {
  uint64_t* full;
  uint64_t* empty;
  // Producer: wait until ring tile gt's slot is free (its previous tile released).
  CUATTN_DEVICE void wait_free(int gt) const {
    if (gt >= kStages) mbar_wait(&empty[gt % kStages], uint32_t(gt / kStages - 1) & 1u);
  }
  CUATTN_DEVICE void wait_landed(int gt) const { mbar_wait(&full[gt % kStages], uint32_t(gt / kStages) & 1u); }
  CUATTN_DEVICE void release(int gt) const { mbar_arrive(&empty[gt % kStages]); }
};

// Barrier `id` (1..15; 0 is __syncthreads) among `threads` threads, e.g. one warpgroup.
CUATTN_DEVICE void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Arrives at barrier `id` without waiting (the other side of a producer/consumer handshake).
CUATTN_DEVICE void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace cuattn
