// Fused row ops along the last axis of a compact (rows, cols) array: softmax, log_softmax and
// logsumexp, one block per row on the online max/sum of row_stats.cuh. The row is read twice
// (statistics, then the output pass, which mostly hits L2) and written once.
#include "backend_cuda/cuda_internal.h"
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
    row_op_kernel<scalar_t><<<grid_for(rows, 1), row_block_threads(cols), 0, stream()>>>(
        op, static_cast<const scalar_t*>(in.data), rows, cols, static_cast<scalar_t*>(out.data));
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
