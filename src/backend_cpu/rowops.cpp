// Row-wise fused ops along the last axis of a compact (rows, cols) array: softmax, log_softmax,
// logsumexp, and the cross-entropy loss (forward and backward) built on the same stable
// log-sum-exp. Rows are independent, so rows are split over threads.
#include <cmath>
#include <limits>
#include <vector>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"
#include "backend_cpu/vector_math.h"

namespace needle::cpu_kernels {
namespace {

// Rows per parallel piece so that a piece holds about kGrain elements.
int64_t row_grain(int64_t cols) {
  return std::max<int64_t>(1, kGrain / std::max<int64_t>(cols, 1));
}

// One row loaded into the arithmetic type R (a contiguous copy also for float rows, so Eigen's
// vectorised exp can run on it; the row is in L1/L2 either way), with scratch for exponentials.
template <typename R>
struct RowScratch {
  VecArray<R> x, e;
  template <typename T>
  void load(const T* row, int64_t cols) {
    x.resize(cols);
    e.resize(cols);
    for (int64_t c = 0; c < cols; ++c) x[c] = convert<R>(row[c]);
  }
  // The maximum, NaN if the row holds a NaN, -inf for an empty row.
  R max() const {
    if (x.size() == 0) return -std::numeric_limits<R>::infinity();
    return extremum_contiguous<true, R>(x.data(), x.size());
  }
  void exp_shifted(R shift) { e = (x - shift).exp(); }
  // e = exp(x - shift); returns sum(e): vectorised sums of 1024-value chunks (error ~ 64 ulp of
  // R at worst), added in double.
  double exp_sum(R shift) {
    exp_shifted(shift);
    constexpr Eigen::Index kChunk = 1024;
    double s = 0;
    for (Eigen::Index c = 0; c < e.size(); c += kChunk)
      s += static_cast<double>(e.segment(c, std::min(kChunk, e.size() - c)).sum());
    return s;
  }
  // log(sum(exp(x))) shifted by the maximum for stability. As in torch.logsumexp, an infinite
  // maximum shifts by 0 instead, so an all -inf row (or an empty one) gives -inf, not NaN.
  R logsumexp() {
    const R m = max();
    const R shift = std::isinf(m) ? R(0) : m;
    return static_cast<R>(std::log(exp_sum(shift))) + shift;
  }
  // out[c] = scale * (exp(x[c] - lse) - [c == target]): the cross-entropy gradient of the loaded
  // row, scaled by its loss's gradient (cross_entropy_backward; 1 in forward_grad, which leaves
  // the values as they are).
  template <typename T>
  void write_cross_entropy_grad(R lse, int64_t target, R scale, T* out) {
    exp_shifted(lse);  // e = softmax of the row
    e[target] -= R(1);
    for (Eigen::Index c = 0; c < e.size(); ++c) out[c] = convert<T>(scale * e[c]);
  }
};

// R = rows, C = cols. T is the storage type; arithmetic runs in acc_t<T> (float or double), the
// sum of exponentials in double.
template <typename T>
void row_op_typed(RowOp op, const T* x, int64_t rows, int64_t cols, T* out) {
  using R = acc_t<T>;
  parallel_for(rows, row_grain(cols), [&](int64_t b, int64_t e) {
    RowScratch<R> row;
    for (int64_t r = b; r < e; ++r) {
      row.load(x + r * cols, cols);
      if (op == RowOp::LogSumExp) {
        out[r] = convert<T>(row.logsumexp());
        continue;
      }
      // Softmax and log_softmax of a row holding +inf or only -inf are NaN, as in torch: the
      // shift is the plain maximum here.
      const R m = row.max();
      const double s = row.exp_sum(m);
      T* o = out + r * cols;
      if (op == RowOp::Softmax) {
        const R inv = static_cast<R>(1.0 / s);
        for (int64_t c = 0; c < cols; ++c) o[c] = convert<T>(row.e[c] * inv);
      } else {
        const R shift = m + static_cast<R>(std::log(s));
        for (int64_t c = 0; c < cols; ++c) o[c] = convert<T>(row.x[c] - shift);
      }
    }
  });
}

// Reads a compact 1-D integer array (int64 or int32) of n targets as int64.
std::vector<int64_t> read_targets(const ArrayRef& t, int64_t n, const char* what) {
  NEEDLE_CHECK(t.numel() == n, ValueError, what, ": expected ", n, " targets, got ", t.numel());
  std::vector<int64_t> v(n);
  if (t.dtype == DType::Int64) {
    std::copy_n(static_cast<const int64_t*>(t.data), n, v.begin());
  } else if (t.dtype == DType::Int32) {
    std::copy_n(static_cast<const int32_t*>(t.data), n, v.begin());
  } else {
    throw TypeError(
        detail::concat(what, ": expected int64 (or int32) targets, got ", dtype_name(t.dtype)));
  }
  return v;
}

// Rejects targets outside [0, classes) that are not ignore_index, before any parallel work.
void check_targets(const std::vector<int64_t>& t, int64_t ignore_index, int64_t classes,
                   const char* what) {
  for (size_t r = 0; r < t.size(); ++r)
    NEEDLE_CHECK(t[r] == ignore_index || (t[r] >= 0 && t[r] < classes), IndexError, what,
                 ": target ", t[r], " of row ", r, " is out of range for ", classes,
                 " classes (ignore_index is ", ignore_index, ")");
}

// A compact floating 1-D array of n values read as double (dloss, lse of any floating dtype).
std::vector<double> read_floats(const ArrayRef& a, int64_t n, const char* what) {
  NEEDLE_CHECK(a.numel() == n, ValueError, what, ": expected ", n, " values, got ", a.numel());
  std::vector<double> v(n);
  NEEDLE_DISPATCH_FLOATING(a.dtype, what, [&] {
    const auto* p = static_cast<const scalar_t*>(a.data);
    for (int64_t i = 0; i < n; ++i) v[i] = convert<double>(p[i]);
  });
  return v;
}

}  // namespace

// R = rows, C = cols.
void row_op(RowOp op, const ArrayRef& in, int64_t rows, int64_t cols, const ArrayRef& out) {
  const char* name = op == RowOp::Softmax      ? "softmax"
                     : op == RowOp::LogSoftmax ? "log_softmax"
                                               : "logsumexp";
  NEEDLE_CHECK(in.numel() == rows * cols, ValueError, name, ": expected ", rows, " x ", cols,
               " input elements, got ", in.numel());
  const int64_t out_numel = op == RowOp::LogSumExp ? rows : rows * cols;
  NEEDLE_CHECK(out.numel() == out_numel, ValueError, name, ": expected ", out_numel,
               " output elements, got ", out.numel());
  NEEDLE_CHECK(out.dtype == in.dtype, TypeError, name, ": expected an output of dtype ",
               dtype_name(in.dtype), ", got ", dtype_name(out.dtype));
  NEEDLE_DISPATCH_FLOATING(in.dtype, name, [&] {
    row_op_typed(op, static_cast<const scalar_t*>(in.data), rows, cols,
                 static_cast<scalar_t*>(out.data));
  });
}

namespace {

// R = rows, C = classes. loss[r] = lse(logits[r]) - logits[r, target[r]], 0 for ignored rows.
// With grad_in_place, the logits are then overwritten by the gradient of loss[r] (softmax -
// one-hot; zeros for ignored rows): each row is loaded into scratch before it is written.
void cross_entropy_forward_impl(const ArrayRef& logits, const ArrayRef& targets,
                                int64_t ignore_index, int64_t rows, int64_t classes,
                                const ArrayRef& loss, const ArrayRef& lse, bool grad_in_place,
                                const char* name) {
  NEEDLE_CHECK(logits.numel() == rows * classes, ValueError, name, ": expected ", rows, " x ",
               classes, " logits, got ", logits.numel());
  const DType stats = stats_dtype(logits.dtype);
  NEEDLE_CHECK(loss.dtype == stats && lse.dtype == stats, TypeError, name, ": expected ",
               dtype_name(stats), " loss and lse, got ", dtype_name(loss.dtype), " and ",
               dtype_name(lse.dtype));
  NEEDLE_CHECK(loss.numel() == rows && lse.numel() == rows, ValueError, name, ": expected ", rows,
               " loss and lse values, got ", loss.numel(), " and ", lse.numel());
  const std::vector<int64_t> t = read_targets(targets, rows, name);
  check_targets(t, ignore_index, classes, name);
  NEEDLE_DISPATCH_FLOATING(logits.dtype, name, [&] {
    using T = scalar_t;
    using R = acc_t<T>;
    T* x = static_cast<T*>(logits.data);
    parallel_for(rows, row_grain(classes), [&](int64_t b, int64_t e) {
      RowScratch<R> row;
      for (int64_t r = b; r < e; ++r) {
        T* xr = x + r * classes;
        row.load(xr, classes);
        const R l = row.logsumexp();
        const bool ignored = t[r] == ignore_index;
        const double value = ignored ? 0.0 : static_cast<double>(l - row.x[t[r]]);
        if (stats == DType::Float64) {
          static_cast<double*>(lse.data)[r] = static_cast<double>(l);
          static_cast<double*>(loss.data)[r] = value;
        } else {
          static_cast<float*>(lse.data)[r] = static_cast<float>(l);
          static_cast<float*>(loss.data)[r] = static_cast<float>(value);
        }
        if (!grad_in_place) continue;
        if (ignored) {
          std::fill_n(xr, classes, convert<T>(0.0f));
          continue;
        }
        row.write_cross_entropy_grad(l, t[r], R(1), xr);
      }
    });
  });
}

}  // namespace

void cross_entropy_forward(const ArrayRef& logits, const ArrayRef& targets, int64_t ignore_index,
                           int64_t rows, int64_t classes, const ArrayRef& loss,
                           const ArrayRef& lse) {
  cross_entropy_forward_impl(logits, targets, ignore_index, rows, classes, loss, lse, false,
                             "cross_entropy");
}

void cross_entropy_forward_grad(const ArrayRef& logits, const ArrayRef& targets,
                                int64_t ignore_index, int64_t rows, int64_t classes,
                                const ArrayRef& loss, const ArrayRef& lse) {
  cross_entropy_forward_impl(logits, targets, ignore_index, rows, classes, loss, lse, true,
                             "cross_entropy_forward_grad");
}

// R = rows, C = classes. dlogits[r, c] = dloss[r] * (exp(logits[r, c] - lse[r]) - [c == t[r]]).
void cross_entropy_backward(const ArrayRef& logits, const ArrayRef& targets, const ArrayRef& lse,
                            const ArrayRef& dloss, int64_t ignore_index, int64_t rows,
                            int64_t classes, const ArrayRef& dlogits) {
  const char* name = "cross_entropy_backward";
  NEEDLE_CHECK(logits.numel() == rows * classes && dlogits.numel() == rows * classes, ValueError,
               name, ": expected ", rows, " x ", classes, " logits and dlogits, got ",
               logits.numel(), " and ", dlogits.numel());
  NEEDLE_CHECK(dlogits.dtype == logits.dtype, TypeError, name, ": expected dlogits of dtype ",
               dtype_name(logits.dtype), ", got ", dtype_name(dlogits.dtype));
  const std::vector<int64_t> t = read_targets(targets, rows, name);
  check_targets(t, ignore_index, classes, name);
  const std::vector<double> l = read_floats(lse, rows, name);
  const std::vector<double> g = read_floats(dloss, rows, name);
  NEEDLE_DISPATCH_FLOATING(logits.dtype, name, [&] {
    using T = scalar_t;
    using R = acc_t<T>;
    const T* x = static_cast<const T*>(logits.data);
    T* dx = static_cast<T*>(dlogits.data);
    parallel_for(rows, row_grain(classes), [&](int64_t b, int64_t e) {
      RowScratch<R> row;
      for (int64_t r = b; r < e; ++r) {
        T* drow = dx + r * classes;
        if (t[r] == ignore_index) {
          std::fill_n(drow, classes, convert<T>(0.0f));
          continue;
        }
        row.load(x + r * classes, classes);
        row.write_cross_entropy_grad(static_cast<R>(l[r]), t[r], static_cast<R>(g[r]), drow);
      }
    });
  });
}

}  // namespace needle::cpu_kernels
