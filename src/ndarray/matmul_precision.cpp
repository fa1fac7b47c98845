#include "ndarray/matmul_precision.h"

#include <atomic>

#include "ndarray/error.h"

namespace needle {
namespace {
std::atomic<MatmulPrecision> current{MatmulPrecision::kHighest};
}  // namespace

void set_matmul_precision(const std::string& p) {
  MatmulPrecision v;
  if (p == "highest") v = MatmulPrecision::kHighest;
  else if (p == "high") v = MatmulPrecision::kHigh;
  else if (p == "medium") v = MatmulPrecision::kMedium;
  else
    throw ValueError(detail::concat(
        "set_matmul_precision: expected \"highest\", \"high\" or \"medium\", got \"", p, "\""));
  current.store(v, std::memory_order_relaxed);
}

MatmulPrecision matmul_precision() { return current.load(std::memory_order_relaxed); }

std::string get_matmul_precision() {
  switch (matmul_precision()) {
    case MatmulPrecision::kHigh: return "high";
    case MatmulPrecision::kMedium: return "medium";
    default: return "highest";
  }
}

}  // namespace needle
