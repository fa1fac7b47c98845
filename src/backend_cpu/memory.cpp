// CPU memory: 64-byte aligned host allocations with counting statistics, and host copies. Small
// blocks go straight to the system allocator; blocks of 64 KiB and more (each op's output at
// training sizes) are kept in a size-keyed cache when freed, because a fresh one is mapped and
// first-touched page by page, which costs more than the op itself. reserved = allocated + cached.
#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

// 64 bytes: a cache line, and the widest (AVX-512) vector load, so compact arrays never split a
// vector across lines at element 0.
constexpr size_t kAlignment = 64;

// Large arrays are placed on 2 MiB boundaries and marked for transparent huge pages: every new
// large buffer (each op's output) is otherwise first-touched 4 KiB at a time, and those page
// faults cost ten times the memory traffic of a 64 MiB elementwise op on this kind of machine.
// Only pages that are touched become resident, so the rounding costs address space, not memory.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kHugeThreshold = size_t(1) << 20;

// Freed blocks of at least kCacheMin bytes (glibc serves those with fresh mmaps) by rounded
// size, up to kCacheLimit bytes in all.
constexpr size_t kCacheMin = size_t(64) << 10;
constexpr size_t kCacheLimit = size_t(2) << 30;

size_t alignment_for(size_t nbytes) { return nbytes >= kHugeThreshold ? kHugePage : kAlignment; }
std::mutex g_cache_mutex;
// Never destroyed: arrays freed during static destruction (after this file's globals) still find
// it, and blocks cached at exit stay reachable rather than looking leaked to LeakSanitizer.
std::multimap<size_t, void*>& g_cache = *new std::multimap<size_t, void*>();
size_t g_cached_bytes = 0;

std::atomic<int64_t> g_allocated{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_num_device_allocs{0};
std::atomic<int64_t> g_num_allocs{0};

void raise_peak(int64_t now) {
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

}  // namespace

void* alloc(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t align = alignment_for(nbytes);
  // aligned_alloc requires a multiple of the alignment; the check guards the rounding overflow.
  const size_t rounded = (nbytes + align - 1) / align * align;
  void* ptr = nullptr;
  if (rounded >= kCacheMin && rounded >= nbytes) {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    auto it = g_cache.find(rounded);
    if (it != g_cache.end()) {
      ptr = it->second;
      g_cache.erase(it);
      g_cached_bytes -= rounded;
    }
  }
  if (ptr != nullptr) {
    int64_t now =
        g_allocated.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
    raise_peak(now);
    g_num_allocs.fetch_add(1, std::memory_order_relaxed);
    return ptr;
  }
  if (rounded >= nbytes) ptr = std::aligned_alloc(align, rounded);
  NEEDLE_CHECK(ptr != nullptr, OutOfMemoryError, "cpu: out of memory allocating ", nbytes,
               " bytes (", static_cast<double>(nbytes) / (1 << 30), " GiB) with ",
               g_allocated.load(), " bytes already allocated by needle");
  // Advice only: without THP support the call fails and the memory works as before.
  if (align == kHugePage) madvise(ptr, rounded, MADV_HUGEPAGE);
  int64_t now = g_allocated.fetch_add(static_cast<int64_t>(nbytes)) + static_cast<int64_t>(nbytes);
  raise_peak(now);
  g_num_device_allocs.fetch_add(1, std::memory_order_relaxed);
  g_num_allocs.fetch_add(1, std::memory_order_relaxed);
  return ptr;
}

void free(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  g_allocated.fetch_sub(static_cast<int64_t>(nbytes));
  const size_t align = alignment_for(nbytes);
  const size_t rounded = (nbytes + align - 1) / align * align;
  if (rounded >= kCacheMin) {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    if (g_cached_bytes + rounded <= kCacheLimit) {
      g_cache.emplace(rounded, ptr);
      g_cached_bytes += rounded;
      return;
    }
  }
  std::free(ptr);
}

MemoryStats memory_stats() {
  MemoryStats s;
  s.allocated = g_allocated.load();
  s.peak_allocated = g_peak.load();
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    s.reserved = s.allocated + static_cast<int64_t>(g_cached_bytes);
  }
  s.num_device_allocs = g_num_device_allocs.load();
  s.num_allocs = g_num_allocs.load();
  return s;
}

void reset_peak_memory_stats() { g_peak.store(g_allocated.load()); }

void empty_cache() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  for (auto& [size, ptr] : g_cache) std::free(ptr);
  g_cache.clear();
  g_cached_bytes = 0;
}

void parallel_memcpy(void* dst, const void* src, size_t nbytes) {
  // Split in 64-byte aligned pieces of at least 1 MiB: below that one thread is as fast.
  constexpr int64_t kPiece = 1 << 20;
  int64_t pieces = static_cast<int64_t>((nbytes + kPiece - 1) / kPiece);
  if (pieces <= 1) {
    if (nbytes) std::memcpy(dst, src, nbytes);
    return;
  }
  parallel_for(pieces, 1, [&](int64_t begin, int64_t end) {
    size_t lo = static_cast<size_t>(begin) * kPiece;
    size_t hi = std::min(nbytes, static_cast<size_t>(end) * kPiece);
    std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
  });
}

void copy_from_host(void* dst, const void* src, size_t nbytes) {
  parallel_memcpy(dst, src, nbytes);
}
void copy_to_host(void* dst, const void* src, size_t nbytes) { parallel_memcpy(dst, src, nbytes); }

// CPU kernels run to completion before returning: there is no queued work to wait for.
void synchronize() {}

}  // namespace needle::cpu_kernels
