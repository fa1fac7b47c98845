// Reductions, softmax and logsumexp with their gradients.
#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "ndarray/error.h"

namespace needle {

namespace {

// The input's shape with every reduced dim set to 1 (empty dims = all).
Shape keepdim_shape(const Shape& shape, const std::vector<int>& dims) {
  Shape r = shape;
  if (dims.empty()) {
    for (auto& d : r) d = 1;
    return r;
  }
  for (int d : dims) {
    int k = normalize_dim(d, static_cast<int>(shape.size()));
    if (!r.empty()) r[k] = 1;  // a 0-d input has nothing to set
  }
  return r;
}

// g (the reduced result's gradient) broadcast back over the input's shape.
Tensor expand_reduced(const Tensor& g, const Shape& in_shape, const std::vector<int>& dims) {
  if (in_shape.empty()) return reshape(g, in_shape);
  return broadcast_to(reshape(g, keepdim_shape(in_shape, dims)), in_shape);
}

struct SumFn : Op {
  std::vector<int> dims;
  explicit SumFn(std::vector<int> d) : dims(std::move(d)) {}
  const char* name() const override { return "sum"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {expand_reduced(g, inputs[0].shape(), dims)};
  }
};

// max/min: the gradient goes to the extreme elements, split evenly among ties.
struct ExtremeFn : Op {
  std::vector<int> dims;
  const char* label;
  ExtremeFn(std::vector<int> d, const char* l) : dims(std::move(d)), label(l) {}
  const char* name() const override { return label; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor& out) override {
    const Tensor& a = inputs[0];
    NDArray hit = eq(a.data(), out.data().reshape(keepdim_shape(a.shape(), dims))).astype(a.dtype());
    NDArray weight = div(hit, sum(hit, dims, true));
    return {mul(expand_reduced(g, a.shape(), dims), Tensor(weight))};
  }
};

struct LogSumExpFn : Op {
  int dim;
  explicit LogSumExpFn(int d) : dim(d) {}
  const char* name() const override { return "logsumexp"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor& out) override {
    const Tensor& a = inputs[0];
    Shape ks = keepdim_shape(a.shape(), {dim});
    Tensor p = exp(sub(a, reshape(out, ks)));
    return {mul(expand_reduced(g, a.shape(), {dim}), p)};
  }
};

// The gradients of softmax and log_softmax subtract a weighted row sum from g, which cancels
// where one entry dominates a row. They are computed in stats_dtype (float32 for bfloat16) and
// rounded once, as torch does: rounding each step (the products, the sum, the difference) to
// bfloat16 put one draw in twenty of a (3, 7) softmax gradient more than 2e-2 (relative 2-norm)
// off float64.

struct SoftmaxFn : Op {
  int dim;
  explicit SoftmaxFn(int d) : dim(d) {}
  const char* name() const override { return "softmax"; }
  std::vector<Tensor> gradient(const Tensor& g_in, const Tensor& out_in) override {
    const DType acc = stats_dtype(out_in.dtype());
    const Tensor g = astype(g_in, acc), out = astype(out_in, acc);
    return {astype(mul(out, sub(g, sum(mul(g, out), {dim}, true))), out_in.dtype())};
  }
};

struct LogSoftmaxFn : Op {
  int dim;
  explicit LogSoftmaxFn(int d) : dim(d) {}
  const char* name() const override { return "log_softmax"; }
  std::vector<Tensor> gradient(const Tensor& g_in, const Tensor& out_in) override {
    const DType acc = stats_dtype(out_in.dtype());
    const Tensor g = astype(g_in, acc), out = astype(out_in, acc);
    return {astype(sub(g, mul(exp(out), sum(g, {dim}, true))), out_in.dtype())};
  }
};

std::vector<int> normalized(const std::vector<int>& dims, int ndim) {
  std::vector<int> r;
  for (int d : dims) r.push_back(normalize_dim(d, ndim));
  return r;
}

}  // namespace

Tensor sum(const Tensor& a, const std::vector<int>& dims, bool keepdim) {
  return make_result(needle::sum(a.data(), dims, keepdim),
                     std::make_shared<SumFn>(normalized(dims, a.ndim())), {a});
}

Tensor mean(const Tensor& a, const std::vector<int>& dims, bool keepdim) {
  Tensor x = is_floating(a.dtype()) ? a : astype(a, DType::Float32);
  const int64_t n = reduced_numel(x.shape(), dims);
  return div(sum(x, dims, keepdim), Scalar(static_cast<double>(n)));
}

Tensor max(const Tensor& a, const std::vector<int>& dims, bool keepdim) {
  return make_result(needle::max(a.data(), dims, keepdim),
                     std::make_shared<ExtremeFn>(normalized(dims, a.ndim()), "max"), {a});
}

Tensor min(const Tensor& a, const std::vector<int>& dims, bool keepdim) {
  return make_result(needle::min(a.data(), dims, keepdim),
                     std::make_shared<ExtremeFn>(normalized(dims, a.ndim()), "min"), {a});
}

Tensor var(const Tensor& a, const std::vector<int>& dims, int64_t correction, bool keepdim) {
  Tensor x = is_floating(a.dtype()) ? a : astype(a, DType::Float32);
  Tensor centered = sub(x, mean(x, dims, true));
  double denom = static_cast<double>(reduced_numel(x.shape(), dims) - correction);
  return div(sum(mul(centered, centered), dims, keepdim), Scalar(denom > 0 ? denom : 0.0));
}

Tensor argmax(const Tensor& a, std::optional<int> dim, bool keepdim) {
  return Tensor(needle::argmax(a.data(), dim, keepdim));
}
Tensor argmin(const Tensor& a, std::optional<int> dim, bool keepdim) {
  return Tensor(needle::argmin(a.data(), dim, keepdim));
}

Tensor logsumexp(const Tensor& a_in, int dim, bool keepdim) {
  const Tensor a = autocast_float32(a_in);
  int d = normalize_dim(dim, a.ndim());
  return make_result(needle::logsumexp(a.data(), d, keepdim), std::make_shared<LogSumExpFn>(d),
                     {a});
}

Tensor softmax(const Tensor& a_in, int dim) {
  const Tensor a = autocast_float32(a_in);
  int d = normalize_dim(dim, a.ndim());
  return make_result(needle::softmax(a.data(), d), std::make_shared<SoftmaxFn>(d), {a});
}

Tensor log_softmax(const Tensor& a_in, int dim) {
  const Tensor a = autocast_float32(a_in);
  int d = normalize_dim(dim, a.ndim());
  return make_result(needle::log_softmax(a.data(), d), std::make_shared<LogSoftmaxFn>(d), {a});
}

}  // namespace needle
