// Fused cross-entropy over class logits, forward and backward: no one-hot and no materialised
// softmax. The forward pass stores the row's log-sum-exp, which the backward pass reuses, so each
// pass reads the logits once (plus an L2-resident re-read in the backward's output loop).
// forward_grad (linear_cross_entropy's forward) does both passes at once, writing the gradient
// over the logits.
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/row_stats.cuh"

namespace needle::cuda {
namespace {

// Element stride of a 1-D auxiliary array (targets, lse, dloss): honours a broadcast or strided
// 1-D view; anything of more dims must be compact.
int64_t aux_stride(const ArrayRef& a, const char* op, const char* operand) {
  if (a.ndim == 1) return a.strides[0];
  NEEDLE_CHECK(a.is_compact(), ValueError, "cuda ", op, ": expected ", operand,
               " to be a compact or 1-D array");
  return 1;
}

void check_targets_dtype(const ArrayRef& t, const char* op) {
  NEEDLE_CHECK(t.dtype == DType::Int64 || t.dtype == DType::Int32, TypeError, "cuda ", op,
               ": expected int64 (or int32) targets, got ", dtype_name(t.dtype));
}

// bfloat16 rows take the lean path of the kernels below, whose gradient is rounded to bfloat16's 8
// significant bits: exps by exp2_approx (block_row_max_sum's Fast, and row_prob), so the loss and
// lse stay within 3e-7 of expf's; and the target's element after the gradient loop (owns), not a
// test of every element in it. On one H100, 16384 x 50304 logits (session 20): the bfloat16
// forward_grad kernel took 1.15 ms, against 1.74-1.75 before. Float32 and float64 rows keep expf
// and the per-element test, so their bits and times are as before: the float32 staged kernel with
// the target after its loop took 2.55-2.57 ms, against 2.25-2.26 with the test (three runs each).
template <typename T>
constexpr bool kLean = std::is_same_v<T, bfloat16>;

// A row's probability exp(x - lse) in the gradient loops: the same arithmetic in the backward and
// forward_grad kernels, so that forward_grad's gradient is the backward's for dloss = 1, bit for
// bit.
template <typename T>
__device__ __forceinline__ acc_t<T> row_prob(acc_t<T> x, acc_t<T> lse) {
  if constexpr (kLean<T>)
    return exp2_approx((x - lse) * kLog2e);
  else
    return exp(x - lse);
}

// A gradient loop over one row of `classes`: this thread's share of dst[c] = f(c, src[c]), f taking
// the element in acc_t<T> and returning it in T. Thread i takes the chunks of 8 i, i + blockDim.x,
// ... (Chunks: 16-byte loads and stores, rows_chunkable rows) or the elements i, i + blockDim.x,
// ... src may be dst: each element is read, then written, by one thread.
template <bool Chunks, typename T, typename F>
__device__ __forceinline__ void map_row(const T* src, T* dst, int64_t classes, F f) {
  using A = acc_t<T>;
  if constexpr (Chunks) {
    for (int64_t c = int64_t(threadIdx.x) * 8; c < classes; c += int64_t(blockDim.x) * 8) {
      alignas(16) T v[8];
      load8(src + c, v);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = f(c + j, convert<A>(v[j]));
      store8(dst + c, v);
    }
  } else {
    for (int64_t c = threadIdx.x; c < classes; c += blockDim.x) dst[c] = f(c, convert<A>(src[c]));
  }
}

// The thread whose share of a row (map_row<Chunks>) holds element t.
template <bool Chunks>
__device__ __forceinline__ bool owns(int64_t t) {
  return (Chunks ? t / 8 : t) % blockDim.x == threadIdx.x;
}

// R = rows, C = classes. One block per row: lse[r] = logsumexp(logits[r]),
// loss[r] = lse[r] - logits[r, target[r]] (0 when the target is ignore_index). loss and lse are of
// stats_dtype(logits) (backend.h): float32, or float64 for float64 logits, i.e. acc_t<T>.
// The row statistics by block_row_max_sum<Chunked>: Chunked for rows_chunkable rows (a
// vocabulary's usual case), otherwise element by element (a view one element into its buffer,
// a vocabulary of 50257).
template <typename T, bool Chunked>
__global__ void __launch_bounds__(1024)
    cross_entropy_forward_kernel(const T* __restrict__ logits, const void* targets,
                                 DType target_dtype, int64_t target_stride, int64_t ignore_index,
                                 int64_t rows, int64_t classes, acc_t<T>* __restrict__ loss,
                                 acc_t<T>* __restrict__ lse, DeviceErrorFlag flag) {
  using A = acc_t<T>;
  __shared__ MaxSum<A> scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * classes;
    const MaxSum<A> st = block_row_max_sum<Chunked, kLean<T>>(row, classes, scratch);
    if (threadIdx.x != 0) continue;
    const A l = max_sum_logsumexp(st);
    const int64_t t = load_as_int64(targets, target_dtype, r * target_stride);
    lse[r] = l;
    if (t == ignore_index) {
      loss[r] = A(0);
    } else if (t < 0 || t >= classes) {
      report_device_error(flag, kCrossEntropyTarget, t, classes);
      loss[r] = A(NAN);
    } else {
      loss[r] = l - convert<A>(row[t]);
    }
  }
}

// The forward above fused with the gradient of each row's loss, written over the logits:
// logits[r, c] = exp(logits[r, c] - lse[r]) - [c == t[r]], a row of zeros when t[r] is ignored (or
// out of range, reported). The row is read twice, for its statistics and for the gradient. Staged
// (rows_chunkable rows that fit in shared memory: 16384 x 50304 bfloat16 logits, 100 KB a row, two
// blocks an SM) copies the row into shared memory first (cp.async), so HBM sees each logit read
// once and written once, and one block's copy overlaps the other's arithmetic and stores. On one
// H100 (686e497, 16384 x 50304): float32 2.26 ms, about 2.9 TB/s, against the unfused forward and
// backward's 1.04 + 2.70; bfloat16 1.74 against 0.75 + 1.11, bound by the two passes' arithmetic
// rather than by HBM, until kLean (1.15 ms, about 2.9 TB/s, session 20). Storing each chunk to
// shared memory from the statistics' own loads instead of a cp.async pass first was slower
// (6b58bb8: 2.82 and 1.92 ms). Rows that do not fit read the row in global memory twice; the
// second read came from HBM, not L2 (session 18: 1.82 ms in bfloat16).
// The statistics end with a block barrier, so every read of the row for them is done before the row
// is written; in the gradient loop each element is read, then written, by one thread, which also
// takes the target's logit for the loss as it passes (for lean rows, kLean, it reads it before
// that loop and writes its gradient and loss after it). Hence no __restrict__ on `logits`. The
// gradient is written in chunks of 8 for bfloat16 or staged rows only, as the backward kernel's
// choice below (measured: chunks were slower for float32 rows there).
template <typename T, bool Chunked, bool Staged>
__global__ void __launch_bounds__(1024)
    cross_entropy_forward_grad_kernel(T* logits, const void* targets, DType target_dtype,
                                      int64_t target_stride, int64_t ignore_index, int64_t rows,
                                      int64_t classes, acc_t<T>* __restrict__ loss,
                                      acc_t<T>* __restrict__ lse, DeviceErrorFlag flag) {
  static_assert(Chunked || !Staged, "a staged row is copied in 16-byte chunks");
  using A = acc_t<T>;
  __shared__ MaxSum<A> scratch[32];
  extern __shared__ uint4 staged[];  // Staged: one row
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = logits + r * classes;
    const T* src = row;
    if constexpr (Staged) {
      __syncthreads();  // the previous row's gradient loop has read `staged`
      const uint4* from = reinterpret_cast<const uint4*>(row);
      for (int64_t i = threadIdx.x; i < classes / (16 / int64_t(sizeof(T))); i += blockDim.x)
        cp_async16(staged + i, from + i, 16);
      cp_async_commit();
      cp_async_wait<0>();
      __syncthreads();
      src = reinterpret_cast<const T*>(staged);
    }
    const MaxSum<A> st = block_row_max_sum<Chunked, kLean<T>>(src, classes, scratch);
    const A l = max_sum_logsumexp(st);
    const int64_t t = load_as_int64(targets, target_dtype, r * target_stride);
    const bool ignored = t == ignore_index;
    const bool bad = !ignored && (t < 0 || t >= classes);
    if (threadIdx.x == 0) {
      lse[r] = l;
      if (ignored) loss[r] = A(0);
      if (bad) {
        report_device_error(flag, kCrossEntropyTarget, t, classes);
        loss[r] = A(NAN);
      }
    }
    if (ignored || bad) {
      for (int64_t c = threadIdx.x; c < classes; c += blockDim.x) row[c] = convert<T>(0.0f);
      continue;
    }
    constexpr bool kChunks = Chunked && (sizeof(T) == 2 || Staged);
    // Lean rows: the target's logit, read before the thread that owns it overwrites it with its
    // probability; that thread writes the target's gradient and loss after its loop. Other rows
    // take them in the loop.
    const bool owner = kLean<T> && owns<kChunks>(t);
    const A xt = owner ? convert<A>(src[t]) : A(0);
    auto grad = [&](int64_t c, A x) {
      A p = row_prob<T>(x, l);
      if (!kLean<T> && c == t) {
        loss[r] = l - x;
        p -= A(1);
      }
      return convert<T>(p);
    };
    map_row<kChunks>(src, row, classes, grad);
    if (owner) {
      row[t] = convert<T>(row_prob<T>(xt, l) - A(1));
      loss[r] = l - xt;
    }
  }
}

// R = rows, C = classes. dlogits[r, c] = dloss[r] * (exp(logits[r, c] - lse[r]) - [c == t[r]]),
// a row of zeros when t[r] is ignore_index. One block per row; Chunked as in the forward (both
// logits and dlogits in chunks of 8), for bfloat16 rows only (backward_kernel_for).
template <typename T, bool Chunked>
__global__ void __launch_bounds__(1024)
    cross_entropy_backward_kernel(const T* __restrict__ logits, const void* targets,
                                  DType target_dtype, int64_t target_stride, const void* lse,
                                  DType lse_dtype, int64_t lse_stride, const void* dloss,
                                  DType dloss_dtype, int64_t dloss_stride, int64_t ignore_index,
                                  int64_t rows, int64_t classes, T* __restrict__ dlogits,
                                  DeviceErrorFlag flag) {
  using A = acc_t<T>;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = logits + r * classes;
    T* drow = dlogits + r * classes;
    const int64_t t = load_as_int64(targets, target_dtype, r * target_stride);
    const bool bad = t != ignore_index && (t < 0 || t >= classes);
    if (t == ignore_index || bad) {
      if (bad && threadIdx.x == 0) report_device_error(flag, kCrossEntropyTarget, t, classes);
      for (int64_t c = threadIdx.x; c < classes; c += blockDim.x) drow[c] = convert<T>(0.0f);
      continue;
    }
    const A l = load_as<A>(lse, lse_dtype, r * lse_stride);
    const A g = load_as<A>(dloss, dloss_dtype, r * dloss_stride);
    // The target's element: in the loop, or for lean rows after it, by the thread whose loop
    // wrote its probability.
    auto grad = [&](int64_t c, A x) {
      A p = row_prob<T>(x, l);
      if (!kLean<T> && c == t) p -= A(1);
      return convert<T>(g * p);
    };
    map_row<Chunked>(row, drow, classes, grad);
    if (kLean<T> && owns<Chunked>(t))
      drow[t] = convert<T>(g * (row_prob<T>(convert<A>(row[t]), l) - A(1)));
  }
}

// The forward for bfloat16 and float32 rows by segments, chunked where the rows allow it (on one
// H100, 842d2bb and 5261c8c: 16384 x 50304 bfloat16 in 0.78 ms chunked, 1.36 ms element by
// element; torch took 1.51-1.53); float64 (for reference checks) by block_max_sum.
template <typename T>
auto forward_launch(const void* logits, int64_t classes) {
  return segmented_row_launch<T>(logits, classes, [](auto chunked) {
    return cross_entropy_forward_kernel<T, decltype(chunked)::value>;
  });
}

// The forward_grad kernel for rows of `classes` T at `logits`: the staged one (smem = the row's
// bytes of dynamic shared memory) where the rows are rows_chunkable and one fits beside the
// kernel's static shared memory, else the one that reads the row in global memory (smem = 0).
template <typename T>
auto forward_grad_launch(const void* logits, int64_t classes, size_t& smem) {
  auto launch = segmented_row_launch<T>(logits, classes, [](auto chunked) {
    return cross_entropy_forward_grad_kernel<T, decltype(chunked)::value, false>;
  });
  smem = 0;
  if constexpr (sizeof(T) <= 4) {
    static const size_t limit =
        enable_max_dynamic_shared_memory(cross_entropy_forward_grad_kernel<T, true, true>);
    const size_t row_bytes = size_t(classes) * sizeof(T);
    if (rows_chunkable<T>(logits, classes) && row_bytes <= limit) {
      launch.kernel = cross_entropy_forward_grad_kernel<T, true, true>;
      smem = row_bytes;
    }
  }
  return launch;
}

// The backward chunked where the rows allow it and it was measured faster: for bfloat16 only. On
// one H100 (820d185, bench_cuda.py --only-cross-entropy) the chunked backward took 1.16 against
// 2.00 ms in bfloat16 but 3.31 against 2.89 ms in float32.
template <typename T>
auto backward_kernel_for(const void* logits, const void* dlogits, int64_t classes) {
  if constexpr (sizeof(T) == 2)
    if (rows_chunkable<T>(logits, classes) && rows_chunkable<T>(dlogits, classes))
      return cross_entropy_backward_kernel<T, true>;
  return cross_entropy_backward_kernel<T, false>;
}

// The checks of cross_entropy_forward(_grad)'s arguments; returns the targets' element stride.
int64_t check_forward_args(const ArrayRef& logits, const ArrayRef& targets, int64_t rows,
                           int64_t classes, const ArrayRef& loss, const ArrayRef& lse,
                           const char* name) {
  NEEDLE_CHECK(logits.numel() == rows * classes, ValueError, "cuda ", name, ": expected ", rows,
               " x ", classes, " logits, got ", logits.numel());
  const DType stats = stats_dtype(logits.dtype);
  NEEDLE_CHECK(loss.dtype == stats && lse.dtype == stats, TypeError, "cuda ", name, ": expected ",
               dtype_name(stats), " loss and lse, got ", dtype_name(loss.dtype), " and ",
               dtype_name(lse.dtype));
  NEEDLE_CHECK(loss.numel() == rows && lse.numel() == rows && targets.numel() == rows, ValueError,
               "cuda ", name, ": expected ", rows, " targets, loss and lse values, got ",
               targets.numel(), ", ", loss.numel(), " and ", lse.numel());
  check_targets_dtype(targets, name);
  return rows == 0 ? 1 : aux_stride(targets, name, "targets");
}

}  // namespace

// R = rows, C = classes.
void cross_entropy_forward(const ArrayRef& logits, const ArrayRef& targets, int64_t ignore_index,
                           int64_t rows, int64_t classes, const ArrayRef& loss,
                           const ArrayRef& lse) {
  const char* name = "cross_entropy";
  const int64_t ts = check_forward_args(logits, targets, rows, classes, loss, lse, name);
  if (rows == 0) return;
  NEEDLE_DISPATCH_FLOATING(logits.dtype, name, [&] {
    const auto launch = forward_launch<scalar_t>(logits.data, classes);
    launch.kernel<<<grid_for(rows, 1), launch.threads, 0, stream()>>>(
        static_cast<const scalar_t*>(logits.data), targets.data, targets.dtype, ts, ignore_index,
        rows, classes, static_cast<acc_t<scalar_t>*>(loss.data),
        static_cast<acc_t<scalar_t>*>(lse.data), device_error_flag());
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

// R = rows, C = classes; the logits are overwritten by the gradient.
void cross_entropy_forward_grad(const ArrayRef& logits, const ArrayRef& targets,
                                int64_t ignore_index, int64_t rows, int64_t classes,
                                const ArrayRef& loss, const ArrayRef& lse) {
  const char* name = "cross_entropy_forward_grad";
  const int64_t ts = check_forward_args(logits, targets, rows, classes, loss, lse, name);
  if (rows == 0) return;
  NEEDLE_DISPATCH_FLOATING(logits.dtype, name, [&] {
    using T = scalar_t;
    size_t smem = 0;
    const auto launch = forward_grad_launch<T>(logits.data, classes, smem);
    launch.kernel<<<grid_for(rows, 1), launch.threads, smem, stream()>>>(
        static_cast<T*>(logits.data), targets.data, targets.dtype, ts, ignore_index, rows,
        classes, static_cast<acc_t<T>*>(loss.data), static_cast<acc_t<T>*>(lse.data),
        device_error_flag());
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

// R = rows, C = classes.
void cross_entropy_backward(const ArrayRef& logits, const ArrayRef& targets, const ArrayRef& lse,
                            const ArrayRef& dloss, int64_t ignore_index, int64_t rows,
                            int64_t classes, const ArrayRef& dlogits) {
  const char* name = "cross_entropy_backward";
  NEEDLE_CHECK(logits.numel() == rows * classes && dlogits.numel() == rows * classes, ValueError,
               "cuda ", name, ": expected ", rows, " x ", classes, " logits and dlogits, got ",
               logits.numel(), " and ", dlogits.numel());
  NEEDLE_CHECK(dlogits.dtype == logits.dtype, TypeError, "cuda ", name,
               ": expected dlogits of dtype ", dtype_name(logits.dtype), ", got ",
               dtype_name(dlogits.dtype));
  NEEDLE_CHECK(targets.numel() == rows && lse.numel() == rows && dloss.numel() == rows, ValueError,
               "cuda ", name, ": expected ", rows, " targets, lse and dloss values, got ",
               targets.numel(), ", ", lse.numel(), " and ", dloss.numel());
  NEEDLE_CHECK(is_floating(lse.dtype) && is_floating(dloss.dtype), TypeError, "cuda ", name,
               ": expected floating lse and dloss, got ", dtype_name(lse.dtype), " and ",
               dtype_name(dloss.dtype));
  check_targets_dtype(targets, name);
  if (rows == 0 || classes == 0) return;
  const int64_t ts = aux_stride(targets, name, "targets");
  const int64_t ls = aux_stride(lse, name, "lse");
  const int64_t gs = aux_stride(dloss, name, "dloss");
  NEEDLE_DISPATCH_FLOATING(logits.dtype, name, [&] {
    const auto kernel = backward_kernel_for<scalar_t>(logits.data, dlogits.data, classes);
    kernel<<<grid_for(rows, 1), row_block_threads(classes), 0, stream()>>>(
        static_cast<const scalar_t*>(logits.data), targets.data, targets.dtype, ts, lse.data,
        lse.dtype, ls, dloss.data, dloss.dtype, gs, ignore_index, rows, classes,
        static_cast<scalar_t*>(dlogits.data), device_error_flag());
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
