// Binary elementwise kernels between two arrays (broadcast through 0 strides): out = f(a, b) for
// the ops of NEEDLE_BINARY_OPS (ops.h).
#include "backend_cuda/binary.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/elementwise.cuh"

namespace needle::cuda {
namespace {

// Applies an ops.h functor in compute_t<In> and converts to the stored output type.
template <typename Op, typename In, typename Out>
struct BinaryFn {
  __device__ Out operator()(In a, In b) const {
    using C = compute_t<In>;
    return convert<Out>(Op{}(convert<C>(a), convert<C>(b)));
  }
};

}  // namespace

// N = number of elements of out; a and b are broadcast views of out's shape.
void binary(BinaryOp op, const ArrayRef& a, const ArrayRef& b, const ArrayRef& out) {
  NEEDLE_CHECK(a.dtype == b.dtype, TypeError, "cuda ", op_name(op),
               ": expected a and b of one dtype, got ", dtype_name(a.dtype), " and ",
               dtype_name(b.dtype));
  check_binary_out(op, a.dtype, out.dtype);
  visit_binary(op, a.dtype, [&](auto f, auto in_tag, auto out_tag) {
    using In = typename decltype(in_tag)::type;
    using Out = typename decltype(out_tag)::type;
    launch_elementwise<Out, In, In>(op_name(op), BinaryFn<decltype(f), In, Out>{}, out, a, b);
  });
}

}  // namespace needle::cuda
