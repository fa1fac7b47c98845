// The standard layers and losses. Each keeps Tensor handles to its registered parameters.
// Shapes: B = batch dims (any number), I/O = in/out features, D = normalised/embedding dim.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "nn/module.h"

namespace needle::nn {

// Functions composed from autograd ops that functional.h lacks.
Tensor silu(const Tensor& x);  // x * sigmoid(x)
// x * rsqrt(mean(x^2, last dim) + eps) * weight (weight may be undefined).
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::Mean);
Reduction reduction_from_name(const std::string& name);  // "mean", "sum", "none"

// y (B, O) = x (B, I) @ weight (O, I)^T + bias (O). Initialised as torch: U(-1/sqrt(I), 1/sqrt(I)).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  std::string type_name() const override { return "Linear"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t in_features, out_features;
  Tensor weight, bias;
};

// ids (B) int -> (B, D); weight initialised N(0, 1) as torch.
class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim);
  std::string type_name() const override { return "Embedding"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& ids) override;
  int64_t num_embeddings, embedding_dim;
  Tensor weight;
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps = 1e-5, bool elementwise_affine = true, bool bias = true);
  std::string type_name() const override { return "LayerNorm"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t dim;
  double eps;
  Tensor weight, bias;
};

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps = 1e-6, bool elementwise_affine = true);
  std::string type_name() const override { return "RMSNorm"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  int64_t dim;
  double eps;
  Tensor weight;
};

// Zeroes elements with probability p in training (scaling the rest by 1/(1-p)); identity in eval.
class Dropout : public Module {
 public:
  explicit Dropout(double p = 0.5);
  std::string type_name() const override { return "Dropout"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  double p;
};

class GELU : public Module {
 public:
  explicit GELU(const std::string& approximate = "none");  // "none" (exact erf) or "tanh"
  std::string type_name() const override { return "GELU"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& x) override;
  std::string approximate;
};

class ReLU : public Module {
 public:
  std::string type_name() const override { return "ReLU"; }
  Tensor forward(const Tensor& x) override { return relu(x); }
};

class SiLU : public Module {
 public:
  std::string type_name() const override { return "SiLU"; }
  Tensor forward(const Tensor& x) override { return silu(x); }
};

// Children named "0", "1", ...; forward chains them.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(const std::vector<std::shared_ptr<Module>>& modules);
  std::string type_name() const override { return "Sequential"; }
  Tensor forward(const Tensor& x) override;
  void append(std::shared_ptr<Module> module);
  size_t size() const { return named_children().size(); }
  std::shared_ptr<Module> at(int64_t index) const;  // negative counts from the end
};

// A list of children named "0", "1", ...; no forward of its own.
class ModuleList : public Module {
 public:
  ModuleList() = default;
  explicit ModuleList(const std::vector<std::shared_ptr<Module>>& modules);
  std::string type_name() const override { return "ModuleList"; }
  void append(std::shared_ptr<Module> module);
  size_t size() const { return named_children().size(); }
  std::shared_ptr<Module> at(int64_t index) const;
};

// x + inner(x).
class Residual : public Module {
 public:
  explicit Residual(std::shared_ptr<Module> inner);
  std::string type_name() const override { return "Residual"; }
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<Module> inner;
};

// logits (B, C) or (N, C), int64 targets (B) or (N); averaged over targets != ignore_index.
class CrossEntropyLoss : public Module {
 public:
  explicit CrossEntropyLoss(int64_t ignore_index = -100, const std::string& reduction = "mean");
  std::string type_name() const override { return "CrossEntropyLoss"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& logits, const Tensor& targets);
  int64_t ignore_index;
  std::string reduction;
};

class MSELoss : public Module {
 public:
  explicit MSELoss(const std::string& reduction = "mean");
  std::string type_name() const override { return "MSELoss"; }
  std::string extra_repr() const override;
  Tensor forward(const Tensor& input, const Tensor& target);
  std::string reduction;
};

}  // namespace needle::nn
