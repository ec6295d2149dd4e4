// copy.cuh — asynchronous global->shared copies (cp.async, sm80+). 16 bytes per call; a false
// predicate zero-fills the destination without reading global memory, which is how tiles are
// padded past the end of a sequence or a head dim.
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

}  // namespace cuattn
