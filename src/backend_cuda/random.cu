// Random fills from the Philox4x32-10 stream (ndarray/philox.h), drawing exactly the numbers of
// the CPU kernel: the scheme is documented at the top of backend_cpu/random.cpp and repeated
// here step for step. Uniform and Bernoulli match bit for bit; Normal goes through logf / sinf /
// cosf, whose CUDA versions may differ from the host libm's in the last bit or two.
#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"
#include "ndarray/philox.h"

namespace needle::cuda {
namespace {

// The key of float64's independent low-bits stream (kFloat64LowKey in backend_cpu/random.cpp).
constexpr uint64_t kFloat64LowKey = 0x9E3779B97F4A7C15ull;

// N = numel of out. One thread per Philox counter c: elements 4c .. 4c+3, lane l = i % 4.
template <typename T>
__global__ void random_kernel(RandomKind kind, T* __restrict__ out, int64_t n, uint64_t seed,
                              uint64_t offset, double p0, double p1) {
  using U = acc_t<T>;
  const int64_t counters = (n + 3) / 4;
  const U two_pi = static_cast<U>(6.283185307179586476925286766559);
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < counters;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t counter = offset + static_cast<uint64_t>(c);
    const Philox4 x = philox4x32_10(seed, counter);
    U u[4];
    if constexpr (std::is_same_v<U, double>) {
      const Philox4 y = philox4x32_10(seed ^ kFloat64LowKey, counter);
#pragma unroll
      for (int l = 0; l < 4; ++l) u[l] = philox_uniform_double(y.x[l], x.x[l]);
    } else {
#pragma unroll
      for (int l = 0; l < 4; ++l) u[l] = philox_uniform_float(x.x[l]);
    }
    U v[4];
    switch (kind) {
      case RandomKind::Uniform:
#pragma unroll
        for (int l = 0; l < 4; ++l)
          v[l] = static_cast<U>(p0 + (p1 - p0) * static_cast<double>(u[l]));
        break;
      case RandomKind::Bernoulli:
#pragma unroll
        for (int l = 0; l < 4; ++l) v[l] = static_cast<double>(u[l]) < p0 ? U(1) : U(0);
        break;
      case RandomKind::Normal:
#pragma unroll
        for (int pair = 0; pair < 2; ++pair) {
          const U r = sqrt(U(-2) * log(U(1) - u[2 * pair]));
          const U theta = two_pi * u[2 * pair + 1];
          v[2 * pair] = static_cast<U>(p0 + p1 * (r * cos(theta)));
          v[2 * pair + 1] = static_cast<U>(p0 + p1 * (r * sin(theta)));
        }
        break;
    }
    const int64_t first = 4 * c;
    const int lanes = n - first < 4 ? static_cast<int>(n - first) : 4;
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < lanes) out[first + l] = convert<T>(v[l]);
  }
}

}  // namespace

void random(RandomKind kind, const ArrayRef& out, uint64_t seed, uint64_t offset, double p0,
            double p1) {
  NEEDLE_CHECK(out.is_compact(), ValueError, "cuda random: expected a compact output array");
  const int64_t n = out.numel();
  NEEDLE_DISPATCH_FLOATING(out.dtype, "random", [&] {
    if (n == 0) return;
    random_kernel<scalar_t><<<grid_for(ceil_div(n, 4), kThreads), kThreads, 0, stream()>>>(
        kind, static_cast<scalar_t*>(out.data), n, seed, offset, p0, p1);
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
