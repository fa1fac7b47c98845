// Layer normalisation over the last axis, forward and backward, on compact (rows, d) arrays.
// Statistics are computed in double (two passes: mean, then centred variance) and saved as
// float32 mean / rstd for the backward pass, as the contract asks.
#include <cmath>
#include <vector>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

// A compact floating 1-D array of n values (weight, bias, any floating dtype) read as double;
// empty when the optional array is absent.
std::vector<double> read_optional(const ArrayRef* a, int64_t n, const char* what,
                                  const char* operand) {
  std::vector<double> v;
  if (a == nullptr) return v;
  NEEDLE_CHECK(a->numel() == n, ValueError, what, ": expected ", operand, " of ", n,
               " elements, got ", a->numel());
  v.resize(n);
  NEEDLE_DISPATCH_FLOATING(a->dtype, what, [&] {
    const auto* p = static_cast<const scalar_t*>(a->data);
    for (int64_t i = 0; i < n; ++i) v[i] = convert<double>(p[i]);
  });
  return v;
}

void check_stats(const ArrayRef& mean, const ArrayRef& rstd, int64_t rows, DType input,
                 const char* what) {
  const DType want = stats_dtype(input);
  NEEDLE_CHECK(mean.dtype == want && rstd.dtype == want, TypeError, what, ": expected ",
               dtype_name(want), " mean and rstd, got ", dtype_name(mean.dtype), " and ",
               dtype_name(rstd.dtype));
  NEEDLE_CHECK(mean.numel() == rows && rstd.numel() == rows, ValueError, what, ": expected ", rows,
               " mean and rstd values, got ", mean.numel(), " and ", rstd.numel());
}

// Statistics are float32, or float64 for float64 inputs (stats_dtype).
void store_stat(const ArrayRef& a, int64_t i, double v) {
  if (a.dtype == DType::Float64)
    static_cast<double*>(a.data)[i] = v;
  else
    static_cast<float*>(a.data)[i] = static_cast<float>(v);
}
double load_stat(const ArrayRef& a, int64_t i) {
  return a.dtype == DType::Float64 ? static_cast<const double*>(a.data)[i]
                                   : static_cast<const float*>(a.data)[i];
}

// Writes a double vector into a compact floating array of its dtype.
void write_floats(const std::vector<double>& v, const ArrayRef& dst, const char* what) {
  NEEDLE_CHECK(dst.numel() == static_cast<int64_t>(v.size()), ValueError, what, ": expected ",
               v.size(), " output elements, got ", dst.numel());
  NEEDLE_DISPATCH_FLOATING(dst.dtype, what, [&] {
    auto* p = static_cast<scalar_t*>(dst.data);
    for (size_t i = 0; i < v.size(); ++i) p[i] = convert<scalar_t>(v[i]);
  });
}

}  // namespace

// R = rows, D = normalised features. y = (x - mean) * rstd * weight + bias.
void layer_norm_forward(const ArrayRef& x, const ArrayRef* weight, const ArrayRef* bias, double eps,
                        int64_t rows, int64_t d, const ArrayRef& y, const ArrayRef& mean,
                        const ArrayRef& rstd) {
  const char* name = "layer_norm";
  NEEDLE_CHECK(x.numel() == rows * d && y.numel() == rows * d, ValueError, name, ": expected ",
               rows, " x ", d, " x and y, got ", x.numel(), " and ", y.numel(), " elements");
  NEEDLE_CHECK(y.dtype == x.dtype, TypeError, name, ": expected y of dtype ", dtype_name(x.dtype),
               ", got ", dtype_name(y.dtype));
  check_stats(mean, rstd, rows, x.dtype, name);
  const std::vector<double> w = read_optional(weight, d, name, "weight");
  const std::vector<double> bias_v = read_optional(bias, d, name, "bias");
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.data);
    T* yp = static_cast<T*>(y.data);
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(d, 1));
    parallel_for(rows, grain, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        const T* row = xp + r * d;
        double mu = 0;
        for (int64_t j = 0; j < d; ++j) mu += convert<double>(row[j]);
        mu = d > 0 ? mu / d : 0.0;
        double var = 0;
        for (int64_t j = 0; j < d; ++j) {
          double c = convert<double>(row[j]) - mu;
          var += c * c;
        }
        var = d > 0 ? var / d : 0.0;
        const double rs = 1.0 / std::sqrt(var + eps);
        store_stat(mean, r, mu);
        store_stat(rstd, r, rs);
        for (int64_t j = 0; j < d; ++j) {
          double v = (convert<double>(row[j]) - mu) * rs;
          if (!w.empty()) v *= w[j];
          if (!bias_v.empty()) v += bias_v[j];
          yp[r * d + j] = convert<T>(v);
        }
      }
    });
  });
}

// R = rows, D = features. With xhat = (x - mean) * rstd and g = dy * weight:
//   dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)),
//   dweight = sum_r dy * xhat, dbias = sum_r dy.
void layer_norm_backward(const ArrayRef& dy, const ArrayRef& x, const ArrayRef* weight,
                         const ArrayRef& mean, const ArrayRef& rstd, int64_t rows, int64_t d,
                         const ArrayRef& dx, const ArrayRef* dweight, const ArrayRef* dbias) {
  const char* name = "layer_norm_backward";
  NEEDLE_CHECK(x.numel() == rows * d && dy.numel() == rows * d && dx.numel() == rows * d,
               ValueError, name, ": expected ", rows, " x ", d, " dy, x and dx, got ", dy.numel(),
               ", ", x.numel(), " and ", dx.numel(), " elements");
  NEEDLE_CHECK(dy.dtype == x.dtype && dx.dtype == x.dtype, TypeError, name,
               ": expected dy and dx of dtype ", dtype_name(x.dtype), ", got ",
               dtype_name(dy.dtype), " and ", dtype_name(dx.dtype));
  check_stats(mean, rstd, rows, x.dtype, name);
  const std::vector<double> w = read_optional(weight, d, name, "weight");
  const bool want_params = dweight != nullptr || dbias != nullptr;
  // dweight / dbias sum over rows: each parallel piece accumulates its own partial vectors, and
  // the pieces are added in order afterwards (deterministic for a fixed thread count).
  const int max_pieces = omp_get_max_threads();
  std::vector<std::vector<double>> part_w(max_pieces), part_b(max_pieces);
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.data);
    const T* gp = static_cast<const T*>(dy.data);
    T* dxp = static_cast<T*>(dx.data);
    const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(d, 1));
    parallel_for(rows, grain, [&](int64_t b, int64_t e) {
      const int piece = omp_get_thread_num();
      std::vector<double>& pw = part_w[piece];
      std::vector<double>& pb = part_b[piece];
      if (want_params) {
        pw.assign(d, 0.0);
        pb.assign(d, 0.0);
      }
      for (int64_t r = b; r < e; ++r) {
        const T* xrow = xp + r * d;
        const T* grow = gp + r * d;
        const double mu = load_stat(mean, r), rs = load_stat(rstd, r);
        double mean_g = 0, mean_gx = 0;
        for (int64_t j = 0; j < d; ++j) {
          const double xhat = (convert<double>(xrow[j]) - mu) * rs;
          const double gy = convert<double>(grow[j]);
          const double g = w.empty() ? gy : gy * w[j];
          mean_g += g;
          mean_gx += g * xhat;
          if (want_params) {
            pw[j] += gy * xhat;
            pb[j] += gy;
          }
        }
        mean_g /= d;
        mean_gx /= d;
        for (int64_t j = 0; j < d; ++j) {
          const double xhat = (convert<double>(xrow[j]) - mu) * rs;
          const double gy = convert<double>(grow[j]);
          const double g = w.empty() ? gy : gy * w[j];
          dxp[r * d + j] = convert<T>(rs * (g - mean_g - xhat * mean_gx));
        }
      }
    });
  });
  if (!want_params) return;
  std::vector<double> sum_w(d, 0.0), sum_b(d, 0.0);
  for (int p = 0; p < max_pieces; ++p) {
    for (size_t j = 0; j < part_w[p].size(); ++j) {
      sum_w[j] += part_w[p][j];
      sum_b[j] += part_b[p][j];
    }
  }
  if (dweight != nullptr) write_floats(sum_w, *dweight, name);
  if (dbias != nullptr) write_floats(sum_b, *dbias, name);
}

}  // namespace needle::cpu_kernels
