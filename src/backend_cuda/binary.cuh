// Dispatch shared by binary.cu (array op array) and binary_scalar.cu (array op scalar): which
// functor and which stored types each BinaryOp runs with, mirroring the CPU kernel table.
#pragma once
#include "backend_cuda/cuda_common.cuh"

namespace needle::cuda {

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls visit(Op{}, TypeTag<In>{}, TypeTag<Out>{}) for the functor of `op` on inputs of dtype dt:
// arithmetic keeps dt, comparisons and logical ops write bool. Div takes floating inputs only
// (NDArray promotes integer division to float32), as on the CPU.
template <typename Visit>
void visit_binary(BinaryOp op, DType dt, const Visit& visit) {
  NEEDLE_CHECK(op != BinaryOp::Div || is_floating(dt), TypeError,
               "cuda div: expected floating inputs (NDArray promotes integer division to "
               "float32), got ",
               dtype_name(dt));
  switch (op) {
#define NEEDLE_ARITH_CASE(Name, fname, ...)                                       \
  case BinaryOp::Name:                                                            \
    NEEDLE_DISPATCH_ALL(dt, #fname, [&] {                                         \
      visit(functors::Name##Functor{}, TypeTag<scalar_t>{}, TypeTag<scalar_t>{}); \
    })                                                                            \
    return;
    NEEDLE_BINARY_ARITH_OPS(NEEDLE_ARITH_CASE)
#undef NEEDLE_ARITH_CASE
#define NEEDLE_BOOL_CASE(Name, fname, ...)                                    \
  case BinaryOp::Name:                                                        \
    NEEDLE_DISPATCH_ALL(dt, #fname, [&] {                                     \
      visit(functors::Name##Functor{}, TypeTag<scalar_t>{}, TypeTag<bool>{}); \
    })                                                                        \
    return;
    NEEDLE_COMPARE_OPS(NEEDLE_BOOL_CASE)
    NEEDLE_LOGICAL_OPS(NEEDLE_BOOL_CASE)
#undef NEEDLE_BOOL_CASE
  }
  throw ValueError(detail::concat("cuda binary: unknown op code ", static_cast<int>(op)));
}

inline void check_binary_out(BinaryOp op, DType in, DType out) {
  DType want = is_comparison(op) ? DType::Bool : in;
  NEEDLE_CHECK(out == want, TypeError, "cuda ", op_name(op), ": expected out of dtype ",
               dtype_name(want), ", got ", dtype_name(out));
}

}  // namespace needle::cuda
