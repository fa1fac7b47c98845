"""Runs needle's block-sparse attention forward and backward a few times on one shape, for a
profiler (Nsight Compute / Systems) to look at; prints the median time of each pass.

    PYTHONPATH=python python3 bench/profile_attention.py --pattern causal-dense --L 16384
    ncu --kernel-name regex:"forward_kernel|dkdv_kernel|dq_kernel" --launch-skip 3 \
        --launch-count 3 python3 bench/profile_attention.py --iters 2

Set NEEDLE_ATTENTION_WGMMA=0 to run the mma.sync kernels on a Hopper GPU instead of wgmma.
"""
import argparse
import statistics
import time

import needle as ndl

Layout = ndl.nn.BlockSparseLayout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pattern", default="causal-dense", choices=["causal-dense", "local", "mixed"])
    p.add_argument("--L", type=int, default=16384)
    p.add_argument("--tokens", type=int, default=32768, help="batch = tokens / L")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()
    if a.pattern == "causal-dense":
        layout = Layout.dense(a.L, block_size=64)
    elif a.pattern == "local":
        layout = Layout.local(a.L, block_size=64, window=3)
    else:
        layout = Layout.mixed(a.L, block_size=64)
    dt = getattr(ndl, a.dtype)
    shape = (max(1, a.tokens // a.L), a.heads, a.L, a.head_dim)
    q, k, v = (ndl.randn(*shape, device="cuda", dtype=dt, requires_grad=True) for _ in range(3))
    g = ndl.randn(*shape, device="cuda", dtype=dt)
    f = ndl.nn.functional.block_sparse_attention
    fwd, both = [], []
    for _ in range(a.iters):
        ndl.cuda.synchronize()
        t0 = time.perf_counter()
        with ndl.no_grad():
            f(q, k, v, layout)
        ndl.cuda.synchronize()
        t1 = time.perf_counter()
        for t in (q, k, v):
            t.grad = None
        f(q, k, v, layout).backward(g)
        ndl.cuda.synchronize()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        both.append(t2 - t1)
    print(f"{a.pattern} {a.dtype} L={a.L} shape={shape}: fwd {1e3 * statistics.median(fwd):.3f} ms, "
          f"fwd+bwd {1e3 * statistics.median(both):.3f} ms (median of {a.iters}, host clock)")


if __name__ == "__main__":
    main()
