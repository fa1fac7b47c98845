// The autograd Tensor for Python: torch-style names (requires_grad, grad, backward, detach,
// no_grad through set_grad_enabled) over the C++ engine in src/autograd. Operators and methods
// route through the differentiable functions of autograd/functional.h.
#include <string>

#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "bindings.h"
#include "ndarray/error.h"

namespace needle::python {

namespace {

using TensorClass = py::class_<Tensor>;

// A Tensor from a Tensor, an NDArray or anything array-like (a constant, no graph).
Tensor as_tensor(py::handle obj, const Tensor& like) {
  if (py::isinstance<Tensor>(obj)) return py::cast<Tensor>(obj);
  if (py::isinstance<NDArray>(obj)) return Tensor(py::cast<NDArray>(obj));
  return Tensor(to_ndarray(obj, std::nullopt, like.device()));
}

// The right operand of a binary op: a Tensor, or a Python scalar kept weak.
struct TensorOperand {
  Tensor tensor;
  std::optional<Scalar> scalar;
};
std::optional<TensorOperand> to_tensor_operand(py::handle obj, const Tensor& like) {
  if (py::isinstance<Tensor>(obj)) return TensorOperand{py::cast<Tensor>(obj), std::nullopt};
  if (std::optional<Scalar> s = to_scalar(obj)) return TensorOperand{Tensor(), s};
  if (py::isinstance<NDArray>(obj) || py::isinstance<py::list>(obj) ||
      py::isinstance<py::tuple>(obj) || py::hasattr(obj, "__array__"))
    return TensorOperand{as_tensor(obj, like), std::nullopt};
  return std::nullopt;
}

py::object apply_binary(BinaryOp op, const Tensor& self, py::handle other, bool reflected) {
  std::optional<TensorOperand> rhs = to_tensor_operand(other, self);
  if (!rhs) return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  Tensor out;
  if (rhs->scalar)
    out = binary(op, self, *rhs->scalar, reflected);
  else
    out = reflected ? binary(op, rhs->tensor, self) : binary(op, self, rhs->tensor);
  return py::cast(out);
}

std::string tensor_repr(const Tensor& t) {
  std::string body = t.data().repr();  // "NDArray(<values>, shape=..., dtype=..., device=...)"
  body.replace(0, 7, "tensor");
  if (t.requires_grad()) {
    body.pop_back();
    body += t.op() ? std::string(", grad_fn=<") + t.op()->name() + ">)" : ", requires_grad=True)";
  }
  return body;
}

// A loss's `reduction` argument, as torch spells it.
Reduction parse_reduction(const char* op, const std::string& reduction) {
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  if (reduction == "none") return Reduction::None;
  throw ValueError(std::string(op) + ": reduction must be 'mean', 'sum' or 'none', got '" +
                   reduction + "'");
}

void bind_tensor_ops(TensorClass& cls) {
#define NEEDLE_BIND_TENSOR_BINARY(Name, fname, ...)                                              \
  cls.def(#fname, [](const Tensor& a, py::handle b) { return apply_binary(BinaryOp::Name, a, b, false); });
  NEEDLE_BINARY_OPS(NEEDLE_BIND_TENSOR_BINARY)
#undef NEEDLE_BIND_TENSOR_BINARY
#define NEEDLE_BIND_TENSOR_UNARY(Name, fname, ...) \
  cls.def(#fname, [](const Tensor& a) { return unary(UnaryOp::Name, a); });
  NEEDLE_UNARY_OPS(NEEDLE_BIND_TENSOR_UNARY)
#undef NEEDLE_BIND_TENSOR_UNARY

  const std::pair<const char*, BinaryOp> operators[] = {
      {"add", BinaryOp::Add},      {"sub", BinaryOp::Sub}, {"mul", BinaryOp::Mul},
      {"truediv", BinaryOp::Div},  {"pow", BinaryOp::Pow}, {"floordiv", BinaryOp::FloorDiv},
      {"mod", BinaryOp::Remainder}};
  for (const auto& [name, op] : operators) {
    BinaryOp o = op;
    cls.def((std::string("__") + name + "__").c_str(),
            [o](const Tensor& a, py::handle b) { return apply_binary(o, a, b, false); });
    cls.def((std::string("__r") + name + "__").c_str(),
            [o](const Tensor& a, py::handle b) { return apply_binary(o, a, b, true); });
  }
  const std::pair<const char*, BinaryOp> comparisons[] = {
      {"__eq__", BinaryOp::Eq}, {"__ne__", BinaryOp::Ne}, {"__lt__", BinaryOp::Lt},
      {"__le__", BinaryOp::Le}, {"__gt__", BinaryOp::Gt}, {"__ge__", BinaryOp::Ge},
      {"__and__", BinaryOp::LogicalAnd}, {"__or__", BinaryOp::LogicalOr},
      {"__xor__", BinaryOp::LogicalXor}};
  for (const auto& [name, op] : comparisons) {
    BinaryOp o = op;
    cls.def(name, [o](const Tensor& a, py::handle b) { return apply_binary(o, a, b, false); });
  }
  cls.def("__neg__", [](const Tensor& a) { return neg(a); })
      .def("__invert__", [](const Tensor& a) { return logical_not(a); })
      .def("__matmul__", [](const Tensor& a, const Tensor& b) { return matmul(a, b); })
      .def("__rmatmul__", [](const Tensor& a, const Tensor& b) { return matmul(b, a); })
      .def("__hash__", [](const Tensor& a) { return reinterpret_cast<intptr_t>(a.impl().get()); })
      .def("matmul", [](const Tensor& a, const Tensor& b) { return matmul(a, b); })
      .def("logical_not", [](const Tensor& a) { return logical_not(a); })
      .def("clamp", [](const Tensor& a, py::handle lo, py::handle hi) {
             return clamp(a, optional_scalar_arg(lo, "clamp min"),
                          optional_scalar_arg(hi, "clamp max"));
           }, py::arg("min") = py::none(), py::arg("max") = py::none())
      .def("masked_fill", [](const Tensor& a, const Tensor& mask, py::handle v) {
             return masked_fill(a, mask, scalar_arg(v, "masked_fill"));
           }, py::arg("mask"), py::arg("value"));

  // reductions
  cls.def("sum", [](const Tensor& a, py::handle dim, bool keepdim) {
            return sum(a, to_dims(dim), keepdim);
          }, py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("mean", [](const Tensor& a, py::handle dim, bool keepdim) {
             return mean(a, to_dims(dim), keepdim);
           }, py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("max", [](const Tensor& a, py::handle dim, bool keepdim) {
             return max(a, to_dims(dim), keepdim);
           }, py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("min", [](const Tensor& a, py::handle dim, bool keepdim) {
             return min(a, to_dims(dim), keepdim);
           }, py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("var", [](const Tensor& a, py::handle dim, int64_t correction, bool keepdim) {
             return var(a, to_dims(dim), correction, keepdim);
           }, py::arg("dim") = py::none(), py::arg("correction") = 1, py::arg("keepdim") = false)
      .def("argmax", [](const Tensor& a, std::optional<int> dim, bool keepdim) {
             return argmax(a, dim, keepdim);
           }, py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("argmin", [](const Tensor& a, std::optional<int> dim, bool keepdim) {
             return argmin(a, dim, keepdim);
           }, py::arg("dim") = py::none(), py::arg("keepdim") = false)
      .def("logsumexp", [](const Tensor& a, int dim, bool keepdim) {
             return logsumexp(a, dim, keepdim);
           }, py::arg("dim"), py::arg("keepdim") = false)
      .def("softmax", [](const Tensor& a, int dim) { return softmax(a, dim); }, py::arg("dim"))
      .def("log_softmax", [](const Tensor& a, int dim) { return log_softmax(a, dim); },
           py::arg("dim"));

  // shapes
  cls.def("reshape", [](const Tensor& a, const py::args& s) { return reshape(a, to_shape(s)); })
      .def("view", [](const Tensor& a, const py::args& s) { return view(a, to_shape(s)); })
      .def("permute", [](const Tensor& a, const py::args& dims) {
             std::vector<int> d;
             for (int64_t v : to_shape(dims)) d.push_back(static_cast<int>(v));
             return permute(a, d);
           })
      .def("transpose", [](const Tensor& a, int d0, int d1) { return transpose(a, d0, d1); },
           py::arg("dim0"), py::arg("dim1"))
      .def_property_readonly("T", [](const Tensor& a) {
             std::vector<int> d(a.ndim());
             for (int i = 0; i < a.ndim(); ++i) d[i] = a.ndim() - 1 - i;
             return permute(a, d);
           })
      .def("unsqueeze", [](const Tensor& a, int dim) { return unsqueeze(a, dim); }, py::arg("dim"))
      .def("squeeze", [](const Tensor& a, std::optional<int> dim) { return squeeze(a, dim); },
           py::arg("dim") = py::none())
      .def("expand", [](const Tensor& a, const py::args& s) { return expand(a, to_shape(s)); })
      .def("broadcast_to", [](const Tensor& a, py::handle s) { return broadcast_to(a, to_shape(s)); })
      .def("flatten", [](const Tensor& a, int s, int e) { return flatten(a, s, e); },
           py::arg("start_dim") = 0, py::arg("end_dim") = -1)
      .def("flip", [](const Tensor& a, py::handle dims) { return flip(a, to_dims(dims)); })
      .def("split", [](const Tensor& a, py::handle size, int dim) {
             if (py::isinstance<py::int_>(size)) {
               return split(a, split_sizes(a.shape(), py::cast<int64_t>(size), dim), dim);
             }
             return split(a, to_shape(size), dim);
           }, py::arg("split_size_or_sections"), py::arg("dim") = 0)
      .def("chunk", [](const Tensor& a, int64_t chunks, int dim) { return chunk(a, chunks, dim); },
           py::arg("chunks"), py::arg("dim") = 0)
      .def("__getitem__", [](const Tensor& a, py::handle key) { return getitem(a, to_index(key)); })
      .def("__setitem__", [](const Tensor& a, py::handle key, py::handle value) {
             NEEDLE_CHECK(!(grad_enabled() && a.requires_grad()), RuntimeError,
                          "in-place assignment to a tensor that requires grad is not supported "
                          "outside no_grad()");
             std::vector<Index> index = to_index(key);
             if (std::optional<Scalar> s = to_scalar(value)) {
               a.data().setitem(index, *s);
             } else {
               a.data().setitem(index, as_tensor(value, a).data());
             }
           });
}

}  // namespace

void init_autograd(py::module_& m) {
  TensorClass cls(m, "Tensor", R"doc(
An autograd-aware tensor: an NDArray plus the operation that produced it. Create with
ndl.tensor(data, dtype=None, device=None, requires_grad=False) or ndl.Tensor(ndarray).)doc");
  cls.def(py::init([](py::handle data, bool requires_grad) {
            NDArray a = py::isinstance<NDArray>(data) ? py::cast<NDArray>(data) : to_ndarray(data);
            return Tensor(a, requires_grad);
          }),
          py::arg("data"), py::arg("requires_grad") = false)
      .def_property_readonly("shape", [](const Tensor& t) {
             py::tuple r(t.ndim());
             for (int i = 0; i < t.ndim(); ++i) r[i] = t.shape()[i];
             return r;
           })
      .def_property_readonly("dtype", self_ref(&Tensor::dtype))
      .def_property_readonly("device", self_ref(&Tensor::device))
      .def_property_readonly("ndim", self_ref(&Tensor::ndim))
      .def_property_readonly("is_leaf", self_ref(&Tensor::is_leaf))
      .def_property_readonly("grad_fn", [](const Tensor& t) -> py::object {
             if (!t.op()) return py::none();
             return py::str(t.op()->name());
           })
      .def_property("requires_grad", self_ref(&Tensor::requires_grad),
                    [](const Tensor& t, bool v) { t.requires_grad_(v); })
      .def_property("grad", [](const Tensor& t) -> py::object {
             Tensor g = t.grad();
             return g.defined() ? py::cast(g) : py::none();
           },
           [](const Tensor& t, py::handle g) {
             t.set_grad(g.is_none() ? Tensor() : as_tensor(g, t));
           })
      .def_property("data", [](const Tensor& t) { return t.detach(); },
                    [](const Tensor& t, py::handle v) {
                      NDArray a = py::isinstance<Tensor>(v) ? py::cast<Tensor>(v).data()
                                                              : as_tensor(v, t).data();
                      NEEDLE_CHECK(a.shape() == t.shape(), ValueError, "data of shape ",
                                   shape_str(a.shape()), " assigned to a tensor of shape ",
                                   shape_str(t.shape()));
                      t.set_data(a);
                    })
      .def_property_readonly("array", [](const Tensor& t) { return t.data(); },
                             "The underlying NDArray (shares memory).")
      .def("requires_grad_", [](const Tensor& t, bool v) { t.requires_grad_(v); return t; },
           py::arg("requires_grad") = true)
      .def("detach", self_ref(&Tensor::detach))
      .def("backward", [](const Tensor& t, py::handle gradient, bool retain_graph, bool create_graph) {
             Tensor g = gradient.is_none() ? Tensor() : as_tensor(gradient, t);
             py::gil_scoped_release release;
             t.backward(g, retain_graph, create_graph);
           }, py::arg("gradient") = py::none(), py::arg("retain_graph") = false,
           py::arg("create_graph") = false)
      .def("size", [](const Tensor& t, py::handle dim) -> py::object {
             if (dim.is_none()) {
               py::tuple r(t.ndim());
               for (int i = 0; i < t.ndim(); ++i) r[i] = t.shape()[i];
               return r;
             }
             return py::int_(t.size(py::cast<int>(dim)));
           }, py::arg("dim") = py::none())
      .def("numel", self_ref(&Tensor::numel))
      .def("dim", self_ref(&Tensor::ndim))
      .def("__len__", [](const Tensor& t) {
             NEEDLE_CHECK(t.ndim() > 0, TypeError, "len() of a 0-d tensor");
             return t.shape()[0];
           })
      .def("numpy", [](const Tensor& t) {
             NEEDLE_CHECK(!t.requires_grad(), RuntimeError,
                          "can't call numpy() on a tensor that requires grad: use "
                          "tensor.detach().numpy()");
             return to_numpy(t.data());
           })
      .def("__array__", [](const Tensor& t, py::handle dtype, py::handle) {
             py::array a = to_numpy(t.data());
             return dtype.is_none() ? a : py::array(a.attr("astype")(dtype));
           }, py::arg("dtype") = py::none(), py::arg("copy") = py::none())
      .def("item", [](const Tensor& t) { return item_to_python(t.data()); })
      .def("tolist", [](const Tensor& t) { return to_numpy(t.data()).attr("tolist")(); })
      .def("__float__", [](const Tensor& t) { return py::float_(item_to_python(t.data())); })
      .def("__int__", [](const Tensor& t) { return py::int_(item_to_python(t.data())); })
      .def("__bool__", [](const Tensor& t) {
             NEEDLE_CHECK(t.numel() == 1, ValueError, "the truth value of a tensor with ",
                          t.numel(), " elements is ambiguous");
             return t.data().item() != 0;
           })
      .def("__repr__", &tensor_repr)
      .def("cpu", [](const Tensor& t) { return to_device(t, cpu()); })
      .def("cuda", [](const Tensor& t) { return to_device(t, Device(DeviceType::CUDA, 0)); })
      .def("float", [](const Tensor& t) { return astype(t, DType::Float32); })
      .def("double", [](const Tensor& t) { return astype(t, DType::Float64); })
      .def("long", [](const Tensor& t) { return astype(t, DType::Int64); })
      .def("bfloat16", [](const Tensor& t) { return astype(t, DType::BFloat16); })
      .def("contiguous", [](const Tensor& t) {
             return t.data().is_compact() ? t : reshape(t, t.shape());
           })
      .def("is_contiguous", [](const Tensor& t) { return t.data().is_compact(); })
      .def("clone", [](const Tensor& t) { return mul(t, Scalar(1)); })
      .def("zero_", [](const Tensor& t) { t.data().fill(0); return t; })
      .def("fill_", [](const Tensor& t, py::handle v) {
             t.data().fill(scalar_arg(v, "fill_"));
             return t;
           });
  cls.def(
      "to",
      [](const Tensor& t, py::handle target, py::handle dtype, bool non_blocking) {
        std::optional<Device> device;
        std::optional<DType> dt = to_optional_dtype(dtype);
        parse_to_target(target, device, dt);
        // The dtype is converted on the source device, so a non-blocking copy to the CPU is
        // queued last and nothing on the CPU has to wait for it.
        Tensor r = dt ? astype(t, *dt) : t;
        return device ? to_device(r, *device, non_blocking) : r;
      },
      py::arg("device") = py::none(), py::arg("dtype") = py::none(),
      py::arg("non_blocking") = false,
      "A copy on another device and/or with another dtype (self when nothing changes). "
      "non_blocking=True queues a GPU-to-CPU copy into page-locked memory without waiting: the "
      "result waits for it on first use, and then only for the work queued before it.");
  cls.def(
      "is_pinned", [](const Tensor& t) { return t.data().defined() && t.data().buffer()->pinned(); },
      "True for the page-locked host memory of a non-blocking copy from a GPU.");
  bind_tensor_ops(cls);

  m.def("is_grad_enabled", &grad_enabled);
  m.def("set_grad_enabled", &set_grad_enabled, py::arg("mode"));

  // Autocast regions (python/needle/amp.py holds the context manager).
  auto autocast_device = [](const std::string& type) {
    NEEDLE_CHECK(type == "cpu" || type == "cuda", ValueError,
                 "autocast: expected device_type 'cpu' or 'cuda', got '", type, "'");
    return type == "cpu" ? DeviceType::CPU : DeviceType::CUDA;
  };
  m.def("get_autocast_state", [=](const std::string& device_type) {
        AutocastState s = autocast_state(autocast_device(device_type));
        return py::make_tuple(s.enabled, s.dtype);
      }, py::arg("device_type"), "(enabled, dtype) of the calling thread's region for a device type.");
  m.def("set_autocast_state", [=](const std::string& device_type, bool enabled, py::handle dtype) {
        set_autocast_state(autocast_device(device_type), AutocastState{enabled, to_dtype(dtype)});
      }, py::arg("device_type"), py::arg("enabled"), py::arg("dtype"));

  // Differentiable module-level functions on Tensors; python/needle/__init__.py exposes them as
  // ndl.matmul, ndl.cat, ... (the NDArray versions of the same names live in _C itself).
  py::module_ A = m.def_submodule("autograd", "Differentiable functions on Tensors.");
  A.def("matmul", [](const Tensor& a, const Tensor& b) { return matmul(a, b); });
  A.def("cat", [](const std::vector<Tensor>& ts, int dim) { return concatenate(ts, dim); },
        py::arg("tensors"), py::arg("dim") = 0);
  A.def("stack", [](const std::vector<Tensor>& ts, int dim) { return stack(ts, dim); },
        py::arg("tensors"), py::arg("dim") = 0);
  A.def(
      "where",
      [](const Tensor& c, py::handle a, py::handle b) {
        // A number is a weak scalar (where(c, int_tensor, 0.5) is float32, as in torch); of two
        // numbers the first becomes a one-element tensor. As the NDArray where_function.
        std::optional<Scalar> sa = to_scalar(a), sb = to_scalar(b);
        if (sa && sb) {
          DType dt = promote_with_scalar(default_dtype(*sa), *sb);
          return where(c, Tensor(NDArray::full({}, *sa, dt, c.device())), *sb);
        }
        Tensor like = py::isinstance<Tensor>(a) ? py::cast<Tensor>(a) : c;
        if (sa) return where(logical_not(c), as_tensor(b, like), *sa);
        if (sb) return where(c, as_tensor(a, like), *sb);
        Tensor x = as_tensor(a, like), y = as_tensor(b, like);
        if (!py::isinstance<Tensor>(a) && py::isinstance<Tensor>(b)) x = astype(x, y.dtype());
        if (!py::isinstance<Tensor>(b) && py::isinstance<Tensor>(a)) y = astype(y, x.dtype());
        return where(c, x, y);
      },
      py::arg("condition"), py::arg("input"), py::arg("other"));

  py::module_ F = m.def_submodule("functional", "Differentiable neural-network functions.");
  F.def("linear", [](const Tensor& x, const Tensor& w, std::optional<Tensor> b) {
         return linear(x, w, b.value_or(Tensor()));
       }, py::arg("input"), py::arg("weight"), py::arg("bias") = py::none());
  F.def("embedding", [](const Tensor& ids, const Tensor& w) { return embedding(w, ids); },
        py::arg("input"), py::arg("weight"));
  F.def("cross_entropy", [](const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                            const std::string& reduction) {
         return cross_entropy(logits, targets, ignore_index,
                              parse_reduction("cross_entropy", reduction));
       }, py::arg("input"), py::arg("target"), py::arg("ignore_index") = -100,
       py::arg("reduction") = "mean");
  F.def("linear_cross_entropy", [](const Tensor& x, const Tensor& weight, const Tensor& targets,
                                   int64_t ignore_index, const std::string& reduction) {
         return linear_cross_entropy(x, weight, targets, ignore_index,
                                     parse_reduction("linear_cross_entropy", reduction));
       }, py::arg("input"), py::arg("weight"), py::arg("target"), py::arg("ignore_index") = -100,
       py::arg("reduction") = "mean",
       "cross_entropy(linear(input, weight), target) in one op, without a bias: the forward pass "
       "writes the logits' gradient over the logits, so the backward pass is two GEMMs.");
  F.def("layer_norm", [](const Tensor& x, py::handle shape, std::optional<Tensor> w,
                         std::optional<Tensor> b, double eps) {
         Shape ns = to_shape(shape);
         NEEDLE_CHECK(ns.size() == 1 && x.ndim() >= 1 && ns[0] == x.shape().back(), ValueError,
                      "layer_norm: normalized_shape must be the input's last dim (input of shape ",
                      shape_str(x.shape()), "), got ", shape_str(ns));
         return layer_norm(x, w.value_or(Tensor()), b.value_or(Tensor()), eps);
       }, py::arg("input"), py::arg("normalized_shape"), py::arg("weight") = py::none(),
       py::arg("bias") = py::none(), py::arg("eps") = 1e-5);
  F.def("rotary_embedding", &rotary_embedding, py::arg("input"), py::arg("cos"), py::arg("sin"),
        "input (..., T, D) with its first R dims rotated: input * cos + rotate_half(input) * sin "
        "for cos, sin of shape (T, R), R even, rotate_half(x) = [-x[R/2:R], x[:R/2]] (GPT-NeoX, "
        "Llama); the other dims pass through. One fused kernel each way; the result is compact.");
  F.def("gelu", [](const Tensor& x, const std::string& approximate) {
         NEEDLE_CHECK(approximate == "none" || approximate == "tanh", ValueError,
                      "gelu: approximate must be 'none' or 'tanh', got '", approximate, "'");
         return gelu(x, approximate == "tanh");
       }, py::arg("input"), py::arg("approximate") = "none");
  F.def("dropout", [](const Tensor& x, double p, bool training) { return dropout(x, p, training); },
        py::arg("input"), py::arg("p") = 0.5, py::arg("training") = true);
  F.def("softmax", [](const Tensor& x, int dim) { return softmax(x, dim); }, py::arg("input"),
        py::arg("dim"));
  F.def("log_softmax", [](const Tensor& x, int dim) { return log_softmax(x, dim); },
        py::arg("input"), py::arg("dim"));
  // torch.nn.functional.pad order: (last_before, last_after, second_last_before, ...).
  F.def("pad", [](const Tensor& x, const std::vector<int64_t>& pads, double value) {
         NEEDLE_CHECK(pads.size() % 2 == 0 && static_cast<int>(pads.size()) <= 2 * x.ndim(),
                      ValueError, "pad: expected an even number of sizes, at most ", 2 * x.ndim(),
                      ", got ", pads.size());
         std::vector<int64_t> leading_first(2 * x.ndim(), 0);
         for (size_t i = 0; i < pads.size() / 2; ++i) {
           size_t dim = x.ndim() - 1 - i;
           leading_first[2 * dim] = pads[2 * i];
           leading_first[2 * dim + 1] = pads[2 * i + 1];
         }
         return pad(x, leading_first, value);
       }, py::arg("input"), py::arg("pad"), py::arg("value") = 0.0);
}

}  // namespace needle::python
