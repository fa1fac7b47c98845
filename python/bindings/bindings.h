// Shared declarations of the needle._C extension: one init_xxx(m) per area (module.cpp calls them
// in order), and the Python <-> C++ conversions every area uses, so that `dtype=`, `device=`,
// shapes, dims and NumPy inputs are accepted the same way by every function.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <utility>
#include <vector>

#include "ndarray/ndarray.h"

namespace needle::python {

namespace py = pybind11;

// --- conversions
// ------------------------------------------------------------------------------------ A dtype from
// a needle dtype, its name ("float32"), a NumPy dtype or scalar type (np.float32).
DType to_dtype(py::handle obj);
std::optional<DType> to_optional_dtype(py::handle obj);  // None -> nullopt
// .to()'s first argument: a dtype, a device, a string naming either, or an NDArray (both).
void parse_to_target(py::handle target, std::optional<Device>& device, std::optional<DType>& dtype);
// A device from a needle device or a string ("cpu", "cuda", "cuda:1"); None -> the CPU.
Device to_device(py::handle obj);
std::optional<Device> to_optional_device(py::handle obj);  // None -> nullopt
// A shape given as varargs (zeros(2, 3)) or as one sequence (zeros((2, 3)), zeros([2, 3])).
Shape to_shape(const py::args& args);
Shape to_shape(py::handle obj);  // an int or a sequence of ints
// Reduction dims: None -> {} (all dims), an int, or a tuple/list of ints.
std::vector<int> to_dims(py::handle obj);
// A Python bool/int/float or NumPy scalar as a weak Scalar (an int in int64 kept exactly, see
// Scalar::exact_int); nullopt for anything else.
std::optional<Scalar> to_scalar(py::handle obj);
// A function's number argument: what to_scalar takes, or a one-element NDArray, Tensor or NumPy
// array (its item, as torch takes a 0-d tensor). TypeError naming `what` for anything else,
// ValueError for an array of another size.
Scalar scalar_arg(py::handle obj, const char* what);
std::optional<Scalar> optional_scalar_arg(py::handle obj, const char* what);  // None -> nullopt
// The value of a Python int or NumPy integer (not a bool) that fits in int64, else nullopt.
std::optional<int64_t> to_int64(py::handle obj);

// An NDArray from an NDArray (converted to dtype/device when given), a NumPy array or anything
// NumPy accepts (nested lists, scalars, buffers). Python float lists default to float32, as in
// torch.tensor; NumPy arrays keep their dtype. Copies the data.
NDArray to_ndarray(py::handle obj, std::optional<DType> dtype = {},
                   std::optional<Device> device = {});
// An operand of a binary op: an NDArray as is, a Python scalar as a weak Scalar, or anything
// array-like converted onto `like`'s device.
struct Operand {
  std::optional<NDArray> array;
  Scalar scalar;
  bool is_array() const { return array.has_value(); }
};
// nullopt when obj is none of these (the operator then returns NotImplemented).
std::optional<Operand> to_operand(py::handle obj, const NDArray& like);
// A NumPy view of a CPU array (zero-copy, keeps the buffer alive); a host copy for CUDA arrays;
// bfloat16 becomes float32 because NumPy has no bfloat16.
py::array to_numpy(const NDArray& a);
// A Python int/float/bool for a one-element array.
py::object item_to_python(const NDArray& a);
// An index expression (int, slice, None, Ellipsis or a tuple of these) as Index items.
std::vector<Index> to_index(py::handle key);

// Runs f with the GIL released: for long C++ work that touches no Python object.
template <typename F>
auto without_gil(F&& f) {
  py::gil_scoped_release release;
  return std::forward<F>(f)();
}

// A member function as a method whose self is a reference: `.def("numel", self_ref(&T::numel))`.
// pybind11 binds a bare member-function pointer with a pointer self, and a method bound without
// py::arg annotations lets None through as self: `NDArray.numel(None)` would call through a null
// pointer. A reference self refuses None with TypeError. Every member-function pointer bound
// without py::arg goes through this (tests/python/test_no_crash.py calls them all with None).
template <typename R, typename T, typename... A>
auto self_ref(R (T::*f)(A...) const) {
  return [f](const T& self, A... a) -> R { return (self.*f)(std::forward<A>(a)...); };
}
template <typename R, typename T, typename... A>
auto self_ref(R (T::*f)(A...)) {
  return [f](T& self, A... a) -> R { return (self.*f)(std::forward<A>(a)...); };
}

// --- areas
// -------------------------------------------------------------------------------------------
void init_errors(py::module_& m);
void init_ndarray(py::module_& m);
// The operators, elementwise/reduction methods and module-level functions of NDArray
// (ndarray_ops.cpp), attached to the class created by init_ndarray.
void bind_ndarray_ops(py::module_& m, py::class_<NDArray>& cls);
void bind_ndarray_creation(py::module_& m);
void init_device(py::module_& m);
void init_data(py::module_& m);       // data.cpp (the data engineer's)
void init_autograd(py::module_& m);   // autograd.cpp: Tensor, grad mode, functional
void init_nn(py::module_& m);         // nn.cpp: needle._C.nn and needle._C.optim
void init_attention(py::module_& m);  // attention.cpp: needle._C.attention (block-sparse)

}  // namespace needle::python
