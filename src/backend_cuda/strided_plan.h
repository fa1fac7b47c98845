// How the CUDA elementwise kernels walk K operands of one shape that are not all one dense run:
// the plan (dimensions coalesced on the host), its offsets at a linear index in int64, and the
// same in 32 bits with multiply-shift division where every index and offset fits. Host-compilable,
// so the CPU tests (tests/cpp/test_strided_plan.cpp) check the division and both plans' offsets
// against brute force in CI; the kernels (elementwise.cuh) call the very same functions.
#pragma once
#include <cstdint>

#include "ndarray/backend.h"
#include "ndarray/error.h"

#if defined(__CUDACC__)
#define NEEDLE_HOST_DEVICE __host__ __device__ __forceinline__
#define NEEDLE_UNROLL _Pragma("unroll")
#else
#define NEEDLE_HOST_DEVICE inline
#define NEEDLE_UNROLL
#endif

namespace needle::cuda {

// Unsigned division by a divisor fixed on the host: a multiply-high, an add and a shift in place
// of a division (Granlund & Montgomery 1994; PyTorch's IntDivider). Exact for every dividend
// below 2^31, which narrow_plan guarantees.
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

// A dim's size as each plan stores it: the size itself (int64 plan) or its divider (32-bit plan).
NEEDLE_HOST_DEVICE int64_t quotient(int64_t n, int64_t size) { return n / size; }
NEEDLE_HOST_DEVICE int64_t extent(int64_t size) { return size; }
NEEDLE_HOST_DEVICE uint32_t quotient(uint32_t n, const IntDivider& size) { return size.div(n); }
NEEDLE_HOST_DEVICE uint32_t extent(const IntDivider& size) { return size.divisor; }

// Element offsets of every operand at linear (row-major) index i, dims innermost first; the
// outermost dim's index is what is left of i, so it needs no division.
template <int K, typename Index, typename Size, typename Stride>
NEEDLE_HOST_DEVICE void strided_offsets(int ndim, const Size (&sizes)[kMaxDims],
                                        const Stride (&strides)[K][kMaxDims], Index i,
                                        Stride (&off)[K]) {
NEEDLE_UNROLL
  for (int k = 0; k < K; ++k) off[k] = 0;
NEEDLE_UNROLL
  for (int d = 0; d < kMaxDims; ++d) {
    if (d >= ndim - 1) {
      if (d == ndim - 1) {
NEEDLE_UNROLL
        for (int k = 0; k < K; ++k) off[k] += static_cast<Stride>(i) * strides[k][d];
      }
      break;
    }
    Index q = quotient(i, sizes[d]);
    Stride idx = static_cast<Stride>(i - q * extent(sizes[d]));
    i = q;
NEEDLE_UNROLL
    for (int k = 0; k < K; ++k) off[k] += idx * strides[k][d];
  }
}

// K operands of one shape (operand 0 is the output), dimensions coalesced on the host: size-1 dims
// dropped, and a dim merged into the next-inner one whenever every operand steps across it as if
// the two were one. A compact array becomes 1-D, a broadcast row (rows, cols) with stride 0.
// Strides are in elements of each operand's own dtype. Passed to kernels by value.
template <int K>
struct StridedPlan {
  using index_t = int64_t;   // linear element index
  using offset_t = int64_t;  // element offset of an operand
  int ndim = 0;  // innermost first
  int64_t numel = 1;
  int64_t shape[kMaxDims] = {};
  int64_t strides[K][kMaxDims] = {};

  NEEDLE_HOST_DEVICE void offsets(int64_t i, int64_t (&off)[K]) const {
    strided_offsets(ndim, shape, strides, i, off);
  }
  // True when every operand is one dense run (the contiguous fast path).
  bool contiguous() const {
    if (ndim == 0) return true;
    if (ndim > 1) return false;
    for (int k = 0; k < K; ++k)
      if (strides[k][0] != 1) return false;
    return true;
  }
};

// A StridedPlan whose element count and every operand's offsets fit in int32: index arithmetic
// in 32 bits with IntDivider, several times cheaper per element than 64-bit division. Built by
// narrow_plan; the N-D strided kernel uses it whenever it applies (every tensor under 2^31
// elements whose views span under 2^31 elements).
template <int K>
struct StridedPlan32 {
  using index_t = uint32_t;
  using offset_t = int32_t;
  int ndim = 0;  // innermost first, as in StridedPlan
  uint32_t numel = 0;
  IntDivider sizes[kMaxDims];
  int32_t strides[K][kMaxDims] = {};

  NEEDLE_HOST_DEVICE void offsets(uint32_t i, int32_t (&off)[K]) const {
    strided_offsets(ndim, sizes, strides, i, off);
  }
};

// Fills `out` from `p` and returns true when p's element count and every operand's extent
// (the sum of |stride| * (size - 1) over dims) fit in int32.
template <int K>
bool narrow_plan(const StridedPlan<K>& p, StridedPlan32<K>* out) {
  constexpr int64_t kMax = 0x7fffffff;
  if (p.numel > kMax) return false;
  for (int k = 0; k < K; ++k) {
    int64_t span = 0;
    for (int d = 0; d < p.ndim; ++d) {
      int64_t s = p.strides[k][d] < 0 ? -p.strides[k][d] : p.strides[k][d];
      if (s > kMax) return false;
      span += s * (p.shape[d] - 1);
      if (span > kMax) return false;
    }
  }
  out->ndim = p.ndim;
  out->numel = static_cast<uint32_t>(p.numel);
  for (int d = 0; d < p.ndim; ++d) {
    out->sizes[d] = IntDivider(static_cast<uint32_t>(p.shape[d]));
    for (int k = 0; k < K; ++k) out->strides[k][d] = static_cast<int32_t>(p.strides[k][d]);
  }
  return true;
}

template <int K>
StridedPlan<K> make_plan(const ArrayRef* const (&ops)[K], const char* opname) {
  StridedPlan<K> p;
  const ArrayRef& ref = *ops[0];
  for (int k = 1; k < K; ++k) {
    bool same = ops[k]->ndim == ref.ndim;
    for (int d = 0; same && d < ref.ndim; ++d) same = ops[k]->shape[d] == ref.shape[d];
    NEEDLE_CHECK(same, ValueError, "cuda ", opname, ": operand ", k, " has ", ops[k]->ndim,
                 " dims and a different shape from the output (", ref.ndim,
                 " dims); NDArray must broadcast operands to the output shape first");
  }
  p.numel = ref.numel();
  if (p.numel == 0) return p;
  for (int d = ref.ndim - 1; d >= 0; --d) {
    if (ref.shape[d] == 1) continue;
    bool merge = p.ndim > 0;
    for (int k = 0; merge && k < K; ++k)
      merge = ops[k]->strides[d] == p.strides[k][p.ndim - 1] * p.shape[p.ndim - 1];
    if (merge) {
      p.shape[p.ndim - 1] *= ref.shape[d];
      continue;
    }
    p.shape[p.ndim] = ref.shape[d];
    for (int k = 0; k < K; ++k) p.strides[k][p.ndim] = ops[k]->strides[d];
    ++p.ndim;
  }
  return p;
}

}  // namespace needle::cuda
