// Portability macros, and integer helpers, shared by host code and CUDA translation units.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define NEEDLE_HD __host__ __device__ __forceinline__
#else
#define NEEDLE_HD inline
#endif

namespace needle {
// ceil(a / b) for b > 0, and 0 for a <= 0: without the overflow of (a + b - 1) / b near 2^63.
NEEDLE_HD constexpr int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? 0 : (a - 1) / b + 1; }
}  // namespace needle
