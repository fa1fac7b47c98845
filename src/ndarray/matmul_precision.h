// The float32 matmul precision, a process-wide setting as torch.set_float32_matmul_precision:
// "highest" (default, full float32), "high" (TF32 tensor cores) or "medium" (bfloat16 tensor
// cores). The CUDA GEMM and attention kernels read it on every call; a build without CUDA keeps
// the setting too, so scripts run unchanged.
#pragma once
#include <string>

namespace needle {

enum class MatmulPrecision { kHighest, kHigh, kMedium };

// ValueError for anything but the three names.
void set_matmul_precision(const std::string& precision);
std::string get_matmul_precision();
// The current setting without locking or allocating, for the per-call paths.
MatmulPrecision matmul_precision();

}  // namespace needle
