// Helpers shared by the CUDA kernels: error-checking macros, the one stream, the device error
// flag, dtype conversion, the strided-operand plan (dimension coalescing) and block reductions.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backend_cuda/strided_plan.h"
#include "ndarray/backend.h"
#include "ndarray/convert.h"
#include "ndarray/dtype.h"
#include "ndarray/error.h"

// Every runtime call goes through NEEDLE_CUDA_CHECK, every cuBLAS call through
// NEEDLE_CUBLAS_CHECK: a failure becomes needle::RuntimeError naming the call, file and line.
#define NEEDLE_CUDA_CHECK(expr)                                                 \
  do {                                                                          \
    cudaError_t needle_err_ = (expr);                                           \
    if (needle_err_ != cudaSuccess)                                             \
      ::needle::cuda::throw_cuda_error(needle_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define NEEDLE_CUBLAS_CHECK(expr)                                                \
  do {                                                                           \
    cublasStatus_t needle_st_ = (expr);                                          \
    if (needle_st_ != CUBLAS_STATUS_SUCCESS)                                     \
      ::needle::cuda::throw_cublas_error(needle_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After every kernel launch: launch-configuration errors surface here, at the launching line.
#define NEEDLE_CUDA_LAUNCH_CHECK() NEEDLE_CUDA_CHECK(cudaGetLastError())

namespace needle::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t st, const char* expr, const char* file,
                                     int line);

// Initialises the device on first use (device 0, the stream, the error flag); throws
// RuntimeError when no GPU is present.
void ensure_initialized();
// The one stream every kernel, copy and cuBLAS call runs on. Work is ordered on it, which is
// also what lets the allocator hand a freed block to the next request at once.
cudaStream_t stream();
int num_sms();
// 10 * major + minor of the device (90 on Hopper), read once at initialisation.
int compute_capability();
// Shared memory one block may use (static plus dynamic) after opting in, 227 KB on Hopper.
size_t max_shared_memory_per_block();

// Lets `kernel` take all the dynamic shared memory a block may have beside its static shared
// memory, and returns that many bytes. Call once per kernel (a function-local static).
template <typename Kernel>
size_t enable_max_dynamic_shared_memory(Kernel kernel) {
  cudaFuncAttributes attr;
  NEEDLE_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  const size_t limit = max_shared_memory_per_block() - attr.sharedSizeBytes;
  NEEDLE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(limit)));
  return limit;
}

// --- the device error flag -----------------------------------------------------------------------
// Kernels cannot throw, and a device assert would kill the context. A kernel that meets a bad
// index records it instead and the host raises IndexError at the next synchronisation
// (copy_to_host / synchronize). The first failing thread claims the report with an atomic on a
// device word, then writes the record into mapped pinned host memory, so the host reads it after
// the stream sync with no copy and the error-free path costs nothing. (A __device__ variable
// would not do: without relocatable device code each .cu file would get its own copy.)
struct ErrorRecord {
  int code;       // 0 = no error; else an ErrorKind
  int64_t value;  // the offending index
  int64_t bound;  // the valid range was [0, bound)
};
enum ErrorKind : int { kNoError = 0, kIndexSelect = 1, kIndexAdd = 2, kCrossEntropyTarget = 3 };
// Passed to kernels by value.
struct DeviceErrorFlag {
  int* claimed;         // device memory: 0 until a thread claims the report
  ErrorRecord* record;  // mapped pinned host memory, as seen from the device
};
DeviceErrorFlag device_error_flag();
// Throws IndexError (and re-arms the flag) when a kernel has reported an error. Call after a
// stream synchronisation only.
void check_device_error_flag();

__device__ __forceinline__ void report_device_error(DeviceErrorFlag flag, int kind, int64_t value,
                                                    int64_t bound) {
  if (atomicCAS(flag.claimed, 0, 1) == 0) {
    volatile ErrorRecord* r = flag.record;
    r->value = value;
    r->bound = bound;
    __threadfence_system();
    r->code = kind;
    __threadfence_system();
  }
}

// --- allocator (memory.cu) -----------------------------------------------------------------------
void* device_alloc(size_t nbytes);
void device_free(void* ptr, size_t nbytes);

// Temporary device memory for one launch sequence (split-reduction partials, layer-norm partial
// sums). Freed on scope exit: the stream orders the kernels that use it before any later user.
class Workspace {
 public:
  explicit Workspace(size_t nbytes)
      : nbytes_(nbytes), ptr_(nbytes ? device_alloc(nbytes) : nullptr) {}
  ~Workspace() {
    if (ptr_) device_free(ptr_, nbytes_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  size_t nbytes_;
  void* ptr_;
};

// --- launch geometry -----------------------------------------------------------------------------
constexpr int kThreads = 256;
// Blocks for a grid-stride loop over n items of `per_block` each: enough to fill the GPU several
// times over, never more than the grid limit.
inline unsigned grid_for(int64_t n, int64_t per_block) {
  int64_t blocks = ceil_div(n, per_block);
  int64_t cap = static_cast<int64_t>(num_sms()) * 32;
  if (blocks > cap) blocks = cap;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks);
}

// Blocks of `kernel` that are resident on one SM at once with `threads` threads and `smem` bytes
// of dynamic shared memory (at least 1). Asked of the runtime once per combination.
int resident_blocks_per_sm(const void* kernel, int threads, size_t smem);

// The grid for a kernel that loops over `units` work units, one per block at a time: as many
// blocks as are resident at once (no tail wave of late blocks), never more than the units.
template <typename Kernel>
unsigned resident_grid(Kernel kernel, int threads, size_t smem, int64_t units) {
  const int64_t cap = static_cast<int64_t>(num_sms()) *
                      resident_blocks_per_sm(reinterpret_cast<const void*>(kernel), threads, smem);
  const int64_t blocks = units < cap ? units : cap;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// --- dtype conversion ----------------------------------------------------------------------------

// Reads element i of an array whose dtype is known only at run time (targets, per-row statistics,
// upstream gradients, layer-norm parameters) as A. The switch is on a value uniform across the
// grid, so it costs a few instructions and no divergence.
template <typename A>
__device__ __forceinline__ A load_as(const void* p, DType dt, int64_t i) {
  switch (dt) {
    case DType::Bool:
      return convert<A>(static_cast<const bool*>(p)[i]);
    case DType::Int32:
      return convert<A>(static_cast<const int32_t*>(p)[i]);
    case DType::Int64:
      return convert<A>(static_cast<const int64_t*>(p)[i]);
    case DType::BFloat16:
      return convert<A>(static_cast<const bfloat16*>(p)[i]);
    case DType::Float32:
      return convert<A>(static_cast<const float*>(p)[i]);
    default:
      return convert<A>(static_cast<const double*>(p)[i]);
  }
}
__device__ __forceinline__ int64_t load_as_int64(const void* p, DType dt, int64_t i) {
  if (dt == DType::Int32) return static_cast<const int32_t*>(p)[i];
  return static_cast<const int64_t*>(p)[i];
}
// Writes v to element i of a floating array whose dtype is known only at run time.
template <typename A>
__device__ __forceinline__ void store_as(void* p, DType dt, int64_t i, A v) {
  switch (dt) {
    case DType::BFloat16:
      static_cast<bfloat16*>(p)[i] = convert<bfloat16>(v);
      break;
    case DType::Float32:
      static_cast<float*>(p)[i] = convert<float>(v);
      break;
    default:
      static_cast<double*>(p)[i] = convert<double>(v);
      break;
  }
}

// True when `p` is aligned for `bytes`-wide vector accesses.
inline bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// A bundle of N elements loaded or stored with one 16-byte (or narrower) access.
template <typename T, int N>
struct alignas(sizeof(T) * N) VecN {
  T v[N];
};
template <typename T, int N>
__device__ __forceinline__ VecN<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const VecN<T, N>*>(p);
}
template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const VecN<T, N>& w) {
  *reinterpret_cast<VecN<T, N>*>(p) = w;
}

// --- fast math -----------------------------------------------------------------------------------
// 2^x by the hardware's approximation (one MUFU.EX2; relative error about 2^-22, so a float32
// result a few ulps off), denormal results flushed to 0: the attention kernels' softmax, the
// bfloat16 cross-entropy and GELU, whose results are rounded to bfloat16 or need no more. exp(x)
// is exp2_approx(x * log2(e)). 2^-inf = 0, 2^inf = inf, 2^NaN = NaN.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
constexpr float kLog2e = 1.4426950408889634f;  // log2(e)
constexpr float kLn2 = 0.6931471805599453f;     // ln(2)

// --- shared memory ---------------------------------------------------------------------------
// The 32-bit shared-space address of a pointer into shared memory.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy (cp.async, cached in L2 only); src_bytes < 16 zero-fills the rest
// (the attention kernels' padding rows, which must be finite: a masked probability of 0 times a
// garbage NaN would still be NaN).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// --- block reductions ----------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 values; the trailing barrier lets the caller reuse it immediately.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? scratch[lane] : T(0);
  r = warp_sum(r);
  __syncthreads();
  return r;
}

}  // namespace needle::cuda
