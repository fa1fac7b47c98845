// Optimizers (SGD, Adam, AdamW) with parameter groups, global-norm gradient clipping and
// learning-rate schedules. Updates run as kernels on the parameters' device: AdamW and Adam
// through the backend's fused `adamw` entry, which takes the whole parameter list (composed from
// NDArray ops where a backend lacks it), SGD through NDArray ops; parameters are updated in place
// so every Tensor handle sees them.
//
// state_dict() is a flat NamedArrays, so a checkpoint is one safetensors file:
//   "state.<i>.step" (int64 scalar), "state.<i>.<buffer>" (exp_avg, exp_avg_sq, momentum_buffer)
//   for the i-th parameter counted across groups, and "param_groups.<g>.<option>" (float64).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "nn/safetensors.h"

namespace needle::nn {

using Options = std::map<std::string, double>;

struct ParamGroup {
  std::vector<Tensor> params;
  Options options;  // keys absent here take the optimizer's defaults
};

class Optimizer {
 public:
  virtual ~Optimizer();
  virtual std::string type_name() const = 0;
  void step();  // updates every parameter that has a gradient
  void zero_grad();
  void add_param_group(ParamGroup group);
  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  const Options& defaults() const { return defaults_; }
  NamedArrays state_dict() const;
  // Validates keys, group count and buffer shapes against this optimizer's parameters first;
  // ValueError names the offending key and nothing is changed.
  void load_state_dict(const NamedArrays& state);

 protected:
  Optimizer(std::vector<ParamGroup> groups, Options defaults);
  struct ParamState {
    int64_t step = 0;
    std::map<std::string, NDArray> buffers;
  };
  // One parameter's part of a step: the parameter (compact data), its compact gradient, its
  // group's options and its state (the step already counted).
  struct Update {
    const Tensor* param;
    NDArray grad;
    const Options* options;
    ParamState* state;
  };
  // Applies one step to every parameter in `updates`.
  virtual void update(const std::vector<Update>& updates) = 0;

 private:
  std::vector<ParamGroup> groups_;
  Options defaults_;
  std::vector<ParamState> state_;  // by parameter index across groups
};

// torch.optim.SGD: g += wd p; with momentum b = mu b + (1 - dampening) g (b = g at the first
// step); nesterov uses g + mu b, else b; p -= lr g.
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, double lr, double momentum = 0.0, double dampening = 0.0,
      double weight_decay = 0.0, bool nesterov = false);
  std::string type_name() const override { return "SGD"; }

 protected:
  void update(const std::vector<Update>& updates) override;
};

// Adam with L2 weight decay (g += wd p) when decoupled is false; AdamW (p -= lr wd p) when true.
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8, double weight_decay = 0.0);
  std::string type_name() const override { return decoupled_ ? "AdamW" : "Adam"; }

 protected:
  Adam(std::vector<ParamGroup> groups, double lr, double beta1, double beta2, double eps,
       double weight_decay, bool decoupled);
  // All parameters of one device in one call of the backend's list-taking adamw entry.
  void update(const std::vector<Update>& updates) override;

 private:
  bool decoupled_;
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, double lr = 1e-3, double beta1 = 0.9,
        double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0.01)
      : Adam(std::move(groups), lr, beta1, beta2, eps, weight_decay, true) {}
};

// Scales every gradient by max_norm / (norm + 1e-6) when that factor is below 1 (never for a
// NaN norm). Returns the global norm before clipping as a float64 scalar on the first gradient's
// device (0 on the CPU without gradients), as torch returns a tensor: nothing waits for the
// device until the caller reads it. norm_type: 2 (default), any p >= 1, or infinity.
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0);

// Sets each group's lr to its base lr (the lr at construction) times factor(step), where step
// counts step() calls; the constructor applies factor(0).
class LRScheduler {
 public:
  explicit LRScheduler(Optimizer& optimizer);
  virtual ~LRScheduler();
  virtual double factor(int64_t step) const = 0;
  void step();
  int64_t last_step() const { return step_; }
  void set_last_step(int64_t step);  // restoring from a checkpoint
  std::vector<double> get_last_lr() const;

 protected:
  void apply();

 private:
  Optimizer& optimizer_;
  std::vector<double> base_lrs_;
  int64_t step_ = 0;
};

// Linear warm-up to the base lr over warmup_steps (factor (s + 1) / warmup), then constant.
class ConstantLR : public LRScheduler {
 public:
  ConstantLR(Optimizer& optimizer, int64_t warmup_steps = 0);
  double factor(int64_t step) const override;
  int64_t warmup_steps;
};

// Warm-up as above, then cosine decay from 1 to min_ratio at total_steps, flat afterwards.
class WarmupCosineLR : public LRScheduler {
 public:
  WarmupCosineLR(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                 double min_ratio = 0.1);
  double factor(int64_t step) const override;
  int64_t warmup_steps, total_steps;
  double min_ratio;
};

// Warm-up as above, then linear decay from 1 to end_ratio at total_steps, flat afterwards.
class LinearDecayLR : public LRScheduler {
 public:
  LinearDecayLR(Optimizer& optimizer, int64_t warmup_steps, int64_t total_steps,
                double end_ratio = 0.0);
  double factor(int64_t step) const override;
  int64_t warmup_steps, total_steps;
  double end_ratio;
};

}  // namespace needle::nn
