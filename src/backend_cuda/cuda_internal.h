// The CUDA kernel-table entries, one group per .cu file; cuda_backend.cu assembles them into the
// Backend table. Signatures and contracts are those of ndarray/backend.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include "ndarray/backend.h"

namespace needle::cuda {

// memory.cu
void* device_alloc(size_t nbytes);
void device_free(void* ptr, size_t nbytes);
MemoryStats memory_stats();
void reset_peak_memory_stats();
void empty_cache();
void copy_from_host(void* dst, const void* src, size_t nbytes);
void copy_to_host(void* dst, const void* src, size_t nbytes);
std::unique_ptr<PendingHostCopy> copy_to_host_async(const void* src, size_t nbytes);
void synchronize();

// copy_fill.cu
void copy(const ArrayRef& src, const ArrayRef& dst);
void fill(const ArrayRef& dst, double value);
void where(const ArrayRef& cond, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out);

// unary.cu
void unary(UnaryOp op, const ArrayRef& a, const ArrayRef& out);

// binary.cu
void binary(BinaryOp op, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out);
void binary_scalar(BinaryOp op, const ArrayRef& a, double s, bool scalar_first,
                   const ArrayRef& out);

// reduce.cu
void reduce(ReduceOp op, const ArrayRef& in, int64_t outer, int64_t reduce, int64_t inner,
            const ArrayRef& out);

// gemm.cu
void gemm(const GemmArgs& args);

// softmax.cu
void row_op(RowOp op, const ArrayRef& in, int64_t rows, int64_t cols, const ArrayRef& out);

// indexing.cu
void index_select(const ArrayRef& in, const ArrayRef& index, int64_t outer, int64_t n,
                  int64_t inner, const ArrayRef& out);
void index_add(const ArrayRef& src, const ArrayRef& index, int64_t outer, int64_t n, int64_t inner,
               const ArrayRef& out);

// random.cu
void random(RandomKind kind, const ArrayRef& out, uint64_t seed, uint64_t offset, double p0,
            double p1);

// rotary.cu
void rotary(const ArrayRef& x, const ArrayRef& cos, const ArrayRef& sin, bool transpose,
            const ArrayRef& out);

// layer_norm.cu
void layer_norm_forward(const ArrayRef& x, const ArrayRef* weight, const ArrayRef* bias, double eps,
                        int64_t rows, int64_t d, const ArrayRef& y, const ArrayRef& mean,
                        const ArrayRef& rstd);
void layer_norm_backward(const ArrayRef& dy, const ArrayRef& x, const ArrayRef* weight,
                         const ArrayRef& mean, const ArrayRef& rstd, int64_t rows, int64_t d,
                         const ArrayRef& dx, const ArrayRef* dweight, const ArrayRef* dbias);

// cross_entropy.cu
void cross_entropy_forward(const ArrayRef& logits, const ArrayRef& targets, int64_t ignore_index,
                           int64_t rows, int64_t classes, const ArrayRef& loss,
                           const ArrayRef& lse);
void cross_entropy_forward_grad(const ArrayRef& logits, const ArrayRef& targets,
                                int64_t ignore_index, int64_t rows, int64_t classes,
                                const ArrayRef& loss, const ArrayRef& lse);
void cross_entropy_backward(const ArrayRef& logits, const ArrayRef& targets, const ArrayRef& lse,
                            const ArrayRef& dloss, int64_t ignore_index, int64_t rows,
                            int64_t classes, const ArrayRef& dlogits);

// adamw.cu
void adamw(const AdamWParam* params, int64_t count);

// foreach.cu
void foreach_sum_squares(const ArrayRef* arrays, int64_t count, const ArrayRef& out);
void foreach_scale_to_max_norm(const ArrayRef* arrays, int64_t count, const ArrayRef& norm,
                               double max_norm);

// attention_forward.cu, attention_backward.cu
void block_sparse_attention_forward(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                                    const BlockLayoutRef& layout, double scale,
                                    const ArrayRef& out, const ArrayRef& lse);
void block_sparse_attention_backward(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                                     const ArrayRef& out, const ArrayRef& lse,
                                     const ArrayRef& dout, const BlockLayoutRef& layout,
                                     double scale, const ArrayRef& dq, const ArrayRef& dk,
                                     const ArrayRef& dv);

}  // namespace needle::cuda
