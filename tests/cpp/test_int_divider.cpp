// The multiply-shift division behind the CUDA backend's 32-bit strided kernels
// (backend_cuda/int_divider.h), checked on the host against the hardware's division: every
// divisor up to 2^12 and the divisors near powers of two, over dividends that stress the rounding
// (near multiples of the divisor, near 2^31) and a random sample.
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <vector>

#include "backend_cuda/int_divider.h"

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
