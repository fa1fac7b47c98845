// Entry points of the CUDA library. A build without CUDA links no_cuda.cpp instead, whose
// cuda_backend() throws RuntimeError("this build has no CUDA ...").
#pragma once
#include "ndarray/backend.h"

namespace needle {
// The CUDA kernel table for the current device; throws RuntimeError when the build has no CUDA
// or no GPU is present.
const Backend& cuda_backend();
bool cuda_build_enabled();
}  // namespace needle
