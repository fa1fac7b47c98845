// Fused row ops along the last axis of a compact (rows, cols) array: softmax, log_softmax and
// logsumexp. Softmax and log_softmax read each row from device memory once and write it once:
//  - rows of up to 256 16-byte vectors (1024 float32): a warp per row, the row in registers;
//  - longer rows that fit in shared memory: a block per row, the row staged there
//    (row_cache.cuh);
// both take the maximum, then the sum of exp(x - max), then the output from the kept copy: two
// cheap reductions and one exponential per element per pass, instead of rescaling a running sum.
// Rows too long for shared memory, and logsumexp, use one block per row on the online max/sum of
// row_stats.cuh (the long rows are read twice: statistics, then the output pass).
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/row_cache.cuh"
#include "backend_cuda/row_stats.cuh"

namespace needle::cuda {
namespace {

// R = rows, C = cols. out is (R, C) for Softmax / LogSoftmax and (R) for LogSumExp.
template <typename T>
__global__ void __launch_bounds__(1024)
    row_op_kernel(RowOp op, const T* __restrict__ x, int64_t rows, int64_t cols,
                  T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ MaxSum<A> scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * cols;
    MaxSum<A> st = block_max_sum<A>(row, cols, scratch);
    if (op == RowOp::LogSumExp) {
      if (threadIdx.x == 0) out[r] = convert<T>(max_sum_logsumexp(st));
      continue;
    }
    T* orow = out + r * cols;
    // Softmax and log_softmax shift by the plain maximum, so a row holding +inf or only -inf
    // gives NaN, as on the CPU and in torch.
    if (op == RowOp::Softmax) {
      const A inv = A(1) / st.s;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        orow[c] = convert<T>(exp(convert<A>(row[c]) - st.m) * inv);
    } else {
      const A log_s = log(st.s);
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        orow[c] = convert<T>(convert<A>(row[c]) - st.m - log_s);
    }
  }
}

// Maximum that propagates NaN: once m is NaN it stays NaN, so every output of the row is NaN.
template <typename A>
__device__ __forceinline__ A max_nan(A m, A v) {
  return (v > m || v != v) ? v : m;
}

// exp(v - m), m the row's maximum. In float as exp2 of one FMA (the MUFU.EX2 path; m * log2(e)
// is loop-invariant); relative error about 1e-6 for the |v - m| of a softmax row. Rows holding
// +inf or only -inf give NaN, as on the CPU and in torch.
__device__ __forceinline__ float exp_minus(float v, float m) {
  constexpr float kLog2e = 1.4426950408889634f;
  return exp2f(fmaf(v, kLog2e, -m * kLog2e));
}
__device__ __forceinline__ double exp_minus(double v, double m) { return exp(v - m); }

// log(sum of exp(x - m)) from the sum s of exp_minus terms. In float every term carries the same
// factor 2^(m log2(e) - c), c = m * log2(e) rounded: it cancels in softmax, and log_softmax takes
// its logarithm back out (it grows with |m|: 6e-4 at m = 1e4).
__device__ __forceinline__ float log_sum(float s, float m) {
  constexpr float kLog2e = 1.4426950408889634f, kLn2 = 0.6931471805599453f;
  return log(s) - fmaf(m, kLog2e, -m * kLog2e) * kLn2;
}
__device__ __forceinline__ double log_sum(double s, double) { return log(s); }

template <typename A>
__device__ __forceinline__ A warp_max_nan(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Maximum over the block; every thread gets it. `scratch` holds 32 values.
template <typename A>
__device__ __forceinline__ A block_max_nan(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max_nan(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = warp_max_nan(lane < nwarps ? scratch[lane] : A(-INFINITY));
  __syncthreads();
  return v;
}

// R = rows, C = cols, N = elements per 16-byte vector, kVecs = vectors per lane. A warp per row
// with the row in registers (lane l holds vectors l, l + 32, ...): all of a lane's loads are in
// flight at once, and no shared memory or block barrier is involved. Needs whole, aligned vectors
// and C <= 32 * kVecs * N. out is (R, C).
template <typename T, int kVecs>
__global__ void __launch_bounds__(256)
    row_op_warp_kernel(RowOp op, const T* __restrict__ x, int64_t rows, int64_t cols,
                       T* __restrict__ out) {
  using A = acc_t<T>;
  constexpr int N = row_vec_width<T>();
  using V = VecN<T, N>;
  const int lane = threadIdx.x & 31;
  const int64_t nv = cols / N;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
       r < rows; r += warps) {
    const V* src = reinterpret_cast<const V*>(x + r * cols);
    V a[kVecs];
#pragma unroll
    for (int k = 0; k < kVecs; ++k)
      if (lane + k * 32 < nv) a[k] = src[lane + k * 32];
    A m = -INFINITY;
#pragma unroll
    for (int k = 0; k < kVecs; ++k)
      if (lane + k * 32 < nv)
#pragma unroll
        for (int j = 0; j < N; ++j) m = max_nan(m, convert<A>(a[k].v[j]));
    m = warp_max_nan(m);
    A s = 0;
#pragma unroll
    for (int k = 0; k < kVecs; ++k)
      if (lane + k * 32 < nv)
#pragma unroll
        for (int j = 0; j < N; ++j) s += exp_minus(convert<A>(a[k].v[j]), m);
    s = warp_sum(s);
    V* dst = reinterpret_cast<V*>(out + r * cols);
    const A inv = A(1) / s, log_s = log_sum(s, m);
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      if (lane + k * 32 < nv) {
        V o;
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const A v = convert<A>(a[k].v[j]);
          o.v[j] = convert<T>(op == RowOp::Softmax ? exp_minus(v, m) * inv : v - m - log_s);
        }
        dst[lane + k * 32] = o;
      }
    }
  }
}

// R = rows, C = cols. Softmax or LogSoftmax with the row staged in shared memory (C elements of
// T): the maximum is taken while the row is loaded, then the sum of exp(x - max) and the output
// from the staged copy. out is (R, C).
template <typename T>
__global__ void __launch_bounds__(1024)
    row_op_cached_kernel(RowOp op, const T* __restrict__ x, int64_t rows, int64_t cols, bool vec,
                         T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  T* cache = row_cache<T>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    A m = -INFINITY;
    stage_row<A>(x + r * cols, cache, cols, vec, [&](int64_t, A v) { m = max_nan(m, v); });
    m = block_max_nan(m, scratch);
    A s = 0;
    for_each_cached<A>(cache, cols, vec, [&](int64_t, A v) { s += exp_minus(v, m); });
    s = block_sum(s, scratch);
    if (op == RowOp::Softmax) {
      const A inv = A(1) / s;
      map_cached<A>(cache, cols, vec, out + r * cols,
                    [&](int64_t, A v) { return exp_minus(v, m) * inv; });
    } else {
      const A log_s = log_sum(s, m);
      map_cached<A>(cache, cols, vec, out + r * cols, [&](int64_t, A v) { return v - m - log_s; });
    }
  }
}

template <typename T, int kVecs>
void launch_row_op_warp(RowOp op, const T* x, int64_t rows, int64_t cols, T* out) {
  constexpr int kWarpsPerBlock = 8;
  auto* kernel = row_op_warp_kernel<T, kVecs>;
  const unsigned grid =
      resident_grid(kernel, 32 * kWarpsPerBlock, 0, ceil_div(rows, kWarpsPerBlock));
  kernel<<<grid, 32 * kWarpsPerBlock, 0, stream()>>>(op, x, rows, cols, out);
}

const char* row_op_name(RowOp op) {
  return op == RowOp::Softmax ? "softmax" : op == RowOp::LogSoftmax ? "log_softmax" : "logsumexp";
}

}  // namespace

// R = rows, C = cols.
void row_op(RowOp op, const ArrayRef& in, int64_t rows, int64_t cols, const ArrayRef& out) {
  const char* name = row_op_name(op);
  NEEDLE_CHECK(in.numel() == rows * cols, ValueError, "cuda ", name, ": expected ", rows, " x ",
               cols, " input elements, got ", in.numel());
  const int64_t out_numel = op == RowOp::LogSumExp ? rows : rows * cols;
  NEEDLE_CHECK(out.numel() == out_numel, ValueError, "cuda ", name, ": expected ", out_numel,
               " output elements, got ", out.numel());
  NEEDLE_CHECK(out.dtype == in.dtype, TypeError, "cuda ", name, ": expected an output of dtype ",
               dtype_name(in.dtype), ", got ", dtype_name(out.dtype));
  if (out_numel == 0) return;
  NEEDLE_DISPATCH_FLOATING(in.dtype, name, [&] {
    using T = scalar_t;
    const T* x = static_cast<const T*>(in.data);
    T* o = static_cast<T*>(out.data);
    static const size_t smem_limit = enable_max_dynamic_shared_memory(row_op_cached_kernel<T>);
    constexpr int64_t N = row_vec_width<T>();
    const size_t smem = static_cast<size_t>(cols) * sizeof(T);
    const bool vec = rows_vectorizable<T>(in.data, cols) && aligned_to(out.data, 16);
    if (op != RowOp::LogSumExp && vec && cols <= 32 * 8 * N) {
      const int64_t per_lane = ceil_div(cols / N, 32);
      if (per_lane <= 1)
        launch_row_op_warp<T, 1>(op, x, rows, cols, o);
      else if (per_lane <= 2)
        launch_row_op_warp<T, 2>(op, x, rows, cols, o);
      else if (per_lane <= 4)
        launch_row_op_warp<T, 4>(op, x, rows, cols, o);
      else
        launch_row_op_warp<T, 8>(op, x, rows, cols, o);
    } else if (op != RowOp::LogSumExp && cols > 0 && smem <= smem_limit) {
      const int threads = cached_row_threads(vec ? cols / N : cols);
      const unsigned grid = resident_grid(row_op_cached_kernel<T>, threads, smem, rows);
      row_op_cached_kernel<T><<<grid, threads, smem, stream()>>>(op, x, rows, cols, vec, o);
    } else {
      row_op_kernel<T>
          <<<grid_for(rows, 1), row_block_threads(cols), 0, stream()>>>(op, x, rows, cols, o);
    }
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
