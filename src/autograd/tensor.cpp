// The Tensor value type, grad mode, and the backward engine.
#include "autograd/tensor.h"

#include <algorithm>
#include <unordered_map>

#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "ndarray/error.h"

namespace needle {

Op::~Op() = default;

// Destroying the last reference to a long chain would recurse once per node; unlink the chain
// iteratively instead so graphs of any depth free safely.
TensorImpl::~TensorImpl() {
  if (!op) return;
  std::vector<std::shared_ptr<Op>> pending;
  pending.push_back(std::move(op));
  while (!pending.empty()) {
    std::shared_ptr<Op> cur = std::move(pending.back());
    pending.pop_back();
    if (cur.use_count() != 1) continue;
    for (Tensor& in : cur->inputs) {
      const auto& impl = in.impl();
      if (impl && impl.use_count() == 1 && impl->op) pending.push_back(std::move(impl->op));
    }
  }
}

static thread_local bool g_grad_enabled = true;
bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool enabled) { g_grad_enabled = enabled; }

Tensor::Tensor(NDArray data, bool requires_grad) : impl_(std::make_shared<TensorImpl>()) {
  impl_->data = std::move(data);
  if (requires_grad) requires_grad_(true);
}

const NDArray& Tensor::data() const {
  NEEDLE_CHECK(impl_, ValueError, "the tensor is undefined");
  return impl_->data;
}

void Tensor::set_data(const NDArray& data) const {
  NEEDLE_CHECK(impl_, ValueError, "the tensor is undefined");
  impl_->data = data;
}

const Tensor& Tensor::requires_grad_(bool value) const {
  NEEDLE_CHECK(impl_, ValueError, "the tensor is undefined");
  NEEDLE_CHECK(!value || is_floating(impl_->data.dtype()), TypeError,
               "only floating tensors can require gradients, got dtype ",
               dtype_name(impl_->data.dtype()));
  NEEDLE_CHECK(value || is_leaf() || !impl_->requires_grad, ValueError,
               "requires_grad can only be turned off on leaf tensors (use detach())");
  impl_->requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const { return impl_ && impl_->grad ? Tensor(impl_->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) const {
  if (g.defined()) {
    NEEDLE_CHECK(g.shape() == shape(), ValueError, "assigned grad has shape ",
                 shape_str(g.shape()), ", expected ", shape_str(shape()));
  }
  impl_->grad = g.impl();
}

void Tensor::zero_grad() const { impl_->grad.reset(); }

Tensor Tensor::detach() const { return Tensor(data(), false); }

Tensor make_result(NDArray data, std::shared_ptr<Op> op, std::vector<Tensor> inputs) {
  Tensor out(std::move(data));
  if (!grad_enabled()) return out;
  bool needs = false;
  for (const Tensor& t : inputs) needs = needs || (t.defined() && t.requires_grad());
  if (!needs) return out;
  op->inputs = std::move(inputs);
  out.impl()->op = std::move(op);
  out.impl()->requires_grad = true;
  return out;
}

// Nodes reachable from root through ops, children before parents, without recursion.
static std::vector<std::shared_ptr<TensorImpl>> topo_order(const std::shared_ptr<TensorImpl>& root) {
  std::vector<std::shared_ptr<TensorImpl>> order;
  std::unordered_map<TensorImpl*, bool> visited;
  std::vector<std::pair<std::shared_ptr<TensorImpl>, size_t>> stack;
  stack.emplace_back(root, 0);
  visited[root.get()] = true;
  while (!stack.empty()) {
    auto& [node, next] = stack.back();
    Op* op = node->op.get();
    if (op && next < op->inputs.size()) {
      const auto& child = op->inputs[next++].impl();
      if (child && child->requires_grad && !visited[child.get()]) {
        visited[child.get()] = true;
        stack.emplace_back(child, 0);
      }
      continue;
    }
    order.push_back(node);
    stack.pop_back();
  }
  return order;
}

static Tensor accumulate(const Tensor& acc, const Tensor& g) { return acc.defined() ? add(acc, g) : g; }

// A gradient buffer backward() allocated and nothing else references yet. When it started as
// zeros, `written` lists the views (getitem indices) written into it so far.
struct OwnedBuffer {
  bool from_zeros = false;
  std::vector<std::vector<Index>> written;
};

// The indices entry `e` takes from a dim of size n, bounded by [lo, hi): an integer i takes
// [i, i + 1), a slice at most the span from its first to its last index (slice_range, any step).
// False for a new axis or an ellipsis.
static bool index_span(const Index& e, int64_t n, int64_t& lo, int64_t& hi) {
  if (e.kind == Index::Kind::Integer) {
    lo = e.integer < 0 ? e.integer + n : e.integer;
    hi = lo + 1;
    return true;
  }
  if (e.kind != Index::Kind::Slice) return false;
  const int64_t step = e.step.value_or(1);
  const SliceRange r = slice_range(n, e.start, e.stop, step);
  const int64_t last = r.begin + (r.length - 1) * step;
  lo = r.length > 0 ? std::min(r.begin, last) : 0;
  hi = r.length > 0 ? std::max(r.begin, last) + 1 : 0;
  return true;
}

// Whether the views a and b of an array of `shape` provably share no element: some dim where
// their spans do not meet. Conservative: false when it cannot tell.
static bool disjoint_views(const std::vector<Index>& a, const std::vector<Index>& b,
                           const Shape& shape) {
  const size_t n = std::min({a.size(), b.size(), shape.size()});
  for (size_t d = 0; d < n; ++d) {
    int64_t alo, ahi, blo, bhi;
    if (!index_span(a[d], shape[d], alo, ahi) || !index_span(b[d], shape[d], blo, bhi))
      return false;  // later entries may not line up with the dims
    if (ahi <= blo || bhi <= alo) return true;
  }
  return false;
}

// The gradient of a view op (Op::view_index) written into its view of the input's slot: in place
// when this engine owns the slot's buffer, else into a new owned buffer (zeros, or a copy of the
// gradient gathered so far). A view of a zero-started buffer that no earlier view touched is
// copied, not added (the q, k and v slices of a fused projection). False, with nothing done, when
// the op is no view or the slot's dtype or device differs from g's (the general path promotes
// those).
static bool scatter_gradient(Op& op, const Tensor& g,
                             std::unordered_map<TensorImpl*, Tensor>& grads,
                             std::unordered_map<TensorImpl*, OwnedBuffer>& owned) {
  const std::vector<Index>* index = op.view_index();
  if (index == nullptr || op.inputs.size() != 1) return false;
  const Tensor& input = op.inputs[0];
  if (!input.defined() || !input.requires_grad()) return true;  // nothing to propagate
  auto found = grads.find(input.impl().get());
  if (found != grads.end() && (found->second.dtype() != g.dtype() || found->second.device() != g.device()))
    return false;
  const bool zeros = found == grads.end();
  if (zeros || !owned.count(found->second.impl().get())) {
    NDArray buffer = zeros ? NDArray::zeros(input.shape(), g.dtype(), g.device())
                           : found->second.data().clone();
    Tensor slot(buffer);
    owned[slot.impl().get()].from_zeros = zeros;
    found = grads.insert_or_assign(input.impl().get(), std::move(slot)).first;
  }
  OwnedBuffer& buffer = owned.at(found->second.impl().get());
  const bool untouched =
      buffer.from_zeros &&
      std::all_of(buffer.written.begin(), buffer.written.end(), [&](const std::vector<Index>& w) {
        return disjoint_views(w, *index, input.shape());
      });
  NDArray view = found->second.data().getitem(*index);
  if (untouched) {
    view.assign(g.data());  // over zeros
  } else {
    add_into(view, g.data());
  }
  if (buffer.from_zeros) buffer.written.push_back(*index);
  return true;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph, bool create_graph) const {
  NEEDLE_CHECK(requires_grad(), ValueError,
               "backward: this tensor does not require grad and has no graph (did an input set "
               "requires_grad=True, and was the result computed outside no_grad?)");
  Tensor seed = gradient;
  if (!seed.defined()) {
    NEEDLE_CHECK(numel() == 1, ValueError,
                 "backward: a gradient argument is required for a non-scalar output of shape ",
                 shape_str(shape()), " (grad can be implicitly created only for scalars)");
    seed = Tensor(NDArray::ones(shape(), dtype(), device()));
  } else {
    NEEDLE_CHECK(seed.shape() == shape(), ValueError, "backward: gradient of shape ",
                 shape_str(seed.shape()), " does not match the output's shape ",
                 shape_str(shape()));
    NEEDLE_CHECK(seed.device() == device(), RuntimeError, "backward: gradient on ",
                 seed.device().str(), " but the output is on ", device().str());
  }
  EnableGradGuard mode(create_graph);
  AutocastOffGuard autocast_off;  // gradients compute in the dtypes the forward chose
  // In the output's dtype, like every gradient the loop below hands on, so an op's gradient
  // function always gets its output's dtype.
  seed = astype(seed, dtype());
  std::vector<std::shared_ptr<TensorImpl>> order = topo_order(impl_);
  std::unordered_map<TensorImpl*, Tensor> grads;
  // Gradient buffers this loop allocated for scattering ops and that nothing else references yet:
  // they may be added into in place until their node is reached.
  std::unordered_map<TensorImpl*, OwnedBuffer> owned;
  grads[impl_.get()] = seed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    std::shared_ptr<TensorImpl> node = std::move(*it);
    auto found = grads.find(node.get());
    if (found == grads.end()) continue;
    Tensor g = std::move(found->second);
    grads.erase(found);
    owned.erase(g.impl().get());
    if (!node->op) {
      NEEDLE_CHECK(!node->graph_freed, RuntimeError,
                   "backward: trying to backward through the graph a second time (or directly "
                   "access saved tensors after they have already been freed); pass "
                   "retain_graph=True to the first backward call if you need to");
      // Without create_graph, g was computed in no-grad mode and is already a constant.
      Tensor leaf(node);
      leaf.impl()->grad = accumulate(leaf.grad(), g).impl();
      continue;
    }
    if (!create_graph && scatter_gradient(*node->op, g, grads, owned)) {
      if (!retain_graph) {
        node->op.reset();
        node->graph_freed = true;
      }
      continue;
    }
    std::vector<Tensor> in_grads = node->op->gradient(g, Tensor(node));
    const std::vector<Tensor>& inputs = node->op->inputs;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i].defined() || !inputs[i].requires_grad() || !in_grads[i].defined()) continue;
      // Each input's gradient has the input's dtype (as in PyTorch): where an op mixed dtypes
      // (a bfloat16 branch added to a float32 residual), the branch's backward stays bfloat16.
      Tensor g_in = in_grads[i].dtype() == inputs[i].dtype()
                        ? std::move(in_grads[i])
                        : astype(in_grads[i], inputs[i].dtype());
      Tensor& slot = grads[inputs[i].impl().get()];
      if (slot.defined()) owned.erase(slot.impl().get());
      slot = accumulate(slot, g_in);
    }
    if (!retain_graph) {
      node->op.reset();  // releases the saved buffers as soon as they are used
      node->graph_freed = true;
    }
  }
}

}  // namespace needle
