"""CUDA kernel benchmark: needle's CUDA ops against torch on the same GPU, in the same run.

Usage (on the GPU machine, with needle._C built there):
    PYTHONPATH=python python3 bench/bench_cuda.py [out.json]
        [--only-strided | --only-cross-entropy | --only-layer-norm]

What it measures (issue 4's bar):
  - device-to-device copy bandwidth, torch's `copy_` and needle's `copy_`, 64M float32: the
    ceiling every memory-bound op is held against (bytes read + bytes written);
  - memory-bound ops on 64M-element inputs: elementwise add / mul / gelu (float32 and bfloat16),
    sum over the last axis and of the whole array, softmax over rows of 50304 and of 1024,
    layer_norm over rows of 512 (forward, affine): achieved GB/s from the bytes the op must move
    (each input read once, each output written once), the ratio to torch's same op, and the
    share of the copy bandwidth;
  - cross-entropy over 16384 rows of 50304 classes (a Pythia-70M step's loss), float32 and
    bfloat16, forward and forward + backward, from rows 16-byte aligned and one element off;
  - layer norm at the Pythia-70M and OPT-125M training shapes (16384 rows of 512 and of 768),
    float32 and bfloat16, forward and forward + backward (dx, dweight, dbias);
  - operands that are not one dense run, at Pythia-70M training shapes: a row-broadcast (bias)
    add, the (B, T, H, D) -> (B, H, T, D) copy around attention, a head slice times a table;
  - matmul at the Pythia-70M shapes (M x K x N = tokens x in x out), float32 without TF32
    (needle "highest", torch allow_tf32=False), float32 with TF32 (needle "high", torch
    allow_tf32=True) and bfloat16: TFLOP/s and the ratio to torch.matmul;
  - a steady-state loop of 1,000 small ops, and 20 steps of a small MLP trained with AdamW:
    needle's cudaMalloc count (memory_stats()["num_device_allocs"]) after warm-up must not move.

Ratio = needle throughput / torch throughput (= torch time / needle time): >= 1 means needle is
faster. Targets: >= 0.9 on the memory-bound ops, >= 0.95 on the matmuls, >= 75% of the copy
bandwidth for the pure-bandwidth ops.

Timing: needle runs on its own CUDA stream, which Python cannot record events on, so both
libraries are timed alike: a batch of launches (about 25 ms of work) closed by a
synchronisation, on the host clock, after warm-up; 7 batches, alternating needle and torch, and
the median per call. torch's median by CUDA events is recorded beside it as a check of the
method. Inputs are random normal values, never zeros; each result is compared element by element
with torch's (relative L2 error), so an unwritten output shows up.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

import needle as ndl
from needle import array_api as A

TDEV = torch.device("cuda:0")
NDEV = ndl.device("cuda:0")
N64M = 1 << 26
REPEATS = 7
BATCH_SECONDS = 0.025


def needle_from(t):
    """The torch tensor's values as a needle NDArray on the GPU (bfloat16 stays bfloat16)."""
    arr = A.NDArray(t.detach().float().cpu().numpy(), device=NDEV)
    return arr.to("bfloat16") if t.dtype == torch.bfloat16 else arr


def to_torch(x):
    if isinstance(x, ndl.Tensor):
        x = x.array
    return torch.from_numpy(np.asarray(x.to("float32").numpy())).to(TDEV)


def nsync():
    ndl.cuda.synchronize()


def tsync():
    torch.cuda.synchronize()


def batch_time(fn, sync, iters):
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t0) / iters


def event_median(fn, iters):
    """torch only: the median of `iters` single calls timed by CUDA events."""
    start = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for s, e in zip(start, end):
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(start, end)) / 1e3


def compare(nfn, tfn):
    """(needle seconds per call, torch seconds per call, torch seconds by events)."""
    for _ in range(2):
        nfn()
        tfn()
    nsync()
    tsync()
    # Batch size from one timed call of the slower library.
    one = max(batch_time(nfn, nsync, 1), batch_time(tfn, tsync, 1))
    iters = max(2, min(200, int(BATCH_SECONDS / max(one, 1e-6))))
    ns, ts = [], []
    for _ in range(REPEATS):
        ns.append(batch_time(nfn, nsync, iters))
        ts.append(batch_time(tfn, tsync, iters))
    return statistics.median(ns), statistics.median(ts), event_median(tfn, max(iters, 10))


def rel_err(got, want):
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got - want).norm() / (want.norm() + 1e-300)).item()


ROWS = []


def case(group, name, ninputs, tinputs, nfn, tfn, nbytes=0, flops=0):
    err = rel_err(to_torch(nfn(*ninputs)).reshape(-1), tfn(*tinputs).float().reshape(-1))
    tn, tt, tt_ev = compare(lambda: nfn(*ninputs), lambda: tfn(*tinputs))
    row = {"group": group, "case": name, "needle_ms": tn * 1e3, "torch_ms": tt * 1e3,
           "torch_event_ms": tt_ev * 1e3, "ratio": tt / tn, "rel_err": err}
    if flops:
        row.update(unit="TFLOP/s", needle_rate=flops / tn / 1e12, torch_rate=flops / tt / 1e12)
    else:
        row.update(unit="GB/s", needle_rate=nbytes / tn / 1e9, torch_rate=nbytes / tt / 1e9)
    ROWS.append(row)
    print(f"  {name:40s} ratio {row['ratio']:5.2f}  err {err:8.1e}", flush=True)
    return row


def randn(*shape, dtype=torch.float32):
    return torch.randn(*shape, device=TDEV, dtype=torch.float32).to(dtype)


def copy_case():
    """Copy: the ceiling, as GB/s. Both copy into an existing array, so no allocation is timed."""
    src = randn(N64M)
    tdst = torch.empty_like(src)
    nsrc = needle_from(src)
    ndst = needle_from(randn(N64M))
    copy = case("copy", "copy_ f32 64M", [ndst, nsrc], [tdst, src], lambda d, s: d.copy_(s),
                lambda d, s: d.copy_(s), nbytes=8 * N64M)
    return max(copy["needle_rate"], copy["torch_rate"])


def bandwidth_cases():
    f32 = torch.float32
    copy_bw = copy_case()

    for dt, tag in ((f32, "f32"), (torch.bfloat16, "bf16")):
        esz = 4 if dt == f32 else 2
        a, b = randn(N64M, dtype=dt), randn(N64M, dtype=dt)
        na, nb = needle_from(a), needle_from(b)
        case("elementwise", f"add {tag} 64M", [na, nb], [a, b], lambda x, y: x + y,
             lambda x, y: x + y, nbytes=3 * esz * N64M)
        case("elementwise", f"mul {tag} 64M", [na, nb], [a, b], lambda x, y: x * y,
             lambda x, y: x * y, nbytes=3 * esz * N64M)
        case("elementwise", f"gelu {tag} 64M", [na], [a], lambda x: A.gelu(x),
             torch.nn.functional.gelu, nbytes=2 * esz * N64M)
        del a, b, na, nb

    m = randn(16384, 4096)
    nm = needle_from(m)
    case("reduction", "sum last axis f32 16384x4096", [nm], [m], lambda x: A.sum(x, -1),
         lambda x: x.sum(-1), nbytes=4 * m.numel() + 4 * 16384)
    flat = m.reshape(-1)
    nflat = nm.reshape(N64M)
    case("reduction", "sum all f32 64M", [nflat], [flat], lambda x: A.sum(x),
         lambda x: x.sum(), nbytes=4 * N64M)
    del m, nm, flat, nflat

    for rows, cols in ((N64M // 50304, 50304), (N64M // 1024, 1024)):
        x = randn(rows, cols)
        nx = needle_from(x)
        case("softmax", f"softmax f32 {rows}x{cols}", [nx], [x], lambda v: A.softmax(v, -1),
             lambda v: torch.softmax(v, -1), nbytes=8 * x.numel())
        del x, nx

    rows, d = N64M // 512, 512
    x, w, bias = randn(rows, d), randn(d), randn(d)
    nx, nw, nb = (ndl.Tensor(needle_from(t)) for t in (x, w, bias))

    def nln(v, g, c):
        with ndl.no_grad():
            return ndl.nn.functional.layer_norm(v, (d,), g, c, 1e-5)

    case("layer_norm", f"layer_norm f32 {rows}x{d}", [nx, nw, nb], [x, w, bias], nln,
         lambda v, g, c: torch.nn.functional.layer_norm(v, (d,), g, c, 1e-5),
         nbytes=8 * x.numel() + 8 * d)
    del x, nx
    return copy_bw


def cross_entropy_cases():
    """The loss of a Pythia-70M training step: 16384 rows (batch 8 x 2048 tokens) of 50304
    classes, float32 and bfloat16, forward and forward + backward, against torch's cross_entropy.
    "aligned": rows start 16-byte aligned, which needle reads and writes in 16-byte chunks;
    "offset": the same values one element into their buffer, which it takes element by element."""
    F = ndl.nn.functional
    rows, classes = 16384, 50304
    y = torch.randint(0, classes, (rows,), device=TDEV)
    ny = ndl.Tensor(A.NDArray(y.cpu().numpy(), device=NDEV))
    for dt, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
        esz = 4 if dt == torch.float32 else 2
        x = randn(rows, classes, dtype=dt)
        padded = needle_from(torch.cat([torch.zeros(1, device=TDEV, dtype=dt), x.reshape(-1)]))
        inputs = {"aligned": needle_from(x), "offset": padded[1:].reshape((rows, classes))}
        tx = x.clone().requires_grad_(True)
        for layout, arr in inputs.items():
            nx = ndl.Tensor(arr)
            nx.requires_grad = True

            def nfwd(v, t):
                with ndl.no_grad():
                    return F.cross_entropy(v, t)

            def nboth(v, t):
                v.grad = None
                F.cross_entropy(v, t).backward()
                return v.grad

            def tboth(v, t):
                v.grad = None
                torch.nn.functional.cross_entropy(v, t).backward()
                return v.grad

            case("cross_entropy", f"cross_entropy fwd {tag} {layout} {rows}x{classes}", [nx, ny],
                 [tx, y], nfwd, lambda v, t: torch.nn.functional.cross_entropy(v.detach(), t),
                 nbytes=esz * x.numel())
            case("cross_entropy", f"cross_entropy fwd+bwd {tag} {layout} {rows}x{classes}",
                 [nx, ny], [tx, y], nboth, tboth, nbytes=3 * esz * x.numel())
        del x, padded, inputs, tx


def layer_norm_cases():
    """Layer norm at the training shapes of Pythia-70M (16384 rows of 512) and OPT-125M (16384
    rows of 768), float32 and bfloat16, affine: forward, and forward + backward (dx, dweight,
    dbias from a given upstream gradient). Bytes: the forward reads x and writes y; forward +
    backward adds reading x and dy and writing dx (the parameters and the per-row statistics are
    left out)."""
    F = ndl.nn.functional
    for d in (512, 768):
        rows = 16384
        for dt, tag in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
            esz = 4 if dt == torch.float32 else 2
            x, dy = randn(rows, d, dtype=dt), randn(rows, d, dtype=dt)
            w, bias = randn(d, dtype=dt), randn(d, dtype=dt)
            tx, tw, tb = (t.clone().requires_grad_(True) for t in (x, w, bias))
            nx, nw, nb = (ndl.Tensor(needle_from(t)) for t in (x, w, bias))
            for t in (nx, nw, nb):
                t.requires_grad = True
            ndy = ndl.Tensor(needle_from(dy))

            def nfwd(v, g, c):
                with ndl.no_grad():
                    return F.layer_norm(v, (d,), g, c, 1e-5)

            def nboth(v, g, c, up=ndy):
                v.grad = g.grad = c.grad = None
                F.layer_norm(v, (d,), g, c, 1e-5).backward(up)
                return v.grad

            def tboth(v, g, c, up=dy):
                v.grad = g.grad = c.grad = None
                torch.nn.functional.layer_norm(v, (d,), g, c, 1e-5).backward(up)
                return v.grad

            def tfwd(v, g, c):
                with torch.no_grad():
                    return torch.nn.functional.layer_norm(v, (d,), g, c, 1e-5)

            ins = ([nx, nw, nb], [tx, tw, tb])
            case("layer_norm", f"layer_norm fwd {tag} {rows}x{d}", *ins, nfwd, tfwd,
                 nbytes=2 * esz * x.numel())
            case("layer_norm", f"layer_norm fwd+bwd {tag} {rows}x{d}", *ins, nboth, tboth,
                 nbytes=5 * esz * x.numel())
            del x, dy, tx, nx, ndy


def strided_cases():
    """Operands that are not one dense run (the N-D strided kernel), at Pythia-70M training
    shapes (batch 8 x 2048 tokens, 8 heads of 64): the Linear bias add, the (B, T, H, D) ->
    (B, H, T, D) copy around attention, and the rotary product of each head's first 16 dims with
    a (T, 16) table."""
    x, bias = randn(16384, 1536), randn(1536)
    nx, nbias = needle_from(x), needle_from(bias)
    case("strided", "add row-broadcast f32 16384x1536", [nx, nbias], [x, bias],
         lambda v, c: v + c, lambda v, c: v + c, nbytes=8 * x.numel() + 4 * bias.numel())
    del x, nx
    h = randn(8, 2048, 8, 64)
    nh = needle_from(h)
    case("strided", "permute copy f32 8x2048x8x64", [nh], [h],
         lambda v: v.permute(0, 2, 1, 3).compact(), lambda v: v.permute(0, 2, 1, 3).contiguous(),
         nbytes=8 * h.numel())
    t = randn(2048, 16)
    nt = needle_from(t)
    case("strided", "mul head slice by table f32 8x8x2048x16", [nh, nt], [h, t],
         lambda v, c: v.permute(0, 2, 1, 3)[..., :16] * c,
         lambda v, c: v.permute(0, 2, 1, 3)[..., :16] * c, nbytes=8 * h.numel() // 4 + 4 * t.numel())


def matmul_cases():
    shapes = [(16384, 512, 1536), (16384, 512, 2048), (16384, 2048, 512), (16384, 512, 50304)]
    modes = [("f32", torch.float32, "highest", False), ("tf32", torch.float32, "high", True),
             ("bf16", torch.bfloat16, None, False)]
    for tag, dt, precision, tf32 in modes:
        if precision is not None:
            ndl.set_float32_matmul_precision(precision)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for m, k, n in shapes:
            a, b = randn(m, k, dtype=dt), randn(k, n, dtype=dt)
            na, nb = needle_from(a), needle_from(b)
            case("matmul", f"matmul {tag} {m}x{k}x{n}", [na, nb], [a, b], lambda x, y: x @ y,
                 lambda x, y: x @ y, flops=2 * m * k * n)
            del a, b, na, nb
    ndl.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False


def allocator_checks():
    """needle's cudaMalloc count across steady-state loops, after one warm-up pass of each."""
    stats = ndl.cuda.memory_stats
    out = {}

    # 1,000 small ops (200 x matmul, gelu, add, softmax, sum) on 256 x 256 arrays, each result
    # replacing the last, so blocks are freed and requested again all the time.
    tx, tw = randn(256, 256), randn(256, 256) / 16
    x, w = needle_from(tx), needle_from(tw)

    def small_ops(v, u, lib):
        for _ in range(200):
            h = v @ u
            h = A.gelu(h) if lib == "needle" else torch.nn.functional.gelu(h)
            h = h + v
            h = A.softmax(h, -1) if lib == "needle" else torch.softmax(h, -1)
            s = A.sum(h, -1) if lib == "needle" else h.sum(-1)
        return s

    small_ops(x, w, "needle")
    nsync()
    before = stats()
    t0 = time.perf_counter()
    small_ops(x, w, "needle")
    nsync()
    t_needle = time.perf_counter() - t0
    after = stats()
    small_ops(tx, tw, "torch")
    tsync()
    t0 = time.perf_counter()
    small_ops(tx, tw, "torch")
    tsync()
    t_torch = time.perf_counter() - t0
    out["small_ops"] = {
        "ops": 1000,
        "device_allocs_after_warmup": after["num_device_allocs"] - before["num_device_allocs"],
        "allocs_served": after["num_allocs"] - before["num_allocs"],
        "needle_us_per_op": t_needle / 1000 * 1e6, "torch_us_per_op": t_torch / 1000 * 1e6,
    }

    # A small MLP trained with AdamW: forward, cross-entropy, backward, optimizer step.
    rng = np.random.default_rng(0)
    params = [ndl.tensor(rng.standard_normal(s).astype(np.float32) * 0.05, device="cuda",
                         requires_grad=True) for s in ((512, 256), (512,), (64, 512), (64,))]
    xs = ndl.tensor(rng.standard_normal((128, 256)).astype(np.float32), device="cuda")
    ys = ndl.tensor(rng.integers(0, 64, 128), device="cuda")
    opt = ndl.optim.AdamW(params, lr=1e-3)
    F = ndl.nn.functional

    def step():
        h = F.gelu(F.linear(xs, params[0], params[1]))
        loss = F.cross_entropy(F.linear(h, params[2], params[3]), ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):
        step()
    nsync()
    before = stats()
    for _ in range(20):
        loss = step()
    nsync()
    after = stats()
    out["mlp_adamw_steps"] = {
        "steps": 20,
        "device_allocs_after_warmup": after["num_device_allocs"] - before["num_device_allocs"],
        "allocs_served": after["num_allocs"] - before["num_allocs"],
        "final_loss": float(loss.item()),
    }
    return out


def print_table(device, copy_bw):
    print(f"\ndevice: {device}; torch {torch.__version__}; copy bandwidth {copy_bw:.0f} GB/s "
          "(bytes read + written; the better of torch's and needle's copy_)")
    print("ratio = needle throughput / torch throughput (>= 1: needle faster); times are medians "
          "per call; %copy = needle's GB/s over the copy bandwidth")
    head = (f"{'case':38s} {'needle ms':>10s} {'torch ms':>9s} {'needle':>8s} {'torch':>8s} "
            f"{'unit':>7s} {'ratio':>6s} {'%copy':>6s} {'rel err':>8s}")
    print(head)
    print("-" * len(head))
    for r in ROWS:
        pct = f"{r['needle_pct_of_copy']:5.0f}%" if "needle_pct_of_copy" in r else ""
        print(f"{r['case']:38s} {r['needle_ms']:10.4f} {r['torch_ms']:9.4f} "
              f"{r['needle_rate']:8.1f} {r['torch_rate']:8.1f} {r['unit']:>7s} "
              f"{r['ratio']:6.2f} {pct:>6s} {r['rel_err']:8.1e}")


def main():
    if not ndl.cuda.is_available():
        print("no CUDA device: nothing to benchmark")
        return
    torch.manual_seed(0)
    device = torch.cuda.get_device_name(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?",
                        default=os.path.join(os.environ.get("OUT", "."), "bench_cuda.json"))
    parser.add_argument("--only-strided", action="store_true",
                        help="the copy ceiling and the strided cases only (a quick before/after)")
    parser.add_argument("--only-cross-entropy", action="store_true",
                        help="the copy ceiling and the cross-entropy cases only")
    parser.add_argument("--only-layer-norm", action="store_true",
                        help="the copy ceiling and the layer-norm cases only")
    args = parser.parse_args()
    out = args.out
    result = {"device": device, "torch": torch.__version__, "rows": ROWS}
    print(f"device: {device}", flush=True)
    only = args.only_strided or args.only_cross_entropy or args.only_layer_norm
    if only:
        copy_bw = copy_case()
        if args.only_strided:
            strided_cases()
        elif args.only_cross_entropy:
            cross_entropy_cases()
        else:
            layer_norm_cases()
    else:
        copy_bw = bandwidth_cases()
        strided_cases()
        cross_entropy_cases()
        layer_norm_cases()
        matmul_cases()
    for r in ROWS:
        if r["unit"] == "GB/s":
            r["needle_pct_of_copy"] = 100 * r["needle_rate"] / copy_bw
            r["torch_pct_of_copy"] = 100 * r["torch_rate"] / copy_bw
    result["copy_bandwidth_GBps"] = copy_bw
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print_table(device, copy_bw)
    if only:
        return

    alloc = allocator_checks()
    result["allocator"] = alloc
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    s, t = alloc["small_ops"], alloc["mlp_adamw_steps"]
    print(f"\n1,000 small ops after warm-up: {s['device_allocs_after_warmup']} cudaMalloc calls "
          f"({s['allocs_served']} allocations served from the cache); "
          f"{s['needle_us_per_op']:.1f} us/op needle, {s['torch_us_per_op']:.1f} us/op torch")
    print(f"20 MLP + AdamW steps after warm-up: {t['device_allocs_after_warmup']} cudaMalloc "
          f"calls ({t['allocs_served']} allocations served); final loss {t['final_loss']:.4f}")


if __name__ == "__main__":
    main()
