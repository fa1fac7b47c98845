// The CUDA caching allocator: block reuse (no cudaMalloc in steady state), statistics, splitting
// and merging within a segment, empty_cache, and recovery from an out-of-memory request. Needs a
// GPU (label `gpu`); without one every test passes with a note.
#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "backend_cuda/cuda_backend.h"
#include "ndarray/ndarray.h"

using namespace needle;

namespace {

const Device kCuda(DeviceType::CUDA, 0);

#define NEEDLE_REQUIRE_GPU()                              \
  if (!cuda_is_available()) {                             \
    WARN("no CUDA device: CUDA allocator tests skipped"); \
    SUCCEED("skipped");                                   \
    return;                                               \
  }

// One small training-like step: elementwise ops, a reduction, a matmul; every temporary is
// freed when the step returns.
float small_step(const NDArray& x, const NDArray& w) {
  NDArray h = relu(matmul(x, w) + Scalar(0.5));
  NDArray s = sum(h * h, {1});
  return static_cast<float>(s.to(cpu()).to_vector<float>()[0]);
}

}  // namespace

TEST_CASE("cuda allocator: a steady-state loop makes no new cudaMalloc calls", "[cuda][memory]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& b = cuda_backend();
  NDArray x = NDArray::randn({64, 32}, DType::Float32, kCuda);
  NDArray w = NDArray::randn({32, 48}, DType::Float32, kCuda);
  for (int i = 0; i < 10; ++i) small_step(x, w);  // warm-up: segments and the cuBLAS workspace
  const MemoryStats warm = b.memory_stats();
  float first = small_step(x, w);
  for (int i = 0; i < 1000; ++i) CHECK(small_step(x, w) == first);
  const MemoryStats after = b.memory_stats();
  CHECK(after.num_device_allocs == warm.num_device_allocs);
  CHECK(after.reserved == warm.reserved);
  // Every step did allocate (several temporaries each), all from the cache.
  CHECK(after.num_allocs - warm.num_allocs >= 1001 * 4);
  CHECK(after.allocated == warm.allocated);
}

TEST_CASE("cuda allocator: statistics follow allocations and frees", "[cuda][memory]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& b = cuda_backend();
  b.synchronize();
  b.reset_peak_memory_stats();
  const MemoryStats before = b.memory_stats();
  CHECK(before.peak_allocated == before.allocated);
  CHECK(before.reserved >= before.allocated);

  // Requests are rounded up to multiples of 512 bytes.
  void* p = b.alloc(1000);
  void* q = b.alloc(3 << 20);
  REQUIRE(p != nullptr);
  REQUIRE(q != nullptr);
  const MemoryStats mid = b.memory_stats();
  CHECK(mid.allocated - before.allocated == 1024 + (3 << 20));
  CHECK(mid.num_allocs - before.num_allocs == 2);
  CHECK(mid.peak_allocated == mid.allocated);
  CHECK(mid.reserved >= mid.allocated);

  b.free(q, 3 << 20);
  b.free(p, 1000);
  const MemoryStats freed = b.memory_stats();
  CHECK(freed.allocated == before.allocated);
  CHECK(freed.peak_allocated == mid.allocated);  // the high-water mark stays until reset
  CHECK(freed.reserved == mid.reserved);         // freed blocks stay cached
  b.reset_peak_memory_stats();
  CHECK(b.memory_stats().peak_allocated == freed.allocated);

  // The same request is served from the cache.
  void* again = b.alloc(1000);
  CHECK(b.memory_stats().num_device_allocs == freed.num_device_allocs);
  b.free(again, 1000);
}

TEST_CASE("cuda allocator: blocks split and merge within a segment", "[cuda][memory]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& b = cuda_backend();
  // No array of this test program is alive here, so after empty_cache the small pool is empty
  // and the first request opens a fresh segment.
  b.empty_cache();
  // Two 600 KB blocks share one 2 MB small-pool segment; once both are freed the segment is one
  // free block again and serves a 1 MB request without a new cudaMalloc.
  void* p = b.alloc(600 << 10);
  const int64_t mallocs = b.memory_stats().num_device_allocs;
  void* q = b.alloc(600 << 10);
  CHECK(b.memory_stats().num_device_allocs == mallocs);
  CHECK(static_cast<char*>(q) == static_cast<char*>(p) + (600 << 10));
  b.free(p, 600 << 10);
  b.free(q, 600 << 10);
  void* r = b.alloc(1 << 20);
  CHECK(b.memory_stats().num_device_allocs == mallocs);
  CHECK(r == p);
  b.free(r, 1 << 20);
}

TEST_CASE("cuda allocator: empty_cache returns cached segments", "[cuda][memory]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& b = cuda_backend();
  void* p = b.alloc(64 << 20);
  const MemoryStats held = b.memory_stats();
  b.free(p, 64 << 20);
  CHECK(b.memory_stats().reserved == held.reserved);
  b.empty_cache();
  const MemoryStats emptied = b.memory_stats();
  CHECK(held.reserved - emptied.reserved >= (64 << 20));
  // The next request of that size needs the system allocator again.
  void* q = b.alloc(64 << 20);
  CHECK(b.memory_stats().num_device_allocs == emptied.num_device_allocs + 1);
  b.free(q, 64 << 20);
}

TEST_CASE("cuda allocator: out of memory raises OutOfMemoryError and the process recovers",
          "[cuda][memory]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& b = cuda_backend();
  const MemoryStats before = b.memory_stats();
  const size_t terabyte = size_t(1) << 40;
  try {
    b.alloc(terabyte);
    FAIL("expected OutOfMemoryError for a 1 TB request");
  } catch (const OutOfMemoryError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of memory") != std::string::npos);
    CHECK(msg.find(std::to_string(terabyte)) != std::string::npos);
    CHECK(msg.find("allocated") != std::string::npos);
    CHECK(msg.find("reserved") != std::string::npos);
  }
  CHECK(b.memory_stats().allocated == before.allocated);
  CHECK_THROWS_AS(NDArray::empty({int64_t(1) << 38}, DType::Float32, kCuda), OutOfMemoryError);

  // Later allocations and kernels work as before.
  NDArray a = NDArray::full({1000}, 2.0, DType::Float32, kCuda);
  NDArray s = sum(a * a);
  CHECK(s.item() == 4000.0);
  CHECK_NOTHROW(cuda_synchronize());
}

TEST_CASE("cuda non-blocking copies to the host land in pinned memory, read when used",
          "[cuda][memory]") {
  NEEDLE_REQUIRE_GPU();
  // A queue of work ahead of the copy: the copy must wait for it, the host only on use.
  NDArray w = NDArray::randn({512, 512}, DType::Float32, kCuda) * Scalar(1.0 / 32);
  NDArray x = NDArray::randn({512, 512}, DType::Float32, kCuda);
  for (int i = 0; i < 20; ++i) x = matmul(x, w);
  NDArray host = x.to(cpu(), /*non_blocking=*/true);
  CHECK(host.device().is_cpu());
  CHECK(host.buffer()->pinned());
  CHECK(host.shape() == x.shape());
  const std::vector<float> copied = host.to_vector<float>();  // read before anything syncs
  CHECK(copied == x.to(cpu()).to_vector<float>());
  // A host computation on the copy reads its values.
  CHECK(sum(host, {0, 1}).item() == sum(x.to(cpu()), {0, 1}).item());

  // A strided view is compacted on the device first; dtypes of every size.
  NDArray t = NDArray::arange(0, 12, 1, DType::Int64, kCuda).view({3, 4}).transpose(0, 1);
  CHECK(t.to(cpu(), true).to_vector<int64_t>() ==
        std::vector<int64_t>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  NDArray flags = binary(BinaryOp::Gt, NDArray::arange(0, 3, 1, DType::Int64, kCuda), Scalar(0));
  NDArray flags_host = flags.to(cpu(), true);
  CHECK(flags_host.dtype() == DType::Bool);
  CHECK(flags_host.to_vector<double>() == std::vector<double>{0, 1, 1});
  NDArray none = NDArray::empty({0, 4}, DType::Float32, kCuda).to(cpu(), true);
  CHECK(none.numel() == 0);
  CHECK_FALSE(none.buffer()->pinned());  // nothing to copy: a plain empty host array

  // Copies held at once get blocks of their own; copies dropped unread (of the same size, so
  // their blocks are candidates) give theirs back only once they land, so later copies are not
  // overwritten. Work queued ahead keeps the copies in flight.
  std::vector<NDArray> held;
  for (int i = 0; i < 16; ++i) {
    x = matmul(x, w);
    NDArray v = NDArray::full({1 << 14}, i, DType::Float32, kCuda);
    (void)(v + Scalar(100)).to(cpu(), true);  // dropped while in flight
    held.push_back(v.to(cpu(), true));
  }
  for (int i = 0; i < 16; ++i) {
    const std::vector<float> got = held[i].to_vector<float>();
    CHECK(std::all_of(got.begin(), got.end(), [&](float f) { return f == i; }));
  }
  // empty_cache frees the cached blocks, not the ones in use.
  cuda_backend().empty_cache();
  CHECK(held[3].to_vector<float>()[100] == 3.0f);
}

TEST_CASE("cuda a non-blocking copy raises what the device reported when it is read",
          "[cuda][memory]") {
  NEEDLE_REQUIRE_GPU();
  NDArray in = NDArray::arange(0, 20, 1, DType::Float32, kCuda).view({4, 5});
  NDArray idx = NDArray::from_host(std::vector<int64_t>{1, 99}.data(), {2}, DType::Int64, kCuda);
  NDArray host = index_select(in, 1, idx).to(cpu(), true);
  CHECK_THROWS_AS(host.to_vector<float>(), IndexError);
  CHECK_NOTHROW(cuda_backend().synchronize());  // reported once, then cleared
}
