// Batched GEMM through cuBLAS, at the float32 matmul precision of ndarray/matmul_precision.h.
//
// cuBLAS is column-major; our matrices are row-major. A row-major (r, c) matrix with leading
// dimension ld is the column-major (c, r) matrix of its transpose, so C = op(A) op(B) is computed
// as C^T = op(B)^T op(A)^T: the operands swap, m and n swap, and each transpose flag carries over
// unchanged. No operand is ever copied or transposed in memory.

#include "backend_cuda/cuda_backend.h"
#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"

namespace needle {
namespace cuda {
namespace {

// 32 MiB, the workspace cuBLAS documents for Hopper GPUs; taken once from the caching allocator.
constexpr size_t kCublasWorkspace = 32u << 20;

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    ensure_initialized();
    cublasHandle_t created;
    NEEDLE_CUBLAS_CHECK(cublasCreate(&created));
    NEEDLE_CUBLAS_CHECK(cublasSetStream(created, stream()));
    NEEDLE_CUBLAS_CHECK(
        cublasSetWorkspace(created, device_alloc(kCublasWorkspace), kCublasWorkspace));
    return created;
  }();
  return h;
}

cublasComputeType_t float32_compute_type() {
  // "highest": full float32; "high": TF32 tensor cores; "medium": bfloat16 tensor cores.
  switch (matmul_precision()) {
    case MatmulPrecision::kHigh: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case MatmulPrecision::kMedium: return CUBLAS_COMPUTE_32F_FAST_16BF;
    default: return CUBLAS_COMPUTE_32F;
  }
}

// The leading dimension handed to cuBLAS for a column-major (rows, cols) operand. When the
// operand has a single column the ld is never used, and NDArray may pass anything there (the
// stride of a size-1 dim), so it is replaced by a valid one; otherwise it must be >= rows.
int64_t checked_ld(int64_t ld, int64_t rows, int64_t cols, const char* operand) {
  int64_t need = rows > 1 ? rows : 1;
  if (cols <= 1) return ld >= need ? ld : need;
  NEEDLE_CHECK(ld >= need, ValueError, "cuda gemm: leading dimension of ", operand, " is ", ld,
               ", expected at least ", need);
  return ld;
}

int as_int(int64_t v, const char* what) {
  NEEDLE_CHECK(v <= INT32_MAX, ValueError, "cuda gemm: ", what, " = ", v,
               " exceeds cuBLAS's 32-bit limit (", INT32_MAX, ")");
  return static_cast<int>(v);
}

}  // namespace

// B = batch; per batch, C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C, row-major.
void gemm(const GemmArgs& g) {
  NEEDLE_CHECK(g.m >= 0 && g.n >= 0 && g.k >= 0 && g.batch >= 0, ValueError,
               "cuda gemm: expected non-negative sizes, got m=", g.m, " n=", g.n, " k=", g.k,
               " batch=", g.batch);
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  NEEDLE_CHECK(g.batch == 1 || g.stride_c != 0, ValueError,
               "cuda gemm: C has batch stride 0 with batch ", g.batch,
               ", so the batches would overwrite each other");

  if (g.k == 0) {
    // An empty inner dimension leaves C = beta * C; done here rather than trusting every cuBLAS
    // path with k == 0.
    ArrayRef c;
    c.data = g.c;
    c.dtype = g.dtype;
    c.ndim = 3;
    c.shape[0] = g.batch, c.shape[1] = g.m, c.shape[2] = g.n;
    c.strides[0] = g.stride_c, c.strides[1] = g.ldc, c.strides[2] = 1;
    if (g.beta == 0.0)
      fill(c, 0.0);
    else if (g.beta != 1.0)
      binary_scalar(BinaryOp::Mul, c, g.beta, false, c);
    return;
  }

  // Column-major problem: C^T (n, m) = op'(B^T) (n, k) @ op'(A^T) (k, m).
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // applied to B's buffer
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // applied to A's buffer
  // Column-major shapes of the stored buffers: B is (n, k), or (k, n) when transposed; A likewise.
  const int64_t ld_b =
      g.trans_b ? checked_ld(g.ldb, g.k, g.n, "B") : checked_ld(g.ldb, g.n, g.k, "B");
  const int64_t ld_a =
      g.trans_a ? checked_ld(g.lda, g.m, g.k, "A") : checked_ld(g.lda, g.k, g.m, "A");
  const int64_t ld_c = checked_ld(g.ldc, g.n, g.m, "C");
  const int m = as_int(g.n, "n"), n = as_int(g.m, "m"), k = as_int(g.k, "k");
  const int lda = as_int(ld_b, "ldb"), ldb = as_int(ld_a, "lda"), ldc = as_int(ld_c, "ldc");

  cublasHandle_t h = handle();
  const size_t elem = itemsize(g.dtype);
  // Batches go in chunks that stay under the grid-size limits of cuBLAS kernels.
  constexpr int64_t kMaxBatch = 65535;
  for (int64_t b0 = 0; b0 < g.batch; b0 += kMaxBatch) {
    const int count = static_cast<int>(g.batch - b0 < kMaxBatch ? g.batch - b0 : kMaxBatch);
    const char* pa = static_cast<const char*>(g.b) + b0 * g.stride_b * elem;
    const char* pb = static_cast<const char*>(g.a) + b0 * g.stride_a * elem;
    char* pc = static_cast<char*>(g.c) + b0 * g.stride_c * elem;
    switch (g.dtype) {
      case DType::Float64: {
        const double alpha = g.alpha, beta = g.beta;
        NEEDLE_CUBLAS_CHECK(cublasDgemmStridedBatched(
            h, op_a, op_b, m, n, k, &alpha, reinterpret_cast<const double*>(pa), lda, g.stride_b,
            reinterpret_cast<const double*>(pb), ldb, g.stride_a, &beta,
            reinterpret_cast<double*>(pc), ldc, g.stride_c, count));
        break;
      }
      case DType::Float32:
      case DType::BFloat16: {
        // bfloat16 operands accumulate in float32; alpha/beta are float for 32F compute types.
        const bool bf16 = g.dtype == DType::BFloat16;
        const cudaDataType_t t = bf16 ? CUDA_R_16BF : CUDA_R_32F;
        const cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : float32_compute_type();
        const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
        NEEDLE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            h, op_a, op_b, m, n, k, &alpha, pa, t, lda, g.stride_b, pb, t, ldb, g.stride_a, &beta,
            pc, t, ldc, g.stride_c, count, compute, CUBLAS_GEMM_DEFAULT));
        break;
      }
      default:
        throw TypeError(detail::concat(
            "cuda gemm: expected a floating dtype (bfloat16, float32, float64), got ",
            dtype_name(g.dtype)));
    }
  }
}

}  // namespace cuda
}  // namespace needle
