// The CPU kernel table: every entry, fused ones included, is implemented in this directory.
#include "backend_cpu/cpu_backend.h"

#include "backend_cpu/cpu_kernels.h"

namespace needle {

const Backend& cpu_backend() {
  static const Backend table = [] {
    Backend b{};
    b.name = "cpu";
    b.alloc = cpu_kernels::alloc;
    b.free = cpu_kernels::free;
    b.memory_stats = cpu_kernels::memory_stats;
    b.reset_peak_memory_stats = cpu_kernels::reset_peak_memory_stats;
    b.empty_cache = cpu_kernels::empty_cache;
    b.copy_from_host = cpu_kernels::copy_from_host;
    b.copy_to_host = cpu_kernels::copy_to_host;
    b.synchronize = cpu_kernels::synchronize;
    b.copy = cpu_kernels::copy;
    b.fill = cpu_kernels::fill;
    b.unary = cpu_kernels::unary;
    b.binary = cpu_kernels::binary;
    b.binary_scalar = cpu_kernels::binary_scalar;
    b.where = cpu_kernels::where;
    b.reduce = cpu_kernels::reduce;
    b.gemm = cpu_kernels::gemm;
    b.row_op = cpu_kernels::row_op;
    b.index_select = cpu_kernels::index_select;
    b.index_add = cpu_kernels::index_add;
    b.random = cpu_kernels::random;
    b.layer_norm_forward = cpu_kernels::layer_norm_forward;
    b.layer_norm_backward = cpu_kernels::layer_norm_backward;
    b.cross_entropy_forward = cpu_kernels::cross_entropy_forward;
    b.cross_entropy_forward_grad = cpu_kernels::cross_entropy_forward_grad;
    b.cross_entropy_backward = cpu_kernels::cross_entropy_backward;
    b.rotary = cpu_kernels::rotary;
    b.adamw = cpu_kernels::adamw;
    b.foreach_sum_squares = cpu_kernels::foreach_sum_squares;
    b.foreach_scale_to_max_norm = cpu_kernels::foreach_scale_to_max_norm;
    b.block_sparse_attention_forward = cpu_kernels::block_sparse_attention_forward;
    b.block_sparse_attention_backward = cpu_kernels::block_sparse_attention_backward;
    return b;
  }();
  return table;
}

}  // namespace needle
