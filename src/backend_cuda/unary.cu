// Unary elementwise kernels: out = f(a) for the ops of NEEDLE_UNARY_OPS (ops.h) and logical_not.
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/elementwise.cuh"

namespace needle::cuda {
namespace {

// Applies an ops.h functor in compute_t<In> (float for bfloat16, int32 for bool) and converts the
// result to the stored output type.
template <typename Op, typename In, typename Out>
struct UnaryFn {
  __device__ Out operator()(In a) const { return convert<Out>(Op{}(convert<compute_t<In>>(a))); }
};

template <typename Op, typename In, typename Out>
void run(const char* name, const ArrayRef& a, const ArrayRef& out) {
  launch_elementwise<Out, In>(name, UnaryFn<Op, In, Out>{}, out, a);
}

}  // namespace

// N = number of elements of a (== out).
void unary(UnaryOp op, const ArrayRef& a, const ArrayRef& out) {
  DType want = op == UnaryOp::LogicalNot ? DType::Bool : a.dtype;
  NEEDLE_CHECK(out.dtype == want, TypeError, "cuda ", op_name(op), ": expected out of dtype ",
               dtype_name(want), ", got ", dtype_name(out.dtype));
  switch (op) {
#define NEEDLE_NUMERIC_CASE(Name, fname, ...)                           \
  case UnaryOp::Name:                                                   \
    NEEDLE_DISPATCH_NUMERIC(a.dtype, #fname, [&] {                      \
      run<functors::Name##Functor, scalar_t, scalar_t>(#fname, a, out); \
    })                                                                  \
    return;
    NEEDLE_UNARY_NUMERIC_OPS(NEEDLE_NUMERIC_CASE)
#undef NEEDLE_NUMERIC_CASE
#define NEEDLE_FLOAT_CASE(Name, fname, ...)                             \
  case UnaryOp::Name:                                                   \
    NEEDLE_DISPATCH_FLOATING(a.dtype, #fname, [&] {                     \
      run<functors::Name##Functor, scalar_t, scalar_t>(#fname, a, out); \
    })                                                                  \
    return;
    NEEDLE_UNARY_FLOAT_OPS(NEEDLE_FLOAT_CASE)
#undef NEEDLE_FLOAT_CASE
    case UnaryOp::LogicalNot:
      NEEDLE_DISPATCH_ALL(a.dtype, "logical_not", [&] {
        run<functors::LogicalNotFunctor, scalar_t, bool>("logical_not", a, out);
      })
      return;
  }
  throw ValueError(detail::concat("cuda unary: unknown op code ", static_cast<int>(op)));
}

}  // namespace needle::cuda
