"""CPU attention timings: block-sparse kernels vs dense attention.

For each sequence length and layout this times, forward and forward+backward:
  composed  dense masked attention from needle ops (matmul, masked_fill, softmax, matmul) with
            the layout's element mask, i.e. what one would write without the fused kernels
  dense     the block-sparse kernels with the dense layout (the framework's fused dense attention)
  sparse    the block-sparse kernels with the layout itself
and prints a table (times in ms, best of --repeats) plus JSON (--json PATH, or '-' for stdout).

    PYTHONPATH=python python3 bench/bench_attention_cpu.py --lengths 1024 2048 --heads 4
    PYTHONPATH=python python3 bench/bench_attention_cpu.py --layouts "mixed(3)" dense   # a subset

Layout names carry their parameters (mixed(w) is mixed(window=w, global_blocks=1, stride=4)), so
a table stays readable when a pattern's defaults change.
"""
import argparse
import json
import math
import os
import time

import numpy as np

import needle as ndl
from needle._C import attention

Layout = attention.BlockSparseLayout


LAYOUTS = {
    "local(1)": lambda L, b: Layout.local(L, b, window=1),
    "strided(4)": lambda L, b: Layout.strided(L, b, stride=4),
    "mixed(1)": lambda L, b: Layout.mixed(L, b, window=1, global_blocks=1, stride=4),
    "mixed(3)": lambda L, b: Layout.mixed(L, b, window=3, global_blocks=1, stride=4),
    "random(3)": lambda L, b: Layout.random(L, b, blocks_per_row=3, seed=0),
    "dense": lambda L, b: Layout.dense(L, b),
}


def element_mask(layout, L):
    """(L, L) bool, True where a key is hidden: outside the kept blocks, or in the future."""
    b = layout.block_size
    blocks = layout.to_block_mask()
    kept = np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)[:L, :L]
    return ~(kept & np.tril(np.ones((L, L), bool)))


def composed(q, k, v, hidden, scale):
    scores = (q @ k.transpose(-2, -1)) * scale
    return scores.masked_fill(hidden, -math.inf).softmax(dim=-1) @ v


def best_ms(fn, repeats):
    """The fastest of `repeats` runs after a warm-up: on a shared machine the minimum is the
    estimate least disturbed by other processes."""
    fn()  # warm-up: caches, layout arrays, allocator
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def bench_case(L, heads, D, b, name, layout, dense_layout, repeats, with_composed):
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((1, heads, L, D)).astype(np.float32) for _ in range(4)]
    scale = 1 / math.sqrt(D)

    def inputs():
        return [ndl.tensor(x, requires_grad=True) for x in data[:3]]

    dout = ndl.tensor(data[3])

    def forward(op):
        def run():
            with ndl.no_grad():
                op(*inputs())
        return run

    def forward_backward(op):
        def run():
            (op(*inputs()) * dout).sum().backward()
        return run

    ops = {
        "sparse": lambda q, k, v: attention.block_sparse_attention(q, k, v, layout),
        "dense": lambda q, k, v: attention.block_sparse_attention(q, k, v, dense_layout),
    }
    if with_composed:
        hidden = ndl.tensor(element_mask(layout, L))
        ops["composed"] = lambda q, k, v: composed(q, k, v, hidden, scale)
    row = {"L": L, "heads": heads, "D": D, "block_size": b, "layout": name,
           "density": layout.density()}
    for key, op in ops.items():
        row[f"{key}_fwd_ms"] = best_ms(forward(op), repeats)
        row[f"{key}_fwd_bwd_ms"] = best_ms(forward_backward(op), repeats)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-composed", action="store_true",
                        help="skip the composed dense attention (it needs L x L memory)")
    parser.add_argument("--json", help="write results as JSON to this path ('-': stdout)")
    args = parser.parse_args()

    rows = []
    header = (f"{'L':>5} {'layout':<11} {'density':>7} | {'composed':>9} {'dense':>8} "
              f"{'sparse':>8} {'vs comp':>7} {'vs dense':>8} | {'composed':>9} {'dense':>8} "
              f"{'sparse':>8} {'vs comp':>7} {'vs dense':>8}")
    print(f"CPU attention, B=1 H={args.heads} D={args.head_dim} b={args.block_size} float32, "
          f"causal; {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    print(f"{'':<26} | {'forward (ms)':^46} | {'forward + backward (ms)':^46}")
    print(header)
    print("-" * len(header))
    for L in args.lengths:
        dense_layout = Layout.dense(L, args.block_size)
        for name in args.layouts:
            layout = LAYOUTS[name](L, args.block_size)
            row = bench_case(L, args.heads, args.head_dim, args.block_size, name, layout,
                             dense_layout, args.repeats, not args.no_composed)
            rows.append(row)
            cells = []
            for phase in ("fwd", "fwd_bwd"):
                comp = row.get(f"composed_{phase}_ms", float("nan"))
                dense, sparse = row[f"dense_{phase}_ms"], row[f"sparse_{phase}_ms"]
                cells.append(f"{comp:9.1f} {dense:8.1f} {sparse:8.1f} {comp / sparse:6.1f}x "
                             f"{dense / sparse:7.1f}x")
            print(f"{L:>5} {name:<11} {row['density']:7.3f} | {cells[0]} | {cells[1]}",
                  flush=True)
    if args.json == "-":
        print(json.dumps(rows, indent=1))
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
