// Initialisers: each draws an array on the tensor's device and assigns it into the existing
// storage, so layers' Tensor handles (and optimizer state keyed on them) stay valid.
#include "nn/init.h"

#include <cmath>

#include "ndarray/error.h"

namespace needle::nn::init {
namespace {

void assign(const Tensor& t, const NDArray& values) {
  NEEDLE_CHECK(t.defined(), ValueError, "init: the tensor is undefined");
  t.data().assign(values);
}

void check_floating(const Tensor& t, const char* fn) {
  NEEDLE_CHECK(t.defined(), ValueError, fn, ": the tensor is undefined");
  NEEDLE_CHECK(is_floating(t.dtype()), TypeError, fn, ": expected a floating tensor, got ",
               dtype_name(t.dtype()));
}

double fan_for(const Tensor& t, const std::string& mode) {
  auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  if (mode == "fan_in") return static_cast<double>(fan_in);
  if (mode == "fan_out") return static_cast<double>(fan_out);
  throw ValueError("init: mode must be 'fan_in' or 'fan_out', got '" + mode + "'");
}

double normal_cdf(double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); }

}  // namespace

void uniform_(const Tensor& t, double low, double high) {
  check_floating(t, "uniform_");
  NEEDLE_CHECK(low <= high, ValueError, "uniform_: expected low <= high, got ", low, " and ", high);
  assign(t, NDArray::uniform(t.shape(), low, high, t.dtype(), t.device()));
}

void normal_(const Tensor& t, double mean, double std) {
  check_floating(t, "normal_");
  NEEDLE_CHECK(std >= 0, ValueError, "normal_: expected std >= 0, got ", std);
  assign(t, NDArray::normal(t.shape(), mean, std, t.dtype(), t.device()));
}

void constant_(const Tensor& t, double value) {
  NEEDLE_CHECK(t.defined(), ValueError, "constant_: the tensor is undefined");
  t.data().fill(value);
}
void zeros_(const Tensor& t) { constant_(t, 0.0); }
void ones_(const Tensor& t) { constant_(t, 1.0); }

void trunc_normal_(const Tensor& t, double mean, double std, double a, double b) {
  check_floating(t, "trunc_normal_");
  NEEDLE_CHECK(std > 0 && a < b, ValueError, "trunc_normal_: expected std > 0 and a < b, got std ",
               std, ", a ", a, ", b ", b);
  // Resampling needs the interval to hold a fair share of the mass; each round keeps the
  // accepted values, so the expected number of rounds is log(numel) / log(1 / rejection).
  const double mass = normal_cdf((b - mean) / std) - normal_cdf((a - mean) / std);
  NEEDLE_CHECK(mass > 1e-3, ValueError, "trunc_normal_: [", a, ", ", b,
               "] holds only ", mass, " of N(", mean, ", ", std, "); expected at least 0.001");
  NDArray x = NDArray::normal(t.shape(), mean, std, DType::Float64, t.device());
  for (int round = 0; round < 10000; ++round) {
    NDArray outside = logical_or(lt(x, Scalar(a)), gt(x, Scalar(b)));
    if (sum(outside).item() == 0) {
      assign(t, x);
      return;
    }
    x = where(outside, NDArray::normal(t.shape(), mean, std, DType::Float64, t.device()), x);
  }
  throw RuntimeError("trunc_normal_: resampling did not converge");
}

void xavier_uniform_(const Tensor& t, double gain) {
  auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  uniform_(t, -bound, bound);
}

void xavier_normal_(const Tensor& t, double gain) {
  auto [fan_in, fan_out] = fan_in_and_fan_out(t);
  normal_(t, 0.0, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)));
}

void kaiming_uniform_(const Tensor& t, double a, const std::string& mode,
                      const std::string& nonlinearity) {
  const double std = calculate_gain(nonlinearity, a) / std::sqrt(fan_for(t, mode));
  const double bound = std::sqrt(3.0) * std;
  uniform_(t, -bound, bound);
}

void kaiming_normal_(const Tensor& t, double a, const std::string& mode,
                     const std::string& nonlinearity) {
  normal_(t, 0.0, calculate_gain(nonlinearity, a) / std::sqrt(fan_for(t, mode)));
}

void small_init_(const Tensor& t, int64_t dim) {
  NEEDLE_CHECK(dim > 0, ValueError, "small_init_: expected dim > 0, got ", dim);
  normal_(t, 0.0, std::sqrt(2.0 / (5.0 * static_cast<double>(dim))));
}

void wang_init_(const Tensor& t, int64_t dim, int64_t n_layers) {
  NEEDLE_CHECK(dim > 0 && n_layers > 0, ValueError,
               "wang_init_: expected dim > 0 and n_layers > 0, got ", dim, " and ", n_layers);
  normal_(t, 0.0, 2.0 / (static_cast<double>(n_layers) * std::sqrt(static_cast<double>(dim))));
}

double calculate_gain(const std::string& nonlinearity, double param) {
  if (nonlinearity == "linear" || nonlinearity == "sigmoid" || nonlinearity == "conv1d" ||
      nonlinearity == "conv2d")
    return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3.0;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "leaky_relu") return std::sqrt(2.0 / (1.0 + param * param));
  if (nonlinearity == "selu") return 0.75;
  throw ValueError("calculate_gain: unknown nonlinearity '" + nonlinearity +
                   "' (expected linear, sigmoid, tanh, relu, leaky_relu, selu)");
}

std::pair<int64_t, int64_t> fan_in_and_fan_out(const Tensor& t) {
  NEEDLE_CHECK(t.defined() && t.ndim() >= 2, ValueError,
               "fan in and fan out need a tensor of at least 2 dims, got ",
               t.defined() ? t.ndim() : 0);
  int64_t receptive = 1;
  for (int i = 2; i < t.ndim(); ++i) receptive *= t.shape()[i];
  return {t.shape()[1] * receptive, t.shape()[0] * receptive};
}

}  // namespace needle::nn::init
