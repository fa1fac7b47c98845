// Layer normalisation over the last axis of compact (rows, d) arrays, forward and backward.
// Statistics are computed in float (double for float64 inputs) with two passes over the row
// (mean, then the centred variance) and saved as mean / rstd of stats_dtype(x) (backend.h):
// float32, or float64 for float64 inputs. That is acc_t<T> here. The forward pass stages the row
// in shared memory (row_cache.cuh), so x is read from device memory once and y written once; rows
// too long for shared memory re-read x instead.
// dweight / dbias are column sums over all rows, done in two stages without atomics: blocks
// write partial sums for pieces of the rows, a second kernel adds the pieces in order.
// Rows of float32 or bfloat16 with d a multiple of 128 up to 1024 (GPT-NeoX, OPT, GPT-2 widths)
// take the warp kernels instead: a warp per row, held in registers, so the forward reads x once
// and the backward reads x and dy once, writing dx and the dweight / dbias partial sums of its
// block in the same pass (the row-per-block kernels read them twice more for the partials).
#include <initializer_list>
#include <type_traits>

#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/row_cache.cuh"
#include "backend_cuda/row_stats.cuh"

namespace needle::cuda {
namespace {

// An optional (d) parameter passed by value: null data means absent. `vec`: of the input's dtype
// and 16-byte aligned, so it can be read in the input's vectors.
struct Param {
  const void* data = nullptr;
  DType dtype = DType::Float32;
  bool vec = false;
};

Param optional_param(const ArrayRef* a, int64_t d, DType input, const char* op,
                     const char* operand) {
  if (a == nullptr) return Param{};
  NEEDLE_CHECK(a->numel() == d, ValueError, "cuda ", op, ": expected ", operand, " of ", d,
               " elements, got ", a->numel());
  NEEDLE_CHECK(a->is_compact(), ValueError, "cuda ", op, ": expected a compact ", operand);
  NEEDLE_CHECK(is_floating(a->dtype), TypeError, "cuda ", op, ": expected a floating ", operand,
               ", got ", dtype_name(a->dtype));
  return Param{a->data, a->dtype, a->dtype == input && aligned_to(a->data, 16)};
}

// The N parameters of vector v (elements v * N ...) as A, or `absent` when p is absent.
template <typename T, int N, typename A>
__device__ __forceinline__ void load_param_vec(Param p, int64_t v, A absent, A (&out)[N]) {
  if (p.data == nullptr) {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = absent;
  } else if (p.vec) {
    const VecN<T, N> w = static_cast<const VecN<T, N>*>(p.data)[v];
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = convert<A>(w.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = load_as<A>(p.data, p.dtype, v * N + j);
  }
}

// a * b rounded once, never contracted into a neighbouring add: the backward pass forms
// g = dy * weight twice (for mean(g), then for g - mean(g)), and both must be the same number, or
// with d = 1 the FMA's unrounded product leaves g - mean(g) at the product's rounding error,
// which rstd = 1 / sqrt(eps) then amplifies (the exact answer is 0).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

void check_stats(const ArrayRef& mean, const ArrayRef& rstd, int64_t rows, DType input,
                 const char* op) {
  const DType want = stats_dtype(input);
  NEEDLE_CHECK(mean.dtype == want && rstd.dtype == want, TypeError, "cuda ", op, ": expected ",
               dtype_name(want), " mean and rstd, got ", dtype_name(mean.dtype), " and ",
               dtype_name(rstd.dtype));
  NEEDLE_CHECK(mean.numel() == rows && rstd.numel() == rows, ValueError, "cuda ", op, ": expected ",
               rows, " mean and rstd values, got ", mean.numel(), " and ", rstd.numel());
}

// R = rows, D = features. One block per row:
// y = (x - mean) * rstd * weight + bias, mean[r], rstd[r] = 1 / sqrt(var + eps).
template <typename T>
__global__ void __launch_bounds__(1024)
    layer_norm_forward_kernel(const T* __restrict__ x, Param weight, Param bias, double eps,
                              int64_t rows, int64_t d, T* __restrict__ y,
                              acc_t<T>* __restrict__ mean_out, acc_t<T>* __restrict__ rstd_out) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * d;
    A sum = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) sum += convert<A>(row[j]);
    const A mu = d > 0 ? block_sum(sum, scratch) / A(d) : A(0);
    A sq = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      A c = convert<A>(row[j]) - mu;
      sq += c * c;
    }
    const A var = d > 0 ? block_sum(sq, scratch) / A(d) : A(0);
    const A rs = A(1) / sqrt(var + A(eps));
    if (threadIdx.x == 0) {
      mean_out[r] = mu;
      rstd_out[r] = rs;
    }
    T* yrow = y + r * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      A v = (convert<A>(row[j]) - mu) * rs;
      if (weight.data) v *= load_as<A>(weight.data, weight.dtype, j);
      if (bias.data) v += load_as<A>(bias.data, bias.dtype, j);
      yrow[j] = convert<T>(v);
    }
  }
}

// R = rows, D = features, N = elements per 16-byte vector. One block per row, the row staged in
// shared memory (D elements of T): y = (x - mean) * rstd * weight + bias, mean[r], rstd[r].
template <typename T>
__global__ void __launch_bounds__(1024)
    layer_norm_forward_cached_kernel(const T* __restrict__ x, Param weight, Param bias, double eps,
                                     int64_t rows, int64_t d, bool vec, T* __restrict__ y,
                                     acc_t<T>* __restrict__ mean_out,
                                     acc_t<T>* __restrict__ rstd_out) {
  using A = acc_t<T>;
  constexpr int N = row_vec_width<T>();
  __shared__ A scratch[32];
  T* cache = row_cache<T>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    A sum = 0;
    stage_row<A>(x + r * d, cache, d, vec, [&](int64_t, A v) { sum += v; });
    const A mu = block_sum(sum, scratch) / A(d);
    A sq = 0;
    for_each_cached<A>(cache, d, vec, [&](int64_t, A v) {
      const A c = v - mu;
      sq += c * c;
    });
    const A rs = A(1) / sqrt(block_sum(sq, scratch) / A(d) + A(eps));
    if (threadIdx.x == 0) {
      mean_out[r] = mu;
      rstd_out[r] = rs;
    }
    T* yrow = y + r * d;
    if (vec) {
      const VecN<T, N>* src = reinterpret_cast<const VecN<T, N>*>(cache);
      VecN<T, N>* dst = reinterpret_cast<VecN<T, N>*>(yrow);
      for (int64_t v = threadIdx.x; v < d / N; v += blockDim.x) {
        const VecN<T, N> a = src[v];
        A w[N], b[N];
        load_param_vec<T>(weight, v, A(1), w);
        load_param_vec<T>(bias, v, A(0), b);
        VecN<T, N> o;
#pragma unroll
        for (int j = 0; j < N; ++j)
          o.v[j] = convert<T>((convert<A>(a.v[j]) - mu) * rs * w[j] + b[j]);
        dst[v] = o;
      }
    } else {
      map_cached<A>(cache, d, false, yrow, [&](int64_t j, A v) {
        A o = (v - mu) * rs;
        if (weight.data) o *= load_as<A>(weight.data, weight.dtype, j);
        if (bias.data) o += load_as<A>(bias.data, bias.dtype, j);
        return o;
      });
    }
  }
}

// R = rows, D = features. One block per row. With xhat = (x - mean) * rstd and g = dy * weight:
// dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)).
template <typename T>
__global__ void __launch_bounds__(1024)
    layer_norm_backward_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, Param weight,
                                  const acc_t<T>* __restrict__ mean,
                                  const acc_t<T>* __restrict__ rstd, int64_t rows, int64_t d,
                                  T* __restrict__ dx) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xrow = x + r * d;
    const T* grow = dy + r * d;
    const A mu = mean[r], rs = rstd[r];
    A sum_g = 0, sum_gx = 0;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      A g = convert<A>(grow[j]);
      if (weight.data) g = mul_rn(g, load_as<A>(weight.data, weight.dtype, j));
      sum_g += g;
      sum_gx += g * (convert<A>(xrow[j]) - mu) * rs;
    }
    const A mean_g = block_sum(sum_g, scratch) / A(d);
    const A mean_gx = block_sum(sum_gx, scratch) / A(d);
    T* dxrow = dx + r * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      A g = convert<A>(grow[j]);
      if (weight.data) g = mul_rn(g, load_as<A>(weight.data, weight.dtype, j));
      const A xhat = (convert<A>(xrow[j]) - mu) * rs;
      dxrow[j] = convert<T>(rs * (g - mean_g - xhat * mean_gx));
    }
  }
}

// R = rows, D = features, P = pieces of the rows. Block (32, 8) over 32 adjacent features; the 8
// warps stride over the piece's rows (each warp reads 32 consecutive elements of a row).
// partial_w[p, j] = sum over the piece's rows of dy * xhat, partial_b[p, j] = sum of dy.
template <typename T>
__global__ void layer_norm_param_partials_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                                 const acc_t<T>* __restrict__ mean,
                                                 const acc_t<T>* __restrict__ rstd, int64_t rows,
                                                 int64_t d, int64_t pieces, int64_t piece_rows,
                                                 acc_t<T>* __restrict__ partial_w,
                                                 acc_t<T>* __restrict__ partial_b) {
  using A = acc_t<T>;
  __shared__ A sw[8][33], sb[8][33];
  const int64_t tiles = (d + 31) / 32;
  for (int64_t u = blockIdx.x; u < tiles * pieces; u += gridDim.x) {
    const int64_t tile = u % tiles, p = u / tiles;
    const int64_t j = tile * 32 + threadIdx.x;
    const int64_t r_end = (p + 1) * piece_rows < rows ? (p + 1) * piece_rows : rows;
    A acc_w = 0, acc_b = 0;
    if (j < d) {
      for (int64_t r = p * piece_rows + threadIdx.y; r < r_end; r += 8) {
        const A g = convert<A>(dy[r * d + j]);
        acc_w += g * (convert<A>(x[r * d + j]) - mean[r]) * rstd[r];
        acc_b += g;
      }
    }
    sw[threadIdx.y][threadIdx.x] = acc_w;
    sb[threadIdx.y][threadIdx.x] = acc_b;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
#pragma unroll
      for (int k = 1; k < 8; ++k) {
        acc_w += sw[k][threadIdx.x];
        acc_b += sb[k][threadIdx.x];
      }
      partial_w[p * d + j] = acc_w;
      partial_b[p * d + j] = acc_b;
    }
    __syncthreads();
  }
}

// --- a warp per row: d = 128 * C, float32 / bfloat16 --------------------------------------------
// Lane l owns the four-element vectors l, l + 32, ..., l + 32 (C - 1) of every row it touches, so
// its columns, and the parameters and partial sums that go with them, are the same for each row.
constexpr int kWarpVec = 4;        // elements per vector
constexpr int kWarpsPerBlock = 8;  // warps of a block, each a row at a time
constexpr int kMaxWarpChunks = 8;  // d up to 128 * 8 = 1024 (registers: 4 C-vectors a lane)

// y = (x - mean) * rstd * weight + bias, mean[r], rstd[r], one warp per row.
template <typename T, int C>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    layer_norm_forward_warp_kernel(const T* __restrict__ x, Param weight, Param bias, double eps,
                                   int64_t rows, T* __restrict__ y, float* __restrict__ mean_out,
                                   float* __restrict__ rstd_out) {
  constexpr int N = kWarpVec, D = 128 * C;
  using V = VecN<T, N>;
  const int lane = threadIdx.x % 32;
  float w[C][N], b[C][N];
#pragma unroll
  for (int c = 0; c < C; ++c) {
    load_param_vec<T>(weight, lane + 32 * c, 1.f, w[c]);
    load_param_vec<T>(bias, lane + 32 * c, 0.f, b[c]);
  }
  const int64_t step = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; r < rows; r += step) {
    const V* src = reinterpret_cast<const V*>(x + r * D);
    float v[C][N];
    float sum = 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const V a = src[lane + 32 * c];
#pragma unroll
      for (int j = 0; j < N; ++j) {
        v[c][j] = convert<float>(a.v[j]);
        sum += v[c][j];
      }
    }
    const float mu = warp_sum(sum) / float(D);
    float sq = 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float t = v[c][j] - mu;
        sq += t * t;
      }
    const float rs = 1.f / sqrtf(warp_sum(sq) / float(D) + float(eps));
    if (lane == 0) {
      mean_out[r] = mu;
      rstd_out[r] = rs;
    }
    V* dst = reinterpret_cast<V*>(y + r * D);
#pragma unroll
    for (int c = 0; c < C; ++c) {
      V o;
#pragma unroll
      for (int j = 0; j < N; ++j) o.v[j] = convert<T>((v[c][j] - mu) * rs * w[c][j] + b[c][j]);
      dst[lane + 32 * c] = o;
    }
  }
}

// dx = rstd * (g - mean_j(g) - xhat * mean_j(g * xhat)) with g = dy * weight, one warp per row,
// and the block's partial sums over its rows: partial_w[block, j] = sum of dy * xhat,
// partial_b[block, j] = sum of dy (the warps' sums added in warp order through shared memory),
// unless partial_w is null (neither dweight nor dbias wanted).
template <typename T, int C>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    layer_norm_backward_warp_kernel(const T* __restrict__ dy, const T* __restrict__ x, Param weight,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    int64_t rows, T* __restrict__ dx, float* __restrict__ partial_w,
                                    float* __restrict__ partial_b) {
  constexpr int N = kWarpVec, D = 128 * C;
  using V = VecN<T, N>;
  __shared__ __align__(16) float sums[kWarpsPerBlock][D];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float pw[C][N] = {}, pb[C][N] = {};
  const int64_t step = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + warp; r < rows; r += step) {
    const V* xs = reinterpret_cast<const V*>(x + r * D);
    const V* gs = reinterpret_cast<const V*>(dy + r * D);
    V xv[C], gv[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      xv[c] = xs[lane + 32 * c];
      gv[c] = gs[lane + 32 * c];
    }
    const float mu = mean[r], rs = rstd[r];
    float g[C][N], xhat[C][N];
    float sum_g = 0.f, sum_gx = 0.f;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      float w[N];
      load_param_vec<T>(weight, lane + 32 * c, 1.f, w);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float d = convert<float>(gv[c].v[j]);
        xhat[c][j] = (convert<float>(xv[c].v[j]) - mu) * rs;
        pw[c][j] += d * xhat[c][j];
        pb[c][j] += d;
        g[c][j] = weight.data ? mul_rn(d, w[j]) : d;
        sum_g += g[c][j];
        sum_gx += g[c][j] * xhat[c][j];
      }
    }
    const float mean_g = warp_sum(sum_g) / float(D), mean_gx = warp_sum(sum_gx) / float(D);
    V* out = reinterpret_cast<V*>(dx + r * D);
#pragma unroll
    for (int c = 0; c < C; ++c) {
      V o;
#pragma unroll
      for (int j = 0; j < N; ++j)
        o.v[j] = convert<T>(rs * (g[c][j] - mean_g - xhat[c][j] * mean_gx));
      out[lane + 32 * c] = o;
    }
  }
  // The block's sums, warp by warp in order: dweight's, then dbias's through the same shared
  // memory.
  auto flush = [&](const float(&acc)[C][N], float* out) {
#pragma unroll
    for (int c = 0; c < C; ++c) {
      VecN<float, N> a;
#pragma unroll
      for (int j = 0; j < N; ++j) a.v[j] = acc[c][j];
      store_vec(&sums[warp][(lane + 32 * c) * N], a);
    }
    __syncthreads();
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
      float s = sums[0][j];
#pragma unroll
      for (int k = 1; k < kWarpsPerBlock; ++k) s += sums[k][j];
      out[int64_t(blockIdx.x) * D + j] = s;
    }
    __syncthreads();
  };
  if (partial_w == nullptr) return;  // the same for every thread: no __syncthreads is skipped
  flush(pw, partial_w);
  flush(pb, partial_b);
}

// Calls f(std::integral_constant<int, C>) and returns true when the warp kernels take rows of d
// features (d = 128 * C, C <= kMaxWarpChunks); returns false otherwise.
template <int C = 1, typename F>
bool with_warp_chunks(int64_t d, F&& f) {
  if constexpr (C > kMaxWarpChunks) {
    return false;
  } else {
    if (d != 128 * C) return with_warp_chunks<C + 1>(d, f);
    f(std::integral_constant<int, C>{});
    return true;
  }
}

// The element types the warp kernels take (their statistics are float).
template <typename T>
constexpr bool kWarpRows = std::is_same_v<T, float> || std::is_same_v<T, bfloat16>;

// True when every row of these compact arrays starts on a vector: their bases are aligned to one.
template <typename T>
bool warp_rows_ok(std::initializer_list<const void*> bases) {
  for (const void* p : bases)
    if (!aligned_to(p, kWarpVec * sizeof(T))) return false;
  return true;
}

// D = features, P = pieces: dweight[j] = sum_p partial_w[p, j], likewise dbias. Block (32, 8)
// over 32 adjacent columns of one of the two: warp y adds the pieces y, y + 8, ... in order, then
// the 8 warps' sums are added in order, so the result does not depend on timing.
template <typename A>
__global__ void layer_norm_param_finish_kernel(const A* __restrict__ partial_w,
                                               const A* __restrict__ partial_b, int64_t d,
                                               int64_t pieces, void* dweight, DType w_dtype,
                                               void* dbias, DType b_dtype) {
  __shared__ A part[8][33];
  const int64_t tiles = (d + 31) / 32;
  for (int64_t u = blockIdx.x; u < 2 * tiles; u += gridDim.x) {
    const bool is_bias = u >= tiles;
    void* out = is_bias ? dbias : dweight;
    if (out == nullptr) continue;  // uniform over the block
    const A* partial = is_bias ? partial_b : partial_w;
    const int64_t j = (u % tiles) * 32 + threadIdx.x;
    A acc = 0;
    if (j < d)
      for (int64_t p = threadIdx.y; p < pieces; p += 8) acc += partial[p * d + j];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
#pragma unroll
      for (int k = 1; k < 8; ++k) acc += part[k][threadIdx.x];
      store_as(out, is_bias ? b_dtype : w_dtype, j, acc);
    }
    __syncthreads();
  }
}

// dweight / dbias (either may be null) from the (pieces, d) partial sums.
template <typename A>
void finish_param_sums(const A* pw, const A* pb, int64_t d, int64_t pieces, void* dweight,
                       DType w_dtype, void* dbias, DType b_dtype) {
  layer_norm_param_finish_kernel<A><<<grid_for(2 * ceil_div(d, 32), 1), dim3(32, 8), 0, stream()>>>(
      pw, pb, d, pieces, dweight, w_dtype, dbias, b_dtype);
  NEEDLE_CUDA_LAUNCH_CHECK();
}

// Threads per row block for d features: about 4 per thread, up to 1024.
int norm_block_threads(int64_t d) { return row_block_threads(d * 2); }

}  // namespace

// R = rows, D = features.
void layer_norm_forward(const ArrayRef& x, const ArrayRef* weight, const ArrayRef* bias, double eps,
                        int64_t rows, int64_t d, const ArrayRef& y, const ArrayRef& mean,
                        const ArrayRef& rstd) {
  const char* name = "layer_norm";
  NEEDLE_CHECK(x.numel() == rows * d && y.numel() == rows * d, ValueError, "cuda ", name,
               ": expected ", rows, " x ", d, " x and y, got ", x.numel(), " and ", y.numel(),
               " elements");
  NEEDLE_CHECK(y.dtype == x.dtype, TypeError, "cuda ", name, ": expected y of dtype ",
               dtype_name(x.dtype), ", got ", dtype_name(y.dtype));
  check_stats(mean, rstd, rows, x.dtype, name);
  const Param w = optional_param(weight, d, x.dtype, name, "weight");
  const Param b = optional_param(bias, d, x.dtype, name, "bias");
  if (rows == 0) return;
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    const T* xp = static_cast<const T*>(x.data);
    T* yp = static_cast<T*>(y.data);
    auto* mp = static_cast<acc_t<T>*>(mean.data);
    auto* rp = static_cast<acc_t<T>*>(rstd.data);
    if constexpr (kWarpRows<T>) {
      const bool done =
          warp_rows_ok<T>({xp, yp}) && with_warp_chunks(d, [&](auto chunks) {
            auto* kernel = layer_norm_forward_warp_kernel<T, decltype(chunks)::value>;
            const unsigned grid =
                resident_grid(kernel, kWarpsPerBlock * 32, 0, ceil_div(rows, kWarpsPerBlock));
            kernel<<<grid, kWarpsPerBlock * 32, 0, stream()>>>(xp, w, b, eps, rows, yp, mp, rp);
            NEEDLE_CUDA_LAUNCH_CHECK();
          });
      if (done) return;
    }
    static const size_t smem_limit =
        enable_max_dynamic_shared_memory(layer_norm_forward_cached_kernel<T>);
    const size_t smem = static_cast<size_t>(d) * sizeof(T);
    if (d > 0 && smem <= smem_limit) {
      const bool vec = rows_vectorizable<T>(x.data, d) && aligned_to(y.data, 16);
      const int threads = cached_row_threads(vec ? d / row_vec_width<T>() : d);
      const unsigned grid = resident_grid(layer_norm_forward_cached_kernel<T>, threads, smem, rows);
      layer_norm_forward_cached_kernel<T>
          <<<grid, threads, smem, stream()>>>(xp, w, b, eps, rows, d, vec, yp, mp, rp);
    } else {
      layer_norm_forward_kernel<T><<<grid_for(rows, 1), norm_block_threads(d), 0, stream()>>>(
          xp, w, b, eps, rows, d, yp, mp, rp);
    }
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

// R = rows, D = features.
void layer_norm_backward(const ArrayRef& dy, const ArrayRef& x, const ArrayRef* weight,
                         const ArrayRef& mean, const ArrayRef& rstd, int64_t rows, int64_t d,
                         const ArrayRef& dx, const ArrayRef* dweight, const ArrayRef* dbias) {
  const char* name = "layer_norm_backward";
  NEEDLE_CHECK(x.numel() == rows * d && dy.numel() == rows * d && dx.numel() == rows * d,
               ValueError, "cuda ", name, ": expected ", rows, " x ", d, " dy, x and dx, got ",
               dy.numel(), ", ", x.numel(), " and ", dx.numel(), " elements");
  NEEDLE_CHECK(dy.dtype == x.dtype && dx.dtype == x.dtype, TypeError, "cuda ", name,
               ": expected dy and dx of dtype ", dtype_name(x.dtype), ", got ",
               dtype_name(dy.dtype), " and ", dtype_name(dx.dtype));
  check_stats(mean, rstd, rows, x.dtype, name);
  const Param w = optional_param(weight, d, x.dtype, name, "weight");
  const Param dw = optional_param(dweight, d, x.dtype, name, "dweight");
  const Param db = optional_param(dbias, d, x.dtype, name, "dbias");
  NEEDLE_DISPATCH_FLOATING(x.dtype, name, [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* dyp = static_cast<const T*>(dy.data);
    const T* xp = static_cast<const T*>(x.data);
    const A* mp = static_cast<const A*>(mean.data);
    const A* rp = static_cast<const A*>(rstd.data);
    void* dwp = dweight ? dweight->data : nullptr;
    void* dbp = dbias ? dbias->data : nullptr;
    if constexpr (kWarpRows<T>) {
      T* dxp = static_cast<T*>(dx.data);
      const bool done =
          rows > 0 && warp_rows_ok<T>({dyp, xp, dxp}) && with_warp_chunks(d, [&](auto chunks) {
            auto* kernel = layer_norm_backward_warp_kernel<T, decltype(chunks)::value>;
            const unsigned grid =
                resident_grid(kernel, kWarpsPerBlock * 32, 0, ceil_div(rows, kWarpsPerBlock));
            const bool sums = dwp || dbp;
            Workspace ws(sums ? static_cast<size_t>(2 * grid * d) * sizeof(float) : 0);
            float* pw = ws.as<float>();
            float* pb = sums ? pw + grid * d : nullptr;
            kernel<<<grid, kWarpsPerBlock * 32, 0, stream()>>>(dyp, xp, w, mp, rp, rows, dxp, pw,
                                                               pb);
            NEEDLE_CUDA_LAUNCH_CHECK();
            if (sums) finish_param_sums(pw, pb, d, grid, dwp, dw.dtype, dbp, db.dtype);
          });
      if (done) return;
    }
    if (rows > 0 && d > 0) {
      layer_norm_backward_dx_kernel<T><<<grid_for(rows, 1), norm_block_threads(d), 0, stream()>>>(
          dyp, xp, w, mp, rp, rows, d, static_cast<T*>(dx.data));
      NEEDLE_CUDA_LAUNCH_CHECK();
    }
    if ((dweight == nullptr && dbias == nullptr) || d == 0) return;
    // Pieces of at least 64 rows, enough of them with the feature tiles to fill the GPU.
    const int64_t tiles = ceil_div(d, 32);
    int64_t pieces = ceil_div(int64_t(num_sms()) * 4, tiles);
    const int64_t max_pieces = ceil_div(rows, 64);
    if (pieces > max_pieces) pieces = max_pieces;
    if (pieces < 1) pieces = 1;
    const int64_t piece_rows = ceil_div(rows, pieces);
    Workspace ws(static_cast<size_t>(2 * pieces * d) * sizeof(A));
    A* pw = ws.as<A>();
    A* pb = pw + pieces * d;
    layer_norm_param_partials_kernel<T><<<grid_for(tiles * pieces, 1), dim3(32, 8), 0, stream()>>>(
        dyp, xp, mp, rp, rows, d, pieces, piece_rows, pw, pb);
    NEEDLE_CUDA_LAUNCH_CHECK();
    finish_param_sums(pw, pb, d, pieces, dwp, dw.dtype, dbp, db.dtype);
  });
}

}  // namespace needle::cuda
