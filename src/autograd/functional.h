// The differentiable op library on Tensors. Each function computes through NDArray and records
// an Op whose gradient is written in these same functions (ops_*.cpp).
#pragma once
#include <optional>
#include <vector>

#include "autograd/tensor.h"

namespace needle {

// --- elementwise (broadcasting; gradients reduced back to the input shapes) ----------------------
Tensor unary(UnaryOp op, const Tensor& a);
#define NEEDLE_DECLARE_TENSOR_UNARY(Name, fname, ...) Tensor fname(const Tensor& a);
NEEDLE_UNARY_OPS(NEEDLE_DECLARE_TENSOR_UNARY)
#undef NEEDLE_DECLARE_TENSOR_UNARY

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor binary(BinaryOp op, const Tensor& a, const Scalar& s, bool scalar_first = false);
#define NEEDLE_DECLARE_TENSOR_BINARY(Name, fname, ...)  \
  Tensor fname(const Tensor& a, const Tensor& b);       \
  Tensor fname(const Tensor& a, const Scalar& b);       \
  Tensor fname(const Scalar& a, const Tensor& b);
NEEDLE_BINARY_OPS(NEEDLE_DECLARE_TENSOR_BINARY)
#undef NEEDLE_DECLARE_TENSOR_BINARY
Tensor logical_not(const Tensor& a);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, const Scalar& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Scalar& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Scalar& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Scalar& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
// A number branch is a weak scalar: the result has the dtype `a` promotes to with it.
Tensor where(const Tensor& cond, const Tensor& a, const Scalar& b);
Tensor masked_fill(const Tensor& a, const Tensor& mask, const Scalar& value);
// The result's dtype follows the bounds (see the NDArray clamp).
Tensor clamp(const Tensor& a, const std::optional<Scalar>& min, const std::optional<Scalar>& max);
Tensor astype(const Tensor& a, DType dtype);  // differentiable between floating dtypes
// non_blocking: see NDArray::to (a GPU-to-CPU copy queued, waited for on the result's first use).
Tensor to_device(const Tensor& a, const Device& device, bool non_blocking = false);

// --- shapes -----------------------------------------------------------------------------------------
Tensor reshape(const Tensor& a, const Shape& shape);
Tensor view(const Tensor& a, const Shape& shape);
Tensor permute(const Tensor& a, const std::vector<int>& dims);
Tensor transpose(const Tensor& a, int d0, int d1);
Tensor broadcast_to(const Tensor& a, const Shape& shape);
Tensor expand(const Tensor& a, const Shape& shape);
Tensor squeeze(const Tensor& a, std::optional<int> dim = {});
Tensor unsqueeze(const Tensor& a, int dim);
Tensor flatten(const Tensor& a, int start_dim = 0, int end_dim = -1);
Tensor getitem(const Tensor& a, const std::vector<Index>& index);
Tensor concatenate(const std::vector<Tensor>& tensors, int dim = 0);
Tensor stack(const std::vector<Tensor>& tensors, int dim = 0);
std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int dim = 0);
std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int dim = 0);
Tensor flip(const Tensor& a, const std::vector<int>& dims);
Tensor pad(const Tensor& a, const std::vector<int64_t>& pads, double value = 0.0);
// Sums `a` down to `shape` (the inverse of broadcasting), used by gradients.
Tensor sum_to(const Tensor& a, const Shape& shape);

// --- reductions -------------------------------------------------------------------------------------
Tensor sum(const Tensor& a, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor max(const Tensor& a, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor min(const Tensor& a, const std::vector<int>& dims = {}, bool keepdim = false);
Tensor var(const Tensor& a, const std::vector<int>& dims = {}, int64_t correction = 1,
           bool keepdim = false);
Tensor argmax(const Tensor& a, std::optional<int> dim = {}, bool keepdim = false);
Tensor argmin(const Tensor& a, std::optional<int> dim = {}, bool keepdim = false);
Tensor logsumexp(const Tensor& a, int dim, bool keepdim = false);
Tensor softmax(const Tensor& a, int dim);
Tensor log_softmax(const Tensor& a, int dim);

// --- linear algebra and neural-network ops ------------------------------------------------------------
Tensor matmul(const Tensor& a, const Tensor& b);
// x @ weight^T + bias, with weight (out, in) and bias (out) or undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
Tensor embedding(const Tensor& weight, const Tensor& ids);
enum class Reduction { None, Mean, Sum };
// logits (..., C) and int64 targets (...); mean averages over targets != ignore_index.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     Reduction reduction = Reduction::Mean);
// cross_entropy(linear(x, weight), targets) without the logits' gradient pass: x (..., in), weight
// (classes, in), no bias (a language model's output layer). When a gradient is needed, one kernel
// pass over the logits gives the losses and writes the logits' gradient (of each row's loss) over
// them, and the backward pass takes dx and dweight from it with two GEMMs; the (rows, classes)
// logits and their gradient share one buffer. Autocast: the product in bfloat16 (as linear), the
// loss in float32 (as cross_entropy).
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets,
                            int64_t ignore_index = -100, Reduction reduction = Reduction::Mean);
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor gelu(const Tensor& a, bool tanh_approximation);
// Rotary position embedding, rotate_half convention (GPT-NeoX, Llama): x (..., T, D), cos and sin
// (T, R) with R even and <= D. The first R dims of each row become x * cos + rotate_half(x) * sin,
// where rotate_half(x) = [-x[R/2:R], x[:R/2]]; the other dims pass through. One fused kernel
// forward and one backward; x may be any view (the kernel reads x as (P, Q, T, D) with any
// strides, so q and k sliced from a fused projection are read in place; above four dims the
// leading ones merge into P, copied compact where they cannot). The result is
// compact, in the promoted dtype, and equals that composition's to the bit. Tables that require
// grad take the composition.
Tensor rotary_embedding(const Tensor& x, const Tensor& cos, const Tensor& sin);
Tensor dropout(const Tensor& a, double p, bool training);

}  // namespace needle
