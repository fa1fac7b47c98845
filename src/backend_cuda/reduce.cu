// Reductions of a compact (outer, reduce, inner) array to (outer, inner): sum, prod, max, min,
// argmax, argmin.
//
//  - inner == 1 (rows): a warp per row for short rows, a block per row for long ones; threads
//    stride along the row, so a warp reads consecutive elements.
//  - inner > 1 (columns): a 32 x 8 block covers 32 adjacent columns; the 32 lanes of a warp read
//    32 consecutive elements of one input row, the 8 warps split the reduced rows. Where the rows
//    hold whole 16-byte vectors of 2- to 8-byte elements, each lane reads one vector instead and
//    the block covers 32 vectors' columns (a bias gradient: 256 bfloat16 columns, 512 bytes of
//    a row per warp load rather than 64).
// Rows are read in 16-byte vectors when they are aligned and hold whole vectors, four loads in
// flight per thread.
// When those units cannot fill the GPU (a full reduction, a few long rows, a column sum over a
// tall matrix) the reduced axis is split as well: each piece writes a partial state, and a second
// kernel combines the pieces of each output with a warp or, for few outputs, a whole block, in a
// fixed order. No atomics, so results do not depend on timing.
#include <climits>
#include <limits>

#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"

namespace needle::cuda {
namespace {

// One reduction's accumulator: a value and, for ArgMax/ArgMin, its index (first occurrence).
template <typename Acc>
struct State {
  Acc v;
  int64_t i;
};

template <typename T>
__device__ __forceinline__ bool is_nan(T v) {
  return v != v;
}

template <typename T>
__host__ __device__ constexpr T lowest_value() {
  if constexpr (std::is_floating_point_v<T>) return -std::numeric_limits<T>::infinity();
  return std::numeric_limits<T>::lowest();
}
template <typename T>
__host__ __device__ constexpr T highest_value() {
  if constexpr (std::is_floating_point_v<T>) return std::numeric_limits<T>::infinity();
  return std::numeric_limits<T>::max();
}

// Semantics follow the CPU kernels (backend_cpu/reduce.cpp): Sum/Prod of bool and integers in
// int64, of bfloat16/float32 in float, of float64 in double; Max/Min propagate NaN; Arg* return
// the first extreme index, the first NaN winning.
template <ReduceOp kOp, typename T>
struct Reducer {
  static constexpr bool kWiden = kOp == ReduceOp::Sum || kOp == ReduceOp::Prod;
  static constexpr bool kArg = kOp == ReduceOp::ArgMax || kOp == ReduceOp::ArgMin;
  static constexpr bool kIsMax = kOp == ReduceOp::Max || kOp == ReduceOp::ArgMax;
  using Acc =
      std::conditional_t<kWiden && !std::is_floating_point_v<acc_t<T>>, int64_t, compute_t<T>>;
  using Out =
      std::conditional_t<kArg || (kWiden && !std::is_floating_point_v<acc_t<T>>), int64_t, T>;
  using S = State<Acc>;

  __device__ __forceinline__ static S identity() {
    if constexpr (kOp == ReduceOp::Sum) return S{Acc(0), 0};
    if constexpr (kOp == ReduceOp::Prod) return S{Acc(1), 0};
    // Max/Min: the identity loses every comparison; Arg*: index LLONG_MAX marks "empty".
    return S{kIsMax ? lowest_value<Acc>() : highest_value<Acc>(), LLONG_MAX};
  }
  __device__ __forceinline__ static S make(T x, int64_t idx) { return S{convert<Acc>(x), idx}; }
  __device__ __forceinline__ static bool better(Acc a, Acc b) { return kIsMax ? a > b : a < b; }

  __device__ __forceinline__ static S combine(S a, S b) {
    if constexpr (kOp == ReduceOp::Sum) {
      return S{a.v + b.v, 0};
    } else if constexpr (kOp == ReduceOp::Prod) {
      return S{a.v * b.v, 0};
    } else if constexpr (!kArg) {
      if (is_nan(a.v)) return a;
      if (is_nan(b.v)) return b;
      return S{better(b.v, a.v) ? b.v : a.v, 0};
    } else {
      if (a.i == LLONG_MAX) return b;
      if (b.i == LLONG_MAX) return a;
      bool an = is_nan(a.v), bn = is_nan(b.v);
      if (an || bn) {
        if (an && bn) return a.i < b.i ? a : b;
        return an ? a : b;
      }
      if (better(a.v, b.v)) return a;
      if (better(b.v, a.v)) return b;
      return a.i < b.i ? a : b;
    }
  }
  __device__ __forceinline__ static Out finalize(S s) {
    if constexpr (kArg) return s.i;
    return convert<Out>(s.v);
  }
};

template <typename Acc>
__device__ __forceinline__ State<Acc> shfl_xor(State<Acc> s, int mask) {
  return State<Acc>{__shfl_xor_sync(0xffffffffu, s.v, mask),
                    __shfl_xor_sync(0xffffffffu, s.i, mask)};
}

// Folds x[r] for r = begin + t, begin + t + step, ... < end into st, four loads in flight.
template <typename R, typename T>
__device__ __forceinline__ typename R::S fold_strided(typename R::S st, const T* x, int64_t begin,
                                                      int64_t end, int64_t t, int64_t step,
                                                      int64_t elem_stride) {
  int64_t r = begin + t;
  for (; r + 3 * step < end; r += 4 * step) {
    T v0 = x[r * elem_stride], v1 = x[(r + step) * elem_stride];
    T v2 = x[(r + 2 * step) * elem_stride], v3 = x[(r + 3 * step) * elem_stride];
    st = R::combine(st, R::make(v0, r));
    st = R::combine(st, R::make(v1, r + step));
    st = R::combine(st, R::make(v2, r + 2 * step));
    st = R::combine(st, R::make(v3, r + 3 * step));
  }
  for (; r < end; r += step) st = R::combine(st, R::make(x[r * elem_stride], r));
  return st;
}

// Folds the contiguous run x[begin, end) into st, begin and end multiples of N (the elements of
// a 16-byte vector) and x 16-byte aligned: thread t of `step` threads takes the vectors
// t, t + step, ..., four loads in flight.
template <typename R, typename T>
__device__ __forceinline__ typename R::S fold_vectors(typename R::S st, const T* x, int64_t begin,
                                                      int64_t end, int64_t t, int64_t step) {
  constexpr int N = static_cast<int>(16 / sizeof(T));
  using V = VecN<T, N>;
  const V* xv = reinterpret_cast<const V*>(x);
  const int64_t vend = end / N;
  int64_t v = begin / N + t;
  for (; v + 3 * step < vend; v += 4 * step) {
    V a[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) a[k] = xv[v + k * step];
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int j = 0; j < N; ++j) st = R::combine(st, R::make(a[k].v[j], (v + k * step) * N + j));
  }
  for (; v < vend; v += step) {
    const V a = xv[v];
#pragma unroll
    for (int j = 0; j < N; ++j) st = R::combine(st, R::make(a.v[j], v * N + j));
  }
  return st;
}

// Combines st over each group of kTPR consecutive threads (a warp, or the whole kThreads block);
// the group's first thread gets the result. Every thread of the block must call it, since a
// block-wide group synchronises. `scratch` holds kThreads / 32 states.
template <typename Red, int kTPR>
__device__ __forceinline__ typename Red::S group_combine(typename Red::S st,
                                                         typename Red::S* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) st = Red::combine(st, shfl_xor(st, o));
  if constexpr (kTPR > 32) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) scratch[warp] = st;
    __syncthreads();
    if (warp == 0) {
      st = lane < kTPR / 32 ? scratch[lane] : Red::identity();
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) st = Red::combine(st, shfl_xor(st, o));
    }
    __syncthreads();
  }
  return st;
}

// O = outer rows, R = reduce length, P = pieces per row. A group of kTPR threads (a warp, or the
// whole 256-thread block) handles one (row, piece) unit at a time. With P == 1 it writes out[row];
// otherwise the partial state partial[row * P + piece]. vec: rows and pieces are read in 16-byte
// vectors (x aligned, R and the piece length multiples of the vector width).
template <typename Red, int kTPR, typename T>
__global__ void reduce_rows_kernel(const T* __restrict__ x, int64_t outer, int64_t reduce,
                                   int64_t pieces, int64_t piece_len, bool vec,
                                   typename Red::Out* __restrict__ out,
                                   typename Red::S* __restrict__ partial) {
  using S = typename Red::S;
  constexpr int kGroups = kThreads / kTPR;
  __shared__ S scratch[kThreads / 32];
  const int group = threadIdx.x / kTPR, t = threadIdx.x % kTPR;
  const int64_t units = outer * pieces;
  // All threads of a block run the same number of iterations (the barrier in group_combine needs
  // that when kTPR == kThreads), so the loop runs over blocks of units.
  for (int64_t u0 = static_cast<int64_t>(blockIdx.x) * kGroups; u0 < units;
       u0 += static_cast<int64_t>(gridDim.x) * kGroups) {
    const int64_t u = u0 + group;
    S st = Red::identity();
    if (u < units) {
      const int64_t row = u / pieces, piece = u % pieces;
      const int64_t begin = piece * piece_len;
      const int64_t end = begin + piece_len < reduce ? begin + piece_len : reduce;
      st = vec ? fold_vectors<Red>(st, x + row * reduce, begin, end, t, kTPR)
               : fold_strided<Red>(st, x + row * reduce, begin, end, t, kTPR, 1);
    }
    st = group_combine<Red, kTPR>(st, scratch);
    if (t == 0 && u < units) {
      if (pieces == 1)
        out[u] = Red::finalize(st);
      else
        partial[u] = st;
    }
  }
}

// O = outer, R = reduce length, I = inner length, P = pieces of the reduced axis. Block (32, 8):
// each lane folds N adjacent columns (N = 1, or the elements of one 16-byte vector, which needs
// inner % N == 0 and x 16-byte aligned so that every row of every tile starts on a vector), so a
// unit covers 32 * N columns; warp y takes the reduced rows y, y + 8, ... of its piece, four loads
// in flight, and the 8 warps are combined in order. Unit = (o, column tile, piece). With P == 1
// it writes out[o, j]; otherwise partial[(o * P + piece) * I + j].
template <typename Red, typename T, int N>
__global__ void reduce_columns_kernel(const T* __restrict__ x, int64_t outer, int64_t reduce,
                                      int64_t inner, int64_t pieces, int64_t piece_len,
                                      typename Red::Out* __restrict__ out,
                                      typename Red::S* __restrict__ partial) {
  using S = typename Red::S;
  using V = VecN<T, N>;
  __shared__ S scratch[8][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t tiles = (inner + 32 * N - 1) / (32 * N);
  const int64_t units = outer * tiles * pieces;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t piece = u % pieces, tile = (u / pieces) % tiles, o = u / (pieces * tiles);
    const int64_t j0 = (tile * 32 + tx) * N;  // inner % N == 0: all N columns or none exist
    S st[N];
#pragma unroll
    for (int c = 0; c < N; ++c) st[c] = Red::identity();
    if (j0 < inner) {
      const T* col = x + o * reduce * inner + j0;
      const int64_t begin = piece * piece_len;
      const int64_t end = begin + piece_len < reduce ? begin + piece_len : reduce;
      int64_t r = begin + ty;
      for (; r + 24 < end; r += 32) {
        V a[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) a[k] = load_vec<T, N>(col + (r + 8 * k) * inner);
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
          for (int c = 0; c < N; ++c) st[c] = Red::combine(st[c], Red::make(a[k].v[c], r + 8 * k));
      }
      for (; r < end; r += 8) {
        const V a = load_vec<T, N>(col + r * inner);
#pragma unroll
        for (int c = 0; c < N; ++c) st[c] = Red::combine(st[c], Red::make(a.v[c], r));
      }
    }
#pragma unroll
    for (int c = 0; c < N; ++c) {
      scratch[ty][tx] = st[c];
      __syncthreads();
      if (ty == 0 && j0 < inner) {
        S total = st[c];
#pragma unroll
        for (int k = 1; k < 8; ++k) total = Red::combine(total, scratch[k][tx]);
        if (pieces == 1)
          out[o * inner + j0 + c] = Red::finalize(total);
        else
          partial[(o * pieces + piece) * inner + j0 + c] = total;
      }
      __syncthreads();
    }
  }
}

// O = outer, P = pieces, I = inner: out[o, j] = combine over p of partial[o, p, j]. A group of
// kTPR threads per output takes p = t, t + kTPR, ... and merges in a fixed tree, so the result
// does not depend on timing.
template <typename Red, int kTPR>
__global__ void reduce_partials_kernel(const typename Red::S* __restrict__ partial, int64_t outer,
                                       int64_t pieces, int64_t inner,
                                       typename Red::Out* __restrict__ out) {
  using S = typename Red::S;
  constexpr int kGroups = kThreads / kTPR;
  __shared__ S scratch[kThreads / 32];
  const int group = threadIdx.x / kTPR, t = threadIdx.x % kTPR;
  const int64_t n = outer * inner;
  for (int64_t u0 = static_cast<int64_t>(blockIdx.x) * kGroups; u0 < n;
       u0 += static_cast<int64_t>(gridDim.x) * kGroups) {
    const int64_t u = u0 + group;
    S st = Red::identity();
    if (u < n) {
      const int64_t o = u / inner, j = u % inner;
      for (int64_t p = t; p < pieces; p += kTPR)
        st = Red::combine(st, partial[(o * pieces + p) * inner + j]);
    }
    st = group_combine<Red, kTPR>(st, scratch);
    if (t == 0 && u < n) out[u] = Red::finalize(st);
  }
}

// The second stage: a block per output when the outputs are too few to fill the GPU with warps
// and each has many pieces (a full reduction), a warp per output otherwise.
template <typename Red>
void combine_partials(const typename Red::S* partial, int64_t outer, int64_t pieces, int64_t inner,
                      typename Red::Out* out) {
  const int64_t n = outer * inner;
  if (n < int64_t(num_sms()) * 8 && pieces >= 128) {
    reduce_partials_kernel<Red, kThreads>
        <<<grid_for(n, 1), kThreads, 0, stream()>>>(partial, outer, pieces, inner, out);
  } else {
    reduce_partials_kernel<Red, 32>
        <<<grid_for(n, kThreads / 32), kThreads, 0, stream()>>>(partial, outer, pieces, inner, out);
  }
  NEEDLE_CUDA_LAUNCH_CHECK();
}

// Pieces to split the reduced axis into so that `units` work units become about `target`, each
// piece still holding at least `min_len` elements.
int64_t choose_pieces(int64_t units, int64_t target, int64_t reduce, int64_t min_len) {
  if (units >= target || reduce <= min_len) return 1;
  int64_t pieces = ceil_div(target, units);
  int64_t by_len = ceil_div(reduce, min_len);
  if (pieces > by_len) pieces = by_len;
  if (pieces > 1024) pieces = 1024;
  return pieces < 1 ? 1 : pieces;
}

template <typename Red, typename T>
void run_reduce(const T* x, int64_t outer, int64_t reduce, int64_t inner, typename Red::Out* out) {
  using S = typename Red::S;
  const int64_t sms = num_sms();
  if (inner == 1) {
    // Short rows: a warp each; long rows: a block each (more loads in flight per row).
    const bool block_rows = reduce >= 4096;
    const int tpr = block_rows ? kThreads : 32;
    constexpr int64_t N = 16 / sizeof(T);
    int64_t pieces =
        choose_pieces(outer, block_rows ? sms * 8 : sms * 64, reduce, int64_t(tpr) * 16);
    // Pieces of whole vectors, so that every piece of an aligned row starts aligned.
    int64_t piece_len = ceil_div(ceil_div(reduce, pieces), N) * N;
    if (piece_len == 0) piece_len = N;  // reduce == 0: one empty piece
    pieces = ceil_div(reduce, piece_len);
    if (pieces < 1) pieces = 1;
    const bool vec = aligned_to(x, 16) && reduce % N == 0;
    Workspace ws(pieces > 1 ? static_cast<size_t>(outer * pieces) * sizeof(S) : 0);
    const int64_t work_blocks = ceil_div(outer * pieces, kThreads / tpr);
    if (block_rows) {
      auto* kernel = reduce_rows_kernel<Red, kThreads, T>;
      kernel<<<resident_grid(kernel, kThreads, 0, work_blocks), kThreads, 0, stream()>>>(
          x, outer, reduce, pieces, piece_len, vec, out, ws.as<S>());
    } else {
      auto* kernel = reduce_rows_kernel<Red, 32, T>;
      kernel<<<resident_grid(kernel, kThreads, 0, work_blocks), kThreads, 0, stream()>>>(
          x, outer, reduce, pieces, piece_len, vec, out, ws.as<S>());
    }
    NEEDLE_CUDA_LAUNCH_CHECK();
    if (pieces > 1) combine_partials<Red>(ws.as<S>(), outer, pieces, 1, out);
    return;
  }
  // A 16-byte vector per lane for 2- to 8-byte elements in rows of whole vectors.
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  auto* kernel = reduce_columns_kernel<Red, T, 1>;
  int64_t width = 32;  // columns per unit
  if constexpr (sizeof(T) >= 2) {
    if (inner % kVec == 0 && aligned_to(x, 16)) {
      kernel = reduce_columns_kernel<Red, T, kVec>;
      width = 32 * kVec;
    }
  }
  const int64_t tiles = outer * ceil_div(inner, width);
  const int64_t pieces = choose_pieces(tiles, sms * 8, reduce, 8 * 16);
  const int64_t piece_len = ceil_div(reduce, pieces);
  Workspace ws(pieces > 1 ? static_cast<size_t>(outer * pieces * inner) * sizeof(S) : 0);
  kernel<<<grid_for(tiles * pieces, 1), dim3(32, 8), 0, stream()>>>(x, outer, reduce, inner, pieces,
                                                                    piece_len, out, ws.as<S>());
  NEEDLE_CUDA_LAUNCH_CHECK();
  if (pieces > 1) combine_partials<Red>(ws.as<S>(), outer, pieces, inner, out);
}

template <ReduceOp kOp>
void dispatch_reduce(const ArrayRef& in, int64_t outer, int64_t reduce, int64_t inner,
                     const ArrayRef& out) {
  NEEDLE_DISPATCH_ALL(in.dtype, op_name(kOp), [&] {
    using Red = Reducer<kOp, scalar_t>;
    DType want = dtype_of<typename Red::Out>::value;
    NEEDLE_CHECK(out.dtype == want, TypeError, "cuda ", op_name(kOp), " of ",
                 dtype_name(in.dtype), ": expected an output of dtype ", dtype_name(want), ", got ",
                 dtype_name(out.dtype));
    run_reduce<Red>(static_cast<const scalar_t*>(in.data), outer, reduce, inner,
                    static_cast<typename Red::Out*>(out.data));
  });
}

}  // namespace

// O = outer, R = reduce, I = inner; in is (O, R, I) compact, out (O, I) compact.
void reduce(ReduceOp op, const ArrayRef& in, int64_t outer, int64_t reduce, int64_t inner,
            const ArrayRef& out) {
  const char* name = op_name(op);
  NEEDLE_CHECK(outer >= 0 && reduce >= 0 && inner >= 0 && outer * reduce * inner == in.numel(),
               ValueError, "cuda ", name, ": (outer, reduce, inner) = (", outer, ", ", reduce, ", ",
               inner, ") does not match the input's ", in.numel(), " elements");
  NEEDLE_CHECK(outer * inner == out.numel(), ValueError, "cuda ", name, ": expected an output of ",
               outer * inner, " elements, got ", out.numel());
  NEEDLE_CHECK(reduce > 0 || op == ReduceOp::Sum || op == ReduceOp::Prod || outer * inner == 0,
               ValueError, "cuda ", name,
               ": cannot reduce over an empty axis (reduce length 0) since it has no identity");
  if (outer * inner == 0) return;
  switch (op) {
    case ReduceOp::Sum:
      return dispatch_reduce<ReduceOp::Sum>(in, outer, reduce, inner, out);
    case ReduceOp::Prod:
      return dispatch_reduce<ReduceOp::Prod>(in, outer, reduce, inner, out);
    case ReduceOp::Max:
      return dispatch_reduce<ReduceOp::Max>(in, outer, reduce, inner, out);
    case ReduceOp::Min:
      return dispatch_reduce<ReduceOp::Min>(in, outer, reduce, inner, out);
    case ReduceOp::ArgMax:
      return dispatch_reduce<ReduceOp::ArgMax>(in, outer, reduce, inner, out);
    case ReduceOp::ArgMin:
      return dispatch_reduce<ReduceOp::ArgMin>(in, outer, reduce, inner, out);
  }
}

}  // namespace needle::cuda
