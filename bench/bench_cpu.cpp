// CPU backend benchmark: matmul GFLOP/s beside a bare Eigen GEMM, elementwise and reduction
// bandwidth beside memcpy, all measured in this process on the same threads. Prints a table, then
// one JSON object (the last line). Medians of several repetitions after a warm-up, on random data.
//
//   bench_cpu [--quick]     (--quick: fewer repetitions and no 2048 / vocabulary-sized GEMMs)
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12 on Eigen's AVX-512 kernels
#include <Eigen/Core>

#include "backend_cpu/cpu_backend.h"
#include "ndarray/ndarray.h"
#include "ndarray/random.h"

using namespace needle;

namespace {

using Clock = std::chrono::steady_clock;

double median_seconds(int reps, const std::function<void()>& f) {
  f();  // warm-up: first-touch page faults, Eigen's blocking buffers, OpenMP thread start
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto start = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

NDArray random_matrix(const Shape& shape, uint64_t seed) {
  manual_seed(seed);
  return NDArray::uniform(shape, -1.0, 1.0, DType::Float32);
}

struct Row {
  std::string name, unit;
  double needle = 0, baseline = 0;
  std::string baseline_name;
};

using EigenRowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Two rows: the NDArray op (allocates its output, as user code does) and the gemm kernel writing
// into a preallocated output, both beside Eigen writing into a preallocated matrix.
void bench_matmul(std::vector<Row>& rows, const std::string& name, int64_t m, int64_t k, int64_t n,
                  int reps) {
  NDArray a = random_matrix({m, k}, 1), b = random_matrix({k, n}, 2);
  NDArray c = NDArray::empty({m, n});
  const double gflop = 2.0 * m * n * k * 1e-9;
  Eigen::Map<const EigenRowMajor> A(static_cast<const float*>(a.data_ptr()), m, k);
  Eigen::Map<const EigenRowMajor> B(static_cast<const float*>(b.data_ptr()), k, n);
  EigenRowMajor C(m, n);
  const double t_eigen = median_seconds(reps, [&] { C.noalias() = A * B; });
  const double t_op = median_seconds(reps, [&] { NDArray r = matmul(a, b); });
  GemmArgs g;
  g.m = m, g.n = n, g.k = k;
  g.a = a.data_ptr(), g.lda = k, g.b = b.data_ptr(), g.ldb = n, g.c = c.data_ptr(), g.ldc = n;
  const double t_kernel = median_seconds(reps, [&] { cpu_backend().gemm(g); });
  rows.push_back({name, "GFLOP/s", gflop / t_op, gflop / t_eigen, "eigen"});
  rows.push_back({name + " (kernel)", "GFLOP/s", gflop / t_kernel, gflop / t_eigen, "eigen"});
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int reps = quick ? 3 : 7;
  std::vector<Row> rows;
  // Other processes on the cores distort two-thread timings badly (a descheduled OpenMP worker
  // stalls the whole team), so the load is printed beside the results.
  double load = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &load) != 1) load = -1;
    std::fclose(f);
  }
  std::printf(
      "needle CPU benchmark: %d OpenMP threads, Eigen %d.%d.%d, %d repetitions (median), "
      "load average %.2f\n",
      omp_get_max_threads(), EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, reps,
      load);

  // --- matmul (float32)
  // ---------------------------------------------------------------------------
  std::vector<int64_t> squares = {256, 512, 1024};
  if (!quick) squares.push_back(2048);
  for (int64_t s : squares) bench_matmul(rows, "matmul " + std::to_string(s) + "^3", s, s, s, reps);
  // Pythia-70M shapes with B*T = 1024 tokens (2048 would double the time; the rates are the
  // same at this size): QKV projection, MLP up-projection, and the vocabulary head.
  const int64_t bt = 1024;
  bench_matmul(rows, "matmul pythia qkv 1024x512x1536", bt, 512, 1536, reps);
  bench_matmul(rows, "matmul pythia mlp 1024x512x2048", bt, 512, 2048, reps);
  if (!quick) bench_matmul(rows, "matmul pythia head 1024x512x50304", bt, 512, 50304, 3);

  // --- elementwise and reduction bandwidth (float32, 16M elements = 64 MiB per array)
  // ----------------
  const int64_t n = int64_t(1) << 24;
  const double bytes = static_cast<double>(n) * sizeof(float);
  NDArray x = random_matrix({n}, 3), y = random_matrix({n}, 4);
  NDArray out = NDArray::empty({n});
  std::vector<float> src(n), dst(n);
  std::memcpy(src.data(), x.data_ptr(), n * sizeof(float));
  // memcpy reads and writes each byte: 2 * bytes of traffic.
  const double t_memcpy = median_seconds(reps, [&] { std::memcpy(dst.data(), src.data(), n * 4); });
  const double memcpy_gbs = 2 * bytes / t_memcpy * 1e-9;
  const Backend& cpu_b = cpu_backend();
  // Kernel rates write into a preallocated output; the NDArray rows include allocating and
  // first-touching a fresh 64 MiB result, as user code does.
  auto kernel_row = [&](const std::string& name, double traffic, const std::function<void()>& f) {
    rows.push_back({name, "GB/s", traffic / median_seconds(reps, f) * 1e-9, memcpy_gbs, "memcpy"});
  };
  kernel_row("add kernel (16M f32)", 3 * bytes,
             [&] { cpu_b.binary(BinaryOp::Add, x.ref(), y.ref(), out.ref()); });
  kernel_row("mul kernel (16M f32)", 3 * bytes,
             [&] { cpu_b.binary(BinaryOp::Mul, x.ref(), y.ref(), out.ref()); });
  kernel_row("mul scalar kernel (16M f32)", 2 * bytes,
             [&] { cpu_b.binary_scalar(BinaryOp::Mul, x.ref(), 1.5, false, out.ref()); });
  kernel_row("exp kernel (16M f32)", 2 * bytes,
             [&] { cpu_b.unary(UnaryOp::Exp, x.ref(), out.ref()); });
  kernel_row("copy transposed 4096^2 f32", 2 * bytes, [&] {
    NDArray t = x.view({4096, 4096}).transpose(0, 1);
    cpu_b.copy(t.ref(), out.view({4096, 4096}).ref());
  });
  kernel_row("add NDArray op (16M f32, allocates)", 3 * bytes, [&] { NDArray r = x + y; });
  kernel_row("exp NDArray op (16M f32, allocates)", 2 * bytes, [&] { NDArray r = exp(x); });
  // Reductions read once: bytes of traffic.
  NDArray rows_out = NDArray::empty({4096}), cols_out = NDArray::empty({4096});
  kernel_row("sum last axis 4096x4096 f32", bytes,
             [&] { cpu_b.reduce(ReduceOp::Sum, x.ref(), 4096, 4096, 1, rows_out.ref()); });
  kernel_row("sum first axis 4096x4096 f32", bytes,
             [&] { cpu_b.reduce(ReduceOp::Sum, x.ref(), 1, 4096, 4096, cols_out.ref()); });
  kernel_row("softmax rows 4096x4096 f32", 2 * bytes,
             [&] { cpu_b.row_op(RowOp::Softmax, x.ref(), 4096, 4096, out.ref()); });

  // --- report
  // -------------------------------------------------------------------------------------------
  std::printf("%-44s %12s %12s %8s\n", "benchmark", "needle", "baseline", "ratio");
  for (const Row& r : rows)
    std::printf("%-44s %8.1f %-3s %8.1f %-3s %7.0f%%  (%s)\n", r.name.c_str(), r.needle,
                r.unit == "GB/s" ? "GB" : "GF", r.baseline, r.unit == "GB/s" ? "GB" : "GF",
                100.0 * r.needle / r.baseline, r.baseline_name.c_str());
  std::printf("{\"threads\": %d, \"load_average\": %.2f, \"results\": [", omp_get_max_threads(),
              load);
  for (size_t i = 0; i < rows.size(); ++i)
    std::printf("%s{\"name\": \"%s\", \"unit\": \"%s\", \"needle\": %.2f, \"%s\": %.2f}",
                i ? ", " : "", rows[i].name.c_str(), rows[i].unit.c_str(), rows[i].needle,
                rows[i].baseline_name.c_str(), rows[i].baseline);
  std::printf("]}\n");
  return 0;
}
