// Device parsing and the device -> kernel table lookup.
#include "ndarray/device.h"

#include "backend_cpu/cpu_backend.h"
#include "backend_cuda/cuda_backend.h"
#include "ndarray/backend.h"
#include "ndarray/error.h"

namespace needle {

Device::Device(const std::string& spec) {
  if (spec == "cpu") {
    type = DeviceType::CPU;
    index = 0;
    return;
  }
  if (spec.rfind("cuda", 0) == 0) {
    type = DeviceType::CUDA;
    index = 0;
    if (spec.size() == 4) return;
    if (spec[4] == ':' && spec.size() > 5) {
      size_t used = 0;
      int i = -1;
      try {
        i = std::stoi(spec.substr(5), &used);
      } catch (const std::exception&) {
      }
      if (i >= 0 && used == spec.size() - 5) {
        index = i;
        return;
      }
    }
  }
  throw ValueError("invalid device '" + spec + "': expected 'cpu', 'cuda' or 'cuda:N'");
}

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

const Backend& backend_for(const Device& device) {
  if (device.is_cpu()) return cpu_backend();
  const Backend& cuda = cuda_backend();
  NEEDLE_CHECK(device.index < cuda_device_count(), RuntimeError, "device ", device.str(),
               " does not exist: this machine has ", cuda_device_count(), " CUDA device(s)");
  // The CUDA backend drives one GPU (device 0); another index would silently run there.
  NEEDLE_CHECK(device.index == 0, RuntimeError, "device ", device.str(),
               " is not supported: needle's CUDA backend runs on cuda:0 only");
  return cuda;
}

}  // namespace needle
