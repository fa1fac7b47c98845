// Ops over lists of arrays (torch's _foreach_*), a batch of arrays per launch (multi_tensor.cuh):
// the squared 2-norm of a whole gradient list and its in-place scaling to a maximum norm, as
// clip_grad_norm_ uses them. A model's gradient list takes a few launches instead of four per
// array, and the norm never leaves the device.
#include <vector>

#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/multi_tensor.cuh"

namespace needle::cuda {
namespace {

// One array of a launch; its dtype is read per block (a block-uniform branch).
struct ForeachItem {
  void* data;
  int64_t n;
  DType dtype;
};

// Elements per block.
constexpr int64_t kForeachChunk = 8192;

// f(x) with x the item's data as a pointer to its element type (float32, bfloat16 or float64).
template <typename F>
__device__ __forceinline__ void with_element_type(const ForeachItem& it, F f) {
  if (it.dtype == DType::Float32)
    f(static_cast<float*>(it.data));
  else if (it.dtype == DType::BFloat16)
    f(static_cast<bfloat16*>(it.data));
  else
    f(static_cast<double*>(it.data));
}

template <typename T>
__device__ __forceinline__ double chunk_sum_squares(const T* x, int64_t begin, int64_t end) {
  double s = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
    const double v = convert<double>(x[j]);
    s += v * v;
  }
  return s;
}

// partials[first + b] = the sum of squares of block b's chunk, in float64 (a fixed order: each
// thread's elements in turn, then the block's tree).
__global__ void __launch_bounds__(kThreads)
    sum_squares_kernel(const __grid_constant__ TensorBatch<ForeachItem> batch, int64_t first,
                       double* __restrict__ partials) {
  __shared__ double scratch[32];
  const BlockChunk<ForeachItem> c = block_chunk(batch, kForeachChunk);
  double s;
  with_element_type(c.item, [&](auto* x) { s = chunk_sum_squares(x, c.begin, c.end); });
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) partials[first + blockIdx.x] = s;
}

// out[0] = the sum of partials[0, n), by one block in a fixed order.
__global__ void __launch_bounds__(1024)
    sum_partials_kernel(const double* __restrict__ partials, int64_t n, double* __restrict__ out) {
  __shared__ double scratch[32];
  double s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += partials[j];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) out[0] = s;
}

// x = x * f (f = factor rounded to T), as binary_scalar's ScalarFn computes Mul.
template <typename T>
__device__ __forceinline__ void chunk_mul(T* x, int64_t begin, int64_t end, double factor) {
  using C = compute_t<T>;
  const C f = convert<C>(convert<T>(factor));
  for (int64_t j = begin + threadIdx.x; j < end; j += kThreads)
    x[j] = convert<T>(convert<C>(x[j]) * f);
}

// Each block computes the factor from the norm (as the CPU backend does on the host) and leaves
// its chunk untouched unless the factor is below 1.
__global__ void __launch_bounds__(kThreads)
    scale_to_max_norm_kernel(const __grid_constant__ TensorBatch<ForeachItem> batch,
                             const double* __restrict__ norm, double max_norm) {
  const double coef = max_norm / (*norm + 1e-6);
  if (!(coef < 1.0)) return;
  const BlockChunk<ForeachItem> c = block_chunk(batch, kForeachChunk);
  with_element_type(c.item, [&](auto* x) { chunk_mul(x, c.begin, c.end, coef); });
}

std::vector<ForeachItem> foreach_items(const ArrayRef* arrays, int64_t count) {
  std::vector<ForeachItem> items;
  items.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i)
    items.push_back({arrays[i].data, arrays[i].numel(), arrays[i].dtype});
  return items;
}

}  // namespace

void foreach_sum_squares(const ArrayRef* arrays, int64_t count, const ArrayRef& out) {
  check_foreach_with_scalar("cuda foreach_sum_squares", arrays, count, out);
  const std::vector<ForeachItem> items = foreach_items(arrays, count);
  int64_t blocks = 0;
  for (const ForeachItem& it : items) blocks += ceil_div(it.n, kForeachChunk);
  Workspace partials(static_cast<size_t>(blocks > 0 ? blocks : 1) * sizeof(double));
  double* p = partials.as<double>();
  launch_batches(items, kForeachChunk, [&](const auto& batch, unsigned grid, int64_t first) {
    sum_squares_kernel<<<grid, kThreads, 0, stream()>>>(batch, first, p);
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
  sum_partials_kernel<<<1, 1024, 0, stream()>>>(p, blocks, static_cast<double*>(out.data));
  NEEDLE_CUDA_LAUNCH_CHECK();
}

void foreach_scale_to_max_norm(const ArrayRef* arrays, int64_t count, const ArrayRef& norm,
                               double max_norm) {
  check_foreach_with_scalar("cuda foreach_scale_to_max_norm", arrays, count, norm);
  const double* n = static_cast<const double*>(norm.data);
  launch_batches(foreach_items(arrays, count), kForeachChunk,
                 [&](const auto& batch, unsigned grid, int64_t) {
                   scale_to_max_norm_kernel<<<grid, kThreads, 0, stream()>>>(batch, n, max_norm);
                   NEEDLE_CUDA_LAUNCH_CHECK();
                 });
}

}  // namespace needle::cuda
