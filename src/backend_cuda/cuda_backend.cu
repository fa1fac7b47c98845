// The CUDA kernel table: every entry of backend.h, fused ones included, filled from the .cu files
// of this directory (declared in cuda_internal.h), plus the device queries.
#include "backend_cuda/cuda_backend.h"
#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"

namespace needle {

const Backend& cuda_backend() {
  // Fails with RuntimeError (no GPU, no driver) before the table is handed out.
  cuda::ensure_initialized();
  static const Backend table = [] {
    Backend b{};
    b.name = "cuda";
    b.alloc = cuda::device_alloc;
    b.free = cuda::device_free;
    b.memory_stats = cuda::memory_stats;
    b.reset_peak_memory_stats = cuda::reset_peak_memory_stats;
    b.empty_cache = cuda::empty_cache;
    b.copy_from_host = cuda::copy_from_host;
    b.copy_to_host = cuda::copy_to_host;
    b.copy_to_host_async = cuda::copy_to_host_async;
    b.synchronize = cuda::synchronize;
    b.copy = cuda::copy;
    b.fill = cuda::fill;
    b.unary = cuda::unary;
    b.binary = cuda::binary;
    b.binary_scalar = cuda::binary_scalar;
    b.where = cuda::where;
    b.reduce = cuda::reduce;
    b.gemm = cuda::gemm;
    b.row_op = cuda::row_op;
    b.index_select = cuda::index_select;
    b.index_add = cuda::index_add;
    b.random = cuda::random;
    b.layer_norm_forward = cuda::layer_norm_forward;
    b.layer_norm_backward = cuda::layer_norm_backward;
    b.rotary = cuda::rotary;
    b.cross_entropy_forward = cuda::cross_entropy_forward;
    b.cross_entropy_forward_grad = cuda::cross_entropy_forward_grad;
    b.cross_entropy_backward = cuda::cross_entropy_backward;
    b.adamw = cuda::adamw;
    b.foreach_sum_squares = cuda::foreach_sum_squares;
    b.foreach_scale_to_max_norm = cuda::foreach_scale_to_max_norm;
    b.block_sparse_attention_forward = cuda::block_sparse_attention_forward;
    b.block_sparse_attention_backward = cuda::block_sparse_attention_backward;
    return b;
  }();
  return table;
}

bool cuda_build_enabled() { return true; }

int cuda_device_count() {
  // Asked once: a machine without a driver answers with an error, which means "none".
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();
      n = 0;
    }
    return n;
  }();
  return count;
}

bool cuda_is_available() { return cuda_device_count() > 0; }

void cuda_synchronize() { cuda::synchronize(); }

}  // namespace needle
