// Block-sparse attention on the CPU: the layout (patterns, validation, densities, kernel arrays)
// and the kernels through the kernel table and the autograd op, each against a float64 dense
// masked reference written with plain loops here (scores, mask from the layout's block mask +
// causal + padding, softmax, output, and the analytic gradients), plus finite differences.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>

#include "autograd/functional.h"
#include "nn/block_sparse_attention.h"
#include "nn/block_sparse_layout.h"

using namespace needle;
using needle::nn::BlockSparseLayout;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::vector<double> randn(uint64_t seed, int64_t n) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> dist;
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

NDArray array_of(const std::vector<double>& v, const Shape& shape, DType dt) {
  return NDArray::from_host(v.data(), shape, DType::Float64).astype(dt);
}

struct Problem {
  int64_t B, H, Lq, Lk, D;
  std::vector<double> q, k, v, dout;
};

Problem make_problem(int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, uint64_t seed) {
  return {B,
          H,
          Lq,
          Lk,
          D,
          randn(seed, B * H * Lq * D),
          randn(seed + 1, B * H * Lk * D),
          randn(seed + 2, B * H * Lk * D),
          randn(seed + 3, B * H * Lq * D)};
}

struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};

// Dense attention in float64 over every (i, j) with the mask spelled out: key j is visible to
// query row i (absolute position q_offset + i) iff its block is kept in the layout head, j < Lk,
// and, for causal layouts, j <= q_offset + i.
Reference reference(const Problem& p, const BlockSparseLayout& layout, double scale,
                    int64_t q_offset = 0) {
  const std::vector<uint8_t> mask = layout.block_mask();
  const int64_t b = layout.block_size(), QB = layout.num_q_blocks(), KB = layout.num_k_blocks();
  Reference r;
  r.out.assign(p.q.size(), 0.0);
  r.dq.assign(p.q.size(), 0.0);
  r.dk.assign(p.k.size(), 0.0);
  r.dv.assign(p.v.size(), 0.0);
  r.lse.assign(static_cast<size_t>(p.B * p.H * p.Lq), -kInf);
  std::vector<double> s(static_cast<size_t>(p.Lk)), dp(s.size());
  for (int64_t bh = 0; bh < p.B * p.H; ++bh) {
    const int64_t lh = layout.heads() == 1 ? 0 : bh % p.H;
    const double* Q = &p.q[bh * p.Lq * p.D];
    const double* K = &p.k[bh * p.Lk * p.D];
    const double* V = &p.v[bh * p.Lk * p.D];
    const double* G = &p.dout[bh * p.Lq * p.D];
    for (int64_t i = 0; i < p.Lq; ++i) {
      const int64_t pos = q_offset + i;
      double mx = -kInf;
      for (int64_t j = 0; j < p.Lk; ++j) {
        const bool kept = mask[(lh * QB + pos / b) * KB + j / b] != 0;
        const bool visible = kept && (!layout.causal() || j <= pos);
        double dot = 0;
        for (int64_t c = 0; c < p.D; ++c) dot += Q[i * p.D + c] * K[j * p.D + c];
        s[j] = visible ? scale * dot : -kInf;
        mx = std::max(mx, s[j]);
      }
      if (mx == -kInf) continue;  // no visible key: out 0, lse -inf, no gradient
      double sum = 0;
      for (int64_t j = 0; j < p.Lk; ++j) sum += std::exp(s[j] - mx);
      const double lse = mx + std::log(sum);
      r.lse[bh * p.Lq + i] = lse;
      double dp_dot_p = 0;
      for (int64_t j = 0; j < p.Lk; ++j) {
        const double pj = std::exp(s[j] - lse);
        double d = 0;
        for (int64_t c = 0; c < p.D; ++c) {
          r.out[(bh * p.Lq + i) * p.D + c] += pj * V[j * p.D + c];
          d += G[i * p.D + c] * V[j * p.D + c];
        }
        dp[j] = d;
        dp_dot_p += pj * d;
      }
      for (int64_t j = 0; j < p.Lk; ++j) {
        const double pj = std::exp(s[j] - lse), ds = pj * (dp[j] - dp_dot_p);
        for (int64_t c = 0; c < p.D; ++c) {
          r.dv[(bh * p.Lk + j) * p.D + c] += pj * G[i * p.D + c];
          r.dq[(bh * p.Lq + i) * p.D + c] += scale * ds * K[j * p.D + c];
          r.dk[(bh * p.Lk + j) * p.D + c] += scale * ds * Q[i * p.D + c];
        }
      }
    }
  }
  return r;
}

void require_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                   const char* what) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    REQUIRE(!std::isnan(got[i]));
    if (std::isinf(want[i])) {
      INFO(what << "[" << i << "]: expected " << want[i] << ", got " << got[i]);
      REQUIRE(got[i] == want[i]);
      continue;
    }
    const double err = std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i]));
    if (err > worst) worst = err, at = i;
  }
  INFO(what << ": worst relative error " << worst << " at " << at << " (got " << got[at]
            << ", expected " << want[at] << ")");
  REQUIRE(worst <= tol);
}

double tolerance(DType dt) {
  return dt == DType::Float64 ? 1e-10 : dt == DType::Float32 ? 2e-5 : 3e-2;
}

// Runs forward and backward through the CPU kernel table and checks every output.
void check_kernels(const BlockSparseLayout& layout, const Problem& p, DType dt,
                   int64_t q_offset = 0, bool backward = true) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(p.D));
  // The reference sees the inputs as rounded to dt, so only the kernel's arithmetic differs.
  auto rounded = [&](const std::vector<double>& x) {
    return array_of(x, {static_cast<int64_t>(x.size())}, dt).to_vector<double>();
  };
  const Problem pr{p.B,          p.H,          p.Lq,         p.Lk,           p.D,
                   rounded(p.q), rounded(p.k), rounded(p.v), rounded(p.dout)};
  const Reference want = reference(pr, layout, scale, q_offset);
  const Backend& be = backend_for(cpu());
  NDArray q = array_of(p.q, {p.B, p.H, p.Lq, p.D}, dt);
  NDArray k = array_of(p.k, {p.B, p.H, p.Lk, p.D}, dt);
  NDArray v = array_of(p.v, {p.B, p.H, p.Lk, p.D}, dt);
  NDArray out = NDArray::empty(q.shape(), dt),
          lse = NDArray::empty({p.B, p.H, p.Lq}, stats_dtype(dt));
  const BlockLayoutRef ref = layout.ref(cpu(), p.Lq, p.Lk, q_offset);
  be.block_sparse_attention_forward(q.ref(), k.ref(), v.ref(), ref, scale, out.ref(), lse.ref());
  const double tol = tolerance(dt);
  require_close(out.to_vector<double>(), want.out, tol, "out");
  require_close(lse.to_vector<double>(), want.lse, tol, "lse");
  if (!backward) return;
  NDArray dout = array_of(p.dout, q.shape(), dt);
  NDArray dq = NDArray::empty(q.shape(), dt), dk = NDArray::empty(k.shape(), dt),
          dv = NDArray::empty(v.shape(), dt);
  be.block_sparse_attention_backward(q.ref(), k.ref(), v.ref(), out.ref(), lse.ref(), dout.ref(),
                                     ref, scale, dq.ref(), dk.ref(), dv.ref());
  // Gradients sum over up to Lk terms of rounded products: a looser bound for low precision.
  const double gtol = dt == DType::Float64 ? tol : 4 * tol;
  require_close(dq.to_vector<double>(), want.dq, gtol, "dq");
  require_close(dk.to_vector<double>(), want.dk, gtol, "dk");
  require_close(dv.to_vector<double>(), want.dv, gtol, "dv");
}

std::vector<BlockSparseLayout> all_patterns(int64_t L, int64_t b, bool causal) {
  return {
      BlockSparseLayout::dense(L, b, causal),       BlockSparseLayout::local(L, b, 1, causal),
      BlockSparseLayout::local(L, b, 0, causal),    BlockSparseLayout::global(L, b, 1, causal),
      BlockSparseLayout::strided(L, b, 3, causal),  BlockSparseLayout::mixed(L, b, 1, 1, 4, causal),
      BlockSparseLayout::random(L, b, 2, 7, causal)};
}

}  // namespace

TEST_CASE("block-sparse kernels match the dense reference for every pattern", "[block_sparse]") {
  for (bool causal : {true, false})
    for (int64_t b : {16, 32}) {
      // 150 is not a multiple of either block size: the last block is partial.
      const Problem p = make_problem(2, 2, 150, 150, 16, 11 + b);
      for (const BlockSparseLayout& layout : all_patterns(150, b, causal)) {
        INFO(layout.repr());
        check_kernels(layout, p, DType::Float64);
      }
    }
}

TEST_CASE("block-sparse kernels for every block size and dtype", "[block_sparse]") {
  for (int64_t b : {16, 32, 64, 128}) {
    const Problem p = make_problem(1, 2, 300, 300, 32, 100 + b);
    for (DType dt : {DType::Float64, DType::Float32}) {
      INFO("b=" << b << " dtype " << dtype_name(dt));
      check_kernels(BlockSparseLayout::mixed(300, b, 1, 1, 3, true), p, dt);
      check_kernels(BlockSparseLayout::local(300, b, 1, false), p, dt);
    }
  }
  const Problem p = make_problem(1, 2, 96, 96, 32, 5);
  check_kernels(BlockSparseLayout::local(96, 32, 1, true), p, DType::BFloat16);
}

TEST_CASE("rows that see no key give zeros, lse -inf and zero gradients", "[block_sparse]") {
  // 3 x 3 blocks of 16; query block 1 keeps nothing, key block 2 is read by nobody.
  const std::vector<uint8_t> mask = {1, 1, 0, 0, 0, 0, 1, 1, 0};
  for (bool causal : {false, true}) {
    const BlockSparseLayout layout =
        BlockSparseLayout::from_block_mask(mask, 1, 3, 3, 16, 40, 40, causal);
    const Problem p = make_problem(1, 2, 40, 40, 8, 3);
    check_kernels(layout, p, DType::Float64);
    check_kernels(layout, p, DType::Float32);
    const Reference r = reference(p, layout, 1.0 / std::sqrt(8.0));
    for (int64_t i = 16; i < 32; ++i) REQUIRE(r.lse[i] == -kInf);  // the reference agrees
    for (int64_t j = 32 * 8; j < 40 * 8; ++j) REQUIRE(r.dk[j] == 0.0);
  }
}

TEST_CASE("per-head layouts", "[block_sparse]") {
  const Problem p = make_problem(2, 3, 130, 130, 16, 21);
  check_kernels(BlockSparseLayout::random(130, 32, 1, 5, true, 3), p, DType::Float64);
  const BlockSparseLayout per_head = BlockSparseLayout::per_head(
      {BlockSparseLayout::local(130, 32, 0, false), BlockSparseLayout::global(130, 32, 1, false),
       BlockSparseLayout::strided(130, 32, 2, false)});
  REQUIRE(per_head.heads() == 3);
  check_kernels(per_head, p, DType::Float64);
  check_kernels(per_head, p, DType::Float32);
}

TEST_CASE("queries and keys of different lengths", "[block_sparse]") {
  // Non-causal cross attention: 70 queries, 200 keys.
  std::vector<uint8_t> mask(5 * 13);
  for (size_t i = 0; i < mask.size(); ++i) mask[i] = (i * 7 + 3) % 3 != 0;
  const BlockSparseLayout layout =
      BlockSparseLayout::from_block_mask(mask, 1, 5, 13, 16, 70, 200, false);
  check_kernels(layout, make_problem(1, 2, 70, 200, 16, 8), DType::Float64);
  // A layout covering more positions than the call uses: the arrays are cut to the call.
  const BlockSparseLayout big = BlockSparseLayout::mixed(256, 32, 1, 1, 3, true);
  check_kernels(big, make_problem(1, 1, 100, 100, 16, 9), DType::Float64);
}

TEST_CASE("q_offset decoding equals the last rows of the full computation", "[block_sparse]") {
  for (const BlockSparseLayout& layout : all_patterns(173, 32, true)) {
    INFO(layout.repr());
    const Problem full = make_problem(1, 2, 173, 173, 16, 31);
    const double scale = 0.25;
    const Reference want = reference(full, layout, scale);
    const Backend& be = backend_for(cpu());
    NDArray q = array_of(full.q, {1, 2, 173, 16}, DType::Float64);
    NDArray k = array_of(full.k, {1, 2, 173, 16}, DType::Float64);
    NDArray v = array_of(full.v, {1, 2, 173, 16}, DType::Float64);
    // The last query alone, then the last 40 (a chunk crossing block boundaries).
    for (int64_t n : {1, 40}) {
      NDArray qn = q.slice(2, 173 - n, 173).compact();
      NDArray out = NDArray::empty({1, 2, n, 16}, DType::Float64);
      NDArray lse = NDArray::empty({1, 2, n}, DType::Float64);
      be.block_sparse_attention_forward(qn.ref(), k.ref(), v.ref(),
                                        layout.ref(cpu(), n, 173, 173 - n), scale, out.ref(),
                                        lse.ref());
      const std::vector<double> got = out.to_vector<double>(), got_lse = lse.to_vector<double>();
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t i = 0; i < n; ++i) {
          const int64_t row = h * 173 + 173 - n + i;
          REQUIRE(std::abs(got_lse[h * n + i] - want.lse[row]) < 1e-10);
          for (int64_t c = 0; c < 16; ++c)
            REQUIRE(std::abs(got[(h * n + i) * 16 + c] - want.out[row * 16 + c]) < 1e-10);
        }
    }
    // Decoding against a KV cache shorter than the layout: keys 0..99, query at position 99.
    check_kernels(layout, make_problem(1, 2, 1, 100, 16, 33), DType::Float64, 99, false);
  }
}

TEST_CASE("block_sparse_attention autograd op", "[block_sparse]") {
  const BlockSparseLayout layout = BlockSparseLayout::mixed(70, 16, 1, 1, 3, true);
  const Problem p = make_problem(1, 2, 70, 70, 8, 41);
  const Reference want = reference(p, layout, 0.5);
  Tensor q(array_of(p.q, {1, 2, 70, 8}, DType::Float64), true);
  Tensor k(array_of(p.k, {1, 2, 70, 8}, DType::Float64), true);
  Tensor v(array_of(p.v, {1, 2, 70, 8}, DType::Float64), true);
  NDArray lse;
  Tensor out = nn::block_sparse_attention(q, k, v, layout, 0.5, std::nullopt, &lse);
  require_close(out.data().to_vector<double>(), want.out, 1e-10, "out");
  require_close(lse.to_vector<double>(), want.lse, 1e-10, "lse");
  // d(sum(out * dout)) / d(q, k, v) is the reference's gradient for that dout. dout requires a
  // gradient so that, with create_graph, the gradients are graph nodes of their own.
  Tensor dout(array_of(p.dout, {1, 2, 70, 8}, DType::Float64), true);
  sum(mul(out, dout)).backward(Tensor(), false, true);
  require_close(q.grad().data().to_vector<double>(), want.dq, 1e-10, "q.grad");
  require_close(k.grad().data().to_vector<double>(), want.dk, 1e-10, "k.grad");
  require_close(v.grad().data().to_vector<double>(), want.dv, 1e-10, "v.grad");
  REQUIRE_THROWS_WITH(sum(q.grad()).backward(), Catch::Contains("double backward not supported"));

  // Non-compact inputs (a transposed view, as MultiHeadAttention makes) and the default scale.
  Tensor qt(array_of(p.q, {1, 70, 2, 8}, DType::Float64));
  Tensor o2 = nn::block_sparse_attention(transpose(qt, 1, 2), k, v, layout);
  REQUIRE(o2.shape() == Shape{1, 2, 70, 8});

  // Decoding output needs no gradient; asking for one is a clear error.
  Tensor last = nn::block_sparse_attention(Tensor(q.data().slice(2, 69, 70), true), k.detach(),
                                           v.detach(), layout, 0.5);
  REQUIRE_THROWS_WITH(sum(last).backward(), Catch::Contains("q_offset 0"));
}

TEST_CASE("block_sparse_attention gradients match finite differences", "[block_sparse]") {
  const BlockSparseLayout layout = BlockSparseLayout::strided(40, 16, 2, true);
  const Problem p = make_problem(1, 1, 40, 40, 4, 51);
  NDArray w = array_of(p.dout, {1, 1, 40, 4}, DType::Float64);
  auto loss_of = [&](const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v) {
    Tensor out =
        nn::block_sparse_attention(Tensor(array_of(q, {1, 1, 40, 4}, DType::Float64)),
                                   Tensor(array_of(k, {1, 1, 40, 4}, DType::Float64)),
                                   Tensor(array_of(v, {1, 1, 40, 4}, DType::Float64)), layout);
    return sum(mul(out, Tensor(w))).data().item();
  };
  Tensor q(array_of(p.q, {1, 1, 40, 4}, DType::Float64), true);
  Tensor k(array_of(p.k, {1, 1, 40, 4}, DType::Float64), true);
  Tensor v(array_of(p.v, {1, 1, 40, 4}, DType::Float64), true);
  sum(mul(nn::block_sparse_attention(q, k, v, layout), Tensor(w))).backward();
  const std::vector<double> grads[3] = {q.grad().data().to_vector<double>(),
                                        k.grad().data().to_vector<double>(),
                                        v.grad().data().to_vector<double>()};
  for (int which = 0; which < 3; ++which)
    for (size_t i = 0; i < 160; i += 7) {
      std::vector<double> x[3] = {p.q, p.k, p.v};
      const double h = 1e-6;
      x[which][i] += h;
      const double up = loss_of(x[0], x[1], x[2]);
      x[which][i] -= 2 * h;
      const double down = loss_of(x[0], x[1], x[2]);
      INFO("input " << which << " element " << i);
      REQUIRE(std::abs((up - down) / (2 * h) - grads[which][i]) < 1e-7);
    }
}

TEST_CASE("pattern definitions and densities", "[block_sparse][layout]") {
  // L = 2048, b = 64: 32 x 32 blocks, 528 in the causal lower triangle.
  const int64_t n = 32;
  auto count = [&](auto keep, bool causal) {
    int64_t c = 0;
    for (int64_t qb = 0; qb < n; ++qb)
      for (int64_t kb = 0; kb <= (causal ? qb : n - 1); ++kb) c += keep(qb, kb);
    return c;
  };
  REQUIRE(BlockSparseLayout::dense(2048).density() == 1.0);
  REQUIRE(BlockSparseLayout::dense(2048, 64, false).density() == 1.0);
  REQUIRE(BlockSparseLayout::local(2048).num_blocks() == 32 + 31);
  REQUIRE(BlockSparseLayout::local(2048).density() == Approx(63.0 / 528));
  REQUIRE(BlockSparseLayout::local(2048, 64, 1, false).density() == Approx(94.0 / 1024));
  REQUIRE(BlockSparseLayout::global(2048).num_blocks() == 32 + 31);  // column 0 + the diagonal
  REQUIRE(BlockSparseLayout::global(2048, 64, 2, false).num_blocks() ==
          count([](int64_t q, int64_t k) { return q < 2 || k < 2 || q == k; }, false));
  REQUIRE(BlockSparseLayout::strided(2048, 64, 4).num_blocks() ==
          count([](int64_t q, int64_t k) { return (q - k) % 4 == 0; }, true));
  // mixed's defaults are window 3, 1 global block, stride 4; window 1 was the default until
  // issue #9 and still gives the narrower band when asked for.
  const int64_t mixed_causal =
      count([](int64_t q, int64_t k) { return q - k <= 3 || k < 1 || (q - k) % 4 == 0; }, true);
  REQUIRE(BlockSparseLayout::mixed(2048).num_blocks() == mixed_causal);
  REQUIRE(mixed_causal == 255);  // the figure docs/block_sparse.md quotes
  REQUIRE(BlockSparseLayout::mixed(2048).density() == Approx(255.0 / 528));
  REQUIRE(BlockSparseLayout::mixed(2048, 64, 3, 1, 4, false).num_blocks() ==
          count(
              [](int64_t q, int64_t k) {
                return std::abs(q - k) <= 3 || q < 1 || k < 1 || std::abs(q - k) % 4 == 0;
              },
              false));
  REQUIRE(
      BlockSparseLayout::mixed(2048, 64, 1, 1, 4).num_blocks() ==
      count([](int64_t q, int64_t k) { return q - k <= 1 || k < 1 || (q - k) % 4 == 0; }, true));
  // random: the diagonal plus min(3, qb) earlier blocks per row.
  int64_t want_random = 0;
  for (int64_t qb = 0; qb < n; ++qb) want_random += 1 + std::min<int64_t>(3, qb);
  const BlockSparseLayout r = BlockSparseLayout::random(2048, 64, 3, 1);
  REQUIRE(r.num_blocks() == want_random);
  REQUIRE(r.block_mask() == BlockSparseLayout::random(2048, 64, 3, 1).block_mask());
  REQUIRE(r.block_mask() != BlockSparseLayout::random(2048, 64, 3, 2).block_mask());
  // The last block of a length that b does not divide is still a block.
  REQUIRE(BlockSparseLayout::dense(100, 64, false).num_q_blocks() == 2);
}

TEST_CASE("invalid layouts are clear errors", "[block_sparse][layout]") {
  using Catch::Contains;
  REQUIRE_THROWS_WITH(BlockSparseLayout::local(128, 48), Contains("{16, 32, 64, 128}, got 48"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::local(0, 64), Contains("positive sequence lengths"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::strided(128, 32, 0), Contains("stride >= 1, got 0"));
  // 64 positions in blocks of 32: 2 query blocks, row_ptr of 3.
  REQUIRE_THROWS_WITH(BlockSparseLayout::from_csr({0, 1}, {0}, 32, 64, 64, false),
                      Contains("row_ptr of length 3"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::from_csr({0, 2, 3}, {1, 0, 1}, 32, 64, 64, false),
                      Contains("strictly increasing col_idx"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::from_csr({0, 2, 3}, {0, 0, 1}, 32, 64, 64, false),
                      Contains("strictly increasing col_idx"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::from_csr({0, 1, 2}, {0, 2}, 32, 64, 64, false),
                      Contains("col_idx in [0, 2)"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::from_csr({0, 2, 1}, {0, 1}, 32, 64, 64, false),
                      Contains("non-decreasing row_ptr"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::from_csr({0, 1, 1}, {0, 1}, 32, 64, 64, false),
                      Contains("len(col_idx) = 2"));
  REQUIRE_THROWS_WITH(
      BlockSparseLayout::from_block_mask(std::vector<uint8_t>(4, 1), 1, 2, 2, 32, 100, 100, true),
      Contains("shape (4, 4)"));
  REQUIRE_THROWS_WITH(BlockSparseLayout::per_head(
                          {BlockSparseLayout::local(64, 32), BlockSparseLayout::local(96, 32)}),
                      Contains("q_len 96"));
  // A call longer than the layout, and a layout with the wrong number of heads.
  const BlockSparseLayout layout = BlockSparseLayout::local(64, 32);
  REQUIRE_THROWS_WITH(layout.ref(cpu(), 65, 65), Contains("covers 64 query"));
  Tensor x(NDArray::zeros({1, 2, 64, 8}));
  REQUIRE_THROWS_WITH(
      nn::block_sparse_attention(x, x, x, BlockSparseLayout::random(64, 32, 1, 0, true, 3)),
      Contains("1 or 2 heads"));
  REQUIRE_THROWS_WITH(
      nn::block_sparse_attention(x, Tensor(NDArray::zeros({1, 2, 64, 4})), x, layout),
      Contains("expected k and v of shape"));
}

TEST_CASE("kernel arrays are cached per device and geometry", "[block_sparse][layout]") {
  const BlockSparseLayout layout = BlockSparseLayout::mixed(256, 32);
  const BlockLayoutRef a = layout.ref(cpu(), 256, 256), b = layout.ref(cpu(), 256, 256);
  REQUIRE(a.row_ptr == b.row_ptr);
  REQUIRE(a.col_idx == b.col_idx);
  // Decoding within one block reuses the arrays: same block counts, same padding.
  const BlockLayoutRef c = layout.ref(cpu(), 1, 200, 199), d = layout.ref(cpu(), 1, 201, 200);
  REQUIRE(c.row_ptr == d.row_ptr);
  REQUIRE(c.num_q_blocks == 7);
  // The transposed CSR lists the same blocks as the row CSR, with the same flags.
  int64_t nnz = a.row_ptr[a.num_q_blocks];
  REQUIRE(a.col_ptr[a.num_k_blocks] == nnz);
  for (int32_t qb = 0; qb < a.num_q_blocks; ++qb)
    for (int32_t e = a.row_ptr[qb]; e < a.row_ptr[qb + 1]; ++e) {
      const int32_t kb = a.col_idx[e];
      bool found = false;
      for (int32_t t = a.col_ptr[kb]; t < a.col_ptr[kb + 1]; ++t)
        if (a.row_idx[t] == qb) found = a.t_block_flags[t] == a.block_flags[e];
      REQUIRE(found);
      REQUIRE(a.block_flags[e] == (kb == qb ? 1 : 0));  // 256 = 8 full blocks: only the diagonal
    }
}

// The CUDA kernels' work orders, recomputed here from the block mask: every (head, 64-position
// tile) pair once, in nonincreasing order of kept (position, position) pairs.
TEST_CASE("work orders list every tile once, heaviest first", "[block_sparse][layout]") {
  struct Case {
    BlockSparseLayout layout;
    int64_t lq, lk;
  };
  const std::vector<Case> cases = {
      {BlockSparseLayout::dense(300, 128), 300, 300},
      {BlockSparseLayout::mixed(256, 16), 256, 256},
      {BlockSparseLayout::global(320, 32, 1, false), 320, 320},
      {BlockSparseLayout::random(200, 32, 2, 7, true, 3), 200, 200},
  };
  for (const Case& c : cases) {
    const BlockSparseLayout& layout = c.layout;
    const BlockLayoutRef ref = layout.ref(cpu(), c.lq, c.lk);
    const int64_t b = layout.block_size(), heads = layout.heads();
    const int64_t qb = layout.num_q_blocks(), kb = layout.num_k_blocks();
    const std::vector<uint8_t> mask = layout.block_mask();  // (heads, QB, KB)
    for (bool keys : {false, true}) {
      const int64_t len = keys ? c.lk : c.lq, tiles = (len + 63) / 64;
      const int32_t* order = keys ? ref.k_order : ref.q_order;
      std::vector<int64_t> work(static_cast<size_t>(heads * tiles), 0);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < qb; ++i)
          for (int64_t j = 0; j < kb; ++j) {
            if (!mask[static_cast<size_t>((h * qb + i) * kb + j)]) continue;
            const int64_t blk = keys ? j : i;  // the side being ordered
            for (int64_t p = blk * b; p < (blk + 1) * b && p < tiles * 64; ++p)
              work[static_cast<size_t>(h * tiles + p / 64)] += b;
          }
      std::vector<int> seen(work.size(), 0);
      for (size_t i = 0; i < work.size(); ++i) {
        INFO(layout.name() << (keys ? " keys" : " queries") << " position " << i);
        REQUIRE(order[i] >= 0);
        REQUIRE(order[i] < static_cast<int32_t>(work.size()));
        ++seen[static_cast<size_t>(order[i])];
        if (i > 0)
          REQUIRE(work[static_cast<size_t>(order[i - 1])] >= work[static_cast<size_t>(order[i])]);
      }
      for (int s : seen) REQUIRE(s == 1);
    }
  }
  // Causal dense: the later query tiles first, the earlier key tiles first.
  const BlockSparseLayout dense = BlockSparseLayout::dense(256, 64);  // owns the arrays
  const BlockLayoutRef d = dense.ref(cpu(), 256, 256);
  REQUIRE(std::vector<int32_t>(d.q_order, d.q_order + 4) == std::vector<int32_t>{3, 2, 1, 0});
  REQUIRE(std::vector<int32_t>(d.k_order, d.k_order + 4) == std::vector<int32_t>{0, 1, 2, 3});
  // Decoding (q_offset > 0) has no query order.
  REQUIRE(dense.ref(cpu(), 1, 200, 199).q_order == nullptr);
}
