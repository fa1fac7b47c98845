// Autograd overhead from C++: a chain of 10,000 tiny ops (forward and backward) on a 4-element
// tensor, so the time is the framework's per-op cost, not arithmetic. Prints a table and JSON.
// The Python counterpart is bench/bench_autograd.py; compare the two for the binding overhead.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "autograd/functional.h"

using namespace needle;

int main() {
  const int kOps = 10000, kRepeats = 7;
  Tensor x(NDArray::ones({4}), true);
  std::vector<double> fwd, total;
  for (int r = 0; r < kRepeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    Tensor y = x;
    for (int i = 0; i < kOps; ++i) y = mul(y, Scalar(1.0));
    Tensor loss = sum(y);
    auto t1 = std::chrono::steady_clock::now();
    loss.backward();
    auto t2 = std::chrono::steady_clock::now();
    x.zero_grad();
    fwd.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / kOps);
    total.push_back(std::chrono::duration<double, std::micro>(t2 - t0).count() / kOps);
  }
  std::sort(fwd.begin(), fwd.end());
  std::sort(total.begin(), total.end());
  double f = fwd[kRepeats / 2], t = total[kRepeats / 2];
  std::printf("%-28s %12s\n", "C++ chain of 10,000 ops", "us per op");
  std::printf("%-28s %12.2f\n", "forward", f);
  std::printf("%-28s %12.2f\n", "forward + backward", t);
  std::printf("{\"bench\": \"autograd_overhead_cpp\", \"ops\": %d, \"forward_us_per_op\": %.3f, "
              "\"forward_backward_us_per_op\": %.3f}\n", kOps, f, t);
  return 0;
}
