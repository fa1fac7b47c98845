// Shape ops (views, indexing, joining) and their gradients.
#include <numeric>

#include "autograd/functional.h"
#include "ndarray/error.h"

namespace needle {

namespace {

struct ReshapeFn : Op {
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {reshape(g, inputs[0].shape())};
  }
};

struct PermuteFn : Op {
  std::vector<int> dims;
  explicit PermuteFn(std::vector<int> d) : dims(std::move(d)) {}
  const char* name() const override { return "permute"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    std::vector<int> inverse(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) inverse[dims[i]] = static_cast<int>(i);
    return {permute(g, inverse)};
  }
};

struct BroadcastFn : Op {
  const char* name() const override { return "broadcast_to"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {sum_to(g, inputs[0].shape())};
  }
};

// getitem's gradient: g written into a zero tensor of the input's shape at the same index.
// Its own gradient is getitem again, so second derivatives flow through.
struct IndexBackwardFn : Op {
  Shape shape;
  std::vector<Index> index;
  IndexBackwardFn(Shape s, std::vector<Index> i) : shape(std::move(s)), index(std::move(i)) {}
  const char* name() const override { return "getitem_backward"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {getitem(g, index)};
  }
};

Tensor index_backward(const Tensor& g, const Shape& shape, const std::vector<Index>& index) {
  NDArray out = NDArray::zeros(shape, g.dtype(), g.device());
  out.setitem(index, g.data());
  return make_result(out, std::make_shared<IndexBackwardFn>(shape, index), {g});
}

struct GetItemFn : Op {
  std::vector<Index> index;
  explicit GetItemFn(std::vector<Index> i) : index(std::move(i)) {}
  const char* name() const override { return "getitem"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {index_backward(g, inputs[0].shape(), index)};
  }
  const std::vector<Index>* view_index() const override { return &index; }
};

struct ConcatFn : Op {
  int dim;
  explicit ConcatFn(int d) : dim(d) {}
  const char* name() const override { return "concatenate"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    std::vector<Tensor> grads;
    int64_t at = 0;
    for (const Tensor& in : inputs) {
      std::vector<Index> idx(dim, Index::slice());
      idx.push_back(Index::slice(at, at + in.shape()[dim]));
      grads.push_back(getitem(g, idx));
      at += in.shape()[dim];
    }
    return grads;
  }
};

struct FlipFn : Op {
  std::vector<int> dims;
  explicit FlipFn(std::vector<int> d) : dims(std::move(d)) {}
  const char* name() const override { return "flip"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override { return {flip(g, dims)}; }
};

struct PadFn : Op {
  std::vector<int64_t> pads;
  explicit PadFn(std::vector<int64_t> p) : pads(std::move(p)) {}
  const char* name() const override { return "pad"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    std::vector<Index> idx;
    const Shape& shape = inputs[0].shape();
    for (size_t i = 0; i < shape.size(); ++i) {
      int64_t before = 2 * i < pads.size() ? pads[2 * i] : 0;
      idx.push_back(Index::slice(before, before + shape[i]));
    }
    return {getitem(g, idx)};
  }
};

}  // namespace

Tensor reshape(const Tensor& a, const Shape& shape) {
  return make_result(a.data().reshape(shape), std::make_shared<ReshapeFn>(), {a});
}
Tensor view(const Tensor& a, const Shape& shape) {
  return make_result(a.data().view(shape), std::make_shared<ReshapeFn>(), {a});
}
Tensor flatten(const Tensor& a, int start_dim, int end_dim) {
  return make_result(a.data().flatten(start_dim, end_dim), std::make_shared<ReshapeFn>(), {a});
}
Tensor squeeze(const Tensor& a, std::optional<int> dim) {
  NDArray r = dim ? a.data().squeeze(*dim) : a.data().squeeze();
  return make_result(r, std::make_shared<ReshapeFn>(), {a});
}
Tensor unsqueeze(const Tensor& a, int dim) {
  return make_result(a.data().unsqueeze(dim), std::make_shared<ReshapeFn>(), {a});
}

Tensor permute(const Tensor& a, const std::vector<int>& dims) {
  NDArray r = a.data().permute(dims);
  std::vector<int> norm;
  for (int d : dims) norm.push_back(normalize_dim(d, a.ndim()));
  return make_result(r, std::make_shared<PermuteFn>(norm), {a});
}

Tensor transpose(const Tensor& a, int d0, int d1) {
  if (a.ndim() < 2) {
    normalize_dim(d0, a.ndim());  // validates the dims (0 and -1 for a 0-d tensor)
    normalize_dim(d1, a.ndim());
    return a;
  }
  std::vector<int> dims(a.ndim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[normalize_dim(d0, a.ndim())], dims[normalize_dim(d1, a.ndim())]);
  return permute(a, dims);
}

Tensor broadcast_to(const Tensor& a, const Shape& shape) {
  if (shape == a.shape()) return a;
  return make_result(a.data().broadcast_to(shape), std::make_shared<BroadcastFn>(), {a});
}
Tensor expand(const Tensor& a, const Shape& shape) {
  NDArray r = a.data().expand(shape);
  if (r.shape() == a.shape()) return a;
  return make_result(r, std::make_shared<BroadcastFn>(), {a});
}

Tensor sum_to(const Tensor& a, const Shape& shape) {
  if (a.shape() == shape) return a;
  int lead = a.ndim() - static_cast<int>(shape.size());
  NEEDLE_CHECK(lead >= 0, ValueError, "sum_to: cannot reduce shape ", shape_str(a.shape()),
               " to ", shape_str(shape));
  std::vector<int> dims;
  for (int i = 0; i < a.ndim(); ++i)
    if (i < lead || (shape[i - lead] == 1 && a.shape()[i] != 1)) dims.push_back(i);
  Tensor r = dims.empty() ? a : sum(a, dims, true);
  return reshape(r, shape);
}

Tensor getitem(const Tensor& a, const std::vector<Index>& index) {
  return make_result(a.data().getitem(index), std::make_shared<GetItemFn>(index), {a});
}

Tensor concatenate(const std::vector<Tensor>& tensors, int dim) {
  NEEDLE_CHECK(!tensors.empty(), ValueError, "concatenate: expected a non-empty list of tensors");
  std::vector<NDArray> arrays;
  for (const Tensor& t : tensors) arrays.push_back(t.data());
  NDArray r = needle::concatenate(arrays, dim);
  return make_result(r, std::make_shared<ConcatFn>(normalize_dim(dim, tensors[0].ndim())), tensors);
}

Tensor stack(const std::vector<Tensor>& tensors, int dim) {
  NEEDLE_CHECK(!tensors.empty(), ValueError, "stack: expected a non-empty list of tensors");
  int d = normalize_dim(dim, tensors[0].ndim() + 1);
  std::vector<Tensor> expanded;
  for (size_t i = 0; i < tensors.size(); ++i) {
    NEEDLE_CHECK(tensors[i].shape() == tensors[0].shape(), ValueError,
                 "stack: expected tensors of equal shape, got ", shape_str(tensors[0].shape()),
                 " and ", shape_str(tensors[i].shape()), " (tensor ", i, ")");
    expanded.push_back(unsqueeze(tensors[i], d));
  }
  return concatenate(expanded, d);
}

std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int dim) {
  int d = normalize_dim(dim, a.ndim());
  needle::split(a.data(), sizes, d);  // validates sizes
  std::vector<Tensor> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    std::vector<Index> idx(d, Index::slice());
    idx.push_back(Index::slice(at, at + s));
    parts.push_back(getitem(a, idx));
    at += s;
  }
  return parts;
}

std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int dim) {
  std::vector<int64_t> sizes;
  for (const NDArray& part : needle::chunk(a.data(), chunks, dim)) sizes.push_back(part.shape()[normalize_dim(dim, a.ndim())]);
  return split(a, sizes, dim);
}

Tensor flip(const Tensor& a, const std::vector<int>& dims) {
  return make_result(needle::flip(a.data(), dims), std::make_shared<FlipFn>(dims), {a});
}

Tensor pad(const Tensor& a, const std::vector<int64_t>& pads, double value) {
  return make_result(needle::pad(a.data(), pads, value), std::make_shared<PadFn>(pads), {a});
}

}  // namespace needle
