// The per-device kernel table. NDArray does all view logic (broadcasting, permutes, slicing,
// promotion) once and hands kernels plain strided descriptors; each backend fills one Backend
// struct. Entries marked (optional) may be null: the caller composes primitives instead.
//
// Contract for every entry, unless it says otherwise:
//  - ArrayRef.data points at element 0 (the view's offset already applied); strides are in
//    elements and may be 0 (broadcast) or negative (flipped views, x[::-1]).
//  - Outputs are compact (row-major, no overlap) unless stated; inputs may be any strided view.
//  - All arrays passed to one call live on the backend's device.
//  - Kernels are asynchronous on GPU backends: only copy_to_host and synchronize wait.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ndarray/device.h"
#include "ndarray/dtype.h"
#include "ndarray/error.h"
#include "ndarray/ops.h"

namespace needle {

constexpr int kMaxDims = 12;

// A strided view handed to kernels; trivially copyable so it can be passed to CUDA by value.
struct ArrayRef {
  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  bool is_compact() const {
    int64_t expect = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
};

// Row-major batched GEMM: C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] for b < batch, with
// op(A) of shape (m, k) and op(B) of shape (k, n). A is stored row-major as (m, k) with leading
// dimension lda, or, when trans_a, as (k, m). Likewise B. C is (m, n) row-major with ldc.
// Batch strides may be 0 (a broadcast operand). A and B have `dtype`; C has it too, or float32
// when `c_float32` is set with bfloat16 A and B (the product, accumulated in float32 either way, is
// then never rounded to bfloat16). With `bias` (a compact vector of n elements of C's dtype),
// C[b][i, j] = alpha * (op(A) op(B))[i, j] + beta * C[b][i, j] + bias[j], added before the result
// is rounded to C's dtype (a GEMM epilogue where the backend has one, so C is written once). With
// `a_row_sums` (batch 1, alpha 1, beta 0, no bias), the m sums over k of op(A)'s rows are written
// there too, compact in C's dtype: a Linear layer's bias gradient beside its weight gradient
// (op(A) = g^T), which a backend with such an epilogue takes from the same pass over A.
struct GemmArgs {
  DType dtype = DType::Float32;
  bool c_float32 = false;
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  double alpha = 1.0, beta = 0.0;
  const void* bias = nullptr;
  void* a_row_sums = nullptr;

  DType c_dtype() const { return c_float32 ? DType::Float32 : dtype; }
};

// Backend::gemm's argument checks, shared by the backends: sizes, the C dtype and row sums.
inline void check_gemm_args(const char* name, const GemmArgs& g) {
  NEEDLE_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, ValueError, name,
               ": expected non-negative sizes, got m=", g.m, " n=", g.n, " k=", g.k,
               " batch=", g.batch);
  NEEDLE_CHECK(is_floating(g.dtype), TypeError, name,
               ": expected a floating dtype (bfloat16, float32, float64), got ",
               dtype_name(g.dtype));
  NEEDLE_CHECK(!g.c_float32 || g.dtype == DType::BFloat16 || g.dtype == DType::Float32, TypeError,
               name, ": a float32 C takes bfloat16 (or float32) A and B, got ",
               dtype_name(g.dtype));
  NEEDLE_CHECK(g.a_row_sums == nullptr ||
                   (g.batch == 1 && g.alpha == 1.0 && g.beta == 0.0 && g.bias == nullptr),
               ValueError, name,
               ": row sums of A take batch 1, alpha 1, beta 0 and no bias, got batch ", g.batch,
               ", alpha ", g.alpha, ", beta ", g.beta, g.bias ? " and a bias" : " and no bias");
}

// One parameter's AdamW step (Backend::adamw) on compact floating arrays of equal length, the
// moments of one dtype: decoupled decay p -= lr * wd * p, moments updated,
// p -= lr * mhat / (sqrt(vhat) + eps), with bias corrections bc1 = 1 - beta1^step and
// bc2 = 1 - beta2^step (both > 0: step >= 1).
struct AdamWParam {
  ArrayRef param, grad, exp_avg, exp_avg_sq;
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0;
  double bias_correction1 = 1, bias_correction2 = 1;
};

// Backend::adamw's argument checks for one parameter, shared by the backends.
inline void check_adamw_param(const char* name, const AdamWParam& a) {
  const int64_t n = a.param.numel();
  NEEDLE_CHECK(a.grad.numel() == n && a.exp_avg.numel() == n && a.exp_avg_sq.numel() == n,
               ValueError, name,
               ": expected param, grad, exp_avg and exp_avg_sq of equal length, got ", n, ", ",
               a.grad.numel(), ", ", a.exp_avg.numel(), " and ", a.exp_avg_sq.numel());
  NEEDLE_CHECK(
      is_floating(a.param.dtype) && is_floating(a.grad.dtype) && is_floating(a.exp_avg.dtype),
      TypeError, name, ": expected floating param, grad and moments, got ",
      dtype_name(a.param.dtype), ", ", dtype_name(a.grad.dtype), " and ",
      dtype_name(a.exp_avg.dtype));
  NEEDLE_CHECK(a.exp_avg.dtype == a.exp_avg_sq.dtype, TypeError, name,
               ": expected exp_avg and exp_avg_sq of one dtype, got ", dtype_name(a.exp_avg.dtype),
               " and ", dtype_name(a.exp_avg_sq.dtype));
  NEEDLE_CHECK(a.bias_correction1 > 0 && a.bias_correction2 > 0, ValueError, name,
               ": expected positive bias corrections (step >= 1), got ", a.bias_correction1,
               " and ", a.bias_correction2);
  NEEDLE_CHECK(a.param.is_compact() && a.grad.is_compact() && a.exp_avg.is_compact() &&
                   a.exp_avg_sq.is_compact(),
               ValueError, name, ": expected compact param, grad, exp_avg and exp_avg_sq");
}

// The foreach_* entries' argument checks, shared by the backends.
inline void check_foreach_arrays(const char* name, const ArrayRef* arrays, int64_t count) {
  NEEDLE_CHECK(count >= 0, ValueError, name, ": expected a count >= 0, got ", count);
  for (int64_t i = 0; i < count; ++i) {
    NEEDLE_CHECK(is_floating(arrays[i].dtype), TypeError, name,
                 ": expected floating arrays, array ", i, " is ", dtype_name(arrays[i].dtype));
    NEEDLE_CHECK(arrays[i].is_compact(), ValueError, name, ": expected compact arrays, array ", i,
                 " is a strided view");
  }
}

// The checks of foreach_sum_squares (scalar: its output) and foreach_scale_to_max_norm (scalar:
// the norm): the arrays', and a float64 scalar.
inline void check_foreach_with_scalar(const char* name, const ArrayRef* arrays, int64_t count,
                                      const ArrayRef& scalar) {
  check_foreach_arrays(name, arrays, count);
  NEEDLE_CHECK(scalar.dtype == DType::Float64 && scalar.numel() == 1, ValueError, name,
               ": expected a float64 scalar, got ", scalar.numel(), " elements of ",
               dtype_name(scalar.dtype));
}

// A block-sparse attention layout as the kernels read it: the kept (query-block, key-block)
// pairs in CSR form and its transpose, all int32 arrays on the kernel's device.
//   b = block_size, QB = num_q_blocks = ceil((q_offset + q_len) / b) rows of the layout,
//   KB = num_k_blocks = ceil(k_len / b), LH = layout_heads (1: shared by every head, or H).
// Query row r of q sits at absolute position q_offset + r (q_offset > 0 for decoding with a KV
// cache) and reads layout row (q_offset + r) / b. Key j is visible to query position i when its
// block is kept and, if causal, j <= i; positions >= k_len are padding and never visible.
// Positions per CTA tile in the CUDA attention kernels (both sides); the layout's work orders
// below are computed over tiles of this size.
constexpr int kAttentionTile = 64;

struct BlockLayoutRef {
  int32_t block_size = 64;
  int64_t q_len = 0, k_len = 0, q_offset = 0;
  int32_t num_q_blocks = 0, num_k_blocks = 0, layout_heads = 1;
  bool causal = true;
  // Row CSR, per layout head h: kept key blocks of query block qb are
  //   col_idx[row_ptr[h * (QB + 1) + qb] .. row_ptr[h * (QB + 1) + qb + 1]), sorted ascending,
  // with row_ptr offsets absolute into col_idx. block_flags (same indexing as col_idx) is 1 when
  // the block needs element masking (the causal diagonal, or padding past k_len / q_len), else 0.
  const int32_t* row_ptr = nullptr;
  const int32_t* col_idx = nullptr;
  const int32_t* block_flags = nullptr;
  // Transposed CSR for dK/dV: query blocks that read key block kb, per layout head:
  //   row_idx[col_ptr[h * (KB + 1) + kb] .. col_ptr[h * (KB + 1) + kb + 1]), sorted ascending,
  // and t_block_flags the matching flags.
  const int32_t* col_ptr = nullptr;
  const int32_t* row_idx = nullptr;
  const int32_t* t_block_flags = nullptr;
  // Work orders for the CUDA kernels, which give each CTA 64 positions (a "tile") of one head:
  // the (layout head, tile) pairs of the query side (q_order: forward and dQ) and of the key side
  // (k_order: dK/dV), entry = layout head * tiles + tile, sorted by the tile's kept work,
  // heaviest first. CTAs launch in this order across all heads and batch items, so the longest
  // rows start first and the grid ends on short ones (longest-processing-time-first scheduling).
  // q_order is null when q_offset > 0 (the kernels then take the later tiles first).
  const int32_t* q_order = nullptr;
  const int32_t* k_order = nullptr;
};

// Allocator statistics for one device (bytes unless named otherwise).
struct MemoryStats {
  int64_t allocated = 0;       // bytes held by live arrays
  int64_t peak_allocated = 0;  // high-water mark of `allocated` since the last reset
  int64_t reserved = 0;        // bytes obtained from the system (>= allocated with a cache)
  int64_t num_device_allocs = 0;  // calls to the system allocator (malloc / cudaMalloc)
  int64_t num_allocs = 0;         // allocation requests served
};

// Host memory that a device is still copying into: what copy_to_host_async returns. The backend
// owns the memory (page-locked, so the copy runs without the host) and knows when the copy is
// done; destroying the object hands the memory back to the backend, which reuses it only after the
// copy has landed.
class PendingHostCopy {
 public:
  virtual ~PendingHostCopy() = default;
  virtual void* data() const = 0;
  // Returns once the copy has landed, and raises what the device reported since the last
  // synchronisation (as synchronize does).
  virtual void wait() const = 0;
};

struct Backend {
  const char* name;

  // --- memory ---------------------------------------------------------------------------------
  // alloc never returns null for nbytes > 0: it throws OutOfMemoryError naming the size.
  void* (*alloc)(size_t nbytes);
  void (*free)(void* ptr, size_t nbytes);
  MemoryStats (*memory_stats)();
  void (*reset_peak_memory_stats)();
  void (*empty_cache)();  // return cached, unused blocks to the system
  void (*copy_from_host)(void* dst, const void* src, size_t nbytes);
  void (*copy_to_host)(void* dst, const void* src, size_t nbytes);  // waits for prior work
  // (optional) Queues a copy of nbytes of device memory into host memory of the backend's own
  // and returns at once; the host waits only when it reads (PendingHostCopy::wait), and then only
  // for the work queued before this call. Null on backends whose memory is the host's.
  std::unique_ptr<PendingHostCopy> (*copy_to_host_async)(const void* src, size_t nbytes);
  void (*synchronize)();

  // --- data movement ----------------------------------------------------------------------------
  // dst[i] = convert(src[i]); same shape; dst may be a strided view (setitem) as long as it does
  // not overlap src. src and dst dtypes may differ (astype).
  void (*copy)(const ArrayRef& src, const ArrayRef& dst);
  // Every element of the (possibly strided) dst set to value, converted to dst's dtype.
  void (*fill)(const ArrayRef& dst, double value);

  // --- elementwise --------------------------------------------------------------------------------
  // out = f(a). a and out share a dtype, except LogicalNot (out bool). Float-only ops are called
  // with floating dtypes only.
  void (*unary)(UnaryOp op, const ArrayRef& a, const ArrayRef& out);
  // out = f(a, b); a and b have out's shape (broadcast through 0 strides) and share a dtype;
  // out has that dtype, or bool for comparisons and logical ops.
  void (*binary)(BinaryOp op, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out);
  // out = f(a, s) (or f(s, a) when scalar_first); s converted to a's dtype first.
  void (*binary_scalar)(BinaryOp op, const ArrayRef& a, double s, bool scalar_first,
                        const ArrayRef& out);
  // out = cond ? a : b; cond bool; a, b, out share a dtype; all of out's shape (broadcast views).
  void (*where)(const ArrayRef& cond, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out);

  // --- reductions ---------------------------------------------------------------------------------
  // in: compact, viewed as (outer, reduce, inner); out: compact (outer, inner). Sum/Prod of
  // bool/int32 inputs write int64; ArgMax/ArgMin write int64 (first occurrence); otherwise out
  // has in's dtype. Floating sums accumulate in at least float32 (double for float64).
  // reduce == 0 gives the identity (0 for Sum, 1 for Prod); Max/Min/Arg* with reduce == 0 are
  // rejected by NDArray before the call.
  void (*reduce)(ReduceOp op, const ArrayRef& in, int64_t outer, int64_t reduce, int64_t inner,
                 const ArrayRef& out);

  // --- linear algebra -----------------------------------------------------------------------------
  void (*gemm)(const GemmArgs& args);  // floating dtypes

  // --- row ops (fused, numerically stable) --------------------------------------------------------
  // in: compact (rows, cols) floating. Softmax/LogSoftmax: out (rows, cols). LogSumExp: out (rows).
  void (*row_op)(RowOp op, const ArrayRef& in, int64_t rows, int64_t cols, const ArrayRef& out);

  // --- indexing -----------------------------------------------------------------------------------
  // in: compact (outer, n, inner); index: compact int64 (k), each in [0, n) (checked: CPU throws
  // IndexError, CUDA reports at the next synchronisation); out: compact (outer, k, inner).
  void (*index_select)(const ArrayRef& in, const ArrayRef& index, int64_t outer, int64_t n,
                       int64_t inner, const ArrayRef& out);
  // out (compact (outer, n, inner)) += src (compact (outer, k, inner)) scattered at index (k);
  // repeated indices accumulate.
  void (*index_add)(const ArrayRef& src, const ArrayRef& index, int64_t outer, int64_t n,
                    int64_t inner, const ArrayRef& out);

  // --- random -------------------------------------------------------------------------------------
  // Fills compact floating `out` from a Philox4x32-10 stream keyed by seed, starting at counter
  // `offset` (element i uses counter offset + i / 4, lane i % 4), so CPU and CUDA produce the
  // same numbers. Uniform in [p0, p1); Normal(mean p0, std p1); Bernoulli(p0) gives 1 or 0.
  void (*random)(RandomKind kind, const ArrayRef& out, uint64_t seed, uint64_t offset, double p0,
                 double p1);

  // --- ops over lists of arrays (torch's _foreach_*) --------------------------------------------
  // Compact floating arrays, any mix of dtypes.
  // out (a float64 scalar) = the sum of x * x over every element of the `count` arrays, squares
  // and sums in float64 (exact squares for float32 and bfloat16 elements). The summation order
  // depends only on the arrays' sizes, so a repeated call gives the same bits.
  void (*foreach_sum_squares)(const ArrayRef* arrays, int64_t count, const ArrayRef& out);
  // Gradient clipping's scaling, with the norm read on the device: coef = max_norm / (norm[0] +
  // 1e-6) in float64, norm a float64 scalar; where coef < 1, x = x * coef in place for each of
  // the `count` arrays, as binary_scalar's Mul computes it (coef rounded to the array's dtype,
  // the product in compute_t and rounded back); otherwise (coef >= 1 or NaN) nothing is written.
  void (*foreach_scale_to_max_norm)(const ArrayRef* arrays, int64_t count, const ArrayRef& norm,
                                    double max_norm);

  // --- fused ops (optional) -----------------------------------------------------------------------
  // x, y: compact (rows, d) floating; weight, bias: (d) or null; mean, rstd: (rows) of
  // stats_dtype(x.dtype) (float32, or float64 for float64 inputs so gradient checks stay exact).
  void (*layer_norm_forward)(const ArrayRef& x, const ArrayRef* weight, const ArrayRef* bias,
                             double eps, int64_t rows, int64_t d, const ArrayRef& y,
                             const ArrayRef& mean, const ArrayRef& rstd);
  // dx (rows, d); dweight, dbias (d) or null; written, not accumulated.
  void (*layer_norm_backward)(const ArrayRef& dy, const ArrayRef& x, const ArrayRef* weight,
                              const ArrayRef& mean, const ArrayRef& rstd, int64_t rows, int64_t d,
                              const ArrayRef& dx, const ArrayRef* dweight, const ArrayRef* dbias);
  // logits: compact (rows, classes) floating; targets: int64 (rows), in [0, classes) or ==
  // ignore_index. loss: (rows), 0 for ignored rows; lse: (rows); both of stats_dtype(logits).
  void (*cross_entropy_forward)(const ArrayRef& logits, const ArrayRef& targets,
                                int64_t ignore_index, int64_t rows, int64_t classes,
                                const ArrayRef& loss, const ArrayRef& lse);
  // cross_entropy_forward, then the logits overwritten in place by the gradient of each row's loss:
  // logits[r, c] = softmax(logits)[r, c] - [c == target[r]], a row of zeros for ignored rows. One
  // pass over the logits for both (linear_cross_entropy's forward when a gradient is needed).
  void (*cross_entropy_forward_grad)(const ArrayRef& logits, const ArrayRef& targets,
                                     int64_t ignore_index, int64_t rows, int64_t classes,
                                     const ArrayRef& loss, const ArrayRef& lse);
  // dlogits[r, c] = dloss[r] * (softmax(logits)[r, c] - [c == target[r]]), 0 for ignored rows.
  void (*cross_entropy_backward)(const ArrayRef& logits, const ArrayRef& targets,
                                 const ArrayRef& lse, const ArrayRef& dloss, int64_t ignore_index,
                                 int64_t rows, int64_t classes, const ArrayRef& dlogits);
  // Rotary position embedding, GPT-NeoX / Llama's rotate_half convention, on x (P, Q, T, D) (any
  // strides: q as the (B, H, T, D) view of a fused projection) with cos, sin compact (T, R) of x's
  // dtype, R even and <= D, h = R / 2; out compact (P, Q, T, D) of x's dtype. Forward, on dims
  // i < R of every row (p, q, t); dims >= R are copied:
  //   out[i] = x[i] * cos[t, i] - x[i + h] * sin[t, i]   (i < h)
  //   out[i] = x[i] * cos[t, i] + x[i - h] * sin[t, i]   (h <= i < R)
  // transpose: the adjoint map (the forward's gradient with respect to x):
  //   out[i] = x[i] * cos[t, i] + x[i + h] * sin[t, i + h]   (i < h)
  //   out[i] = x[i] * cos[t, i] - x[i - h] * sin[t, i - h]   (h <= i < R)
  // Each product and the sum are rounded to x's dtype, as separate elementwise kernels would
  // round them (no fused multiply-add), so the result is the composition's to the bit.
  void (*rotary)(const ArrayRef& x, const ArrayRef& cos, const ArrayRef& sin, bool transpose,
                 const ArrayRef& out);
  // One AdamW step on each of `count` parameters (AdamWParam), as torch.optim.AdamW's fused
  // step takes a whole parameter list: the CUDA backend updates many parameters per launch.
  void (*adamw)(const AdamWParam* params, int64_t count);
  // Block-sparse attention (B = batch, H = heads, Lq/Lk = lengths, D = head dim: any on the CPU,
  // a multiple of 8 up to 128 on CUDA).
  // q: (B, H, Lq, D); k, v: (B, H, Lk, D); all of one floating dtype (float32 or bfloat16;
  // float64 on the CPU for reference checks). out: (B, H, Lq, D) in that dtype. These and the
  // backward's dout, dq, dk, dv are views that pass attention_operand_ok (below), such as the
  // (B, H, L, D) views of a fused QKV projection, and the output written in (B, L, H, D) memory.
  // lse: compact (B, H, Lq) float32 (float64 for float64 inputs) holding
  // log(sum_j exp(scale * q.k_j)) over visible keys, -inf for a row with none (its output row is
  // 0, never NaN). Only kept blocks are read; no Lq x Lk buffer exists anywhere.
  void (*block_sparse_attention_forward)(const ArrayRef& q, const ArrayRef& k,
                                         const ArrayRef& v, const BlockLayoutRef& layout,
                                         double scale, const ArrayRef& out, const ArrayRef& lse);
  // Gradients (written, not accumulated): dq over the row CSR, dk/dv over the transposed CSR.
  // Requires q_offset == 0. dout, out like q; dq like q; dk, dv like k.
  void (*block_sparse_attention_backward)(const ArrayRef& q, const ArrayRef& k, const ArrayRef& v,
                                          const ArrayRef& out, const ArrayRef& lse,
                                          const ArrayRef& dout, const BlockLayoutRef& layout,
                                          double scale, const ArrayRef& dq, const ArrayRef& dk,
                                          const ArrayRef& dv);
};

// Whether a (B, H, L, D) view can be an operand of the attention kernels as it is: rows
// contiguous (stride 1 along D), the data address and the other strides non-negative multiples
// of 16 bytes, so that every row can be read and written in 16-byte pieces wherever it lies, and
// rows fewer than 2^31 elements apart. The attention op copies any other view compact first.
inline bool attention_operand_ok(const ArrayRef& x) {
  if (x.ndim != 4) return false;
  const int64_t bytes = static_cast<int64_t>(itemsize(x.dtype));
  if (x.shape[3] != 1 && x.strides[3] != 1) return false;
  if (x.shape[2] != 1 && x.strides[2] >= (int64_t(1) << 31)) return false;
  if (reinterpret_cast<uintptr_t>(x.data) % 16 != 0) return false;
  for (int i = 0; i < 3; ++i)
    if (x.shape[i] != 1 && (x.strides[i] < 0 || (x.strides[i] * bytes) % 16 != 0)) return false;
  return true;
}

// One (B, H, L, D) attention operand (q, k, v, out or a gradient) as both backends take it:
// `like`'s shape and dtype (like is 4-D), passing attention_operand_ok. Errors start with
// prefix and op ("cuda ", "block_sparse_attention_forward").
inline void check_attention_operand(const char* prefix, const char* op, const char* name,
                                    const ArrayRef& x, const ArrayRef& like) {
  bool same = x.ndim == 4 && x.dtype == like.dtype;
  for (int i = 0; same && i < 4; ++i) same = x.shape[i] == like.shape[i];
  NEEDLE_CHECK(same, ValueError, prefix, op, ": expected ", name, " of shape (", like.shape[0],
               ", ", like.shape[1], ", ", like.shape[2], ", ", like.shape[3], ") and dtype ",
               dtype_name(like.dtype), ", got ", x.ndim, "-D ", dtype_name(x.dtype));
  NEEDLE_CHECK(attention_operand_ok(x), ValueError, prefix, op, ": expected ", name,
               " with contiguous rows and 16-byte aligned strides (attention_operand_ok); copy it "
               "compact first");
}

// Backend::rotary's argument checks, shared by the backends' implementations; returns R.
inline int64_t check_rotary_args(const char* name, const ArrayRef& x, const ArrayRef& cos,
                                 const ArrayRef& sin, const ArrayRef& out) {
  NEEDLE_CHECK(x.ndim == 4 && out.ndim == 4 && cos.ndim == 2 && sin.ndim == 2, ValueError, name,
               ": expected x and out (P, Q, T, D) and cos, sin (T, R), got ", x.ndim, ", ",
               out.ndim, ", ", cos.ndim, " and ", sin.ndim, " dims");
  const int64_t T = x.shape[2], D = x.shape[3], R = cos.shape[1];
  for (int d = 0; d < 4; ++d)
    NEEDLE_CHECK(out.shape[d] == x.shape[d], ValueError, name, ": expected out of x's shape");
  NEEDLE_CHECK(cos.shape[0] == T && sin.shape[0] == T && sin.shape[1] == R && R % 2 == 0 && R <= D,
               ValueError, name, ": expected cos and sin of shape (", T, ", R) with R even and <= ",
               D, ", got (", cos.shape[0], ", ", R, ") and (", sin.shape[0], ", ", sin.shape[1], ")");
  NEEDLE_CHECK(cos.dtype == x.dtype && sin.dtype == x.dtype && out.dtype == x.dtype, TypeError,
               name, ": expected cos, sin and out of x's dtype ", dtype_name(x.dtype));
  NEEDLE_CHECK(cos.is_compact() && sin.is_compact() && out.is_compact(), ValueError, name,
               ": expected compact cos, sin and out");
  return R;
}

// The dtype fused kernels keep statistics in (layer-norm mean/rstd, cross-entropy loss/lse).
inline DType stats_dtype(DType input) {
  return input == DType::Float64 ? DType::Float64 : DType::Float32;
}

// The backend for a device. For CUDA in a build without CUDA, or with no GPU present, throws
// RuntimeError saying so.
const Backend& backend_for(const Device& device);

bool cuda_is_available();
int cuda_device_count();

}  // namespace needle
