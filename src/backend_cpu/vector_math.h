// SIMD forms of the costliest float functions and of NaN-propagating max / min, through Eigen's
// vectorised kernels. The functors of ops.h call std::exp and friends one element at a time,
// about ten times slower; Eigen's versions agree with them to 1-2 ulp (exp, log: < 6e-8 relative in
// float; tanh < 3e-7 absolute), give 0 for exp(-inf), inf for exp(inf), NaN for NaN, and flush
// results below the smallest normal float to 0.
#pragma once
#include <cstdint>
#include <type_traits>

// GCC 12 reports false "may be used uninitialized" warnings inside Eigen's AVX-512 packet code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>
#pragma GCC diagnostic pop

#include "backend_cpu/cpu_common.h"
#include "ndarray/ops.h"

namespace needle::cpu_kernels {

template <typename T>
using VecArray = Eigen::Array<T, Eigen::Dynamic, 1>;

// o[i] = op(x[i]) for contiguous float / double runs (o may equal x); returns false when `op`
// has no vector form here, and the caller falls back to the functor. Sqrt stays with the functor:
// the compiler vectorises std::sqrt itself, and Eigen 3.4's AVX-512 sqrt returns NaN for +inf.
template <typename T>
bool vector_unary(UnaryOp op, const T* x, T* o, int64_t n) {
  Eigen::Map<const VecArray<T>> X(x, n);
  Eigen::Map<VecArray<T>> O(o, n);
  switch (op) {
    case UnaryOp::Exp:
      O = X.exp();
      return true;
    case UnaryOp::Log:
      O = X.log();
      return true;
    case UnaryOp::Rsqrt:
      O = X.rsqrt();
      return true;
    case UnaryOp::Tanh:
      O = X.tanh();
      return true;
    case UnaryOp::Sigmoid:
      O = T(1) / (T(1) + (-X).exp());
      return true;
    default:
      return false;
  }
}

// max (kMax) or min of n >= 1 contiguous values in compute type C, NaN if any is NaN (torch's
// max/min propagate NaN): a NaN is always taken, and no comparison with it is true afterwards, so
// it sticks.
template <bool kMax, typename C, typename T>
C extremum_contiguous(const T* x, int64_t n) {
  if constexpr (std::is_same_v<C, T> && std::is_floating_point_v<T>) {
    // Eigen's reduction is vectorised and propagates NaN on request; GCC does not vectorise the
    // NaN-aware select loop below.
    Eigen::Map<const VecArray<T>> X(x, n);
    if constexpr (kMax) {
      return X.template maxCoeff<Eigen::PropagateNaN>();
    } else {
      return X.template minCoeff<Eigen::PropagateNaN>();
    }
  } else {
    constexpr int kLanes = 16;
    auto take = [](C v, C m) { return (kMax ? v > m : v < m) || v != v; };
    C m[kLanes];
    for (int j = 0; j < kLanes; ++j) m[j] = convert<C>(x[0]);
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
      for (int j = 0; j < kLanes; ++j) {
        const C v = convert<C>(x[i + j]);
        m[j] = take(v, m[j]) ? v : m[j];
      }
    }
    for (; i < n; ++i) {
      const C v = convert<C>(x[i]);
      m[0] = take(v, m[0]) ? v : m[0];
    }
    C r = m[0];
    for (int j = 1; j < kLanes; ++j) r = take(m[j], r) ? m[j] : r;
    return r;
  }
}

}  // namespace needle::cpu_kernels
