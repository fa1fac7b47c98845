// Element types, their sizes and names, bfloat16 storage, and type promotion.
//
// Promotion (binary ops between two arrays) follows one total order, as PyTorch does for these
// types:  bool < int32 < int64 < bfloat16 < float32 < float64; the result is the larger type.
// Python scalars are "weak": an int scalar keeps the array's type (bool arrays become int64),
// a float scalar keeps a floating array's type and turns integer/bool arrays into float32.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "ndarray/error.h"
#include "ndarray/macros.h"

namespace needle {

enum class DType : uint8_t { Bool, Int32, Int64, BFloat16, Float32, Float64 };

// bfloat16: the upper half of an IEEE float32, rounded to nearest even on conversion.
struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  NEEDLE_HD bfloat16(float f) : bits(round_from_float(f)) {}
  NEEDLE_HD operator float() const {
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
#ifdef __CUDA_ARCH__
    f = __uint_as_float(u);
#else
    std::memcpy(&f, &u, 4);
#endif
    return f;
  }
  // A NaN keeps its sign and upper payload bits, made quiet; everything else rounds to nearest
  // even (overflowing to inf; subnormals rounded, not flushed). On the GPU (compute capability 8.0
  // and up) the rounding is the hardware's cvt.rn.bf16.f32, one instruction where the integer
  // form below is about eight; tests/cpp/test_ops_cuda.cpp checks that both give the same bits.
  NEEDLE_HD static uint16_t round_from_float(float f) {
    uint32_t u;
#ifdef __CUDA_ARCH__
    u = __float_as_uint(f);
#else
    std::memcpy(&u, &f, 4);
#endif
    const uint16_t quiet_nan = static_cast<uint16_t>((u >> 16) | 0x40);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint16_t r;  // a select, not a branch: the kernels convert 8 elements at a time
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return f != f ? quiet_nan : r;
#else
    if ((u & 0x7fffffffu) > 0x7f800000u) return quiet_nan;
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<uint16_t>(u >> 16);
#endif
  }
};

size_t itemsize(DType dt);
const char* dtype_name(DType dt);  // "float32", ...
DType dtype_from_name(const std::string& name);  // throws TypeError for unknown names
bool is_floating(DType dt);
bool is_integral(DType dt);  // int32/int64 (not bool)
DType promote_types(DType a, DType b);

template <typename T>
struct dtype_of;
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::Int32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::Int64; };
template <> struct dtype_of<bfloat16> { static constexpr DType value = DType::BFloat16; };
template <> struct dtype_of<float> { static constexpr DType value = DType::Float32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::Float64; };

// The type arithmetic is carried out in: float for bfloat16, the type itself otherwise.
template <typename T> struct acc_type { using type = T; };
template <> struct acc_type<bfloat16> { using type = float; };
template <typename T> using acc_t = typename acc_type<T>::type;

}  // namespace needle

// Runs the body with `scalar_t` bound to the C++ type of `dt`. Kernels use these to instantiate
// one template per dtype; an unsupported dtype raises TypeError naming the op.
#define NEEDLE_DTYPE_CASE(enum_value, type, ...) \
  case ::needle::DType::enum_value: {            \
    using scalar_t = type;                       \
    __VA_ARGS__();                               \
    break;                                       \
  }

#define NEEDLE_DISPATCH_ALL(dt, opname, ...)                                           \
  switch (dt) {                                                                        \
    NEEDLE_DTYPE_CASE(Bool, bool, __VA_ARGS__)                                         \
    NEEDLE_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)                                     \
    NEEDLE_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)                                     \
    NEEDLE_DTYPE_CASE(BFloat16, ::needle::bfloat16, __VA_ARGS__)                       \
    NEEDLE_DTYPE_CASE(Float32, float, __VA_ARGS__)                                     \
    NEEDLE_DTYPE_CASE(Float64, double, __VA_ARGS__)                                    \
  }

#define NEEDLE_DISPATCH_NUMERIC(dt, opname, ...)                                        \
  switch (dt) {                                                                         \
    NEEDLE_DTYPE_CASE(Int32, int32_t, __VA_ARGS__)                                      \
    NEEDLE_DTYPE_CASE(Int64, int64_t, __VA_ARGS__)                                      \
    NEEDLE_DTYPE_CASE(BFloat16, ::needle::bfloat16, __VA_ARGS__)                        \
    NEEDLE_DTYPE_CASE(Float32, float, __VA_ARGS__)                                      \
    NEEDLE_DTYPE_CASE(Float64, double, __VA_ARGS__)                                      \
    default:                                                                            \
      throw ::needle::TypeError(::needle::detail::concat(opname, ": dtype ",            \
                                                         ::needle::dtype_name(dt),      \
                                                         " is not supported"));         \
  }

#define NEEDLE_DISPATCH_FLOATING(dt, opname, ...)                                       \
  switch (dt) {                                                                         \
    NEEDLE_DTYPE_CASE(BFloat16, ::needle::bfloat16, __VA_ARGS__)                        \
    NEEDLE_DTYPE_CASE(Float32, float, __VA_ARGS__)                                      \
    NEEDLE_DTYPE_CASE(Float64, double, __VA_ARGS__)                                     \
    default:                                                                            \
      throw ::needle::TypeError(::needle::detail::concat(                               \
          opname, ": expected a floating dtype (bfloat16, float32, float64), got ",     \
          ::needle::dtype_name(dt)));                                                   \
  }
