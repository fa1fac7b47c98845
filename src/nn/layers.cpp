// Layers and losses (declared in layers.h).
#include "nn/layers.h"

#include <cmath>
#include <sstream>

#include "ndarray/error.h"
#include "nn/init.h"

namespace needle::nn {
namespace {

Tensor empty_param(const Shape& shape) { return Tensor(NDArray::zeros(shape), true); }

std::string fmt_double(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

Tensor silu(const Tensor& x) { return mul(x, sigmoid(x)); }

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  Tensor ms = mean(mul(x, x), {-1}, true);
  Tensor y = mul(x, rsqrt(add(ms, Scalar(eps))));
  return weight.defined() ? mul(y, weight) : y;
}

Reduction reduction_from_name(const std::string& name) {
  if (name == "mean") return Reduction::Mean;
  if (name == "sum") return Reduction::Sum;
  if (name == "none") return Reduction::None;
  throw ValueError("reduction must be 'mean', 'sum' or 'none', got '" + name + "'");
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  NEEDLE_CHECK(input.shape() == target.shape(), ValueError, "mse_loss: input shape ",
               shape_str(input.shape()), " and target shape ", shape_str(target.shape()),
               " differ");
  Tensor d = sub(input, target);
  Tensor sq = mul(d, d);
  if (reduction == Reduction::Mean) return mean(sq);
  if (reduction == Reduction::Sum) return sum(sq);
  return sq;
}

// --- Linear -------------------------------------------------------------------------------------------
Linear::Linear(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  NEEDLE_CHECK(in > 0 && out > 0, ValueError, "Linear: expected positive sizes, got in_features ",
               in, " and out_features ", out);
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  weight = register_parameter("weight", empty_param({out, in}));
  init::uniform_(weight, -bound, bound);
  if (with_bias) {
    bias = register_parameter("bias", empty_param({out}));
    init::uniform_(bias, -bound, bound);
  }
}

std::string Linear::extra_repr() const {
  return "in_features=" + std::to_string(in_features) + ", out_features=" +
         std::to_string(out_features) + ", bias=" + (bias.defined() ? "True" : "False");
}

Tensor Linear::forward(const Tensor& x) {
  NEEDLE_CHECK(x.ndim() >= 1 && x.shape().back() == in_features, ValueError,
               "Linear: expected input with last dim ", in_features, ", got shape ",
               shape_str(x.shape()));
  return linear(x, weight, bias);
}

// --- Embedding ----------------------------------------------------------------------------------------
Embedding::Embedding(int64_t n, int64_t d) : num_embeddings(n), embedding_dim(d) {
  NEEDLE_CHECK(n > 0 && d > 0, ValueError, "Embedding: expected positive sizes, got ", n, " and ",
               d);
  weight = register_parameter("weight", empty_param({n, d}));
  init::normal_(weight, 0.0, 1.0);
}

std::string Embedding::extra_repr() const {
  return std::to_string(num_embeddings) + ", " + std::to_string(embedding_dim);
}

Tensor Embedding::forward(const Tensor& ids) { return embedding(weight, ids); }

// --- norms --------------------------------------------------------------------------------------------
LayerNorm::LayerNorm(int64_t d, double e, bool affine, bool with_bias) : dim(d), eps(e) {
  NEEDLE_CHECK(d > 0, ValueError, "LayerNorm: expected a positive dim, got ", d);
  if (affine) {
    weight = register_parameter("weight", Tensor(NDArray::ones({d}), true));
    if (with_bias) bias = register_parameter("bias", empty_param({d}));
  }
}

std::string LayerNorm::extra_repr() const {
  return "(" + std::to_string(dim) + ",), eps=" + fmt_double(eps) +
         ", elementwise_affine=" + (weight.defined() ? "True" : "False");
}

Tensor LayerNorm::forward(const Tensor& x) {
  NEEDLE_CHECK(x.ndim() >= 1 && x.shape().back() == dim, ValueError,
               "LayerNorm: expected input with last dim ", dim, ", got shape ",
               shape_str(x.shape()));
  return layer_norm(x, weight, bias, eps);
}

RMSNorm::RMSNorm(int64_t d, double e, bool affine) : dim(d), eps(e) {
  NEEDLE_CHECK(d > 0, ValueError, "RMSNorm: expected a positive dim, got ", d);
  if (affine) weight = register_parameter("weight", Tensor(NDArray::ones({d}), true));
}

std::string RMSNorm::extra_repr() const {
  return "(" + std::to_string(dim) + ",), eps=" + fmt_double(eps);
}

Tensor RMSNorm::forward(const Tensor& x) {
  NEEDLE_CHECK(x.ndim() >= 1 && x.shape().back() == dim, ValueError,
               "RMSNorm: expected input with last dim ", dim, ", got shape ",
               shape_str(x.shape()));
  return rms_norm(x, weight, eps);
}

// --- activations and dropout ---------------------------------------------------------------------------
Dropout::Dropout(double prob) : p(prob) {
  NEEDLE_CHECK(p >= 0 && p <= 1, ValueError, "Dropout: expected 0 <= p <= 1, got ", p);
}
std::string Dropout::extra_repr() const { return "p=" + fmt_double(p); }
Tensor Dropout::forward(const Tensor& x) { return dropout(x, p, training()); }

GELU::GELU(const std::string& a) : approximate(a) {
  NEEDLE_CHECK(a == "none" || a == "tanh", ValueError,
               "GELU: approximate must be 'none' or 'tanh', got '", a, "'");
}
std::string GELU::extra_repr() const {
  return approximate == "none" ? "" : "approximate='" + approximate + "'";
}
Tensor GELU::forward(const Tensor& x) { return gelu(x, approximate == "tanh"); }

// --- containers ----------------------------------------------------------------------------------------
namespace {
std::shared_ptr<Module> child_at(const Module& m, int64_t index, const char* what) {
  auto children = m.named_children();
  const int64_t n = static_cast<int64_t>(children.size());
  NEEDLE_CHECK(index >= -n && index < n, IndexError, what, " index ", index,
               " out of range for ", n, " modules");
  return children[static_cast<size_t>(index < 0 ? index + n : index)].second;
}
}  // namespace

Sequential::Sequential(const std::vector<std::shared_ptr<Module>>& modules) {
  for (const auto& m : modules) append(m);
}
void Sequential::append(std::shared_ptr<Module> module) {
  register_module(std::to_string(size()), std::move(module));
}
std::shared_ptr<Module> Sequential::at(int64_t index) const {
  return child_at(*this, index, "Sequential");
}
Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (const auto& [name, m] : named_children()) h = m->forward(h);
  return h;
}

ModuleList::ModuleList(const std::vector<std::shared_ptr<Module>>& modules) {
  for (const auto& m : modules) append(m);
}
void ModuleList::append(std::shared_ptr<Module> module) {
  register_module(std::to_string(size()), std::move(module));
}
std::shared_ptr<Module> ModuleList::at(int64_t index) const {
  return child_at(*this, index, "ModuleList");
}

Residual::Residual(std::shared_ptr<Module> m) : inner(register_module("inner", std::move(m))) {}
Tensor Residual::forward(const Tensor& x) { return add(x, inner->forward(x)); }

// --- losses ----------------------------------------------------------------------------------------------
CrossEntropyLoss::CrossEntropyLoss(int64_t ii, const std::string& r)
    : ignore_index(ii), reduction(r) {
  reduction_from_name(r);
}
std::string CrossEntropyLoss::extra_repr() const {
  return "ignore_index=" + std::to_string(ignore_index) + ", reduction='" + reduction + "'";
}
Tensor CrossEntropyLoss::forward(const Tensor& logits, const Tensor& targets) {
  return cross_entropy(logits, targets, ignore_index, reduction_from_name(reduction));
}

MSELoss::MSELoss(const std::string& r) : reduction(r) { reduction_from_name(r); }
std::string MSELoss::extra_repr() const { return "reduction='" + reduction + "'"; }
Tensor MSELoss::forward(const Tensor& input, const Tensor& target) {
  return mse_loss(input, target, reduction_from_name(reduction));
}

}  // namespace needle::nn
