// needle.NDArray, needle.dtype and needle.device: the class itself (construction, metadata, views,
// copies, indexing, NumPy interop, pickling) and the Python -> C++ conversions declared in
// bindings.h. Operators, elementwise ops and module-level functions are in ndarray_ops.cpp.
#include <string>

#include "bindings.h"
#include "ndarray/error.h"

namespace needle::python {

namespace {

py::module_ numpy() { return py::module_::import("numpy"); }

std::string type_name(py::handle obj) { return py::str(py::type::handle_of(obj).attr("__name__")); }

int64_t to_int(py::handle obj, const char* what) {
  // bool is an int subclass in Python, but True as a size or index is almost always a mistake.
  if (!py::isinstance<py::bool_>(obj) && PyIndex_Check(obj.ptr())) {
    Py_ssize_t v = PyNumber_AsSsize_t(obj.ptr(), PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    return static_cast<int64_t>(v);
  }
  throw TypeError(detail::concat(what, ": expected an int, got ", type_name(obj)));
}

std::optional<int64_t> to_optional_int(py::handle obj, const char* what) {
  if (obj.is_none()) return std::nullopt;
  return to_int(obj, what);
}

py::dtype numpy_dtype(DType dt) {
  switch (dt) {
    case DType::Bool:
      return py::dtype::of<bool>();
    case DType::Int32:
      return py::dtype::of<int32_t>();
    case DType::Int64:
      return py::dtype::of<int64_t>();
    case DType::Float32:
      return py::dtype::of<float>();
    case DType::Float64:
      return py::dtype::of<double>();
    case DType::BFloat16:
      break;
  }
  throw TypeError("NumPy has no bfloat16 dtype: convert with .astype(ndl.float32) first");
}

// The needle dtype a NumPy array of dtype `dt` is stored as. Narrow integers widen losslessly
// (uint8 images, int16 tokens); float16 has no needle counterpart (see the message).
DType dtype_for_numpy(const py::dtype& dt) {
  const char kind = dt.kind();
  const auto size = dt.itemsize();
  if (kind == 'b') return DType::Bool;
  if (kind == 'i') return size <= 4 ? DType::Int32 : DType::Int64;
  if (kind == 'u' && size <= 2) return DType::Int32;
  if (kind == 'u' && size == 4) return DType::Int64;
  if (kind == 'f' && size == 4) return DType::Float32;
  if (kind == 'f' && size == 8) return DType::Float64;
  // ml_dtypes.bfloat16 is a NumPy "void-like" custom dtype named bfloat16.
  if (size == 2 && std::string(py::str(dt.attr("name"))) == "bfloat16") return DType::BFloat16;
  const std::string name = py::str(dt.attr("name"));
  if (kind == 'f' && size == 2)
    throw TypeError(
        "float16 arrays are not supported: needle has bfloat16, float32 and float64; pass "
        "dtype=ndl.float32 or dtype=ndl.bfloat16, or convert with .astype(np.float32)");
  throw TypeError("cannot make an NDArray from NumPy dtype " + name +
                  ": expected bool, int8-int64, uint8-uint32, float32 or float64 data");
}

Strides byte_strides(const NDArray& a) {
  Strides s(a.strides());
  for (auto& v : s) v *= static_cast<int64_t>(itemsize(a.dtype()));
  return s;
}

// --- buffer protocol
// ------------------------------------------------------------------------------ pybind11's own
// bf_getbuffer lets a C++ exception escape through a C callback (terminating the interpreter) and
// ignores the consumer's contiguity flags, so NDArray installs these slots. CUDA and bfloat16
// arrays refuse with BufferError; NumPy then falls back to __array__ (a copy).

struct BufferView {
  NDArray array;  // keeps the memory alive independently of the Python object
  std::vector<Py_ssize_t> shape, strides;
};

const char* buffer_format(DType dt) {
  switch (dt) {
    case DType::Bool:
      return "?";
    case DType::Int32:
      return "i";
    case DType::Int64:
      return "q";
    case DType::Float32:
      return "f";
    case DType::Float64:
      return "d";
    case DType::BFloat16:
      break;
  }
  return nullptr;
}

bool is_fortran_contiguous(const NDArray& a) {
  int64_t expect = 1;
  for (int i = 0; i < a.ndim(); ++i) {
    if (a.shape()[i] == 0) return true;
    if (a.shape()[i] != 1 && a.strides()[i] != expect) return false;
    expect *= a.shape()[i];
  }
  return true;
}

extern "C" int ndarray_getbuffer(PyObject* obj, Py_buffer* view, int flags) {
  view->obj = nullptr;
  try {
    const NDArray& a = py::cast<const NDArray&>(py::handle(obj));
    NEEDLE_CHECK(a.device().is_cpu(), ValueError,
                 "the buffer protocol needs a CPU array, got one on ", a.device().str(),
                 "; use .numpy() or .cpu()");
    const char* format = buffer_format(a.dtype());
    NEEDLE_CHECK(format != nullptr, ValueError,
                 "bfloat16 has no buffer format; .numpy() returns a float32 copy");
    const bool c_contig = a.is_compact();
    const bool wants_strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES;
    NEEDLE_CHECK(c_contig || (wants_strides && (flags & PyBUF_C_CONTIGUOUS) != PyBUF_C_CONTIGUOUS),
                 ValueError,
                 "a C-contiguous buffer was requested but the array is a strided view; "
                 "call .contiguous() first");
    NEEDLE_CHECK((flags & PyBUF_F_CONTIGUOUS) != PyBUF_F_CONTIGUOUS || is_fortran_contiguous(a),
                 ValueError, "a Fortran-contiguous buffer was requested but the array is not");
    NEEDLE_CHECK((flags & PyBUF_ANY_CONTIGUOUS) != PyBUF_ANY_CONTIGUOUS || c_contig ||
                     is_fortran_contiguous(a),
                 ValueError, "a contiguous buffer was requested but the array is a strided view");
    // A broadcast view (stride 0 over a dim of size > 1) aliases elements: read-only, as in NumPy.
    bool aliased = false;
    for (int i = 0; i < a.ndim(); ++i) aliased |= a.strides()[i] == 0 && a.shape()[i] > 1;
    NEEDLE_CHECK(!aliased || (flags & PyBUF_WRITABLE) != PyBUF_WRITABLE, ValueError,
                 "a writable buffer was requested for a broadcast view");

    auto* info = new BufferView{a, {}, {}};
    for (int i = 0; i < a.ndim(); ++i) {
      info->shape.push_back(static_cast<Py_ssize_t>(a.shape()[i]));
      info->strides.push_back(static_cast<Py_ssize_t>(a.strides()[i] * itemsize(a.dtype())));
    }
    view->buf = a.data_ptr();
    view->len = static_cast<Py_ssize_t>(a.nbytes());
    view->itemsize = static_cast<Py_ssize_t>(itemsize(a.dtype()));
    view->readonly = aliased ? 1 : 0;
    view->ndim = a.ndim();
    view->format = (flags & PyBUF_FORMAT) == PyBUF_FORMAT ? const_cast<char*>(format) : nullptr;
    view->shape = (flags & PyBUF_ND) == PyBUF_ND ? info->shape.data() : nullptr;
    view->strides = wants_strides ? info->strides.data() : nullptr;
    view->suboffsets = nullptr;
    view->internal = info;
    view->obj = obj;
    Py_INCREF(obj);
    return 0;
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_BufferError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_BufferError, "NDArray: could not export a buffer");
  }
  return -1;
}

extern "C" void ndarray_releasebuffer(PyObject*, Py_buffer* view) {
  delete static_cast<BufferView*>(view->internal);
}

}  // namespace

// --- indexing
// -------------------------------------------------------------------------------------

std::vector<Index> to_index(py::handle key) {
  std::vector<Index> out;
  auto add = [&](py::handle k) {
    if (k.is_none()) {
      out.push_back(Index::new_axis());
    } else if (k.ptr() == Py_Ellipsis) {
      out.push_back(Index::ellipsis());
    } else if (PySlice_Check(k.ptr())) {
      out.push_back(Index::slice(to_optional_int(k.attr("start"), "slice start"),
                                 to_optional_int(k.attr("stop"), "slice stop"),
                                 to_optional_int(k.attr("step"), "slice step")));
    } else if (!py::isinstance<py::bool_>(k) && PyIndex_Check(k.ptr())) {
      out.push_back(Index::at(to_int(k, "index")));
    } else {
      throw TypeError("invalid index of type " + type_name(k) +
                      ": expected an int, a slice, None, Ellipsis or a tuple of these");
    }
  };
  if (PyTuple_Check(key.ptr())) {
    for (py::handle k : py::reinterpret_borrow<py::tuple>(key)) add(k);
  } else {
    add(key);
  }
  return out;
}

namespace {

py::tuple to_tuple(const std::vector<int64_t>& v) {
  py::tuple t(v.size());
  for (size_t i = 0; i < v.size(); ++i) t[i] = py::int_(v[i]);
  return t;
}

void bind_dtype_and_device(py::module_& m) {
  py::class_<DType>(m, "dtype", "An element type: ndl.float32, ndl.float64, ndl.bfloat16, ...")
      .def(py::init([](py::handle obj) { return to_dtype(obj); }), py::arg("dtype"))
      .def_property_readonly("name", [](DType dt) { return std::string(dtype_name(dt)); })
      .def_property_readonly("itemsize", [](DType dt) { return itemsize(dt); })
      .def_property_readonly("is_floating_point", [](DType dt) { return is_floating(dt); })
      .def("__repr__", [](DType dt) { return std::string("needle.") + dtype_name(dt); })
      .def("__str__", [](DType dt) { return std::string("needle.") + dtype_name(dt); })
      .def(
          "__eq__",
          [](DType a, py::handle b) { return py::isinstance<DType>(b) && py::cast<DType>(b) == a; })
      .def("__hash__", [](DType dt) { return static_cast<int>(dt); })
      .def(py::pickle([](DType dt) { return std::string(dtype_name(dt)); },
                      [](const std::string& name) { return dtype_from_name(name); }));
  for (DType dt :
       {DType::Bool, DType::Int32, DType::Int64, DType::BFloat16, DType::Float32, DType::Float64})
    m.attr(dtype_name(dt)) = dt;
  m.def("promote_types", &promote_types, py::arg("type1"), py::arg("type2"),
        "The dtype of a binary op between arrays of these dtypes.");

  py::class_<Device>(m, "device", "A device: ndl.device('cpu'), ndl.device('cuda:0')")
      .def(py::init<const std::string&>(), py::arg("spec"))
      .def(py::init([](const std::string& type, int index) {
             Device d(type);
             d.index = index;
             return d;
           }),
           py::arg("type"), py::arg("index"))
      .def_property_readonly("type", [](const Device& d) { return d.is_cpu() ? "cpu" : "cuda"; })
      .def_property_readonly("index", [](const Device& d) { return d.index; })
      .def("__str__", self_ref(&Device::str))
      .def("__repr__",
           [](const Device& d) {
             return d.is_cpu() ? std::string("device(type='cpu')")
                               : "device(type='cuda', index=" + std::to_string(d.index) + ")";
           })
      .def("__eq__",
           [](const Device& a, py::handle b) {
             if (py::isinstance<Device>(b)) return py::cast<Device>(b) == a;
             if (!py::isinstance<py::str>(b)) return false;
             try {
               return Device(std::string(py::str(b))) == a;
             } catch (const ValueError&) {
               return false;  // not a device name: unequal, as for any other object
             }
           })
      .def("__hash__", [](const Device& d) { return static_cast<int>(d.type) * 1024 + d.index; })
      .def(py::pickle([](const Device& d) { return d.str(); },
                      [](const std::string& s) { return Device(s); }));
  m.def("cpu", &cpu, "The CPU device.");
}

}  // namespace

// --- conversions (bindings.h)
// ---------------------------------------------------------------------

DType to_dtype(py::handle obj) {
  if (py::isinstance<DType>(obj)) return py::cast<DType>(obj);
  if (py::isinstance<py::str>(obj)) return dtype_from_name(py::str(obj));
  if (obj.is_none()) throw TypeError("expected a dtype, got None");
  py::object np_dtype;
  try {
    np_dtype = numpy().attr("dtype")(obj);
  } catch (py::error_already_set&) {
    throw TypeError("expected a dtype (ndl.float32, 'float32', np.float32), got " +
                    std::string(py::repr(obj)));
  }
  return dtype_for_numpy(np_dtype);
}

std::optional<DType> to_optional_dtype(py::handle obj) {
  if (obj.is_none()) return std::nullopt;
  return to_dtype(obj);
}

// Shared by .to(): a string may name either a dtype ("float64") or a device ("cuda:0").
void parse_to_target(py::handle target, std::optional<Device>& device,
                     std::optional<DType>& dtype) {
  if (target.is_none()) return;
  const std::optional<DType> given = dtype;  // dtype=
  auto set_dtype = [&](DType dt) {
    NEEDLE_CHECK(!given, TypeError, "to(): got a dtype twice, ", dtype_name(dt),
                 " as the first argument and ", dtype_name(*given), " as dtype=");
    dtype = dt;
  };
  if (py::isinstance<NDArray>(target)) {
    const NDArray& other = py::cast<const NDArray&>(target);
    device = other.device();
    set_dtype(other.dtype());
  } else if (py::isinstance<Device>(target)) {
    device = py::cast<Device>(target);
  } else if (py::isinstance<py::str>(target)) {
    const std::string s = py::str(target);
    std::optional<DType> named;
    try {
      named = dtype_from_name(s);
    } catch (const TypeError&) {
      device = Device(s);  // neither a dtype nor a device: ValueError naming both device forms
    }
    if (named) set_dtype(*named);
  } else {
    DType dt;
    try {
      dt = to_dtype(target);
    } catch (const TypeError& e) {
      throw TypeError(std::string("to(): expected a device ('cpu', 'cuda:0', ndl.device(...)) or "
                                  "a dtype: ") +
                      e.what());
    }
    set_dtype(dt);
  }
}

Device to_device(py::handle obj) {
  if (obj.is_none()) return cpu();
  if (py::isinstance<Device>(obj)) return py::cast<Device>(obj);
  if (py::isinstance<py::str>(obj)) return Device(std::string(py::str(obj)));
  throw TypeError("expected a device (ndl.device('cuda:0'), 'cpu', 'cuda'), got " +
                  std::string(py::repr(obj)));
}

std::optional<Device> to_optional_device(py::handle obj) {
  if (obj.is_none()) return std::nullopt;
  return to_device(obj);
}

Shape to_shape(py::handle obj) {
  if (PyIndex_Check(obj.ptr())) return {to_int(obj, "shape")};
  if (py::isinstance<py::str>(obj) || !py::isinstance<py::sequence>(obj))
    throw TypeError("expected a shape (an int or a sequence of ints), got " + type_name(obj));
  Shape shape;
  for (py::handle d : py::reinterpret_borrow<py::sequence>(obj))
    shape.push_back(to_int(d, "shape"));
  return shape;
}

Shape to_shape(const py::args& args) {
  if (args.size() == 1 && !PyIndex_Check(args[0].ptr())) return to_shape(py::handle(args[0]));
  Shape shape;
  for (py::handle d : args) shape.push_back(to_int(d, "shape"));
  return shape;
}

std::vector<int> to_dims(py::handle obj) {
  std::vector<int> dims;
  if (obj.is_none()) return dims;
  for (int64_t d : to_shape(obj)) dims.push_back(static_cast<int>(d));
  return dims;
}

std::optional<int64_t> to_int64(py::handle obj) {
  if (py::isinstance<py::bool_>(obj)) return std::nullopt;
  if (PyLong_Check(obj.ptr())) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
    if (PyErr_Occurred()) throw py::error_already_set();
    if (overflow) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (py::isinstance(obj, numpy().attr("integer"))) return to_int64(obj.attr("item")());
  return std::nullopt;
}

std::optional<Scalar> to_scalar(py::handle obj) {
  if (py::isinstance<py::bool_>(obj)) return Scalar(obj.ptr() == Py_True);
  if (std::optional<int64_t> v = to_int64(obj)) return Scalar(*v);
  if (PyLong_Check(obj.ptr())) {  // beyond int64: a float64 only
    Scalar s(PyLong_AsDouble(obj.ptr()));
    if (PyErr_Occurred()) throw py::error_already_set();
    s.kind = Scalar::Kind::Int;
    return s;
  }
  if (PyFloat_Check(obj.ptr())) return Scalar(PyFloat_AsDouble(obj.ptr()));
  if (py::isinstance(obj, numpy().attr("generic"))) {
    const std::string kind = py::str(obj.attr("dtype").attr("kind"));
    // item() gives a Python bool, int or float: an np.int64 stays exact.
    if (kind == "b" || kind == "i" || kind == "u" || kind == "f")
      return to_scalar(obj.attr("item")());
  }
  return std::nullopt;
}

Scalar scalar_arg(py::handle obj, const char* what) {
  std::optional<Scalar> s = to_scalar(obj);
  // A one-element array or tensor stands for its value, as in torch: t.fill_(x.max()).
  if (!s && (py::isinstance<NDArray>(obj) || py::hasattr(obj, "requires_grad") ||
             py::isinstance(obj, numpy().attr("ndarray")))) {
    const int64_t n =
        py::cast<int64_t>(py::hasattr(obj, "numel") ? obj.attr("numel")() : obj.attr("size"));
    NEEDLE_CHECK(n == 1, ValueError, what,
                 ": expected a number or a one-element array, got an array of ", n, " elements");
    s = to_scalar(obj.attr("item")());
  }
  NEEDLE_CHECK(s.has_value(), TypeError, what, ": expected a number, got ",
               std::string(py::str(py::type::handle_of(obj))));
  return *s;
}

std::optional<Scalar> optional_scalar_arg(py::handle obj, const char* what) {
  if (obj.is_none()) return std::nullopt;
  return scalar_arg(obj, what);
}

NDArray to_ndarray(py::handle obj, std::optional<DType> dtype, std::optional<Device> device) {
  if (py::isinstance<NDArray>(obj)) {
    NDArray a = py::cast<NDArray>(obj);
    return without_gil([&] {
      if (device) a = a.to(*device);
      if (dtype) a = a.astype(*dtype);
      return a;
    });
  }
  // NumPy arrays and buffers keep their dtype; Python numbers follow torch.tensor's defaults.
  const bool python_values = !py::isinstance<py::array>(obj) && !PyObject_CheckBuffer(obj.ptr());
  py::array arr = numpy().attr("asarray")(obj);
  const py::dtype np_dt = arr.dtype();
  DType stored;
  if (dtype && np_dt.kind() == 'f' && np_dt.itemsize() == 2) {
    stored = DType::Float32;  // float16 converts only when the caller names the target
  } else {
    stored = dtype_for_numpy(np_dt);
  }
  if (python_values && stored == DType::Float64 && !dtype) stored = DType::Float32;
  // Python numbers given an integer dtype must fit it, as torch.tensor checks: the cast would
  // wrap them or, from a float, be undefined.
  if (python_values && dtype && is_integral(*dtype) && arr.size() > 0 && stored != *dtype &&
      stored != DType::Bool) {
    scalar_arg(arr.attr("min")(), "tensor").check_fits(*dtype, "tensor");
    scalar_arg(arr.attr("max")(), "tensor").check_fits(*dtype, "tensor");
  }
  // astype rather than ascontiguousarray, which turns 0-d arrays into 1-d ones.
  py::object target =
      stored == DType::BFloat16 ? py::object(np_dt) : py::object(numpy_dtype(stored));
  py::array c = arr.attr("astype")(target, py::arg("order") = "C", py::arg("copy") = false);
  Shape shape(c.shape(), c.shape() + c.ndim());
  const void* data = c.data();
  return without_gil([&] {
    NDArray a = NDArray::from_host(data, shape, stored, device.value_or(cpu()));
    return dtype ? a.astype(*dtype) : a;
  });
}

std::optional<Operand> to_operand(py::handle obj, const NDArray& like) {
  if (py::isinstance<NDArray>(obj)) return Operand{py::cast<NDArray>(obj), Scalar()};
  if (auto s = to_scalar(obj)) return Operand{std::nullopt, *s};
  const bool array_like = py::isinstance<py::array>(obj) || py::isinstance<py::list>(obj) ||
                          py::isinstance<py::tuple>(obj) || PyObject_CheckBuffer(obj.ptr());
  if (!array_like || py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj))
    return std::nullopt;
  return Operand{to_ndarray(obj, std::nullopt, like.device()), Scalar()};
}

py::array to_numpy(const NDArray& a) {
  NDArray host = without_gil([&] {
    NDArray h = a.to(cpu());
    return h.dtype() == DType::BFloat16 ? h.astype(DType::Float32) : h;
  });
  Shape shape = host.shape();
  Strides strides = byte_strides(host);
  // The capsule holds the buffer, so the NumPy array stays valid after the NDArray is gone.
  auto* keep = new std::shared_ptr<Buffer>(host.buffer());
  py::capsule owner(keep, [](void* p) { delete static_cast<std::shared_ptr<Buffer>*>(p); });
  return py::array(numpy_dtype(host.dtype()), shape, strides, host.data_ptr(), owner);
}

py::object item_to_python(const NDArray& a) {
  NEEDLE_CHECK(a.numel() == 1, ValueError, "item(): expected an array with one element, got shape ",
               shape_str(a.shape()), " (", a.numel(), " elements)");
  if (a.dtype() == DType::Bool) return py::bool_(a.item() != 0);
  if (is_integral(a.dtype())) return py::int_(a.to_vector<int64_t>()[0]);
  return py::float_(a.item());
}

// --- the class
// ------------------------------------------------------------------------------------

void init_ndarray(py::module_& m) {
  bind_dtype_and_device(m);

  py::class_<NDArray> cls(m, "NDArray", py::buffer_protocol(), R"doc(
An n-dimensional array on a device: ndl.NDArray(data, device=None, dtype=None) copies `data`
(a NumPy array, nested lists, a number or another NDArray). CPU arrays export their memory
through the buffer protocol, so np.asarray(x) is a view of x, not a copy.)doc");
  auto* type = reinterpret_cast<PyTypeObject*>(cls.ptr());
  type->tp_as_buffer->bf_getbuffer = ndarray_getbuffer;
  type->tp_as_buffer->bf_releasebuffer = ndarray_releasebuffer;
  PyType_Modified(type);
  // Above NumPy's own priority, so np_array * x and np.float32(2) * x call x's reflected
  // operators (and give NDArrays) instead of NumPy converting x through the buffer protocol.
  cls.attr("__array_priority__") = 1000;

  cls.def(py::init([](py::handle data, py::handle device, py::handle dtype) {
            NDArray a = to_ndarray(data, to_optional_dtype(dtype), to_optional_device(device));
            // An NDArray argument may come back as itself; the constructor always copies.
            const bool same = py::isinstance<NDArray>(data) &&
                              py::cast<const NDArray&>(data).buffer() == a.buffer();
            return same ? without_gil([&] { return a.clone(); }) : a;
          }),
          py::arg("data"), py::arg("device") = py::none(), py::arg("dtype") = py::none());

  // --- metadata
  cls.def_property_readonly("shape", [](const NDArray& a) { return to_tuple(a.shape()); })
      .def_property_readonly("dtype", self_ref(&NDArray::dtype))
      .def_property_readonly("device", self_ref(&NDArray::device))
      .def_property_readonly("ndim", self_ref(&NDArray::ndim))
      .def_property_readonly(
          "strides", [](const NDArray& a) { return to_tuple(a.strides()); },
          "Strides in elements (NumPy's are in bytes).")
      .def_property_readonly("nbytes", self_ref(&NDArray::nbytes))
      .def_property_readonly("itemsize", [](const NDArray& a) { return itemsize(a.dtype()); })
      .def_property_readonly("is_cuda", [](const NDArray& a) { return a.device().is_cuda(); })
      .def(
          "size",
          [](const NDArray& a, py::handle dim) -> py::object {
            if (dim.is_none()) return to_tuple(a.shape());
            return py::int_(a.size(static_cast<int>(to_int(dim, "size"))));
          },
          py::arg("dim") = py::none())
      .def("numel", self_ref(&NDArray::numel))
      .def("dim", self_ref(&NDArray::ndim))
      .def("element_size", [](const NDArray& a) { return itemsize(a.dtype()); })
      .def("data_ptr", [](const NDArray& a) { return reinterpret_cast<uintptr_t>(a.data_ptr()); })
      .def("is_contiguous", self_ref(&NDArray::is_compact))
      .def("__len__",
           [](const NDArray& a) {
             if (a.ndim() == 0) throw TypeError("len() of a 0-d array");
             return a.shape()[0];
           })
      .def("__repr__", self_ref(&NDArray::repr))
      .def("__bool__",
           [](const NDArray& a) {
             NEEDLE_CHECK(a.numel() == 1, ValueError, "the truth value of an array with ",
                          a.numel(), " elements is ambiguous: use .any() or .all()");
             return a.item() != 0;
           })
      .def("__float__", [](const NDArray& a) { return py::float_(item_to_python(a)); })
      .def("__int__", [](const NDArray& a) { return py::int_(item_to_python(a)); })
      .def("item", &item_to_python)
      .def("tolist", [](const NDArray& a) { return to_numpy(a).attr("tolist")(); })
      .def("numpy", &to_numpy,
           "A NumPy array: a view sharing memory for CPU arrays, a host copy for CUDA ones; "
           "bfloat16 comes back as float32 (NumPy has no bfloat16).")
      .def(
          "__array__",
          [](const NDArray& a, py::handle dtype) {
            py::array out = to_numpy(a);
            return dtype.is_none() ? out : py::array(out.attr("astype")(dtype));
          },
          py::arg("dtype") = py::none());

  // --- views (share memory with the source)
  cls.def("reshape", [](const NDArray& a, const py::args& s) { return a.reshape(to_shape(s)); })
      .def("view", [](const NDArray& a, const py::args& s) { return a.view(to_shape(s)); })
      .def("permute",
           [](const NDArray& a, const py::args& d) {
             Shape dims = to_shape(d);
             return a.permute(std::vector<int>(dims.begin(), dims.end()));
           })
      .def("transpose", &NDArray::transpose, py::arg("dim0"), py::arg("dim1"))
      .def_property_readonly(
          "T",
          [](const NDArray& a) {
            std::vector<int> dims(a.ndim());
            for (int i = 0; i < a.ndim(); ++i) dims[i] = a.ndim() - 1 - i;
            return a.permute(dims);
          },
          "The array with its dims reversed (the transpose of a 2-D array).")
      .def("unsqueeze", &NDArray::unsqueeze, py::arg("dim"))
      .def(
          "squeeze",
          [](const NDArray& a, py::handle dim) {
            return dim.is_none() ? a.squeeze() : a.squeeze(static_cast<int>(to_int(dim, "dim")));
          },
          py::arg("dim") = py::none())
      .def("expand", [](const NDArray& a, const py::args& s) { return a.expand(to_shape(s)); })
      .def(
          "broadcast_to",
          [](const NDArray& a, py::handle s) { return a.broadcast_to(to_shape(s)); },
          py::arg("shape"))
      .def("flatten", &NDArray::flatten, py::arg("start_dim") = 0, py::arg("end_dim") = -1)
      .def(
          "as_strided",
          [](const NDArray& a, py::handle shape, py::handle strides, int64_t offset) {
            return a.as_strided(to_shape(shape), to_shape(strides), offset);
          },
          py::arg("size"), py::arg("stride"), py::arg("storage_offset") = 0);

  // --- copies
  cls.def("compact", [](const NDArray& a) { return without_gil([&] { return a.compact(); }); })
      .def("contiguous", [](const NDArray& a) { return without_gil([&] { return a.compact(); }); })
      .def("clone", [](const NDArray& a) { return without_gil([&] { return a.clone(); }); })
      .def(
          "to",
          [](const NDArray& a, py::handle target, py::handle dtype, bool non_blocking) {
            std::optional<Device> device;
            std::optional<DType> dt = to_optional_dtype(dtype);
            parse_to_target(target, device, dt);
            return without_gil([&] {
              NDArray r = dt ? a.astype(*dt) : a;  // on the source device (see Tensor.to)
              return device ? r.to(*device, non_blocking) : r;
            });
          },
          py::arg("device_or_dtype") = py::none(), py::arg("dtype") = py::none(),
          py::arg("non_blocking") = false)
      .def("is_pinned", [](const NDArray& a) { return a.defined() && a.buffer()->pinned(); })
      .def(
          "astype",
          [](const NDArray& a, py::handle dtype) {
            DType dt = to_dtype(dtype);
            return without_gil([&] { return a.astype(dt); });
          },
          py::arg("dtype"))
      .def("cpu", [](const NDArray& a) { return without_gil([&] { return a.to(cpu()); }); })
      .def(
          "cuda",
          [](const NDArray& a, int index) {
            return without_gil([&] { return a.to(Device(DeviceType::CUDA, index)); });
          },
          py::arg("device") = 0)
      .def("__copy__", [](const NDArray& a) { return a; })
      .def(
          "__deepcopy__", [](const NDArray& a, py::handle) { return a.clone(); }, py::arg("memo"))
      .def(py::pickle(
          [](const NDArray& a) {
            return py::make_tuple(py::array(to_numpy(a).attr("copy")()), a.dtype(), a.device());
          },
          [](const py::tuple& t) {
            return to_ndarray(t[0], py::cast<DType>(t[1]), py::cast<Device>(t[2]));
          }));
  for (auto [name, dt] : {std::pair{"float", DType::Float32},
                          {"double", DType::Float64},
                          {"bfloat16", DType::BFloat16},
                          {"int", DType::Int32},
                          {"long", DType::Int64},
                          {"bool", DType::Bool}}) {
    const DType target = dt;
    cls.def(name, [target](const NDArray& a) { return a.astype(target); });
  }

  // --- indexing and in-place writes
  cls.def("__getitem__", [](const NDArray& a, py::handle key) { return a.getitem(to_index(key)); })
      .def("__setitem__",
           [](const NDArray& a, py::handle key, py::handle value) {
             std::vector<Index> index = to_index(key);
             if (auto s = to_scalar(value)) return a.setitem(index, *s);
             NDArray v = to_ndarray(value, std::nullopt, a.device());
             without_gil([&] {
               a.setitem(index, v);
               return 0;
             });
           })
      .def(
          "fill_",
          [](const NDArray& a, py::handle value) {
            a.fill(scalar_arg(value, "fill_"));
            return a;
          },
          py::arg("value"))
      .def("zero_",
           [](const NDArray& a) {
             a.fill(0.0);
             return a;
           })
      .def(
          "copy_",
          [](const NDArray& a, py::handle src) {
            NDArray v = to_ndarray(src, std::nullopt, a.device());
            without_gil([&] {
              a.assign(v);
              return 0;
            });
            return a;
          },
          py::arg("src"), "Copies src (broadcast, converted to this dtype) into this array.");

  bind_ndarray_ops(m, cls);
  bind_ndarray_creation(m);
}

}  // namespace needle::python
