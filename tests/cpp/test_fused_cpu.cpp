// The fused CPU kernels (layer_norm, cross_entropy, adamw, the foreach ops) called through the
// kernel table, each against its float64 formula written out here; the layer_norm backward also
// against finite differences of the forward kernel.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "backend_cpu/cpu_backend.h"
#include "op_table.h"

using namespace needle;
using namespace needle::optest;

namespace {

NDArray random_array(uint64_t seed, const Shape& shape, DType dt, Domain dom = Domain::Real) {
  Rng rng(seed);
  return random_values(rng, shape, dt, dom, cpu());
}

Tolerance fused_tol(DType dt) {
  switch (dt) {
    case DType::BFloat16:
      return {2e-2, 2e-2};
    case DType::Float32:
      return {2e-5, 2e-5};
    default:
      return {1e-10, 1e-10};
  }
}

struct LayerNormRef {
  std::vector<double> y, mean, rstd, dx, dweight, dbias;
};

// x (R, D), weight / bias (D) or empty, dy (R, D).
LayerNormRef layer_norm_reference(const std::vector<double>& x, const std::vector<double>& w,
                                  const std::vector<double>& b, const std::vector<double>& dy,
                                  int64_t rows, int64_t d, double eps) {
  LayerNormRef r;
  r.dweight.assign(d, 0.0);
  r.dbias.assign(d, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < d; ++j) mu += x[i * d + j];
    mu /= d;
    for (int64_t j = 0; j < d; ++j) var += (x[i * d + j] - mu) * (x[i * d + j] - mu);
    var /= d;
    const double rs = 1.0 / std::sqrt(var + eps);
    r.mean.push_back(mu);
    r.rstd.push_back(rs);
    double sum_g = 0, sum_gx = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double xhat = (x[i * d + j] - mu) * rs;
      const double wj = w.empty() ? 1.0 : w[j];
      r.y.push_back(xhat * wj + (b.empty() ? 0.0 : b[j]));
      sum_g += dy[i * d + j] * wj;
      sum_gx += dy[i * d + j] * wj * xhat;
      r.dweight[j] += dy[i * d + j] * xhat;
      r.dbias[j] += dy[i * d + j];
    }
    for (int64_t j = 0; j < d; ++j) {
      const double xhat = (x[i * d + j] - mu) * rs;
      const double g = dy[i * d + j] * (w.empty() ? 1.0 : w[j]);
      r.dx.push_back(rs * (g - sum_g / d - xhat * sum_gx / d));
    }
  }
  return r;
}

void expect_values(const NDArray& actual, const std::vector<double>& expected, Tolerance tol,
                   const std::string& what) {
  HostArray e{actual.shape(), actual.dtype(), expected, {}};
  expect_close(read_host(actual), e, tol, what);
}

}  // namespace

TEST_CASE("layer_norm forward and backward match the float64 formulas", "[fused][cpu]") {
  const Backend& b = cpu_backend();
  uint64_t seed = 1;
  for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
    for (auto [rows, d] : {std::pair<int64_t, int64_t>{5, 7}, {1, 1}, {300, 129}, {0, 4}}) {
      for (bool affine : {true, false}) {
        INFO(dtype_name(dt) << " rows=" << rows << " d=" << d << " affine=" << affine);
        const double eps = 1e-5;
        NDArray x = random_array(++seed, {rows, d}, dt);
        NDArray w = random_array(++seed, {d}, dt), bias = random_array(++seed, {d}, dt);
        NDArray dy = random_array(++seed, {rows, d}, dt);
        NDArray y = NDArray::empty({rows, d}, dt), mean = NDArray::empty({rows}, stats_dtype(dt)),
                rstd = NDArray::empty({rows}, stats_dtype(dt));
        ArrayRef wr = w.ref(), br = bias.ref();
        b.layer_norm_forward(x.ref(), affine ? &wr : nullptr, affine ? &br : nullptr, eps, rows, d,
                             y.ref(), mean.ref(), rstd.ref());
        NDArray dx = NDArray::empty({rows, d}, dt), dw = NDArray::empty({d}, dt),
                db = NDArray::empty({d}, dt);
        ArrayRef dwr = dw.ref(), dbr = db.ref();
        b.layer_norm_backward(dy.ref(), x.ref(), affine ? &wr : nullptr, mean.ref(), rstd.ref(),
                              rows, d, dx.ref(), &dwr, &dbr);
        LayerNormRef ref = layer_norm_reference(
            read_host(x).v, affine ? read_host(w).v : std::vector<double>{},
            affine ? read_host(bias).v : std::vector<double>{}, read_host(dy).v, rows, d, eps);
        Tolerance t = fused_tol(dt);
        // mean and rstd are float32, or float64 for float64 inputs (stats_dtype).
        Tolerance ts = dt == DType::Float64 ? t : Tolerance{1e-6, 1e-6};
        expect_values(mean, ref.mean, ts, "mean");
        expect_values(rstd, ref.rstd, ts, "rstd");
        expect_values(y, ref.y, t, "y");
        Tolerance tg = t;
        expect_values(dx, ref.dx, tg, "dx");
        expect_values(dw, ref.dweight, {tg.atol * std::max<int64_t>(rows, 1), tg.rtol}, "dweight");
        expect_values(db, ref.dbias, {tg.atol * std::max<int64_t>(rows, 1), tg.rtol}, "dbias");
      }
    }
  }
}

TEST_CASE("layer_norm backward agrees with finite differences of the forward", "[fused][cpu]") {
  const Backend& b = cpu_backend();
  const int64_t rows = 3, d = 6;
  const double eps = 1e-5, h = 1e-6;
  NDArray x = random_array(11, {rows, d}, DType::Float64);
  NDArray w = random_array(12, {d}, DType::Float64), bias = random_array(13, {d}, DType::Float64);
  NDArray dy = random_array(14, {rows, d}, DType::Float64);
  ArrayRef wr = w.ref(), br = bias.ref();
  // L(x) = sum(y(x) * dy): dL/dx is what the backward computes.
  auto loss = [&](const NDArray& xv) {
    NDArray y = NDArray::empty({rows, d}, DType::Float64),
            m = NDArray::empty({rows}, DType::Float64), r = NDArray::empty({rows}, DType::Float64);
    b.layer_norm_forward(xv.ref(), &wr, &br, eps, rows, d, y.ref(), m.ref(), r.ref());
    std::vector<double> yv = read_host(y).v, g = read_host(dy).v;
    double l = 0;
    for (size_t i = 0; i < yv.size(); ++i) l += yv[i] * g[i];
    return l;
  };
  NDArray y = NDArray::empty({rows, d}, DType::Float64),
          mean = NDArray::empty({rows}, DType::Float64),
          rstd = NDArray::empty({rows}, DType::Float64);
  b.layer_norm_forward(x.ref(), &wr, &br, eps, rows, d, y.ref(), mean.ref(), rstd.ref());
  NDArray dx = NDArray::empty({rows, d}, DType::Float64);
  b.layer_norm_backward(dy.ref(), x.ref(), &wr, mean.ref(), rstd.ref(), rows, d, dx.ref(), nullptr,
                        nullptr);
  std::vector<double> analytic = read_host(dx).v, xv = read_host(x).v;
  for (int64_t i = 0; i < rows * d; ++i) {
    std::vector<double> plus = xv, minus = xv;
    plus[i] += h;
    minus[i] -= h;
    const double numeric = (loss(from_values(plus, {rows, d}, DType::Float64, cpu())) -
                            loss(from_values(minus, {rows, d}, DType::Float64, cpu()))) /
                           (2 * h);
    INFO("element " << i);
    // Central differences with h = 1e-6 are accurate to about 1e-8 here.
    CHECK(std::abs(analytic[i] - numeric) <= 1e-6 * (1 + std::abs(numeric)));
  }
}

TEST_CASE("cross_entropy forward and backward match the float64 formulas", "[fused][cpu]") {
  const Backend& b = cpu_backend();
  const int64_t ignore = -100;
  uint64_t seed = 100;
  for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
    for (auto [rows, classes] : {std::pair<int64_t, int64_t>{6, 5}, {257, 300}, {1, 1}}) {
      INFO(dtype_name(dt) << " rows=" << rows << " classes=" << classes);
      NDArray logits = random_array(++seed, {rows, classes}, dt);
      Rng rng(++seed);
      std::vector<double> t(rows);
      for (int64_t r = 0; r < rows; ++r)
        t[r] = (r % 4 == 1) ? static_cast<double>(ignore) : static_cast<double>(rng() % classes);
      NDArray targets = from_values(t, {rows}, DType::Int64, cpu());
      NDArray loss = NDArray::empty({rows}, stats_dtype(dt)),
              lse = NDArray::empty({rows}, stats_dtype(dt));
      b.cross_entropy_forward(logits.ref(), targets.ref(), ignore, rows, classes, loss.ref(),
                              lse.ref());
      NDArray dloss = random_array(++seed, {rows}, stats_dtype(dt), Domain::Positive);
      NDArray dlogits = NDArray::empty({rows, classes}, dt);
      b.cross_entropy_backward(logits.ref(), targets.ref(), lse.ref(), dloss.ref(), ignore, rows,
                               classes, dlogits.ref());

      std::vector<double> x = read_host(logits).v, g = read_host(dloss).v;
      std::vector<double> ref_loss, ref_lse, ref_grad;
      for (int64_t r = 0; r < rows; ++r) {
        double m = -std::numeric_limits<double>::infinity(), s = 0;
        for (int64_t c = 0; c < classes; ++c) m = std::max(m, x[r * classes + c]);
        for (int64_t c = 0; c < classes; ++c) s += std::exp(x[r * classes + c] - m);
        const double l = m + std::log(s);
        const bool ignored = t[r] == ignore;
        ref_lse.push_back(l);
        ref_loss.push_back(ignored ? 0.0 : l - x[r * classes + static_cast<int64_t>(t[r])]);
        for (int64_t c = 0; c < classes; ++c) {
          const double p = std::exp(x[r * classes + c] - l);
          ref_grad.push_back(ignored ? 0.0 : g[r] * (p - (c == t[r] ? 1.0 : 0.0)));
        }
      }
      Tolerance ts = dt == DType::Float64 ? fused_tol(dt) : Tolerance{1e-5, 1e-5};
      expect_values(loss, ref_loss, ts, "loss");
      expect_values(lse, ref_lse, ts, "lse");
      Tolerance tg = dt == DType::Float32 ? Tolerance{2e-6, 1e-5} : fused_tol(dt);
      expect_values(dlogits, ref_grad, tg, "dlogits");

      // cross_entropy_forward_grad: the forward's loss and lse, and the backward's gradient for
      // dloss = 1 written over a copy of the logits, bit for bit.
      NDArray fused = logits.clone(), unit = NDArray::empty({rows, classes}, dt);
      NDArray floss = NDArray::empty({rows}, stats_dtype(dt)),
              flse = NDArray::empty({rows}, stats_dtype(dt));
      b.cross_entropy_forward_grad(fused.ref(), targets.ref(), ignore, rows, classes, floss.ref(),
                                   flse.ref());
      NDArray ones = NDArray::ones({rows}, stats_dtype(dt));
      b.cross_entropy_backward(logits.ref(), targets.ref(), lse.ref(), ones.ref(), ignore, rows,
                               classes, unit.ref());
      CHECK(read_host(floss).v == read_host(loss).v);
      CHECK(read_host(flse).v == read_host(lse).v);
      CHECK(read_host(fused).v == read_host(unit).v);
    }
  }
}

TEST_CASE("cross_entropy rejects out-of-range targets naming row, target and classes",
          "[fused][cpu]") {
  const Backend& b = cpu_backend();
  NDArray logits = NDArray::zeros({3, 4});
  NDArray targets = from_values({0, 4, 1}, {3}, DType::Int64, cpu());
  NDArray loss = NDArray::empty({3}), lse = NDArray::empty({3});
  try {
    b.cross_entropy_forward(logits.ref(), targets.ref(), -100, 3, 4, loss.ref(), lse.ref());
    FAIL("expected IndexError");
  } catch (const IndexError& e) {
    CHECK_THAT(e.what(), Catch::Contains("target 4") && Catch::Contains("row 1") &&
                             Catch::Contains("4 classes"));
  }
  NDArray negative = from_values({0, -1, 1}, {3}, DType::Int64, cpu());
  NDArray dlogits = NDArray::empty({3, 4});
  CHECK_THROWS_AS(b.cross_entropy_backward(logits.ref(), negative.ref(), lse.ref(), loss.ref(),
                                           -100, 3, 4, dlogits.ref()),
                  IndexError);
  CHECK_THROWS_AS(
      b.cross_entropy_forward_grad(logits.ref(), targets.ref(), -100, 3, 4, loss.ref(), lse.ref()),
      IndexError);
}

TEST_CASE("adamw steps match torch.optim.AdamW's update written in float64", "[fused][cpu]") {
  const Backend& b = cpu_backend();
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  for (DType dt : {DType::Float32, DType::Float64}) {
    INFO(dtype_name(dt));
    // One call updates every parameter of the list, each with its own lr and weight decay.
    const std::vector<int64_t> sizes = {1, 37, 100003};
    std::vector<NDArray> p, m, v;
    std::vector<std::vector<double>> rp, rm, rv;
    for (size_t k = 0; k < sizes.size(); ++k) {
      const int64_t n = sizes[k];
      p.push_back(random_array(200 + n, {n}, dt));
      m.push_back(NDArray::zeros({n}, dt));
      v.push_back(NDArray::zeros({n}, dt));
      rp.push_back(read_host(p[k]).v);
      rm.emplace_back(n, 0.0);
      rv.emplace_back(n, 0.0);
    }
    for (int step = 1; step <= 3; ++step) {
      const double bc1 = 1 - std::pow(beta1, step), bc2 = 1 - std::pow(beta2, step);
      std::vector<NDArray> g;
      std::vector<AdamWParam> list;
      for (size_t k = 0; k < sizes.size(); ++k) {
        g.push_back(random_array(300 + 10 * step + k, {sizes[k]}, dt));
        const double lr = 1e-2 * (k + 1), wd = 0.1 * k;
        list.push_back({p[k].ref(), g[k].ref(), m[k].ref(), v[k].ref(), lr, beta1, beta2, eps, wd,
                        bc1, bc2});
        const std::vector<double> gv = read_host(g[k]).v;
        for (int64_t i = 0; i < sizes[k]; ++i) {
          rp[k][i] -= lr * wd * rp[k][i];
          rm[k][i] = beta1 * rm[k][i] + (1 - beta1) * gv[i];
          rv[k][i] = beta2 * rv[k][i] + (1 - beta2) * gv[i] * gv[i];
          rp[k][i] -= lr * (rm[k][i] / bc1) / (std::sqrt(rv[k][i] / bc2) + eps);
        }
      }
      b.adamw(list.data(), static_cast<int64_t>(list.size()));
    }
    Tolerance t = dt == DType::Float32 ? Tolerance{1e-6, 1e-5} : Tolerance{1e-12, 1e-10};
    for (size_t k = 0; k < sizes.size(); ++k) {
      INFO("n=" << sizes[k]);
      expect_values(p[k], rp[k], t, "param");
      expect_values(m[k], rm[k], t, "exp_avg");
      expect_values(v[k], rv[k], t, "exp_avg_sq");
    }
  }
}

TEST_CASE("adamw rejects a bad parameter before updating any", "[fused][cpu]") {
  const Backend& b = cpu_backend();
  NDArray p = random_array(1, {8}, DType::Float32), g = random_array(2, {8}, DType::Float32);
  NDArray m = NDArray::zeros({8}), v = NDArray::zeros({8}), short_g = NDArray::zeros({7});
  const std::vector<double> before = read_host(p).v;
  AdamWParam good{p.ref(), g.ref(), m.ref(), v.ref(), 1e-2, 0.9, 0.999, 1e-8, 0.0, 0.1, 0.001};
  AdamWParam bad = good;
  bad.grad = short_g.ref();
  std::vector<AdamWParam> list = {good, bad};
  CHECK_THROWS_AS(b.adamw(list.data(), 2), ValueError);
  bad = good;
  bad.bias_correction1 = 0;
  list = {good, bad};
  CHECK_THROWS_AS(b.adamw(list.data(), 2), ValueError);
  NDArray m64 = NDArray::zeros({8}, DType::Float64);
  bad = good;
  bad.exp_avg = m64.ref();
  list = {good, bad};
  CHECK_THROWS_AS(b.adamw(list.data(), 2), TypeError);
  CHECK(read_host(p).v == before);
}

TEST_CASE("foreach_sum_squares sums the squares of a list in float64", "[fused][cpu]") {
  const Backend& b = cpu_backend();
  // Mixed dtypes, an empty array, and one longer than a partial sum's piece (65536).
  std::vector<NDArray> xs = {random_array(11, {3, 5}, DType::Float32),
                             random_array(12, {0}, DType::Float32),
                             random_array(13, {70001}, DType::BFloat16),
                             random_array(14, {131073}, DType::Float32),
                             random_array(15, {9}, DType::Float64)};
  double expected = 0;
  for (const NDArray& x : xs)
    for (double e : read_host(x).v) expected += e * e;
  std::vector<ArrayRef> refs;
  for (const NDArray& x : xs) refs.push_back(x.ref());
  NDArray out = NDArray::empty({}, DType::Float64);
  b.foreach_sum_squares(refs.data(), static_cast<int64_t>(refs.size()), out.ref());
  const double got = out.item();
  CHECK(std::abs(got - expected) <= 1e-12 * expected);
  // The order is fixed by the sizes: the same list gives the same bits.
  NDArray again = NDArray::empty({}, DType::Float64);
  b.foreach_sum_squares(refs.data(), static_cast<int64_t>(refs.size()), again.ref());
  CHECK(again.item() == got);
  b.foreach_sum_squares(refs.data(), 0, out.ref());
  CHECK(out.item() == 0.0);

  NDArray wrong_out = NDArray::empty({}, DType::Float32);
  CHECK_THROWS_AS(b.foreach_sum_squares(refs.data(), 1, wrong_out.ref()), ValueError);
  NDArray ints = NDArray::zeros({4}, DType::Int64);
  std::vector<ArrayRef> bad = {xs[0].ref(), ints.ref()};
  CHECK_THROWS_AS(b.foreach_sum_squares(bad.data(), 2, out.ref()), TypeError);
  NDArray strided = xs[0].permute({1, 0});
  bad = {strided.ref()};
  CHECK_THROWS_AS(b.foreach_sum_squares(bad.data(), 1, out.ref()), ValueError);
}

TEST_CASE("foreach_scale_to_max_norm scales by max_norm / (norm + 1e-6) only below 1",
          "[fused][cpu]") {
  const Backend& b = cpu_backend();
  const double max_norm = 1.0;
  // norm 2.694: factor 0.3712 (scaled, as binary_scalar's Mul); 0.5 and 1 - 1e-6: factor >= 1
  // (untouched); NaN: untouched.
  for (double norm : {2.694, 0.5, 1.0 - 1e-6, std::nan("")}) {
    const double coef = max_norm / (norm + 1e-6);
    for (DType dt : {DType::Float32, DType::BFloat16, DType::Float64}) {
      INFO(dtype_name(dt) << " norm " << norm);
      std::vector<NDArray> xs = {random_array(21, {1000}, dt), random_array(22, {0}, dt),
                                 random_array(23, {4, 7}, dt)};
      std::vector<NDArray> expected;
      std::vector<ArrayRef> refs;
      for (const NDArray& x : xs) {
        expected.push_back(coef < 1.0 ? mul(x, Scalar(coef)) : x.clone());
        refs.push_back(x.ref());
      }
      const NDArray n = NDArray::scalar(norm, DType::Float64);
      b.foreach_scale_to_max_norm(refs.data(), static_cast<int64_t>(refs.size()), n.ref(),
                                  max_norm);
      for (size_t k = 0; k < xs.size(); ++k) CHECK(read_host(xs[k]).v == read_host(expected[k]).v);
    }
  }
  NDArray x = random_array(24, {8}, DType::Float32);
  std::vector<ArrayRef> refs = {x.ref()};
  const NDArray norm32 = NDArray::scalar(3.0, DType::Float32);
  CHECK_THROWS_AS(b.foreach_scale_to_max_norm(refs.data(), 1, norm32.ref(), 1.0), ValueError);
}

TEST_CASE("rotary forward and transpose match their float64 formulas on strided views",
          "[fused][cpu]") {
  const Backend& b = cpu_backend();
  // x is a (B, H, T, D) = (2, 3, 5, 12) view sliced and permuted out of a (B, T, H, 3 * D)
  // projection, as the GPT-NeoX model's q is; out is compact, row (b, h, t) at ((b * H + h) * T + t).
  const int64_t B = 2, H = 3, N = B * H, T = 5, D = 12;
  for (int64_t R : {int64_t(2), int64_t(8), int64_t(12)}) {
    INFO("R=" << R);
    const int64_t h = R / 2;
    NDArray x = random_array(400 + R, {B, T, H, 3 * D}, DType::Float64)
                    .slice(3, D, 2 * D)
                    .permute({0, 2, 1, 3});
    NDArray cos = random_array(500 + R, {T, R}, DType::Float64);
    NDArray sin = random_array(600 + R, {T, R}, DType::Float64);
    const std::vector<double> xv = read_host(x).v, c = read_host(cos).v, s = read_host(sin).v;
    for (bool transpose : {false, true}) {
      INFO("transpose=" << transpose);
      NDArray out = NDArray::empty({B, H, T, D}, DType::Float64);
      b.rotary(x.ref(), cos.ref(), sin.ref(), transpose, out.ref());
      std::vector<double> want(xv.size());
      for (int64_t n = 0; n < N; ++n)
        for (int64_t t = 0; t < T; ++t) {
          const double* row = xv.data() + (n * T + t) * D;
          double* o = want.data() + (n * T + t) * D;
          const double* ct = c.data() + t * R;
          const double* st = s.data() + t * R;
          for (int64_t i = 0; i < h; ++i) {
            o[i] = transpose ? row[i] * ct[i] + row[i + h] * st[i + h]
                             : row[i] * ct[i] - row[i + h] * st[i];
            o[i + h] = transpose ? row[i + h] * ct[i + h] - row[i] * st[i]
                                 : row[i + h] * ct[i + h] + row[i] * st[i + h];
          }
          for (int64_t i = R; i < D; ++i) o[i] = row[i];
        }
      expect_values(out, want, Tolerance{1e-13, 1e-13}, "out");
    }
  }
}
