// matmul, linear, embedding and the fused neural-network ops (cross-entropy, layer norm),
// with their gradients.
#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "ndarray/error.h"

namespace needle {

namespace {

struct MatmulFn : Op {
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    const Tensor &a = inputs[0], &b = inputs[1];
    Tensor ga, gb;
    if (a.requires_grad()) ga = sum_to(matmul(g, transpose(b, -1, -2)), a.shape());
    if (b.requires_grad()) gb = sum_to(matmul(transpose(a, -1, -2), g), b.shape());
    return {ga, gb};
  }
};

// The dtype of a parameter's gradient from a product computed in `product`: float32 for a float32
// parameter of a bfloat16 product (autocast), written so by the GEMM; otherwise the product's
// (the engine casts a gradient to its input's dtype where the two differ).
DType param_grad_dtype(DType product, DType param) {
  return product == DType::BFloat16 && param == DType::Float32 ? DType::Float32 : product;
}

// y = x w^T + b, inputs {x, weight[, bias]}. The weight enters the product as w_low: itself, or its
// bfloat16 copy under autocast, made inside the op (not as a Tensor cast) so that the weight and
// bias gradients come out of the GEMM in the parameters' own dtype: float32 gradients of float32
// parameters, never rounded to bfloat16, the bias gradient summed in the same GEMM
// (linear_param_grads). With create_graph the gradients are composed of Tensor ops instead, so
// they can be differentiated again.
struct LinearFn : Op {
  NDArray w_low;
  explicit LinearFn(NDArray w) : w_low(std::move(w)) {}
  const char* name() const override { return "linear"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    const Tensor &x = inputs[0], &w = inputs[1];
    const bool has_bias = inputs.size() > 2;
    const bool want_bias = has_bias && inputs[2].requires_grad();
    const int64_t out = w.shape()[0], in = w.shape()[1];
    Tensor gx, gw, gb;
    if (grad_enabled()) {
      const Tensor wl = w.dtype() == w_low.dtype() ? w : astype(w, w_low.dtype());
      Tensor g2 = reshape(g, {-1, out});
      if (x.requires_grad()) gx = matmul(g, wl);
      if (w.requires_grad()) gw = matmul(transpose(g2, 0, 1), reshape(x, {-1, in}));
      if (want_bias) gb = sum(g2, {0});
    } else {
      const NDArray g2 = g.data().reshape({-1, out});
      if (x.requires_grad()) gx = Tensor(needle::matmul(g.data(), w_low));
      if (w.requires_grad()) {
        const DType dt = param_grad_dtype(g.dtype(), w.dtype());
        const bool fuse_bias = want_bias && inputs[2].dtype() == w.dtype();
        NDArray db;
        gw = Tensor(
            linear_param_grads(g2, x.data().reshape({-1, in}), dt, fuse_bias ? &db : nullptr));
        if (fuse_bias) gb = Tensor(db);
      }
      if (want_bias && !gb.defined()) gb = Tensor(needle::sum(g2, {0}));
    }
    std::vector<Tensor> grads{gx, gw};
    if (has_bias) grads.push_back(gb);
    return grads;
  }
};

// The embedding gradient: rows of g scattered (added) into a (V, D) zero matrix. Its own
// gradient is the embedding lookup again.
struct EmbeddingBackwardFn : Op {
  NDArray ids;
  explicit EmbeddingBackwardFn(NDArray i) : ids(std::move(i)) {}
  const char* name() const override { return "embedding_backward"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {embedding(g, Tensor(ids))};
  }
};

struct EmbeddingFn : Op {
  NDArray ids;
  explicit EmbeddingFn(NDArray i) : ids(std::move(i)) {}
  const char* name() const override { return "embedding"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    const Shape& ws = inputs[0].shape();
    NDArray flat_ids = ids.reshape({-1});
    NDArray g2 = g.data().reshape({flat_ids.numel(), ws[1]});
    NDArray dw = index_add(NDArray::zeros(ws, g.dtype(), g.device()), 0, flat_ids, g2);
    return {make_result(dw, std::make_shared<EmbeddingBackwardFn>(ids), {g})};
  }
};

// A fused kernel's gradient result: differentiating it again is not supported.
struct FusedBackwardFn : Op {
  const char* label;
  explicit FusedBackwardFn(const char* l) : label(l) {}
  const char* name() const override { return label; }
  std::vector<Tensor> gradient(const Tensor&, const Tensor&) override {
    throw RuntimeError(std::string("double backward through ") + label +
                       " is not supported (its gradient is a fused kernel)");
  }
};

const Backend& fused_backend(const Tensor& t, bool present, const char* what) {
  const Backend& be = t.data().backend();
  NEEDLE_CHECK(present, RuntimeError, "the ", be.name, " backend has no fused ", what,
               " kernel");
  return be;
}

struct CrossEntropyFn : Op {
  NDArray targets, lse;  // (N) int64, (N) stats_dtype
  int64_t ignore_index;
  CrossEntropyFn(NDArray t, NDArray l, int64_t ii)
      : targets(std::move(t)), lse(std::move(l)), ignore_index(ii) {}
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    const Tensor& logits = inputs[0];
    int64_t classes = logits.shape().back(), rows = targets.numel();
    NDArray x = logits.data().reshape({rows, classes}).compact();
    NDArray dloss = g.data().astype(stats_dtype(logits.dtype())).compact();
    NDArray dx = NDArray::empty({rows, classes}, logits.dtype(), logits.device());
    const Backend& be = x.backend();
    if (rows > 0)
      be.cross_entropy_backward(x.ref(), targets.ref(), lse.ref(), dloss.ref(), ignore_index, rows,
                                classes, dx.ref());
    return {make_result(dx.reshape(logits.shape()),
                        std::make_shared<FusedBackwardFn>("cross_entropy_backward"), {g})};
  }
};

// linear_cross_entropy's gradient. `d` holds the gradient of each row's loss with respect to its
// logits (softmax - one-hot, written over the logits by the forward pass), `x2` the (rows, in)
// input and w_low the (classes, in) weight as the product used it (inputs[1] itself, or its
// bfloat16 copy under autocast, as in LinearFn). With g the gradient of the per-row losses:
//   dx = g[:, None] * (d @ w),   dw = d^T @ (g[:, None] * x2)
// so the scaling by g falls on (rows, in) operands, never on the (rows, classes) d.
struct LinearCrossEntropyFn : Op {
  NDArray d, x2, w_low;
  LinearCrossEntropyFn(NDArray d_, NDArray x2_, NDArray w)
      : d(std::move(d_)), x2(std::move(x2_)), w_low(std::move(w)) {}
  const char* name() const override { return "linear_cross_entropy"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    const Tensor &x = inputs[0], &w = inputs[1];
    const NDArray gcol = g.data().astype(d.dtype()).reshape({d.shape()[0], 1});
    Tensor gx, gw;
    auto fused = [&](NDArray a) {
      return make_result(std::move(a),
                         std::make_shared<FusedBackwardFn>("linear_cross_entropy_backward"), {g});
    };
    if (x.requires_grad()) gx = fused(mul(needle::matmul(d, w_low), gcol).reshape(x.shape()));
    if (w.requires_grad())
      gw = fused(
          linear_param_grads(d, mul(x2, gcol), param_grad_dtype(d.dtype(), w.dtype()), nullptr));
    return {gx, gw};
  }
};

struct LayerNormFn : Op {
  NDArray mean, rstd;
  LayerNormFn(NDArray m, NDArray r) : mean(std::move(m)), rstd(std::move(r)) {}
  const char* name() const override { return "layer_norm"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    const Tensor& x = inputs[0];
    bool has_w = inputs.size() > 1 && inputs[1].defined();
    bool has_b = inputs.size() > 2 && inputs[2].defined();
    int64_t d = x.shape().back(), rows = d ? x.numel() / d : 0;
    NDArray x2 = x.data().reshape({rows, d}).compact();
    NDArray dy = g.data().reshape({rows, d}).compact();  // g has y's dtype, x's
    NDArray dx = NDArray::empty({rows, d}, x.dtype(), x.device());
    NDArray dw, db;
    ArrayRef wref, dwref, dbref;
    NDArray wc = has_w ? inputs[1].data().astype(x.dtype()).compact() : NDArray();
    if (has_w) {
      wref = wc.ref();
      dw = NDArray::empty({d}, x.dtype(), x.device());
      dwref = dw.ref();
    }
    if (has_b) {
      db = NDArray::empty({d}, x.dtype(), x.device());
      dbref = db.ref();
    }
    if (rows > 0) {
      x.data().backend().layer_norm_backward(dy.ref(), x2.ref(), has_w ? &wref : nullptr, mean.ref(),
                                             rstd.ref(), rows, d, dx.ref(), has_w ? &dwref : nullptr,
                                             has_b ? &dbref : nullptr);
    } else {
      if (has_w) dw.fill(0);
      if (has_b) db.fill(0);
    }
    auto wrap = [&](const NDArray& v) {
      return make_result(v, std::make_shared<FusedBackwardFn>("layer_norm_backward"), {g});
    };
    std::vector<Tensor> grads{wrap(dx.reshape(x.shape()))};
    if (inputs.size() > 1) grads.push_back(has_w ? wrap(dw) : Tensor());
    if (inputs.size() > 2) grads.push_back(has_b ? wrap(db) : Tensor());
    return grads;
  }
};

// The rotary map (or, with `transpose`, its adjoint) on x (..., T, D) with constant tables. It is
// linear in x, so its gradient is the other map, which can be differentiated in turn.
Tensor rotary_map(const Tensor& x, const NDArray& cos, const NDArray& sin, bool transpose);

struct RotaryFn : Op {
  NDArray cos, sin;
  bool transpose;
  RotaryFn(NDArray c, NDArray s, bool t) : cos(std::move(c)), sin(std::move(s)), transpose(t) {}
  const char* name() const override {
    return transpose ? "rotary_embedding_backward" : "rotary_embedding";
  }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {rotary_map(g, cos, sin, !transpose)};
  }
};

Tensor rotary_map(const Tensor& x, const NDArray& cos, const NDArray& sin, bool transpose) {
  const int nd = x.ndim();
  const Shape& s = x.shape();
  if (x.numel() == 0)
    return make_result(NDArray::empty(s, x.dtype(), x.device()),
                       std::make_shared<RotaryFn>(cos, sin, transpose), {x});
  // (P, Q, T, D), the kernel's view, which reads any strides: x itself when 4-D (q or k as the
  // (B, H, T, D) view of a fused projection), unit dims prepended below that, and above it the
  // leading dims merged into P (a view where they merge, else a compact copy).
  const Shape s4 = nd >= 4 ? Shape{-1, s[nd - 3], s[nd - 2], s[nd - 1]}
                           : nd == 3 ? Shape{1, s[0], s[1], s[2]} : Shape{1, 1, s[0], s[1]};
  NDArray x4 = nd == 4 ? x.data() : x.data().reshape(s4);
  NDArray out = NDArray::empty(x4.shape(), x.dtype(), x.device());
  if (out.numel() > 0) x.data().backend().rotary(x4.ref(), cos.ref(), sin.ref(), transpose, out.ref());
  return make_result(out.reshape(s), std::make_shared<RotaryFn>(cos, sin, transpose), {x});
}

// cross_entropy's targets for `noun` (the logits, or linear_cross_entropy's input) of shape
// `source`: int64 or int32 of shape source[:-1] on `device`, returned as compact int64 (rows).
NDArray class_targets(const char* op, const Tensor& targets, const char* noun, const Shape& source,
                      const Device& device) {
  const Shape expect(source.begin(), source.end() - 1);
  NEEDLE_CHECK(targets.dtype() == DType::Int64 || targets.dtype() == DType::Int32, TypeError, op,
               ": expected int64 class-index targets, got ", dtype_name(targets.dtype()));
  NEEDLE_CHECK(targets.shape() == expect, ValueError, op, ": expected targets of shape ",
               shape_str(expect), " for ", noun, " of shape ", shape_str(source), ", got ",
               shape_str(targets.shape()));
  NEEDLE_CHECK(device == targets.device(), RuntimeError, op, ": ", noun, " on ", device.str(),
               " but targets on ", targets.device().str());
  return targets.data().astype(DType::Int64).reshape({shape_numel(expect)}).compact();
}

// The per-row losses (rows) reduced as asked; mean over the targets that are not ignore_index.
Tensor reduce_rows(const Tensor& per_row, const NDArray& t, int64_t ignore_index,
                   Reduction reduction, const Shape& expect) {
  switch (reduction) {
    case Reduction::None: return reshape(per_row, expect);
    case Reduction::Sum: return sum(per_row);
    case Reduction::Mean: {
      // Divide on the device (no host sync): the count of targets that are not ignored.
      NDArray count = needle::sum(needle::ne(t, Scalar(ignore_index))).astype(per_row.dtype());
      return div(sum(per_row), Tensor(count));
    }
  }
  return per_row;
}

}  // namespace

Tensor matmul(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = autocast_lower(a_in), b = autocast_lower(b_in);
  NEEDLE_CHECK(a.ndim() >= 1 && b.ndim() >= 1, ValueError,
               "matmul: both operands need at least 1 dimension, got shapes ",
               shape_str(a.shape()), " and ", shape_str(b.shape()));
  // 1-D operands become matrices through differentiable reshapes, as NumPy defines.
  if (a.ndim() == 1) return squeeze(matmul(unsqueeze(a, 0), b), -2);
  if (b.ndim() == 1) return squeeze(matmul(a, unsqueeze(b, 1)), -1);
  return make_result(needle::matmul(a.data(), b.data()), std::make_shared<MatmulFn>(), {a, b});
}

Tensor linear(const Tensor& x_in, const Tensor& weight, const Tensor& bias) {
  const Tensor x = autocast_lower(x_in);
  NEEDLE_CHECK(weight.ndim() == 2, ValueError, "linear: expected a 2-D weight (out, in), got ",
               shape_str(weight.shape()));
  NEEDLE_CHECK(x.ndim() >= 1 && x.shape().back() == weight.shape()[1], ValueError,
               "linear: input of shape ", shape_str(x.shape()), " does not match weight of shape ",
               shape_str(weight.shape()), " (expected last dim ", weight.shape()[1], ")");
  if (bias.defined())
    NEEDLE_CHECK(bias.shape() == Shape{weight.shape()[0]}, ValueError,
                 "linear: expected bias of shape (", weight.shape()[0], ",), got ",
                 shape_str(bias.shape()));
  // One GEMM whose epilogue adds the bias (NDArray's matmul with a bias, cast to the product's
  // dtype). The weight and bias are lowered here, not as Tensor casts: see LinearFn.
  NDArray w_low = weight.data().astype(autocast_lower_dtype(weight));
  NDArray y =
      needle::matmul(x.data(), w_low.transpose(0, 1), bias.defined() ? bias.data() : NDArray());
  std::vector<Tensor> inputs{x, weight};
  if (bias.defined()) inputs.push_back(bias);
  return make_result(y, std::make_shared<LinearFn>(std::move(w_low)), inputs);
}

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  NEEDLE_CHECK(!ids.requires_grad(), ValueError, "embedding: ids cannot require grad");
  return make_result(needle::embedding(weight.data(), ids.data()),
                     std::make_shared<EmbeddingFn>(ids.data()), {weight});
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Reduction reduction) {
  // A float32 op under autocast, without a float32 copy of the logits (a language model's largest
  // tensor): the kernels read bfloat16 logits and compute in float32 either way, so only the loss
  // changes dtype, and the logits' gradient is written in bfloat16 directly.
  const DType loss_dtype = autocast_float32_dtype(logits);
  NEEDLE_CHECK(logits.ndim() >= 1, ValueError, "cross_entropy: logits need a class dimension");
  NEEDLE_CHECK(is_floating(logits.dtype()), TypeError,
               "cross_entropy: expected floating logits, got ", dtype_name(logits.dtype()));
  Shape expect(logits.shape().begin(), logits.shape().end() - 1);
  NDArray t = class_targets("cross_entropy", targets, "logits", logits.shape(), logits.device());
  int64_t classes = logits.shape().back(), rows = shape_numel(expect);
  const Backend& be = fused_backend(logits, logits.data().backend().cross_entropy_forward,
                                    "cross_entropy");
  NDArray x = logits.data().reshape({rows, classes}).compact();
  NDArray loss = NDArray::empty({rows}, stats_dtype(logits.dtype()), logits.device());
  NDArray lse = NDArray::empty({rows}, stats_dtype(logits.dtype()), logits.device());
  if (rows > 0) be.cross_entropy_forward(x.ref(), t.ref(), ignore_index, rows, classes, loss.ref(), lse.ref());
  Tensor per_row = make_result(loss.astype(loss_dtype),
                               std::make_shared<CrossEntropyFn>(t, lse, ignore_index), {logits});
  return reduce_rows(per_row, t, ignore_index, reduction, expect);
}

Tensor linear_cross_entropy(const Tensor& x_in, const Tensor& weight, const Tensor& targets,
                            int64_t ignore_index, Reduction reduction) {
  // The product is a lower-precision op under autocast, as linear (the weight lowered inside the
  // op); the loss a float32 one, as cross_entropy (its kernels read bfloat16 logits and compute in
  // float32).
  const Tensor x = autocast_lower(x_in);
  const DType w_dtype = autocast_lower_dtype(weight);
  const char* op = "linear_cross_entropy";
  NEEDLE_CHECK(weight.ndim() == 2, ValueError, op, ": expected a 2-D weight (classes, in), got ",
               shape_str(weight.shape()));
  NEEDLE_CHECK(x.ndim() >= 1 && x.shape().back() == weight.shape()[1], ValueError, op,
               ": input of shape ", shape_str(x.shape()), " does not match weight of shape ",
               shape_str(weight.shape()), " (expected last dim ", weight.shape()[1], ")");
  NEEDLE_CHECK(is_floating(x.dtype()) && x.dtype() == w_dtype, TypeError, op,
               ": expected floating input and weight of one dtype, got ", dtype_name(x.dtype()),
               " and ", dtype_name(w_dtype));
  NEEDLE_CHECK(x.device() == weight.device(), RuntimeError, op, ": input on ", x.device().str(),
               " but weight on ", weight.device().str());
  Shape expect(x.shape().begin(), x.shape().end() - 1);
  NDArray t = class_targets(op, targets, "input", x.shape(), x.device());
  const int64_t rows = shape_numel(expect), classes = weight.shape()[0];
  const Backend& be = fused_backend(x, x.data().backend().cross_entropy_forward_grad, op);
  const DType loss_dtype = autocast_float32_dtype(x);
  NDArray x2 = x.data().reshape({rows, weight.shape()[1]});
  NDArray w_low = weight.data().astype(w_dtype);
  NDArray logits = needle::matmul(x2, w_low.transpose(0, 1)).compact();
  NDArray loss = NDArray::empty({rows}, stats_dtype(logits.dtype()), logits.device());
  NDArray lse = NDArray::empty({rows}, stats_dtype(logits.dtype()), logits.device());
  const bool need_grad = grad_enabled() && (x.requires_grad() || weight.requires_grad());
  if (rows > 0) {
    // With a gradient to come, the logits become their gradient in the same pass (d below).
    auto kernel = need_grad ? be.cross_entropy_forward_grad : be.cross_entropy_forward;
    kernel(logits.ref(), t.ref(), ignore_index, rows, classes, loss.ref(), lse.ref());
  }
  Tensor per_row =
      need_grad ? make_result(loss.astype(loss_dtype),
                              std::make_shared<LinearCrossEntropyFn>(logits, x2, std::move(w_low)),
                              {x, weight})
                : Tensor(loss.astype(loss_dtype));
  return reduce_rows(per_row, t, ignore_index, reduction, expect);
}

Tensor layer_norm(const Tensor& x_in, const Tensor& weight, const Tensor& bias, double eps) {
  const Tensor x = autocast_float32(x_in);
  NEEDLE_CHECK(x.ndim() >= 1, ValueError, "layer_norm: expected at least 1 dimension");
  NEEDLE_CHECK(is_floating(x.dtype()), TypeError, "layer_norm: expected a floating input, got ",
               dtype_name(x.dtype()));
  int64_t d = x.shape().back(), rows = d ? x.numel() / d : 0;
  for (const Tensor* p : {&weight, &bias})
    if (p->defined())
      NEEDLE_CHECK(p->shape() == Shape{d}, ValueError, "layer_norm: expected weight/bias of shape (",
                   d, ",), got ", shape_str(p->shape()));
  const Backend& be = fused_backend(x, x.data().backend().layer_norm_forward, "layer_norm");
  NDArray x2 = x.data().reshape({rows, d}).compact();
  NDArray y = NDArray::empty({rows, d}, x.dtype(), x.device());
  NDArray mean = NDArray::empty({rows}, stats_dtype(x.dtype()), x.device());
  NDArray rstd = NDArray::empty({rows}, stats_dtype(x.dtype()), x.device());
  NDArray wc = weight.defined() ? weight.data().astype(x.dtype()).compact() : NDArray();
  NDArray bc = bias.defined() ? bias.data().astype(x.dtype()).compact() : NDArray();
  ArrayRef wref = weight.defined() ? wc.ref() : ArrayRef(), bref = bias.defined() ? bc.ref() : ArrayRef();
  if (rows > 0 && d > 0)
    be.layer_norm_forward(x2.ref(), weight.defined() ? &wref : nullptr,
                          bias.defined() ? &bref : nullptr, eps, rows, d, y.ref(), mean.ref(),
                          rstd.ref());
  std::vector<Tensor> inputs{x};
  if (weight.defined() || bias.defined()) inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  return make_result(y.reshape(x.shape()), std::make_shared<LayerNormFn>(mean, rstd), inputs);
}

Tensor rotary_embedding(const Tensor& x_in, const Tensor& cos_in, const Tensor& sin_in) {
  NEEDLE_CHECK(x_in.ndim() >= 2, ValueError,
               "rotary_embedding: expected x of shape (..., T, D), got ", shape_str(x_in.shape()));
  const int64_t T = x_in.shape()[x_in.ndim() - 2], D = x_in.shape().back();
  NEEDLE_CHECK(cos_in.ndim() == 2 && cos_in.shape() == sin_in.shape() && cos_in.shape()[0] == T &&
                   cos_in.shape()[1] % 2 == 0 && cos_in.shape()[1] <= D,
               ValueError, "rotary_embedding: expected cos and sin of one shape (T, R) = (", T,
               ", R) with R even and at most D = ", D, ", got ", shape_str(cos_in.shape()), " and ",
               shape_str(sin_in.shape()));
  NEEDLE_CHECK(is_floating(x_in.dtype()) && is_floating(cos_in.dtype()) && is_floating(sin_in.dtype()),
               TypeError, "rotary_embedding: expected floating x, cos and sin, got ",
               dtype_name(x_in.dtype()), ", ", dtype_name(cos_in.dtype()), " and ",
               dtype_name(sin_in.dtype()));
  NEEDLE_CHECK(cos_in.device() == x_in.device() && sin_in.device() == x_in.device(), RuntimeError,
               "rotary_embedding: x on ", x_in.device().str(), " but cos on ",
               cos_in.device().str(), " and sin on ", sin_in.device().str());
  // In the promoted dtype, as the composition x * cos + rotate_half(x) * sin computes.
  const DType dt = promote_types(x_in.dtype(), promote_types(cos_in.dtype(), sin_in.dtype()));
  const Tensor x = astype(x_in, dt), cos = astype(cos_in, dt), sin = astype(sin_in, dt);
  const int64_t R = cos.shape()[1];
  if (cos.requires_grad() || sin.requires_grad() || !x.data().backend().rotary) {
    // Learnable tables (or a backend without the kernel): the composition, differentiable in all.
    auto last = [&](int64_t a, int64_t b) {
      return getitem(x, {Index::ellipsis(), Index::slice(a, b)});
    };
    Tensor x_rot = R == D ? x : last(0, R);
    Tensor rotated = concatenate({neg(last(R / 2, R)), last(0, R / 2)}, -1);
    Tensor out = add(mul(x_rot, cos), mul(rotated, sin));
    return R == D ? out : concatenate({out, last(R, D)}, -1);
  }
  return rotary_map(x, cos.data().compact(), sin.data().compact(), false);
}

Tensor gelu(const Tensor& a, bool tanh_approximation) {
  return tanh_approximation ? gelu_tanh(a) : gelu(a);
}

Tensor dropout(const Tensor& a, double p, bool training) {
  NEEDLE_CHECK(p >= 0 && p <= 1, ValueError, "dropout: p must be in [0, 1], got ", p);
  if (!training || p == 0) return a;
  if (p == 1) return mul(a, Scalar(0.0));
  NDArray keep = NDArray::bernoulli(a.shape(), 1.0 - p, a.dtype(), a.device());
  return mul(a, Tensor(needle::mul(keep, Scalar(1.0 / (1.0 - p)))));
}

}  // namespace needle
