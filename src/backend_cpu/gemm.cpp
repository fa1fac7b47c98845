// Batched GEMM on the CPU through Eigen. Operands are mapped in place (row-major maps with an outer
// stride; a transposed operand is the transpose of its stored map, which Eigen's GEMM reads without
// copying). bfloat16 is converted to float scratch matrices and back.
#include <vector>

// GCC 12 reports false "may be used uninitialized" warnings inside Eigen's AVX-512 GEMM kernels
// at the point they are inlined here; they are not about this file's code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>

#include "backend_cpu/cpu_common.h"
#include "backend_cpu/cpu_kernels.h"

namespace needle::cpu_kernels {
namespace {

template <typename T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using MutMap = Eigen::Map<RowMajor<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Below this many multiply-adds per matrix, Eigen runs a product on one thread anyway, so a batch
// of such products is parallelised over the batch instead.
constexpr int64_t kSmallGemm = int64_t(1) << 21;

// M = rows of C, N = cols of C, K = the contracted dim. C = alpha * op(A) op(B) + beta * C
// (+ bias[j] on column j when bias is given) for one matrix of the batch, and op(A)'s row sums
// into row_sums when given; T is float or double.
template <typename T>
void gemm_one(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
              const T* b, int64_t ldb, T* c, int64_t ldc, T alpha, T beta, const T* bias,
              T* row_sums) {
  MutMap<T> C(c, m, n, Eigen::OuterStride<>(ldc));
  // Stored shapes: A is (m, k), or (k, m) when transposed; likewise B.
  ConstMap<T> A(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
  if (row_sums != nullptr) {
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> sums(row_sums, m);
    if (k == 0) {
      sums.setZero();
    } else if (trans_a) {
      sums = A.colwise().sum().transpose();
    } else {
      sums = A.rowwise().sum();
    }
  }
  auto add_bias = [&] {
    if (bias != nullptr) C.rowwise() += Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(bias, n);
  };
  if (k == 0 || alpha == T(0)) {
    // op(A) op(B) is empty (or scaled away): C = beta * C, never reading C when beta == 0, as
    // BLAS does, so an uninitialised output cannot leak NaNs.
    if (beta == T(0)) {
      C.setZero();
    } else if (beta != T(1)) {
      C *= beta;
    }
    add_bias();
    return;
  }
  ConstMap<T> B(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
  auto product = [&](const auto& opA, const auto& opB) {
    if (beta == T(0)) {
      C.noalias() = alpha * opA * opB;
    } else {
      if (beta != T(1)) C *= beta;
      C.noalias() += alpha * opA * opB;
    }
  };
  if (!trans_a && !trans_b) product(A, B);
  if (!trans_a && trans_b) product(A, B.transpose());
  if (trans_a && !trans_b) product(A.transpose(), B);
  if (trans_a && trans_b) product(A.transpose(), B.transpose());
  add_bias();
}

// Copies a stored (rows, cols) bfloat16 matrix with leading dimension ld into compact float.
void widen(const bfloat16* src, int64_t rows, int64_t cols, int64_t ld, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = static_cast<float>(src[r * ld + c]);
}

// One bfloat16 matrix of the batch, computed in float: the operands are widened into scratch and
// multiplied with Eigen's float GEMM. A bfloat16 C (and its bias) is widened too and the result
// rounded back once; a float32 C (c_float32) is computed in place.
void gemm_one_bf16(const GemmArgs& g, int64_t i) {
  const auto* a = static_cast<const bfloat16*>(g.a) + i * g.stride_a;
  const auto* b = static_cast<const bfloat16*>(g.b) + i * g.stride_b;
  const int64_t a_rows = g.trans_a ? g.k : g.m, a_cols = g.trans_a ? g.m : g.k;
  const int64_t b_rows = g.trans_b ? g.n : g.k, b_cols = g.trans_b ? g.k : g.n;
  std::vector<float> fa(a_rows * a_cols), fb(b_rows * b_cols);
  widen(a, a_rows, a_cols, g.lda, fa.data());
  widen(b, b_rows, b_cols, g.ldb, fb.data());
  auto* row_sums = static_cast<float*>(g.a_row_sums);
  if (g.c_float32) {
    gemm_one<float>(g.trans_a, g.trans_b, g.m, g.n, g.k, fa.data(), a_cols, fb.data(), b_cols,
                    static_cast<float*>(g.c) + i * g.stride_c, g.ldc, static_cast<float>(g.alpha),
                    static_cast<float>(g.beta), static_cast<const float*>(g.bias), row_sums);
    return;
  }
  auto* c = static_cast<bfloat16*>(g.c) + i * g.stride_c;
  std::vector<float> fc(g.m * g.n, 0.0f), sums(row_sums != nullptr ? g.m : 0);
  if (g.beta != 0.0) widen(c, g.m, g.n, g.ldc, fc.data());
  std::vector<float> fbias(g.bias != nullptr ? g.n : 0);
  if (g.bias != nullptr) widen(static_cast<const bfloat16*>(g.bias), 1, g.n, g.n, fbias.data());
  gemm_one<float>(g.trans_a, g.trans_b, g.m, g.n, g.k, fa.data(), a_cols, fb.data(), b_cols,
                  fc.data(), g.n, static_cast<float>(g.alpha), static_cast<float>(g.beta),
                  g.bias != nullptr ? fbias.data() : nullptr,
                  row_sums != nullptr ? sums.data() : nullptr);
  for (int64_t r = 0; r < g.m; ++r)
    for (int64_t col = 0; col < g.n; ++col) c[r * g.ldc + col] = bfloat16(fc[r * g.n + col]);
  auto* bf_sums = static_cast<bfloat16*>(g.a_row_sums);
  for (size_t r = 0; r < sums.size(); ++r) bf_sums[r] = bfloat16(sums[r]);
}

template <typename T>
void gemm_one_typed(const GemmArgs& g, int64_t i) {
  gemm_one<T>(g.trans_a, g.trans_b, g.m, g.n, g.k, static_cast<const T*>(g.a) + i * g.stride_a,
              g.lda, static_cast<const T*>(g.b) + i * g.stride_b, g.ldb,
              static_cast<T*>(g.c) + i * g.stride_c, g.ldc, static_cast<T>(g.alpha),
              static_cast<T>(g.beta), static_cast<const T*>(g.bias), static_cast<T*>(g.a_row_sums));
}

}  // namespace

// B = batch, M, N = rows and cols of C, K = the contracted dim.
void gemm(const GemmArgs& g) {
  check_gemm_args("gemm", g);
  if (g.m == 0 || g.batch == 0 || (g.n == 0 && g.a_row_sums == nullptr)) return;
  // check_gemm_args admits the floating dtypes only.
  void (*one)(const GemmArgs&, int64_t) = g.dtype == DType::Float32   ? gemm_one_typed<float>
                                          : g.dtype == DType::Float64 ? gemm_one_typed<double>
                                                                      : gemm_one_bf16;
  if (g.batch > 1 && g.m * g.n * g.k < kSmallGemm) {
    // Eigen sees omp_in_parallel() and stays single-threaded inside each product. A stride_c of
    // 0 would make batch items write the same C, so that case stays sequential.
    if (g.stride_c != 0) {
      const int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, g.m * g.n * g.k));
      parallel_for(g.batch, grain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) one(g, i);
      });
      return;
    }
  }
  for (int64_t i = 0; i < g.batch; ++i) one(g, i);
}

}  // namespace needle::cpu_kernels
