// The numerically stable log-sum-exp of one row, shared by softmax.cu and cross_entropy.cu: each
// thread keeps a running (max, sum of exp(x - max)) over its strided share of the row (one pass,
// the "online softmax"), and the block merges the pairs with warp shuffles.
#pragma once
#include <cmath>

#include "backend_cuda/cuda_common.cuh"

namespace needle::cuda {

// A = float (bfloat16 / float32 rows) or double (float64 rows).
template <typename A>
struct MaxSum {
  A m;  // running maximum; NaN once a NaN was seen (so every result of the row is NaN, as on CPU)
  A s;  // sum of exp(x - m)
};

template <typename A>
__device__ __forceinline__ void max_sum_add(MaxSum<A>& st, A x) {
  if (x > st.m) {
    // exp(-inf) = 0 drops the (empty) old sum when m was still -inf.
    st.s = st.s * exp(st.m - x) + A(1);
    st.m = x;
  } else if (x != x) {
    st.m = x;
  } else if (x != -INFINITY) {
    // Skipping -inf keeps exp(-inf - -inf) = NaN out of the sum of a row that starts with -inf.
    st.s += exp(x - st.m);
  }
}

template <typename A>
__device__ __forceinline__ MaxSum<A> max_sum_merge(MaxSum<A> a, MaxSum<A> b) {
  A m = (a.m != a.m) ? a.m : (b.m != b.m) ? b.m : (a.m > b.m ? a.m : b.m);
  A sa = a.m == -INFINITY ? A(0) : a.s * exp(a.m - m);
  A sb = b.m == -INFINITY ? A(0) : b.s * exp(b.m - m);
  return MaxSum<A>{m, sa + sb};
}

// Merges every thread's (max, sum) over the block (blockDim.x a multiple of 32); every thread
// gets the result. `scratch` holds 32 pairs; the trailing barrier lets the caller reuse it.
template <typename A>
__device__ __forceinline__ MaxSum<A> block_merge_max_sum(MaxSum<A> st, MaxSum<A>* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum<A> other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
    st = max_sum_merge(st, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) scratch[warp] = st;
  __syncthreads();
  st = lane < nwarps ? scratch[lane] : MaxSum<A>{-INFINITY, A(0)};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum<A> other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
    st = max_sum_merge(st, other);
  }
  __syncthreads();
  return st;
}

// (max, sum) of row[0, cols) over the whole block (blockDim.x a multiple of 32); every thread gets
// the result. `scratch` holds 32 pairs.
template <typename A, typename T>
__device__ __forceinline__ MaxSum<A> block_max_sum(const T* row, int64_t cols, MaxSum<A>* scratch) {
  MaxSum<A> st{-INFINITY, A(0)};
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) max_sum_add(st, convert<A>(row[c]));
  return block_merge_max_sum(st, scratch);
}

// log(sum(exp(row))). As on the CPU (and torch.logsumexp), an infinite maximum is the answer
// itself: an all -inf (or empty) row gives -inf, a row holding +inf gives +inf.
template <typename A>
__device__ __forceinline__ A max_sum_logsumexp(MaxSum<A> st) {
  if (isinf(st.m)) return st.m;
  return st.m + log(st.s);
}

// Threads per row block: about 8 elements per thread, between one warp and 1024 threads.
inline int row_block_threads(int64_t cols) {
  int64_t t = (cols / 8 + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

}  // namespace needle::cuda
