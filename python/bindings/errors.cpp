// C++ exceptions -> Python exceptions. needle's error types (src/ndarray/error.h) map onto the
// built-in ValueError / IndexError / TypeError / RuntimeError, and OutOfMemoryError onto
// needle.OutOfMemoryError, a RuntimeError subclass (as torch.cuda.OutOfMemoryError), so that
// `except RuntimeError` still catches it. The messages come from the C++ side unchanged.
#include <new>

#include "bindings.h"
#include "ndarray/error.h"

namespace needle::python {

void init_errors(py::module_& m) {
  // Created once and kept for the life of the process, like the built-in exception types.
  static PyObject* out_of_memory = PyErr_NewExceptionWithDoc(
      "needle.OutOfMemoryError", "A device ran out of memory (a subclass of RuntimeError).",
      PyExc_RuntimeError, nullptr);
  if (out_of_memory == nullptr) throw py::error_already_set();
  m.attr("OutOfMemoryError") = py::handle(out_of_memory);

  // needle::TypeError derives from std::invalid_argument, which pybind11 alone would report as
  // ValueError, so every needle type is matched here, most derived first.
  py::register_exception_translator([](std::exception_ptr p) {
    if (!p) return;
    try {
      std::rethrow_exception(p);
    } catch (const needle::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const needle::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const needle::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what());
    } catch (const needle::OutOfMemoryError& e) {
      PyErr_SetString(out_of_memory, e.what());
    } catch (const needle::RuntimeError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
}

}  // namespace needle::python
