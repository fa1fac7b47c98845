// The elementwise and reduction op lists, written once. Each X-macro entry generates the enum
// value, the functor the CPU and CUDA kernels apply, the NDArray function and the Python name.
//
//   X(EnumName, function_name, functor expression of a (and b) in the arithmetic type T)
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "ndarray/macros.h"

// Unary ops on floating types (integer inputs are promoted to float32 first).
#define NEEDLE_UNARY_FLOAT_OPS(X)                                             \
  X(Exp, exp, std::exp(a))                                                    \
  X(Log, log, std::log(a))                                                    \
  X(Sqrt, sqrt, std::sqrt(a))                                                 \
  X(Rsqrt, rsqrt, T(1) / std::sqrt(a))                                        \
  X(Tanh, tanh, std::tanh(a))                                                 \
  X(Sigmoid, sigmoid, T(1) / (T(1) + std::exp(-a)))                           \
  X(Gelu, gelu, T(0.5) * a * (T(1) + std::erf(a * T(0.70710678118654752440)))) \
  /* d gelu / da = Phi(a) + a phi(a): GELU's backward in one kernel */          \
  X(GeluGrad, gelu_grad,                                                      \
    T(0.5) * (T(1) + std::erf(a * T(0.70710678118654752440))) +               \
        a * T(0.39894228040143267794) * std::exp(T(-0.5) * a * a))            \
  X(GeluTanh, gelu_tanh,                                                      \
    T(0.5) * a *                                                              \
        (T(1) + std::tanh(T(0.79788456080286535588) * (a + T(0.044715) * a * a * a)))) \
  X(Sin, sin, std::sin(a))                                                    \
  X(Cos, cos, std::cos(a))                                                    \
  X(Erf, erf, std::erf(a))

// Unary ops that keep any numeric type.
#define NEEDLE_UNARY_NUMERIC_OPS(X)                   \
  X(Neg, neg, -a)                                     \
  X(Abs, abs, (a < T(0) ? -a : a))                    \
  X(Relu, relu, (a < T(0) ? T(0) : a))                \
  X(Sign, sign, T((a > T(0)) - (a < T(0))))

#define NEEDLE_UNARY_OPS(X) NEEDLE_UNARY_NUMERIC_OPS(X) NEEDLE_UNARY_FLOAT_OPS(X)

// Binary arithmetic: inputs and output share one (promoted) dtype. Div on integers promotes to
// float32 first (true division, as in PyTorch).
#define NEEDLE_BINARY_ARITH_OPS(X)                                   \
  X(Add, add, a + b)                                                 \
  X(Sub, sub, a - b)                                                 \
  X(Mul, mul, a * b)                                                 \
  X(Div, div, a / b)                                                 \
  X(Pow, pow, ::needle::detail::power(a, b))                         \
  X(Maximum, maximum, (a != a ? a : (b != b ? b : (a > b ? a : b)))) \
  X(Minimum, minimum, (a != a ? a : (b != b ? b : (a < b ? a : b)))) \
  X(FloorDiv, floor_divide, ::needle::detail::floor_divide(a, b))    \
  X(Remainder, remainder, ::needle::detail::remainder(a, b))

// Comparisons: inputs share a dtype, the output is bool.
#define NEEDLE_COMPARE_OPS(X) \
  X(Eq, eq, a == b)           \
  X(Ne, ne, a != b)           \
  X(Lt, lt, a < b)            \
  X(Le, le, a <= b)           \
  X(Gt, gt, a > b)            \
  X(Ge, ge, a >= b)

// Logical ops: any dtype in (truthiness), bool out.
#define NEEDLE_LOGICAL_OPS(X)                       \
  X(LogicalAnd, logical_and, (a != T(0)) && (b != T(0))) \
  X(LogicalOr, logical_or, (a != T(0)) || (b != T(0)))   \
  X(LogicalXor, logical_xor, (a != T(0)) != (b != T(0)))

#define NEEDLE_BINARY_OPS(X) NEEDLE_BINARY_ARITH_OPS(X) NEEDLE_COMPARE_OPS(X) NEEDLE_LOGICAL_OPS(X)

namespace needle {

#define NEEDLE_ENUM_ENTRY(Name, fname, ...) Name,
enum class UnaryOp : uint8_t { NEEDLE_UNARY_OPS(NEEDLE_ENUM_ENTRY) LogicalNot };
enum class BinaryOp : uint8_t { NEEDLE_BINARY_OPS(NEEDLE_ENUM_ENTRY) };
#undef NEEDLE_ENUM_ENTRY

const char* op_name(UnaryOp op);
const char* op_name(BinaryOp op);
bool is_comparison(BinaryOp op);  // comparisons and logical ops: bool output
bool is_logical(BinaryOp op);
bool is_float_only(UnaryOp op);   // ops of NEEDLE_UNARY_FLOAT_OPS

namespace detail {
template <typename T>
NEEDLE_HD T power(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    // Integer power by squaring; negative exponents give 0 except for bases 1 and -1.
    if (b < 0) return (a == 1) ? T(1) : (a == -1 ? ((b & 1) ? T(-1) : T(1)) : T(0));
    T r = 1;
    while (b) {
      if (b & 1) r *= a;
      a *= a;
      b >>= 1;
    }
    return r;
  } else {
    return std::pow(a, b);
  }
}

// Python's // and % (torch.floor_divide, torch.remainder): the quotient rounded toward -inf, the
// remainder with the divisor's sign. An integer divided by 0 gives 0 for both, as in NumPy (the
// hardware would trap), and INT_MIN // -1 wraps to INT_MIN.
template <typename T>
NEEDLE_HD T floor_divide(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0) return T(0);
    if (b == T(-1)) return a == std::numeric_limits<T>::min() ? a : T(-a);
    const T q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? T(q - 1) : q;
  } else {
    // torch's formula: exact through fmod, the quotient then rounded to the integer it is.
    if (b == T(0)) return a / b;
    const T mod = std::fmod(a, b);
    T div = (a - mod) / b;
    if (mod != T(0) && ((b < T(0)) != (mod < T(0)))) div -= T(1);
    if (div == T(0)) return std::copysign(T(0), a / b);
    const T fl = std::floor(div);
    return div - fl > T(0.5) ? fl + T(1) : fl;
  }
}

template <typename T>
NEEDLE_HD T remainder(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    if (b == 0 || b == T(-1)) return T(0);
    const T r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? T(r + b) : r;
  } else {
    const T r = std::fmod(a, b);
    return (r != T(0) && ((r < T(0)) != (b < T(0)))) ? r + b : r;
  }
}
}  // namespace detail

// Functors applied by the kernels. T is the arithmetic type (float for bfloat16 storage).
#define NEEDLE_UNARY_FUNCTOR(Name, fname, expr) \
  struct Name##Functor {                         \
    template <typename T>                        \
    NEEDLE_HD T operator()(T a) const {          \
      return expr;                               \
    }                                            \
  };
#define NEEDLE_BINARY_FUNCTOR(Name, fname, expr) \
  struct Name##Functor {                          \
    template <typename T>                         \
    NEEDLE_HD auto operator()(T a, T b) const {   \
      return expr;                                \
    }                                             \
  };
namespace functors {
NEEDLE_UNARY_OPS(NEEDLE_UNARY_FUNCTOR)
NEEDLE_BINARY_OPS(NEEDLE_BINARY_FUNCTOR)
struct LogicalNotFunctor {
  template <typename T>
  NEEDLE_HD bool operator()(T a) const { return !(a != T(0)); }
};
}  // namespace functors
#undef NEEDLE_UNARY_FUNCTOR
#undef NEEDLE_BINARY_FUNCTOR

// Reductions over a set of axes. Mean and var are composed from Sum in NDArray.
enum class ReduceOp : uint8_t { Sum, Max, Min, Prod, ArgMax, ArgMin };
const char* op_name(ReduceOp op);

// Row-wise ops along the last axis of a compact (rows, cols) array.
enum class RowOp : uint8_t { Softmax, LogSoftmax, LogSumExp };

enum class RandomKind : uint8_t { Uniform, Normal, Bernoulli };

}  // namespace needle
