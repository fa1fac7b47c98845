// Device state and memory: initialisation (device 0, the stream, the error flag), the caching
// allocator, host<->device copies and synchronisation.
//
// The allocator follows PyTorch's CUDACachingAllocator on one stream: requests are rounded up to
// 512 B; requests up to 1 MB are carved from 2 MB segments (the small pool), larger ones from
// segments of 20 MB (requests under 10 MB) or the request rounded up to 2 MB (the large pool).
// A free block is found best-fit in its pool, split when the remainder is worth keeping, and
// merged with free neighbours of its segment when freed, so a steady-state training step makes no
// cudaMalloc/cudaFree calls at all. Since every kernel runs on the one stream, a block freed by
// the host can be handed to the next request at once: the stream orders the old user's kernels
// before the new user's.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>

#include "backend_cuda/cuda_backend.h"
#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"

namespace needle::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  throw RuntimeError(detail::concat("CUDA error ", cudaGetErrorName(err), " (",
                                    cudaGetErrorString(err), ") in ", expr, " at ", file, ":",
                                    line));
}

[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* expr, const char* file,
                                     int line) {
  throw RuntimeError(detail::concat("cuBLAS error ", cublasGetStatusName(st), " (",
                                    cublasGetStatusString(st), ") in ", expr, " at ", file, ":",
                                    line));
}

namespace {

struct DeviceState {
  cudaStream_t stream = nullptr;
  DeviceErrorFlag flag{};
  volatile ErrorRecord* host_record = nullptr;
  int sms = 0;
  int smem_optin = 0;  // shared memory one block may use once it opts in
  int cc = 0;          // compute capability, 10 * major + minor
};

// Created once, never destroyed: tearing CUDA objects down from static destructors races the
// runtime's own teardown at exit, and the driver reclaims everything then anyway.
DeviceState* init_device() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear, so the process can go on using the CPU
    throw RuntimeError(detail::concat(
        "CUDA is not available: this build has the CUDA backend but ",
        err != cudaSuccess
            ? detail::concat("cudaGetDeviceCount failed with ", cudaGetErrorName(err), " (",
                             cudaGetErrorString(err), ")")
            : std::string("no GPU was found")));
  }
  auto* s = new DeviceState;
  NEEDLE_CUDA_CHECK(cudaSetDevice(0));
  NEEDLE_CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
  ErrorRecord* host = nullptr;
  NEEDLE_CUDA_CHECK(
      cudaHostAlloc(reinterpret_cast<void**>(&host), sizeof(ErrorRecord), cudaHostAllocMapped));
  host->code = kNoError;
  host->value = 0;
  host->bound = 0;
  s->host_record = host;
  NEEDLE_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&s->flag.record), host, 0));
  // The claim word is the one allocation outside the caching allocator: it lives for the process.
  NEEDLE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&s->flag.claimed), sizeof(int)));
  NEEDLE_CUDA_CHECK(cudaMemset(s->flag.claimed, 0, sizeof(int)));
  NEEDLE_CUDA_CHECK(cudaDeviceGetAttribute(&s->sms, cudaDevAttrMultiProcessorCount, 0));
  NEEDLE_CUDA_CHECK(
      cudaDeviceGetAttribute(&s->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  int major = 0, minor = 0;
  NEEDLE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  NEEDLE_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
  s->cc = 10 * major + minor;
  return s;
}

DeviceState& state() {
  static DeviceState* s = init_device();
  return *s;
}

}  // namespace

void ensure_initialized() { (void)state(); }
cudaStream_t stream() { return state().stream; }
int num_sms() { return state().sms; }
int compute_capability() { return state().cc; }
size_t max_shared_memory_per_block() { return static_cast<size_t>(state().smem_optin); }

int resident_blocks_per_sm(const void* kernel, int threads, size_t smem) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t>, int> known;
  std::lock_guard<std::mutex> lock(mu);
  auto key = std::make_tuple(kernel, threads, smem);
  auto it = known.find(key);
  if (it != known.end()) return it->second;
  int blocks = 0;
  NEEDLE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem));
  if (blocks < 1) blocks = 1;
  known.emplace(key, blocks);
  return blocks;
}
DeviceErrorFlag device_error_flag() { return state().flag; }

void check_device_error_flag() {
  DeviceState& s = state();
  volatile ErrorRecord* r = s.host_record;
  const int code = r->code;
  if (code == kNoError) return;
  const int64_t value = r->value, bound = r->bound;
  r->code = kNoError;
  // Re-arm: the reset is ordered on the stream before any later kernel can report again.
  NEEDLE_CUDA_CHECK(cudaMemsetAsync(s.flag.claimed, 0, sizeof(int), s.stream));
  const char* what = code == kIndexSelect ? "index_select"
                     : code == kIndexAdd  ? "index_add"
                                          : "cross_entropy";
  const char* noun = code == kCrossEntropyTarget ? "target" : "index";
  throw IndexError(detail::concat("cuda ", what, ": ", noun, " ", value,
                                  " is out of range: expected a value in [0, ", bound,
                                  ") (reported by a kernel at the next synchronisation)"));
}

// --- caching allocator ---------------------------------------------------------------------------
namespace {

constexpr size_t kRound = 512;              // every block is a multiple of this
constexpr size_t kSmallRequest = 1 << 20;   // requests up to 1 MB use the small pool
constexpr size_t kSmallSegment = 2 << 20;   // small-pool segments
constexpr size_t kLargeSegment = 20 << 20;  // large-pool segments for requests < 10 MB
constexpr size_t kMediumRequest = 10 << 20;
constexpr size_t kLargeRound = 2 << 20;  // larger segments are rounded to 2 MB

struct Block {
  char* ptr;
  size_t size;
  bool small_pool;
  bool allocated = false;
  Block* prev = nullptr;  // neighbours within the same segment
  Block* next = nullptr;
};

struct BlockLess {
  bool operator()(const Block* a, const Block* b) const {
    return a->size != b->size ? a->size < b->size : a->ptr < b->ptr;
  }
};

class CachingAllocator {
 public:
  void* allocate(size_t nbytes) {
    if (nbytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    size_t size = round_size(nbytes);
    bool small = size <= kSmallRequest;
    auto& pool = small ? small_free_ : large_free_;
    Block* block = take_best_fit(pool, size);
    if (!block) block = new_segment(size, small, nbytes);
    // Split off the remainder when it is worth keeping: any 512 B in the small pool, more than
    // 1 MB in the large one (smaller tails of large blocks would only fragment).
    size_t rest = block->size - size;
    if (rest >= (small ? kRound : kSmallRequest + 1)) {
      auto* tail = new Block{block->ptr + size, rest, small};
      tail->prev = block;
      tail->next = block->next;
      if (block->next) block->next->prev = tail;
      block->next = tail;
      block->size = size;
      pool.insert(tail);
    }
    block->allocated = true;
    live_[block->ptr] = block;
    stats_.allocated += static_cast<int64_t>(block->size);
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    stats_.num_allocs += 1;
    return block->ptr;
  }

  void release(void* ptr) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) {
      // Called from destructors, so it cannot throw; this is a bug in the caller.
      std::fprintf(stderr, "needle cuda allocator: free of unknown pointer %p ignored\n", ptr);
      return;
    }
    Block* block = it->second;
    live_.erase(it);
    stats_.allocated -= static_cast<int64_t>(block->size);
    block->allocated = false;
    auto& pool = block->small_pool ? small_free_ : large_free_;
    if (block->prev && !block->prev->allocated) block = merge(pool, block->prev, block);
    if (block->next && !block->next->allocated) block = merge(pool, block, block->next);
    pool.insert(block);
  }

  MemoryStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated = stats_.allocated;
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_segments();
  }

 private:
  static size_t round_size(size_t n) { return (n + kRound - 1) / kRound * kRound; }

  static Block* take_best_fit(std::set<Block*, BlockLess>& pool, size_t size) {
    Block key{nullptr, size, false};
    auto it = pool.lower_bound(&key);
    if (it == pool.end()) return nullptr;
    Block* b = *it;
    pool.erase(it);
    return b;
  }

  // Merges b into a (a precedes b in the segment); a leaves the pool if it was there.
  static Block* merge(std::set<Block*, BlockLess>& pool, Block* a, Block* b) {
    if (!a->allocated) pool.erase(a);
    if (!b->allocated) pool.erase(b);
    a->size += b->size;
    a->next = b->next;
    if (b->next) b->next->prev = a;
    delete b;
    return a;
  }

  Block* new_segment(size_t size, bool small, size_t requested) {
    size_t seg =
        small ? kSmallSegment
              : (size < kMediumRequest ? kLargeSegment
                                       : (size + kLargeRound - 1) / kLargeRound * kLargeRound);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, seg);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky, but clear it so the next launch check does not see it
      release_cached_segments();
      err = cudaMalloc(&p, seg);
    }
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      cudaGetLastError();
      throw OutOfMemoryError(detail::concat(
          "CUDA out of memory: tried to allocate ", requested, " bytes (", format_bytes(requested),
          "); needle has ", format_bytes(stats_.allocated), " allocated and ",
          format_bytes(stats_.reserved), " reserved; the device has ", format_bytes(free_b),
          " free of ", format_bytes(total_b)));
    }
    NEEDLE_CUDA_CHECK(err);
    stats_.num_device_allocs += 1;
    stats_.reserved += static_cast<int64_t>(seg);
    return new Block{static_cast<char*>(p), seg, small};
  }

  // Frees every segment that is one whole free block (no live piece in it).
  void release_cached_segments() {
    for (auto* pool : {&small_free_, &large_free_}) {
      for (auto it = pool->begin(); it != pool->end();) {
        Block* b = *it;
        if (b->prev == nullptr && b->next == nullptr) {
          NEEDLE_CUDA_CHECK(cudaFree(b->ptr));
          stats_.reserved -= static_cast<int64_t>(b->size);
          delete b;
          it = pool->erase(it);
        } else {
          ++it;
        }
      }
    }
  }

  static std::string format_bytes(size_t n) {
    char buf[64];
    if (n >= (size_t(1) << 30))
      std::snprintf(buf, sizeof buf, "%.2f GiB", n / double(size_t(1) << 30));
    else if (n >= (size_t(1) << 20))
      std::snprintf(buf, sizeof buf, "%.2f MiB", n / double(size_t(1) << 20));
    else
      std::snprintf(buf, sizeof buf, "%zu bytes", n);
    return buf;
  }
  static std::string format_bytes(int64_t n) { return format_bytes(static_cast<size_t>(n)); }

  std::mutex mu_;
  std::set<Block*, BlockLess> small_free_, large_free_;
  std::unordered_map<void*, Block*> live_;
  MemoryStats stats_;
};

// Never destroyed, for the same reason as DeviceState; arrays freed during exit still find it.
CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator;
  return *a;
}

std::atomic<bool> poison_allocations{false};

}  // namespace

void* device_alloc(size_t nbytes) {
  ensure_initialized();
  void* p = allocator().allocate(nbytes);
  if (p && poison_allocations.load(std::memory_order_relaxed))
    NEEDLE_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, nbytes, stream()));
  return p;
}
void device_free(void* ptr, size_t /*nbytes*/) { allocator().release(ptr); }

// --- table entries -------------------------------------------------------------------------------
MemoryStats memory_stats() { return allocator().stats(); }
void reset_peak_memory_stats() { allocator().reset_peak(); }

void copy_from_host(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  // From pageable memory the runtime stages the source before returning, so the caller may reuse
  // `src` at once without a stream sync. From page-locked memory (a non-blocking copy's result,
  // or memory another library pinned) the copy is truly asynchronous: wait for it, or the caller
  // could change or free the source before the GPU has read it.
  // (CUDA 11 and later report plain host memory as cudaMemoryTypeUnregistered; older runtimes
  // returned cudaErrorInvalidValue for it, which is cleared and taken to mean pageable.)
  cudaPointerAttributes attr{};
  bool pinned = false;
  if (cudaPointerGetAttributes(&attr, src) == cudaSuccess)
    pinned = attr.type == cudaMemoryTypeHost;
  else
    (void)cudaGetLastError();
  NEEDLE_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream()));
  if (pinned) NEEDLE_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void synchronize() {
  ensure_initialized();
  NEEDLE_CUDA_CHECK(cudaStreamSynchronize(stream()));
  check_device_error_flag();
}

void copy_to_host(void* dst, const void* src, size_t nbytes) {
  if (nbytes > 0)
    NEEDLE_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream()));
  synchronize();
}

// --- non-blocking copies to the host -----------------------------------------------------------
// A copy into pageable memory makes the host wait for the stream, so copy_to_host_async copies
// into page-locked blocks kept by this cache (cudaHostAlloc costs far more than a small copy).
// Each block carries an event recorded after its latest copy: a returned block is handed out
// again only once that event has completed, so dropping an unread copy is safe.
namespace {

constexpr size_t kPinnedRound = 512;

struct PinnedBlock {
  void* ptr = nullptr;
  size_t size = 0;
  cudaEvent_t copied = nullptr;
};

// True once the block's latest copy has landed. A copy still in flight is not an error, but the
// runtime records cudaErrorNotReady as the thread's last error, which the next kernel launch
// check would then report: it is cleared here (as PyTorch does).
bool copy_landed(const PinnedBlock& b) {
  cudaError_t q = cudaEventQuery(b.copied);
  if (q == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  NEEDLE_CUDA_CHECK(q);
  return true;
}

class PinnedHostCache {
 public:
  PinnedBlock acquire(size_t nbytes) {
    const size_t size = (nbytes + kPinnedRound - 1) / kPinnedRound * kPinnedRound;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = free_.lower_bound(size); it != free_.end() && it->first <= 2 * size; ++it) {
        if (!copy_landed(it->second)) continue;
        PinnedBlock b = it->second;
        free_.erase(it);
        return b;
      }
    }
    PinnedBlock b;
    b.size = size;
    NEEDLE_CUDA_CHECK(cudaHostAlloc(&b.ptr, size, cudaHostAllocDefault));
    cudaError_t err = cudaEventCreateWithFlags(&b.copied, cudaEventDisableTiming);
    if (err != cudaSuccess) {
      cudaFreeHost(b.ptr);
      NEEDLE_CUDA_CHECK(err);
    }
    return b;
  }
  void release(const PinnedBlock& b) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.emplace(b.size, b);
  }
  // Frees the blocks whose copies have landed (empty_cache).
  void trim() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = free_.begin(); it != free_.end();) {
      if (!copy_landed(it->second)) {
        ++it;
        continue;
      }
      NEEDLE_CUDA_CHECK(cudaEventDestroy(it->second.copied));
      NEEDLE_CUDA_CHECK(cudaFreeHost(it->second.ptr));
      it = free_.erase(it);
    }
  }

 private:
  std::mutex mu_;
  std::multimap<size_t, PinnedBlock> free_;
};

PinnedHostCache& pinned_cache() {
  static PinnedHostCache* c = new PinnedHostCache;  // never destroyed, as the device allocator
  return *c;
}

class PinnedCopy final : public PendingHostCopy {
 public:
  explicit PinnedCopy(PinnedBlock b) : block_(b) {}
  ~PinnedCopy() override { pinned_cache().release(block_); }
  void* data() const override { return block_.ptr; }
  const PinnedBlock& block() const { return block_; }
  // Raises what kernels reported by the time the copy landed (those queued before it, possibly
  // some queued after it that have run too), as synchronize() does for all queued work.
  void wait() const override {
    NEEDLE_CUDA_CHECK(cudaEventSynchronize(block_.copied));
    check_device_error_flag();
  }

 private:
  PinnedBlock block_;
};

}  // namespace

std::unique_ptr<PendingHostCopy> copy_to_host_async(const void* src, size_t nbytes) {
  ensure_initialized();
  auto copy = std::make_unique<PinnedCopy>(pinned_cache().acquire(nbytes));
  if (nbytes > 0)
    NEEDLE_CUDA_CHECK(cudaMemcpyAsync(copy->data(), src, nbytes, cudaMemcpyDeviceToHost, stream()));
  const PinnedBlock& b = copy->block();
  NEEDLE_CUDA_CHECK(cudaEventRecord(b.copied, stream()));
  return copy;
}

void empty_cache() {
  allocator().empty_cache();
  pinned_cache().trim();
}

}  // namespace needle::cuda

void needle::cuda_set_alloc_poison(bool on) { cuda::poison_allocations.store(on); }
