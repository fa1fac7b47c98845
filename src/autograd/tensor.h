// The autograd Tensor: an NDArray plus the op that made it. backward() walks the graph in
// reverse topological order (iteratively, so graphs 100,000 ops deep work), accumulating
// gradients; each op keeps its compute and its gradient side by side (functional.h, ops_*.cpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "ndarray/ndarray.h"

namespace needle {

class Tensor;
struct TensorImpl;

// A differentiable operation recorded in the graph. `inputs` are the graph edges; gradient()
// returns one gradient per input (an undefined Tensor where an input needs none), written in
// Tensor ops so it runs on any device and can itself be differentiated.
struct Op {
  std::vector<Tensor> inputs;
  virtual ~Op();
  virtual const char* name() const = 0;
  virtual std::vector<Tensor> gradient(const Tensor& grad_out, const Tensor& out) = 0;
  // Ops whose output is a view of their one input (getitem) return the view's index: their
  // gradient is zero outside it, so the backward engine, when it builds no graph, writes or adds
  // grad_out into that view of one gradient buffer per input instead of making a zero-filled
  // tensor per view and summing them (q, k and v sliced from one projection share one buffer).
  virtual const std::vector<Index>* view_index() const { return nullptr; }
};

struct TensorImpl {
  NDArray data;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<Op> op;  // null for leaves and for freed graph nodes
  bool requires_grad = false;
  bool graph_freed = false;  // backward already consumed this node's op
  ~TensorImpl();
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(NDArray data, bool requires_grad = false);
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const NDArray& data() const;
  void set_data(const NDArray& data) const;  // replaces values in place of the graph (optimizers)
  const Shape& shape() const { return data().shape(); }
  DType dtype() const { return data().dtype(); }
  Device device() const { return data().device(); }
  int ndim() const { return data().ndim(); }
  int64_t numel() const { return data().numel(); }
  int64_t size(int dim) const { return data().size(dim); }

  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  const Tensor& requires_grad_(bool value = true) const;
  bool is_leaf() const { return !impl_->op && !impl_->graph_freed; }
  Tensor grad() const;
  void set_grad(const Tensor& g) const;
  void zero_grad() const;  // drops .grad (PyTorch's set_to_none)
  const std::shared_ptr<Op>& op() const { return impl_->op; }
  Tensor detach() const;  // shares data, no graph

  // d(this)/d(leaves). A scalar needs no gradient argument; anything else must be given one.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false,
                bool create_graph = false) const;

  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Grad mode: while disabled (no_grad), ops record no graph.
bool grad_enabled();
void set_grad_enabled(bool enabled);
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};
class EnableGradGuard {
 public:
  explicit EnableGradGuard(bool enabled) : prev_(grad_enabled()) { set_grad_enabled(enabled); }
  ~EnableGradGuard() { set_grad_enabled(prev_); }

 private:
  bool prev_;
};

// Wraps an op's result: records `op` with `inputs` when grad mode is on and an input requires a
// gradient; otherwise the result is a plain constant.
Tensor make_result(NDArray data, std::shared_ptr<Op> op, std::vector<Tensor> inputs);

}  // namespace needle
