// NDArray arithmetic for Python: operators, the elementwise ops generated from the X-macro lists of
// ops.h (each op becomes both ndl.name(x, ...) and x.name(...)), reductions, matmul, row ops,
// joining, and the module-level creation functions. Kernels run with the GIL released.
#include <string>

#include "bindings.h"
#include "ndarray/error.h"
#include "ndarray/random.h"

namespace needle::python {

namespace {

// Registers f both as ndl.name(input, ...) and as the method x.name(...).
template <typename F, typename... Extra>
void def_both(py::module_& m, py::class_<NDArray>& cls, const char* name, F f,
              const Extra&... extra) {
  m.def(name, f, py::arg("input"), extra...);
  cls.def(name, f, extra...);
}

bool is_logical_op(BinaryOp op) {
  return op == BinaryOp::LogicalAnd || op == BinaryOp::LogicalOr || op == BinaryOp::LogicalXor;
}

// & | ^ are spelled on bool arrays only: on integers Python means bitwise ops, which needle lacks.
void check_bool_operand(BinaryOp op, const NDArray& self, const Operand& other) {
  const bool other_bool = other.is_array() ? other.array->dtype() == DType::Bool
                                           : other.scalar.kind == Scalar::Kind::Bool;
  NEEDLE_CHECK(self.dtype() == DType::Bool && other_bool, TypeError, "operator for ", op_name(op),
               " expects bool operands, got ", dtype_name(self.dtype()), " and ",
               other.is_array() ? dtype_name(other.array->dtype()) : "a Python number",
               "; use ndl.", op_name(op), " for the truth values of other dtypes");
}

// self <op> other, or other <op> self when reflected. NotImplemented lets Python try the other
// operand (and makes `x == None` False rather than an error).
py::object apply_binary(BinaryOp op, const NDArray& self, py::handle other, bool reflected,
                        bool operator_syntax) {
  std::optional<Operand> rhs = to_operand(other, self);
  if (!rhs) {
    if (operator_syntax) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
    throw TypeError(detail::concat(op_name(op),
                                   ": expected an NDArray, an array-like or a number, ", "got ",
                                   std::string(py::str(py::type::handle_of(other)))));
  }
  if (operator_syntax && is_logical_op(op)) check_bool_operand(op, self, *rhs);
  NDArray out = without_gil([&] {
    if (rhs->is_array())
      return reflected ? binary(op, *rhs->array, self) : binary(op, self, *rhs->array);
    return binary(op, self, rhs->scalar, reflected);
  });
  return py::cast(out);
}

// ndl.add(a, b) and friends: either operand may be the array.
py::object binary_function(BinaryOp op, py::handle a, py::handle b) {
  if (py::isinstance<NDArray>(a))
    return apply_binary(op, py::cast<const NDArray&>(a), b, false, false);
  if (py::isinstance<NDArray>(b))
    return apply_binary(op, py::cast<const NDArray&>(b), a, true, false);
  return apply_binary(op, to_ndarray(a), b, false, false);
}

// x += y writes into x (and every view of it), so the result must fit x's dtype.
py::object apply_inplace(BinaryOp op, py::object self_obj, py::handle other) {
  const NDArray& self = py::cast<const NDArray&>(self_obj);
  py::object result = apply_binary(op, self, other, false, true);
  if (result.ptr() == Py_NotImplemented) return result;
  NDArray r = py::cast<NDArray>(result);
  NEEDLE_CHECK(promote_types(self.dtype(), r.dtype()) == self.dtype(), TypeError, "in-place ",
               op_name(op), ": the result has dtype ", dtype_name(r.dtype()),
               ", which cannot be stored in an array of dtype ", dtype_name(self.dtype()));
  without_gil([&] {
    self.assign(r);
    return 0;
  });
  return self_obj;
}

NDArray where_function(const NDArray& cond, py::handle a, py::handle b) {
  std::optional<Operand> x = to_operand(a, cond), y = to_operand(b, cond);
  NEEDLE_CHECK(x && y, TypeError, "where: expected arrays or numbers for the two branches");
  if (!x->is_array() && !y->is_array()) {
    // Two numbers: the result has the dtype a one-element array of the first would promote to.
    DType dt = promote_with_scalar(default_dtype(x->scalar), y->scalar);
    x->array = NDArray::full({}, x->scalar, dt, cond.device());
  }
  return without_gil([&] {
    if (!x->is_array()) return where(logical_not(cond), *y->array, x->scalar);
    if (!y->is_array()) return where(cond, *x->array, y->scalar);
    return where(cond, *x->array, *y->array);
  });
}

std::vector<NDArray> split_function(const NDArray& a, py::handle sizes, int dim) {
  const std::vector<int64_t> parts = PyIndex_Check(sizes.ptr())
                                         ? split_sizes(a.shape(), to_shape(sizes)[0], dim)
                                         : to_shape(sizes);
  return without_gil([&] { return split(a, parts, dim); });
}

void bind_operators(py::class_<NDArray>& cls) {
  struct Dunder {
    const char* name;
    BinaryOp op;
    bool reflected;
  };
  static const Dunder dunders[] = {
      {"__add__", BinaryOp::Add, false},        {"__radd__", BinaryOp::Add, true},
      {"__sub__", BinaryOp::Sub, false},        {"__rsub__", BinaryOp::Sub, true},
      {"__mul__", BinaryOp::Mul, false},        {"__rmul__", BinaryOp::Mul, true},
      {"__truediv__", BinaryOp::Div, false},    {"__rtruediv__", BinaryOp::Div, true},
      {"__pow__", BinaryOp::Pow, false},        {"__rpow__", BinaryOp::Pow, true},
      {"__floordiv__", BinaryOp::FloorDiv, false}, {"__rfloordiv__", BinaryOp::FloorDiv, true},
      {"__mod__", BinaryOp::Remainder, false},  {"__rmod__", BinaryOp::Remainder, true},
      {"__eq__", BinaryOp::Eq, false},          {"__ne__", BinaryOp::Ne, false},
      {"__lt__", BinaryOp::Lt, false},          {"__le__", BinaryOp::Le, false},
      {"__gt__", BinaryOp::Gt, false},          {"__ge__", BinaryOp::Ge, false},
      {"__and__", BinaryOp::LogicalAnd, false}, {"__rand__", BinaryOp::LogicalAnd, true},
      {"__or__", BinaryOp::LogicalOr, false},   {"__ror__", BinaryOp::LogicalOr, true},
      {"__xor__", BinaryOp::LogicalXor, false}, {"__rxor__", BinaryOp::LogicalXor, true},
  };
  for (const Dunder& d : dunders) {
    const BinaryOp op = d.op;
    const bool reflected = d.reflected;
    cls.def(d.name, [op, reflected](const NDArray& self, py::handle other) {
      return apply_binary(op, self, other, reflected, true);
    });
  }
  static const std::pair<const char*, BinaryOp> inplace[] = {{"__iadd__", BinaryOp::Add},
                                                             {"__isub__", BinaryOp::Sub},
                                                             {"__imul__", BinaryOp::Mul},
                                                             {"__itruediv__", BinaryOp::Div},
                                                             {"__ipow__", BinaryOp::Pow},
                                                             {"__ifloordiv__", BinaryOp::FloorDiv},
                                                             {"__imod__", BinaryOp::Remainder}};
  for (const auto& [name, op_value] : inplace) {
    const BinaryOp op = op_value;
    cls.def(name,
            [op](py::object self, py::handle other) { return apply_inplace(op, self, other); });
  }
  cls.def("__neg__", [](const NDArray& a) { return without_gil([&] { return neg(a); }); })
      .def("__pos__", [](const NDArray& a) { return a; })
      .def("__abs__", [](const NDArray& a) { return without_gil([&] { return abs(a); }); })
      .def("__invert__", [](const NDArray& a) {
        NEEDLE_CHECK(a.dtype() == DType::Bool, TypeError, "~ expects a bool array, got dtype ",
                     dtype_name(a.dtype()));
        return logical_not(a);
      });
  cls.def("__matmul__", [](const NDArray& a,
                           const NDArray& b) { return without_gil([&] { return matmul(a, b); }); })
      .def("__rmatmul__", [](const NDArray& b, py::handle a) {
        NDArray lhs = to_ndarray(a, std::nullopt, b.device());
        return without_gil([&] { return matmul(lhs, b); });
      });
}

void bind_elementwise(py::module_& m, py::class_<NDArray>& cls) {
#define NEEDLE_BIND_UNARY(Name, fname, ...) \
  def_both(m, cls, #fname, [](const NDArray& a) { return without_gil([&] { return fname(a); }); });
  NEEDLE_UNARY_OPS(NEEDLE_BIND_UNARY)
#undef NEEDLE_BIND_UNARY
  def_both(m, cls, "logical_not",
           [](const NDArray& a) { return without_gil([&] { return logical_not(a); }); });

#define NEEDLE_BIND_BINARY(Name, fname, ...)                                                    \
  m.def(                                                                                        \
      #fname, [](py::handle a, py::handle b) { return binary_function(BinaryOp::Name, a, b); }, \
      py::arg("input"), py::arg("other"));                                                      \
  cls.def(                                                                                      \
      #fname,                                                                                   \
      [](const NDArray& a, py::handle b) {                                                      \
        return apply_binary(BinaryOp::Name, a, b, false, false);                                \
      },                                                                                        \
      py::arg("other"));
  NEEDLE_BINARY_OPS(NEEDLE_BIND_BINARY)
#undef NEEDLE_BIND_BINARY

  // The generated names, for Python code that re-exports them (needle/array_api.py).
  py::list names;
#define NEEDLE_OP_NAME(Name, fname, ...) names.append(#fname);
  NEEDLE_UNARY_OPS(NEEDLE_OP_NAME)
  NEEDLE_BINARY_OPS(NEEDLE_OP_NAME)
#undef NEEDLE_OP_NAME
  names.append("logical_not");
  m.attr("elementwise_ops") = py::tuple(names);

  m.def("where", &where_function, py::arg("condition"), py::arg("input"), py::arg("other"),
        "Elementwise condition ? input : other; either branch may be a number.");
  auto clamp_fn = [](const NDArray& a, py::handle min, py::handle max) {
    std::optional<Scalar> lo = optional_scalar_arg(min, "clamp min");
    std::optional<Scalar> hi = optional_scalar_arg(max, "clamp max");
    return without_gil([&] { return clamp(a, lo, hi); });
  };
  def_both(m, cls, "clamp", clamp_fn, py::arg("min") = py::none(), py::arg("max") = py::none());
  def_both(m, cls, "clip", clamp_fn, py::arg("min") = py::none(), py::arg("max") = py::none());
}

void bind_reductions(py::module_& m, py::class_<NDArray>& cls) {
  using Reduction = NDArray (*)(const NDArray&, const std::vector<int>&, bool);
  static const std::pair<const char*, Reduction> reductions[] = {
      {"sum", &sum}, {"prod", &prod}, {"mean", &mean}, {"max", &max},
      {"min", &min}, {"amax", &max},  {"amin", &min}};
  for (const auto& [name, fn_value] : reductions) {
    const Reduction fn = fn_value;
    def_both(
        m, cls, name,
        [fn](const NDArray& a, py::handle dim, bool keepdim) {
          std::vector<int> dims = to_dims(dim);
          return without_gil([&] { return fn(a, dims, keepdim); });
        },
        py::arg("dim") = py::none(), py::arg("keepdim") = false);
  }
  auto var_fn = [](const NDArray& a, py::handle dim, std::optional<bool> unbiased,
                   int64_t correction, bool keepdim) {
    std::vector<int> dims = to_dims(dim);
    if (unbiased) correction = *unbiased ? 1 : 0;
    return without_gil([&] { return var(a, dims, correction, keepdim); });
  };
  def_both(m, cls, "var", var_fn, py::arg("dim") = py::none(), py::arg("unbiased") = py::none(),
           py::arg("correction") = 1, py::arg("keepdim") = false);
  def_both(
      m, cls, "std",
      [var_fn](const NDArray& a, py::handle dim, std::optional<bool> unbiased, int64_t correction,
               bool keepdim) {
        NDArray v = var_fn(a, dim, unbiased, correction, keepdim);
        return without_gil([&] { return sqrt(v); });
      },
      py::arg("dim") = py::none(), py::arg("unbiased") = py::none(), py::arg("correction") = 1,
      py::arg("keepdim") = false);
  def_both(
      m, cls, "argmax",
      [](const NDArray& a, std::optional<int> dim, bool keepdim) {
        return without_gil([&] { return argmax(a, dim, keepdim); });
      },
      py::arg("dim") = py::none(), py::arg("keepdim") = false);
  def_both(
      m, cls, "argmin",
      [](const NDArray& a, std::optional<int> dim, bool keepdim) {
        return without_gil([&] { return argmin(a, dim, keepdim); });
      },
      py::arg("dim") = py::none(), py::arg("keepdim") = false);
  // any/all count the true elements: there is no boolean reduction kernel.
  def_both(
      m, cls, "any",
      [](const NDArray& a, py::handle dim, bool keepdim) {
        std::vector<int> dims = to_dims(dim);
        return without_gil([&] {
          return gt(sum(ne(a, Scalar(0)).astype(DType::Int64), dims, keepdim), Scalar(0));
        });
      },
      py::arg("dim") = py::none(), py::arg("keepdim") = false);
  def_both(
      m, cls, "all",
      [](const NDArray& a, py::handle dim, bool keepdim) {
        std::vector<int> dims = to_dims(dim);
        return without_gil([&] {
          return eq(sum(eq(a, Scalar(0)).astype(DType::Int64), dims, keepdim), Scalar(0));
        });
      },
      py::arg("dim") = py::none(), py::arg("keepdim") = false);

  def_both(
      m, cls, "softmax",
      [](const NDArray& a, int dim) { return without_gil([&] { return softmax(a, dim); }); },
      py::arg("dim") = -1);
  def_both(
      m, cls, "log_softmax",
      [](const NDArray& a, int dim) { return without_gil([&] { return log_softmax(a, dim); }); },
      py::arg("dim") = -1);
  def_both(
      m, cls, "logsumexp",
      [](const NDArray& a, int dim, bool keepdim) {
        return without_gil([&] { return logsumexp(a, dim, keepdim); });
      },
      py::arg("dim") = -1, py::arg("keepdim") = false);
  def_both(
      m, cls, "matmul",
      [](const NDArray& a, const NDArray& b) { return without_gil([&] { return matmul(a, b); }); },
      py::arg("other"));
}

void bind_joining(py::module_& m, py::class_<NDArray>& cls) {
  auto cat_fn = [](const std::vector<NDArray>& arrays, int dim) {
    return without_gil([&] { return concatenate(arrays, dim); });
  };
  m.def("concatenate", cat_fn, py::arg("arrays"), py::arg("dim") = 0);
  m.def("cat", cat_fn, py::arg("arrays"), py::arg("dim") = 0);
  m.def(
      "stack",
      [](const std::vector<NDArray>& arrays, int dim) {
        return without_gil([&] { return stack(arrays, dim); });
      },
      py::arg("arrays"), py::arg("dim") = 0);
  def_both(m, cls, "split", &split_function, py::arg("split_size_or_sections"), py::arg("dim") = 0);
  def_both(
      m, cls, "chunk",
      [](const NDArray& a, int64_t chunks, int dim) {
        return without_gil([&] { return chunk(a, chunks, dim); });
      },
      py::arg("chunks"), py::arg("dim") = 0);
  def_both(
      m, cls, "flip",
      [](const NDArray& a, py::handle dims) {
        std::vector<int> d = to_dims(dims);
        return without_gil([&] { return flip(a, d); });
      },
      py::arg("dims"));
  def_both(
      m, cls, "index_select",
      [](const NDArray& a, int dim, const NDArray& index) {
        return without_gil([&] { return index_select(a, dim, index); });
      },
      py::arg("dim"), py::arg("index"));
  def_both(
      m, cls, "index_add",
      [](const NDArray& a, int dim, const NDArray& index, const NDArray& src) {
        return without_gil([&] { return index_add(a, dim, index, src); });
      },
      py::arg("dim"), py::arg("index"), py::arg("source"));
  m.def(
      "embedding",
      [](const NDArray& ids, const NDArray& weight) {
        return without_gil([&] { return embedding(weight, ids); });
      },
      py::arg("input"), py::arg("weight"), "Rows of weight at ids (torch's argument order).");
  m.def(
      "pad",
      [](const NDArray& a, std::vector<int64_t> pads, double value) {
        return without_gil([&] { return pad(a, pads, value); });
      },
      py::arg("input"), py::arg("pad"), py::arg("value") = 0.0,
      "pad[2*i], pad[2*i+1]: amounts before/after dim i, leading dims first (unlike torch).");
}

// --- creation
// -------------------------------------------------------------------------------------

using Filler = NDArray (*)(const Shape&, DType, Device);

void bind_filler(py::module_& m, const char* name, Filler fill, const char* doc) {
  m.def(
      name,
      [fill](const py::args& shape, py::handle dtype, py::handle device) {
        Shape s = to_shape(shape);
        DType dt = to_optional_dtype(dtype).value_or(DType::Float32);
        Device dev = to_device(device);
        return without_gil([&] { return fill(s, dt, dev); });
      },
      py::arg("dtype") = py::none(), py::arg("device") = py::none(), doc);
  m.def((std::string(name) + "_like").c_str(),
        [fill](const NDArray& like, py::handle dtype, py::handle device) {
          DType dt = to_optional_dtype(dtype).value_or(like.dtype());
          Device dev = to_optional_device(device).value_or(like.device());
          return without_gil([&] { return fill(like.shape(), dt, dev); });
        },
        py::arg("input"), py::arg("dtype") = py::none(), py::arg("device") = py::none());
}

}  // namespace

void bind_ndarray_ops(py::module_& m, py::class_<NDArray>& cls) {
  bind_operators(cls);
  bind_elementwise(m, cls);
  bind_reductions(m, cls);
  bind_joining(m, cls);
}

void bind_ndarray_creation(py::module_& m) {
  // The static creators have default arguments, so adapt them to one Filler signature.
  bind_filler(
      m, "zeros", [](const Shape& s, DType d, Device v) { return NDArray::zeros(s, d, v); },
      "An array of zeros: zeros(2, 3) or zeros((2, 3)); float32 on the CPU by default.");
  bind_filler(
      m, "ones", [](const Shape& s, DType d, Device v) { return NDArray::ones(s, d, v); },
      "An array of ones.");
  bind_filler(
      m, "empty", [](const Shape& s, DType d, Device v) { return NDArray::empty(s, d, v); },
      "An uninitialised array.");
  bind_filler(
      m, "rand", [](const Shape& s, DType d, Device v) { return NDArray::rand(s, d, v); },
      "Uniform samples in [0, 1) from the seeded generator (ndl.manual_seed).");
  bind_filler(
      m, "randn", [](const Shape& s, DType d, Device v) { return NDArray::randn(s, d, v); },
      "Standard normal samples from the seeded generator (ndl.manual_seed).");

  m.def(
      "full",
      [](py::handle shape, py::handle fill_value, py::handle dtype, py::handle device) {
        Scalar v = scalar_arg(fill_value, "full");
        Shape s = to_shape(shape);
        DType dt = to_optional_dtype(dtype).value_or(default_dtype(v));
        Device dev = to_device(device);
        return without_gil([&] { return NDArray::full(s, v, dt, dev); });
      },
      py::arg("size"), py::arg("fill_value"), py::arg("dtype") = py::none(),
      py::arg("device") = py::none(),
      "An array filled with fill_value; the dtype follows it (bool, int64 or float32).");
  m.def(
      "full_like",
      [](const NDArray& like, py::handle fill_value, py::handle dtype, py::handle device) {
        Scalar v = scalar_arg(fill_value, "full_like");
        DType dt = to_optional_dtype(dtype).value_or(like.dtype());
        Device dev = to_optional_device(device).value_or(like.device());
        return without_gil([&] { return NDArray::full(like.shape(), v, dt, dev); });
      },
      py::arg("input"), py::arg("fill_value"), py::arg("dtype") = py::none(),
      py::arg("device") = py::none());
  m.def(
      "arange",
      [](py::handle start, py::handle end, py::handle step, py::handle dtype, py::handle device) {
        // arange(n) counts from 0, as in Python's range.
        // Ints count in int64, exactly.
        std::optional<int64_t> ilo = end.is_none() ? 0 : to_int64(start),
                               ihi = to_int64(end.is_none() ? start : end), ist = to_int64(step);
        if (ilo && ihi && ist) {
          DType dt = to_optional_dtype(dtype).value_or(DType::Int64);
          Device dev = to_device(device);
          return without_gil([&] { return NDArray::arange_int(*ilo, *ihi, *ist, dt, dev); });
        }
        Scalar lo = end.is_none() ? Scalar(0) : scalar_arg(start, "arange start");
        Scalar hi = scalar_arg(end.is_none() ? start : end, "arange end");
        Scalar st = scalar_arg(step, "arange step");
        const bool all_int = lo.kind != Scalar::Kind::Float && hi.kind != Scalar::Kind::Float &&
                             st.kind != Scalar::Kind::Float;
        DType dt = to_optional_dtype(dtype).value_or(all_int ? DType::Int64 : DType::Float32);
        Device dev = to_device(device);
        return without_gil([&] { return NDArray::arange(lo.value, hi.value, st.value, dt, dev); });
      },
      py::arg("start"), py::arg("end") = py::none(), py::arg("step") = 1,
      py::arg("dtype") = py::none(), py::arg("device") = py::none(),
      "Values from start (0 by default) up to, not including, end; int64 when all are ints.");
  m.def(
      "eye",
      [](int64_t n, std::optional<int64_t> cols, py::handle dtype, py::handle device) {
        NEEDLE_CHECK(cols.value_or(0) >= 0, ValueError, "eye: m must be non-negative, got ", *cols);
        DType dt = to_optional_dtype(dtype).value_or(DType::Float32);
        Device dev = to_device(device);
        return without_gil([&] { return NDArray::eye(n, cols.value_or(-1), dt, dev); });
      },
      py::arg("n"), py::arg("m") = py::none(), py::arg("dtype") = py::none(),
      py::arg("device") = py::none());
  m.def(
      "manual_seed", [](uint64_t seed) { manual_seed(seed); }, py::arg("seed"),
      "Seeds the default generator: the same seed gives the same numbers on every device.");
}

}  // namespace needle::python
