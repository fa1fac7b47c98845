"""Block-sparse attention on the GPU: needle's fused CUDA kernels against torch in the same run.

Usage (on the GPU machine, with needle._C built there):
    PYTHONPATH=python python3 bench/bench_attention.py [--json out.json] [--lengths 2048,8192]
        [--head-dims 64,80]

Pythia-70M geometry: heads 8, head dim 64, block size 64, batch x L = 32768 tokens, causal.
--head-dims runs other head dims too (Pythia-2.8b's 80, for one), with everything else equal.
--compare A.json B.json [...] prints needle's times in B (and any further files) over A's, row by
row (two builds timed on one GPU, say; needs neither a GPU nor torch).
Patterns: causal-dense, local (window 3) and mixed (local + global + strided). Each row times one
(pattern, dtype, L, pass) for every peer on identical inputs:
  needle  block_sparse_attention through its autograd op (fused forward; three-kernel backward)
  flex    torch FlexAttention, torch.compile'd (recompile limit raised so it never falls back to
          eager), with the identical mask: create_block_mask over a mask_mod that indexes the
          layout's to_block_mask() and applies causality (Flex's default BLOCK_SIZE 128)
  sdpa    torch scaled_dot_product_attention(is_causal=True) (dense; on the dense rows)
  naive   dense masked attention (scores, mask, softmax, PV) where its L x L buffers fit
"fwd" times the forward; "fwd+bwd" the forward plus gradients of q, k, v for a random upstream
gradient. float32 runs needle at its default "highest" precision (3xTF32: float32 accuracy) and
torch with TF32 off (IEEE float32), so both compute at float32 accuracy.

Timing: every peer the same way: both libraries synchronised, a CUDA event recorded, `iters`
calls, needle synchronised (it runs on its own stream), the end event recorded; median over
repeats after warm-up, divided by iters. Peak memory: the allocator's high-water mark during one
call above what was allocated before it (needle's allocator for needle, torch's for the rest).
Derived: rho = kept blocks / dense causal blocks; rho * t_dense / t_sparse (1 = time per kept
block independent of the pattern); time per kept block (flat in L = linear cost).
Prints a table last and writes every number as JSON ($OUT/bench_attention.json unless --json).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

H, B_SIZE, TOKENS = 8, 64, 32768

# torch and needle, imported by import_frameworks() when there is something to time, so that
# --compare needs neither.
torch = F = ndl = Layout = block_sparse_attention = TDEV = None


def import_frameworks():
    global torch, F, ndl, Layout, block_sparse_attention, TDEV
    import torch
    import torch.nn.functional as F

    import needle as ndl

    attn = getattr(ndl._C, "attention", None)
    Layout = getattr(ndl.nn, "BlockSparseLayout", None) or attn.BlockSparseLayout
    block_sparse_attention = (
        getattr(ndl.nn.functional, "block_sparse_attention", None) or attn.block_sparse_attention
    )
    TDEV = torch.device("cuda")


def sync_all():
    torch.cuda.synchronize()
    ndl.cuda.synchronize()


def time_call(fn, needle_side, repeats=7, target_ms=20.0):
    """Median ms per call: CUDA events around `iters` calls, the same protocol for every peer."""
    fn()
    sync_all()
    t0 = time.perf_counter()
    fn()
    sync_all()
    est = max(time.perf_counter() - t0, 1e-5)
    iters = max(1, min(50, int(target_ms / 1e3 / est)))
    samples = []
    for _ in range(repeats):
        sync_all()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        if needle_side:
            ndl.cuda.synchronize()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / iters)
    return statistics.median(samples)


def peak_extra_bytes(fn, needle_side):
    """High-water mark of device memory during one call, above what was allocated before it."""
    sync_all()
    if needle_side:
        ndl.cuda.reset_peak_memory_stats()
        before = ndl.cuda.memory_allocated()
        fn()
        ndl.cuda.synchronize()
        return ndl.cuda.max_memory_allocated() - before
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def make_layout(pattern, L):
    if pattern == "causal-dense":
        return Layout.dense(L, block_size=B_SIZE, causal=True)
    if pattern == "local":
        return Layout.local(L, block_size=B_SIZE, window=3, causal=True)
    return Layout.mixed(L, block_size=B_SIZE, causal=True)


def kept_blocks(layout):
    return int(np.asarray(layout.to_block_mask(), dtype=bool).sum())


def flex_peer(layout, L, dtype):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    blocks = torch.from_numpy(np.asarray(layout.to_block_mask(), dtype=bool)).to(TDEV)

    def mask_mod(b, h, q_idx, kv_idx):
        return blocks[q_idx // B_SIZE, kv_idx // B_SIZE] & (kv_idx <= q_idx)

    # Flex's own tile (BLOCK_SIZE 128, its default and the only size its default kernel
    # configuration accepts): a 128-block is kept when any of its 64-blocks is, and mask_mod
    # masks the rest element by element, so Flex computes exactly the layout's attention.
    bm = create_block_mask(mask_mod, None, None, L, L, device=TDEV, BLOCK_SIZE=128)
    compiled = flex_peer.compiled
    if compiled is None:
        compiled = flex_peer.compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=bm)


flex_peer.compiled = None


def naive_peer(layout, L, D):
    blocks = torch.from_numpy(np.asarray(layout.to_block_mask(), dtype=bool)).to(TDEV)
    mask = blocks.repeat_interleave(B_SIZE, 0).repeat_interleave(B_SIZE, 1)[:L, :L]
    mask &= torch.ones(L, L, dtype=torch.bool, device=TDEV).tril()

    def run(q, k, v):
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D))
        return torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v

    return run


def sdpa_peer(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def bench_row(pattern, L, D, dtype_name, results, args):
    batch = TOKENS // L
    layout = make_layout(pattern, L)
    kept = kept_blocks(layout)
    nb = L // B_SIZE
    dense_blocks = nb * (nb + 1) // 2
    ndt = ndl.bfloat16 if dtype_name == "bfloat16" else ndl.float32
    tdt = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
    shape = (batch, H, L, D)

    # needle inputs drawn by needle; torch peers get the same values through host copies.
    nq, nk, nv = (
        ndl.randn(*shape, device="cuda", dtype=ndt, requires_grad=True) for _ in range(3)
    )
    ng = ndl.randn(*shape, device="cuda", dtype=ndt)
    tq, tk, tv, tg = (
        torch.from_numpy(np.asarray(t.detach().numpy())).to(TDEV, tdt) for t in (nq, nk, nv, ng)
    )
    for t in (tq, tk, tv):
        t.requires_grad_(True)

    def needle_fwd():
        with ndl.no_grad():
            return block_sparse_attention(nq, nk, nv, layout)

    def needle_fwdbwd():
        for t in (nq, nk, nv):
            t.grad = None
        block_sparse_attention(nq, nk, nv, layout).backward(ng)

    peers = {"needle": (needle_fwd, needle_fwdbwd, True)}
    if "flex" in args.peers:
        flex = flex_peer(layout, L, tdt)
        peers["flex"] = (
            lambda: flex(tq.detach(), tk.detach(), tv.detach()),
            lambda: torch.autograd.grad(flex(tq, tk, tv), (tq, tk, tv), tg),
            False,
        )
    if pattern == "causal-dense" and "sdpa" in args.peers:
        peers["sdpa"] = (
            lambda: sdpa_peer(tq.detach(), tk.detach(), tv.detach()),
            lambda: torch.autograd.grad(sdpa_peer(tq, tk, tv), (tq, tk, tv), tg),
            False,
        )
    # Naive: scores, masked copy and probabilities, three L x L buffers (more with gradients).
    naive_bytes = 3 * batch * H * L * L * tq.element_size()
    if "naive" in args.peers and naive_bytes <= args.naive_limit_gb * 2**30:
        naive = naive_peer(layout, L, D)
        peers["naive"] = (
            lambda: naive(tq.detach(), tk.detach(), tv.detach()),
            lambda: torch.autograd.grad(naive(tq, tk, tv), (tq, tk, tv), tg),
            False,
        )

    # Correctness of the timed needle call against flex on these inputs (every element).
    err = None
    if "flex" in peers:
        try:
            with torch.no_grad():
                want = peers["flex"][0]().float()
            got = torch.from_numpy(np.asarray(needle_fwd().numpy())).to(TDEV)
            err = ((got - want).norm() / want.norm()).item()
        except Exception as e:  # noqa: BLE001  (a failing peer is reported, the run goes on)
            print(f"flex check failed: {type(e).__name__}: {str(e)[:300]}", flush=True)

    def needle_tf32(fn):
        def run():
            ndl.cuda.set_matmul_precision("high")
            try:
                return fn()
            finally:
                ndl.cuda.set_matmul_precision("highest")
        return run

    if "tf32" in args.peers and dtype_name == "float32":
        peers["needle_tf32"] = (needle_tf32(needle_fwd), needle_tf32(needle_fwdbwd), True)

    for mode_i, mode in enumerate(("fwd", "fwd+bwd")):
        row = {"pattern": pattern, "dtype": dtype_name, "L": L, "head_dim": D, "batch": batch,
               "pass": mode,
               "kept_blocks": kept, "rho": kept / dense_blocks, "rel_err_vs_flex": err}
        for name, fns in peers.items():
            fn, needle_side = fns[mode_i], fns[2]
            try:
                if mode == "fwd" and not needle_side:
                    with torch.no_grad():
                        ms = time_call(fn, needle_side)
                        mem = peak_extra_bytes(fn, needle_side)
                else:
                    ms = time_call(fn, needle_side)
                    mem = peak_extra_bytes(fn, needle_side)
                row[f"{name}_ms"] = ms
                row[f"{name}_peak_mb"] = mem / 2**20
            except Exception as e:  # noqa: BLE001  (out of memory, a peer's compile error)
                print(f"{name} {mode} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                torch.cuda.empty_cache()
                row[f"{name}_ms"] = None
        n_ms = row.get("needle_ms")
        row["us_per_kept_block_needle"] = n_ms * 1e3 / (kept * batch * H) if n_ms else None
        results.append(row)
        print(json.dumps(row), flush=True)
    del nq, nk, nv, ng, tq, tk, tv, tg, peers
    torch.cuda.empty_cache()
    ndl.cuda.empty_cache()


def fmt(x, spec):
    width = int(spec.split(".")[0]) if spec[0].isdigit() else 0
    return "-".rjust(width) if x is None else format(x, spec)


def print_table(results):
    dense = {(r["dtype"], r["L"], r["head_dim"], r["pass"]): r["needle_ms"] for r in results
             if r["pattern"] == "causal-dense"}
    head = (f"{'pattern':<13}{'dtype':<9}{'L':>6}{'D':>4} {'pass':<8}{'rho':>6}{'needle ms':>10}"
            f"{'flex ms':>9}{'flex/ndl':>9}{'sdpa ms':>9}{'ndl/sdpa':>9}{'naive ms':>10}"
            f"{'rho*td/ts':>10}{'ns/blk':>8}{'ndl MB':>8}{'flex MB':>8}{'tf32 ms':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        n, f, s = r.get("needle_ms"), r.get("flex_ms"), r.get("sdpa_ms")
        td = dense.get((r["dtype"], r["L"], r["head_dim"], r["pass"]))
        flat = r["rho"] * td / n if td and n else None
        print(f"{r['pattern']:<13}{r['dtype']:<9}{r['L']:>6}{r['head_dim']:>4} {r['pass']:<8}{r['rho']:>6.3f}"
              f"{fmt(n, '10.3f')}{fmt(f, '9.3f')}{fmt(f / n if f and n else None, '9.2f')}"
              f"{fmt(s, '9.3f')}{fmt(n / s if s and n else None, '9.2f')}"
              f"{fmt(r.get('naive_ms'), '10.3f')}{fmt(flat, '10.2f')}"
              f"{fmt(r['us_per_kept_block_needle'] and r['us_per_kept_block_needle'] * 1e3, '8.2f')}"
              f"{fmt(r.get('needle_peak_mb'), '8.0f')}{fmt(r.get('flex_peak_mb'), '8.0f')}"
              f"{fmt(r.get('needle_tf32_ms'), '9.3f')}")
    print("flex/ndl > 1: needle faster. ndl/sdpa: needle's dense layout over SDPA (causal).\n"
          "rho*td/ts: 1 = time proportional to kept blocks. ns/blk: ns per kept 64x64 block per\n"
          "(batch, head) (flat in L = linear cost). MB: peak allocation above the inputs.\n"
          "tf32 ms: needle float32 at matmul precision 'high' (TF32) instead of 'highest'.")


def compare_runs(paths):
    """needle's ms in each later file over the first's, for the rows (and the tf32 timings) they
    share; with several files per side (A1 B1 A2 B2 ...: --compare takes them in pairs) the best of
    each side's repeats."""
    if len(paths) < 2 or len(paths) % 2:
        raise SystemExit(f"--compare: expected pairs of files (A B [A B ...]), got {len(paths)}")
    sides = ({}, {})
    for i, path in enumerate(paths):
        with open(path) as f:
            rows = json.load(f)["rows"]
        for r in rows:
            key = (r["pattern"], r["dtype"], r["L"], r.get("head_dim", 64), r["pass"])
            for name in ("needle_ms", "needle_tf32_ms"):
                if r.get(name):
                    sides[i % 2].setdefault(key + (name[:-3],), []).append(r[name])
    print(f"A: {', '.join(paths[0::2])}\nB: {', '.join(paths[1::2])}")
    head = f"{'pattern':<13}{'dtype':<9}{'L':>6}{'D':>4} {'pass':<8}{'timing':<12}{'A ms':>9}{'B ms':>9}{'B/A':>7}"
    print(head)
    print("-" * len(head))
    for key, a in sides[0].items():
        b = sides[1].get(key)
        if not b:
            continue
        pattern, dtype, L, D, mode, name = key
        print(f"{pattern:<13}{dtype:<9}{L:>6}{D:>4} {mode:<8}{name:<12}{min(a):9.3f}{min(b):9.3f}"
              f"{min(b) / min(a):7.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--compare", nargs="+", metavar="JSON", default=None,
                        help="only compare needle's times between result files (see above)")
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--patterns", default="causal-dense,local,mixed")
    parser.add_argument("--head-dims", default="64",
                        help="comma-separated head dims (CUDA: multiples of 8 up to 128)")
    parser.add_argument("--peers", default="flex,sdpa,naive,tf32",
                        type=lambda s: set(s.split(",")) - {""},
                        help="peers timed beside needle: flex, sdpa, naive, "
                             "tf32 (needle at matmul precision 'high')")
    parser.add_argument("--naive-limit-gb", type=float, default=40.0)
    parser.add_argument("--time-budget", type=float, default=1e9,
                        help="seconds after which no new row is started (the table still prints)")
    args = parser.parse_args()
    if args.compare:
        return compare_runs(args.compare)
    import_frameworks()
    if not (torch.cuda.is_available() and ndl.cuda.is_available()):
        print("no CUDA device: nothing to benchmark")
        return
    torch.backends.cuda.matmul.allow_tf32 = False  # IEEE float32 peers (see the docstring)
    for key in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, 100000)
    torch.manual_seed(0)
    ndl.manual_seed(0)
    results = []
    t0 = time.time()
    skipped = []
    head_dims = [int(x) for x in args.head_dims.split(",")]
    for D in head_dims:
        for L in [int(x) for x in args.lengths.split(",")]:
            for dtype_name in args.dtypes.split(","):
                for pattern in args.patterns.split(","):
                    if time.time() - t0 > args.time_budget:
                        skipped.append(f"{pattern}/{dtype_name}/{L}/D{D}")
                        continue
                    bench_row(pattern, L, D, dtype_name, results, args)
    if skipped:
        print("not run (time budget):", ", ".join(skipped))
    device = torch.cuda.get_device_name(0)
    out_path = args.json or os.path.join(os.environ.get("OUT", "."), "bench_attention.json")
    with open(out_path, "w") as f:
        json.dump({"device": device, "torch": torch.__version__, "heads": H, "head_dims": head_dims,
                   "block_size": B_SIZE, "tokens": TOKENS, "rows": results}, f, indent=1)
    print(f"\n{device}, torch {torch.__version__}, {time.time() - t0:.0f} s; JSON: {out_path}")
    print_table(results)


if __name__ == "__main__":
    sys.exit(main())
