// Reductions of a compact (outer, reduce, inner) array to (outer, inner): sum, prod, max, min,
// argmax, argmin. inner == 1 reduces contiguous rows (vectorised, with pairwise blocks for
// accuracy); inner > 1 accumulates whole rows of `inner` contiguous values into a block of
// accumulators, so memory is read in order either way.
#include <cmath>
#include <limits>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"
#include "backend_cpu/vector_math.h"

namespace needle::cpu_kernels {
namespace {

// The accumulator of Sum and Prod: double for float32 and float64 (float32 sums of millions of
// values lose digits otherwise), float for bfloat16, int64 for bool and integers.
template <typename T>
using sum_acc_t =
    std::conditional_t<std::is_same_v<T, bfloat16>, float,
                       std::conditional_t<std::is_floating_point_v<T>, double, int64_t>>;

// Columns handled together when inner > 1. Each reduced row contributes one contiguous run of
// this many values: long enough for the hardware prefetcher (short runs 16 KiB apart made the
// first-axis sum latency-bound), small enough that the accumulators stay in L1 / L2.
constexpr int64_t kColumnBlock = 2048;

// Runs row(o) for every outer index (inner == 1) or block(o, j0, j1) for column blocks of every
// outer index (inner > 1), in parallel with about kGrain input elements per piece.
template <typename RowFn, typename BlockFn>
void drive(int64_t outer, int64_t reduce, int64_t inner, const RowFn& row, const BlockFn& block) {
  if (inner == 1) {
    int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(reduce, 1));
    parallel_for(outer, grain, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) row(o);
    });
    return;
  }
  const int64_t blocks = (inner + kColumnBlock - 1) / kColumnBlock;
  const int64_t per_item = std::max<int64_t>(reduce * std::min(inner, kColumnBlock), 1);
  parallel_for(outer * blocks, std::max<int64_t>(1, kGrain / per_item), [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      int64_t o = it / blocks, j0 = (it % blocks) * kColumnBlock;
      block(o, j0, std::min(inner, j0 + kColumnBlock));
    }
  });
}

// Sum of n contiguous values: eight independent accumulators (vectorisable) within blocks of
// 4096, blocks combined pairwise, so the rounding error grows with log(n), not n.
template <typename Acc, typename T>
Acc sum_contiguous(const T* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  if (n > kBlock) {
    int64_t half = (n / 2 + 7) / 8 * 8;
    return sum_contiguous<Acc>(x, half) + sum_contiguous<Acc>(x + half, n - half);
  }
  Acc s[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) s[j] += convert<Acc>(x[i + j]);
  for (; i < n; ++i) s[0] += convert<Acc>(x[i]);
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// outer = rows, R = reduce length, I = inner length.
template <typename T, typename Out>
void reduce_sum(const T* x, int64_t outer, int64_t R, int64_t I, Out* out) {
  using Acc = sum_acc_t<T>;
  if (I == 1 && outer < omp_get_max_threads() && R >= 4 * kGrain) {
    // Few long rows: split each row over the threads, combine the partial sums in order.
    for (int64_t o = 0; o < outer; ++o) {
      const T* row = x + o * R;
      Acc partial[64] = {};
      const int64_t pieces = std::min<int64_t>(64, omp_get_max_threads());
      const int64_t len = (R + pieces - 1) / pieces;
      parallel_for(pieces, 1, [&](int64_t b, int64_t e) {
        for (int64_t p = b; p < e; ++p) {
          int64_t lo = std::min(R, p * len), hi = std::min(R, lo + len);
          partial[p] = sum_contiguous<Acc>(row + lo, hi - lo);
        }
      });
      Acc total = 0;
      for (int64_t p = 0; p < pieces; ++p) total += partial[p];
      out[o] = convert<Out>(total);
    }
    return;
  }
  drive(
      outer, R, I, [&](int64_t o) { out[o] = convert<Out>(sum_contiguous<Acc>(x + o * R, R)); },
      [&](int64_t o, int64_t j0, int64_t j1) {
        Acc acc[kColumnBlock] = {};
        const int64_t w = j1 - j0;
        for (int64_t r = 0; r < R; ++r) {
          const T* row = x + (o * R + r) * I + j0;
          for (int64_t j = 0; j < w; ++j) acc[j] += convert<Acc>(row[j]);
        }
        for (int64_t j = 0; j < w; ++j) out[o * I + j0 + j] = convert<Out>(acc[j]);
      });
}

template <typename T, typename Out>
void reduce_prod(const T* x, int64_t outer, int64_t R, int64_t I, Out* out) {
  using Acc = sum_acc_t<T>;
  drive(
      outer, R, I,
      [&](int64_t o) {
        Acc p = 1;
        for (int64_t r = 0; r < R; ++r) p *= convert<Acc>(x[o * R + r]);
        out[o] = convert<Out>(p);
      },
      [&](int64_t o, int64_t j0, int64_t j1) {
        Acc acc[kColumnBlock];
        const int64_t w = j1 - j0;
        for (int64_t j = 0; j < w; ++j) acc[j] = 1;
        for (int64_t r = 0; r < R; ++r) {
          const T* row = x + (o * R + r) * I + j0;
          for (int64_t j = 0; j < w; ++j) acc[j] *= convert<Acc>(row[j]);
        }
        for (int64_t j = 0; j < w; ++j) out[o * I + j0 + j] = convert<Out>(acc[j]);
      });
}

// Max / Min with NaN propagation (any NaN in the slice gives NaN, as torch.max does).
template <bool kMax, typename T>
void reduce_extremum(const T* x, int64_t outer, int64_t R, int64_t I, T* out) {
  using C = compute_t<T>;
  auto better = [](C v, C best) { return kMax ? v > best : v < best; };
  drive(
      outer, R, I,
      [&](int64_t o) { out[o] = convert<T>(extremum_contiguous<kMax, C>(x + o * R, R)); },
      [&](int64_t o, int64_t j0, int64_t j1) {
        C best[kColumnBlock];
        const int64_t w = j1 - j0;
        const T* first = x + o * R * I + j0;
        for (int64_t j = 0; j < w; ++j) best[j] = convert<C>(first[j]);
        for (int64_t r = 1; r < R; ++r) {
          const T* row = x + (o * R + r) * I + j0;
          for (int64_t j = 0; j < w; ++j) {
            C v = convert<C>(row[j]);
            // Once best is NaN no comparison is true, so it stays NaN.
            best[j] = (v != v || better(v, best[j])) ? v : best[j];
          }
        }
        for (int64_t j = 0; j < w; ++j) out[o * I + j0 + j] = convert<T>(best[j]);
      });
}

// ArgMax / ArgMin: index of the first extreme value; the first NaN wins (torch semantics).
template <bool kMax, typename T>
void reduce_arg(const T* x, int64_t outer, int64_t R, int64_t I, int64_t* out) {
  using C = compute_t<T>;
  auto better = [](C v, C best) { return kMax ? v > best : v < best; };
  drive(
      outer, R, I,
      [&](int64_t o) {
        const T* row = x + o * R;
        C best = convert<C>(row[0]);
        int64_t arg = 0;
        if (best == best) {
          for (int64_t r = 1; r < R; ++r) {
            C v = convert<C>(row[r]);
            if (v != v) {
              arg = r;
              break;
            }
            if (better(v, best)) {
              best = v;
              arg = r;
            }
          }
        }
        out[o] = arg;
      },
      [&](int64_t o, int64_t j0, int64_t j1) {
        C best[kColumnBlock];
        int64_t arg[kColumnBlock];
        const int64_t w = j1 - j0;
        const T* first = x + o * R * I + j0;
        for (int64_t j = 0; j < w; ++j) {
          best[j] = convert<C>(first[j]);
          arg[j] = 0;
        }
        for (int64_t r = 1; r < R; ++r) {
          const T* row = x + (o * R + r) * I + j0;
          for (int64_t j = 0; j < w; ++j) {
            C v = convert<C>(row[j]);
            bool found_nan = best[j] != best[j];
            if (!found_nan && (v != v || better(v, best[j]))) {
              best[j] = v;
              arg[j] = r;
            }
          }
        }
        for (int64_t j = 0; j < w; ++j) out[o * I + j0 + j] = arg[j];
      });
}

}  // namespace

// outer = independent slices before the reduced axes, reduce = reduced length, inner = slices
// after; in is (outer, reduce, inner), out (outer, inner).
void reduce(ReduceOp op, const ArrayRef& in, int64_t outer, int64_t reduce, int64_t inner,
            const ArrayRef& out) {
  const char* name = op_name(op);
  NEEDLE_CHECK(outer >= 0 && reduce >= 0 && inner >= 0 && outer * reduce * inner == in.numel(),
               ValueError, name, ": (outer, reduce, inner) = (", outer, ", ", reduce, ", ", inner,
               ") does not match the input's ", in.numel(), " elements");
  NEEDLE_CHECK(outer * inner == out.numel(), ValueError, name, ": expected an output of ",
               outer * inner, " elements, got ", out.numel());
  const bool widen = op == ReduceOp::Sum || op == ReduceOp::Prod;
  const bool to_int64 = (widen && (in.dtype == DType::Bool || in.dtype == DType::Int32)) ||
                        op == ReduceOp::ArgMax || op == ReduceOp::ArgMin;
  const DType out_dtype = to_int64 ? DType::Int64 : in.dtype;
  NEEDLE_CHECK(out.dtype == out_dtype, TypeError, name, " of ", dtype_name(in.dtype),
               ": expected an output of dtype ", dtype_name(out_dtype), ", got ",
               dtype_name(out.dtype));
  NEEDLE_CHECK(reduce > 0 || widen || outer * inner == 0, ValueError, name,
               ": cannot reduce over an empty axis (reduce length 0) since it has no identity");
  if (outer * inner == 0) return;

  NEEDLE_DISPATCH_ALL(in.dtype, name, [&] {
    using T = scalar_t;
    const T* x = static_cast<const T*>(in.data);
    switch (op) {
      case ReduceOp::Sum:
        if (to_int64) {
          reduce_sum(x, outer, reduce, inner, static_cast<int64_t*>(out.data));
        } else {
          reduce_sum(x, outer, reduce, inner, static_cast<T*>(out.data));
        }
        break;
      case ReduceOp::Prod:
        if (to_int64) {
          reduce_prod(x, outer, reduce, inner, static_cast<int64_t*>(out.data));
        } else {
          reduce_prod(x, outer, reduce, inner, static_cast<T*>(out.data));
        }
        break;
      case ReduceOp::Max:
        reduce_extremum<true>(x, outer, reduce, inner, static_cast<T*>(out.data));
        break;
      case ReduceOp::Min:
        reduce_extremum<false>(x, outer, reduce, inner, static_cast<T*>(out.data));
        break;
      case ReduceOp::ArgMax:
        reduce_arg<true>(x, outer, reduce, inner, static_cast<int64_t*>(out.data));
        break;
      case ReduceOp::ArgMin:
        reduce_arg<false>(x, outer, reduce, inner, static_cast<int64_t*>(out.data));
        break;
    }
  });
}

}  // namespace needle::cpu_kernels
