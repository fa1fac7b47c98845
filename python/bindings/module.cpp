// The extension module needle._C: one init_xxx(m) per area, in dependency order (errors first so
// that every later registration can already raise translated exceptions).
#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "needle's C++ core: NDArray, Tensor, dtypes, devices, CUDA helpers, tokenizer.";
  needle::python::init_errors(m);
  needle::python::init_ndarray(m);
  needle::python::init_device(m);
  needle::python::init_data(m);
  // The Tensor wraps NDArray, so its bindings come after the NDArray class exists.
  needle::python::init_autograd(m);
  needle::python::init_nn(m);
  needle::python::init_attention(m);
}
