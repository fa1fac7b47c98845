// Binary elementwise kernels between an array and a scalar: out = f(a, s) or f(s, a). The scalar
// travels in the functor (a kernel argument), converted once on the host as the CPU does: first
// to a's dtype, then to the compute type.
#include "backend_cuda/binary.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/elementwise.cuh"

namespace needle::cuda {
namespace {

template <typename Op, typename In, typename Out>
struct ScalarFn {
  compute_t<In> s;
  bool scalar_first;
  __device__ Out operator()(In a) const {
    compute_t<In> x = convert<compute_t<In>>(a);
    return convert<Out>(scalar_first ? Op{}(s, x) : Op{}(x, s));
  }
};

}  // namespace

// N = number of elements of a (== out).
void binary_scalar(BinaryOp op, const ArrayRef& a, double s, bool scalar_first,
                   const ArrayRef& out) {
  check_binary_out(op, a.dtype, out.dtype);
  visit_binary(op, a.dtype, [&](auto f, auto in_tag, auto out_tag) {
    using In = typename decltype(in_tag)::type;
    using Out = typename decltype(out_tag)::type;
    using C = compute_t<In>;
    ScalarFn<decltype(f), In, Out> fn{convert<C>(convert<In>(s)), scalar_first};
    launch_elementwise<Out, In>(op_name(op), fn, out, a);
  });
}

}  // namespace needle::cuda
