// needle.cuda (torch.cuda's names: is_available, device_count, memory statistics, synchronize)
// and ndl.memory_stats(device) for any device. In a build without CUDA, everything but
// is_available/device_count raises RuntimeError("this build has no CUDA ...").
#include "backend_cuda/cuda_backend.h"
#include "bindings.h"
#include "ndarray/error.h"

namespace needle::python {

namespace {

// device=None means cuda:0; an int names a CUDA device by index.
Device cuda_device(py::handle obj) {
  if (obj.is_none()) return Device(DeviceType::CUDA, 0);
  if (!py::isinstance<py::bool_>(obj) && PyIndex_Check(obj.ptr()))
    return Device(DeviceType::CUDA, py::cast<int>(obj));
  Device d = to_device(obj);
  NEEDLE_CHECK(d.is_cuda(), ValueError, "expected a CUDA device, got ", d.str());
  return d;
}

py::dict stats_dict(const MemoryStats& s) {
  py::dict d;
  d["allocated_bytes"] = s.allocated;
  d["peak_allocated_bytes"] = s.peak_allocated;
  d["reserved_bytes"] = s.reserved;
  d["num_device_allocs"] = s.num_device_allocs;
  d["num_allocs"] = s.num_allocs;
  return d;
}

MemoryStats cuda_stats(py::handle device) {
  return backend_for(cuda_device(device)).memory_stats();
}

}  // namespace

void init_device(py::module_& m) {
  m.def(
      "memory_stats",
      [](py::handle device) { return stats_dict(backend_for(to_device(device)).memory_stats()); },
      py::arg("device") = "cpu",
      "Allocator statistics of a device as a dict of byte counts and allocation counts.");

  py::module_ cuda = m.def_submodule("cuda", "CUDA devices and their memory (torch.cuda's names).");
  cuda.def("is_available", &cuda_is_available,
           "True when this build has the CUDA backend and a GPU is present.");
  cuda.def("device_count", &cuda_device_count);
  cuda.def(
      "memory_stats", [](py::handle d) { return stats_dict(cuda_stats(d)); },
      py::arg("device") = py::none());
  cuda.def(
      "memory_allocated", [](py::handle d) { return cuda_stats(d).allocated; },
      py::arg("device") = py::none(), "Bytes held by live arrays.");
  cuda.def(
      "max_memory_allocated", [](py::handle d) { return cuda_stats(d).peak_allocated; },
      py::arg("device") = py::none(),
      "Peak of memory_allocated() since the start or reset_peak_memory_stats().");
  cuda.def(
      "memory_reserved", [](py::handle d) { return cuda_stats(d).reserved; },
      py::arg("device") = py::none(), "Bytes obtained from the driver, cached blocks included.");
  cuda.def(
      "reset_peak_memory_stats",
      [](py::handle d) { backend_for(cuda_device(d)).reset_peak_memory_stats(); },
      py::arg("device") = py::none());
  cuda.def(
      "empty_cache", [](py::handle d) { backend_for(cuda_device(d)).empty_cache(); },
      py::arg("device") = py::none(), "Returns cached, unused blocks to the driver.");
  cuda.def(
      "synchronize",
      [](py::handle d) {
        backend_for(cuda_device(d));  // a clear error for a device that does not exist
        py::gil_scoped_release release;
        cuda_synchronize();
      },
      py::arg("device") = py::none(),
      "Waits for all queued GPU work; raises IndexError for an out-of-range index that a "
      "kernel reported since the last synchronisation.");

  // torch.set_float32_matmul_precision's values. A build without CUDA keeps the setting as well,
  // so scripts that set it run unchanged on the CPU.
  const char* precision_doc =
      "float32 matmul precision on CUDA: 'highest' (full float32, the default), 'high' (TF32 "
      "tensor cores) or 'medium' (bfloat16 tensor cores).";
  cuda.def("set_matmul_precision", &set_matmul_precision, py::arg("precision"), precision_doc);
  cuda.def("get_matmul_precision", &get_matmul_precision);
  m.def("set_float32_matmul_precision", &set_matmul_precision, py::arg("precision"), precision_doc);
  m.def("get_float32_matmul_precision", &get_matmul_precision);
}

}  // namespace needle::python
