// Modules and layers: forwards against float64 references computed here, finite-difference
// gradient checks through the modules, state-dict round trips, registration and repr, attention
// with causal masking and partial rotary embeddings.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "ndarray/error.h"
#include "ndarray/random.h"
#include "nn/attention.h"
#include "nn/block_sparse_layout.h"
#include "nn/init.h"

using namespace needle;
using namespace needle::nn;

namespace {

Tensor randn64(const Shape& s, bool grad = false) {
  return Tensor(NDArray::randn(s, DType::Float64), grad);
}
std::vector<double> vals(const Tensor& t) { return t.data().to_vector<double>(); }

// d(sum(f(x) * w))/dx against central differences for every element of x.
void gradcheck(const std::function<Tensor(const Tensor&)>& f, const Tensor& x) {
  Tensor w = randn64(f(x).shape());
  Tensor loss = sum(mul(f(x), w));
  x.zero_grad();
  loss.backward();
  std::vector<double> analytic = vals(x.grad());
  std::vector<double> base = vals(x);
  const double h = 1e-6;
  for (size_t i = 0; i < base.size(); ++i) {
    auto at = [&](double delta) {
      std::vector<double> v = base;
      v[i] += delta;
      NoGradGuard g;
      Tensor xi(NDArray::from_host(v.data(), x.shape(), DType::Float64));
      return sum(mul(f(xi), w)).data().item();
    };
    REQUIRE(analytic[i] == Approx((at(h) - at(-h)) / (2 * h)).margin(1e-6));
  }
}

}  // namespace

TEST_CASE("Linear, LayerNorm, RMSNorm forward match float64 references") {
  manual_seed(1);
  Linear lin(4, 3);
  lin.to(std::nullopt, DType::Float64);
  Tensor x = randn64({2, 4});
  std::vector<double> xv = vals(x), wv = vals(lin.weight), bv = vals(lin.bias), y = vals(lin(x));
  for (int r = 0; r < 2; ++r)
    for (int o = 0; o < 3; ++o) {
      double acc = bv[o];
      for (int i = 0; i < 4; ++i) acc += xv[r * 4 + i] * wv[o * 4 + i];
      REQUIRE(y[r * 3 + o] == Approx(acc).epsilon(1e-12));
    }
  for (double bound : wv) REQUIRE(std::abs(bound) <= 0.5);  // U(-1/sqrt(4), 1/sqrt(4))

  LayerNorm ln(4, 1e-5);
  RMSNorm rms(4, 1e-6);
  ln.to(std::nullopt, DType::Float64);
  rms.to(std::nullopt, DType::Float64);
  init::normal_(ln.weight);
  init::normal_(ln.bias);
  init::normal_(rms.weight);
  std::vector<double> lw = vals(ln.weight), lb = vals(ln.bias), rw = vals(rms.weight);
  std::vector<double> ly = vals(ln(x)), ry = vals(rms(x));
  for (int r = 0; r < 2; ++r) {
    double mean = 0, var = 0, ms = 0;
    for (int i = 0; i < 4; ++i) mean += xv[r * 4 + i] / 4, ms += xv[r * 4 + i] * xv[r * 4 + i] / 4;
    for (int i = 0; i < 4; ++i) var += (xv[r * 4 + i] - mean) * (xv[r * 4 + i] - mean) / 4;
    for (int i = 0; i < 4; ++i) {
      REQUIRE(ly[r * 4 + i] ==
              Approx((xv[r * 4 + i] - mean) / std::sqrt(var + 1e-5) * lw[i] + lb[i]).epsilon(1e-10));
      REQUIRE(ry[r * 4 + i] == Approx(xv[r * 4 + i] / std::sqrt(ms + 1e-6) * rw[i]).epsilon(1e-12));
    }
  }
}

TEST_CASE("activations and losses match float64 references") {
  manual_seed(2);
  Tensor x = randn64({3, 5});
  std::vector<double> xv = vals(x), silu_y = vals(SiLU()(x)), gelu_y = vals(GELU("tanh")(x)),
                      relu_y = vals(ReLU()(x));
  for (size_t i = 0; i < xv.size(); ++i) {
    double a = xv[i];
    REQUIRE(silu_y[i] == Approx(a / (1 + std::exp(-a))).epsilon(1e-12));
    REQUIRE(relu_y[i] == (a > 0 ? a : 0.0));
    REQUIRE(gelu_y[i] ==
            Approx(0.5 * a * (1 + std::tanh(std::sqrt(2 / M_PI) * (a + 0.044715 * a * a * a))))
                .epsilon(1e-12));
  }
  Tensor y = randn64({3, 5});
  std::vector<double> yv = vals(y);
  double mse = 0;
  for (size_t i = 0; i < xv.size(); ++i) mse += (xv[i] - yv[i]) * (xv[i] - yv[i]) / 15;
  REQUIRE(MSELoss().forward(x, y).data().item() == Approx(mse).epsilon(1e-12));

  std::vector<int64_t> targets = {2, -1, 4};
  Tensor t(NDArray::from_host(targets.data(), {3}, DType::Int64));
  double ce = 0;
  for (int r : {0, 2}) {
    double lse = 0;
    for (int c = 0; c < 5; ++c) lse += std::exp(xv[r * 5 + c]);
    ce += (std::log(lse) - xv[r * 5 + targets[r]]) / 2;
  }
  REQUIRE(CrossEntropyLoss(-1).forward(x, t).data().item() == Approx(ce).epsilon(1e-12));
  REQUIRE_THROWS_AS(MSELoss("average"), ValueError);
}

TEST_CASE("gradients flow through modules (finite differences, float64)") {
  manual_seed(3);
  RMSNorm rms(5);
  rms.to(std::nullopt, DType::Float64);
  gradcheck([&](const Tensor& x) { return rms(x); }, randn64({2, 5}, true));
  MultiHeadAttention mha(4, 2, true, false, 2);
  mha.to(std::nullopt, DType::Float64);
  gradcheck([&](const Tensor& x) { return mha(x); }, randn64({1, 3, 4}, true));
  Sequential seq({std::make_shared<Linear>(3, 4), std::make_shared<SiLU>(),
                  std::make_shared<Residual>(std::make_shared<Linear>(4, 4))});
  seq.to(std::nullopt, DType::Float64);
  gradcheck([&](const Tensor& x) { return seq(x); }, randn64({2, 3}, true));
}

TEST_CASE("rotary embeddings rotate pairs (i, i + r/2) of the first rotary_dim dims only") {
  manual_seed(4);
  RotaryEmbedding rope(4, 100.0);
  Tensor x = randn64({1, 1, 3, 6});
  std::vector<double> xv = vals(x), y = vals(rope.apply(x));
  for (int t = 0; t < 3; ++t) {
    for (int i = 0; i < 2; ++i) {
      const double angle = t * std::pow(100.0, -2.0 * i / 4);
      const double a = xv[t * 6 + i], b = xv[t * 6 + i + 2];
      REQUIRE(y[t * 6 + i] == Approx(a * std::cos(angle) - b * std::sin(angle)).margin(1e-12));
      REQUIRE(y[t * 6 + i + 2] == Approx(b * std::cos(angle) + a * std::sin(angle)).margin(1e-12));
    }
    for (int d = 4; d < 6; ++d) REQUIRE(y[t * 6 + d] == xv[t * 6 + d]);
  }
  REQUIRE_THROWS_AS(RotaryEmbedding(3), ValueError);
}

TEST_CASE("causal attention ignores the future; unknown patterns are rejected") {
  manual_seed(5);
  MultiHeadAttention mha(8, 2, true, true, 4);
  Tensor x = Tensor(NDArray::randn({1, 5, 8}));
  std::vector<double> before = vals(mha(x));
  NDArray changed = x.data().clone();
  changed.slice(1, 3, 5).fill(7.0);
  std::vector<double> after = vals(mha(Tensor(changed)));
  for (int i = 0; i < 3 * 8; ++i) REQUIRE(after[i] == Approx(before[i]).margin(1e-6));
  bool differs = false;
  for (int i = 3 * 8; i < 5 * 8; ++i) differs = differs || std::abs(after[i] - before[i]) > 1e-4;
  REQUIRE(differs);
  REQUIRE_THROWS_WITH(MultiHeadAttention(8, 2, true, true, 0, 1e4, true, 0.0, "banded"),
                      Catch::Contains("'banded'") && Catch::Contains("mixed"));
  // The block-sparse path keeps causality too.
  MultiHeadAttention local(8, 2, true, true, 4, 1e4, true, 0.0, "local", 16);
  std::vector<double> lb = vals(local(x)), la = vals(local(Tensor(changed)));
  for (int i = 0; i < 3 * 8; ++i) REQUIRE(la[i] == Approx(lb[i]).margin(1e-6));
}

TEST_CASE("the named mixed pattern is window 3, 1 global block, stride 4") {
  // 160 positions in blocks of 16: 10 blocks, where windows 1 and 3 keep different blocks.
  const int64_t n = 10, b = 16, L = n * b;
  manual_seed(8);
  MultiHeadAttention named(8, 2, true, true, 4, 1e4, true, 0.0, "mixed", b);
  Tensor x(NDArray::randn({1, L, 8}));
  auto with_window = [&](int64_t window) {
    std::vector<uint8_t> mask(static_cast<size_t>(n * n));
    for (int64_t q = 0; q < n; ++q)
      for (int64_t k = 0; k < n; ++k)
        mask[static_cast<size_t>(q * n + k)] =
            std::abs(q - k) <= window || q < 1 || k < 1 || std::abs(q - k) % 4 == 0;
    MultiHeadAttention layer(8, 2, true, true, 4);
    layer.load_state_dict(named.state_dict());
    layer.use_layout(BlockSparseLayout::from_block_mask(mask, 1, n, n, b, L, L, true));
    return vals(layer(x));
  };
  const std::vector<double> got = vals(named(x)), window3 = with_window(3),
                            window1 = with_window(1);
  double diff1 = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    REQUIRE(got[i] == Approx(window3[i]).margin(1e-6));
    diff1 = std::max(diff1, std::abs(got[i] - window1[i]));
  }
  REQUIRE(diff1 > 1e-3);
}

TEST_CASE("state_dict round trip, strict loading errors by name, registration and repr") {
  manual_seed(6);
  auto make = [] {
    auto m = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
        std::make_shared<Embedding>(10, 4), std::make_shared<LayerNorm>(4),
        std::make_shared<Linear>(4, 3, false)});
    m->register_buffer("steps", Tensor(NDArray::arange(0, 3, 1, DType::Int64)));
    return m;
  };
  auto a = make(), b = make();
  NamedArrays state = a->state_dict();
  REQUIRE(state.size() == 5);
  REQUIRE(state[0].first == "0.weight");
  REQUIRE(state[4].first == "steps");
  std::string image = serialize_safetensors(state);
  b->load_state_dict(parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()),
                                       image.size(), "mem").tensors);
  std::vector<int64_t> ids = {1, 7, 3};
  Tensor in(NDArray::from_host(ids.data(), {3}, DType::Int64));
  REQUIRE(vals((*a)(in)) == vals((*b)(in)));

  NamedArrays broken = state;
  broken.erase(broken.begin() + 1);                          // missing 1.weight
  broken.emplace_back("extra", NDArray::zeros({1}));         // unexpected
  broken[0].second = NDArray::zeros({10, 5});                // mismatched
  REQUIRE_THROWS_WITH(b->load_state_dict(broken),
                      Catch::Contains("'1.weight'") && Catch::Contains("'extra'") &&
                          Catch::Contains("0.weight: expected (10, 4), got (10, 5)"));
  LoadResult r = b->load_state_dict(broken, false);
  REQUIRE(r.missing == std::vector<std::string>{"1.weight"});
  REQUIRE(r.unexpected == std::vector<std::string>{"extra"});

  REQUIRE(a->num_parameters() == 40 + 8 + 12);
  REQUIRE(a->repr() ==
          "Sequential(\n  (0): Embedding(10, 4)\n  (1): LayerNorm((4,), eps=1e-05, "
          "elementwise_affine=True)\n  (2): Linear(in_features=4, out_features=3, bias=False)\n)");
  a->eval();
  REQUIRE(!a->at(1)->training());
}

TEST_CASE("init: fans, GPT-NeoX small/wang init statistics, truncated normal bounds") {
  manual_seed(8);
  Tensor w(NDArray::zeros({256, 128}), true);
  REQUIRE(init::fan_in_and_fan_out(w) == std::make_pair<int64_t, int64_t>(128, 256));
  auto std_of = [&] {
    std::vector<double> v = vals(w);
    double m = 0, s = 0;
    for (double x : v) m += x / v.size();
    for (double x : v) s += (x - m) * (x - m) / v.size();
    return std::sqrt(s);
  };
  init::small_init_(w, 128);
  REQUIRE(std_of() == Approx(std::sqrt(2.0 / (5 * 128))).epsilon(0.03));
  init::wang_init_(w, 128, 6);
  REQUIRE(std_of() == Approx(2.0 / (6 * std::sqrt(128.0))).epsilon(0.03));
  init::kaiming_normal_(w, 0.0, "fan_in", "relu");
  REQUIRE(std_of() == Approx(std::sqrt(2.0 / 128)).epsilon(0.03));
  init::xavier_uniform_(w);
  REQUIRE(std_of() == Approx(std::sqrt(6.0 / 384) / std::sqrt(3.0)).epsilon(0.03));
  init::trunc_normal_(w, 0.0, 1.0, -0.5, 1.0);
  for (double x : vals(w)) REQUIRE((x >= -0.5 && x <= 1.0));
  REQUIRE_THROWS_AS(init::trunc_normal_(w, 0.0, 1.0, 8.0, 9.0), ValueError);
}
