// NDArray arithmetic: dtype promotion, broadcasting and layout decisions made once here, then
// handed to the device's kernel table.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <numeric>

#include "ndarray/error.h"
#include "ndarray/ndarray.h"

namespace needle {

DType promote_with_scalar(DType dt, const Scalar& s) {
  switch (s.kind) {
    case Scalar::Kind::Float: return is_floating(dt) ? dt : DType::Float32;
    case Scalar::Kind::Int: return dt == DType::Bool ? DType::Int64 : dt;
    case Scalar::Kind::Bool: return dt;
  }
  return dt;
}

DType default_dtype(const Scalar& s) {
  if (s.kind == Scalar::Kind::Int) return DType::Int64;
  return s.kind == Scalar::Kind::Bool ? DType::Bool : DType::Float32;
}

bool Scalar::fits(DType dt) const {
  if (dt != DType::Int32 && dt != DType::Int64) return true;  // floats round, bools test != 0
  const bool int64 = dt == DType::Int64;
  if (exact_int)
    return int64 || (*exact_int >= std::numeric_limits<int32_t>::min() &&
                     *exact_int <= std::numeric_limits<int32_t>::max());
  if (!std::isfinite(value)) return false;
  // The cast truncates toward zero: it is defined while the truncated value is in range.
  const double t = std::trunc(value);
  return int64 ? t >= -0x1p63 && t < 0x1p63 : t >= -0x1p31 && t < 0x1p31;
}

void Scalar::check_fits(DType dt, const char* op) const {
  NEEDLE_CHECK(fits(dt), ValueError, op, ": the value ", repr(), " does not fit in ",
               dtype_name(dt),
               dt == DType::Int32 ? " (-2**31 to 2**31-1)" : " (-2**63 to 2**63-1)");
}

std::string Scalar::repr() const {
  if (kind == Kind::Bool) return value != 0 ? "True" : "False";
  if (exact_int) return std::to_string(*exact_int);
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[64];
  // An int beyond int64 prints all its (float64) digits; a float its shortest round trip.
  auto r = kind == Kind::Int
               ? std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::fixed)
               : std::to_chars(buf, buf + sizeof(buf), value);
  std::string out(buf, r.ptr);
  if (kind == Kind::Float && out.find_first_of(".e") == std::string::npos) out += ".0";
  return out;
}

static void check_same_device(const NDArray& a, const NDArray& b, const char* op) {
  NEEDLE_CHECK(a.device() == b.device(), RuntimeError, op,
               ": expected all arrays on the same device, got ", a.device().str(), " and ",
               b.device().str());
}

// --- elementwise ------------------------------------------------------------------------------------

NDArray unary(UnaryOp op, const NDArray& a) {
  if (op == UnaryOp::LogicalNot) {
    NDArray out = NDArray::empty(a.shape(), DType::Bool, a.device());
    if (a.numel()) a.backend().unary(op, a.ref(), out.ref());
    return out;
  }
  NDArray x = a;
  if (is_float_only(op) && !is_floating(x.dtype())) x = x.astype(DType::Float32);
  NEEDLE_CHECK(x.dtype() != DType::Bool, TypeError, op_name(op),
               ": not supported for bool arrays (convert with astype first)");
  NDArray out = NDArray::empty(x.shape(), x.dtype(), x.device());
  if (x.numel()) x.backend().unary(op, x.ref(), out.ref());
  return out;
}

NDArray logical_not(const NDArray& a) { return unary(UnaryOp::LogicalNot, a); }

#define NEEDLE_DEFINE_UNARY(Name, fname, ...) \
  NDArray fname(const NDArray& a) { return unary(UnaryOp::Name, a); }
NEEDLE_UNARY_OPS(NEEDLE_DEFINE_UNARY)
#undef NEEDLE_DEFINE_UNARY

// The dtype an arithmetic op computes in, given the promoted input dtype.
static DType compute_dtype(BinaryOp op, DType promoted) {
  if (op == BinaryOp::Div && !is_floating(promoted)) return DType::Float32;
  return promoted;
}

NDArray binary(BinaryOp op, const NDArray& a, const NDArray& b) {
  check_same_device(a, b, op_name(op));
  DType dt = compute_dtype(op, promote_types(a.dtype(), b.dtype()));
  Shape shape = broadcast_shapes(a.shape(), b.shape());
  NDArray out = NDArray::empty(shape, is_comparison(op) ? DType::Bool : dt, a.device());
  if (out.numel() == 0) return out;
  NDArray x = a.astype(dt).broadcast_to(shape), y = b.astype(dt).broadcast_to(shape);
  a.backend().binary(op, x.ref(), y.ref(), out.ref());
  return out;
}

void add_into(const NDArray& dst, const NDArray& src) {
  check_same_device(dst, src, "add_into");
  for (int d = 0; d < dst.ndim(); ++d) {
    NEEDLE_CHECK(dst.shape()[d] == 1 || dst.strides()[d] != 0, ValueError,
                 "add_into: expected a dst whose elements are distinct, got a broadcast view (shape ",
                 shape_str(dst.shape()), ", stride 0 in dim ", d, ")");
  }
  if (dst.numel() == 0) return;
  NDArray y = src.astype(dst.dtype());
  if (y.buffer() == dst.buffer()) y = y.clone();  // the kernel reads dst[i] and src[i], writes dst[i]
  y = y.broadcast_to(dst.shape());
  // out aliases a element for element, which every elementwise kernel allows.
  dst.backend().binary(BinaryOp::Add, dst.ref(), y.ref(), dst.ref());
}

NDArray binary(BinaryOp op, const NDArray& a, const Scalar& s, bool scalar_first) {
  DType dt = compute_dtype(op, promote_with_scalar(a.dtype(), s));
  // A comparison has an answer for any int: an int32 array compares in int64 with one past int32.
  if (is_comparison(op) && dt == DType::Int32 && !s.fits(dt)) dt = DType::Int64;
  s.check_fits(dt, op_name(op));
  // As torch and NumPy refuse it (a tensor of exponents is not checked: that would read the data).
  NEEDLE_CHECK(!(op == BinaryOp::Pow && !scalar_first && !is_floating(dt) && s.value < 0),
               ValueError, "pow: integers to negative integer powers are not allowed (got ",
               dtype_name(dt), " ** ", s.repr(), "); use a float base");
  if (s.rounds_int() && !is_floating(dt)) {  // the kernels take the scalar as a float64
    NDArray b = NDArray::full({}, s, dt, a.device());
    return scalar_first ? binary(op, b, a) : binary(op, a, b);
  }
  NDArray x = a.astype(dt);
  NDArray out = NDArray::empty(a.shape(), is_comparison(op) ? DType::Bool : dt, a.device());
  if (out.numel()) a.backend().binary_scalar(op, x.ref(), s.value, scalar_first, out.ref());
  return out;
}

#define NEEDLE_DEFINE_BINARY(Name, fname, ...)                                          \
  NDArray fname(const NDArray& a, const NDArray& b) { return binary(BinaryOp::Name, a, b); } \
  NDArray fname(const NDArray& a, const Scalar& b) { return binary(BinaryOp::Name, a, b); } \
  NDArray fname(const Scalar& a, const NDArray& b) {                                    \
    return binary(BinaryOp::Name, b, a, true);                                          \
  }
NEEDLE_BINARY_OPS(NEEDLE_DEFINE_BINARY)
#undef NEEDLE_DEFINE_BINARY

NDArray where(const NDArray& cond, const NDArray& a, const NDArray& b) {
  check_same_device(cond, a, "where");
  check_same_device(a, b, "where");
  NEEDLE_CHECK(cond.dtype() == DType::Bool, TypeError,
               "where: expected a bool condition, got ", dtype_name(cond.dtype()));
  DType dt = promote_types(a.dtype(), b.dtype());
  Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape()), b.shape());
  NDArray out = NDArray::empty(shape, dt, a.device());
  if (out.numel() == 0) return out;
  a.backend().where(cond.broadcast_to(shape).ref(), a.astype(dt).broadcast_to(shape).ref(),
                    b.astype(dt).broadcast_to(shape).ref(), out.ref());
  return out;
}

NDArray where(const NDArray& cond, const NDArray& a, const Scalar& b) {
  DType dt = promote_with_scalar(a.dtype(), b);
  b.check_fits(dt, "where");
  return where(cond, a, NDArray::full({}, b, dt, a.device()));
}

NDArray clamp(const NDArray& a, const std::optional<Scalar>& lo, const std::optional<Scalar>& hi) {
  NDArray r = a;
  if (lo) r = maximum(r, *lo);
  if (hi) r = minimum(r, *hi);
  if (!lo && !hi) r = a.clone();
  return r;
}

// --- reductions -------------------------------------------------------------------------------------

static std::vector<bool> reduced_mask(const NDArray& a, const std::vector<int>& dims) {
  std::vector<bool> mask(a.ndim(), dims.empty());
  for (int d : dims) {
    int n = normalize_dim(d, a.ndim());
    if (a.ndim() == 0) continue;
    NEEDLE_CHECK(!mask[n], ValueError, "dim ", n, " appears more than once in the reduction");
    mask[n] = true;
  }
  return mask;
}

static DType reduce_out_dtype(ReduceOp op, DType in) {
  if (op == ReduceOp::ArgMax || op == ReduceOp::ArgMin) return DType::Int64;
  if ((op == ReduceOp::Sum || op == ReduceOp::Prod) && !is_floating(in)) return DType::Int64;
  return in;
}

NDArray reduce(ReduceOp op, const NDArray& a, std::vector<int> dims, bool keepdim) {
  std::vector<bool> mask = reduced_mask(a, dims);
  std::vector<int> kept, red;
  Shape out_shape, kept_shape;
  int64_t outer = 1, rsize = 1;
  for (int i = 0; i < a.ndim(); ++i) {
    if (mask[i]) {
      red.push_back(i);
      rsize *= a.shape()[i];
      if (keepdim) out_shape.push_back(1);
    } else {
      kept.push_back(i);
      outer *= a.shape()[i];
      out_shape.push_back(a.shape()[i]);
    }
  }
  bool needs_elements = op != ReduceOp::Sum && op != ReduceOp::Prod;
  NEEDLE_CHECK(!(needs_elements && rsize == 0 && outer > 0), ValueError,
               "cannot take max/min/argmax/argmin over an empty dimension of an array of shape ",
               shape_str(a.shape()));
  NDArray out = NDArray::empty(out_shape, reduce_out_dtype(op, a.dtype()), a.device());
  if (out.numel() == 0) return out;

  // Prefer (kept..., reduced...) when that order is already compact (e.g. sum(0) of x.T);
  // else a contiguous run of reduced dims in a compact array reduces in place as
  // (outer, reduce, inner); else copy into the (kept..., reduced...) order.
  std::vector<int> order = kept;
  order.insert(order.end(), red.begin(), red.end());
  NDArray permuted = a.permute(order);
  int64_t o = outer, r = rsize, inner = 1;
  NDArray src = permuted;
  bool run = !red.empty() && red.back() - red.front() + 1 == static_cast<int>(red.size());
  if (!permuted.is_compact() && run) {
    src = a.compact();
    o = 1;
    for (int i = 0; i < red.front(); ++i) o *= a.shape()[i];
    inner = 1;
    for (int i = red.back() + 1; i < a.ndim(); ++i) inner *= a.shape()[i];
  } else {
    src = permuted.compact();
  }
  a.backend().reduce(op, src.ref(), o, r, inner, out.ref());
  return out;
}

NDArray sum(const NDArray& a, const std::vector<int>& dims, bool keepdim) {
  return reduce(ReduceOp::Sum, a, dims, keepdim);
}
NDArray prod(const NDArray& a, const std::vector<int>& dims, bool keepdim) {
  return reduce(ReduceOp::Prod, a, dims, keepdim);
}
NDArray max(const NDArray& a, const std::vector<int>& dims, bool keepdim) {
  return reduce(ReduceOp::Max, a, dims, keepdim);
}
NDArray min(const NDArray& a, const std::vector<int>& dims, bool keepdim) {
  return reduce(ReduceOp::Min, a, dims, keepdim);
}

int64_t reduced_numel(const Shape& shape, const std::vector<int>& dims) {
  const int nd = static_cast<int>(shape.size());
  if (dims.empty()) return shape_numel(shape);
  std::vector<bool> seen(nd, false);
  int64_t n = 1;
  for (int d : dims) {
    int k = normalize_dim(d, nd);
    if (nd == 0 || seen[k]) continue;
    seen[k] = true;
    n *= shape[k];
  }
  return n;
}

NDArray mean(const NDArray& a, const std::vector<int>& dims, bool keepdim) {
  NDArray x = is_floating(a.dtype()) ? a : a.astype(DType::Float32);
  int64_t n = reduced_numel(x.shape(), dims);
  return div(sum(x, dims, keepdim), Scalar(static_cast<double>(n)));
}

NDArray var(const NDArray& a, const std::vector<int>& dims, int64_t correction, bool keepdim) {
  NDArray x = is_floating(a.dtype()) ? a : a.astype(DType::Float32);
  int64_t n = reduced_numel(x.shape(), dims);
  NDArray centered = sub(x, mean(x, dims, true));
  NDArray ss = sum(mul(centered, centered), dims, keepdim);
  double denom = static_cast<double>(n - correction);
  return div(ss, Scalar(denom > 0 ? denom : 0.0));
}

static NDArray arg_reduce(ReduceOp op, const NDArray& a, std::optional<int> dim, bool keepdim) {
  if (!dim) {
    NDArray r = reduce(op, a.reshape({-1}), {0}, false);
    if (keepdim) r = r.reshape(Shape(a.ndim(), 1));
    return r;
  }
  return reduce(op, a, {*dim}, keepdim);
}
NDArray argmax(const NDArray& a, std::optional<int> dim, bool keepdim) {
  return arg_reduce(ReduceOp::ArgMax, a, dim, keepdim);
}
NDArray argmin(const NDArray& a, std::optional<int> dim, bool keepdim) {
  return arg_reduce(ReduceOp::ArgMin, a, dim, keepdim);
}

// --- matmul -----------------------------------------------------------------------------------------

// How one GEMM operand of logical shape batch + (rows, cols) is read without copying: row-major
// with leading dimension ld, or transposed storage, plus one stride over the flattened batch.
struct MatrixLayout {
  bool ok = false, trans = false;
  int64_t ld = 0, batch_stride = 0;
};

static MatrixLayout matrix_layout(const NDArray& x) {
  MatrixLayout L;
  int nd = x.ndim();
  int64_t r = x.shape()[nd - 2], c = x.shape()[nd - 1];
  int64_t sr = x.strides()[nd - 2], sc = x.strides()[nd - 1];
  if ((sc == 1 || c == 1) && (r == 1 || sr >= std::max<int64_t>(c, 1))) {
    L.trans = false;
    L.ld = r == 1 ? std::max<int64_t>(c, 1) : sr;
  } else if ((sr == 1 || r == 1) && (c == 1 || sc >= std::max<int64_t>(r, 1))) {
    L.trans = true;
    L.ld = c == 1 ? std::max<int64_t>(r, 1) : sc;
  } else {
    return L;
  }
  // The batch dims must collapse into one stride (all zero for a broadcast operand).
  int64_t stride = -1, expect = -1;
  bool all_zero = true;
  for (int i = nd - 3; i >= 0; --i) {
    if (x.shape()[i] == 1) continue;
    if (x.strides()[i] != 0) all_zero = false;
    if (stride < 0) {
      stride = x.strides()[i];
    } else if (x.strides()[i] != expect) {
      return L;
    }
    expect = x.strides()[i] * x.shape()[i];
  }
  if (stride < 0) stride = 0;
  if (all_zero) stride = 0;
  else if (stride == 0) return L;  // a broadcast inner batch dim under a real one
  L.batch_stride = stride;
  L.ok = true;
  return L;
}

// x's layout as a GEMM operand, x first copied compact when its strides give none.
static MatrixLayout operand_layout(NDArray& x) {
  MatrixLayout L = matrix_layout(x);
  if (!L.ok) {
    x = x.clone();
    L = matrix_layout(x);
  }
  return L;
}

NDArray matmul(const NDArray& a_in, const NDArray& b_in) { return matmul(a_in, b_in, NDArray()); }

NDArray matmul(const NDArray& a_in, const NDArray& b_in, const NDArray& bias_in) {
  check_same_device(a_in, b_in, "matmul");
  NEEDLE_CHECK(a_in.ndim() >= 1 && b_in.ndim() >= 1, ValueError,
               "matmul: both operands need at least 1 dimension, got shapes ",
               shape_str(a_in.shape()), " and ", shape_str(b_in.shape()));
  DType dt = promote_types(a_in.dtype(), b_in.dtype());
  NEEDLE_CHECK(is_floating(dt), TypeError,
               "matmul: expected floating arrays (bfloat16, float32, float64), got ",
               dtype_name(a_in.dtype()), " and ", dtype_name(b_in.dtype()));
  NDArray a = a_in.astype(dt), b = b_in.astype(dt);
  bool squeeze_m = a.ndim() == 1, squeeze_n = b.ndim() == 1;
  if (squeeze_m) a = a.unsqueeze(0);
  if (squeeze_n) b = b.unsqueeze(1);
  int64_t m = a.shape()[a.ndim() - 2], k = a.shape()[a.ndim() - 1];
  int64_t k2 = b.shape()[b.ndim() - 2], n = b.shape()[b.ndim() - 1];
  NEEDLE_CHECK(k == k2, ValueError, "matmul: shapes ", shape_str(a_in.shape()), " and ",
               shape_str(b_in.shape()), " are not aligned: ", k, " (dim -1 of the first) != ", k2,
               " (dim -2 of the second)");
  NDArray bias;
  if (bias_in.defined()) {
    check_same_device(a_in, bias_in, "matmul");
    NEEDLE_CHECK(bias_in.shape() == Shape{n} && !squeeze_n, ValueError, "matmul: expected a bias of shape (",
                 n, ",) for a product with ", n, " columns, got ", shape_str(bias_in.shape()));
    bias = bias_in.astype(dt).compact();
  }
  Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                 Shape(b.shape().begin(), b.shape().end() - 2));
  int64_t nbatch = shape_numel(batch);
  Shape ashape = batch, bshape = batch, out_shape = batch;
  ashape.insert(ashape.end(), {m, k});
  bshape.insert(bshape.end(), {k, n});
  out_shape.insert(out_shape.end(), {m, n});
  a = a.broadcast_to(ashape);
  b = b.broadcast_to(bshape);

  NDArray out = NDArray::empty(out_shape, dt, a.device());
  if (out.numel() > 0) {
    const MatrixLayout la = operand_layout(a), lb = operand_layout(b);
    GemmArgs g;
    g.dtype = dt;
    g.trans_a = la.trans;
    g.trans_b = lb.trans;
    g.m = m, g.n = n, g.k = k, g.batch = nbatch;
    g.a = a.data_ptr(), g.lda = la.ld, g.stride_a = la.batch_stride;
    g.b = b.data_ptr(), g.ldb = lb.ld, g.stride_b = lb.batch_stride;
    g.c = out.data_ptr(), g.ldc = n, g.stride_c = m * n;
    g.bias = bias.defined() ? bias.data_ptr() : nullptr;
    // A shared right operand and row-major, densely stacked left operands form one taller
    // GEMM (the Linear-layer case): better for every backend than many small ones.
    if (nbatch > 1 && g.stride_b == 0 && !g.trans_a && g.lda == k && g.stride_a == m * k) {
      g.m = m * nbatch;
      g.batch = 1;
    }
    a.backend().gemm(g);
  }
  if (squeeze_m) out = out.squeeze(-2);
  if (squeeze_n) out = out.squeeze(-1);
  return out;
}

NDArray linear_param_grads(const NDArray& g_in, const NDArray& x_in, DType dtype,
                           NDArray* bias_grad) {
  check_same_device(g_in, x_in, "linear_param_grads");
  NEEDLE_CHECK(g_in.ndim() == 2 && x_in.ndim() == 2 && g_in.shape()[0] == x_in.shape()[0],
               ValueError,
               "linear_param_grads: expected g (rows, out) and x (rows, in) with equal rows, got "
               "shapes ",
               shape_str(g_in.shape()), " and ", shape_str(x_in.shape()));
  const DType dt = promote_types(g_in.dtype(), x_in.dtype());
  NEEDLE_CHECK(is_floating(dt), TypeError,
               "linear_param_grads: expected floating arrays (bfloat16, float32, float64), got ",
               dtype_name(g_in.dtype()), " and ", dtype_name(x_in.dtype()));
  const bool widen = dtype != dt;
  NEEDLE_CHECK(!widen || (dt == DType::BFloat16 && dtype == DType::Float32), TypeError,
               "linear_param_grads: expected gradients in the operands' dtype ", dtype_name(dt),
               dt == DType::BFloat16 ? " or float32" : "", ", got ", dtype_name(dtype));
  const int64_t rows = g_in.shape()[0], out = g_in.shape()[1], in = x_in.shape()[1];
  NDArray gt = g_in.astype(dt).transpose(0, 1), x = x_in.astype(dt);  // gt: (out, rows)
  NDArray dw = NDArray::empty({out, in}, dtype, g_in.device());
  if (bias_grad != nullptr) *bias_grad = NDArray::empty({out}, dtype, g_in.device());
  if (out == 0) return dw;
  const MatrixLayout la = operand_layout(gt), lb = operand_layout(x);
  GemmArgs a;
  a.dtype = dt;
  a.c_float32 = widen;
  a.trans_a = la.trans;
  a.trans_b = lb.trans;
  a.m = out, a.n = in, a.k = rows;
  a.a = gt.data_ptr(), a.lda = la.ld;
  a.b = x.data_ptr(), a.ldb = lb.ld;
  a.c = dw.data_ptr(), a.ldc = in;
  a.a_row_sums = bias_grad != nullptr ? bias_grad->data_ptr() : nullptr;
  gt.backend().gemm(a);
  return dw;
}

// --- row ops ----------------------------------------------------------------------------------------

// Moves `dim` to the end (the other dims keep their order) and returns the compact
// (rows, cols) source; *perm is the permutation applied.
static NDArray rows_last(const NDArray& a, int dim, std::vector<int>* perm) {
  NDArray x = is_floating(a.dtype()) ? a : a.astype(DType::Float32);
  if (a.ndim() == 0) {
    normalize_dim(dim, 0);
    perm->clear();
    return x.reshape({1});
  }
  int d = normalize_dim(dim, a.ndim());
  perm->clear();
  for (int i = 0; i < a.ndim(); ++i)
    if (i != d) perm->push_back(i);
  perm->push_back(d);
  return x.permute(*perm).compact();
}

static NDArray softmax_like(RowOp op, const NDArray& a, int dim) {
  std::vector<int> perm;
  NDArray x = rows_last(a, dim, &perm);
  int64_t cols = x.shape().back(), rows = cols ? x.numel() / cols : 0;
  NDArray out = NDArray::empty(x.shape(), x.dtype(), x.device());
  if (out.numel()) x.backend().row_op(op, x.ref(), rows, cols, out.ref());
  if (a.ndim() == 0) return out.reshape({});
  std::vector<int> inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = static_cast<int>(i);
  return out.permute(inverse);
}

NDArray softmax(const NDArray& a, int dim) { return softmax_like(RowOp::Softmax, a, dim); }
NDArray log_softmax(const NDArray& a, int dim) {
  return softmax_like(RowOp::LogSoftmax, a, dim);
}

NDArray logsumexp(const NDArray& a, int dim, bool keepdim) {
  std::vector<int> perm;
  NDArray x = rows_last(a, dim, &perm);
  int64_t cols = x.shape().back();
  Shape row_shape(x.shape().begin(), x.shape().end() - 1);  // a.shape without dim
  int64_t rows = shape_numel(row_shape);
  NDArray out = NDArray::empty({rows}, x.dtype(), x.device());
  if (rows > 0) {
    if (cols == 0)
      out.fill(-std::numeric_limits<double>::infinity());
    else
      x.backend().row_op(RowOp::LogSumExp, x.ref(), rows, cols, out.ref());
  }
  if (a.ndim() == 0) return out.reshape({});
  NDArray r = out.reshape(row_shape);
  return keepdim ? r.unsqueeze(normalize_dim(dim, a.ndim())) : r;
}

// --- indexing and joining ---------------------------------------------------------------------------

static void index_dims(const NDArray& a, int d, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (int i = 0; i < d; ++i) *outer *= a.shape()[i];
  for (int i = d + 1; i < a.ndim(); ++i) *inner *= a.shape()[i];
}

static NDArray check_index(const NDArray& index, const NDArray& a, const char* op) {
  check_same_device(a, index, op);
  NEEDLE_CHECK(index.dtype() == DType::Int64 || index.dtype() == DType::Int32, TypeError, op,
               ": expected an int64 or int32 index, got ", dtype_name(index.dtype()));
  NEEDLE_CHECK(index.ndim() <= 1, ValueError, op, ": expected a 1-D index, got shape ",
               shape_str(index.shape()));
  return index.reshape({-1}).compact();
}

NDArray index_select(const NDArray& a, int dim, const NDArray& index_in) {
  int d = normalize_existing_dim(dim, a.ndim(), "index_select");
  NDArray index = check_index(index_in, a, "index_select");
  int64_t outer, inner, n = a.shape()[d], k = index.numel();
  index_dims(a, d, &outer, &inner);
  Shape shape = a.shape();
  shape[d] = k;
  NDArray out = NDArray::empty(shape, a.dtype(), a.device());
  NEEDLE_CHECK(k == 0 || n > 0, IndexError, "index_select: cannot index into dimension ", d,
               " of size 0");
  if (out.numel()) a.backend().index_select(a.compact().ref(), index.ref(), outer, n, inner, out.ref());
  return out;
}

NDArray index_add(const NDArray& a, int dim, const NDArray& index_in, const NDArray& src) {
  int d = normalize_existing_dim(dim, a.ndim(), "index_add");
  NDArray index = check_index(index_in, a, "index_add");
  check_same_device(a, src, "index_add");
  Shape expect = a.shape();
  expect[d] = index.numel();
  NEEDLE_CHECK(src.shape() == expect, ValueError, "index_add: expected source of shape ",
               shape_str(expect), ", got ", shape_str(src.shape()));
  NDArray out = a.clone();
  int64_t outer, inner;
  index_dims(a, d, &outer, &inner);
  if (src.numel())
    a.backend().index_add(src.astype(a.dtype()).compact().ref(), index.ref(), outer, a.shape()[d],
                          inner, out.ref());
  return out;
}

NDArray embedding(const NDArray& weight, const NDArray& ids) {
  NEEDLE_CHECK(weight.ndim() == 2, ValueError, "embedding: expected a 2-D weight, got shape ",
               shape_str(weight.shape()));
  Shape shape = ids.shape();
  shape.push_back(weight.shape()[1]);
  return index_select(weight, 0, ids.reshape({-1})).reshape(shape);
}

NDArray concatenate(const std::vector<NDArray>& arrays, int dim) {
  NEEDLE_CHECK(!arrays.empty(), ValueError, "concatenate: expected a non-empty list of arrays");
  const NDArray& first = arrays[0];
  NEEDLE_CHECK(first.ndim() > 0, ValueError, "concatenate: zero-dimensional arrays cannot be "
               "concatenated (use stack)");
  int d = normalize_dim(dim, first.ndim());
  DType dt = first.dtype();
  int64_t total = 0;
  for (size_t i = 0; i < arrays.size(); ++i) {
    const NDArray& x = arrays[i];
    check_same_device(first, x, "concatenate");
    NEEDLE_CHECK(x.ndim() == first.ndim(), ValueError, "concatenate: array ", i, " has shape ",
                 shape_str(x.shape()), ", expected ", first.ndim(), " dims like ",
                 shape_str(first.shape()));
    for (int j = 0; j < x.ndim(); ++j)
      NEEDLE_CHECK(j == d || x.shape()[j] == first.shape()[j], ValueError,
                   "concatenate: array ", i, " has shape ", shape_str(x.shape()),
                   ", which differs from ", shape_str(first.shape()), " outside dim ", d);
    dt = promote_types(dt, x.dtype());
    total += x.shape()[d];
  }
  Shape shape = first.shape();
  shape[d] = total;
  NDArray out = NDArray::empty(shape, dt, first.device());
  int64_t at = 0;
  for (const NDArray& x : arrays) {
    out.slice(d, at, at + x.shape()[d]).assign(x);
    at += x.shape()[d];
  }
  return out;
}

NDArray stack(const std::vector<NDArray>& arrays, int dim) {
  NEEDLE_CHECK(!arrays.empty(), ValueError, "stack: expected a non-empty list of arrays");
  int d = normalize_dim(dim, arrays[0].ndim() + 1);
  std::vector<NDArray> expanded;
  for (size_t i = 0; i < arrays.size(); ++i) {
    NEEDLE_CHECK(arrays[i].shape() == arrays[0].shape(), ValueError,
                 "stack: expected arrays of equal shape, got ", shape_str(arrays[0].shape()),
                 " and ", shape_str(arrays[i].shape()), " (array ", i, ")");
    expanded.push_back(arrays[i].unsqueeze(d));
  }
  return concatenate(expanded, d);
}

std::vector<NDArray> split(const NDArray& a, const std::vector<int64_t>& sizes, int dim) {
  int d = normalize_existing_dim(dim, a.ndim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    NEEDLE_CHECK(s >= 0, ValueError, "split: sizes must be non-negative");
    total += s;
  }
  NEEDLE_CHECK(total == a.shape()[d], ValueError, "split: sizes sum to ", total,
               " but dimension ", d, " has size ", a.shape()[d]);
  std::vector<NDArray> parts;
  int64_t at = 0;
  for (int64_t s : sizes) {
    parts.push_back(a.slice(d, at, at + s));
    at += s;
  }
  return parts;
}

std::vector<int64_t> split_sizes(const Shape& shape, int64_t each, int dim) {
  NEEDLE_CHECK(each > 0, ValueError, "split: split_size must be positive, got ", each);
  const int64_t n = shape[normalize_existing_dim(dim, static_cast<int>(shape.size()), "split")];
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += each) sizes.push_back(std::min(each, n - at));
  if (sizes.empty()) sizes.push_back(0);
  return sizes;
}

std::vector<NDArray> chunk(const NDArray& a, int64_t chunks, int dim) {
  NEEDLE_CHECK(chunks > 0, ValueError, "chunk: expected a positive number of chunks, got ",
               chunks);
  int d = normalize_existing_dim(dim, a.ndim(), "chunk");
  // Parts of ceil(n / chunks), at least 1 so that an empty dim gives one empty part.
  const int64_t each = std::max<int64_t>(ceil_div(a.shape()[d], chunks), 1);
  return split(a, split_sizes(a.shape(), each, d), d);
}

NDArray flip(const NDArray& a, const std::vector<int>& dims) {
  // As torch.flip: each dim at most once, and a 0-d array accepts dim 0 and -1 (and is unchanged).
  std::vector<bool> seen(std::max(a.ndim(), 1), false);
  NDArray r = a;
  for (int dim : dims) {
    int d = normalize_dim(dim, a.ndim());
    NEEDLE_CHECK(!seen[d], ValueError, "flip: dim ", d, " appears more than once in the dims");
    seen[d] = true;
    if (a.ndim() > 0) r = r.slice(d, std::nullopt, std::nullopt, -1);
  }
  return r.clone();
}

NDArray pad(const NDArray& a, const std::vector<int64_t>& pads, double value) {
  NEEDLE_CHECK(pads.size() % 2 == 0 && static_cast<int>(pads.size()) <= 2 * a.ndim(), ValueError,
               "pad: expected an even number of pad sizes, at most 2 per dim (", 2 * a.ndim(),
               "), got ", pads.size());
  Shape shape = a.shape();
  std::vector<Index> where_idx;
  for (int i = 0; i < a.ndim(); ++i) {
    int64_t before = 2 * i < static_cast<int>(pads.size()) ? pads[2 * i] : 0;
    int64_t after = 2 * i + 1 < static_cast<int>(pads.size()) ? pads[2 * i + 1] : 0;
    NEEDLE_CHECK(before >= 0 && after >= 0, ValueError, "pad: negative padding is not supported");
    shape[i] += before + after;
    where_idx.push_back(Index::slice(before, before + a.shape()[i]));
  }
  NDArray out = NDArray::full(shape, value, a.dtype(), a.device());
  out.setitem(where_idx, a);
  return out;
}

}  // namespace needle
