// One fused AdamW step (decoupled weight decay) over compact arrays, in the order the CPU kernel
// (backend_cpu/adamw.cpp) and torch.optim.AdamW apply it: decay, moment updates, bias-corrected
// step. One pass: each element's parameter, gradient and two moments are read and written once.
#include <cmath>

#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"

namespace needle::cuda {
namespace {

// Per-step constants, folded on the host in double as the CPU kernel folds them.
template <typename A>
struct AdamWConstants {
  A decay, b1, b2, one_minus_b1, one_minus_b2, step, inv_sqrt_bc2, eps;
};

// N = number of parameters. P, G, M: storage types of parameter, gradient and moments; the
// update runs in acc_t<P> (float for float32 / bfloat16 parameters, double for float64).
template <typename P, typename G, typename M>
__global__ void adamw_kernel(int64_t n, P* __restrict__ p, const G* __restrict__ g,
                             M* __restrict__ m, M* __restrict__ v, AdamWConstants<acc_t<P>> k) {
  using A = acc_t<P>;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const A gi = convert<A>(g[i]);
    const A mi = k.b1 * convert<A>(m[i]) + k.one_minus_b1 * gi;
    const A vi = k.b2 * convert<A>(v[i]) + k.one_minus_b2 * gi * gi;
    m[i] = convert<M>(mi);
    v[i] = convert<M>(vi);
    // sqrt(vhat) = sqrt(v) / sqrt(bc2); mhat = m / bc1 is folded into `step`.
    const A denom = sqrt(vi) * k.inv_sqrt_bc2 + k.eps;
    p[i] = convert<P>(convert<A>(p[i]) * k.decay - k.step * mi / denom);
  }
}

}  // namespace

// N = number of parameters in each of the four arrays.
void adamw(const ArrayRef& param, const ArrayRef& grad, const ArrayRef& exp_avg,
           const ArrayRef& exp_avg_sq, double lr, double beta1, double beta2, double eps,
           double weight_decay, double bias_correction1, double bias_correction2) {
  const int64_t n = param.numel();
  NEEDLE_CHECK(grad.numel() == n && exp_avg.numel() == n && exp_avg_sq.numel() == n, ValueError,
               "cuda adamw: expected param, grad, exp_avg and exp_avg_sq of equal length, got ", n,
               ", ", grad.numel(), ", ", exp_avg.numel(), " and ", exp_avg_sq.numel());
  NEEDLE_CHECK(exp_avg.dtype == exp_avg_sq.dtype, TypeError,
               "cuda adamw: expected exp_avg and exp_avg_sq of one dtype, got ",
               dtype_name(exp_avg.dtype), " and ", dtype_name(exp_avg_sq.dtype));
  NEEDLE_CHECK(bias_correction1 > 0 && bias_correction2 > 0, ValueError,
               "cuda adamw: expected positive bias corrections (step >= 1), got ", bias_correction1,
               " and ", bias_correction2);
  NEEDLE_CHECK(
      param.is_compact() && grad.is_compact() && exp_avg.is_compact() && exp_avg_sq.is_compact(),
      ValueError, "cuda adamw: expected compact param, grad, exp_avg and exp_avg_sq");
  NEEDLE_DISPATCH_FLOATING(param.dtype, "adamw", [&] {
    using P = scalar_t;
    using A = acc_t<P>;
    const AdamWConstants<A> k{static_cast<A>(1.0 - lr * weight_decay),
                              static_cast<A>(beta1),
                              static_cast<A>(beta2),
                              static_cast<A>(1.0 - beta1),
                              static_cast<A>(1.0 - beta2),
                              static_cast<A>(lr / bias_correction1),
                              static_cast<A>(1.0 / std::sqrt(bias_correction2)),
                              static_cast<A>(eps)};
    NEEDLE_DISPATCH_FLOATING(grad.dtype, "adamw", [&] {
      using G = scalar_t;
      NEEDLE_DISPATCH_FLOATING(exp_avg.dtype, "adamw", [&] {
        if (n == 0) return;
        adamw_kernel<P, G, scalar_t><<<grid_for(n, kThreads), kThreads, 0, stream()>>>(
            n, static_cast<P*>(param.data), static_cast<const G*>(grad.data),
            static_cast<scalar_t*>(exp_avg.data), static_cast<scalar_t*>(exp_avg_sq.data), k);
        NEEDLE_CUDA_LAUNCH_CHECK();
      });
    });
  });
}

}  // namespace needle::cuda
