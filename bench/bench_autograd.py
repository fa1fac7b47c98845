"""Autograd overhead from Python: a chain of 10,000 tiny ops (forward and backward) on a
4-element tensor; the median of 7 runs, in microseconds per op. Prints a table and JSON.

    PYTHONPATH=python /usr/bin/python3 bench/bench_autograd.py
"""
import json
import statistics
import time

import needle as ndl

OPS, REPEATS = 10_000, 7


def main():
    x = ndl.ones(4, requires_grad=True)
    fwd, total = [], []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        y = x
        for _ in range(OPS):
            y = y * 1.0
        loss = y.sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        x.grad = None
        fwd.append((t1 - t0) / OPS * 1e6)
        total.append((t2 - t0) / OPS * 1e6)
    f, t = statistics.median(fwd), statistics.median(total)
    print(f"{'Python chain of 10,000 ops':<28} {'us per op':>12}")
    print(f"{'forward':<28} {f:>12.2f}")
    print(f"{'forward + backward':<28} {t:>12.2f}")
    print(json.dumps({"bench": "autograd_overhead_python", "ops": OPS,
                      "forward_us_per_op": round(f, 3), "forward_backward_us_per_op": round(t, 3)}))


if __name__ == "__main__":
    main()
