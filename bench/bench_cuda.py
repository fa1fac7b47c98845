"""CUDA kernel benchmark: needle's CUDA kernels against torch on the same GPU, same inputs.

Usage (on the GPU machine, with needle._C built there):
    PYTHONPATH=python python3 bench/bench_cuda.py [out.json]

For each case: the median time over repeats (each repeat runs `iters` launches, then one
synchronisation, so launch overhead is amortised as in a training step), the effective bandwidth
from the bytes the op must move at least once (or TFLOP/s for matmuls), the ratio to torch, and
the relative error of needle's result against torch's (every element compared, so an unwritten
output shows up as NaN or a large error). Prints a table last; writes all numbers as JSON.
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import torch

import needle as ndl
from needle import array_api as A

DEV = "cuda:0"
TDEV = torch.device("cuda:0")


def needle_from(t):
    """The torch tensor's values as a needle array on the GPU (via float32 numpy)."""
    arr = A.NDArray(t.detach().float().cpu().numpy(), device=ndl.device(DEV))
    if t.dtype == torch.bfloat16:
        arr = arr.to("bfloat16")
    return arr


def to_torch(x):
    return torch.from_numpy(np.asarray(x.to("float32").numpy())).to(TDEV)


def time_it(fn, sync, iters, repeats=7):
    fn()
    sync()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / iters)
    return statistics.median(samples)


def rel_err(got, want):
    want = want.double()
    got = got.double()
    denom = want.norm().item() or 1.0
    return (got - want).norm().item() / denom


def main():
    if not ndl.cuda.is_available():
        print("no CUDA device: nothing to benchmark")
        return
    torch.manual_seed(0)
    nsync = lambda: ndl.cuda.synchronize()
    tsync = lambda: torch.cuda.synchronize()
    rows = []

    def case(name, tinputs, nfn, tfn, bytes_moved=0, flops=0, iters=20):
        ninputs = [needle_from(t) for t in tinputs]
        err = rel_err(to_torch(nfn(*ninputs)), tfn(*tinputs).float())
        tn = time_it(lambda: nfn(*ninputs), nsync, iters)
        tt = time_it(lambda: tfn(*tinputs), tsync, iters)
        rate = (flops / tn / 1e12) if flops else (bytes_moved / tn / 1e9)
        rows.append({"case": name, "needle_ms": tn * 1e3, "torch_ms": tt * 1e3,
                     "ratio": tn / tt, "rate": rate, "unit": "TFLOP/s" if flops else "GB/s",
                     "rel_err": err})

    n = 1 << 24
    f32 = dict(device=TDEV, dtype=torch.float32)
    a, b = torch.randn(n, **f32), torch.randn(n, **f32)
    case("add f32 16M", [a, b], lambda x, y: x + y, lambda x, y: x + y, bytes_moved=12 * n)
    case("mul scalar f32 16M", [a], lambda x: x * 3.0, lambda x: x * 3.0, bytes_moved=8 * n)
    case("exp f32 16M", [a], lambda x: ndl._C.exp(x), torch.exp, bytes_moved=8 * n)
    ab = a.bfloat16()
    case("add bf16 16M", [ab, ab], lambda x, y: x + y, lambda x, y: x + y, bytes_moved=6 * n)
    m = torch.randn(4096, 4096, **f32)
    case("transpose copy f32 4096^2", [m], lambda x: x.transpose(0, 1).compact(),
         lambda x: x.t().contiguous(), bytes_moved=8 * m.numel())
    case("sum all f32 16M", [a], lambda x: A.sum(x), torch.sum, bytes_moved=4 * n)
    case("sum dim0 f32 4096^2", [m], lambda x: A.sum(x, [0]), lambda x: x.sum(0),
         bytes_moved=4 * m.numel())
    case("sum dim1 f32 4096^2", [m], lambda x: A.sum(x, [1]), lambda x: x.sum(1),
         bytes_moved=4 * m.numel())
    case("argmax dim1 f32 4096^2", [m], lambda x: A.argmax(x, 1), lambda x: x.argmax(1),
         bytes_moved=4 * m.numel())
    logits = torch.randn(2048, 50304, **f32)
    case("softmax f32 2048x50304", [logits], lambda x: A.softmax(x, -1),
         lambda x: torch.softmax(x, -1), bytes_moved=8 * logits.numel(), iters=5)
    case("logsumexp f32 2048x50304", [logits], lambda x: A.logsumexp(x, -1),
         lambda x: torch.logsumexp(x, -1), bytes_moved=4 * logits.numel(), iters=5)
    k = 4096
    x, y = torch.randn(k, k, **f32), torch.randn(k, k, **f32)
    torch.backends.cuda.matmul.allow_tf32 = False
    case("matmul f32 4096^3 (highest)", [x, y], lambda p, q: p @ q, lambda p, q: p @ q,
         flops=2 * k**3, iters=5)
    set_precision = getattr(ndl, "set_matmul_precision", None) or getattr(ndl._C, "set_matmul_precision", None)
    if set_precision is not None:
        set_precision("high")
        torch.backends.cuda.matmul.allow_tf32 = True
        case("matmul f32 4096^3 (tf32)", [x, y], lambda p, q: p @ q, lambda p, q: p @ q,
             flops=2 * k**3, iters=5)
        set_precision("highest")
    xb, yb = x.bfloat16(), y.bfloat16()
    case("matmul bf16 4096^3", [xb, yb], lambda p, q: p @ q, lambda p, q: p @ q,
         flops=2 * k**3, iters=5)
    bq, bk = torch.randn(48, 512, 64, **f32), torch.randn(48, 64, 512, **f32)
    case("bmm f32 48x512x64x512", [bq, bk], lambda p, q: p @ q, lambda p, q: p @ q,
         flops=2 * 48 * 512 * 64 * 512)

    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("OUT", "."),
                                                             "bench_cuda.json")
    with open(out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(0), "rows": rows}, f, indent=1)
    print(f"device: {torch.cuda.get_device_name(0)}  (times: median per call)")
    print(f"{'case':32s} {'needle ms':>10s} {'torch ms':>10s} {'ratio':>7s} {'rate':>14s} {'rel err':>9s}")
    for r in rows:
        print(f"{r['case']:32s} {r['needle_ms']:10.4f} {r['torch_ms']:10.4f} {r['ratio']:7.2f} "
              f"{r['rate']:8.1f} {r['unit']:>5s} {r['rel_err']:9.2e}")


if __name__ == "__main__":
    main()
