// dispatch.cuh — from a runtime head dim (or pair) to the template instantiation that the build
// has, through the tables of cuattn/launch.h: f(std::integral_constant<int, D>{}...) for the
// entry that matches. The host has chosen an instantiation this build has, so a miss is a bug.
#pragma once

#include <cstddef>
#include <iterator>
#include <type_traits>

#include "cuattn/launch.h"

namespace cuattn {

template <int V>
using Int = std::integral_constant<int, V>;

// f(Int<D>{}) for the entry D of kList (an array of head dims) equal to d and built.
template <const auto& kList, size_t I = 0, class F>
void dispatch_head_dim(int d, F&& f) {
  if constexpr (I == std::size(kList)) {
    throw Error("internal: no kernel instantiation for head_dim " + std::to_string(d));
  } else {
    constexpr int kD = kList[I];
    if constexpr (head_dim_built(kD)) {
      if (d == kD) return f(Int<kD>{});
    }
    dispatch_head_dim<kList, I + 1>(d, f);
  }
}

// f(Int<D>{}, Int<Dv>{}) for the entry of kFlashHeadDims equal to (d, dv) and built.
template <size_t I = 0, class F>
void dispatch_flash_dims(int d, int dv, F&& f) {
  if constexpr (I == std::size(kFlashHeadDims)) {
    throw Error("internal: no flash instantiation for head_dim " + std::to_string(d) + " / " + std::to_string(dv));
  } else {
    constexpr HeadDimPair kPair = kFlashHeadDims[I];
    if constexpr (head_dim_built(kPair.d)) {
      if (d == kPair.d && dv == kPair.dv) return f(Int<kPair.d>{}, Int<kPair.dv>{});
    }
    dispatch_flash_dims<I + 1>(d, dv, f);
  }
}

}  // namespace cuattn
