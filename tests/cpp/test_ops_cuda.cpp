// CUDA kernels against the CPU kernels: the shared op table (op_table.h) run on cuda:0 with the
// CPU as the oracle, plus what the table does not cover: the fused entries (layer_norm,
// cross_entropy, AdamW, the foreach ops) called through both kernel tables, vocabulary-sized
// rows, the split reduction paths, GEMM arguments NDArray rarely produces, device-reported index
// errors and the matmul precision switch. Needs a GPU (label `gpu`); without one every test
// passes with a note.
//
// The CUDA allocator runs in poison mode here: every block it hands out is filled with NaN bytes
// first, so an output element a kernel forgets to write fails the comparison.
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "backend_cpu/cpu_backend.h"
#include "backend_cuda/cuda_backend.h"
#include "op_table.h"

using namespace needle;
using namespace needle::optest;

namespace {

const Device kCuda(DeviceType::CUDA, 0);

// Returns false (and records why) when this machine has no GPU to test on.
bool gpu_ready() {
  if (!cuda_is_available()) {
    WARN("no CUDA device: CUDA kernel tests skipped");
    return false;
  }
  cuda_set_alloc_poison(true);
  return true;
}

#define NEEDLE_REQUIRE_GPU() \
  if (!gpu_ready()) {        \
    SUCCEED("skipped");      \
    return;                  \
  }

void run_family(const std::string& family) {
  NEEDLE_REQUIRE_GPU();
  std::vector<OpCase> cases = op_cases(family);
  REQUIRE(!cases.empty());
  for (const OpCase& c : cases) {
    INFO(c.name << " (seed " << c.seed << ")");
    check_against_cpu(c, kCuda);
  }
  cuda_synchronize();
}

// The same random values on the CPU and on cuda:0.
struct Pair {
  NDArray cpu, gpu;
};
Pair random_pair(Rng& rng, const Shape& shape, DType dt, Domain dom = Domain::Real) {
  NDArray c = random_values(rng, shape, dt, dom, cpu());
  return {c, c.to(kCuda)};
}
Pair empty_pair(const Shape& shape, DType dt) {
  return {NDArray::empty(shape, dt, cpu()), NDArray::empty(shape, dt, kCuda)};
}
Pair values_pair(const std::vector<double>& v, const Shape& shape, DType dt) {
  NDArray c = from_values(v, shape, dt, cpu());
  return {c, c.to(kCuda)};
}

void expect_pair_close(const Pair& p, Tolerance tol, const std::string& what) {
  expect_close(read_host(p.gpu), read_host(p.cpu), tol, what);
}

Tolerance fused_tol(DType dt) {
  switch (dt) {
    case DType::BFloat16:
      return {2e-2, 2e-2};
    case DType::Float32:
      return {2e-5, 1e-4};
    default:
      return {1e-10, 1e-10};
  }
}

}  // namespace

TEST_CASE("cuda op table: unary ops", "[cuda][ops]") { run_family("unary"); }
TEST_CASE("cuda op table: binary, comparison and logical ops", "[cuda][ops]") {
  run_family("binary");
}
TEST_CASE("cuda op table: where", "[cuda][ops]") { run_family("where"); }
TEST_CASE("cuda op table: copy and astype", "[cuda][ops]") { run_family("copy"); }
TEST_CASE("cuda op table: fill", "[cuda][ops]") { run_family("fill"); }
TEST_CASE("cuda op table: reductions", "[cuda][ops]") { run_family("reduce"); }
TEST_CASE("cuda op table: matmul", "[cuda][ops]") { run_family("matmul"); }
TEST_CASE("cuda op table: softmax, log_softmax, logsumexp", "[cuda][ops]") { run_family("rowops"); }
TEST_CASE("cuda op table: index_select, index_add, embedding", "[cuda][ops]") {
  run_family("indexing");
}
TEST_CASE("cuda op table: concatenate, stack, split", "[cuda][ops]") { run_family("join"); }
TEST_CASE("cuda op table: random streams match the CPU's", "[cuda][ops]") { run_family("random"); }

TEST_CASE("cuda layer_norm forward and backward match the CPU kernels", "[cuda][fused]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& cb = cpu_backend();
  const Backend& gb = cuda_backend();
  Rng rng(101);
  struct Dims {
    int64_t rows, d;
    bool offset;  // x and dy one element into their buffers (not aligned for vector access)
  };
  // d = 128 * C up to 1024 takes the warp-per-row kernels for float32 and bfloat16 (rows that do
  // not fill the last block, C = 1, 3, 4, 6, 8), the rest the row-per-block kernels (1152 = 128 * 9,
  // and the offset views).
  for (DType dt : {DType::Float32, DType::BFloat16, DType::Float64}) {
    for (Dims dims : {Dims{1, 1, false}, Dims{7, 5, false}, Dims{64, 768, false},
                      Dims{3, 2049, false}, Dims{1500, 96, false}, Dims{5000, 64, false},
                      Dims{4099, 512, false}, Dims{37, 1024, false}, Dims{300, 128, false},
                      Dims{9, 384, false}, Dims{10, 1152, false}, Dims{33, 512, true}}) {
      for (bool affine : {true, false}) {
        const int64_t rows = dims.rows, d = dims.d;
        INFO(dtype_name(dt) << " rows=" << rows << " d=" << d << " offset=" << dims.offset
                            << " affine=" << affine);
        auto input = [&] {
          if (!dims.offset) return random_pair(rng, {rows, d}, dt);
          Pair b = random_pair(rng, {rows * d + 1}, dt);
          return Pair{b.cpu.slice(0, 1, rows * d + 1).view({rows, d}),
                      b.gpu.slice(0, 1, rows * d + 1).view({rows, d})};
        };
        Pair x = input(), dy = input();
        Pair w = random_pair(rng, {d}, dt), b = random_pair(rng, {d}, dt);
        Pair y = empty_pair({rows, d}, dt), dx = empty_pair({rows, d}, dt);
        const DType st = stats_dtype(dt);
        Pair mean = empty_pair({rows}, st), rstd = empty_pair({rows}, st);
        Pair dw = empty_pair({d}, dt), db = empty_pair({d}, dt);
        for (int dev = 0; dev < 2; ++dev) {
          const Backend& be = dev ? gb : cb;
          auto pick = [&](Pair& p) { return (dev ? p.gpu : p.cpu).ref(); };
          ArrayRef wr = pick(w), br = pick(b), dwr = pick(dw), dbr = pick(db);
          be.layer_norm_forward(pick(x), affine ? &wr : nullptr, affine ? &br : nullptr, 1e-5, rows,
                                d, pick(y), pick(mean), pick(rstd));
          be.layer_norm_backward(pick(dy), pick(x), affine ? &wr : nullptr, pick(mean), pick(rstd),
                                 rows, d, pick(dx), &dwr, &dbr);
        }
        Tolerance t = fused_tol(dt);
        expect_pair_close(y, t, "y");
        expect_pair_close(mean, fused_tol(st), "mean");
        expect_pair_close(rstd, fused_tol(st), "rstd");
        expect_pair_close(dx, t, "dx");
        // Column sums over `rows` terms: the tolerance grows with the row count.
        Tolerance sum_t{t.atol * std::sqrt(double(rows)) * 4, t.rtol * 4};
        expect_pair_close(dw, sum_t, "dweight");
        expect_pair_close(db, sum_t, "dbias");
      }
    }
  }
  cuda_synchronize();
}

TEST_CASE("cuda rotary matches the CPU kernel to the bit on strided views", "[cuda][fused]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& cb = cpu_backend();
  const Backend& gb = cuda_backend();
  Rng rng(131);
  struct Dims {
    int64_t b, h, t, d, r, skew;  // skew: x starts this many elements into its projection row
  };
  for (DType dt : {DType::Float32, DType::BFloat16, DType::Float64}) {
    // 16-byte chunks (aligned, R a multiple of two chunks) and single elements (the rest).
    for (Dims dims : {Dims{1, 1, 1, 2, 2, 0}, Dims{3, 2, 7, 10, 6, 0}, Dims{2, 8, 130, 64, 16, 0},
                      Dims{2, 8, 130, 64, 16, 1}, Dims{1, 4, 33, 80, 20, 0},
                      Dims{2, 2, 9, 128, 128, 0}, Dims{1, 3, 17, 64, 32, 8}}) {
      INFO(dtype_name(dt) << " B=" << dims.b << " H=" << dims.h << " T=" << dims.t << " D="
                          << dims.d << " R=" << dims.r << " skew=" << dims.skew);
      // x: the (B, H, T, D) view of q in a (B, T, H, 3D + skew) projection, as GPT-NeoX slices it.
      const int64_t width = 3 * dims.d + dims.skew;
      Pair storage = random_pair(rng, {dims.b, dims.t, dims.h, width}, dt);
      Pair cos = random_pair(rng, {dims.t, dims.r}, dt), sin = random_pair(rng, {dims.t, dims.r}, dt);
      for (bool transpose : {false, true}) {
        INFO("transpose=" << transpose);
        Pair out = empty_pair({dims.b, dims.h, dims.t, dims.d}, dt);
        for (int dev = 0; dev < 2; ++dev) {
          const Backend& be = dev ? gb : cb;
          auto pick = [&](Pair& p) { return (dev ? p.gpu : p.cpu); };
          NDArray x = pick(storage).slice(3, dims.skew, dims.skew + dims.d).permute({0, 2, 1, 3});
          be.rotary(x.ref(), pick(cos).ref(), pick(sin).ref(), transpose, pick(out).ref());
        }
        expect_pair_close(out, Tolerance{0, 0}, "out");
      }
    }
  }
  cuda_synchronize();
}

TEST_CASE("cuda cross_entropy forward and backward match the CPU kernels", "[cuda][fused]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& cb = cpu_backend();
  const Backend& gb = cuda_backend();
  Rng rng(202);
  struct Dims {
    int64_t rows, classes;
  };
  for (DType dt : {DType::Float32, DType::BFloat16, DType::Float64}) {
    // 50304: rows staged in shared memory by cross_entropy_forward_grad (float32 and bfloat16);
    // 120000: chunked rows too long to stage; 7: rows read element by element.
    for (Dims dims : {Dims{1, 1}, Dims{9, 7}, Dims{33, 1000}, Dims{4, 50304}, Dims{2, 120000}}) {
      const int64_t rows = dims.rows, classes = dims.classes;
      const int64_t ignore = -100;
      INFO(dtype_name(dt) << " rows=" << rows << " classes=" << classes);
      std::vector<double> t(rows);
      for (int64_t r = 0; r < rows; ++r)
        t[r] = (r % 5 == 3) ? double(ignore) : double(rng() % classes);
      Pair logits = random_pair(rng, {rows, classes}, dt);
      Pair targets = values_pair(t, {rows}, DType::Int64);
      const DType st = stats_dtype(dt);
      Pair dloss = random_pair(rng, {rows}, st);
      Pair loss = empty_pair({rows}, st), lse = empty_pair({rows}, st);
      Pair dlogits = empty_pair({rows, classes}, dt);
      for (int dev = 0; dev < 2; ++dev) {
        const Backend& be = dev ? gb : cb;
        auto pick = [&](Pair& p) { return (dev ? p.gpu : p.cpu).ref(); };
        be.cross_entropy_forward(pick(logits), pick(targets), ignore, rows, classes, pick(loss),
                                 pick(lse));
        be.cross_entropy_backward(pick(logits), pick(targets), pick(lse), pick(dloss), ignore, rows,
                                  classes, pick(dlogits));
      }
      expect_pair_close(loss, fused_tol(st), "loss");
      expect_pair_close(lse, fused_tol(st), "lse");
      expect_pair_close(dlogits, fused_tol(dt), "dlogits");

      // cross_entropy_forward_grad: on each device, the forward's loss and lse and the backward's
      // gradient for dloss = 1 (written over a copy of the logits), bit for bit.
      Pair ones = {NDArray::ones({rows}, st, cpu()), NDArray::ones({rows}, st, kCuda)};
      for (int dev = 0; dev < 2; ++dev) {
        INFO((dev ? "cuda" : "cpu") << " forward_grad");
        const Backend& be = dev ? gb : cb;
        auto pick = [&](Pair& p) { return dev ? p.gpu : p.cpu; };
        NDArray fused = pick(logits).clone(),
                unit = NDArray::empty({rows, classes}, dt, pick(logits).device());
        NDArray floss = NDArray::empty({rows}, st, fused.device()),
                flse = NDArray::empty({rows}, st, fused.device());
        be.cross_entropy_forward_grad(fused.ref(), pick(targets).ref(), ignore, rows, classes,
                                      floss.ref(), flse.ref());
        be.cross_entropy_backward(pick(logits).ref(), pick(targets).ref(), pick(lse).ref(),
                                  pick(ones).ref(), ignore, rows, classes, unit.ref());
        CHECK(floss.to(cpu()).astype(DType::Float64).to_vector<double>() ==
              pick(loss).to(cpu()).astype(DType::Float64).to_vector<double>());
        CHECK(flse.to(cpu()).astype(DType::Float64).to_vector<double>() ==
              pick(lse).to(cpu()).astype(DType::Float64).to_vector<double>());
        CHECK(fused.to(cpu()).astype(DType::Float64).to_vector<double>() ==
              unit.to(cpu()).astype(DType::Float64).to_vector<double>());
      }
    }
  }
  cuda_synchronize();
}

TEST_CASE("cuda adamw matches the CPU kernel over a parameter list", "[cuda][fused]") {
  NEEDLE_REQUIRE_GPU();
  Rng rng(303);
  struct Types {
    DType param, grad, moments;
  };
  const std::vector<Types> types = {{DType::Float32, DType::Float32, DType::Float32},
                                    {DType::BFloat16, DType::BFloat16, DType::Float32},
                                    {DType::Float32, DType::BFloat16, DType::Float32},
                                    {DType::Float64, DType::Float64, DType::Float64}};
  // 90 parameters of mixed dtypes in one call: more than one launch's batch holds, sizes on both
  // sides of a block's chunk (4096) and of a vector (4), and views one element into their buffer
  // (not aligned for vector access).
  const std::vector<int64_t> sizes = {1, 3, 4, 5, 4095, 4096, 4097, 100003, 0, 513};
  std::vector<Pair> p, m, v;
  std::vector<Types> ty;
  for (int k = 0; k < 90; ++k) {
    const Types t = types[k % types.size()];
    const int64_t n = sizes[k % sizes.size()];
    const bool offset = k % 7 == 3;
    auto make = [&](DType dt, Domain dom) {
      Pair x = random_pair(rng, {n + (offset ? 1 : 0)}, dt, dom);
      if (offset) x = {x.cpu.slice(0, 1, n + 1), x.gpu.slice(0, 1, n + 1)};
      return x;
    };
    ty.push_back(t);
    p.push_back(make(t.param, Domain::Real));
    m.push_back(make(t.moments, Domain::Real));
    v.push_back(make(t.moments, Domain::Positive));
  }
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  for (int step = 1; step <= 3; ++step) {
    const double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    std::vector<Pair> g;
    std::vector<AdamWParam> on_cpu, on_gpu;
    for (size_t k = 0; k < p.size(); ++k) {
      g.push_back(random_pair(rng, p[k].cpu.shape(), ty[k].grad));
      const double lr = 1e-3 * (1 + k % 3), wd = 0.05 * (k % 4);
      on_cpu.push_back({p[k].cpu.ref(), g[k].cpu.ref(), m[k].cpu.ref(), v[k].cpu.ref(), lr, b1, b2,
                        eps, wd, bc1, bc2});
      on_gpu.push_back({p[k].gpu.ref(), g[k].gpu.ref(), m[k].gpu.ref(), v[k].gpu.ref(), lr, b1, b2,
                        eps, wd, bc1, bc2});
    }
    cpu_backend().adamw(on_cpu.data(), static_cast<int64_t>(on_cpu.size()));
    cuda_backend().adamw(on_gpu.data(), static_cast<int64_t>(on_gpu.size()));
  }
  for (size_t k = 0; k < p.size(); ++k) {
    INFO("parameter " << k << ": " << dtype_name(ty[k].param) << ", grad "
                      << dtype_name(ty[k].grad) << ", n " << p[k].cpu.numel());
    expect_pair_close(p[k], fused_tol(ty[k].param), "param");
    expect_pair_close(m[k], fused_tol(ty[k].moments), "exp_avg");
    expect_pair_close(v[k], fused_tol(ty[k].moments), "exp_avg_sq");
  }
  // A bad entry anywhere in the list is rejected before any launch.
  NDArray short_grad = NDArray::zeros({2}, DType::Float32, kCuda);
  std::vector<AdamWParam> list = {{p[0].gpu.ref(), p[0].gpu.ref(), m[0].gpu.ref(), v[0].gpu.ref(),
                                   1e-3, b1, b2, eps, 0.0, 0.1, 0.001},
                                  {p[1].gpu.ref(), short_grad.ref(), m[1].gpu.ref(),
                                   v[1].gpu.ref(), 1e-3, b1, b2, eps, 0.0, 0.1, 0.001}};
  const HostArray before = read_host(p[0].gpu);
  CHECK_THROWS_AS(cuda_backend().adamw(list.data(), 2), ValueError);
  CHECK(read_host(p[0].gpu).v == before.v);
}

TEST_CASE("cuda foreach_sum_squares and foreach_scale_to_max_norm match the CPU", "[cuda][fused]") {
  NEEDLE_REQUIRE_GPU();
  Rng rng(505);
  // 150 arrays of mixed dtypes (several launches), empty ones, and arrays longer than a block's
  // chunk (8192).
  const std::vector<DType> dtypes = {DType::Float32, DType::BFloat16, DType::Float64};
  const std::vector<int64_t> sizes = {1, 8191, 8192, 8193, 0, 100003, 7, 512};
  std::vector<Pair> xs;
  for (int k = 0; k < 150; ++k)
    xs.push_back(random_pair(rng, {sizes[k % sizes.size()]}, dtypes[k % dtypes.size()]));
  std::vector<ArrayRef> on_cpu, on_gpu;
  for (const Pair& x : xs) {
    on_cpu.push_back(x.cpu.ref());
    on_gpu.push_back(x.gpu.ref());
  }
  const int64_t n = static_cast<int64_t>(xs.size());
  NDArray cpu_sum = NDArray::empty({}, DType::Float64);
  NDArray gpu_sum = NDArray::empty({}, DType::Float64, kCuda);
  NDArray gpu_again = NDArray::empty({}, DType::Float64, kCuda);
  cpu_backend().foreach_sum_squares(on_cpu.data(), n, cpu_sum.ref());
  cuda_backend().foreach_sum_squares(on_gpu.data(), n, gpu_sum.ref());
  cuda_backend().foreach_sum_squares(on_gpu.data(), n, gpu_again.ref());
  const double expected = cpu_sum.item(), got = gpu_sum.item();
  CHECK(std::abs(got - expected) <= 1e-12 * expected);
  CHECK(gpu_again.item() == got);  // a fixed order: the same bits again
  NDArray empty_sum = NDArray::empty({}, DType::Float64, kCuda);
  cuda_backend().foreach_sum_squares(on_gpu.data(), 0, empty_sum.ref());
  CHECK(empty_sum.item() == 0.0);

  // The norm read on the device: a factor of 0.3712 scales every array as the CPU does; a factor
  // >= 1 and a NaN norm leave them untouched, bit for bit.
  for (double norm : {2.694, 0.5, std::nan("")}) {
    INFO("norm " << norm);
    const NDArray on_host = NDArray::scalar(norm, DType::Float64);
    const NDArray on_device = on_host.to(kCuda);
    cpu_backend().foreach_scale_to_max_norm(on_cpu.data(), n, on_host.ref(), 1.0);
    cuda_backend().foreach_scale_to_max_norm(on_gpu.data(), n, on_device.ref(), 1.0);
    for (size_t k = 0; k < xs.size(); ++k) {
      INFO("array " << k);
      expect_pair_close(xs[k], Tolerance{0, 0}, "scaled");
    }
  }

  NDArray ints = NDArray::zeros({4}, DType::Int32, kCuda);
  std::vector<ArrayRef> bad = {on_gpu[0], ints.ref()};
  const NDArray norm = NDArray::scalar(2.0, DType::Float64, kCuda);
  CHECK_THROWS_AS(cuda_backend().foreach_scale_to_max_norm(bad.data(), 2, norm.ref(), 1.0),
                  TypeError);
  NDArray wrong_out = NDArray::empty({2}, DType::Float64, kCuda);
  CHECK_THROWS_AS(cuda_backend().foreach_sum_squares(on_gpu.data(), 1, wrong_out.ref()),
                  ValueError);
  cuda_synchronize();
}

TEST_CASE("cuda softmax family on vocabulary-sized rows", "[cuda][rowops]") {
  NEEDLE_REQUIRE_GPU();
  Rng rng(404);
  for (DType dt : {DType::Float32, DType::BFloat16, DType::Float64}) {
    // Rows held in a warp's registers (40, 600, 1024), rows staged in one block's shared memory
    // (vectorised or not), rows over 64 KB split over a thread-block cluster of 2 to 8 blocks on
    // Hopper (50304, 50257 with its rows off 16-byte boundaries, 65537, 120000), rows too long
    // even for that (600000 float32 / float64: one block per row, read twice), and more rows than
    // warps or blocks, so each goes on to further rows.
    struct Rows {
      int64_t rows, cols;
    };
    for (Rows s : {Rows{5, 1}, Rows{5, 50304}, Rows{7, 50257}, Rows{5, 65537}, Rows{3, 120000},
                   Rows{2, 600000}, Rows{9000, 40}, Rows{9000, 37}, Rows{300, 600},
                   Rows{300, 1024}}) {
      const int64_t cols = s.cols;
      INFO(dtype_name(dt) << " rows=" << s.rows << " cols=" << cols);
      Pair x = random_pair(rng, {s.rows, cols}, dt);
      for (int which = 0; which < 3; ++which) {
        NDArray c = which == 0   ? softmax(x.cpu, -1)
                    : which == 1 ? log_softmax(x.cpu, -1)
                                 : logsumexp(x.cpu, -1);
        NDArray g = which == 0   ? softmax(x.gpu, -1)
                    : which == 1 ? log_softmax(x.gpu, -1)
                                 : logsumexp(x.gpu, -1);
        expect_close(read_host(g), read_host(c), fused_tol(dt), "row op " + std::to_string(which));
      }
    }
  }
}

TEST_CASE("cuda reductions: split paths, ties and NaN", "[cuda][reduce]") {
  NEEDLE_REQUIRE_GPU();
  Rng rng(505);
  // A full reduction of 3M values and a tall column sum both take the two-kernel split path;
  // 1 << 22 values and rows of 262144 are read in 16-byte vectors, split into pieces. The columns
  // of {20000, 264} are read a 16-byte vector per lane (whole tiles of 32 vectors and a last
  // tile of a few lanes), the rows split into pieces.
  for (Shape shape : {Shape{3000007}, Shape{1000003, 3}, Shape{2, 70001}, Shape{1 << 22},
                      Shape{3, 262144}, Shape{20000, 264}}) {
    for (DType dt : {DType::Float32, DType::Int32, DType::Float64}) {
      INFO(shape_tag(shape) << " " << dtype_name(dt));
      Pair x = random_pair(rng, shape, dt, Domain::Discrete);
      // {2, 70001} reduces its long rows (the block-per-row kernel), the others their dim 0.
      const int dim = shape.size() == 2 && shape[1] > shape[0] ? 1 : 0;
      const std::vector<int> dims = {dim};
      const double n = static_cast<double>(shape[dim]);
      Tolerance t = is_floating(dt) ? Tolerance{1e-6 * n, 1e-5} : Tolerance{0, 0};
      expect_close(read_host(sum(x.gpu, dims)), read_host(sum(x.cpu, dims)), t, "sum");
      expect_close(read_host(max(x.gpu, dims)), read_host(max(x.cpu, dims)), {0, 0}, "max");
      // Discrete values repeat, so argmax / argmin must pick the first of many ties.
      expect_close(read_host(argmax(x.gpu, dim)), read_host(argmax(x.cpu, dim)), {0, 0}, "argmax");
      expect_close(read_host(argmin(x.gpu, dim)), read_host(argmin(x.cpu, dim)), {0, 0}, "argmin");
    }
  }
  // NaN propagates through max and wins argmax at its first position.
  std::vector<double> v(10000, 1.0);
  v[7777] = NAN;
  v[9000] = NAN;
  v[5] = 2.0;
  Pair x = values_pair(v, {10000}, DType::Float32);
  CHECK(std::isnan(max(x.gpu).item()));
  CHECK(argmax(x.gpu).item() == 7777);
  CHECK(argmin(x.gpu).item() == 7777);
}

TEST_CASE("cuda elementwise: vectorised, misaligned and strided paths", "[cuda][elementwise]") {
  NEEDLE_REQUIRE_GPU();
  Rng rng(606);
  const int64_t n = 1 << 20;
  for (DType dt : {DType::Float32, DType::BFloat16, DType::Int64, DType::Bool}) {
    INFO(dtype_name(dt));
    Pair a = random_pair(rng, {n + 3}, dt), b = random_pair(rng, {n + 3}, dt);
    // Offset-1 slices are not 16-byte aligned: the contiguous kernel's scalar path.
    for (int64_t off : {int64_t(0), int64_t(1)}) {
      NDArray ac = a.cpu.slice(0, off, n + off), bc = b.cpu.slice(0, off, n + off);
      NDArray ag = a.gpu.slice(0, off, n + off), bg = b.gpu.slice(0, off, n + off);
      expect_close(read_host(eq(ag, bg)), read_host(eq(ac, bc)), {0, 0}, "eq");
      expect_close(read_host(ag.astype(DType::Float32)), read_host(ac.astype(DType::Float32)),
                   {0, 0}, "astype");
      if (dt != DType::Bool) {
        expect_close(read_host(add(ag, bg)), read_host(add(ac, bc)), tol_for(dt), "add");
        expect_close(read_host(mul(ag, Scalar(3))), read_host(mul(ac, Scalar(3))), tol_for(dt),
                     "mul scalar");
      }
    }
    // Every third element of a 2-D view: the N-D strided kernel.
    NDArray ac = a.cpu.slice(0, 0, 3 * 1000).view({1000, 3}).slice(1, 0, 2).transpose(0, 1);
    NDArray ag = a.gpu.slice(0, 0, 3 * 1000).view({1000, 3}).slice(1, 0, 2).transpose(0, 1);
    expect_close(read_host(ag.compact()), read_host(ac.compact()), {0, 0}, "strided copy");
  }
}

TEST_CASE("cuda float32 -> bfloat16 rounds as the CPU does, to the bit", "[cuda][elementwise]") {
  NEEDLE_REQUIRE_GPU();
  // The CPU's rounding is checked against an independent reference in test_ops_cpu.cpp.
  std::vector<uint32_t> bits = bfloat16_rounding_cases();
  const int64_t n = static_cast<int64_t>(bits.size());
  NDArray f = NDArray::from_host(bits.data(), {n}, DType::Float32, cpu());
  const std::vector<uint16_t> want = bfloat16_bits(f.astype(DType::BFloat16));
  const std::vector<uint16_t> got = bfloat16_bits(f.to(kCuda).astype(DType::BFloat16));
  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < n; ++i)
    if (got[i] != want[i] && mismatches++ == 0) first = i;
  const size_t at = first < 0 ? 0 : size_t(first);
  INFO(mismatches << " mismatches; the first: float32 bits 0x" << std::hex << bits[at]
                  << " -> cpu 0x" << want[at] << ", cuda 0x" << got[at]);
  CHECK(mismatches == 0);
}

TEST_CASE("cuda elementwise: views spanning 2^31 elements keep 64-bit offsets",
          "[cuda][elementwise]") {
  NEEDLE_REQUIRE_GPU();
  // Strided kernels index in 32 bits when every offset fits; two rows of 64 bools 2^31 elements
  // apart (a 2 GiB buffer) do not, so the copy into the view, the copy out of it and a unary op
  // on it must take the 64-bit path. Truncated offsets would wrap the second row.
  const int64_t row_stride = int64_t(1) << 31;
  NDArray buf = NDArray::zeros({row_stride + 64}, DType::Bool, kCuda);
  NDArray view = buf.as_strided({2, 64}, {row_stride, 1}, 0);
  Rng rng(808);
  Pair rows = random_pair(rng, {2, 64}, DType::Bool);
  view.assign(rows.gpu);
  expect_close(read_host(view.compact()), read_host(rows.cpu), {0, 0}, "copy out of the view");
  expect_close(read_host(logical_not(view)), read_host(logical_not(rows.cpu)), {0, 0},
               "logical_not of the view");
  // The elements next to the rows are untouched.
  NDArray zeros = NDArray::zeros({64}, DType::Bool);
  expect_close(read_host(buf.slice(0, 64, 128).compact()), read_host(zeros), {0, 0}, "after row 0");
  expect_close(read_host(buf.slice(0, row_stride - 64, row_stride).compact()), read_host(zeros),
               {0, 0}, "before row 1");
}

TEST_CASE("cuda gemm: beta, k = 0, broadcast batch, transposed operands and a bias", "[cuda][gemm]") {
  NEEDLE_REQUIRE_GPU();
  Rng rng(707);
  for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
    for (int64_t k : {int64_t(0), int64_t(1), int64_t(37)}) {
      for (int trans = 0; trans < 8; ++trans) {
        // With a bias: cuBLASLt's epilogue for bfloat16 and float32 (float64 adds it after).
        const bool ta = trans & 1, tb = trans & 2, with_bias = trans & 4;
        const int64_t batch = 3, m = 5, n = 4;
        INFO(dtype_name(dt) << " k=" << k << " trans_a=" << ta << " trans_b=" << tb
                            << " bias=" << with_bias);
        // A is shared by every batch (stride 0); B and C are per batch.
        Pair a = random_pair(rng, ta ? Shape{k, m} : Shape{m, k}, dt);
        Pair b = random_pair(rng, tb ? Shape{batch, n, k} : Shape{batch, k, n}, dt);
        Pair c = random_pair(rng, {batch, m, n}, dt);
        Pair bias = random_pair(rng, {n}, dt);
        for (int dev = 0; dev < 2; ++dev) {
          GemmArgs g;
          g.dtype = dt;
          g.trans_a = ta;
          g.trans_b = tb;
          g.m = m, g.n = n, g.k = k, g.batch = batch;
          g.a = (dev ? a.gpu : a.cpu).data_ptr();
          g.lda = ta ? m : k;
          g.stride_a = 0;
          g.b = (dev ? b.gpu : b.cpu).data_ptr();
          g.ldb = tb ? k : n;
          g.stride_b = n * k;
          g.c = (dev ? c.gpu : c.cpu).data_ptr();
          g.ldc = n;
          g.stride_c = m * n;
          g.alpha = 0.5;
          g.beta = 2.0;
          if (with_bias) g.bias = (dev ? bias.gpu : bias.cpu).data_ptr();
          (dev ? cuda_backend() : cpu_backend()).gemm(g);
        }
        Tolerance t = dt == DType::BFloat16  ? Tolerance{3e-2, 2e-2}
                      : dt == DType::Float32 ? Tolerance{1e-4, 1e-5}
                                             : Tolerance{1e-12, 1e-12};
        expect_pair_close(c, t, "C");
      }
    }
  }
}

TEST_CASE("cuda matmul with a bias: any alignment of any operand, as the CPU computes it",
          "[cuda][gemm]") {
  NEEDLE_REQUIRE_GPU();
  // Views that start 1..3 elements into their buffers (2-byte aligned for bfloat16), so cuBLASLt
  // must be told each operand's alignment, and a Linear layer's shapes: (B, T, in) @ (in, out)^T.
  Rng rng(717);
  for (DType dt : {DType::Float32, DType::BFloat16}) {
    for (int64_t shift : {int64_t(0), int64_t(1), int64_t(3)}) {
      INFO(dtype_name(dt) << " shift=" << shift);
      const int64_t B = 2, T = 37, in = 24, out = 40;
      Pair xs = random_pair(rng, {B * T * in + shift}, dt);
      Pair ws = random_pair(rng, {out * in + shift}, dt);
      Pair bs = random_pair(rng, {out + shift}, dt);
      NDArray got, want;
      for (int dev = 0; dev < 2; ++dev) {
        const NDArray& xb = dev ? xs.gpu : xs.cpu;
        const NDArray& wb = dev ? ws.gpu : ws.cpu;
        const NDArray& bb = dev ? bs.gpu : bs.cpu;
        NDArray x = xb.slice(0, shift, shift + B * T * in).reshape({B, T, in});
        NDArray w = wb.slice(0, shift, shift + out * in).reshape({out, in});
        NDArray b = bb.slice(0, shift, shift + out);
        (dev ? got : want) = matmul(x, w.transpose(0, 1), b);
      }
      Tolerance t = dt == DType::BFloat16 ? Tolerance{3e-2, 2e-2} : Tolerance{1e-4, 1e-5};
      expect_close(read_host(got), read_host(want), t, "x @ w^T + b");
    }
  }
}

TEST_CASE("cuda linear_param_grads: the BGRADB epilogue and its fallback against float64",
          "[cuda][gemm]") {
  NEEDLE_REQUIRE_GPU();
  // Views 0, 1 or 3 elements into their buffers: odd alignments may leave cuBLASLt without a
  // row-sum epilogue, and float64 always goes without, so both paths run.
  Rng rng(719);
  struct Case {
    DType in, out;
  };
  for (Case c : {Case{DType::BFloat16, DType::Float32}, Case{DType::BFloat16, DType::BFloat16},
                 Case{DType::Float32, DType::Float32}, Case{DType::Float64, DType::Float64}}) {
    for (const Shape& dims : {Shape{74, 40, 24}, Shape{2048, 256, 512}, Shape{33, 7, 5},
                              Shape{1, 1, 1}, Shape{0, 5, 3}, Shape{6, 0, 3}, Shape{6, 5, 0}}) {
      for (int64_t shift : {int64_t(0), int64_t(1), int64_t(3)}) {
        const int64_t rows = dims[0], out = dims[1], in = dims[2];
        INFO(dtype_name(c.in) << " -> " << dtype_name(c.out) << " rows=" << rows << " out=" << out
                              << " in=" << in << " shift=" << shift);
        Pair gs = random_pair(rng, {rows * out + shift}, c.in);
        Pair xs = random_pair(rng, {rows * in + shift}, c.in);
        NDArray g = gs.gpu.slice(0, shift, shift + rows * out).reshape({rows, out});
        NDArray x = xs.gpu.slice(0, shift, shift + rows * in).reshape({rows, in});
        NDArray db;
        NDArray dw = linear_param_grads(g, x, c.out, &db);
        REQUIRE(dw.dtype() == c.out);
        REQUIRE(db.dtype() == c.out);
        NDArray g64 =
            gs.cpu.slice(0, shift, shift + rows * out).reshape({rows, out}).astype(DType::Float64);
        NDArray x64 =
            xs.cpu.slice(0, shift, shift + rows * in).reshape({rows, in}).astype(DType::Float64);
        // float32 from bfloat16 operands: float32 accuracy, not bfloat16's (2^-9 relative).
        Tolerance t = c.out == DType::BFloat16  ? Tolerance{2e-2, 1e-2}
                      : c.out == DType::Float32 ? Tolerance{1e-3, 1e-5}
                                                : Tolerance{1e-10, 1e-12};
        expect_param_grads_close(dw, db, g64, x64, t);
        // Without the bias gradient cuBLAS may pick another algorithm: close, not equal.
        expect_close(read_host(linear_param_grads(g, x, c.out, nullptr)), read_host(dw), t,
                     "dw without db");
      }
    }
  }
}

TEST_CASE("cuda matmul precision: TF32 when 'high', full float32 by default", "[cuda][gemm]") {
  CHECK(get_matmul_precision() == "highest");
  CHECK_THROWS_AS(set_matmul_precision("fast"), ValueError);
  NEEDLE_REQUIRE_GPU();
  Rng rng(808);
  Pair a = random_pair(rng, {256, 512}, DType::Float32),
       b = random_pair(rng, {512, 128}, DType::Float32);
  HostArray ref = read_host(matmul(a.cpu, b.cpu));
  auto max_rel_err = [&](const NDArray& got) {
    HostArray h = read_host(got);
    double err = 0, mag = 0;
    for (int64_t i = 0; i < h.numel(); ++i) {
      err = std::max(err, std::abs(h.v[i] - ref.v[i]));
      mag = std::max(mag, std::abs(ref.v[i]));
    }
    return err / mag;
  };
  const double full = max_rel_err(matmul(a.gpu, b.gpu));
  set_matmul_precision("high");
  CHECK(get_matmul_precision() == "high");
  const double tf32 = max_rel_err(matmul(a.gpu, b.gpu));
  set_matmul_precision("highest");
  CHECK(full < 1e-5);
  // TF32 keeps 10 mantissa bits: visibly less exact than float32, still close.
  CHECK(tf32 < 5e-3);
  CHECK(tf32 > full);
}

TEST_CASE("cuda bad indices raise IndexError at the next synchronisation", "[cuda][errors]") {
  NEEDLE_REQUIRE_GPU();
  const Backend& gb = cuda_backend();
  NDArray in = NDArray::arange(0, 20, 1, DType::Float32, kCuda).view({4, 5});
  NDArray idx = NDArray::from_host(std::vector<int64_t>{1, 99, 2}.data(), {3}, DType::Int64, kCuda);
  NDArray out = NDArray::empty({4, 3}, DType::Float32, kCuda);
  gb.index_select(in.ref(), idx.ref(), 4, 5, 1, out.ref());
  try {
    cuda_synchronize();
    FAIL("expected IndexError");
  } catch (const IndexError& e) {
    std::string msg = e.what();
    CHECK(msg.find("99") != std::string::npos);
    CHECK(msg.find("[0, 5)") != std::string::npos);
  }
  // The flag is cleared and the context is intact: later work runs and syncs cleanly.
  CHECK_NOTHROW(cuda_synchronize());
  NDArray good = NDArray::from_host(std::vector<int64_t>{4, 0}.data(), {2}, DType::Int64, kCuda);
  NDArray sel = index_select(in, 1, good);
  CHECK(sel.to_vector<float>() == std::vector<float>{4, 0, 9, 5, 14, 10, 19, 15});

  // A bad target of cross_entropy, reported through copy_to_host this time.
  NDArray logits = NDArray::zeros({2, 3}, DType::Float32, kCuda);
  NDArray targets = NDArray::from_host(std::vector<int64_t>{0, 3}.data(), {2}, DType::Int64, kCuda);
  NDArray loss = NDArray::empty({2}, DType::Float32, kCuda),
          lse = NDArray::empty({2}, DType::Float32, kCuda);
  gb.cross_entropy_forward(logits.ref(), targets.ref(), -100, 2, 3, loss.ref(), lse.ref());
  CHECK_THROWS_AS(loss.to_vector<float>(), IndexError);
  CHECK_NOTHROW(cuda_synchronize());
  gb.cross_entropy_forward_grad(logits.ref(), targets.ref(), -100, 2, 3, loss.ref(), lse.ref());
  CHECK_THROWS_AS(loss.to_vector<float>(), IndexError);
  CHECK_NOTHROW(cuda_synchronize());

  // index_add reports too, and leaves the valid rows added.
  NDArray acc = NDArray::zeros({3}, DType::Float32, kCuda);
  NDArray src = NDArray::ones({2}, DType::Float32, kCuda);
  NDArray bad = NDArray::from_host(std::vector<int64_t>{-1, 2}.data(), {2}, DType::Int64, kCuda);
  gb.index_add(src.ref(), bad.ref(), 1, 3, 1, acc.ref());
  CHECK_THROWS_AS(cuda_synchronize(), IndexError);
  CHECK(acc.to_vector<float>() == std::vector<float>{0, 0, 1});
}
