// Elementwise ops and their gradients.
#include <cmath>

#include "autograd/functional.h"
#include "ndarray/error.h"

namespace needle {

namespace {

// A constant tensor (no graph) with a's dtype and device.
Tensor constant_like(const NDArray& values, const Tensor& like) {
  return Tensor(values.astype(like.dtype()));
}

Tensor positive_mask(const Tensor& a) { return constant_like(gt(a.data(), Scalar(0)), a); }

constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kTwoOverSqrtPi = 1.12837916709551257390;

// The unary family: the forward is the kernel from ops.h, the gradient a formula per op.
struct UnaryFn : Op {
  UnaryOp op;
  explicit UnaryFn(UnaryOp o) : op(o) {}
  const char* name() const override { return op_name(op); }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor& out) override {
    const Tensor& a = inputs[0];
    switch (op) {
      case UnaryOp::Neg: return {neg(g)};
      case UnaryOp::Abs: return {mul(g, constant_like(sign(a.data()), a))};
      case UnaryOp::Relu: return {mul(g, positive_mask(a))};
      case UnaryOp::Sign: return {mul(g, Scalar(0.0))};
      case UnaryOp::Exp: return {mul(g, out)};
      case UnaryOp::Log: return {div(g, a)};
      case UnaryOp::Sqrt: return {div(mul(g, Scalar(0.5)), out)};
      case UnaryOp::Rsqrt: return {mul(mul(g, Scalar(-0.5)), mul(out, mul(out, out)))};
      case UnaryOp::Tanh: return {mul(g, sub(Scalar(1.0), mul(out, out)))};
      case UnaryOp::Sigmoid: return {mul(g, mul(out, sub(Scalar(1.0), out)))};
      case UnaryOp::Sin: return {mul(g, cos(a))};
      case UnaryOp::Cos: return {neg(mul(g, sin(a)))};
      case UnaryOp::Erf: return {mul(g, mul(exp(neg(mul(a, a))), Scalar(kTwoOverSqrtPi)))};
      // d/da a*Phi(a) = Phi(a) + a*phi(a), one kernel (gelu_grad), itself differentiable.
      case UnaryOp::Gelu: return {mul(g, gelu_grad(a))};
      case UnaryOp::GeluGrad: {
        // d/da (Phi(a) + a*phi(a)) = 2 phi(a) + a phi'(a) = phi(a) (2 - a^2)
        Tensor pdf = mul(exp(mul(mul(a, a), Scalar(-0.5))), Scalar(kInvSqrt2Pi));
        return {mul(g, mul(pdf, sub(Scalar(2.0), mul(a, a))))};
      }
      case UnaryOp::GeluTanh: {
        const double k = 0.79788456080286535588, c = 0.044715;
        Tensor a2 = mul(a, a);
        Tensor t = tanh(mul(add(a, mul(mul(a2, a), Scalar(c))), Scalar(k)));
        Tensor dinner = mul(add(mul(a2, Scalar(3 * c)), Scalar(1.0)), Scalar(k));
        Tensor d = add(mul(add(t, Scalar(1.0)), Scalar(0.5)),
                       mul(mul(mul(a, Scalar(0.5)), sub(Scalar(1.0), mul(t, t))), dinner));
        return {mul(g, d)};
      }
      case UnaryOp::LogicalNot: return {Tensor()};
    }
    return {Tensor()};
  }
};

struct BinaryFn : Op {
  BinaryOp op;
  explicit BinaryFn(BinaryOp o) : op(o) {}
  const char* name() const override { return op_name(op); }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor& out) override {
    const Tensor &a = inputs[0], &b = inputs[1];
    Tensor ga, gb;
    switch (op) {
      case BinaryOp::Add: ga = g; gb = g; break;
      case BinaryOp::Sub: ga = g; gb = neg(g); break;
      case BinaryOp::Mul: ga = mul(g, b); gb = mul(g, a); break;
      case BinaryOp::Div:
        ga = div(g, b);
        gb = neg(div(mul(g, out), b));
        break;
      case BinaryOp::Pow:
        ga = mul(g, mul(b, pow(a, sub(b, Scalar(1.0)))));
        // d/db a^b = a^b log a; defined as 0 where a == 0 (as PyTorch does).
        if (b.requires_grad())
          gb = mul(g, where(Tensor(eq(a.data(), Scalar(0))), Tensor(NDArray::scalar(0.0, out.dtype(), out.device())),
                            mul(out, log(a))));
        break;
      case BinaryOp::Maximum:
      case BinaryOp::Minimum: {
        // Ties split the gradient evenly, like torch.maximum.
        NDArray win = op == BinaryOp::Maximum ? gt(a.data(), b.data()) : lt(a.data(), b.data());
        NDArray tie = eq(a.data(), b.data());
        NDArray wa = add(win.astype(g.dtype()), mul(tie.astype(g.dtype()), Scalar(0.5)));
        ga = mul(g, Tensor(wa));
        gb = mul(g, Tensor(sub(Scalar(1.0), wa)));
        break;
      }
      case BinaryOp::Remainder:  // a - floor(a / b) * b
        ga = g;
        if (b.requires_grad()) gb = neg(mul(g, floor_divide(a.detach(), b.detach())));
        break;
      default: return {Tensor(), Tensor()};  // comparisons and floor_divide: no gradient
    }
    return {ga.defined() ? sum_to(ga, a.shape()) : ga, gb.defined() ? sum_to(gb, b.shape()) : gb};
  }
};

struct BinaryScalarFn : Op {
  BinaryOp op;
  double s;
  bool scalar_first;
  BinaryScalarFn(BinaryOp o, double v, bool first) : op(o), s(v), scalar_first(first) {}
  const char* name() const override { return op_name(op); }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor& out) override {
    const Tensor& a = inputs[0];
    switch (op) {
      case BinaryOp::Add: return {g};
      case BinaryOp::Sub: return {scalar_first ? neg(g) : g};
      case BinaryOp::Mul: return {mul(g, Scalar(s))};
      case BinaryOp::Div: return {scalar_first ? neg(div(mul(g, out), a)) : div(g, Scalar(s))};
      case BinaryOp::Pow:
        if (scalar_first) return {mul(g, mul(out, Scalar(std::log(s))))};  // d/da s^a
        return {mul(g, mul(pow(a, Scalar(s - 1.0)), Scalar(s)))};
      case BinaryOp::Maximum:
      case BinaryOp::Minimum: {
        NDArray win = op == BinaryOp::Maximum ? gt(a.data(), Scalar(s)) : lt(a.data(), Scalar(s));
        NDArray w = add(win.astype(g.dtype()),
                        mul(eq(a.data(), Scalar(s)).astype(g.dtype()), Scalar(0.5)));
        return {mul(g, Tensor(w))};
      }
      case BinaryOp::Remainder:  // a % s, or s % a = s - floor(s / a) * a
        if (!scalar_first) return {g};
        return {neg(mul(g, floor_divide(Scalar(s), a.detach())))};
      default: return {Tensor()};
    }
  }
};

struct WhereFn : Op {
  NDArray cond;
  explicit WhereFn(NDArray c) : cond(std::move(c)) {}
  const char* name() const override { return "where"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    Tensor zero(NDArray::scalar(0.0, g.dtype(), g.device()));
    Tensor c(cond);
    return {sum_to(where(c, g, zero), inputs[0].shape()),
            sum_to(where(c, zero, g), inputs[1].shape())};
  }
};

struct AsTypeFn : Op {
  const char* name() const override { return "astype"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {astype(g, inputs[0].dtype())};
  }
};

struct ToDeviceFn : Op {
  const char* name() const override { return "to"; }
  std::vector<Tensor> gradient(const Tensor& g, const Tensor&) override {
    return {to_device(g, inputs[0].device())};
  }
};

}  // namespace

Tensor unary(UnaryOp op, const Tensor& a) {
  return make_result(needle::unary(op, a.data()), std::make_shared<UnaryFn>(op), {a});
}

#define NEEDLE_DEFINE_TENSOR_UNARY(Name, fname, ...) \
  Tensor fname(const Tensor& a) { return unary(UnaryOp::Name, a); }
NEEDLE_UNARY_OPS(NEEDLE_DEFINE_TENSOR_UNARY)
#undef NEEDLE_DEFINE_TENSOR_UNARY

Tensor logical_not(const Tensor& a) { return Tensor(needle::logical_not(a.data())); }

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  NDArray r = needle::binary(op, a.data(), b.data());
  if (is_comparison(op)) return Tensor(r);
  return make_result(std::move(r), std::make_shared<BinaryFn>(op), {a, b});
}

Tensor binary(BinaryOp op, const Tensor& a, const Scalar& s, bool scalar_first) {
  NDArray r = needle::binary(op, a.data(), s, scalar_first);
  if (is_comparison(op)) return Tensor(r);
  return make_result(std::move(r), std::make_shared<BinaryScalarFn>(op, s.value, scalar_first),
                     {a});
}

#define NEEDLE_DEFINE_TENSOR_BINARY(Name, fname, ...)                                        \
  Tensor fname(const Tensor& a, const Tensor& b) { return binary(BinaryOp::Name, a, b); }    \
  Tensor fname(const Tensor& a, const Scalar& b) { return binary(BinaryOp::Name, a, b); }    \
  Tensor fname(const Scalar& a, const Tensor& b) { return binary(BinaryOp::Name, b, a, true); }
NEEDLE_BINARY_OPS(NEEDLE_DEFINE_TENSOR_BINARY)
#undef NEEDLE_DEFINE_TENSOR_BINARY

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  return make_result(needle::where(cond.data(), a.data(), b.data()),
                     std::make_shared<WhereFn>(cond.data()), {a, b});
}

Tensor where(const Tensor& cond, const Tensor& a, const Scalar& b) {
  DType dt = promote_with_scalar(a.dtype(), b);
  b.check_fits(dt, "where");
  return where(cond, a, Tensor(NDArray::full({}, b, dt, a.device())));
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, const Scalar& value) {
  value.check_fits(a.dtype(), "masked_fill");
  return where(mask, Tensor(NDArray::full({}, value, a.dtype(), a.device())), a);
}

Tensor clamp(const Tensor& a, const std::optional<Scalar>& lo, const std::optional<Scalar>& hi) {
  Tensor r = a;
  if (lo) r = maximum(r, *lo);
  if (hi) r = minimum(r, *hi);
  return r;
}

Tensor astype(const Tensor& a, DType dtype) {
  if (dtype == a.dtype()) return a;
  NDArray r = a.data().astype(dtype);
  if (!is_floating(dtype)) return Tensor(r);
  return make_result(std::move(r), std::make_shared<AsTypeFn>(), {a});
}

Tensor to_device(const Tensor& a, const Device& device, bool non_blocking) {
  if (device == a.device()) return a;
  return make_result(a.data().to(device, non_blocking), std::make_shared<ToDeviceFn>(), {a});
}

}  // namespace needle
