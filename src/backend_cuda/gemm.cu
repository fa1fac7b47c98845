// Batched GEMM through cuBLAS, at the float32 matmul precision of ndarray/matmul_precision.h.
// Two GEMMs go through cuBLASLt for its epilogues: one with a bias (a Linear layer's forward),
// which adds the bias before C is written, and one with row sums of A (a Linear layer's weight
// gradient g^T x), which sums g over rows into the bias gradient from the same pass (BGRADB).
// Where cuBLASLt has no such algorithm (float64, an odd alignment) the bias is added by a
// broadcast add after the plain GEMM, and the row sums are a second GEMM against a ones vector.
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
// D (m, n) = alpha * op_a(A) op_b(B) + beta * C for `batch` strided matrices, C and D the same
// buffer, with the epilogue's vector: BIAS adds bias (m rows) to every column; BGRADB writes the
// n sums over k of op_b(B)'s columns (the row sums of the row-major A) in D's type.
struct LtProblem {
  cublasLtEpilogue_t epilogue;
  cudaDataType_t type_ab, type_c, scale;
  cublasComputeType_t compute;
  cublasOperation_t op_a, op_b;
  int m, n, k, lda, ldb, ldc, batch;
  int64_t stride_a, stride_b, stride_c;
  uint32_t align_a, align_b, align_c, align_vector;
  auto key() const {
    return std::make_tuple(int(epilogue), int(type_ab), int(type_c), int(compute), int(op_a),
                           int(op_b), m, n, k, lda, ldb, ldc, batch, stride_a, stride_b, stride_c,
                           std::make_tuple(align_a, align_b, align_c, align_vector));
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

void build_plan(LtPlan& plan, const LtProblem& p, const void* vector) {
  NEEDLE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, p.compute, p.scale));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(p.op_a));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(p.op_b));
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(p.epilogue));
  // The vector's alignment guides the heuristic.
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector);
  const bool na = p.op_a == CUBLAS_OP_N, nb = p.op_b == CUBLAS_OP_N;
  plan.a = lt_layout(p.type_ab, na ? p.m : p.k, na ? p.k : p.m, p.lda, p.batch, p.stride_a);
  plan.b = lt_layout(p.type_ab, nb ? p.k : p.n, nb ? p.n : p.k, p.ldb, p.batch, p.stride_b);
  plan.c = lt_layout(p.type_c, p.m, p.n, p.ldc, p.batch, p.stride_c);

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
  // No algorithm (NOT_SUPPORTED, or none returned) leaves the caller to do the epilogue's work.
  if (st != CUBLAS_STATUS_NOT_SUPPORTED) NEEDLE_CUBLAS_CHECK(st);
  plan.found = st == CUBLAS_STATUS_SUCCESS && returned > 0;
  if (plan.found) plan.algo = result.algo;
}

// D = alpha * op_a(A) op_b(B) + beta * C with the problem's epilogue on `vector` (the bias, or
// where the row sums go) through cuBLASLt; false, with nothing launched, when cuBLASLt has no
// algorithm for the problem.
bool gemm_lt(const LtProblem& p, const void* alpha, const void* beta, const void* a, const void* b,
             void* c, const void* vector) {
  static std::mutex mu;
  static std::map<decltype(p.key()), LtPlan> plans;
  std::lock_guard<std::mutex> lock(mu);  // a plan's descriptor carries this call's vector pointer
  auto [it, inserted] = plans.try_emplace(p.key());
  LtPlan& plan = it->second;
  if (inserted) build_plan(plan, p, vector);
  if (!plan.found) return false;
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, vector);
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

// g.a_row_sums = op(A) (m, k) @ ones (k): the GEMM that stands in for the BGRADB epilogue.
void row_sums_by_gemm(const GemmArgs& g) {
  GemmArgs s;
  s.dtype = g.dtype;
  s.c_float32 = g.c_float32;
  s.trans_a = g.trans_a;
  s.m = g.m, s.n = 1, s.k = g.k;
  s.a = g.a, s.lda = g.lda;
  s.c = g.a_row_sums, s.ldc = 1;
  s.ldb = 1;
  Workspace ones(size_t(g.k) * itemsize(g.dtype));  // freed in stream order, after the GEMM
  if (g.k > 0) {
    ArrayRef r;
    r.data = ones.as<void>(), r.dtype = g.dtype, r.ndim = 1, r.shape[0] = g.k, r.strides[0] = 1;
    fill(r, 1.0);
  }
  s.b = ones.as<void>();
  gemm(s);
}

}  // namespace

// B = batch; per batch, C (M, N) = alpha * op(A) (M, K) @ op(B) (K, N) + beta * C, row-major.
void gemm(const GemmArgs& g) {
  check_gemm_args("cuda gemm", g);
  if (g.m == 0 || g.batch == 0 || (g.n == 0 && g.a_row_sums == nullptr)) return;
  NEEDLE_CHECK(g.batch == 1 || g.stride_c != 0, ValueError,
               "cuda gemm: C has batch stride 0 with batch ", g.batch,
               ", so the batches would overwrite each other");
  const DType c_dtype = g.c_dtype();

  if (g.k == 0 || g.n == 0) {
    // An empty inner dimension leaves C = beta * C; done here rather than trusting every cuBLAS
    // path with k == 0. (With n == 0 there is no C, only the row sums.)
    ArrayRef c;
    c.data = g.c;
    c.dtype = c_dtype;
    c.ndim = 3;
    c.shape[0] = g.batch, c.shape[1] = g.m, c.shape[2] = g.n;
    c.strides[0] = g.stride_c, c.strides[1] = g.ldc, c.strides[2] = 1;
    if (g.beta == 0.0)
      fill(c, 0.0);
    else if (g.beta != 1.0)
      binary_scalar(BinaryOp::Mul, c, g.beta, false, c);
    if (g.bias != nullptr) add_bias(g.c, g.bias, c_dtype, g.batch, g.m, g.n, g.ldc, g.stride_c);
    if (g.a_row_sums != nullptr) row_sums_by_gemm(g);
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
  const size_t elem = itemsize(g.dtype), c_elem = itemsize(c_dtype);
  // bfloat16 operands accumulate in float32; alpha/beta are float for 32F compute types.
  const bool bf16 = g.dtype == DType::BFloat16;
  const cudaDataType_t type_ab = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cudaDataType_t type_c = c_dtype == DType::BFloat16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : float32_compute_type();
  const float alpha = static_cast<float>(g.alpha), beta = static_cast<float>(g.beta);
  // The epilogue's vector: the bias, or where A's row sums go (batch is then 1).
  const cublasLtEpilogue_t epilogue =
      g.a_row_sums != nullptr ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_BIAS;
  void* vector = g.a_row_sums != nullptr ? g.a_row_sums : const_cast<void*>(g.bias);
  bool row_sums_done = false;
  // Batches go in chunks that stay under the grid-size limits of cuBLAS kernels.
  constexpr int64_t kMaxBatch = 65535;
  for (int64_t b0 = 0; b0 < g.batch; b0 += kMaxBatch) {
    const int count = static_cast<int>(g.batch - b0 < kMaxBatch ? g.batch - b0 : kMaxBatch);
    const char* pa = static_cast<const char*>(g.b) + b0 * g.stride_b * elem;
    const char* pb = static_cast<const char*>(g.a) + b0 * g.stride_a * elem;
    char* pc = static_cast<char*>(g.c) + b0 * g.stride_c * c_elem;
    if (vector != nullptr && g.dtype != DType::Float64) {
      LtProblem p{epilogue, type_ab, type_c, CUDA_R_32F, compute, op_a, op_b};
      p.m = m, p.n = n, p.k = k, p.lda = lda, p.ldb = ldb, p.ldc = ldc, p.batch = count;
      p.stride_a = g.stride_b, p.stride_b = g.stride_a, p.stride_c = g.stride_c;
      p.align_a = alignment_of(pa), p.align_b = alignment_of(pb), p.align_c = alignment_of(pc);
      p.align_vector = alignment_of(vector);
      if (gemm_lt(p, &alpha, &beta, pa, pb, pc, vector)) {
        row_sums_done = g.a_row_sums != nullptr;
        continue;
      }
    }
    if (g.dtype == DType::Float64) {  // check_gemm_args admits the floating dtypes only
      const double alpha64 = g.alpha, beta64 = g.beta;
      NEEDLE_CUBLAS_CHECK(cublasDgemmStridedBatched(
          h, op_a, op_b, m, n, k, &alpha64, reinterpret_cast<const double*>(pa), lda, g.stride_b,
          reinterpret_cast<const double*>(pb), ldb, g.stride_a, &beta64,
          reinterpret_cast<double*>(pc), ldc, g.stride_c, count));
    } else {
      NEEDLE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          h, op_a, op_b, m, n, k, &alpha, pa, type_ab, lda, g.stride_b, pb, type_ab, ldb,
          g.stride_a, &beta, pc, type_c, ldc, g.stride_c, count, compute, CUBLAS_GEMM_DEFAULT));
    }
    if (g.bias != nullptr) add_bias(pc, g.bias, c_dtype, count, g.m, g.n, g.ldc, g.stride_c);
  }
  if (g.a_row_sums != nullptr && !row_sums_done) row_sums_by_gemm(g);
}

}  // namespace cuda
}  // namespace needle
