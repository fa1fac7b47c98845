// Rotary position embedding (backend.h: Backend::rotary), forward and its transpose, in one pass:
// a strided (N, T, D) view in, a compact (N, T, D) out.
// A warp per row: lane j < h forms the pair (j, j + h), the other lanes copy the dims past R.
// Products and sums are rounded one by one (__fmul_rn / __fadd_rn, never an FMA), as separate
// elementwise kernels round them, so results equal the composition's bit for bit.
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/cuda_common.cuh"

namespace needle::cuda {
namespace {

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename T>
__device__ __forceinline__ T mul_t(T a, T b) {
  using A = acc_t<T>;
  return convert<T>(mul_rn(convert<A>(a), convert<A>(b)));
}
template <typename T>
__device__ __forceinline__ T add_t(T a, T b) {
  using A = acc_t<T>;
  return convert<T>(add_rn(convert<A>(a), convert<A>(b)));
}
template <typename T>
__device__ __forceinline__ T neg_t(T a) {
  return convert<T>(-convert<acc_t<T>>(a));
}

constexpr int kRowsPerBlock = 8;  // warps per block, one row each at a time

template <typename T>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    rotary_kernel(const T* __restrict__ x, int64_t sn, int64_t st, int64_t sd, int64_t rows,
                  int64_t T_len, int D, int R, const T* __restrict__ cos,
                  const T* __restrict__ sin, bool transpose, T* __restrict__ out) {
  const int h = R / 2;
  const int slots = D - h;  // h pairs, then D - R copied dims
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t n = r / T_len, t = r - n * T_len;
    const T* row = x + n * sn + t * st;
    const T* c = cos + t * R;
    const T* s = sin + t * R;
    T* o = out + r * D;
    for (int j = threadIdx.x; j < slots; j += 32) {
      if (j < h) {
        const T lo = row[j * sd], hi = row[(j + h) * sd];
        if (!transpose) {
          o[j] = add_t(mul_t(lo, c[j]), neg_t(mul_t(hi, s[j])));
          o[j + h] = add_t(mul_t(hi, c[j + h]), mul_t(lo, s[j + h]));
        } else {
          o[j] = add_t(mul_t(lo, c[j]), mul_t(hi, s[j + h]));
          o[j + h] = add_t(mul_t(hi, c[j + h]), neg_t(mul_t(lo, s[j])));
        }
      } else {
        const int i = j + h;  // R .. D - 1
        o[i] = row[i * sd];
      }
    }
  }
}

}  // namespace

void rotary(const ArrayRef& x, const ArrayRef& cos, const ArrayRef& sin, bool transpose,
            const ArrayRef& out) {
  const char* name = "cuda rotary";
  const int64_t R = check_rotary_args(name, x, cos, sin, out);
  const int64_t N = x.shape[0], T_len = x.shape[1], D = x.shape[2];
  NEEDLE_CHECK(D <= (int64_t{1} << 30), ValueError, name, ": rows of at most 2^30 elements, got ", D);
  const int64_t rows = N * T_len;
  if (rows == 0 || D == 0) return;
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    rotary_kernel<T><<<grid_for(rows, kRowsPerBlock), dim3(32, kRowsPerBlock), 0, stream()>>>(
        static_cast<const T*>(x.data), x.strides[0], x.strides[1], x.strides[2], rows, T_len,
        static_cast<int>(D), static_cast<int>(R), static_cast<const T*>(cos.data),
        static_cast<const T*>(sin.data), transpose, static_cast<T*>(out.data));
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
