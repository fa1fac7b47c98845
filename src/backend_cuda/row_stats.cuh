// The numerically stable log-sum-exp of one row over a thread block, for softmax.cu's fallback row
// kernel and cross_entropy.cu's forward: each thread keeps a (max, sum of exp(x - max)) pair over
// its strided share of the row in one pass, and the block merges the pairs with warp shuffles.
// bfloat16 and float32 rows are taken in segments (block_max_sum_segments), float64 rows element
// by element with a running maximum (block_max_sum, the "online softmax").
#pragma once
#include <cmath>
#include <type_traits>

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

// (max, sum) of row[0, cols) over the whole block (blockDim.x a multiple of 32), element by element
// with max_sum_add; every thread gets the result. `scratch` holds 32 pairs. For float64 rows.
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

// max(a, b), NaN when either is NaN (fmaxf would drop it).
__device__ __forceinline__ float max_nan(float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  float r;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return (a != a || b != b) ? a + b : fmaxf(a, b);
#endif
}

// (max, sum) of a float (bfloat16 or float32) row over the whole block, in segments. Thread t
// loads V elements at a time (V = 8: 16-byte chunks, for rows_chunkable rows; V = 1: one element,
// any alignment), units t, t + blockDim.x, ..., a segment of U units with all its loads in flight
// together: 4 chunks (32 elements), or 16 single elements (32 would spill a float32 row's). Per
// segment: the segment's maximum (max_nan), one rescale of the thread's eight partial sums to the
// new maximum, then exp(x - max) added element by element, element i of the segment to partial
// sum i % 8. No branch per element: the online update of
// max_sum_add (a compare, a branch and for a new maximum a second exp, per element) left the
// bfloat16 forward compute-bound at 0.9 TB/s on an H100 (820d185: 1.88 ms for 16384 x 50304
// against torch's 1.53). The element-to-sum assignment and the segments depend only on the
// element's index, so a bfloat16 row and its float32 copy give the same bits (unless Fast, below,
// picks another exp for one of them). Special values as max_sum_add: a NaN makes the maximum NaN;
// while the maximum is -inf the exponents are taken from 0, so -inf elements add exp(-inf) = 0,
// never exp(-inf - -inf); a +inf maximum is the row's answer (max_sum_logsumexp) whatever the
// sums hold. Fast takes each exp as exp2_approx((x - max) * log2(e)) (cross-entropy's bfloat16
// rows, whose gradient it computes so too: see there), where expf is about ten instructions; the
// sum is then within about 2^-22 of expf's, so the log-sum-exp within 3e-7.
template <int V, bool Fast, typename T>
__device__ __forceinline__ MaxSum<float> block_max_sum_segments(const T* row, int64_t cols,
                                                                MaxSum<float>* scratch) {
  static_assert(V == 1 || V == 8, "units of one element or of a 16-byte chunk of 8");
  constexpr int U = V == 8 ? 4 : 16;
  float m = -INFINITY;
  float s[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) s[j] = 0.0f;
  const int64_t stride = int64_t(blockDim.x) * V;
  for (int64_t c0 = int64_t(threadIdx.x) * V; c0 < cols; c0 += stride * U) {
    alignas(16) T v[U][V];
    bool have[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = c0 + u * stride;
      have[u] = c < cols;
      if (!have[u]) continue;
      if constexpr (V == 8) load8(row + c, v[u]);
      else v[u][0] = row[c];
    }
    float seg = -INFINITY;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (have[u])
#pragma unroll
        for (int j = 0; j < V; ++j) seg = max_nan(seg, convert<float>(v[u][j]));
    const float mnew = max_nan(m, seg);
    const float origin = mnew == -INFINITY ? 0.0f : mnew;
    auto exp_from_origin = [origin](float x) {
      return Fast ? exp2_approx((x - origin) * kLog2e) : expf(x - origin);
    };
    const float scale = exp_from_origin(m);
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j] *= scale;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (have[u])
#pragma unroll
        for (int j = 0; j < V; ++j) s[(u * V + j) % 8] += exp_from_origin(convert<float>(v[u][j]));
    m = mnew;
  }
  float total = s[0];
#pragma unroll
  for (int j = 1; j < 8; ++j) total += s[j];
  return block_merge_max_sum(MaxSum<float>{m, total}, scratch);
}

// A row's (max, sum) as the row kernels take it: bfloat16 and float32 rows by segments (Chunked:
// 16-byte chunks of 8, for rows_chunkable rows; else single elements; Fast as there), float64 rows
// by block_max_sum (eight partial sums of doubles would spill). segmented_row_launch picks
// Chunked and the threads.
template <bool Chunked, bool Fast = false, typename T>
__device__ __forceinline__ MaxSum<acc_t<T>> block_row_max_sum(const T* row, int64_t cols,
                                                              MaxSum<acc_t<T>>* scratch) {
  if constexpr (sizeof(T) > 4)
    return block_max_sum<acc_t<T>>(row, cols, scratch);
  else
    return block_max_sum_segments<(Chunked ? 8 : 1), Fast>(row, cols, scratch);
}

// Threads per row block of block_max_sum_segments: about 32 elements per thread, between one
// warp and 512 threads (16384 x 50304 bfloat16 logits: 512 threads, about 98 elements each, so
// each block's reduction is shared by more loads than at 1024).
inline int segmented_row_threads(int64_t cols) {
  int64_t t = (ceil_div(cols, 32) + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > 512) t = 512;
  return static_cast<int>(t);
}

// Threads per row block: about 8 elements per thread, between one warp and 1024 threads.
inline int row_block_threads(int64_t cols) {
  int64_t t = (cols / 8 + 31) / 32 * 32;
  if (t < 32) t = 32;
  if (t > 1024) t = 1024;
  return static_cast<int>(t);
}

// A row kernel's launch: the kernel and its threads per row.
template <typename Kernel>
struct RowLaunch {
  Kernel kernel;
  int threads;
};

// The launch of a kernel that takes each row's (max, sum) by block_row_max_sum<Chunked>.
// pick(std::bool_constant<Chunked>) gives the kernel's instance; Chunked where the rows are
// rows_chunkable. Segments take segmented_row_threads, float64 rows row_block_threads.
template <typename T, typename Pick>
auto segmented_row_launch(const void* rows, int64_t cols, Pick pick)
    -> RowLaunch<decltype(pick(std::false_type{}))> {
  if constexpr (sizeof(T) <= 4) {
    const int threads = segmented_row_threads(cols);
    if (rows_chunkable<T>(rows, cols)) return {pick(std::true_type{}), threads};
    return {pick(std::false_type{}), threads};
  }
  return {pick(std::false_type{}), row_block_threads(cols)};
}

}  // namespace needle::cuda
