// The CPU kernel table (Eigen for GEMM, OpenMP loops elsewhere).
#pragma once
#include "ndarray/backend.h"

namespace needle {
const Backend& cpu_backend();
}
