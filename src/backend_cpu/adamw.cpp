// One fused AdamW step (Loshchilov & Hutter, decoupled weight decay) over compact arrays, in the
// order torch.optim.AdamW applies it: decay, moment updates, bias-corrected step.
#include <cmath>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

// N = number of parameters. P, G, M: storage types of the parameter, gradient and moments; the
// update runs in acc_t<P> (float for float32 / bfloat16 parameters, double for float64).
template <typename P, typename G, typename M>
void adamw_typed(int64_t n, P* p, const G* g, M* m, M* v, double lr, double beta1, double beta2,
                 double eps, double weight_decay, double bc1, double bc2) {
  using A = acc_t<P>;
  const A decay = static_cast<A>(1.0 - lr * weight_decay);
  const A b1 = static_cast<A>(beta1), b2 = static_cast<A>(beta2);
  const A one_minus_b1 = static_cast<A>(1.0 - beta1), one_minus_b2 = static_cast<A>(1.0 - beta2);
  const A step = static_cast<A>(lr / bc1);
  const A inv_sqrt_bc2 = static_cast<A>(1.0 / std::sqrt(bc2));
  const A e = static_cast<A>(eps);
  parallel_for(n, kGrain, [&](int64_t b, int64_t end) {
    for (int64_t i = b; i < end; ++i) {
      const A gi = convert<A>(g[i]);
      const A mi = b1 * convert<A>(m[i]) + one_minus_b1 * gi;
      const A vi = b2 * convert<A>(v[i]) + one_minus_b2 * gi * gi;
      m[i] = convert<M>(mi);
      v[i] = convert<M>(vi);
      // sqrt(vhat) = sqrt(v) / sqrt(bc2); mhat = m / bc1 is folded into `step`.
      const A denom = std::sqrt(vi) * inv_sqrt_bc2 + e;
      p[i] = convert<P>(convert<A>(p[i]) * decay - step * mi / denom);
    }
  });
}

}  // namespace

void adamw(const AdamWParam* params, int64_t count) {
  for (int64_t i = 0; i < count; ++i) check_adamw_param("adamw", params[i]);
  for (int64_t i = 0; i < count; ++i) {
    const AdamWParam& a = params[i];
    NEEDLE_DISPATCH_FLOATING(a.param.dtype, "adamw", [&] {
      using P = scalar_t;
      NEEDLE_DISPATCH_FLOATING(a.grad.dtype, "adamw", [&] {
        using G = scalar_t;
        NEEDLE_DISPATCH_FLOATING(a.exp_avg.dtype, "adamw", [&] {
          adamw_typed(a.param.numel(), static_cast<P*>(a.param.data),
                      static_cast<const G*>(a.grad.data), static_cast<scalar_t*>(a.exp_avg.data),
                      static_cast<scalar_t*>(a.exp_avg_sq.data), a.lr, a.beta1, a.beta2, a.eps,
                      a.weight_decay, a.bias_correction1, a.bias_correction2);
        });
      });
    });
  }
}

}  // namespace needle::cpu_kernels
