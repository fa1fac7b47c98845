// Unsigned division by a divisor fixed on the host: a multiply-high, an add and a shift in place
// of a division (Granlund & Montgomery 1994; PyTorch's IntDivider). Exact for every dividend
// below 2^31, which the 32-bit strided plan (cuda_common.cuh) guarantees. Host-compilable, so the
// CPU tests (tests/cpp/test_int_divider.cpp) check it against the hardware's division in CI.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define NEEDLE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NEEDLE_HOST_DEVICE inline
#endif

namespace needle::cuda {

struct IntDivider {
  uint32_t divisor = 1, magic = 1, shift = 0;

  IntDivider() = default;
  // d in [1, 2^31].
  explicit IntDivider(uint32_t d) : divisor(d) {
    while (shift < 32 && (uint64_t(1) << shift) < d) ++shift;
    magic = static_cast<uint32_t>(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }

  // n / divisor for n < 2^31 (hi <= n, so hi + n cannot wrap).
  NEEDLE_HOST_DEVICE uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    uint32_t hi = __umulhi(n, magic);
#else
    uint32_t hi = static_cast<uint32_t>((uint64_t(n) * magic) >> 32);
#endif
    return (hi + n) >> shift;
  }
};

}  // namespace needle::cuda
