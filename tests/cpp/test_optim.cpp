// Optimizers against their update formulas written out here in float64, parameter groups,
// state-dict round trips, gradient clipping and lr schedules.
#include <catch2/catch.hpp>

#include <cmath>

#include "ndarray/error.h"
#include "ndarray/random.h"
#include "nn/optim.h"

using namespace needle;
using namespace needle::nn;

namespace {

std::vector<double> values(const Tensor& t) { return t.data().to_vector<double>(); }

Tensor param(const std::vector<double>& v) {
  return Tensor(NDArray::from_host(v.data(), {static_cast<int64_t>(v.size())}, DType::Float64),
                true);
}

void set_grad(const Tensor& p, const std::vector<double>& g) {
  p.set_grad(Tensor(NDArray::from_host(g.data(), {static_cast<int64_t>(g.size())}, DType::Float64)));
}

void require_close(const std::vector<double>& a, const std::vector<double>& b, double tol = 1e-12) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == Approx(b[i]).margin(tol));
}

const std::vector<std::vector<double>> kGrads = {{0.5, -1.0, 2.0}, {-0.25, 0.75, 1.5},
                                                 {1.0, 1.0, -3.0}};
const std::vector<double> kStart = {1.0, -2.0, 0.5};

// Optimizer state goes through a safetensors image, as a checkpoint would.
NamedArrays save_and_reload_check(const NamedArrays& state) {
  std::string image = serialize_safetensors(state);
  return parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "mem")
      .tensors;
}

}  // namespace

TEST_CASE("SGD with momentum, dampening, nesterov and weight decay follows torch's formula") {
  for (bool nesterov : {false, true}) {
    const double lr = 0.1, mu = 0.9, wd = 0.01, damp = nesterov ? 0.0 : 0.2;
    Tensor p = param(kStart);
    SGD opt({{{p}, {}}}, lr, mu, damp, wd, nesterov);
    std::vector<double> x = kStart, buf(3);
    for (size_t s = 0; s < kGrads.size(); ++s) {
      set_grad(p, kGrads[s]);
      opt.step();
      for (int i = 0; i < 3; ++i) {
        double g = kGrads[s][i] + wd * x[i];
        buf[i] = s == 0 ? g : mu * buf[i] + (1 - damp) * g;
        x[i] -= lr * (nesterov ? g + mu * buf[i] : buf[i]);
      }
      require_close(values(p), x);
    }
  }
}

TEST_CASE("Adam (L2 decay) and AdamW (decoupled decay) follow their formulas") {
  for (bool decoupled : {false, true}) {
    const double lr = 0.01, b1 = 0.8, b2 = 0.95, eps = 1e-6, wd = 0.1;
    Tensor p = param(kStart);
    std::unique_ptr<Optimizer> opt;
    if (decoupled) opt = std::make_unique<AdamW>(std::vector<ParamGroup>{{{p}, {}}}, lr, b1, b2, eps, wd);
    else opt = std::make_unique<Adam>(std::vector<ParamGroup>{{{p}, {}}}, lr, b1, b2, eps, wd);
    std::vector<double> x = kStart, m(3, 0.0), v(3, 0.0);
    for (size_t s = 0; s < kGrads.size(); ++s) {
      set_grad(p, kGrads[s]);
      opt->step();
      const double t = static_cast<double>(s + 1);
      for (int i = 0; i < 3; ++i) {
        double g = kGrads[s][i] + (decoupled ? 0.0 : wd * x[i]);
        if (decoupled) x[i] *= 1 - lr * wd;
        m[i] = b1 * m[i] + (1 - b1) * g;
        v[i] = b2 * v[i] + (1 - b2) * g * g;
        const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
        x[i] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
      require_close(values(p), x, 1e-12);
    }
  }
}

TEST_CASE("parameter groups take their own options; absent gradients are skipped") {
  Tensor decayed = param(kStart), plain = param(kStart), untouched = param(kStart);
  ParamGroup g1{{decayed}, {{"weight_decay", 0.5}}};
  ParamGroup g2{{plain, untouched}, {{"weight_decay", 0.0}, {"lr", 0.2}}};
  SGD opt({g1, g2}, 0.1);
  set_grad(decayed, kGrads[0]);
  set_grad(plain, kGrads[0]);
  opt.step();
  for (int i = 0; i < 3; ++i) {
    REQUIRE(values(decayed)[i] == Approx(kStart[i] - 0.1 * (kGrads[0][i] + 0.5 * kStart[i])));
    REQUIRE(values(plain)[i] == Approx(kStart[i] - 0.2 * kGrads[0][i]));
  }
  require_close(values(untouched), kStart);
  REQUIRE_THROWS_AS(SGD({{{plain}, {{"betas", 1.0}}}}, 0.1), ValueError);
  REQUIRE_THROWS_AS(SGD({{{plain}, {}}, {{plain}, {}}}, 0.1), ValueError);
}

TEST_CASE("optimizer state_dict round trip resumes identically") {
  Tensor a = param(kStart), b = param(kStart);
  AdamW first({{{a}, {}}}, 0.05), second({{{b}, {}}}, 0.05);
  for (int s = 0; s < 2; ++s) {
    set_grad(a, kGrads[s]);
    first.step();
  }
  NamedArrays state = first.state_dict();
  b.data().assign(a.data());
  second.load_state_dict(save_and_reload_check(state));
  set_grad(a, kGrads[2]);
  set_grad(b, kGrads[2]);
  first.step();
  second.step();
  require_close(values(a), values(b), 0.0);

  NamedArrays bad = state;
  bad.emplace_back("state.5.exp_avg", NDArray::zeros({3}, DType::Float64));
  REQUIRE_THROWS_WITH(second.load_state_dict(bad), Catch::Contains("state.5.exp_avg"));
  NamedArrays wrong_shape = {{"state.0.step", NDArray::scalar(1, DType::Int64)},
                             {"state.0.exp_avg", NDArray::zeros({4})}};
  REQUIRE_THROWS_WITH(second.load_state_dict(wrong_shape), Catch::Contains("does not match"));
}

TEST_CASE("clip_grad_norm_ returns the global norm and scales to max_norm") {
  Tensor p = param({0, 0, 0}), q = param({0, 0, 0});
  set_grad(p, {3, 0, 0});
  set_grad(q, {0, 4, 0});
  REQUIRE(clip_grad_norm_({p, q}, 10.0).data().item() == Approx(5.0));
  require_close(values(p.grad()), {3, 0, 0});  // below max_norm: unchanged
  REQUIRE(clip_grad_norm_({p, q}, 1.0).data().item() == Approx(5.0));
  const double c = 1.0 / (5.0 + 1e-6);
  require_close(values(p.grad()), {3 * c, 0, 0});
  require_close(values(q.grad()), {0, 4 * c, 0});
  set_grad(p, {-7, 1, 2});
  REQUIRE(clip_grad_norm_({p, q}, 100.0, INFINITY).data().item() == Approx(7.0));
}

TEST_CASE("clip_grad_norm_ returns a float64 scalar tensor and leaves a NaN norm's gradients") {
  Tensor p = param({0, 0, 0});
  set_grad(p, {3, 0, 4});
  const Tensor norm = clip_grad_norm_({p}, 1.0);
  REQUIRE(norm.data().dtype() == DType::Float64);
  REQUIRE(norm.data().shape().empty());
  REQUIRE_FALSE(norm.requires_grad());
  REQUIRE(norm.data().item() == Approx(5.0));
  set_grad(p, {3, std::nan(""), 4});
  REQUIRE(std::isnan(clip_grad_norm_({p}, 1.0).data().item()));
  const std::vector<double> after = values(p.grad());
  REQUIRE(after[0] == 3.0);  // a NaN factor is not below 1: nothing scaled
  REQUIRE(after[2] == 4.0);
  Tensor no_grad = param({1, 2});
  REQUIRE(clip_grad_norm_({no_grad}, 1.0).data().item() == 0.0);
  for (double bad : {0.5, -double(INFINITY), std::nan("")})
    REQUIRE_THROWS_AS(clip_grad_norm_({p}, 1.0, bad), ValueError);
}

TEST_CASE("clip_grad_norm_: a million float32 values, bfloat16 gradients and p = 3") {
  Tensor big(NDArray::zeros({1 << 20}, DType::Float32), true);
  big.set_grad(Tensor(NDArray::randn({1 << 20}, DType::Float32)));
  double want = 0;
  for (double v : big.grad().data().to_vector<double>()) want += v * v;
  REQUIRE(clip_grad_norm_({big}, 1e9).data().item() == Approx(std::sqrt(want)).epsilon(1e-6));
  Tensor half(NDArray::zeros({2}, DType::BFloat16), true);
  const double hv[2] = {3, -4};
  half.set_grad(Tensor(NDArray::from_host(hv, {2}, DType::Float64).astype(DType::BFloat16)));
  REQUIRE(clip_grad_norm_({half}, 1.0).data().item() == Approx(5.0));
  require_close(values(half.grad()), {3 / 5.0, -4 / 5.0}, 1e-2);
  Tensor p = param({0, 0, 0}), q = param({0, 0, 0});
  set_grad(p, {3, 0, 0});
  set_grad(q, {0, -4, 0});
  REQUIRE(clip_grad_norm_({p, q}, 100.0, 3.0).data().item() == Approx(std::cbrt(91.0)));
}

TEST_CASE("clip_grad_norm_: mixed dtypes in float64, and a strided gradient scaled in place") {
  // float32, bfloat16 and float64 gradients; the 2-norm's squares and sum are float64, so the
  // norm matches one computed here to rounding.
  Tensor a(NDArray::zeros({1000}, DType::Float32), true),
      b(NDArray::zeros({70001}, DType::BFloat16), true),
      c(NDArray::zeros({3, 4}, DType::Float64), true);
  a.set_grad(Tensor(NDArray::randn({1000}, DType::Float32)));
  b.set_grad(Tensor(NDArray::randn({70001}, DType::Float32).astype(DType::BFloat16)));
  // A transposed view: not compact, so it is summed from a copy and scaled through assign().
  c.set_grad(Tensor(NDArray::randn({4, 3}, DType::Float64).permute({1, 0})));
  REQUIRE_FALSE(c.grad().data().is_compact());
  double want = 0;
  std::vector<std::vector<double>> before;
  for (const Tensor* t : {&a, &b, &c}) {
    before.push_back(values(t->grad()));
    for (double v : before.back()) want += v * v;
  }
  const double norm = clip_grad_norm_({a, b, c}, 1.0).data().item();
  REQUIRE(norm == Approx(std::sqrt(want)).epsilon(1e-13));
  const double coef = 1.0 / (norm + 1e-6);
  const std::vector<double> tol = {1e-6, 1e-2, 1e-15};
  int k = 0;
  for (const Tensor* t : {&a, &b, &c}) {
    const std::vector<double> after = values(t->grad());
    for (size_t i = 0; i < after.size(); ++i)
      REQUIRE(after[i] == Approx(before[k][i] * coef).epsilon(tol[k]).margin(1e-12));
    ++k;
  }
}

TEST_CASE("lr schedules: warm-up, cosine to a floor, linear decay") {
  Tensor p = param(kStart);
  SGD opt({{{p}, {}}}, 1.0);
  WarmupCosineLR cosine(opt, 4, 14, 0.1);
  REQUIRE(opt.param_groups()[0].options["lr"] == Approx(0.25));  // factor(0) = 1/4
  for (int s = 1; s <= 20; ++s) {
    cosine.step();
    double expected = s < 4 ? (s + 1) / 4.0
                            : 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * std::min(1.0, (s - 4) / 10.0)));
    REQUIRE(opt.param_groups()[0].options["lr"] == Approx(expected));
  }
  REQUIRE(cosine.get_last_lr()[0] == Approx(0.1));
  LinearDecayLR linear(opt, 0, 10, 0.0);  // base lr is the current 0.1
  linear.set_last_step(5);
  REQUIRE(opt.param_groups()[0].options["lr"] == Approx(0.05));
  ConstantLR constant(opt, 2);
  REQUIRE(constant.factor(0) == Approx(0.5));
  REQUIRE(constant.factor(7) == Approx(1.0));
}
