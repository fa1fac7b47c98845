// Elementwise CPU kernels: copy (with dtype conversion), fill, unary, binary, binary with a
// scalar, and where. All run on the coalescing strided loop of cpu_common.h; each inner run picks
// a contiguous loop (which the compiler vectorises), a scalar-broadcast loop, or a strided one.
#include <optional>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"
#include "backend_cpu/vector_math.h"

namespace needle::cpu_kernels {
namespace {

// Element i of a run with byte stride `stride`.
template <typename T>
inline T& at(char* p, int64_t stride, int64_t i) {
  return *reinterpret_cast<T*>(p + i * stride);
}
template <typename T>
inline T& at(const char* p, int64_t stride, int64_t i) {
  return *reinterpret_cast<T*>(p + i * stride);
}

void check_dtype(const char* what, const char* operand, DType expected, DType given) {
  NEEDLE_CHECK(expected == given, TypeError, what, ": expected ", operand, " of dtype ",
               dtype_name(expected), ", got ", dtype_name(given));
}

// out = f(a): In is a's storage type, Out the output's; f runs in compute_t<In>. When `vec_op` is
// given and In is float or double, contiguous runs use its SIMD form (vector_math.h).
template <typename In, typename Out, typename F>
void unary_loop(const ArrayRef& a, const ArrayRef& out, F f,
                std::optional<UnaryOp> vec_op = std::nullopt) {
  using C = compute_t<In>;
  const ArrayRef* ops[2] = {&out, &a};
  for_each_strided(ops, [&](char** p, const int64_t* s, int64_t n) {
    if constexpr (std::is_same_v<In, Out> && std::is_floating_point_v<In>) {
      if (vec_op && s[0] == sizeof(Out) && s[1] == sizeof(In) &&
          vector_unary(*vec_op, reinterpret_cast<const In*>(p[1]), reinterpret_cast<Out*>(p[0]), n))
        return;
    }
    if (s[0] == sizeof(Out) && s[1] == sizeof(In)) {
      Out* o = reinterpret_cast<Out*>(p[0]);
      const In* x = reinterpret_cast<const In*>(p[1]);
      for (int64_t i = 0; i < n; ++i) o[i] = convert<Out>(f(convert<C>(x[i])));
    } else {
      for (int64_t i = 0; i < n; ++i)
        at<Out>(p[0], s[0], i) = convert<Out>(f(convert<C>(at<const In>(p[1], s[1], i))));
    }
  });
}

// out = f(x, y) with x, y of type In. Used for binary (x = a, y = b) and, with one operand given
// stride 0 everywhere, for binary_scalar.
template <typename In, typename Out, typename F>
void binary_loop(const ArrayRef& x_ref, const ArrayRef& y_ref, const ArrayRef& out, F f) {
  using C = compute_t<In>;
  const ArrayRef* ops[3] = {&out, &x_ref, &y_ref};
  for_each_strided(ops, [&](char** p, const int64_t* s, int64_t n) {
    Out* o = reinterpret_cast<Out*>(p[0]);
    const In* x = reinterpret_cast<const In*>(p[1]);
    const In* y = reinterpret_cast<const In*>(p[2]);
    const bool out_c = s[0] == sizeof(Out), x_c = s[1] == sizeof(In), y_c = s[2] == sizeof(In);
    if (out_c && x_c && y_c) {
      for (int64_t i = 0; i < n; ++i) o[i] = convert<Out>(f(convert<C>(x[i]), convert<C>(y[i])));
    } else if (out_c && x_c && s[2] == 0) {
      const C yv = convert<C>(*y);
      for (int64_t i = 0; i < n; ++i) o[i] = convert<Out>(f(convert<C>(x[i]), yv));
    } else if (out_c && s[1] == 0 && y_c) {
      const C xv = convert<C>(*x);
      for (int64_t i = 0; i < n; ++i) o[i] = convert<Out>(f(xv, convert<C>(y[i])));
    } else {
      for (int64_t i = 0; i < n; ++i)
        at<Out>(p[0], s[0], i) = convert<Out>(
            f(convert<C>(at<const In>(p[1], s[1], i)), convert<C>(at<const In>(p[2], s[2], i))));
    }
  });
}

// Applies `op` to x and y (both of dtype `dt`), writing out. Comparisons and logical ops write
// bool, arithmetic writes dt.
void dispatch_binary(BinaryOp op, DType dt, const ArrayRef& x, const ArrayRef& y,
                     const ArrayRef& out) {
  // Integer division by zero traps on x86; NDArray promotes integer division to float first.
  NEEDLE_CHECK(op != BinaryOp::Div || is_floating(dt), TypeError,
               "div: the cpu kernel expects floating inputs (NDArray promotes integer division "
               "to float32), got ",
               dtype_name(dt));
  switch (op) {
#define NEEDLE_ARITH_CASE(Name, fname, ...)                                  \
  case BinaryOp::Name:                                                       \
    NEEDLE_DISPATCH_ALL(dt, #fname, [&] {                                    \
      binary_loop<scalar_t, scalar_t>(x, y, out, functors::Name##Functor{}); \
    })                                                                       \
    return;
    NEEDLE_BINARY_ARITH_OPS(NEEDLE_ARITH_CASE)
#undef NEEDLE_ARITH_CASE
#define NEEDLE_BOOL_CASE(Name, fname, ...)                                                      \
  case BinaryOp::Name:                                                                          \
    NEEDLE_DISPATCH_ALL(                                                                        \
        dt, #fname, [&] { binary_loop<scalar_t, bool>(x, y, out, functors::Name##Functor{}); }) \
    return;
    NEEDLE_COMPARE_OPS(NEEDLE_BOOL_CASE)
    NEEDLE_LOGICAL_OPS(NEEDLE_BOOL_CASE)
#undef NEEDLE_BOOL_CASE
  }
}

// Copy with conversion from S to D (S == D moves bits).
template <typename S, typename D>
inline D copy_value(S v) {
  if constexpr (std::is_same_v<S, D>) {
    return v;
  } else {
    return convert<D>(v);
  }
}

// dst (operand 0) contiguous along plan dim 0 while src (operand 1) steps faster along dim 1:
// the compact() of a transposed view. A plain loop would read one element per cache line; this
// copies kTile x kTile tiles, whose source lines stay in L1 while the tile is written.
template <typename S, typename D>
bool tiled_copy(const StridedPlan<2>& p) {
  if (p.ndim < 2 || p.strides[0][0] != static_cast<int64_t>(sizeof(D)) ||
      std::abs(p.strides[1][1]) >= std::abs(p.strides[0][1]))
    return false;
  constexpr int64_t kTile = 32;
  const int64_t n0 = p.shape[0], n1 = p.shape[1];
  const int64_t outer = p.numel / (n0 * n1), strips = (n1 + kTile - 1) / kTile;
  const int64_t grain = std::max<int64_t>(1, kGrain / (kTile * n0));
  parallel_for(outer * strips, grain, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      // Locate the outer (dims >= 2) slice of this strip.
      int64_t rem = it / strips;
      char* dst = p.base[0];
      const char* src = p.base[1];
      for (int d = 2; d < p.ndim; ++d) {
        const int64_t i = rem % p.shape[d];
        rem /= p.shape[d];
        dst += i * p.strides[d][0];
        src += i * p.strides[d][1];
      }
      const int64_t j0 = (it % strips) * kTile, j1 = std::min(n1, j0 + kTile);
      for (int64_t i0 = 0; i0 < n0; i0 += kTile) {
        const int64_t i1 = std::min(n0, i0 + kTile);
        for (int64_t j = j0; j < j1; ++j) {
          D* o = reinterpret_cast<D*>(dst + j * p.strides[1][0]);
          const char* s = src + j * p.strides[1][1];
          for (int64_t i = i0; i < i1; ++i)
            o[i] = copy_value<S, D>(at<const S>(s, p.strides[0][1], i));
        }
      }
    }
  });
  return true;
}

// Element-for-element copy from S to D over any layouts.
template <typename S, typename D>
void copy_loop(const ArrayRef& src, const ArrayRef& dst) {
  const ArrayRef* ops[2] = {&dst, &src};
  StridedPlan<2> plan = make_plan(ops);
  if (tiled_copy<S, D>(plan)) return;
  run_plan(plan, [](char** p, const int64_t* s, int64_t n) {
    if (s[0] == sizeof(D) && s[1] == sizeof(S)) {
      D* o = reinterpret_cast<D*>(p[0]);
      const S* x = reinterpret_cast<const S*>(p[1]);
      for (int64_t i = 0; i < n; ++i) o[i] = copy_value<S, D>(x[i]);
    } else {
      for (int64_t i = 0; i < n; ++i)
        at<D>(p[0], s[0], i) = copy_value<S, D>(at<const S>(p[1], s[1], i));
    }
  });
}

}  // namespace

// N = number of elements of dst (== of src).
void copy(const ArrayRef& src, const ArrayRef& dst) {
  if (src.dtype == dst.dtype) {
    if (src.is_compact() && dst.is_compact()) {
      parallel_memcpy(dst.data, src.data, static_cast<size_t>(dst.numel()) * itemsize(dst.dtype));
      return;
    }
    // Same dtype: move bits, so NaN payloads and -0.0 are preserved exactly.
    NEEDLE_DISPATCH_BITS(itemsize(dst.dtype), [&] { copy_loop<bits_t, bits_t>(src, dst); });
    return;
  }
  NEEDLE_DISPATCH_ALL(src.dtype, "copy", [&] {
    using S = scalar_t;
    NEEDLE_DISPATCH_ALL(dst.dtype, "copy", [&] { copy_loop<S, scalar_t>(src, dst); });
  });
}

// N = number of elements of dst.
void fill(const ArrayRef& dst, double value) {
  NEEDLE_DISPATCH_ALL(dst.dtype, "fill", [&] {
    const scalar_t v = convert<scalar_t>(value);
    NEEDLE_DISPATCH_BITS(sizeof(scalar_t), [&] {
      bits_t pattern;
      std::memcpy(&pattern, &v, sizeof(pattern));
      const ArrayRef* ops[1] = {&dst};
      for_each_strided(ops, [pattern](char** p, const int64_t* s, int64_t n) {
        if (s[0] == sizeof(bits_t)) {
          bits_t* o = reinterpret_cast<bits_t*>(p[0]);
          for (int64_t i = 0; i < n; ++i) o[i] = pattern;
        } else {
          for (int64_t i = 0; i < n; ++i) at<bits_t>(p[0], s[0], i) = pattern;
        }
      });
    });
  });
}

// N = number of elements of a (== out).
void unary(UnaryOp op, const ArrayRef& a, const ArrayRef& out) {
  check_dtype(op_name(op), "out", op == UnaryOp::LogicalNot ? DType::Bool : a.dtype, out.dtype);
  switch (op) {
#define NEEDLE_NUMERIC_CASE(Name, fname, ...)                            \
  case UnaryOp::Name:                                                    \
    NEEDLE_DISPATCH_NUMERIC(a.dtype, #fname, [&] {                       \
      unary_loop<scalar_t, scalar_t>(a, out, functors::Name##Functor{}); \
    })                                                                   \
    return;
    NEEDLE_UNARY_NUMERIC_OPS(NEEDLE_NUMERIC_CASE)
#undef NEEDLE_NUMERIC_CASE
#define NEEDLE_FLOAT_CASE(Name, fname, ...)                                             \
  case UnaryOp::Name:                                                                   \
    NEEDLE_DISPATCH_FLOATING(a.dtype, #fname, [&] {                                     \
      unary_loop<scalar_t, scalar_t>(a, out, functors::Name##Functor{}, UnaryOp::Name); \
    })                                                                                  \
    return;
    NEEDLE_UNARY_FLOAT_OPS(NEEDLE_FLOAT_CASE)
#undef NEEDLE_FLOAT_CASE
    case UnaryOp::LogicalNot:
      NEEDLE_DISPATCH_ALL(a.dtype, "logical_not", [&] {
        unary_loop<scalar_t, bool>(a, out, functors::LogicalNotFunctor{});
      })
      return;
  }
}

// N = number of elements of out; a and b are broadcast views of out's shape.
void binary(BinaryOp op, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out) {
  check_dtype(op_name(op), "b", a.dtype, b.dtype);
  check_dtype(op_name(op), "out", is_comparison(op) ? DType::Bool : a.dtype, out.dtype);
  dispatch_binary(op, a.dtype, a, b, out);
}

// N = number of elements of out. The scalar becomes a stride-0 operand of out's shape, which the
// inner loop recognises as the broadcast fast path.
void binary_scalar(BinaryOp op, const ArrayRef& a, double s, bool scalar_first,
                   const ArrayRef& out) {
  check_dtype(op_name(op), "out", is_comparison(op) ? DType::Bool : a.dtype, out.dtype);
  alignas(8) unsigned char storage[8];
  NEEDLE_DISPATCH_ALL(a.dtype, op_name(op), [&] {
    const scalar_t v = convert<scalar_t>(s);
    std::memcpy(storage, &v, sizeof(v));
  });
  ArrayRef scalar = a;
  scalar.data = storage;
  for (int d = 0; d < scalar.ndim; ++d) scalar.strides[d] = 0;
  if (scalar_first) {
    dispatch_binary(op, a.dtype, scalar, a, out);
  } else {
    dispatch_binary(op, a.dtype, a, scalar, out);
  }
}

// N = number of elements of out; cond, a, b are broadcast views of out's shape.
void where(const ArrayRef& cond, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out) {
  check_dtype("where", "cond", DType::Bool, cond.dtype);
  check_dtype("where", "b", a.dtype, b.dtype);
  check_dtype("where", "out", a.dtype, out.dtype);
  NEEDLE_DISPATCH_BITS(itemsize(out.dtype), [&] {
    const ArrayRef* ops[4] = {&out, &cond, &a, &b};
    for_each_strided(ops, [](char** p, const int64_t* s, int64_t n) {
      if (s[0] == sizeof(bits_t) && s[1] == 1 && s[2] == sizeof(bits_t) && s[3] == sizeof(bits_t)) {
        bits_t* o = reinterpret_cast<bits_t*>(p[0]);
        const uint8_t* c = reinterpret_cast<const uint8_t*>(p[1]);
        const bits_t* x = reinterpret_cast<const bits_t*>(p[2]);
        const bits_t* y = reinterpret_cast<const bits_t*>(p[3]);
        for (int64_t i = 0; i < n; ++i) o[i] = c[i] ? x[i] : y[i];
      } else {
        for (int64_t i = 0; i < n; ++i)
          at<bits_t>(p[0], s[0], i) = at<const uint8_t>(p[1], s[1], i)
                                          ? at<const bits_t>(p[2], s[2], i)
                                          : at<const bits_t>(p[3], s[3], i);
      }
    });
  });
}

}  // namespace needle::cpu_kernels
