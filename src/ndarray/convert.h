// Element conversion and type helpers shared by the CPU and CUDA kernels, so both backends
// convert values the same way (NumPy/PyTorch semantics).
#pragma once
#include <cstdint>
#include <type_traits>

#include "ndarray/dtype.h"
#include "ndarray/macros.h"

namespace needle {

// bool is "!= 0"; bfloat16 goes through float.
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
