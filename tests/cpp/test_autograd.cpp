// The autograd engine and every differentiable op: float64 finite-difference gradient checks
// driven by one table, plus the engine's contracts (accumulation, retain_graph, no_grad, second
// derivatives, deep graphs, flat memory).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "autograd/autocast.h"
#include "autograd/functional.h"
#include "ndarray/error.h"
#include "ndarray/random.h"

using namespace needle;

namespace {

Tensor randn64(const Shape& shape, bool requires_grad = true) {
  return Tensor(NDArray::randn(shape, DType::Float64), requires_grad);
}

// Positive inputs for log/sqrt/rsqrt/pow.
Tensor positive64(const Shape& shape) {
  return Tensor(add(abs(NDArray::randn(shape, DType::Float64)), Scalar(0.5)), true);
}

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

struct GradCase {
  std::string name;
  std::function<std::vector<Tensor>()> make_inputs;
  Fn f;
};

// Checks d(sum(f(x) * w))/dx against central differences, element by element.
void gradcheck(const GradCase& c) {
  INFO("op: " << c.name);
  manual_seed(1234);
  std::vector<Tensor> inputs = c.make_inputs();
  Tensor out = c.f(inputs);
  Tensor w(NDArray::randn(out.shape(), DType::Float64));
  auto loss_of = [&](const std::vector<Tensor>& xs) {
    NoGradGuard guard;
    return needle::sum(needle::mul(c.f(xs).data(), w.data())).item();
  };
  sum(mul(out, w)).backward();
  const double eps = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    NDArray x = inputs[i].data();
    REQUIRE(x.is_compact());
    Tensor g = inputs[i].grad();
    REQUIRE(g.defined());
    REQUIRE(g.shape() == x.shape());
    std::vector<double> analytic = g.data().to_vector<double>();
    double* p = static_cast<double*>(x.data_ptr());
    for (int64_t j = 0; j < x.numel(); ++j) {
      double orig = p[j];
      p[j] = orig + eps;
      double up = loss_of(inputs);
      p[j] = orig - eps;
      double down = loss_of(inputs);
      p[j] = orig;
      double numeric = (up - down) / (2 * eps);
      INFO("input " << i << " element " << j);
      CHECK(analytic[j] == Approx(numeric).epsilon(1e-5).margin(1e-6));
    }
  }
}

std::vector<Tensor> two(const Shape& a, const Shape& b) { return {randn64(a), randn64(b)}; }

std::vector<GradCase> grad_cases() {
  std::vector<GradCase> cases;
  auto unary_case = [&](const char* name, std::function<Tensor(const Tensor&)> f, bool positive) {
    cases.push_back({name, [positive] {
                       return std::vector<Tensor>{positive ? positive64({3, 4}) : randn64({3, 4})};
                     },
                     [f](const std::vector<Tensor>& x) { return f(x[0]); }});
    // The same op on a non-contiguous (transposed) view.
    cases.push_back({std::string(name) + " (transposed)", [positive] {
                       return std::vector<Tensor>{positive ? positive64({4, 3}) : randn64({4, 3})};
                     },
                     [f](const std::vector<Tensor>& x) { return f(transpose(x[0], 0, 1)); }});
  };
#define NEEDLE_UNARY_CASE(Name, fname, ...)                                            \
  unary_case(#fname, [](const Tensor& t) { return fname(t); },                          \
             UnaryOp::Name == UnaryOp::Log || UnaryOp::Name == UnaryOp::Sqrt ||         \
                 UnaryOp::Name == UnaryOp::Rsqrt);
  NEEDLE_UNARY_OPS(NEEDLE_UNARY_CASE)
#undef NEEDLE_UNARY_CASE

  // Binary ops with broadcasting in both directions and scalar variants.
  auto binary_case = [&](const char* name, std::function<Tensor(const Tensor&, const Tensor&)> f,
                         bool positive) {
    cases.push_back({std::string(name) + " broadcast", [positive] {
                       if (positive) return std::vector<Tensor>{positive64({2, 3, 4}), positive64({3, 1})};
                       return two({2, 3, 4}, {3, 1});
                     },
                     [f](const std::vector<Tensor>& x) { return f(x[0], x[1]); }});
    cases.push_back({std::string(name) + " broadcast left", [positive] {
                       if (positive) return std::vector<Tensor>{positive64({4}), positive64({2, 3, 4})};
                       return two({4}, {2, 3, 4});
                     },
                     [f](const std::vector<Tensor>& x) { return f(x[0], x[1]); }});
  };
  binary_case("add", [](auto& a, auto& b) { return add(a, b); }, false);
  binary_case("sub", [](auto& a, auto& b) { return sub(a, b); }, false);
  binary_case("mul", [](auto& a, auto& b) { return mul(a, b); }, false);
  binary_case("div", [](auto& a, auto& b) { return div(a, b); }, true);
  binary_case("pow", [](auto& a, auto& b) { return pow(a, b); }, true);
  binary_case("maximum", [](auto& a, auto& b) { return maximum(a, b); }, false);
  binary_case("minimum", [](auto& a, auto& b) { return minimum(a, b); }, false);
  auto scalar_case = [&](const char* name, std::function<Tensor(const Tensor&)> f) {
    cases.push_back({name, [] { return std::vector<Tensor>{positive64({3, 5})}; },
                     [f](const std::vector<Tensor>& x) { return f(x[0]); }});
  };
  scalar_case("add scalar", [](auto& a) { return add(a, Scalar(2.5)); });
  scalar_case("rsub scalar", [](auto& a) { return sub(Scalar(2.5), a); });
  scalar_case("mul scalar", [](auto& a) { return mul(a, Scalar(-1.5)); });
  scalar_case("div scalar", [](auto& a) { return div(a, Scalar(3.0)); });
  scalar_case("rdiv scalar", [](auto& a) { return div(Scalar(3.0), a); });
  scalar_case("pow scalar", [](auto& a) { return pow(a, Scalar(2.5)); });
  scalar_case("rpow scalar", [](auto& a) { return pow(Scalar(1.7), a); });
  scalar_case("maximum scalar", [](auto& a) { return maximum(a, Scalar(1.0)); });
  scalar_case("clamp", [](auto& a) { return clamp(a, 0.8, 1.6); });
  cases.push_back({"where", [] { return two({3, 4}, {4}); }, [](const std::vector<Tensor>& x) {
                     Tensor cond(gt(NDArray::arange(0, 12, 1, DType::Int64).reshape({3, 4}),
                                    Scalar(5)));
                     return where(cond, x[0], x[1]);
                   }});
  cases.push_back({"masked_fill", [] { return std::vector<Tensor>{randn64({3, 4})}; },
                   [](const std::vector<Tensor>& x) {
                     Tensor mask(lt(NDArray::arange(0, 4, 1, DType::Int64), Scalar(2)));
                     return masked_fill(x[0], mask, -3.0);
                   }});

  // Shapes.
  auto one = [](Shape s) { return [s] { return std::vector<Tensor>{randn64(s)}; }; };
  cases.push_back({"reshape", one({2, 6}), [](auto& x) { return reshape(x[0], {3, -1, 2}); }});
  cases.push_back({"permute", one({2, 3, 4}), [](auto& x) { return permute(x[0], {2, 0, 1}); }});
  cases.push_back({"broadcast_to", one({3, 1}), [](auto& x) { return broadcast_to(x[0], {2, 3, 4}); }});
  cases.push_back({"expand", one({1, 4}), [](auto& x) { return expand(x[0], {3, -1}); }});
  cases.push_back({"squeeze/unsqueeze", one({3, 1, 2}),
                   [](auto& x) { return unsqueeze(squeeze(x[0], 1), 0); }});
  cases.push_back({"getitem", one({5, 6}), [](auto& x) {
                     return getitem(x[0], {Index::slice(1, std::nullopt, 2), Index::at(-2)});
                   }});
  cases.push_back({"getitem negative step", one({5, 6}), [](auto& x) {
                     return getitem(x[0], {Index::slice(std::nullopt, std::nullopt, -2),
                                           Index::new_axis(), Index::slice(1, 5)});
                   }});
  // Several views of one input: the engine gathers their gradients in one buffer (getitem is a
  // view op), overlapping views included, before or after a gradient of another op (exp).
  cases.push_back({"views of one tensor", one({4, 6}), [](auto& x) {
                     const Index all = Index::slice();
                     Tensor a = getitem(x[0], {all, Index::slice(0, 3)});
                     Tensor b = getitem(x[0], {all, Index::slice(2, 5)});
                     Tensor c = getitem(x[0], {Index::slice(1, 3), Index::slice(std::nullopt, std::nullopt, 2)});
                     return concatenate({mul(a, b), c}, 0);
                   }});
  cases.push_back({"views of one tensor beside another op", one({4, 6}), [](auto& x) {
                     const Index all = Index::slice();
                     Tensor e = getitem(exp(x[0]), {Index::slice(0, 2), Index::slice(0, 3)});
                     Tensor a = getitem(x[0], {Index::slice(2, 4), Index::slice(1, 4)});
                     Tensor b = getitem(x[0], {all, Index::slice(-3, std::nullopt)});
                     return concatenate({mul(e, a), b}, 0);
                   }});
  // Disjoint views (as q, k, v of a fused projection) are copied into the zero buffer, views that
  // overlap an earlier one are added: x[:, 0], x[:, 1], x[:, -1], then x[1:, 0] over x[:, 0] and
  // x[0:1, 1:3] over x[:, 1] and x[:, -1].
  cases.push_back({"disjoint and overlapping views", one({3, 3, 4}), [](auto& x) {
                     const Index all = Index::slice();
                     Tensor a = getitem(x[0], {all, Index::at(0)});
                     Tensor b = getitem(x[0], {all, Index::at(1)});
                     Tensor c = getitem(x[0], {all, Index::at(-1)});
                     Tensor d = getitem(x[0], {Index::slice(1, std::nullopt), Index::at(0)});
                     Tensor e = getitem(x[0], {Index::slice(0, 1), Index::slice(1, 3)});
                     return concatenate({mul(a, b), exp(c), d, reshape(e, {2, 4})}, 0);
                   }});
  // Stepped slices: x[:, 0:3:2] and x[:, 3::2] span disjoint columns and are copied; x[:, 5:0:-3]
  // (columns 5 and 2) spans both and is added.
  cases.push_back({"stepped views", one({4, 6}), [](auto& x) {
                     const Index all = Index::slice();
                     Tensor a = getitem(x[0], {all, Index::slice(0, 3, 2)});
                     Tensor b = getitem(x[0], {all, Index::slice(3, std::nullopt, 2)});
                     Tensor c = getitem(x[0], {all, Index::slice(5, 0, -3)});
                     return concatenate({mul(a, b), exp(c)}, 0);
                   }});
  cases.push_back({"concatenate", [] { return two({2, 3}, {4, 3}); },
                   [](auto& x) { return concatenate({x[0], x[1], x[0]}, 0); }});
  cases.push_back({"stack", [] { return two({2, 3}, {2, 3}); },
                   [](auto& x) { return stack({x[0], x[1]}, 1); }});
  cases.push_back({"split", one({7, 3}), [](auto& x) {
                     auto parts = split(x[0], {2, 5}, 0);
                     return mul(sum(parts[0], {0}), sum(parts[1], {0}));
                   }});
  cases.push_back({"chunk", one({3, 7}), [](auto& x) {
                     auto parts = chunk(x[0], 3, 1);
                     return concatenate({parts[2], parts[0]}, 1);
                   }});
  cases.push_back({"flip", one({3, 4}), [](auto& x) { return flip(x[0], {0, 1}); }});
  cases.push_back({"pad", one({2, 3}), [](auto& x) { return pad(x[0], {1, 0, 2, 1}, 0.5); }});

  // Reductions.
  cases.push_back({"sum dims", one({2, 3, 4}), [](auto& x) { return sum(x[0], {0, 2}); }});
  cases.push_back({"sum keepdim", one({2, 3, 4}), [](auto& x) { return sum(x[0], {1}, true); }});
  cases.push_back({"sum all", one({2, 3}), [](auto& x) { return sum(x[0]); }});
  cases.push_back({"sum transposed", one({3, 4}),
                   [](auto& x) { return sum(transpose(x[0], 0, 1), {0}); }});
  cases.push_back({"mean", one({2, 3, 4}), [](auto& x) { return mean(x[0], {-1}); }});
  cases.push_back({"max", one({3, 5}), [](auto& x) { return max(x[0], {1}); }});
  cases.push_back({"min all", one({3, 5}), [](auto& x) { return min(x[0]); }});
  cases.push_back({"var", one({4, 5}), [](auto& x) { return var(x[0], {0}); }});
  cases.push_back({"logsumexp", one({3, 5}), [](auto& x) { return logsumexp(x[0], 0); }});
  cases.push_back({"softmax", one({3, 5}), [](auto& x) { return softmax(x[0], 1); }});
  cases.push_back({"softmax dim0", one({3, 5}), [](auto& x) { return softmax(x[0], 0); }});
  cases.push_back({"log_softmax", one({3, 5}), [](auto& x) { return log_softmax(x[0], -1); }});

  // Linear algebra and nn ops.
  cases.push_back({"matmul", [] { return two({3, 4}, {4, 5}); }, [](auto& x) { return matmul(x[0], x[1]); }});
  cases.push_back({"matmul batched broadcast", [] { return two({2, 3, 4}, {4, 5}); },
                   [](auto& x) { return matmul(x[0], x[1]); }});
  cases.push_back({"matmul batch both", [] { return two({2, 1, 3, 4}, {3, 4, 2}); },
                   [](auto& x) { return matmul(x[0], x[1]); }});
  cases.push_back({"matmul transposed", [] { return two({4, 3}, {5, 4}); },
                   [](auto& x) { return matmul(transpose(x[0], 0, 1), transpose(x[1], 0, 1)); }});
  cases.push_back({"matmul vector", [] { return two({4}, {4, 5}); }, [](auto& x) { return matmul(x[0], x[1]); }});
  cases.push_back({"matmul matrix-vector", [] { return two({3, 4}, {4}); },
                   [](auto& x) { return matmul(x[0], x[1]); }});
  cases.push_back({"linear", [] { return std::vector<Tensor>{randn64({2, 3, 4}), randn64({5, 4}), randn64({5})}; },
                   [](auto& x) { return linear(x[0], x[1], x[2]); }});
  cases.push_back({"linear no bias", [] { return two({3, 4}, {2, 4}); },
                   [](auto& x) { return linear(x[0], x[1]); }});
  cases.push_back({"embedding", one({6, 3}), [](auto& x) {
                     int64_t ids[] = {1, 4, 1, 0, 5, 1};
                     Tensor t(NDArray::from_host(ids, {2, 3}, DType::Int64));
                     return embedding(x[0], t);
                   }});
  cases.push_back({"cross_entropy mean", one({4, 5}), [](auto& x) {
                     int64_t t[] = {1, -100, 4, 0};
                     return cross_entropy(x[0], Tensor(NDArray::from_host(t, {4}, DType::Int64)));
                   }});
  cases.push_back({"cross_entropy none 3-d", one({2, 3, 5}), [](auto& x) {
                     int64_t t[] = {1, 2, 4, 0, 3, 3};
                     return cross_entropy(x[0], Tensor(NDArray::from_host(t, {2, 3}, DType::Int64)),
                                          -100, Reduction::None);
                   }});
  cases.push_back({"layer_norm", [] { return std::vector<Tensor>{randn64({3, 6}), randn64({6}), randn64({6})}; },
                   [](auto& x) { return layer_norm(x[0], x[1], x[2], 1e-5); }});
  cases.push_back({"layer_norm no affine", one({2, 2, 5}),
                   [](auto& x) { return layer_norm(x[0], Tensor(), Tensor(), 1e-5); }});
  return cases;
}

}  // namespace

TEST_CASE("gradients match finite differences for every op", "[autograd]") {
  for (const GradCase& c : grad_cases()) {
    SECTION(c.name) { gradcheck(c); }
  }
}

TEST_CASE("forward values match direct NDArray computation", "[autograd]") {
  Tensor a = randn64({3, 4}), b = randn64({4});
  Tensor c = add(mul(a, b), Scalar(1.0));
  std::vector<double> got = c.data().to_vector<double>();
  std::vector<double> av = a.data().to_vector<double>(), bv = b.data().to_vector<double>();
  for (int i = 0; i < 12; ++i) CHECK(got[i] == Approx(av[i] * bv[i % 4] + 1.0));
}

TEST_CASE("astype and to_device pass gradients back in the input's dtype", "[autograd]") {
  Tensor x = randn64({3});
  sum(mul(astype(x, DType::Float32), Scalar(2.0f))).backward();
  REQUIRE(x.grad().dtype() == DType::Float64);
  CHECK(x.grad().data().to_vector<double>() == std::vector<double>{2, 2, 2});
}

TEST_CASE("gradients accumulate across paths and calls until zero_grad", "[autograd]") {
  Tensor x(NDArray::full({2}, 3.0, DType::Float64), true);
  Tensor y = add(mul(x, x), x);  // dy/dx = 2x + 1 = 7
  sum(y).backward();
  CHECK(x.grad().data().to_vector<double>() == std::vector<double>{7, 7});
  sum(mul(x, Scalar(2.0))).backward();
  CHECK(x.grad().data().to_vector<double>() == std::vector<double>{9, 9});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("gradients of views of one tensor gather in one buffer, in every backward mode", "[autograd]") {
  // loss = 2 sum(x[:, 0:3]) + 3 sum(x[:, 2:5]) + sum(x[1]): columns 0-1 get 2, column 2 gets 5,
  // columns 3-4 get 3, and row 1 one more.
  const std::vector<double> want = {2, 2, 5, 3, 3, 3, 3, 6, 4, 4, 2, 2, 5, 3, 3};
  Tensor x(NDArray::zeros({3, 5}, DType::Float64), true);
  const Index all = Index::slice();
  auto linear = [&] {
    return add(add(mul(sum(getitem(x, {all, Index::slice(0, 3)})), Scalar(2.0)),
                   mul(sum(getitem(x, {all, Index::slice(2, 5)})), Scalar(3.0))),
               sum(getitem(x, {Index::at(1)})));
  };
  Tensor loss = linear();
  loss.backward(Tensor(), /*retain_graph=*/true);
  CHECK(x.grad().data().to_vector<double>() == want);
  loss.backward();  // accumulates into x.grad, which the first call's buffer became
  std::vector<double> twice = want;
  for (double& v : twice) v *= 2;
  CHECK(x.grad().data().to_vector<double>() == twice);
  x.zero_grad();
  // With create_graph the general path runs and builds a graph: add sum(x[0]^2), whose gradient
  // 2 x[0] is 0 at x = 0 and whose second derivative puts 2 on row 0.
  Tensor row0 = getitem(x, {Index::at(0)});
  Tensor again = add(linear(), sum(mul(row0, row0)));
  again.backward(Tensor(), /*retain_graph=*/true, /*create_graph=*/true);
  CHECK(x.grad().data().to_vector<double>() == want);
  REQUIRE(x.grad().requires_grad());
  Tensor g = x.grad();
  x.zero_grad();
  sum(g).backward();
  CHECK(x.grad().data().to_vector<double>() ==
        std::vector<double>{2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
}

TEST_CASE("inputs without requires_grad get no gradient", "[autograd]") {
  Tensor x = randn64({3}), c = randn64({3}, false);
  sum(mul(x, c)).backward();
  CHECK(x.grad().defined());
  CHECK_FALSE(c.grad().defined());
}

TEST_CASE("backward twice needs retain_graph", "[autograd]") {
  Tensor x = randn64({3});
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  CHECK_THROWS_AS(y.backward(), RuntimeError);
  CHECK_THROWS_WITH(y.backward(), Catch::Contains("second time"));
}

TEST_CASE("non-scalar backward needs a gradient", "[autograd]") {
  Tensor x = randn64({3});
  Tensor y = mul(x, Scalar(2.0));
  CHECK_THROWS_AS(y.backward(), ValueError);
  y.backward(Tensor(NDArray::ones({3}, DType::Float64)));
  CHECK(x.grad().data().to_vector<double>() == std::vector<double>{2, 2, 2});
  CHECK_THROWS_AS(Tensor(NDArray::zeros({2}, DType::Int64), true), TypeError);
}

TEST_CASE("no_grad records no graph", "[autograd]") {
  Tensor x = randn64({3});
  {
    NoGradGuard guard;
    Tensor y = mul(x, x);
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(y.op());
  }
  CHECK(grad_enabled());
  CHECK(mul(x, x).requires_grad());
}

TEST_CASE("second derivatives through create_graph", "[autograd]") {
  // y = x^3 + sin(x): y' = 3x^2 + cos(x), y'' = 6x - sin(x).
  Tensor x(NDArray::full({1}, 0.7, DType::Float64), true);
  Tensor y = sum(add(pow(x, Scalar(3.0)), sin(x)));
  y.backward(Tensor(), false, /*create_graph=*/true);
  Tensor g = x.grad();
  CHECK(g.data().item() == Approx(3 * 0.49 + std::cos(0.7)));
  REQUIRE(g.requires_grad());
  x.zero_grad();
  sum(g).backward();
  CHECK(x.grad().data().item() == Approx(6 * 0.7 - std::sin(0.7)));
}

TEST_CASE("a graph 100,000 ops deep runs backward and frees without recursion", "[autograd]") {
  Tensor x(NDArray::full({1}, 1.0, DType::Float64), true);
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = mul(y, Scalar(1.0));
  y = sum(y);
  y.backward();
  CHECK(x.grad().data().item() == 1.0);
  // A second deep graph that is dropped without backward must also free iteratively.
  Tensor z = x;
  for (int i = 0; i < 100000; ++i) z = add(z, Scalar(0.0));
  z = Tensor();
  SUCCEED("freed");
}

TEST_CASE("a training loop of a small MLP keeps a flat memory footprint", "[autograd]") {
  const Backend& cpu_be = backend_for(cpu());
  manual_seed(0);
  Tensor w1(mul(NDArray::randn({8, 16}), Scalar(0.3)), true), b1(NDArray::zeros({16}), true);
  Tensor w2(mul(NDArray::randn({16, 1}), Scalar(0.3)), true);
  NDArray xs = NDArray::randn({32, 8});
  NDArray ys = sum(xs, {1}, true);
  int64_t after_warmup = 0, most = 0;
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step < 1000; ++step) {
    Tensor h = relu(add(matmul(Tensor(xs), w1), b1));
    Tensor diff = sub(matmul(h, w2), Tensor(ys));
    Tensor loss = mean(mul(diff, diff));
    loss.backward();
    {
      NoGradGuard guard;
      for (const Tensor& p : {w1, b1, w2}) {
        p.set_data(sub(p.data(), mul(p.grad().data(), Scalar(0.01))));
        p.zero_grad();
      }
    }
    if (step == 0) first_loss = loss.data().item();
    last_loss = loss.data().item();
    // Measured at the same point of every step: the graph and its buffers are gone.
    int64_t now = cpu_be.memory_stats().allocated;
    if (step == 10) after_warmup = now;
    if (step > 10) most = std::max(most, now);
  }
  CHECK(most == after_warmup);
  CHECK(last_loss < first_loss * 0.5);
}

TEST_CASE("a mixed-dtype op hands each input a gradient of its own dtype", "[autograd]") {
  Tensor a(NDArray::randn({3, 4}, DType::BFloat16), true);
  Tensor b(NDArray::randn({3, 4}, DType::Float32), true);
  Tensor y = mul(a, b);  // float32
  REQUIRE(y.dtype() == DType::Float32);
  sum(y).backward();
  CHECK(a.grad().dtype() == DType::BFloat16);
  CHECK(b.grad().dtype() == DType::Float32);
  // a.grad is b rounded to bfloat16.
  CHECK(a.grad().data().astype(DType::Float64).to_vector<double>() ==
        b.data().astype(DType::BFloat16).astype(DType::Float64).to_vector<double>());
}

TEST_CASE("autocast regions cast where they should, nest, and stay off during backward", "[autograd]") {
  Tensor x(NDArray::randn({4, 8}, DType::Float32));
  Tensor w(NDArray::randn({8, 8}, DType::Float32), true);
  REQUIRE_FALSE(autocast_state(DeviceType::CPU).enabled);
  Tensor loss;
  {
    AutocastGuard on(DeviceType::CPU, {true, DType::BFloat16});
    Tensor h = matmul(x, w);
    CHECK(h.dtype() == DType::BFloat16);
    Tensor p = softmax(h, -1);
    CHECK(p.dtype() == DType::Float32);
    {
      AutocastGuard off(DeviceType::CPU, {false, DType::BFloat16});
      CHECK(matmul(x, w).dtype() == DType::Float32);
    }
    CHECK(autocast_state(DeviceType::CPU).enabled);
    CHECK_FALSE(autocast_state(DeviceType::CUDA).enabled);
    loss = sum(mul(p, p));
    loss.backward();  // inside the region: the gradient's matmuls are not cast again
  }
  CHECK_FALSE(autocast_state(DeviceType::CPU).enabled);
  CHECK(w.grad().dtype() == DType::Float32);
  // The same gradient as the casts written by hand.
  Tensor w2(w.data(), true);
  Tensor h2 = matmul(astype(x, DType::BFloat16), astype(w2, DType::BFloat16));
  Tensor p2 = softmax(astype(h2, DType::Float32), -1);
  sum(mul(p2, p2)).backward();
  CHECK(w.grad().data().to_vector<float>() == w2.grad().data().to_vector<float>());
  CHECK_THROWS_AS(set_autocast_state(DeviceType::CPU, {true, DType::Float64}), TypeError);
}
