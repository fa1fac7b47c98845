// Rotary position embedding (backend.h: Backend::rotary), forward and its transpose, in one pass:
// a strided (P, Q, T, D) view in (q or k as the (B, H, T, D) view of a fused projection), a
// compact (P, Q, T, D) out. A thread per chunk of V consecutive output elements of a row: 16-byte
// chunks where the row's elements are contiguous and every chunk is aligned, so a chunk lies in
// one of [0, h), [h, R) or [R, D) (h = R / 2, R a multiple of 2V) and pairs with the chunk h away;
// single elements otherwise. Products and sums are rounded one by one (__fmul_rn / __fadd_rn,
// never an FMA), as separate elementwise kernels round them, so results equal the composition's
// bit for bit.
#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/strided_plan.h"

namespace needle::cuda {
namespace {

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// a * b + sign * (c * d), each product and the sum rounded to T.
template <typename T>
__device__ __forceinline__ T rotate_one(T a, T b, T c, T d, bool negate) {
  using A = acc_t<T>;
  const T p1 = convert<T>(mul_rn(convert<A>(a), convert<A>(b)));
  const T p2 = convert<T>(mul_rn(convert<A>(c), convert<A>(d)));
  const A second = negate ? -convert<A>(p2) : convert<A>(p2);
  return convert<T>(add_rn(convert<A>(p1), second));
}

// V elements at p as an array: one 16-byte access (load_vec / store_vec), or a single element.
template <typename T, int V>
__device__ __forceinline__ void load_chunk(const T* p, T (&v)[V]) {
  if constexpr (V > 1) {
    const VecN<T, V> w = load_vec<T, V>(p);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = w.v[k];
  } else {
    v[0] = p[0];
  }
}

template <typename T, int V>
__device__ __forceinline__ void store_chunk(T* p, const T (&v)[V]) {
  if constexpr (V > 1) {
    VecN<T, V> w;
#pragma unroll
    for (int k = 0; k < V; ++k) w.v[k] = v[k];
    store_vec(p, w);
  } else {
    p[0] = v[0];
  }
}

struct RotaryArgs {
  const void* x;
  int64_t sp, sq, st, sd;  // x's strides (elements); sd == 1 when V > 1
  uint32_t chunks;         // P * Q * T * (D / V) < 2^31
  IntDivider per_row, len, heads;  // D / V, T, Q
  int D, R;
  const void* cos;
  const void* sin;
  bool transpose;
  void* out;
};

template <typename T, int V>
__global__ void __launch_bounds__(kThreads) rotary_kernel(RotaryArgs a) {
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ cos = static_cast<const T*>(a.cos);
  const T* __restrict__ sin = static_cast<const T*>(a.sin);
  T* __restrict__ out = static_cast<T*>(a.out);
  const int h = a.R / 2;
  for (uint32_t c = blockIdx.x * blockDim.x + threadIdx.x; c < a.chunks;
       c += gridDim.x * blockDim.x) {
    const uint32_t row = a.per_row.div(c);
    const int j = static_cast<int>(c - row * a.per_row.divisor) * V;
    const uint32_t pq = a.len.div(row);
    const uint32_t t = row - pq * a.len.divisor;
    const uint32_t p = a.heads.div(pq);
    const uint32_t q = pq - p * a.heads.divisor;
    const T* xr = x + p * a.sp + q * a.sq + t * a.st;
    T self[V], o[V];
    load_chunk<T, V>(xr + j * a.sd, self);
    if (j >= a.R) {
      store_chunk<T, V>(out + static_cast<int64_t>(row) * a.D + j, self);
      continue;
    }
    // The chunk pairs with the one h away: out = self * cos + partner * s, where s is sin at
    // this chunk with rotate_half's sign (forward) or sin at the partner's position with the
    // opposite sign (transpose, the adjoint).
    const bool first = j < h;
    const int pj = first ? j + h : j - h;
    T partner[V], cs[V], sn[V];
    load_chunk<T, V>(xr + pj * a.sd, partner);
    const T* ct = cos + static_cast<int64_t>(t) * a.R;
    const T* stab = sin + static_cast<int64_t>(t) * a.R;
    load_chunk<T, V>(ct + j, cs);
    load_chunk<T, V>(stab + (a.transpose ? pj : j), sn);
    const bool negate = a.transpose ? !first : first;
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = rotate_one(self[k], cs[k], partner[k], sn[k], negate);
    store_chunk<T, V>(out + static_cast<int64_t>(row) * a.D + j, o);
  }
}

// The chunk width: 16 bytes where every chunk is contiguous and aligned, else one element.
template <typename T>
int chunk_width(const ArrayRef& x, const ArrayRef& cos, const ArrayRef& sin, const ArrayRef& out,
                int64_t D, int64_t R) {
  constexpr int V = static_cast<int>(16 / sizeof(T));
  const bool vec = x.strides[3] == 1 && D % V == 0 && R % (2 * V) == 0 &&
                   x.strides[0] % V == 0 && x.strides[1] % V == 0 && x.strides[2] % V == 0 &&
                   aligned_to(x.data, 16) && aligned_to(cos.data, 16) &&
                   aligned_to(sin.data, 16) && aligned_to(out.data, 16);
  return vec ? V : 1;
}

template <typename T, int V>
void launch(RotaryArgs a) {
  rotary_kernel<T, V><<<grid_for(a.chunks, kThreads), kThreads, 0, stream()>>>(a);
  NEEDLE_CUDA_LAUNCH_CHECK();
}

}  // namespace

void rotary(const ArrayRef& x, const ArrayRef& cos, const ArrayRef& sin, bool transpose,
            const ArrayRef& out) {
  const char* name = "cuda rotary";
  const int64_t R = check_rotary_args(name, x, cos, sin, out);
  const int64_t Q = x.shape[1], T_len = x.shape[2], D = x.shape[3];
  if (out.numel() == 0) return;
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    const int V = chunk_width<T>(x, cos, sin, out, D, R);
    NEEDLE_CHECK(out.numel() / V < (int64_t{1} << 31), ValueError, name,
                 ": at most 2^31 chunks of ", V, " elements, got ", out.numel() / V);
    RotaryArgs a{x.data, x.strides[0], x.strides[1], x.strides[2], x.strides[3],
                 static_cast<uint32_t>(out.numel() / V), IntDivider(static_cast<uint32_t>(D / V)),
                 IntDivider(static_cast<uint32_t>(T_len)), IntDivider(static_cast<uint32_t>(Q)),
                 static_cast<int>(D), static_cast<int>(R), cos.data, sin.data, transpose, out.data};
    if (V > 1) {
      launch<T, 16 / sizeof(T)>(a);
    } else {
      launch<T, 1>(a);
    }
  });
}

}  // namespace needle::cuda
