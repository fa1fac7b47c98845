// Rotary position embedding (backend.h: Backend::rotary), forward and its transpose, in one pass
// over x: rows (n, t) are split over threads. Built with -ffp-contract=off (CMakeLists.txt): each
// product and the sum are rounded on their own, as separate elementwise kernels round them.
#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

// a * b and a + b rounded to T, computed in T's arithmetic type as the elementwise kernels do.
template <typename T>
T mul_t(T a, T b) {
  return convert<T>(convert<acc_t<T>>(a) * convert<acc_t<T>>(b));
}
template <typename T>
T add_t(T a, T b) {
  return convert<T>(convert<acc_t<T>>(a) + convert<acc_t<T>>(b));
}
template <typename T>
T neg_t(T a) {
  return convert<T>(-convert<acc_t<T>>(a));
}

template <typename T>
void rotary_typed(const ArrayRef& x, const T* cos, const T* sin, int64_t R, bool transpose,
                  T* out) {
  const int64_t Q = x.shape[1], T_len = x.shape[2], D = x.shape[3], h = R / 2;
  const int64_t sp = x.strides[0], sq = x.strides[1], st = x.strides[2], sd = x.strides[3];
  const T* xp = static_cast<const T*>(x.data);
  parallel_for(x.shape[0] * Q * T_len, std::max<int64_t>(1, kGrain / std::max<int64_t>(D, 1)),
               [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t t = r % T_len, q = (r / T_len) % Q, p = r / (T_len * Q);
      const T* row = xp + p * sp + q * sq + t * st;
      const T* c = cos + t * R;
      const T* s = sin + t * R;
      T* o = out + r * D;
      for (int64_t i = 0; i < h; ++i) {
        const T lo = row[i * sd], hi = row[(i + h) * sd];
        if (!transpose) {
          o[i] = add_t(mul_t(lo, c[i]), neg_t(mul_t(hi, s[i])));
          o[i + h] = add_t(mul_t(hi, c[i + h]), mul_t(lo, s[i + h]));
        } else {
          o[i] = add_t(mul_t(lo, c[i]), mul_t(hi, s[i + h]));
          o[i + h] = add_t(mul_t(hi, c[i + h]), neg_t(mul_t(lo, s[i])));
        }
      }
      for (int64_t i = R; i < D; ++i) o[i] = row[i * sd];
    }
  });
}

}  // namespace

void rotary(const ArrayRef& x, const ArrayRef& cos, const ArrayRef& sin, bool transpose,
            const ArrayRef& out) {
  const char* name = "rotary";
  const int64_t R = check_rotary_args(name, x, cos, sin, out);
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    rotary_typed<T>(x, static_cast<const T*>(cos.data), static_cast<const T*>(sin.data), R,
                    transpose, static_cast<T*>(out.data));
  });
}

}  // namespace needle::cpu_kernels
