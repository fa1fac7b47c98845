// Linked instead of the CUDA library when the build has no CUDA (NEEDLE_CUDA=OFF, or no nvcc).
#include "backend_cuda/cuda_backend.h"
#include "ndarray/error.h"

namespace needle {
namespace {

const char* kNoCuda =
    "this build has no CUDA: needle was configured without the CUDA backend "
    "(rebuild with -DNEEDLE_CUDA=ON on a machine with the CUDA toolkit)";

}  // namespace

const Backend& cuda_backend() { throw RuntimeError(kNoCuda); }
bool cuda_build_enabled() { return false; }
bool cuda_is_available() { return false; }
int cuda_device_count() { return 0; }
void cuda_synchronize() { throw RuntimeError(kNoCuda); }
void cuda_set_alloc_poison(bool) {}

}  // namespace needle
