// Fused row ops along the last axis of a compact (rows, cols) array: softmax, log_softmax and
// logsumexp, one block per row on the online max/sum of row_stats.cuh. Softmax and log_softmax
// stage the row in shared memory (row_cache.cuh): one read of the row from device memory, one
// write. Rows too long for shared memory are read twice (statistics, then the output pass);
// logsumexp reads each row once and writes one value.
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

// R = rows, C = cols. Softmax or LogSoftmax with the row staged in shared memory (C elements of
// T): the online (max, sum) is taken while the row is loaded, merged over the block, and the
// output computed from the staged copy. out is (R, C).
template <typename T>
__global__ void __launch_bounds__(1024)
    row_op_cached_kernel(RowOp op, const T* __restrict__ x, int64_t rows, int64_t cols, bool vec,
                         T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ MaxSum<A> scratch[32];
  T* cache = row_cache<T>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    MaxSum<A> st{-INFINITY, A(0)};
    stage_row<A>(x + r * cols, cache, cols, vec, [&](int64_t, A v) { max_sum_add(st, v); });
    st = block_merge_max_sum(st, scratch);
    // Shifted by the plain maximum, as in row_op_kernel: NaN for a row holding +inf or only -inf.
    if (op == RowOp::Softmax) {
      const A m = st.m, inv = A(1) / st.s;
      map_cached<A>(cache, cols, vec, out + r * cols,
                    [&](int64_t, A v) { return exp(v - m) * inv; });
    } else {
      const A m = st.m, log_s = log(st.s);
      map_cached<A>(cache, cols, vec, out + r * cols, [&](int64_t, A v) { return v - m - log_s; });
    }
  }
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
    const size_t smem = static_cast<size_t>(cols) * sizeof(T);
    if (op != RowOp::LogSumExp && cols > 0 && smem <= smem_limit) {
      const bool vec = rows_vectorizable<T>(in.data, cols) && aligned_to(out.data, 16);
      const int threads = cached_row_threads(vec ? cols / row_vec_width<T>() : cols);
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
