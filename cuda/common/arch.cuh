// arch.cuh — architecture guards. Every PTX wrapper in cuda/common/ is compiled only for the
// targets that have the instruction; on any other target it traps loudly instead of silently
// computing garbage.
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define CUATTN_SM80 1
#endif

// sm90+: bulk global->shared copies completing on an mbarrier (the copy engine), used in place
// of per-thread cp.async where a kernel has both paths. A constant for `if constexpr`.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define CUATTN_SM90 1
#define CUATTN_BULK_COPY true
#else
#define CUATTN_BULK_COPY false
#endif

// sm_90a (the architecture-specific Hopper target): wgmma, setmaxnreg. Not defined for a plain
// sm_90 or any later target, so kernels built on these instructions trap there.
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define CUATTN_SM90A 1
#endif

#define CUATTN_DEVICE __device__ __forceinline__

// Called from a wrapper on a target that lacks its instruction.
CUATTN_DEVICE void arch_unsupported() {
#if defined(__CUDA_ARCH__)
  asm volatile("trap;");
#endif
}

// Programmatic dependent launch (sm90+). A grid launched with programmatic stream serialization
// may start while the kernel before it in the stream is still finishing; it must call
// grid_dependency_wait() before its first global memory access, which returns once that kernel
// has completed and its writes are visible. A no-op below sm90 and on a grid launched without
// the attribute.
CUATTN_DEVICE void grid_dependency_wait() {
#ifdef CUATTN_SM90
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the grids launched after this one as programmatic dependents start (once every CTA of this
// grid has called it or exited). It orders no memory: they still wait (grid_dependency_wait) for
// this grid's end before reading anything.
CUATTN_DEVICE void launch_dependents() {
#ifdef CUATTN_SM90
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

CUATTN_DEVICE int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
CUATTN_DEVICE int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : (x > hi ? hi : x); }

// Moves registers between warpgroups (all 128 threads of the group execute it; sm_90a, a no-op
// elsewhere): a producer group gives registers back, consumer groups take them.
template <int kRegs>
CUATTN_DEVICE void setmaxnreg_dec() {
#ifdef CUATTN_SM90A
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
CUATTN_DEVICE void setmaxnreg_inc() {
#ifdef CUATTN_SM90A
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
