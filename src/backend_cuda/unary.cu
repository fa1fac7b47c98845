// Unary elementwise kernels: out = f(a) for the ops of NEEDLE_UNARY_OPS (ops.h) and logical_not,
// plus a faster exact-erf gelu for bfloat16 (gelu_bf16 below).
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/elementwise.cuh"

namespace needle::cuda {
namespace {

// Applies an ops.h functor in compute_t<In> (float for bfloat16, int32 for bool) and converts the
// result to the stored output type.
template <typename Op, typename In, typename Out>
struct UnaryFn {
  __device__ Out operator()(In a) const { return convert<Out>(Op{}(convert<compute_t<In>>(a))); }
};

template <typename Op, typename In, typename Out>
void run(const char* name, const ArrayRef& a, const ArrayRef& out) {
  launch_elementwise<Out, In>(name, UnaryFn<Op, In, Out>{}, out, a);
}

// --- gelu for bfloat16 ------------------------------------------------------------------------
// bfloat16 moves 4 bytes per element, so at the copy bandwidth an SM sub-partition must finish an
// element in about 30 issue slots; erff and the software rounding to bfloat16 took most of that.
// This computes the same exact-erf gelu(x) = x * Phi(x) (Phi the normal CDF) in float with fewer:
//   h = erfc(|x| / sqrt 2) / 2 = t * exp(-x^2 / 2 + P(t)) / 2,   t = 1 / (1 + 0.55 |x| / sqrt 2),
//   Phi(x) = 1 - h for x >= 0, h for x < 0;   gelu(x) = x * |[x >= 0] - h|,
// the erfc form of Numerical Recipes' erfcc, with P of degree 6 fitted (weighted minimax, in log2
// units with the 1/2 folded in) to log(erfc(z) / t) + z^2 for z = |x| / sqrt 2 <= 9.5, beyond
// which gelu underflows. Checked in float arithmetic against float64 over every bfloat16 input and
// a float sweep, with the hardware rcp / ex2 approximations' errors (1 ulp, 3e-7) added either
// way: the error stays below 1e-6 * |gelu(x)| + 1e-8, and below 5e-5 * |gelu(x)| for every x > -13
// (1% of bfloat16's half unit), so the bfloat16 result is the rounded exact value except on
// near-ties (one unit off) and for x < -13.1, where |gelu| < 2e-38 flushes to -0. Multiplying by
// |[x >= 0] - h| rather than 1 - h or h keeps the float formula's special values: gelu(+inf) = inf,
// gelu(-inf) = NaN (-inf * 0, as on the CPU and in torch), NaN stays NaN.
__device__ __forceinline__ float rcp_approx(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float gelu_erf_fast(float x) {
  const float t = rcp_approx(fmaf(fabsf(x), 0.3889087438583374f, 1.0f));
  float p = -0.2513718008995056f;
  p = fmaf(p, t, 1.1944799423217773f);
  p = fmaf(p, t, -2.040411949157715f);
  p = fmaf(p, t, 1.136631965637207f);
  p = fmaf(p, t, 0.15200898051261902f);
  p = fmaf(p, t, 1.5006808042526245f);
  p = fmaf(p, t, -2.6920177936553955f);
  // log2(h) = -x^2 log2(e) / 2 + p
  const float h = t * exp2_approx(fmaf(x * -0.72134752044448170f, x, p));
  return x * fabsf((x >= 0.0f ? 1.0f : 0.0f) - h);
}

// Two floats to a pair of bfloat16 (round to nearest even) in one instruction; lo in the low half.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return static_cast<uint32_t>(bfloat16(lo).bits) | (static_cast<uint32_t>(bfloat16(hi).bits) << 16);
#endif
}
// gelu of the two bfloat16 held in one word.
__device__ __forceinline__ uint32_t gelu_bf16x2(uint32_t w) {
  return pack_bf16x2(gelu_erf_fast(__uint_as_float(w << 16)),
                     gelu_erf_fast(__uint_as_float(w & 0xffff0000u)));
}
__device__ __forceinline__ uint4 gelu_bf16x8(uint4 v) {
  return make_uint4(gelu_bf16x2(v.x), gelu_bf16x2(v.y), gelu_bf16x2(v.z), gelu_bf16x2(v.w));
}

struct GeluBf16Fn {
  __device__ bfloat16 operator()(bfloat16 a) const {
    return bfloat16(gelu_erf_fast(static_cast<float>(a)));
  }
};

// N = number of elements; x and out 16-byte aligned. Each thread takes two 8-element vectors per
// grid-stride step (ptxas issues the second load while the first vector is computed); the last
// n % 8 elements go to the first threads of block 0. SASS (sm_90, nvcc 13): the loop body is 273
// instructions for 16 elements, 17 per element: 9 FFMA, 2 FMUL, 2 MUFU (rcp, ex2), 1 FSET, 1 to
// unpack, 1/2 F2FP to pack, and the loads, stores and loop control. H200, 64M elements: 89% of
// the copy bandwidth (erff: 59%).
__global__ void __launch_bounds__(kThreads)
    gelu_bf16_kernel(int64_t n, const uint4* __restrict__ x, uint4* __restrict__ out) {
  const int64_t nv = n / 8;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + stride < nv; i += 2 * stride) {
    const uint4 a = x[i], b = x[i + stride];
    out[i] = gelu_bf16x8(a);
    out[i + stride] = gelu_bf16x8(b);
  }
  if (i < nv) out[i] = gelu_bf16x8(x[i]);
  if (blockIdx.x == 0 && threadIdx.x < n - nv * 8) {
    const int64_t k = nv * 8 + threadIdx.x;
    reinterpret_cast<bfloat16*>(out)[k] = GeluBf16Fn{}(reinterpret_cast<const bfloat16*>(x)[k]);
  }
}

// The bfloat16 gelu: the vector kernel for dense aligned operands, the shared launcher (same
// arithmetic, one element at a time) for views.
void gelu_bf16(const ArrayRef& a, const ArrayRef& out) {
  const ArrayRef* ops[2] = {&out, &a};
  const StridedPlan<2> plan = make_plan<2>(ops, "gelu");
  if (plan.numel == 0) return;
  if (!plan.contiguous() || !aligned_to(a.data, 16) || !aligned_to(out.data, 16)) {
    launch_elementwise<bfloat16, bfloat16>("gelu", GeluBf16Fn{}, out, a);
    return;
  }
  const unsigned grid = grid_for(ceil_div(plan.numel, 8), int64_t(kThreads) * 2);
  gelu_bf16_kernel<<<grid, kThreads, 0, stream()>>>(plan.numel, static_cast<const uint4*>(a.data),
                                                    static_cast<uint4*>(out.data));
  NEEDLE_CUDA_LAUNCH_CHECK();
}

}  // namespace

// N = number of elements of a (== out).
void unary(UnaryOp op, const ArrayRef& a, const ArrayRef& out) {
  DType want = op == UnaryOp::LogicalNot ? DType::Bool : a.dtype;
  NEEDLE_CHECK(out.dtype == want, TypeError, "cuda ", op_name(op), ": expected out of dtype ",
               dtype_name(want), ", got ", dtype_name(out.dtype));
  if (op == UnaryOp::Gelu && a.dtype == DType::BFloat16) return gelu_bf16(a, out);
  switch (op) {
#define NEEDLE_NUMERIC_CASE(Name, fname, ...)                           \
  case UnaryOp::Name:                                                   \
    NEEDLE_DISPATCH_NUMERIC(a.dtype, #fname, [&] {                      \
      run<functors::Name##Functor, scalar_t, scalar_t>(#fname, a, out); \
    })                                                                  \
    return;
    NEEDLE_UNARY_NUMERIC_OPS(NEEDLE_NUMERIC_CASE)
#undef NEEDLE_NUMERIC_CASE
#define NEEDLE_FLOAT_CASE(Name, fname, ...)                             \
  case UnaryOp::Name:                                                   \
    NEEDLE_DISPATCH_FLOATING(a.dtype, #fname, [&] {                     \
      run<functors::Name##Functor, scalar_t, scalar_t>(#fname, a, out); \
    })                                                                  \
    return;
    NEEDLE_UNARY_FLOAT_OPS(NEEDLE_FLOAT_CASE)
#undef NEEDLE_FLOAT_CASE
    case UnaryOp::LogicalNot:
      NEEDLE_DISPATCH_ALL(a.dtype, "logical_not", [&] {
        run<functors::LogicalNotFunctor, scalar_t, bool>("logical_not", a, out);
      })
      return;
  }
  throw ValueError(detail::concat("cuda unary: unknown op code ", static_cast<int>(op)));
}

}  // namespace needle::cuda
