// dtype names, sizes and the promotion order documented in dtype.h.
#include "ndarray/dtype.h"

#include "ndarray/error.h"

namespace needle {

size_t itemsize(DType dt) {
  switch (dt) {
    case DType::Bool: return 1;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
    case DType::BFloat16: return 2;
    case DType::Float32: return 4;
    case DType::Float64: return 8;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::Bool: return "bool";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::BFloat16: return "bfloat16";
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
  }
  return "?";
}

DType dtype_from_name(const std::string& name) {
  for (DType dt : {DType::Bool, DType::Int32, DType::Int64, DType::BFloat16, DType::Float32,
                   DType::Float64})
    if (name == dtype_name(dt)) return dt;
  if (name == "float") return DType::Float32;
  if (name == "double") return DType::Float64;
  if (name == "long") return DType::Int64;
  if (name == "int") return DType::Int32;
  throw TypeError("unknown dtype '" + name +
                  "': expected one of bool, int32, int64, bfloat16, float32, float64");
}

bool is_floating(DType dt) {
  return dt == DType::BFloat16 || dt == DType::Float32 || dt == DType::Float64;
}
bool is_integral(DType dt) { return dt == DType::Int32 || dt == DType::Int64; }

DType promote_types(DType a, DType b) {
  // The enum is declared in promotion order.
  return static_cast<uint8_t>(a) >= static_cast<uint8_t>(b) ? a : b;
}

}  // namespace needle
