// How the CUDA backend's strided elementwise kernels index their operands
// (backend_cuda/strided_plan.h), checked on the host, where the same functions compile:
// - the multiply-shift division against the hardware's division: every divisor up to 2^12 and the
//   divisors near powers of two, over dividends that stress the rounding (near multiples of the
//   divisor, near 2^31) and a random sample;
// - the int64 and 32-bit plans' offsets against brute force over random views (permuted, sliced,
//   flipped, broadcast), and where the 32-bit plan must refuse.
#include <catch2/catch.hpp>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "backend_cuda/strided_plan.h"

using needle::ArrayRef;
using needle::kMaxDims;
using needle::cuda::make_plan;
using needle::cuda::narrow_plan;
using needle::cuda::StridedPlan;
using needle::cuda::StridedPlan32;
using needle::cuda::IntDivider;

namespace {

constexpr uint32_t kMaxDividend = 0x7fffffffu;  // the plan's bound: every index below 2^31

std::vector<uint32_t> divisors() {
  std::vector<uint32_t> ds;
  for (uint32_t d = 1; d <= 4096; ++d) ds.push_back(d);
  for (int s = 12; s <= 31; ++s) {
    uint32_t p = uint32_t(1) << s;
    for (int64_t delta = -3; delta <= 3; ++delta) {
      int64_t d = int64_t(p) + delta;
      if (d >= 1 && d <= (int64_t(1) << 31)) ds.push_back(static_cast<uint32_t>(d));
    }
  }
  for (uint32_t d : {1536u, 2048u * 8u, 50304u, 16384u * 3u, 1000003u, 0x7fffffffu})
    ds.push_back(d);
  return ds;
}

}  // namespace

TEST_CASE("IntDivider divides exactly below 2^31", "[int_divider]") {
  std::mt19937 rng(20261206);
  std::uniform_int_distribution<uint32_t> any(0, kMaxDividend);
  int64_t checked = 0;
  for (uint32_t d : divisors()) {
    IntDivider div(d);
    auto check = [&](int64_t n) {
      if (n < 0 || n > kMaxDividend) return;
      uint32_t got = div.div(static_cast<uint32_t>(n));
      uint32_t want = static_cast<uint32_t>(n) / d;
      if (got != want) {
        INFO("divisor " << d << ", dividend " << n << ": got " << got << ", want " << want);
        CHECK(got == want);
      }
      ++checked;
    };
    // Around the first multiples, the multiples nearest 2^31, and the top of the range.
    for (int64_t m = 0; m < 4; ++m)
      for (int64_t e = -1; e <= 1; ++e) check(m * d + e);
    int64_t top = (int64_t(kMaxDividend) / d) * d;
    for (int64_t e = -2; e <= 2; ++e) check(top + e), check(top - d + e);
    for (int64_t n = kMaxDividend - 8; n <= kMaxDividend; ++n) check(n);
    for (int i = 0; i < 64; ++i) check(any(rng));
  }
  REQUIRE(checked > 300000);
}

TEST_CASE("IntDivider by 1 and by 2^31 are the identity and zero", "[int_divider]") {
  IntDivider one(1), big(uint32_t(1) << 31);
  for (uint32_t n : {0u, 1u, 12345u, kMaxDividend}) {
    CHECK(one.div(n) == n);
    CHECK(big.div(n) == 0u);
  }
}

namespace {

// A random view of `shape`: strides of a compact store of the dims in a random order, some dims
// stepped by 2 or 3 (a slice), some walked backwards (a flip), some broadcast (stride 0).
ArrayRef random_view(std::mt19937& rng, const std::vector<int64_t>& shape) {
  const int nd = static_cast<int>(shape.size());
  std::vector<int> order(nd);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  ArrayRef r;
  r.ndim = nd;
  int64_t stride = 1;
  for (int j = nd - 1; j >= 0; --j) {
    int d = order[j];
    int64_t step = 1 + static_cast<int64_t>(rng() % 3);
    r.shape[d] = shape[d];
    switch (rng() % 5) {
      case 0: r.strides[d] = 0; break;                  // broadcast
      case 1: r.strides[d] = -stride * step; break;     // flipped
      default: r.strides[d] = stride * step; break;     // compact or sliced
    }
    stride *= shape[d] * step;
  }
  return r;
}

// Offsets of each operand at row-major index i of the output's shape, walked dim by dim.
std::vector<int64_t> brute_offsets(const ArrayRef* const (&ops)[3], int64_t i) {
  std::vector<int64_t> off(3, 0);
  for (int d = ops[0]->ndim - 1; d >= 0; --d) {
    int64_t idx = i % ops[0]->shape[d];
    i /= ops[0]->shape[d];
    for (int k = 0; k < 3; ++k) off[k] += idx * ops[k]->strides[d];
  }
  return off;
}

}  // namespace

TEST_CASE("strided plans give every operand's offset at every index", "[strided_plan]") {
  std::mt19937 rng(20261207);
  int64_t checked = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int nd = static_cast<int>(rng() % 7);  // 0..6 dims, sizes 1..5
    std::vector<int64_t> shape(nd);
    for (int64_t& n : shape) n = 1 + static_cast<int64_t>(rng() % 5);
    ArrayRef a = random_view(rng, shape), b = random_view(rng, shape), c = random_view(rng, shape);
    const ArrayRef* ops[3] = {&a, &b, &c};
    StridedPlan<3> plan = make_plan<3>(ops, "test");
    StridedPlan32<3> narrow;
    REQUIRE(narrow_plan(plan, &narrow));
    REQUIRE(plan.numel == a.numel());
    for (int64_t i = 0; i < plan.numel; ++i) {
      std::vector<int64_t> want = brute_offsets(ops, i);
      int64_t wide[3];
      int32_t small[3];
      plan.offsets(i, wide);
      narrow.offsets(static_cast<uint32_t>(i), small);
      for (int k = 0; k < 3; ++k) {
        if (wide[k] != want[k] || small[k] != want[k]) {
          INFO("trial " << trial << ", index " << i << ", operand " << k << ": int64 " << wide[k]
                        << ", int32 " << small[k] << ", want " << want[k]);
          CHECK(wide[k] == want[k]);
          CHECK(small[k] == want[k]);
        }
      }
      ++checked;
    }
  }
  REQUIRE(checked > 10000);
}

TEST_CASE("the 32-bit plan refuses views whose offsets leave int32", "[strided_plan]") {
  // Two rows of 64 elements: the second row starts at `row` elements; the largest offset is
  // row + 63, which must stay at or below 2^31 - 1.
  auto plan_for = [](int64_t row) {
    ArrayRef a;
    a.ndim = 2;
    a.shape[0] = 2, a.shape[1] = 64;
    a.strides[0] = row, a.strides[1] = 1;
    const ArrayRef* ops[1] = {&a};
    return make_plan<1>(ops, "test");
  };
  StridedPlan32<1> narrow;
  const int64_t max32 = 0x7fffffff;
  CHECK(narrow_plan(plan_for(max32 - 63), &narrow));
  CHECK_FALSE(narrow_plan(plan_for(max32 - 62), &narrow));
  CHECK_FALSE(narrow_plan(plan_for(-(max32 - 62)), &narrow));  // flipped: |stride| counts
  CHECK_FALSE(narrow_plan(plan_for(int64_t(1) << 31), &narrow));
  // More than 2^31 - 1 elements, even if compactly strided, stays on the int64 kernel.
  StridedPlan<1> many;
  many.ndim = 2;
  many.numel = max32 + 1;
  many.shape[0] = 2, many.shape[1] = (max32 + 1) / 2;
  many.strides[0][0] = 1, many.strides[0][1] = 2;
  CHECK_FALSE(narrow_plan(many, &narrow));
}
