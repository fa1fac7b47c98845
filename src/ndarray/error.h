// Exceptions used across needle. The Python bindings map each to the matching Python exception,
// so every message must say what was expected and what was given.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace needle {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct IndexError : std::out_of_range {
  using std::out_of_range::out_of_range;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Device-side failures and missing features (a build without CUDA, a CUDA error).
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct OutOfMemoryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace needle

// NEEDLE_CHECK(cond, ErrorType, message parts...) throws ErrorType with the parts concatenated.
#define NEEDLE_CHECK(cond, Err, ...)                         \
  do {                                                       \
    if (!(cond)) throw Err(::needle::detail::concat(__VA_ARGS__)); \
  } while (0)
