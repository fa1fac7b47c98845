// Entry points of the CUDA library. A build without CUDA links no_cuda.cpp instead, whose
// cuda_backend() throws RuntimeError("this build has no CUDA ...").
#pragma once
#include <string>

#include "ndarray/backend.h"
#include "ndarray/matmul_precision.h"  // set / get_matmul_precision, part of this API

namespace needle {
// The CUDA kernel table for the current device; throws RuntimeError when the build has no CUDA
// or no GPU is present.
const Backend& cuda_backend();
bool cuda_build_enabled();

// Waits for all queued GPU work; raises IndexError for a bad index a kernel reported since the
// last synchronisation. Throws RuntimeError in a build without CUDA.
void cuda_synchronize();

// Testing aid: while on, every block the CUDA allocator hands out is first filled with 0xFF bytes
// (NaN in every floating dtype, -1 in the integer ones), so a kernel that leaves part of its output
// unwritten fails the comparison instead of passing on leftover data. Off by default.
void cuda_set_alloc_poison(bool on);

}  // namespace needle
