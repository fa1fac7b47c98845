// Gather and scatter-add along one axis: index_select (embedding lookups, x[idx]) and index_add
// (their gradients, each indexed row summed once in the compute type). Indices are validated up
// front, so the parallel loops cannot fail.
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

// Reads a compact int64 or int32 index of k entries and checks each lies in [0, n).
std::vector<int64_t> read_index(const ArrayRef& index, int64_t n, const char* what) {
  const int64_t k = index.numel();
  std::vector<int64_t> idx(k);
  if (index.dtype == DType::Int64) {
    std::copy_n(static_cast<const int64_t*>(index.data), k, idx.begin());
  } else if (index.dtype == DType::Int32) {
    std::copy_n(static_cast<const int32_t*>(index.data), k, idx.begin());
  } else {
    throw TypeError(
        detail::concat(what, ": expected an int64 or int32 index, got ", dtype_name(index.dtype)));
  }
  for (int64_t j = 0; j < k; ++j)
    NEEDLE_CHECK(idx[j] >= 0 && idx[j] < n, IndexError, what, ": index ", idx[j], " (at position ",
                 j, ") is out of range for a dimension of size ", n);
  return idx;
}

}  // namespace

// O = outer, N = indexed dim, K = number of indices, I = inner. out[o, j, :] = in[o, idx[j], :].
void index_select(const ArrayRef& in, const ArrayRef& index, int64_t outer, int64_t n,
                  int64_t inner, const ArrayRef& out) {
  const std::vector<int64_t> idx = read_index(index, n, "index_select");
  const int64_t k = static_cast<int64_t>(idx.size());
  NEEDLE_CHECK(in.dtype == out.dtype, TypeError, "index_select: expected out of dtype ",
               dtype_name(in.dtype), ", got ", dtype_name(out.dtype));
  NEEDLE_CHECK(in.numel() == outer * n * inner && out.numel() == outer * k * inner, ValueError,
               "index_select: expected in of ", outer * n * inner, " and out of ",
               outer * k * inner, " elements, got ", in.numel(), " and ", out.numel());
  const size_t row_bytes = static_cast<size_t>(inner) * itemsize(in.dtype);
  const char* src = static_cast<const char*>(in.data);
  char* dst = static_cast<char*>(out.data);
  // Each (o, j) copies one contiguous row of `inner` elements.
  const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(inner, 1));
  parallel_for(outer * k, grain, [&](int64_t b, int64_t e) {
    for (int64_t it = b; it < e; ++it) {
      const int64_t o = it / k, j = it % k;
      std::memcpy(dst + it * row_bytes, src + (o * n + idx[j]) * row_bytes, row_bytes);
    }
  });
}

// O = outer, N = indexed dim of out, K = number of indices, I = inner.
// out[o, idx[j], :] += src[o, j, :]. The positions are grouped by index (a stable sort, so in
// position order within each index), and each indexed row's sources are summed in the compute
// type and added to out once: bfloat16 sums are not rounded at every repeat, and the order is
// fixed. Threads split (o, inner block) pairs, so no two write the same element.
void index_add(const ArrayRef& src, const ArrayRef& index, int64_t outer, int64_t n, int64_t inner,
               const ArrayRef& out) {
  const std::vector<int64_t> idx = read_index(index, n, "index_add");
  const int64_t k = static_cast<int64_t>(idx.size());
  NEEDLE_CHECK(src.dtype == out.dtype, TypeError, "index_add: expected src of dtype ",
               dtype_name(out.dtype), ", got ", dtype_name(src.dtype));
  NEEDLE_CHECK(src.numel() == outer * k * inner && out.numel() == outer * n * inner, ValueError,
               "index_add: expected src of ", outer * k * inner, " and out of ", outer * n * inner,
               " elements, got ", src.numel(), " and ", out.numel());
  std::vector<int64_t> order(k);
  for (int64_t j = 0; j < k; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return idx[a] < idx[b]; });
  NEEDLE_DISPATCH_NUMERIC(out.dtype, "index_add", [&] {
    using T = scalar_t;
    using C = compute_t<T>;
    const T* s = static_cast<const T*>(src.data);
    T* o_ptr = static_cast<T*>(out.data);
    // Inner blocks of 1024 let a single outer slice (the embedding gradient) use every thread.
    constexpr int64_t kBlock = 1024;
    const int64_t blocks = (inner + kBlock - 1) / kBlock;
    const int64_t per_item = std::max<int64_t>(1, k * std::min(inner, kBlock));
    const int64_t grain = std::max<int64_t>(1, kGrain / per_item);
    parallel_for(outer * blocks, grain, [&](int64_t b, int64_t e) {
      std::vector<C> acc(static_cast<size_t>(std::min(inner, kBlock)));
      for (int64_t it = b; it < e; ++it) {
        const int64_t o = it / blocks, i0 = (it % blocks) * kBlock;
        const int64_t w = std::min(inner, i0 + kBlock) - i0;
        for (int64_t q = 0; q < k;) {
          const int64_t row = idx[order[q]];
          std::fill_n(acc.begin(), w, C(0));
          for (; q < k && idx[order[q]] == row; ++q) {
            const T* from = s + (o * k + order[q]) * inner + i0;
            for (int64_t i = 0; i < w; ++i) acc[i] += convert<C>(from[i]);
          }
          T* to = o_ptr + (o * n + row) * inner + i0;
          for (int64_t i = 0; i < w; ++i) to[i] = convert<T>(convert<C>(to[i]) + acc[i]);
        }
      }
    });
  });
}

}  // namespace needle::cpu_kernels
