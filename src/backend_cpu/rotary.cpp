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
  const int64_t N = x.shape[0], T_len = x.shape[1], D = x.shape[2], h = R / 2;
  const int64_t sn = x.strides[0], st = x.strides[1], sd = x.strides[2];
  const T* xp = static_cast<const T*>(x.data);
  parallel_for(N * T_len, std::max<int64_t>(1, kGrain / std::max<int64_t>(D, 1)),
               [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t n = r / T_len, t = r % T_len;
      const T* row = xp + n * sn + t * st;
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
  NEEDLE_CHECK(x.ndim == 3 && out.ndim == 3 && cos.ndim == 2 && sin.ndim == 2, ValueError, name,
               ": expected x and out (N, T, D) and cos, sin (T, R), got ", x.ndim, ", ", out.ndim,
               ", ", cos.ndim, " and ", sin.ndim, " dims");
  const int64_t T_len = x.shape[1], D = x.shape[2], R = cos.shape[1];
  NEEDLE_CHECK(cos.shape[0] == T_len && sin.shape[0] == T_len && sin.shape[1] == R && R % 2 == 0 &&
                   R <= D,
               ValueError, name, ": expected cos and sin of shape (", T_len, ", R) with R even and <= ",
               D, ", got (", cos.shape[0], ", ", R, ") and (", sin.shape[0], ", ", sin.shape[1], ")");
  NEEDLE_CHECK(cos.dtype == x.dtype && sin.dtype == x.dtype && out.dtype == x.dtype, TypeError, name,
               ": expected cos, sin and out of x's dtype ", dtype_name(x.dtype));
  NEEDLE_CHECK(cos.is_compact() && sin.is_compact() && out.is_compact(), ValueError, name,
               ": expected compact cos, sin and out");
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    rotary_typed<T>(x, static_cast<const T*>(cos.data), static_cast<const T*>(sin.data), R,
                    transpose, static_cast<T*>(out.data));
  });
}

}  // namespace needle::cpu_kernels
