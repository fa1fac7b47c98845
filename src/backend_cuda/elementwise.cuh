// The elementwise launcher shared by copy/fill/where, unary, binary and binary_scalar: one output
// and any number of inputs of one shape, applied through a functor that receives the stored
// input values and returns the stored output value (conversions live in the functor).
//
// Three kernels per functor, picked on the host after dimension coalescing:
//  - contiguous: every operand dense; 16-byte vector loads/stores when all pointers are aligned,
//  - 1-D strided: one coalesced dim with any strides, which covers scalar broadcast (stride 0)
//    and simple slices without any index division,
//  - N-D strided: per-element index decomposition over up to kMaxDims dims: in 32 bits with
//    multiply-shift division (StridedPlan32) when every index and offset fits, else int64.
#pragma once
#include <utility>

#include "backend_cuda/cuda_common.cuh"

namespace needle::cuda {

template <typename... Ts>
constexpr size_t max_size_of() {
  size_t m = 1;
  ((m = sizeof(Ts) > m ? sizeof(Ts) : m), ...);
  return m;
}

// Elements per thread in the contiguous kernel: one 16-byte access of the widest operand.
template <typename Out, typename... In>
constexpr int vec_width() {
  return static_cast<int>(16 / max_size_of<Out, In...>());
}

template <int N, typename F, typename Out, typename... In>
__device__ __forceinline__ void apply_vec(Out* out, const F& f, const VecN<In, N>&... v) {
  VecN<Out, N> o;
#pragma unroll
  for (int j = 0; j < N; ++j) o.v[j] = f(v.v[j]...);
  store_vec(out, o);
}

// n = number of elements. Each thread handles N consecutive elements per grid-stride step.
template <int N, typename F, typename Out, typename... In>
__global__ void ewise_contiguous_kernel(int64_t n, bool vectorized, F f, Out* out,
                                        const In*... in) {
  int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x * N;
  for (int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * N; base < n;
       base += step) {
    if (vectorized && base + N <= n) {
      apply_vec<N>(out + base, f, load_vec<In, N>(in + base)...);
    } else {
      int64_t end = base + N < n ? base + N : n;
      for (int64_t i = base; i < end; ++i) out[i] = f(in[i]...);
    }
  }
}

// n = number of elements; plan.strides[k][0]: element stride of operand k along the one dim.
template <typename F, typename Out, typename... In, size_t... I>
__device__ __forceinline__ void strided1d_body(const StridedPlan<1 + sizeof...(In)>& plan,
                                               const F& f, Out* out, std::index_sequence<I...>,
                                               const In*... in) {
  int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < plan.numel;
       i += step)
    out[i * plan.strides[0][0]] = f(in[i * plan.strides[I + 1][0]]...);
}

template <typename F, typename Out, typename... In>
__global__ void ewise_strided1d_kernel(StridedPlan<1 + sizeof...(In)> plan, F f, Out* out,
                                       const In*... in) {
  strided1d_body(plan, f, out, std::index_sequence_for<In...>{}, in...);
}

// The N-D strided kernel, over a StridedPlan32 (32-bit index arithmetic) wherever it applies, else
// a StridedPlan (int64): each thread takes kStridedUnroll elements blockDim.x apart (coalesced
// across the warp), computes every offset and result first and stores last, so its loads are in
// flight together.
constexpr int kStridedUnroll = 4;

template <typename Plan, typename F, typename Out, typename... In, size_t... I>
__device__ __forceinline__ void strided_body(const Plan& plan, const F& f, Out* out,
                                             std::index_sequence<I...>, const In*... in) {
  using Index = typename Plan::index_t;
  constexpr int K = 1 + sizeof...(In);
  const Index n = plan.numel;
  const Index step = Index(gridDim.x) * blockDim.x * kStridedUnroll;
  for (Index base = Index(blockIdx.x) * blockDim.x * kStridedUnroll + threadIdx.x; base < n;
       base += step) {
    typename Plan::offset_t off[kStridedUnroll][K];
    Out r[kStridedUnroll];
#pragma unroll
    for (int j = 0; j < kStridedUnroll; ++j) {
      const Index i = base + Index(j) * blockDim.x;
      if (i < n) {
        plan.offsets(i, off[j]);
        r[j] = f(in[off[j][I + 1]]...);
      }
    }
#pragma unroll
    for (int j = 0; j < kStridedUnroll; ++j)
      if (base + Index(j) * blockDim.x < n) out[off[j][0]] = r[j];
  }
}

template <typename Plan, typename F, typename Out, typename... In>
__global__ void ewise_strided_kernel(Plan plan, F f, Out* out, const In*... in) {
  strided_body(plan, f, out, std::index_sequence_for<In...>{}, in...);
}

template <typename T>
using ArrayRefFor = ArrayRef;

// out = f(in...) elementwise. Out and In are the stored element types of the operands.
template <typename Out, typename... In, typename F>
void launch_elementwise(const char* opname, const F& f, const ArrayRef& out,
                        const ArrayRefFor<In>&... in) {
  constexpr int K = 1 + sizeof...(In);
  const ArrayRef* ops[K] = {&out, &in...};
  StridedPlan<K> plan = make_plan<K>(ops, opname);
  if (plan.numel == 0) return;
  Out* o = static_cast<Out*>(out.data);
  if (plan.contiguous()) {
    constexpr int N = vec_width<Out, In...>();
    bool vectorized =
        aligned_to(o, N * sizeof(Out)) && (aligned_to(in.data, N * sizeof(In)) && ...);
    ewise_contiguous_kernel<N>
        <<<grid_for(plan.numel, int64_t(kThreads) * N), kThreads, 0, stream()>>>(
            plan.numel, vectorized, f, o, static_cast<const In*>(in.data)...);
  } else if (plan.ndim == 1) {
    ewise_strided1d_kernel<<<grid_for(plan.numel, kThreads), kThreads, 0, stream()>>>(
        plan, f, o, static_cast<const In*>(in.data)...);
  } else {
    const unsigned blocks = grid_for(plan.numel, int64_t(kThreads) * kStridedUnroll);
    if (StridedPlan32<K> narrow; narrow_plan(plan, &narrow))
      ewise_strided_kernel<<<blocks, kThreads, 0, stream()>>>(narrow, f, o,
                                                              static_cast<const In*>(in.data)...);
    else
      ewise_strided_kernel<<<blocks, kThreads, 0, stream()>>>(plan, f, o,
                                                              static_cast<const In*>(in.data)...);
  }
  NEEDLE_CUDA_LAUNCH_CHECK();
}


}  // namespace needle::cuda
