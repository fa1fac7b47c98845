// Gather and scatter-add along one axis: index_select (embedding lookups, x[idx]) and index_add
// (their gradients, summed in a fixed order: the same bits on every run). A bad index cannot throw
// from a kernel: it is recorded in the device error flag (cuda_common.cuh) and raised as
// IndexError at the next synchronisation.
#include <cuda_bf16.h>

#include <algorithm>
#include <cub/device/device_radix_sort.cuh>

#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"
#include "backend_cuda/elementwise.cuh"

namespace needle::cuda {
namespace {

void check_index(const ArrayRef& index, const char* op) {
  NEEDLE_CHECK(index.dtype == DType::Int64 || index.dtype == DType::Int32, TypeError, "cuda ", op,
               ": expected an int64 or int32 index, got ", dtype_name(index.dtype));
  NEEDLE_CHECK(index.is_compact(), ValueError, "cuda ", op, ": expected a compact index");
}

// O = outer, N = indexed dim of in, K = number of indices, I = inner.
// out[o, j, i] = in[o, idx[j], i]; an out-of-range idx[j] is reported and its row zeroed.
template <typename Bits>
__global__ void index_select_kernel(const Bits* __restrict__ in, const void* index,
                                    DType index_dtype, int64_t outer, int64_t n, int64_t k,
                                    int64_t inner, Bits* __restrict__ out, DeviceErrorFlag flag) {
  const int64_t total = outer * k * inner;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, j = (e / inner) % k, o = e / (inner * k);
    const int64_t idx = load_as_int64(index, index_dtype, j);
    if (idx < 0 || idx >= n) {
      if (i == 0) report_device_error(flag, kIndexSelect, idx, n);
      out[e] = Bits(0);
      continue;
    }
    out[e] = in[(o * n + idx) * inner + i];
  }
}

// --- index_add without atomics ------------------------------------------------------------------
// Atomic adds would make a float sum over repeated indices (the embedding's gradient) depend on
// the order the adds land in, so two runs of one training script would differ in the last bits.
// Instead the K indices are sorted with their positions (a stable radix sort), so each output
// row's sources form one run of the sorted order and are summed in position order. A run is cut
// into chunks of kChunk positions summed in parallel (index_add_chunks_kernel); a run of more
// than one chunk then adds its chunk sums in order (index_add_runs_kernel). Same inputs, same bits.
// The chunk sums get one acc_t row per sorted position, a workspace as large as src (for the
// Pythia-70M embedding, 16,384 x 512 floats: 32 MiB from the caching allocator).
constexpr int64_t kChunk = 32;
constexpr int kAddThreads = 128;

// keys[j] = index[j], or n (sorted after every valid index, and skipped) for an out-of-range
// index, which is reported; pos[j] = j.
__global__ void index_add_keys_kernel(const void* index, DType index_dtype, int64_t k, int64_t n,
                                      uint64_t* __restrict__ keys, int64_t* __restrict__ pos,
                                      DeviceErrorFlag flag) {
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < k;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t idx = load_as_int64(index, index_dtype, j);
    const bool bad = idx < 0 || idx >= n;
    if (bad) report_device_error(flag, kIndexAdd, idx, n);
    keys[j] = static_cast<uint64_t>(bad ? n : idx);
    pos[j] = j;
  }
}

// The first position of the run that holds sorted position p.
__device__ __forceinline__ int64_t run_start(const uint64_t* keys, int64_t p) {
  const uint64_t key = keys[p];
  int64_t lo = 0, hi = p;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < key)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// O = outer, N = indexed dim of out, K = number of indices, I = inner; keys / pos sorted.
// One block per (sorted position p, outer slice). The block of a chunk's first position (a run's
// first, or a multiple of kChunk after it) sums src[o, pos[q], :] over the chunk's positions q in
// order: straight into out[o, keys[p], :] when the run is this one chunk, else into
// partial[o, p, :].
template <typename T>
__global__ void __launch_bounds__(kAddThreads)
    index_add_chunks_kernel(const T* __restrict__ src, const uint64_t* __restrict__ keys,
                            const int64_t* __restrict__ pos, int64_t outer, int64_t n, int64_t k,
                            int64_t inner, acc_t<T>* __restrict__ partial, T* __restrict__ out) {
  using A = acc_t<T>;
  __shared__ int64_t rows[kChunk];
  const int64_t p = blockIdx.x;
  const uint64_t key = keys[p];
  if (key >= static_cast<uint64_t>(n)) return;  // out-of-range indices add nothing
  const int64_t start = run_start(keys, p);
  if ((p - start) % kChunk != 0) return;
  int64_t end = p + 1;
  while (end < k && end < p + kChunk && keys[end] == key) ++end;
  const bool whole_run = p == start && (end == k || keys[end] != key);
  const int count = static_cast<int>(end - p);
  if (threadIdx.x < count) rows[threadIdx.x] = pos[p + threadIdx.x];
  __syncthreads();
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    const T* s = src + o * k * inner;
    for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
      A acc = A(0);
      for (int q = 0; q < count; ++q) acc += convert<A>(s[rows[q] * inner + i]);
      if (whole_run) {
        T* dst = out + (o * n + static_cast<int64_t>(key)) * inner + i;
        *dst = convert<T>(convert<A>(*dst) + acc);
      } else {
        partial[(o * k + p) * inner + i] = acc;
      }
    }
  }
}

// One block per (sorted position p, outer slice); the block of the first position of a run longer
// than kChunk adds the run's chunk sums, in order, to out[o, keys[p], :].
template <typename T>
__global__ void __launch_bounds__(kAddThreads)
    index_add_runs_kernel(const uint64_t* __restrict__ keys, int64_t outer, int64_t n, int64_t k,
                          int64_t inner, const acc_t<T>* __restrict__ partial,
                          T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t p = blockIdx.x;
  const uint64_t key = keys[p];
  if (key >= static_cast<uint64_t>(n) || (p > 0 && keys[p - 1] == key)) return;
  if (p + kChunk >= k || keys[p + kChunk] != key) return;  // one chunk: already added
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
      A acc = A(0);
      for (int64_t q = p; q < k && keys[q] == key; q += kChunk)
        acc += partial[(o * k + q) * inner + i];
      T* dst = out + (o * n + static_cast<int64_t>(key)) * inner + i;
      *dst = convert<T>(convert<A>(*dst) + acc);
    }
  }
}

// Bytes from `offset` rounded up to a 256-byte boundary (cuBLAS / CUB alignment).
size_t align256(size_t offset) { return (offset + 255) / 256 * 256; }

}  // namespace

void index_select(const ArrayRef& in, const ArrayRef& index, int64_t outer, int64_t n,
                  int64_t inner, const ArrayRef& out) {
  check_index(index, "index_select");
  const int64_t k = index.numel();
  NEEDLE_CHECK(in.dtype == out.dtype, TypeError, "cuda index_select: expected out of dtype ",
               dtype_name(in.dtype), ", got ", dtype_name(out.dtype));
  NEEDLE_CHECK(in.numel() == outer * n * inner && out.numel() == outer * k * inner, ValueError,
               "cuda index_select: expected in of ", outer * n * inner, " and out of ",
               outer * k * inner, " elements, got ", in.numel(), " and ", out.numel());
  const int64_t total = outer * k * inner;
  if (total == 0) return;
  NEEDLE_DISPATCH_BITS(itemsize(in.dtype), [&] {
    index_select_kernel<bits_t><<<grid_for(total, kThreads), kThreads, 0, stream()>>>(
        static_cast<const bits_t*>(in.data), index.data, index.dtype, outer, n, k, inner,
        static_cast<bits_t*>(out.data), device_error_flag());
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

void index_add(const ArrayRef& src, const ArrayRef& index, int64_t outer, int64_t n, int64_t inner,
               const ArrayRef& out) {
  check_index(index, "index_add");
  const int64_t k = index.numel();
  NEEDLE_CHECK(src.dtype == out.dtype, TypeError, "cuda index_add: expected src of dtype ",
               dtype_name(out.dtype), ", got ", dtype_name(src.dtype));
  NEEDLE_CHECK(src.numel() == outer * k * inner && out.numel() == outer * n * inner, ValueError,
               "cuda index_add: expected src of ", outer * k * inner, " and out of ",
               outer * n * inner, " elements, got ", src.numel(), " and ", out.numel());
  NEEDLE_CHECK(k <= INT32_MAX, ValueError, "cuda index_add: at most ", INT32_MAX, " indices, got ",
               k);
  // Sort keys up to the sentinel n: bit_width(n) bits.
  int key_bits = 1;
  while (key_bits < 64 && (uint64_t(n) >> key_bits) != 0) ++key_bits;
  NEEDLE_DISPATCH_NUMERIC(out.dtype, "index_add", [&] {
    using A = acc_t<scalar_t>;
    if (outer == 0 || k == 0 || inner == 0) return;
    size_t cub_bytes = 0;
    NEEDLE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
        nullptr, cub_bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
        static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr), k, 0, key_bits,
        stream()));
    // One workspace: keys and positions before and after the sort, the chunk sums, CUB's scratch.
    const size_t list = align256(size_t(k) * 8);
    const size_t partial_bytes = align256(size_t(outer) * k * inner * sizeof(A));
    Workspace ws(4 * list + partial_bytes + cub_bytes);
    char* base = ws.as<char>();
    auto* keys_in = reinterpret_cast<uint64_t*>(base);
    auto* keys = reinterpret_cast<uint64_t*>(base + list);
    auto* pos_in = reinterpret_cast<int64_t*>(base + 2 * list);
    auto* pos = reinterpret_cast<int64_t*>(base + 3 * list);
    auto* partial = reinterpret_cast<A*>(base + 4 * list);
    void* cub_scratch = base + 4 * list + partial_bytes;

    index_add_keys_kernel<<<grid_for(k, kThreads), kThreads, 0, stream()>>>(
        index.data, index.dtype, k, n, keys_in, pos_in, device_error_flag());
    NEEDLE_CUDA_LAUNCH_CHECK();
    NEEDLE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_scratch, cub_bytes, keys_in, keys, pos_in,
                                                      pos, k, 0, key_bits, stream()));
    const dim3 grid(static_cast<unsigned>(k),
                    static_cast<unsigned>(std::min<int64_t>(outer, 65535)));
    index_add_chunks_kernel<scalar_t><<<grid, kAddThreads, 0, stream()>>>(
        static_cast<const scalar_t*>(src.data), keys, pos, outer, n, k, inner, partial,
        static_cast<scalar_t*>(out.data));
    NEEDLE_CUDA_LAUNCH_CHECK();
    index_add_runs_kernel<scalar_t><<<grid, kAddThreads, 0, stream()>>>(
        keys, outer, n, k, inner, partial, static_cast<scalar_t*>(out.data));
    NEEDLE_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace needle::cuda
