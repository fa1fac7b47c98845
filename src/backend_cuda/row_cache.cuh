// Rows staged in shared memory for the fused row kernels (softmax, log_softmax, layer_norm): the
// row is read from device memory once, kept on chip while its statistics are reduced over the
// block, and the output is written once, instead of reading the row again (from L2 at best).
//
// A block handles one row at a time. Thread t owns the 16-byte vectors t, t + blockDim.x, ... of
// the row (single elements at the same stride when the rows cannot be read in vectors) and keeps
// them at the same positions of the shared cache. A thread reads back only what it stored itself,
// so the passes over the cache need no barrier of their own, and a thread may stage the next row
// while others still write the last one; only the block reductions synchronise.
#pragma once
#include "backend_cuda/cuda_common.cuh"

namespace needle::cuda {

// Elements per 16-byte vector.
template <typename T>
__host__ __device__ constexpr int row_vec_width() {
  return static_cast<int>(16 / sizeof(T));
}

// True when every row of a compact (rows, cols) array at `base` starts on a 16-byte boundary and
// holds whole vectors.
template <typename T>
bool rows_vectorizable(const void* base, int64_t cols) {
  return aligned_to(base, 16) && cols % row_vec_width<T>() == 0;
}

// Threads per block for a staged row of `units` vectors (or elements): about four per thread,
// between one warp and 1024 threads.
inline int cached_row_threads(int64_t units) {
  int64_t t = (ceil_div(units, 4) + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

// The block's dynamic shared memory as an array of T.
template <typename T>
__device__ __forceinline__ T* row_cache() {
  extern __shared__ __align__(16) unsigned char row_cache_bytes[];
  return reinterpret_cast<T*>(row_cache_bytes);
}

// Copies row[0, cols) into `cache` (the thread's own part) and calls f(c, x) for each of the
// thread's elements, x converted to A. Up to four 16-byte loads are in flight per thread before
// the first is used.
template <typename A, typename T, typename F>
__device__ __forceinline__ void stage_row(const T* __restrict__ row, T* cache, int64_t cols,
                                          bool vec, F&& f) {
  const int64_t step = blockDim.x;
  if (vec) {
    constexpr int N = row_vec_width<T>();
    using V = VecN<T, N>;
    const V* src = reinterpret_cast<const V*>(row);
    V* dst = reinterpret_cast<V*>(cache);
    const int64_t nv = cols / N;
    for (int64_t v = threadIdx.x; v < nv; v += 4 * step) {
      V a[4];
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (v + k * step < nv) a[k] = src[v + k * step];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t w = v + k * step;
        if (w < nv) {
          dst[w] = a[k];
#pragma unroll
          for (int j = 0; j < N; ++j) f(w * N + j, convert<A>(a[k].v[j]));
        }
      }
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += step) {
      const T x = row[c];
      cache[c] = x;
      f(c, convert<A>(x));
    }
  }
}

// Calls f(c, x) for each of the thread's elements of the staged row, x converted to A.
template <typename A, typename T, typename F>
__device__ __forceinline__ void for_each_cached(const T* cache, int64_t cols, bool vec, F&& f) {
  if (vec) {
    constexpr int N = row_vec_width<T>();
    using V = VecN<T, N>;
    const V* src = reinterpret_cast<const V*>(cache);
    for (int64_t v = threadIdx.x; v < cols / N; v += blockDim.x) {
      const V a = src[v];
#pragma unroll
      for (int j = 0; j < N; ++j) f(v * N + j, convert<A>(a.v[j]));
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) f(c, convert<A>(cache[c]));
  }
}

// out[c] = f(c, x) for each of the thread's elements of the staged row (x converted to A, the
// result converted to T), in 16-byte stores when vec.
template <typename A, typename T, typename F>
__device__ __forceinline__ void map_cached(const T* cache, int64_t cols, bool vec,
                                           T* __restrict__ out, F&& f) {
  if (vec) {
    constexpr int N = row_vec_width<T>();
    using V = VecN<T, N>;
    const V* src = reinterpret_cast<const V*>(cache);
    V* dst = reinterpret_cast<V*>(out);
    for (int64_t v = threadIdx.x; v < cols / N; v += blockDim.x) {
      const V a = src[v];
      V o;
#pragma unroll
      for (int j = 0; j < N; ++j) o.v[j] = convert<T>(f(v * N + j, convert<A>(a.v[j])));
      dst[v] = o;
    }
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      out[c] = convert<T>(f(c, convert<A>(cache[c])));
  }
}

}  // namespace needle::cuda
