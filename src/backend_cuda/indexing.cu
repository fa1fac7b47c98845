// Gather and scatter-add along one axis: index_select (embedding lookups, x[idx]) and index_add
// (their gradients). A bad index cannot throw from a kernel: it is recorded in the device error
// flag (cuda_common.cuh) and raised as IndexError at the next synchronisation.
#include <cuda_bf16.h>

#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/elementwise.cuh"

namespace needle::cuda {
namespace {

void check_index(const ArrayRef& index, const char* op) {
  NEEDLE_CHECK(index.dtype == DType::Int64 || index.dtype == DType::Int32, TypeError, "cuda ", op,
               ": expected an int64 or int32 index, got ", dtype_name(index.dtype));
  NEEDLE_CHECK(index.is_compact(), ValueError, "cuda ", op, ": expected a compact index");
}

// O = outer, N = indexed dim of in, K = number of indices, I = inner.
// out[o, j, i] = in[o, idx[j], i]; an out-of-range idx[j] is reported and its row zeroed.
template <typename Bits>
__global__ void index_select_kernel(const Bits* __restrict__ in, const void* index,
                                    DType index_dtype, int64_t outer, int64_t n, int64_t k,
                                    int64_t inner, Bits* __restrict__ out, DeviceErrorFlag flag) {
  const int64_t total = outer * k * inner;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, j = (e / inner) % k, o = e / (inner * k);
    const int64_t idx = load_as_int64(index, index_dtype, j);
    if (idx < 0 || idx >= n) {
      if (i == 0) report_device_error(flag, kIndexSelect, idx, n);
      out[e] = Bits(0);
      continue;
    }
    out[e] = in[(o * n + idx) * inner + i];
  }
}

template <typename T>
__device__ __forceinline__ void atomic_add(T* p, T v) {
  if constexpr (std::is_same_v<T, int64_t>) {
    // Two's-complement addition is the same on the unsigned type.
    atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    atomicAdd(reinterpret_cast<__nv_bfloat16*>(p), __float2bfloat16(static_cast<float>(v)));
  } else {
    atomicAdd(p, v);
  }
}

// O = outer, N = indexed dim of out, K = number of indices, I = inner.
// out[o, idx[j], i] += src[o, j, i]. Repeated indices accumulate through atomics, so the order of
// the additions (and the last bits of a float sum) can vary from run to run.
template <typename T>
__global__ void index_add_kernel(const T* __restrict__ src, const void* index, DType index_dtype,
                                 int64_t outer, int64_t n, int64_t k, int64_t inner,
                                 T* __restrict__ out, DeviceErrorFlag flag) {
  const int64_t total = outer * k * inner;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, j = (e / inner) % k, o = e / (inner * k);
    const int64_t idx = load_as_int64(index, index_dtype, j);
    if (idx < 0 || idx >= n) {
      if (i == 0) report_device_error(flag, kIndexAdd, idx, n);
      continue;
    }
    atomic_add(out + (o * n + idx) * inner + i, src[e]);
  }
}

}  // namespace

void index_select(const ArrayRef& in, const ArrayRef& index, int64_t outer, int64_t n,
                  int64_t inner, const ArrayRef& out) {
  check_index(index, "index_select");
  const int64_t k = index.numel();
  NEEDLE_CHECK(in.dtype == out.dtype, TypeError, "cuda index_select: expected out of dtype ",
               dtype_name(in.dtype), ", got ", dtype_name(out.dtype));
  NEEDLE_CHECK(in.numel() == outer * n * inner && out.numel() == outer * k * inner, ValueError,
               "cuda index_select: expected in of ", outer * n * inner, " and out of ",
               outer * k * inner, " elements, got ", in.numel(), " and ", out.numel());
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  NEEDLE_DISPATCH_BITS(itemsize(in.dtype), [&] {
    index_select_kernel<bits_t><<<grid_for(total, kThreads), kThreads, 0, stream()>>>(
        static_cast<const bits_t*>(in.data), index.data, index.dtype, outer, n, k, inner,
        static_cast<bits_t*>(out.data), device_error_flag());
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

void index_add(const ArrayRef& src, const ArrayRef& index, int64_t outer, int64_t n, int64_t inner,
               const ArrayRef& out) {
  check_index(index, "index_add");
  const int64_t k = index.numel();
  NEEDLE_CHECK(src.dtype == out.dtype, TypeError, "cuda index_add: expected src of dtype ",
               dtype_name(out.dtype), ", got ", dtype_name(src.dtype));
  NEEDLE_CHECK(src.numel() == outer * k * inner && out.numel() == outer * n * inner, ValueError,
               "cuda index_add: expected src of ", outer * k * inner, " and out of ",
               outer * n * inner, " elements, got ", src.numel(), " and ", out.numel());
  const int64_t total = outer * k * inner;
  NEEDLE_DISPATCH_NUMERIC(out.dtype, "index_add", [&] {
    if (total == 0) return;
    index_add_kernel<scalar_t><<<grid_for(total, kThreads), kThreads, 0, stream()>>>(
        static_cast<const scalar_t*>(src.data), index.data, index.dtype, outer, n, k, inner,
        static_cast<scalar_t*>(out.data), device_error_flag());
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
