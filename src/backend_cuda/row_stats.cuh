// The numerically stable log-sum-exp of one row, shared by softmax.cu and cross_entropy.cu: each
// thread keeps a running (max, sum of exp(x - max)) over its strided share of the row (one pass,
// the "online softmax"), and the block merges the pairs with warp shuffles.
#pragma once
#include <cmath>

#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/row_cache.cuh"

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

// Eight consecutive elements at p (16-byte aligned) with 16-byte accesses: one for bfloat16, two
// for float32, four for float64. `v` must be 16-byte aligned (alignas(16) at the caller).
template <typename T>
__device__ __forceinline__ void load8(const T* p, T (&v)[8]) {
#pragma unroll
  for (int i = 0; i < int(sizeof(T)) / 2; ++i)
    reinterpret_cast<uint4*>(v)[i] = reinterpret_cast<const uint4*>(p)[i];
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const T (&v)[8]) {
#pragma unroll
  for (int i = 0; i < int(sizeof(T)) / 2; ++i)
    reinterpret_cast<uint4*>(p)[i] = reinterpret_cast<const uint4*>(v)[i];
}

// Whether the rows of a compact (rows, cols) array of T at `base` can be taken in chunks of 8
// with load8/store8: they can be read in 16-byte vectors and hold whole chunks.
template <typename T>
bool rows_chunkable(const void* base, int64_t cols) {
  return rows_vectorizable<T>(base, cols) && cols % 8 == 0;
}

// block_max_sum for a row in chunks of 8 (rows_chunkable): thread t loads chunks t,
// t + blockDim.x, ... with 16-byte accesses, element j of each chunk going to its own running
// pair, so eight exp chains run side by side; the pairs merge in a fixed order. The element-to-pair
// assignment does not depend on T, so a bfloat16 row and its float32 copy give the same bits.
template <typename A, typename T>
__device__ __forceinline__ MaxSum<A> block_max_sum_chunked(const T* row, int64_t cols,
                                                           MaxSum<A>* scratch) {
  MaxSum<A> st[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) st[j] = MaxSum<A>{-INFINITY, A(0)};
  for (int64_t c = int64_t(threadIdx.x) * 8; c < cols; c += int64_t(blockDim.x) * 8) {
    alignas(16) T v[8];
    load8(row + c, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) max_sum_add(st[j], convert<A>(v[j]));
  }
#pragma unroll
  for (int j = 1; j < 8; ++j) st[0] = max_sum_merge(st[0], st[j]);
  return block_merge_max_sum(st[0], scratch);
}

// Threads per row block: about 8 elements per thread, between one warp and 1024 threads.
inline int row_block_threads(int64_t cols) {
  int64_t t = (cols / 8 + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

}  // namespace needle::cuda
