// Helpers shared by the CPU kernels: dtype conversion, the OpenMP range splitter and the N-operand
// strided loop with dimension coalescing that every elementwise kernel runs on.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "ndarray/backend.h"
#include "ndarray/convert.h"
#include "ndarray/dtype.h"
#include "ndarray/error.h"

namespace needle::cpu_kernels {

// Below this many elements a loop runs on the calling thread: starting an OpenMP team costs a few
// microseconds, about what 32K simple elementwise operations take.
constexpr int64_t kGrain = 32768;


// Calls f(begin, end) on disjoint pieces of [0, n), in parallel when n exceeds `grain`. Each
// thread gets one contiguous piece, so per-piece setup (index decomposition) happens once.
// f must not throw: exceptions cannot leave an OpenMP region, so kernels validate first.
template <typename F>
inline void parallel_for(int64_t n, int64_t grain, const F& f) {
  if (n <= 0) return;
  int max_threads = omp_get_max_threads();
  int64_t want = grain > 0 ? (n + grain - 1) / grain : max_threads;
  int threads = static_cast<int>(std::min<int64_t>(max_threads, want));
  if (threads <= 1 || omp_in_parallel()) {
    f(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    int nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t chunk = (n + nt - 1) / nt;
    int64_t begin = std::min<int64_t>(n, t * chunk), end = std::min<int64_t>(n, begin + chunk);
    if (begin < end) f(begin, end);
  }
}

// K operands of one shape (operand 0 is the output by convention), described in bytes and with
// dimensions coalesced: size-1 dims dropped, and a dim merged into the next-inner one whenever
// every operand steps across it exactly as if the two were one dim. A compact array becomes 1-D,
// a broadcast row becomes (rows, cols) with stride 0, a transposed view stays 2-D.
template <int K>
struct StridedPlan {
  int ndim = 0;  // innermost first
  int64_t numel = 1;
  int64_t shape[kMaxDims] = {};
  int64_t strides[kMaxDims][K] = {};  // bytes
  char* base[K] = {};
};

template <int K>
StridedPlan<K> make_plan(const ArrayRef* const (&ops)[K]) {
  StridedPlan<K> p;
  const ArrayRef& ref = *ops[0];
  for (int k = 1; k < K; ++k) {
    bool same = ops[k]->ndim == ref.ndim;
    for (int d = 0; same && d < ref.ndim; ++d) same = ops[k]->shape[d] == ref.shape[d];
    NEEDLE_CHECK(same, ValueError, "cpu elementwise kernel: operand ", k, " has ", ops[k]->ndim,
                 " dims and a different shape from the output (", ref.ndim,
                 " dims); NDArray must broadcast operands to the output shape first");
  }
  for (int k = 0; k < K; ++k) p.base[k] = static_cast<char*>(ops[k]->data);
  p.numel = ref.numel();
  if (p.numel == 0) return p;
  for (int d = ref.ndim - 1; d >= 0; --d) {
    if (ref.shape[d] == 1) continue;
    bool merge = p.ndim > 0;
    for (int k = 0; merge && k < K; ++k) {
      int64_t bytes = static_cast<int64_t>(itemsize(ops[k]->dtype)) * ops[k]->strides[d];
      merge = bytes == p.strides[p.ndim - 1][k] * p.shape[p.ndim - 1];
    }
    if (merge) {
      p.shape[p.ndim - 1] *= ref.shape[d];
      continue;
    }
    p.shape[p.ndim] = ref.shape[d];
    for (int k = 0; k < K; ++k)
      p.strides[p.ndim][k] = static_cast<int64_t>(itemsize(ops[k]->dtype)) * ops[k]->strides[d];
    ++p.ndim;
  }
  return p;
}

// Runs inner(ptrs, strides, count) over runs along the innermost coalesced dim, splitting the
// elements over threads. `ptrs` point at the run's first element of each operand and `strides`
// are the innermost byte strides, so the inner function can pick a contiguous or broadcast fast
// path once per run.
template <int K, typename Inner>
void run_plan(const StridedPlan<K>& p, const Inner& inner) {
  if (p.numel == 0) return;
  if (p.ndim == 0) {
    char* ptrs[K];
    int64_t zero[K] = {};
    for (int k = 0; k < K; ++k) ptrs[k] = p.base[k];
    inner(ptrs, zero, int64_t(1));
    return;
  }
  parallel_for(p.numel, kGrain, [&](int64_t begin, int64_t end) {
    int64_t idx[kMaxDims];
    char* ptrs[K];
    for (int k = 0; k < K; ++k) ptrs[k] = p.base[k];
    int64_t rem = begin;
    for (int d = 0; d < p.ndim; ++d) {
      idx[d] = rem % p.shape[d];
      rem /= p.shape[d];
      for (int k = 0; k < K; ++k) ptrs[k] += idx[d] * p.strides[d][k];
    }
    int64_t pos = begin;
    while (true) {
      int64_t count = std::min(p.shape[0] - idx[0], end - pos);
      inner(ptrs, p.strides[0], count);
      pos += count;
      if (pos >= end) break;
      // The run ended at the end of dim 0: step the outer index with carries.
      for (int k = 0; k < K; ++k) ptrs[k] -= idx[0] * p.strides[0][k];
      idx[0] = 0;
      int d = 1;
      while (true) {
        ++idx[d];
        for (int k = 0; k < K; ++k) ptrs[k] += p.strides[d][k];
        if (idx[d] < p.shape[d]) break;
        for (int k = 0; k < K; ++k) ptrs[k] -= idx[d] * p.strides[d][k];
        idx[d] = 0;
        ++d;
      }
    }
  });
}

template <int K, typename Inner>
void for_each_strided(const ArrayRef* const (&ops)[K], const Inner& inner) {
  run_plan(make_plan(ops), inner);
}

// True when every operand of a run is contiguous (byte stride == element size).
template <int K>
inline bool all_contiguous(const int64_t* strides, const int64_t (&sizes)[K]) {
  for (int k = 0; k < K; ++k)
    if (strides[k] != sizes[k]) return false;
  return true;
}


}  // namespace needle::cpu_kernels
