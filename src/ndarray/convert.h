// Element conversion and type helpers shared by the CPU and CUDA kernels, so both backends
// convert values the same way (NumPy/PyTorch semantics).
#pragma once
#include <cstdint>
#include <type_traits>

#include "ndarray/dtype.h"
#include "ndarray/macros.h"

namespace needle {

// bool is "!= 0"; bfloat16 goes through float. A float becomes an int truncated toward zero and
// saturated, NaN as 0: what the GPU's conversion instruction does, so both backends agree (a C++
// cast of an out-of-range float is undefined; x86 gave INT_MIN for all of them).
template <typename To, typename From>
NEEDLE_HD To convert(From v) {
  if constexpr (std::is_same_v<From, bfloat16>) {
    return convert<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else if constexpr (std::is_same_v<To, bfloat16>) {
    return bfloat16(static_cast<float>(v));
  } else if constexpr (std::is_floating_point_v<From> && std::is_integral_v<To>) {
    static_assert(std::is_signed_v<To> && (sizeof(To) == 4 || sizeof(To) == 8));
    // -2**(bits-1) and 2**(bits-1), exact in float and double.
    constexpr From lo = sizeof(To) == 4 ? From(-0x1p31) : From(-0x1p63);
    constexpr To min_v = sizeof(To) == 4 ? To(INT32_MIN) : To(INT64_MIN);
    constexpr To max_v = sizeof(To) == 4 ? To(INT32_MAX) : To(INT64_MAX);
    if (!(v == v)) return To(0);
    if (v <= lo) return min_v;  // values in (lo - 1, lo] truncate to lo anyway
    if (v >= -lo) return max_v;
    return static_cast<To>(v);
  } else {
    return static_cast<To>(v);
  }
}

// The type elementwise arithmetic runs in: float for bfloat16 (acc_t), int32 for bool so that
// arithmetic on bools has no surprising promotions.
template <typename T>
struct compute_type {
  using type = acc_t<T>;
};
template <>
struct compute_type<bool> {
  using type = int32_t;
};
template <typename T>
using compute_t = typename compute_type<T>::type;

}  // namespace needle

// Binds bits_t to the unsigned integer of `size` bytes, for kernels that move elements without
// interpreting them (copy within one dtype, where, fill), so NaN payloads and -0 survive.
#define NEEDLE_DISPATCH_BITS(size, ...) \
  switch (size) {                       \
    case 1: {                           \
      using bits_t = uint8_t;           \
      __VA_ARGS__();                    \
      break;                            \
    }                                   \
    case 2: {                           \
      using bits_t = uint16_t;          \
      __VA_ARGS__();                    \
      break;                            \
    }                                   \
    case 4: {                           \
      using bits_t = uint32_t;          \
      __VA_ARGS__();                    \
      break;                            \
    }                                   \
    default: {                          \
      using bits_t = uint64_t;          \
      __VA_ARGS__();                    \
      break;                            \
    }                                   \
  }
