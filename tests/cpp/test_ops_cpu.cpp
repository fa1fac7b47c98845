// CPU kernels against the float64 reference of the shared op table (op_table.h), plus the CPU
// specifics the table cannot express: memory statistics, error messages, the random stream.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "backend_cpu/cpu_backend.h"
#include "op_table.h"

using namespace needle;
using namespace needle::optest;

namespace {

void run_family(const std::string& family) {
  std::vector<OpCase> cases = op_cases(family);
  REQUIRE(!cases.empty());
  for (const OpCase& c : cases) {
    INFO(c.name << " (seed " << c.seed << ")");
    check_against_reference(c, cpu());
  }
}

ArrayRef flat_ref(void* data, DType dt, int64_t n) {
  ArrayRef r;
  r.data = data;
  r.dtype = dt;
  r.ndim = 1;
  r.shape[0] = n;
  r.strides[0] = 1;
  return r;
}

}  // namespace

TEST_CASE("op table: unary ops", "[ops][cpu]") { run_family("unary"); }
TEST_CASE("op table: binary, comparison and logical ops", "[ops][cpu]") { run_family("binary"); }
TEST_CASE("op table: where", "[ops][cpu]") { run_family("where"); }
TEST_CASE("op table: copy and astype", "[ops][cpu]") { run_family("copy"); }
TEST_CASE("op table: fill", "[ops][cpu]") { run_family("fill"); }
TEST_CASE("op table: reductions", "[ops][cpu]") { run_family("reduce"); }
TEST_CASE("op table: matmul", "[ops][cpu]") { run_family("matmul"); }
TEST_CASE("op table: softmax, log_softmax, logsumexp", "[ops][cpu]") { run_family("rowops"); }
TEST_CASE("op table: index_select, index_add, embedding", "[ops][cpu]") { run_family("indexing"); }
TEST_CASE("op table: concatenate, stack, split", "[ops][cpu]") { run_family("join"); }
TEST_CASE("op table: random streams", "[ops][cpu]") { run_family("random"); }

TEST_CASE("op table: every case has a unique name", "[ops]") {
  std::vector<OpCase> cases = all_op_cases();
  std::vector<std::string> names;
  for (const OpCase& c : cases) names.push_back(c.name);
  std::sort(names.begin(), names.end());
  auto dup = std::adjacent_find(names.begin(), names.end());
  INFO((dup == names.end() ? std::string("none") : *dup));
  CHECK(dup == names.end());
}

namespace {

// An independent reference for float32 -> bfloat16: the nearer of the two bfloat16 values around
// x, measured in double, ties to the even one; past the largest finite value the next one up is
// 2^128 (IEEE rounding as if the exponent went on), which rounds to inf. NaNs stay NaN, quiet, with
// their sign and upper payload bits.
uint16_t bfloat16_reference(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint16_t down = static_cast<uint16_t>(u >> 16);  // toward zero
  if ((u & 0xffffu) == 0) return down;                 // exact, or an infinity
  const uint16_t up = static_cast<uint16_t>(down + 1);  // away from zero: never past inf
  auto magnitude = [](uint16_t b) {
    if ((b & 0x7fffu) == 0x7f80u) return std::ldexp(1.0, 128);
    uint32_t w = static_cast<uint32_t>(b & 0x7fffu) << 16;
    float f;
    std::memcpy(&f, &w, 4);
    return static_cast<double>(f);
  };
  uint32_t abs_bits = u & 0x7fffffffu;
  float abs_x;
  std::memcpy(&abs_x, &abs_bits, 4);
  const double below = abs_x - magnitude(down), above = magnitude(up) - abs_x;
  if (below != above) return below < above ? down : up;
  return (down & 1u) ? up : down;
}

}  // namespace

TEST_CASE("cpu float32 -> bfloat16 rounds to nearest even, NaNs quiet", "[cpu]") {
  std::vector<uint32_t> bits = bfloat16_rounding_cases();
  const int64_t n = static_cast<int64_t>(bits.size());
  const NDArray f = NDArray::from_host(bits.data(), {n}, DType::Float32, cpu());
  const std::vector<uint16_t> got = bfloat16_bits(f.astype(DType::BFloat16));
  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, &bits[i], 4);
    const uint16_t want = bfloat16_reference(bits[i]);
    if ((got[i] != want || bfloat16(f).bits != want) && mismatches++ == 0) first = i;
  }
  const size_t at = first < 0 ? 0 : size_t(first);
  INFO(mismatches << " mismatches; the first: float32 bits 0x" << std::hex << bits[at] << " -> 0x"
                  << got[at] << ", expected 0x" << bfloat16_reference(bits[at]));
  CHECK(mismatches == 0);
  // Spot checks of the reference itself.
  CHECK(bfloat16_reference(0x3f808000u) == 0x3f80);  // tie, down to the even 0x3f80
  CHECK(bfloat16_reference(0x3f818000u) == 0x3f82);  // tie, up to the even 0x3f82
  CHECK(bfloat16_reference(0x7f7f8000u) == 0x7f80);  // a tie past the largest finite: inf
  CHECK(bfloat16_reference(0x7f7f7fffu) == 0x7f7f);
  CHECK(bfloat16_reference(0x00008001u) == 0x0001);  // a subnormal rounds up
  CHECK(bfloat16_reference(0xffc00001u) == 0xffc0);  // -NaN keeps its sign
  CHECK(bfloat16_reference(0x7f800001u) == 0x7fc0);  // a payload in the low half only: quiet
}

TEST_CASE("cpu memory: statistics count allocations, frees and the peak", "[cpu][memory]") {
  const Backend& b = cpu_backend();
  b.reset_peak_memory_stats();
  MemoryStats before = b.memory_stats();
  void* p = b.alloc(1000);
  void* q = b.alloc(3000);
  CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
  CHECK(reinterpret_cast<uintptr_t>(q) % 64 == 0);
  std::memset(p, 1, 1000);
  MemoryStats mid = b.memory_stats();
  CHECK(mid.allocated - before.allocated == 4000);
  CHECK(mid.reserved >= mid.allocated);
  CHECK(mid.num_allocs - before.num_allocs == 2);
  CHECK(mid.num_device_allocs - before.num_device_allocs == 2);
  b.free(q, 3000);
  b.free(p, 1000);
  MemoryStats after = b.memory_stats();
  CHECK(after.allocated == before.allocated);
  CHECK(after.peak_allocated >= before.allocated + 4000);
  b.reset_peak_memory_stats();
  CHECK(b.memory_stats().peak_allocated == after.allocated);
  // Large buffers sit on 2 MiB boundaries (huge pages) but count the bytes asked for.
  const size_t big = (size_t(3) << 20) + 5;
  void* r = b.alloc(big);
  CHECK(reinterpret_cast<uintptr_t>(r) % (size_t(2) << 20) == 0);
  CHECK(b.memory_stats().allocated - after.allocated == static_cast<int64_t>(big));
  std::memset(r, 0, big);
  b.free(r, big);
  CHECK(b.memory_stats().allocated == after.allocated);
  // A freed large block is kept and served again without asking the system; empty_cache
  // returns it.
  MemoryStats cached = b.memory_stats();
  CHECK(cached.reserved >= cached.allocated + static_cast<int64_t>(big));
  void* again = b.alloc(big);
  CHECK(b.memory_stats().num_device_allocs == cached.num_device_allocs);
  b.free(again, big);
  b.empty_cache();
  CHECK(b.memory_stats().reserved == b.memory_stats().allocated);
}

TEST_CASE("cpu memory: an impossible allocation throws OutOfMemoryError naming the size",
          "[cpu][memory]") {
  const Backend& b = cpu_backend();
  const size_t huge = size_t(1) << 62;
  try {
    b.alloc(huge);
    FAIL("expected OutOfMemoryError");
  } catch (const OutOfMemoryError& e) {
    CHECK_THAT(e.what(), Catch::Contains(std::to_string(huge)));
  }
}

TEST_CASE("cpu indexing: out-of-range indices raise IndexError naming index and size",
          "[cpu][indexing]") {
  NDArray x = NDArray::ones({4, 3});
  NDArray bad = from_values({1, 4}, {2}, DType::Int64, cpu());
  try {
    index_select(x, 0, bad);
    FAIL("expected IndexError");
  } catch (const IndexError& e) {
    CHECK_THAT(e.what(), Catch::Contains("index 4") && Catch::Contains("size 4"));
  }
  NDArray negative = from_values({-1}, {1}, DType::Int32, cpu());
  CHECK_THROWS_AS(index_add(x, 1, negative, NDArray::ones({4, 1})), IndexError);
}

TEST_CASE("0-d arrays: ops that index a dim raise IndexError, flip and reductions accept dim 0",
          "[cpu][indexing]") {
  NDArray x = NDArray::full({}, 3.0, DType::Float32, cpu());
  NDArray index = from_values({0}, {1}, DType::Int64, cpu());
  CHECK_THROWS_AS(x.size(0), IndexError);
  CHECK_THROWS_AS(x.slice(-1, 0, 1), IndexError);
  CHECK_THROWS_AS(x.select(0, 0), IndexError);
  CHECK_THROWS_AS(split(x, {1}, 0), IndexError);
  CHECK_THROWS_AS(chunk(x, 2, 0), IndexError);
  CHECK_THROWS_AS(index_select(x, 0, index), IndexError);
  CHECK_THROWS_AS(index_add(x, 0, index, x), IndexError);
  try {
    x.size(-1);
    FAIL("expected IndexError");
  } catch (const IndexError& e) {
    CHECK_THAT(e.what(), Catch::Contains("size: dimension -1") && Catch::Contains("0-d"));
  }
  CHECK(flip(x, {0}).item() == 3.0);
  CHECK_THROWS_AS(flip(x, {1}), IndexError);
  CHECK_THROWS_AS(flip(NDArray::ones({2, 3}), {1, -1}), ValueError);
  CHECK(sum(x, {0}).item() == 3.0);
}

TEST_CASE("Shapes whose element or byte counts overflow int64 are refused", "[cpu]") {
  const int64_t big = int64_t(1) << 62;
  CHECK_THROWS_AS(shape_numel({big, 4}), ValueError);
  CHECK_THROWS_AS(shape_numel({0, big, 4}), ValueError);  // the strides would overflow
  CHECK(shape_numel({big, 0}) == 0);
  CHECK(shape_numel({big, 1}) == big);
  CHECK_THROWS_AS(NDArray::empty({big / 2}, DType::Float64, cpu()), ValueError);
  CHECK_THROWS_AS(NDArray::empty({big / 2, 4}, DType::Float32, cpu()), ValueError);
  CHECK_THROWS_AS(NDArray::ones({1}).broadcast_to({big, 4}), ValueError);
  CHECK_THROWS_AS(NDArray::eye(int64_t(1) << 32), ValueError);
  CHECK_THROWS_AS(NDArray::arange(0, 0x1p62, 1), ValueError);
  NDArray e = NDArray::eye(3, 2);
  CHECK(e.to_vector<double>() == std::vector<double>{1, 0, 0, 1, 0, 0});
  // Slice lengths with steps near 2^63 (the old formula overflowed to an empty slice).
  NDArray r = NDArray::arange(0, 5, 1, DType::Int64);
  CHECK(r.slice(0, std::nullopt, std::nullopt, std::numeric_limits<int64_t>::max()).numel() == 1);
  CHECK(r.slice(0, std::nullopt, std::nullopt, std::numeric_limits<int64_t>::min()).numel() == 1);
  CHECK(chunk(r, std::numeric_limits<int64_t>::max(), 0).size() == 5);
}

TEST_CASE("An int64 Scalar a float64 would round stays exact on integer dtypes", "[cpu]") {
  const int64_t big = (int64_t(1) << 53) + 1;
  CHECK(Scalar(big).rounds_int());
  CHECK_FALSE(Scalar(int64_t(1) << 53).rounds_int());
  NDArray one = NDArray::full({2}, 1.0, DType::Int64, cpu());
  CHECK(add(one, Scalar(big)).to_vector<int64_t>() == std::vector<int64_t>{big + 1, big + 1});
  CHECK(sub(Scalar(big), one).to_vector<int64_t>() == std::vector<int64_t>{big - 1, big - 1});
  CHECK(NDArray::full({3}, Scalar(big), DType::Int64).to_vector<int64_t>() ==
        std::vector<int64_t>(3, big));
  NDArray x = NDArray::zeros({2}, DType::Int64);
  x.setitem({Index::at(1)}, Scalar(big));
  CHECK(x.to_vector<int64_t>() == std::vector<int64_t>{0, big});
  Scalar beyond(0x1p64);
  beyond.kind = Scalar::Kind::Int;  // as the bindings make an int past int64
  CHECK_THROWS_AS(NDArray::full({1}, beyond, DType::Int64), ValueError);
  CHECK_THROWS_AS(add(one, beyond), ValueError);
}

TEST_CASE("A Scalar an integer dtype cannot hold is refused, not cast out of range", "[cpu]") {
  const int64_t big = int64_t(1) << 40;
  CHECK(Scalar(int64_t(2147483647)).fits(DType::Int32));
  CHECK_FALSE(Scalar(int64_t(2147483648)).fits(DType::Int32));
  CHECK(Scalar(-2147483648.9).fits(DType::Int32));  // truncates to -2**31
  CHECK_FALSE(Scalar(-2147483649.0).fits(DType::Int32));
  CHECK_FALSE(Scalar(0x1p63).fits(DType::Int64));
  CHECK(Scalar(-0x1p63).fits(DType::Int64));
  CHECK_FALSE(Scalar(std::nan("")).fits(DType::Int64));
  CHECK(Scalar(std::nan("")).fits(DType::Float32));
  CHECK(Scalar(big).fits(DType::Bool));
  CHECK(Scalar(big).repr() == "1099511627776");
  CHECK(Scalar(2.0).repr() == "2.0");
  CHECK(Scalar(-std::numeric_limits<double>::infinity()).repr() == "-inf");
  NDArray x = NDArray::zeros({2}, DType::Int32);
  CHECK_THROWS_AS(NDArray::full({1}, Scalar(big), DType::Int32), ValueError);
  CHECK_THROWS_AS(x.fill(Scalar(big)), ValueError);
  CHECK_THROWS_AS(x.setitem({Index::at(0)}, Scalar(1e10)), ValueError);
  CHECK_THROWS_AS(add(x, Scalar(big)), ValueError);
  CHECK_THROWS_AS(where(NDArray::zeros({2}, DType::Bool), x, Scalar(big)), ValueError);
  CHECK_THROWS_AS(NDArray::arange_int(0, big, big / 4, DType::Int32), ValueError);
  CHECK_THROWS_AS(NDArray::arange(0.0, 1e10, 1e9, DType::Int32), ValueError);
  CHECK(x.to_vector<int32_t>() == std::vector<int32_t>{0, 0});  // nothing was written
  // A comparison has an answer for any int: int32 arrays compare in int64.
  CHECK(lt(x, Scalar(big)).astype(DType::Int64).to_vector<int64_t>() == std::vector<int64_t>{1, 1});
  CHECK(eq(x, Scalar(-big)).astype(DType::Int64).to_vector<int64_t>() ==
        std::vector<int64_t>{0, 0});
  // clamp keeps an int array int when its bounds are ints.
  NDArray c = clamp(NDArray::arange_int(0, 4, 1, DType::Int64), Scalar(1), Scalar(2));
  CHECK(c.dtype() == DType::Int64);
  CHECK(c.to_vector<int64_t>() == std::vector<int64_t>{1, 1, 2, 2});
  CHECK(clamp(c, Scalar(0.5), std::nullopt).dtype() == DType::Float32);
}

TEST_CASE("add_into: a broadcast dst is refused, a src sharing dst's buffer is read first", "[cpu]") {
  NDArray row = NDArray::ones({1, 3}, DType::Float32);
  CHECK_THROWS_WITH(add_into(row.broadcast_to({2, 3}), NDArray::ones({2, 3}, DType::Float32)),
                    Catch::Contains("broadcast view") && Catch::Contains("stride 0 in dim 0"));
  NDArray a = NDArray::arange(0, 4, 1, DType::Float64);
  add_into(a.slice(0, 1, std::nullopt), a.slice(0, 0, 3));  // a[1:] += a[:3], overlapping
  CHECK(a.to_vector<double>() == std::vector<double>{0, 1, 3, 5});
}

TEST_CASE("cpu kernels: dtype mismatches are rejected with both dtypes named", "[cpu]") {
  const Backend& b = cpu_backend();
  float a[4] = {1, 2, 3, 4};
  double o[4];
  try {
    b.unary(UnaryOp::Exp, flat_ref(a, DType::Float32, 4), flat_ref(o, DType::Float64, 4));
    FAIL("expected TypeError");
  } catch (const TypeError& e) {
    CHECK_THAT(e.what(), Catch::Contains("float32") && Catch::Contains("float64"));
  }
}

TEST_CASE("cpu reduce: float32 sums of millions of values keep float32 accuracy", "[cpu][reduce]") {
  // Naive float accumulation of 2^24 values of 0.1 is off by several percent.
  const int64_t n = int64_t(1) << 24;
  NDArray x = NDArray::full({n}, 0.1, DType::Float32);
  const double expected = static_cast<double>(0.1f) * static_cast<double>(n);
  CHECK(std::abs(sum(x).item() - expected) <= 1e-6 * expected);
  NDArray cols = NDArray::full({n / 8, 8}, 0.1, DType::Float32);
  NDArray s = sum(cols, {0});
  for (double v : read_host(s).v) CHECK(std::abs(v - expected / 8) <= 1e-6 * expected / 8);
}

TEST_CASE("cpu gemm: alpha, beta and zero-size edge cases", "[cpu][gemm]") {
  const Backend& b = cpu_backend();
  // C = 2 * A @ B + 0.5 * C, with A (2x3), B (3x2), batch 2 sharing B (stride 0).
  std::vector<double> A = {1, 2, 3, 4, 5, 6, -1, 0, 1, 2, 2, 2};
  std::vector<double> B = {1, 0, 0, 1, 1, 1};
  std::vector<double> C = {1, 1, 1, 1, 2, 2, 2, 2};
  GemmArgs g;
  g.dtype = DType::Float64;
  g.m = 2, g.n = 2, g.k = 3, g.batch = 2;
  g.a = A.data(), g.lda = 3, g.stride_a = 6;
  g.b = B.data(), g.ldb = 2, g.stride_b = 0;
  g.c = C.data(), g.ldc = 2, g.stride_c = 4;
  g.alpha = 2, g.beta = 0.5;
  b.gemm(g);
  std::vector<double> expected = {2 * 4 + 0.5, 2 * 5 + 0.5, 2 * 10 + 0.5, 2 * 11 + 0.5,
                                  2 * 0 + 1,   2 * 1 + 1,   2 * 4 + 1,    2 * 4 + 1};
  CHECK(C == expected);
  // With a bias, added to every row of every batch item after alpha and beta.
  std::vector<double> bias = {10, -20};
  C = {1, 1, 1, 1, 2, 2, 2, 2};
  g.bias = bias.data();
  b.gemm(g);
  for (size_t i = 0; i < expected.size(); ++i) CHECK(C[i] == expected[i] + bias[i % 2]);
  // bfloat16 adds the bias in float before its one rounding: 16.125^2 = 260.015625, plus 1 is
  // 261.015625, which rounds to 262; rounding the product first (to 260) and then adding 1 would
  // give 261, a tie, rounded to the even 260.
  {
    std::vector<bfloat16> a1 = {bfloat16(16.125f)}, b1 = {bfloat16(16.125f)}, c1 = {bfloat16(0.0f)};
    std::vector<bfloat16> k1 = {bfloat16(1.0f)};
    GemmArgs h;
    h.dtype = DType::BFloat16;
    h.m = h.n = h.k = 1;
    h.a = a1.data(), h.b = b1.data(), h.c = c1.data(), h.lda = h.ldb = h.ldc = 1;
    h.bias = k1.data();
    b.gemm(h);
    CHECK(static_cast<float>(c1[0]) == 262.0f);
  }
  // k == 0: C = beta * C, and beta == 0 overwrites even NaN.
  std::vector<float> Cf = {std::nanf(""), 3.0f};
  GemmArgs z;
  z.dtype = DType::Float32;
  z.m = 1, z.n = 2, z.k = 0;
  z.a = nullptr, z.b = nullptr, z.c = Cf.data(), z.ldc = 2, z.lda = 1, z.ldb = 2;
  z.beta = 0.0;
  b.gemm(z);
  CHECK(Cf[0] == 0.0f);
  CHECK(Cf[1] == 0.0f);
  CHECK_THROWS_AS(
      [&] {
        GemmArgs i = z;
        i.dtype = DType::Int32;
        b.gemm(i);
      }(),
      TypeError);
}

TEST_CASE("linear_param_grads: g^T x and g summed over rows, float32 from bfloat16 operands",
          "[cpu][gemm]") {
  Rng rng(901);
  struct Case {
    DType in, out;
  };
  for (Case c : {Case{DType::BFloat16, DType::Float32}, Case{DType::BFloat16, DType::BFloat16},
                 Case{DType::Float32, DType::Float32}, Case{DType::Float64, DType::Float64}}) {
    for (const Shape& dims :
         {Shape{37, 40, 24}, Shape{1, 1, 1}, Shape{0, 5, 3}, Shape{6, 0, 3}, Shape{6, 5, 0}}) {
      for (bool strided : {false, true}) {
        const int64_t rows = dims[0], out = dims[1], in = dims[2];
        INFO(dtype_name(c.in) << " -> " << dtype_name(c.out) << " rows=" << rows << " out=" << out
                              << " in=" << in << " strided=" << strided);
        // Strided: column slices of wider arrays, so the leading dimensions exceed the widths.
        const int64_t pad = strided ? 3 : 0;
        NDArray g =
            random_values(rng, {rows, out + pad}, c.in, Domain::Real, cpu()).slice(1, 0, out);
        NDArray x = random_values(rng, {rows, in + pad}, c.in, Domain::Real, cpu()).slice(1, 0, in);
        NDArray db;
        NDArray dw = linear_param_grads(g, x, c.out, &db);
        REQUIRE(dw.dtype() == c.out);
        REQUIRE(db.dtype() == c.out);
        REQUIRE(dw.shape() == Shape{out, in});
        REQUIRE(db.shape() == Shape{out});
        // The float64 product of the same operands: a float32 result holds it to float32
        // accuracy (bfloat16 rounding would be off by up to 2^-9 relative).
        NDArray g64 = g.astype(DType::Float64), x64 = x.astype(DType::Float64);
        Tolerance t = c.out == DType::BFloat16  ? Tolerance{1e-2, 1e-2}
                      : c.out == DType::Float32 ? Tolerance{3e-5, 1e-5}
                                                : Tolerance{1e-12, 1e-12};
        expect_param_grads_close(dw, db, g64, x64, t);
        // Without the bias gradient, the same weight gradient.
        expect_close(read_host(linear_param_grads(g, x, c.out, nullptr)), read_host(dw),
                     Tolerance{0, 0}, "dw without db");
      }
    }
  }
  NDArray f32 = NDArray::ones({4, 3}, DType::Float32), f64 = NDArray::ones({4, 3}, DType::Float64);
  CHECK_THROWS_AS(linear_param_grads(f32, f32, DType::BFloat16, nullptr), TypeError);
  CHECK_THROWS_AS(linear_param_grads(f64, f64, DType::Float32, nullptr), TypeError);
  CHECK_THROWS_AS(
      linear_param_grads(f32, NDArray::ones({5, 3}, DType::Float32), DType::Float32, nullptr),
      ValueError);
  // The backend's own check: row sums only for one matrix, unscaled.
  std::vector<float> A(6, 1.0f), B(6, 1.0f), C(4), S(2);
  GemmArgs r;
  r.m = 2, r.n = 2, r.k = 3, r.batch = 2;
  r.a = A.data(), r.lda = 3, r.b = B.data(), r.ldb = 2, r.c = C.data(), r.ldc = 2;
  r.stride_c = 0;
  r.a_row_sums = S.data();
  CHECK_THROWS_AS(cpu_backend().gemm(r), ValueError);
}

TEST_CASE("random: the Philox generator matches the Random123 known answer", "[cpu][random]") {
  // Random123's kat_vectors: philox4x32_10, counter 0, key 0.
  Philox4 r = philox4x32_10(0, 0);
  CHECK(r.x[0] == 0x6627e8d5u);
  CHECK(r.x[1] == 0xe169c58du);
  CHECK(r.x[2] == 0xbc57ac4cu);
  CHECK(r.x[3] == 0x9b00dbd8u);
}

TEST_CASE("random: seeded draws repeat, successive draws differ", "[cpu][random]") {
  manual_seed(1234);
  std::vector<double> a = read_host(NDArray::rand({1000})).v;
  std::vector<double> b = read_host(NDArray::rand({1000})).v;
  manual_seed(1234);
  std::vector<double> a2 = read_host(NDArray::rand({1000})).v;
  CHECK(a == a2);
  CHECK(a != b);
  manual_seed(1235);
  CHECK(read_host(NDArray::rand({1000})).v != a);
}

TEST_CASE("random: moments of uniform, normal and bernoulli draws", "[cpu][random]") {
  const int64_t n = 1 << 20;
  for (DType dt : {DType::Float32, DType::Float64, DType::BFloat16}) {
    INFO(dtype_name(dt));
    manual_seed(7);
    auto moments = [](const std::vector<double>& v) {
      double m = std::accumulate(v.begin(), v.end(), 0.0) / v.size(), var = 0;
      for (double x : v) var += (x - m) * (x - m);
      return std::make_pair(m, var / v.size());
    };
    std::vector<double> u = read_host(NDArray::uniform({n}, -1.0, 3.0, dt)).v;
    auto [um, uv] = moments(u);
    CHECK(std::abs(um - 1.0) < 0.01);
    CHECK(std::abs(uv - 16.0 / 12.0) < 0.01);
    CHECK(*std::min_element(u.begin(), u.end()) >= -1.0);
    CHECK(*std::max_element(u.begin(), u.end()) <= 3.0);
    auto [nm, nv] = moments(read_host(NDArray::normal({n}, 0.5, 2.0, dt)).v);
    CHECK(std::abs(nm - 0.5) < 0.01);
    CHECK(std::abs(nv - 4.0) < 0.05);
    std::vector<double> bern = read_host(NDArray::bernoulli({n}, 0.25, dt)).v;
    CHECK(std::all_of(bern.begin(), bern.end(), [](double x) { return x == 0.0 || x == 1.0; }));
    CHECK(std::abs(moments(bern).first - 0.25) < 0.005);
  }
}

TEST_CASE("random: any slice of the stream can be regenerated from its counter offset",
          "[cpu][random]") {
  const Backend& b = cpu_backend();
  for (RandomKind kind : {RandomKind::Uniform, RandomKind::Normal}) {
    for (DType dt : {DType::Float32, DType::Float64}) {
      INFO(dtype_name(dt));
      NDArray whole = NDArray::empty({103}, dt), part = NDArray::empty({41}, dt);
      b.random(kind, whole.ref(), 99, 5, 0.0, 1.0);
      // Elements 40..80 of the stream start at counter 5 + 40 / 4.
      b.random(kind, part.ref(), 99, 15, 0.0, 1.0);
      std::vector<double> w = read_host(whole).v, p = read_host(part).v;
      CHECK(std::equal(p.begin(), p.end(), w.begin() + 40));
      // A different seed gives a different stream.
      b.random(kind, part.ref(), 100, 15, 0.0, 1.0);
      CHECK(!std::equal(p.begin(), p.end(), read_host(part).v.begin()));
    }
  }
}

namespace {
// Host memory filled "later", as a device's non-blocking copy fills it: wait() writes the values
// and counts the waits; the destructor records that the memory went back to its owner.
struct FakePendingCopy final : PendingHostCopy {
  std::vector<float> mem;
  int* waits;
  bool* released;
  FakePendingCopy(size_t n, int* w, bool* r) : mem(n, -1.0f), waits(w), released(r) {}
  ~FakePendingCopy() override { *released = true; }
  void* data() const override { return const_cast<float*>(mem.data()); }
  void wait() const override {
    ++*waits;
    auto* p = const_cast<float*>(mem.data());
    std::iota(p, p + mem.size(), 1.0f);
  }
};
}  // namespace

TEST_CASE("an array over a pending host copy waits for it once, on first use", "[ndarray][cpu]") {
  int waits = 0;
  bool released = false;
  {
    auto buffer = std::make_shared<Buffer>(std::make_unique<FakePendingCopy>(6, &waits, &released),
                                           6 * sizeof(float));
    CHECK(buffer->pinned());
    CHECK(buffer->device().is_cpu());
    NDArray a = NDArray::from_buffer(buffer, {2, 3}, {3, 1}, 0, DType::Float32);
    NDArray view = a.transpose(0, 1);  // metadata only: nothing read yet
    CHECK(waits == 0);
    // A kernel reading a view sees the values the copy delivers.
    CHECK(view.to_vector<float>() == std::vector<float>{1, 4, 2, 5, 3, 6});
    CHECK(waits == 1);
    CHECK(sum(a).item() == 21.0);
    CHECK(a.to_vector<float>() == std::vector<float>{1, 2, 3, 4, 5, 6});
    CHECK(waits == 1);  // once only
    CHECK_FALSE(released);
  }
  CHECK(released);  // the memory went back to the copy's owner, not to the CPU allocator
  // A copy to the CPU's own memory is blocking (the CPU has no copy_to_host_async).
  NDArray c = NDArray::arange(0, 4, 1, DType::Float32);
  CHECK(cpu_backend().copy_to_host_async == nullptr);
  CHECK_FALSE(c.to(cpu(), true).buffer()->pinned());
}
