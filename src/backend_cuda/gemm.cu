// Batched GEMM through cuBLAS, at the float32 matmul precision of ndarray/matmul_precision.h.
// A GEMM with a bias (a Linear layer's forward) goes through cuBLASLt, whose epilogue adds the
// bias before C is written; where cuBLASLt has no such algorithm (float64, an odd alignment) the
// bias is added by a broadcast add after the plain GEMM.
//
// cuBLAS is column-major; our matrices are row-major. A row-major (r, c) matrix with leading
// dimension ld is the column-major (c, r) matrix of its transpose, so C = op(A) op(B) is computed
// as C^T = op(B)^T op(A)^T: the operands swap, m and n swap, and each transpose flag carries over
// unchanged. No operand is ever copied or transposed in memory.

#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "backend_cuda/cuda_backend.h"
#include "backend_cuda/cuda_common.cuh"
#include "backend_cuda/cuda_internal.h"

namespace needle {
namespace cuda {
namespace {

// 32 MiB, the workspace cuBLAS documents for Hopper GPUs; taken once from the caching allocator
// and shared by cuBLAS and cuBLASLt, whose calls all run in order on needle's one stream.
constexpr size_t kCublasWorkspace = 32u << 20;

void* workspace() {
  static void* w = (ensure_initialized(), device_alloc(kCublasWorkspace));
  return w;
}

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    ensure_initialized();
    cublasHandle_t created;
    NEEDLE_CUBLAS_CHECK(cublasCreate(&created));
    NEEDLE_CUBLAS_CHECK(cublasSetStream(created, stream()));
    NEEDLE_CUBLAS_CHECK(cublasSetWorkspace(created, workspace(), kCublasWorkspace));
    return created;
  }();
  return h;
}

cublasLtHandle_t lt_handle() {
  static cublasLtHandle_t h = [] {
    ensure_initialized();
    cublasLtHandle_t created;
    NEEDLE_CUBLAS_CHECK(cublasLtCreate(&created));
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

// --- the bias epilogue -------------------------------------------------------------------------------

// The largest power of two up to 256 dividing p's address: cuBLASLt's heuristic assumes 256-byte
// aligned operands unless told otherwise, and views may start anywhere.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && address % a != 0) a /= 2;
  return a;
}

// One column-major problem as cuBLASLt sees it (operands already swapped, as in gemm()):
// D (m, n) = alpha * op_a(A) op_b(B) + beta * C + bias (m rows) for `batch` strided matrices,
// C and D the same buffer.
struct LtProblem {
  cudaDataType_t type, scale;
  cublasComputeType_t compute;
  cublasOperation_t op_a, op_b;
  int m, n, k, lda, ldb, ldc, batch;
  int64_t stride_a, stride_b, stride_c;
  uint32_t align_a, align_b, align_c, align_bias;
  auto key() const {
    return std::make_tuple(int(type), int(compute), int(op_a), int(op_b), m, n, k, lda, ldb, ldc,
                           batch, stride_a, stride_b, stride_c,
                           std::make_tuple(align_a, align_b, align_c, align_bias));
  }
};

// Descriptors and the heuristic's algorithm for one problem, built on its first call and kept
// for the process's life, like the handles.
struct LtPlan {
  bool found = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

cublasLtMatrixLayout_t lt_layout(cudaDataType_t type, int rows, int cols, int ld, int batch,
                                 int64_t stride) {
  cublasLtMatrixLayout_t l;
  NEEDLE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
  if (batch > 1) {
    const int32_t count = batch;
    NEEDLE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                         &count, sizeof(count)));
    NEEDLE_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return l;
}

template <typename V>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const V& value) {
  NEEDLE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
}

void build_plan(LtPlan& plan, const LtProblem& p, const void* bias) {
  NEEDLE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, p.compute, p.scale));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(p.op_a));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(p.op_b));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BIAS));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);  // its alignment guides the heuristic
  const bool na = p.op_a == CUBLAS_OP_N, nb = p.op_b == CUBLAS_OP_N;
  plan.a = lt_layout(p.type, na ? p.m : p.k, na ? p.k : p.m, p.lda, p.batch, p.stride_a);
  plan.b = lt_layout(p.type, nb ? p.k : p.n, nb ? p.n : p.k, p.ldb, p.batch, p.stride_b);
  plan.c = lt_layout(p.type, p.m, p.n, p.ldc, p.batch, p.stride_c);

  cublasLtMatmulPreference_t pref;
  NEEDLE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kCublasWorkspace;
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, p.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, p.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, p.align_c},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, p.align_c}};
  NEEDLE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  for (const auto& [attr, value] : aligns)
    NEEDLE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      lt_handle(), plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  // No algorithm (NOT_SUPPORTED, or none returned) leaves the caller to add the bias itself.
  if (st != CUBLAS_STATUS_NOT_SUPPORTED) NEEDLE_CUBLAS_CHECK(st);
  plan.found = st == CUBLAS_STATUS_SUCCESS && returned > 0;
  if (plan.found) plan.algo = result.algo;
}

// D = alpha * op_a(A) op_b(B) + beta * C + bias through cuBLASLt's bias epilogue; false, with
// nothing launched, when cuBLASLt has no algorithm for the problem.
bool gemm_bias_lt(const LtProblem& p, const void* alpha, const void* beta, const void* a,
                  const void* b, void* c, const void* bias) {
  static std::mutex mu;
  static std::map<decltype(p.key()), LtPlan> plans;
  std::lock_guard<std::mutex> lock(mu);  // a plan's descriptor carries this call's bias pointer
  auto [it, inserted] = plans.try_emplace(p.key());
  LtPlan& plan = it->second;
  if (inserted) build_plan(plan, p, bias);
  if (!plan.found) return false;
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  NEEDLE_CUBLAS_CHECK(cublasLtMatmul(lt_handle(), plan.desc, alpha, a, plan.a, b, plan.b, beta, c,
                                     plan.c, c, plan.c, &plan.algo, workspace(), kCublasWorkspace,
                                     stream()));
  return true;
}

// C[b][i, j] += bias[j] over `batch` matrices (m, n) with leading dimension ldc: the broadcast add
// that stands in for the epilogue.
void add_bias(void* c, const void* bias, DType dtype, int64_t batch, int64_t m, int64_t n,
              int64_t ldc, int64_t stride_c) {
  ArrayRef out, row;
  out.data = c, row.data = const_cast<void*>(bias);
  out.dtype = row.dtype = dtype;
  out.ndim = row.ndim = 3;
  out.shape[0] = row.shape[0] = batch, out.shape[1] = row.shape[1] = m;
  out.shape[2] = row.shape[2] = n;
  out.strides[0] = stride_c, out.strides[1] = ldc, out.strides[2] = 1;
  row.strides[0] = 0, row.strides[1] = 0, row.strides[2] = 1;
  binary(BinaryOp::Add, out, row, out);
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
    if (g.bias != nullptr) add_bias(g.c, g.bias, g.dtype, g.batch, g.m, g.n, g.ldc, g.stride_c);
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
    if (g.bias != nullptr && g.dtype != DType::Float64) {
      const bool bf16 = g.dtype == DType::BFloat16;
      LtProblem p{bf16 ? CUDA_R_16BF : CUDA_R_32F, CUDA_R_32F,
                  bf16 ? CUBLAS_COMPUTE_32F : float32_compute_type(), op_a, op_b, m, n, k, lda, ldb,
                  ldc, count, g.stride_b, g.stride_a, g.stride_c, alignment_of(pa),
                  alignment_of(pb), alignment_of(pc), alignment_of(g.bias)};
      const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
      if (gemm_bias_lt(p, &alpha, &beta, pa, pb, pc, g.bias)) continue;
    }
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
    if (g.bias != nullptr) add_bias(pc, g.bias, g.dtype, count, g.m, g.n, g.ldc, g.stride_c);
  }
}

}  // namespace cuda
}  // namespace needle
