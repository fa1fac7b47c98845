// Names and classes of the ops listed in ops.h.
#include "ndarray/ops.h"

namespace needle {

#define NEEDLE_NAME_CASE(Name, fname, ...) \
  case decltype(op)::Name:                 \
    return #fname;

const char* op_name(UnaryOp op) {
  switch (op) {
    NEEDLE_UNARY_OPS(NEEDLE_NAME_CASE)
    case UnaryOp::LogicalNot: return "logical_not";
  }
  return "?";
}

const char* op_name(BinaryOp op) {
  switch (op) { NEEDLE_BINARY_OPS(NEEDLE_NAME_CASE) }
  return "?";
}
#undef NEEDLE_NAME_CASE

const char* op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
    case ReduceOp::Prod: return "prod";
    case ReduceOp::ArgMax: return "argmax";
    case ReduceOp::ArgMin: return "argmin";
  }
  return "reduce";
}

#define NEEDLE_MATCH(Name, ...) || op == BinaryOp::Name
bool is_comparison(BinaryOp op) {
  return false NEEDLE_COMPARE_OPS(NEEDLE_MATCH) NEEDLE_LOGICAL_OPS(NEEDLE_MATCH);
}
bool is_logical(BinaryOp op) { return false NEEDLE_LOGICAL_OPS(NEEDLE_MATCH); }
#undef NEEDLE_MATCH

bool is_float_only(UnaryOp op) {
#define NEEDLE_MATCH(Name, ...) || op == UnaryOp::Name
  return false NEEDLE_UNARY_FLOAT_OPS(NEEDLE_MATCH);
#undef NEEDLE_MATCH
}

}  // namespace needle
