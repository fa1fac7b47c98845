// Fused AdamW steps (decoupled weight decay) over a list of parameters, in the order the CPU
// kernel (backend_cpu/adamw.cpp) and torch.optim.AdamW apply them: decay, moment updates,
// bias-corrected step. Each element's parameter, gradient and two moments are read and written
// once, and one launch updates a batch of parameters (multi_tensor.cuh): a model's 76 parameter
// arrays take two launches, not 76.
#include <cmath>
#include <vector>

#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/multi_tensor.cuh"

namespace needle::cuda {
namespace {

// Per-parameter constants, folded on the host in double as the CPU kernel folds them.
template <typename A>
struct AdamWConstants {
  A decay, b1, b2, one_minus_b1, one_minus_b2, step, inv_sqrt_bc2, eps;
};

// One parameter of a launch. `vec`: all four arrays can be read and written kVec elements at a
// time (aligned for it).
template <typename A>
struct AdamWItem {
  void* p;
  const void* g;
  void* m;
  void* v;
  int64_t n;
  AdamWConstants<A> k;
  bool vec;
};

// Elements per block, and per vector access.
constexpr int64_t kAdamWChunk = 4096;
constexpr int kVec = 4;

// One element's update in A = acc_t<P> (float for float32 / bfloat16 parameters, double for
// float64).
template <typename A, typename P, typename G, typename M>
__device__ __forceinline__ void adamw_element(P& p, G g, M& m, M& v, const AdamWConstants<A>& k) {
  const A gi = convert<A>(g);
  const A mi = k.b1 * convert<A>(m) + k.one_minus_b1 * gi;
  const A vi = k.b2 * convert<A>(v) + k.one_minus_b2 * gi * gi;
  m = convert<M>(mi);
  v = convert<M>(vi);
  // sqrt(vhat) = sqrt(v) / sqrt(bc2); mhat = m / bc1 is folded into `step`.
  const A denom = sqrt(vi) * k.inv_sqrt_bc2 + k.eps;
  p = convert<P>(convert<A>(p) * k.decay - k.step * mi / denom);
}

// P, G, M: storage types of parameter, gradient and moments. Block b updates elements
// [c * kAdamWChunk, (c + 1) * kAdamWChunk) of its item, c = b - the item's first block.
template <typename P, typename G, typename M>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(const __grid_constant__ TensorBatch<AdamWItem<acc_t<P>>> batch) {
  const int i = batch_item(batch);
  const AdamWItem<acc_t<P>>& it = batch.items[i];
  P* __restrict__ p = static_cast<P*>(it.p);
  const G* __restrict__ g = static_cast<const G*>(it.g);
  M* __restrict__ m = static_cast<M*>(it.m);
  M* __restrict__ v = static_cast<M*>(it.v);
  const int64_t begin = (static_cast<int64_t>(blockIdx.x) - batch.first_block[i]) * kAdamWChunk;
  const int64_t end = begin + kAdamWChunk < it.n ? begin + kAdamWChunk : it.n;
  int64_t tail = begin;
  if (it.vec) {
    tail = begin + (end - begin) / kVec * kVec;
    for (int64_t j = begin + threadIdx.x * kVec; j < tail; j += kThreads * kVec) {
      VecN<P, kVec> pv = load_vec<P, kVec>(p + j);
      const VecN<G, kVec> gv = load_vec<G, kVec>(g + j);
      VecN<M, kVec> mv = load_vec<M, kVec>(m + j), vv = load_vec<M, kVec>(v + j);
#pragma unroll
      for (int e = 0; e < kVec; ++e) adamw_element(pv.v[e], gv.v[e], mv.v[e], vv.v[e], it.k);
      store_vec(p + j, pv);
      store_vec(m + j, mv);
      store_vec(v + j, vv);
    }
  }
  for (int64_t j = tail + threadIdx.x; j < end; j += kThreads)
    adamw_element(p[j], g[j], m[j], v[j], it.k);
}

template <typename P, typename G, typename M>
AdamWItem<acc_t<P>> adamw_item(const AdamWParam& a) {
  using A = acc_t<P>;
  const AdamWConstants<A> k{static_cast<A>(1.0 - a.lr * a.weight_decay),
                            static_cast<A>(a.beta1),
                            static_cast<A>(a.beta2),
                            static_cast<A>(1.0 - a.beta1),
                            static_cast<A>(1.0 - a.beta2),
                            static_cast<A>(a.lr / a.bias_correction1),
                            static_cast<A>(1.0 / std::sqrt(a.bias_correction2)),
                            static_cast<A>(a.eps)};
  const bool vec = aligned_to(a.param.data, sizeof(P) * kVec) &&
                   aligned_to(a.grad.data, sizeof(G) * kVec) &&
                   aligned_to(a.exp_avg.data, sizeof(M) * kVec) &&
                   aligned_to(a.exp_avg_sq.data, sizeof(M) * kVec);
  return {a.param.data, a.grad.data, a.exp_avg.data, a.exp_avg_sq.data, a.param.numel(), k, vec};
}

bool same_dtypes(const AdamWParam& a, const AdamWParam& b) {
  return a.param.dtype == b.param.dtype && a.grad.dtype == b.grad.dtype &&
         a.exp_avg.dtype == b.exp_avg.dtype;
}

}  // namespace

void adamw(const AdamWParam* params, int64_t count) {
  for (int64_t i = 0; i < count; ++i) check_adamw_param("cuda adamw", params[i]);
  // One kernel per (parameter, gradient, moment) dtype combination, in order of appearance.
  std::vector<bool> taken(static_cast<size_t>(count), false);
  for (int64_t i = 0; i < count; ++i) {
    if (taken[i]) continue;
    NEEDLE_DISPATCH_FLOATING(params[i].param.dtype, "adamw", [&] {
      using P = scalar_t;
      NEEDLE_DISPATCH_FLOATING(params[i].grad.dtype, "adamw", [&] {
        using G = scalar_t;
        NEEDLE_DISPATCH_FLOATING(params[i].exp_avg.dtype, "adamw", [&] {
          using M = scalar_t;
          std::vector<AdamWItem<acc_t<P>>> items;
          for (int64_t j = i; j < count; ++j) {
            if (taken[j] || !same_dtypes(params[i], params[j])) continue;
            taken[j] = true;
            items.push_back(adamw_item<P, G, M>(params[j]));
          }
          launch_batches(items, kAdamWChunk, [](const auto& batch, unsigned blocks, int64_t) {
            adamw_kernel<P, G, M><<<blocks, kThreads, 0, stream()>>>(batch);
            NEEDLE_CUDA_LAUNCH_CHECK();
          });
        });
      });
    });
  }
}

}  // namespace needle::cuda
