// Random fills from the Philox4x32-10 stream (ndarray/philox.h). This comment is the reference
// scheme; the CUDA kernel implements the same one so both devices draw the same numbers.
//
// Element i of the compact output (flat index) uses counter c = offset + i / 4 and lane
// l = i % 4 of X = philox4x32_10(seed, c). Every dtype consumes ceil(numel / 4) counters.
//
//  uniform bits u_i in [0, 1):
//    float32, bfloat16: u = philox_uniform_float(X[l])                  (24 bits)
//    float64:           u = philox_uniform_double(Y[l], X[l])           (53 bits)
//                       with Y = philox4x32_10(seed ^ kFloat64LowKey, c), an independent
//                       stream for the low bits (kFloat64LowKey = 0x9E3779B97F4A7C15), so
//                       float64 keeps the one-lane-per-element counter layout of the other
//                       dtypes.
//  Uniform(p0, p1):   value = p0 + (p1 - p0) * u, evaluated in double, rounded to the dtype.
//  Bernoulli(p0):     value = (u < p0) ? 1 : 0 (u compared in double).
//  Normal(p0, p1):    Box-Muller on the lane pairs (0, 1) and (2, 3) of one counter:
//                       a = u of lane 2 * (l / 2), b = u of lane 2 * (l / 2) + 1,
//                       r = sqrt(-2 log(1 - a)), theta = 2 pi b   (1 - a is in (0, 1]: no log 0)
//                       z = r cos(theta) for even l, r sin(theta) for odd l,
//                       value = p0 + p1 * z.
//                     Evaluated in float (logf, sqrtf, cosf, sinf) for float32 / bfloat16, in
//                     double for float64.
#include <cmath>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"
#include "ndarray/philox.h"

namespace needle::cpu_kernels {
namespace {

constexpr uint64_t kFloat64LowKey = 0x9E3779B97F4A7C15ull;

// The four uniforms of one counter, in the dtype's precision (float or double).
template <typename U>
void uniforms(uint64_t seed, uint64_t counter, U (&u)[4]) {
  const Philox4 x = philox4x32_10(seed, counter);
  if constexpr (std::is_same_v<U, double>) {
    const Philox4 y = philox4x32_10(seed ^ kFloat64LowKey, counter);
    for (int l = 0; l < 4; ++l) u[l] = philox_uniform_double(y.x[l], x.x[l]);
  } else {
    for (int l = 0; l < 4; ++l) u[l] = philox_uniform_float(x.x[l]);
  }
}

// N = number of elements; T the storage type, U = acc_t<T> the precision of the draws.
template <typename T>
void random_typed(RandomKind kind, T* out, int64_t n, uint64_t seed, uint64_t offset, double p0,
                  double p1) {
  using U = acc_t<T>;
  const int64_t counters = (n + 3) / 4;
  const U two_pi = static_cast<U>(6.283185307179586476925286766559);
  parallel_for(counters, kGrain / 4, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      U u[4];
      uniforms<U>(seed, offset + static_cast<uint64_t>(c), u);
      U v[4];
      switch (kind) {
        case RandomKind::Uniform:
          for (int l = 0; l < 4; ++l)
            v[l] = static_cast<U>(p0 + (p1 - p0) * static_cast<double>(u[l]));
          break;
        case RandomKind::Bernoulli:
          for (int l = 0; l < 4; ++l) v[l] = static_cast<double>(u[l]) < p0 ? U(1) : U(0);
          break;
        case RandomKind::Normal:
          for (int pair = 0; pair < 2; ++pair) {
            const U r = std::sqrt(U(-2) * std::log(U(1) - u[2 * pair]));
            const U theta = two_pi * u[2 * pair + 1];
            v[2 * pair] = static_cast<U>(p0 + p1 * (r * std::cos(theta)));
            v[2 * pair + 1] = static_cast<U>(p0 + p1 * (r * std::sin(theta)));
          }
          break;
      }
      const int64_t first = 4 * c;
      const int lanes = static_cast<int>(std::min<int64_t>(4, n - first));
      for (int l = 0; l < lanes; ++l) out[first + l] = convert<T>(v[l]);
    }
  });
}

}  // namespace

void random(RandomKind kind, const ArrayRef& out, uint64_t seed, uint64_t offset, double p0,
            double p1) {
  NEEDLE_CHECK(out.is_compact(), ValueError, "random: expected a compact output array");
  NEEDLE_DISPATCH_FLOATING(out.dtype, "random", [&] {
    random_typed(kind, static_cast<scalar_t*>(out.data), out.numel(), seed, offset, p0, p1);
  });
}

}  // namespace needle::cpu_kernels
