// Fused row ops along the last axis of a compact (rows, cols) array: softmax, log_softmax and
// logsumexp. Softmax and log_softmax read each row from device memory once and write it once:
//  - rows of up to 256 16-byte vectors (1024 float32): a warp per row, the row in registers;
//  - rows over 64 KB, on Hopper (sm_90): a thread-block cluster of K = 2..8 blocks per row, each
//    block staging a slice of at most about 64 KB in its shared memory, the blocks exchanging
//    their partial maximum and sum through distributed shared memory. A block per row of 200 KB
//    would leave one block per multiprocessor, whose load and store phases never overlap, and
//    the last wave of rows on a few multiprocessors; slices let four rows share a multiprocessor,
//    one loading while another stores, and spread each row over K of them;
//  - other rows that fit in shared memory: a block per row, the row staged there (row_cache.cuh);
// all take the maximum, then the sum of exp(x - max), then the output from the kept copy: two
// cheap reductions and one exponential per element per pass, instead of rescaling a running sum.
// Rows too long to stage, and logsumexp, use one block per row on the (max, sum) of row_stats.cuh:
// bfloat16 and float32 rows by segments (in 16-byte chunks where the rows allow), float64 rows by
// the online update (the long rows are read twice: statistics, then the output pass).
#include <cooperative_groups.h>

#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/row_cache.cuh"
#include "backend_cuda/row_stats.cuh"

namespace needle::cuda {
namespace {

// R = rows, C = cols. out is (R, C) for Softmax / LogSoftmax and (R) for LogSumExp. One block
// per row: the statistics by block_row_max_sum<Chunked>, then the output pass reads the row
// again element by element.
template <typename T, bool Chunked>
__global__ void __launch_bounds__(1024)
    row_op_kernel(RowOp op, const T* __restrict__ x, int64_t rows, int64_t cols,
                  T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ MaxSum<A> scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = x + r * cols;
    const MaxSum<A> st = block_row_max_sum<Chunked>(row, cols, scratch);
    if (op == RowOp::LogSumExp) {
      if (threadIdx.x == 0) out[r] = convert<T>(max_sum_logsumexp(st));
      continue;
    }
    T* orow = out + r * cols;
    // Softmax and log_softmax shift by the plain maximum, so a row holding +inf or only -inf
    // gives NaN, as on the CPU and in torch.
    if (op == RowOp::Softmax) {
      const A inv = A(1) / st.s;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        orow[c] = convert<T>(exp(convert<A>(row[c]) - st.m) * inv);
    } else {
      const A log_s = log(st.s);
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
        orow[c] = convert<T>(convert<A>(row[c]) - st.m - log_s);
    }
  }
}

// Maximum that propagates NaN: once m is NaN it stays NaN, so every output of the row is NaN.
// This compare-and-select form hides row_stats.cuh's float max_nan (one max.NaN.f32) from the
// kernels below; both give the same values.
template <typename A>
__device__ __forceinline__ A max_nan(A m, A v) {
  return (v > m || v != v) ? v : m;
}

// exp(v - m), m the row's maximum. In float as exp2 of one FMA (the MUFU.EX2 path; m * log2(e)
// is loop-invariant); relative error about 1e-6 for the |v - m| of a softmax row. Rows holding
// +inf or only -inf give NaN, as on the CPU and in torch.
__device__ __forceinline__ float exp_minus(float v, float m) {
  return exp2f(fmaf(v, kLog2e, -m * kLog2e));
}
__device__ __forceinline__ double exp_minus(double v, double m) { return exp(v - m); }

// log(sum of exp(x - m)) from the sum s of exp_minus terms. In float every term carries the same
// factor 2^(m log2(e) - c), c = m * log2(e) rounded: it cancels in softmax, and log_softmax takes
// its logarithm back out (it grows with |m|: 6e-4 at m = 1e4).
__device__ __forceinline__ float log_sum(float s, float m) {
  return log(s) - fmaf(m, kLog2e, -m * kLog2e) * kLn2;
}
__device__ __forceinline__ double log_sum(double s, double) { return log(s); }

template <typename A>
__device__ __forceinline__ A warp_max_nan(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Maximum over the block; every thread gets it. `scratch` holds 32 values.
template <typename A>
__device__ __forceinline__ A block_max_nan(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max_nan(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = warp_max_nan(lane < nwarps ? scratch[lane] : A(-INFINITY));
  __syncthreads();
  return v;
}

// R = rows, C = cols, N = elements per 16-byte vector, kVecs = vectors per lane. A warp per row
// with the row in registers (lane l holds vectors l, l + 32, ...): all of a lane's loads are in
// flight at once, and no shared memory or block barrier is involved. Needs whole, aligned vectors
// and C <= 32 * kVecs * N. out is (R, C).
template <typename T, int kVecs>
__global__ void __launch_bounds__(256)
    row_op_warp_kernel(RowOp op, const T* __restrict__ x, int64_t rows, int64_t cols,
                       T* __restrict__ out) {
  using A = acc_t<T>;
  constexpr int N = row_vec_width<T>();
  using V = VecN<T, N>;
  const int lane = threadIdx.x & 31;
  const int64_t nv = cols / N;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
       r < rows; r += warps) {
    const V* src = reinterpret_cast<const V*>(x + r * cols);
    V a[kVecs];
#pragma unroll
    for (int k = 0; k < kVecs; ++k)
      if (lane + k * 32 < nv) a[k] = src[lane + k * 32];
    A m = -INFINITY;
#pragma unroll
    for (int k = 0; k < kVecs; ++k)
      if (lane + k * 32 < nv)
#pragma unroll
        for (int j = 0; j < N; ++j) m = max_nan(m, convert<A>(a[k].v[j]));
    m = warp_max_nan(m);
    A s = 0;
#pragma unroll
    for (int k = 0; k < kVecs; ++k)
      if (lane + k * 32 < nv)
#pragma unroll
        for (int j = 0; j < N; ++j) s += exp_minus(convert<A>(a[k].v[j]), m);
    s = warp_sum(s);
    V* dst = reinterpret_cast<V*>(out + r * cols);
    const A inv = A(1) / s, log_s = log_sum(s, m);
#pragma unroll
    for (int k = 0; k < kVecs; ++k) {
      if (lane + k * 32 < nv) {
        V o;
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const A v = convert<A>(a[k].v[j]);
          o.v[j] = convert<T>(op == RowOp::Softmax ? exp_minus(v, m) * inv : v - m - log_s);
        }
        dst[lane + k * 32] = o;
      }
    }
  }
}

// R = rows, C = cols. Softmax or LogSoftmax with the row staged in shared memory (C elements of
// T): the maximum is taken while the row is loaded, then the sum of exp(x - max) and the output
// from the staged copy. out is (R, C).
template <typename T>
__global__ void __launch_bounds__(1024)
    row_op_cached_kernel(RowOp op, const T* __restrict__ x, int64_t rows, int64_t cols, bool vec,
                         T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  T* cache = row_cache<T>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    A m = -INFINITY;
    stage_row<A>(x + r * cols, cache, cols, vec, [&](int64_t, A v) { m = max_nan(m, v); });
    m = block_max_nan(m, scratch);
    A s = 0;
    for_each_cached<A>(cache, cols, vec, [&](int64_t, A v) { s += exp_minus(v, m); });
    s = block_sum(s, scratch);
    if (op == RowOp::Softmax) {
      const A inv = A(1) / s;
      map_cached<A>(cache, cols, vec, out + r * cols,
                    [&](int64_t, A v) { return exp_minus(v, m) * inv; });
    } else {
      const A log_s = log_sum(s, m);
      map_cached<A>(cache, cols, vec, out + r * cols, [&](int64_t, A v) { return v - m - log_s; });
    }
  }
}

// Threads per block of the cluster kernel. Four such blocks of a ~50 KB slice share a
// multiprocessor (at most 64 registers per thread).
constexpr int kClusterThreads = 256;
// Row bytes per block of a cluster: a row of B bytes is split over ceil(B / kClusterSlice) blocks.
constexpr int64_t kClusterSlice = 64 * 1024;
constexpr int kMaxCluster = 8;  // the portable cluster size

// R = rows, C = cols, K = blocks per row (the cluster, set at launch: block b handles row b / K).
// Softmax or LogSoftmax with the row split over the cluster's blocks, each staging its slice in
// shared memory (row_cache.cuh): each block reduces its slice's maximum, the blocks read each
// other's through distributed shared memory (all combine the K values in the same order, so all
// get the same result), then the same for the sum of exp(x - max), then each writes its slice.
// With `vec`, input and output rows start at the same offset from a 16-byte boundary: the
// elements before the first boundary (head) and after the last whole vector (tail), fewer than 8
// each, are kept in registers by the first threads of block 0 and the rest is read in 16-byte
// vectors, so odd row lengths keep the vector path. Without it the slices are read element by
// element. out is (R, C).
template <typename T>
__global__ void __launch_bounds__(kClusterThreads, 4)
    row_op_cluster_kernel(RowOp op, const T* __restrict__ x, int64_t cols, bool vec,
                          T* __restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  using A = acc_t<T>;
  constexpr int N = row_vec_width<T>();
  __shared__ A scratch[32];
  __shared__ A slice_max, slice_sum;  // this block's partial results, read by the whole cluster
  const cg::cluster_group cluster = cg::this_cluster();
  const int K = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t r = blockIdx.x / K;
  const T* row = x + r * cols;
  T* orow = out + r * cols;
  T* cache = row_cache<T>();

  // This block's staged elements [start, start + len), and the head / tail elements (block 0).
  int64_t start, len, tail_start = 0;
  int head = 0, tail = 0;
  if (vec) {
    const int mis = static_cast<int>(reinterpret_cast<uintptr_t>(row) & 15) / int(sizeof(T));
    head = static_cast<int>((N - mis) % N < cols ? (N - mis) % N : cols);
    const int64_t nv = (cols - head) / N, per = (nv + K - 1) / K;
    const int64_t v0 = rank * per < nv ? rank * per : nv, v1 = v0 + per < nv ? v0 + per : nv;
    start = head + v0 * N;
    len = (v1 - v0) * N;
    tail_start = head + nv * N;
    tail = static_cast<int>(cols - tail_start);
    if (rank != 0) head = tail = 0;
  } else {
    const int64_t per = (cols + K - 1) / K;
    start = rank * per < cols ? rank * per : cols;
    len = (start + per < cols ? start + per : cols) - start;
  }
  const bool has_head = threadIdx.x < head, has_tail = threadIdx.x < tail;
  const A hx = has_head ? convert<A>(row[threadIdx.x]) : A(0);
  const A tx = has_tail ? convert<A>(row[tail_start + threadIdx.x]) : A(0);

  A m = -INFINITY;
  if (has_head) m = max_nan(m, hx);
  if (has_tail) m = max_nan(m, tx);
  stage_row<A>(row + start, cache, len, vec, [&](int64_t, A v) { m = max_nan(m, v); });
  m = block_max_nan(m, scratch);
  if (threadIdx.x == 0) slice_max = m;
  cluster.sync();
  m = -INFINITY;
  for (int k = 0; k < K; ++k) m = max_nan(m, *cluster.map_shared_rank(&slice_max, k));

  A s = 0;
  if (has_head) s += exp_minus(hx, m);
  if (has_tail) s += exp_minus(tx, m);
  for_each_cached<A>(cache, len, vec, [&](int64_t, A v) { s += exp_minus(v, m); });
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) slice_sum = s;
  cluster.sync();
  s = 0;
  for (int k = 0; k < K; ++k) s += *cluster.map_shared_rank(&slice_sum, k);
  // Done reading the other blocks' shared memory; each waits for all before it exits (below).
  cluster.barrier_arrive();

  if (op == RowOp::Softmax) {
    const A inv = A(1) / s;
    map_cached<A>(cache, len, vec, orow + start,
                  [&](int64_t, A v) { return exp_minus(v, m) * inv; });
    if (has_head) orow[threadIdx.x] = convert<T>(exp_minus(hx, m) * inv);
    if (has_tail) orow[tail_start + threadIdx.x] = convert<T>(exp_minus(tx, m) * inv);
  } else {
    const A log_s = log_sum(s, m);
    map_cached<A>(cache, len, vec, orow + start, [&](int64_t, A v) { return v - m - log_s; });
    if (has_head) orow[threadIdx.x] = convert<T>(hx - m - log_s);
    if (has_tail) orow[tail_start + threadIdx.x] = convert<T>(tx - m - log_s);
  }
  cluster.barrier_wait();
#endif
}

// True when this device has thread-block clusters and this build holds sm_90 code for the
// cluster kernel (a build for older targets only compiles its body away). Asked once.
bool clusters_available() {
  static const bool ok = [] {
    cudaFuncAttributes attr;
    NEEDLE_CUDA_CHECK(cudaFuncGetAttributes(&attr, row_op_cluster_kernel<float>));
    return compute_capability() >= 90 && attr.ptxVersion >= 90;
  }();
  return ok;
}

// Blocks per row for the cluster kernel (0 when it does not apply: short rows, no clusters, a
// slice too large for shared memory, too many blocks for one grid) and each block's shared
// memory in `smem`. `vec`: input and output rows are read and written in 16-byte vectors.
template <typename T>
int row_op_cluster_size(int64_t rows, int64_t cols, bool vec, size_t* smem) {
  const int64_t row_bytes = cols * static_cast<int64_t>(sizeof(T));
  if (row_bytes <= kClusterSlice || !clusters_available()) return 0;
  static const size_t smem_limit = enable_max_dynamic_shared_memory(row_op_cluster_kernel<T>);
  const int64_t k = ceil_div(row_bytes, kClusterSlice);
  const int K = static_cast<int>(k < kMaxCluster ? k : kMaxCluster);
  *smem = static_cast<size_t>(vec ? ceil_div(cols / row_vec_width<T>(), K) * 16
                                  : ceil_div(cols, K) * static_cast<int64_t>(sizeof(T)));
  if (*smem > smem_limit || rows > int64_t(INT32_MAX) / K) return 0;
  return K;
}

template <typename T>
void launch_row_op_cluster(RowOp op, const T* x, int64_t rows, int64_t cols, bool vec, int K,
                           size_t smem, T* out) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(rows * K));
  cfg.blockDim = dim3(kClusterThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(K);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  cfg.attrs = &cluster;
  cfg.numAttrs = 1;
  NEEDLE_CUDA_CHECK(cudaLaunchKernelEx(&cfg, row_op_cluster_kernel<T>, op, x, cols, vec, out));
}

template <typename T, int kVecs>
void launch_row_op_warp(RowOp op, const T* x, int64_t rows, int64_t cols, T* out) {
  constexpr int kWarpsPerBlock = 8;
  auto* kernel = row_op_warp_kernel<T, kVecs>;
  const unsigned grid =
      resident_grid(kernel, 32 * kWarpsPerBlock, 0, ceil_div(rows, kWarpsPerBlock));
  kernel<<<grid, 32 * kWarpsPerBlock, 0, stream()>>>(op, x, rows, cols, out);
}

const char* row_op_name(RowOp op) {
  return op == RowOp::Softmax ? "softmax" : op == RowOp::LogSoftmax ? "log_softmax" : "logsumexp";
}

}  // namespace

// R = rows, C = cols.
void row_op(RowOp op, const ArrayRef& in, int64_t rows, int64_t cols, const ArrayRef& out) {
  const char* name = row_op_name(op);
  NEEDLE_CHECK(in.numel() == rows * cols, ValueError, "cuda ", name, ": expected ", rows, " x ",
               cols, " input elements, got ", in.numel());
  const int64_t out_numel = op == RowOp::LogSumExp ? rows : rows * cols;
  NEEDLE_CHECK(out.numel() == out_numel, ValueError, "cuda ", name, ": expected ", out_numel,
               " output elements, got ", out.numel());
  NEEDLE_CHECK(out.dtype == in.dtype, TypeError, "cuda ", name, ": expected an output of dtype ",
               dtype_name(in.dtype), ", got ", dtype_name(out.dtype));
  if (out_numel == 0) return;
  NEEDLE_DISPATCH_FLOATING(in.dtype, name, [&] {
    using T = scalar_t;
    const T* x = static_cast<const T*>(in.data);
    T* o = static_cast<T*>(out.data);
    static const size_t smem_limit = enable_max_dynamic_shared_memory(row_op_cached_kernel<T>);
    constexpr int64_t N = row_vec_width<T>();
    const size_t smem = static_cast<size_t>(cols) * sizeof(T);
    const bool vec = rows_vectorizable<T>(in.data, cols) && aligned_to(out.data, 16);
    // The cluster kernel peels each row's unaligned ends, so it needs only the same misalignment.
    const bool cluster_vec =
        ((reinterpret_cast<uintptr_t>(in.data) ^ reinterpret_cast<uintptr_t>(out.data)) & 15) == 0;
    size_t cluster_smem = 0;
    const int cluster =
        op == RowOp::LogSumExp ? 0 : row_op_cluster_size<T>(rows, cols, cluster_vec, &cluster_smem);
    if (op != RowOp::LogSumExp && vec && cols <= 32 * 8 * N) {
      const int64_t per_lane = ceil_div(cols / N, 32);
      if (per_lane <= 1)
        launch_row_op_warp<T, 1>(op, x, rows, cols, o);
      else if (per_lane <= 2)
        launch_row_op_warp<T, 2>(op, x, rows, cols, o);
      else if (per_lane <= 4)
        launch_row_op_warp<T, 4>(op, x, rows, cols, o);
      else
        launch_row_op_warp<T, 8>(op, x, rows, cols, o);
    } else if (cluster > 0) {
      launch_row_op_cluster<T>(op, x, rows, cols, cluster_vec, cluster, cluster_smem, o);
    } else if (op != RowOp::LogSumExp && cols > 0 && smem <= smem_limit) {
      const int threads = cached_row_threads(vec ? cols / N : cols);
      const unsigned grid = resident_grid(row_op_cached_kernel<T>, threads, smem, rows);
      row_op_cached_kernel<T><<<grid, threads, smem, stream()>>>(op, x, rows, cols, vec, o);
    } else {
      const auto launch = segmented_row_launch<T>(
          in.data, cols, [](auto chunked) { return row_op_kernel<T, decltype(chunked)::value>; });
      launch.kernel<<<grid_for(rows, 1), launch.threads, 0, stream()>>>(op, x, rows, cols, o);
    }
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
