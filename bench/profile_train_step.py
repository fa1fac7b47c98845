"""Where a training step's GPU time goes: Pythia-70M trained by needle (apps/train.py's step) and by
transformers + torch (apps.compare's torch run), one after the other in one process on one GPU.

For each framework: a few warm-up steps, then --timed steps by the wall clock (synchronised at the
end), then --profiled steps under torch.profiler with only the CUDA activity. CUPTI records every
kernel the process launches, needle's included, so both frameworks are seen by the same tool. Also
the peak of each framework's own caching allocator (max_memory_allocated of needle.cuda or
torch.cuda) over the model's creation, the warm-up and the timed steps. From
the trace: GPU busy time per step (the union of kernel, memcpy and memset intervals), idle time
(the step's span minus busy), kernel launches per step, GPU time by category and by kernel, and
the idle time by the kernel that each gap waited for (where the GPU waits on the host). Also the
host's time per phase of the unprofiled steps (batch, forward + backward, clip, optimizer +
zero_grad, read the last step): as in apps/train.py, a step is queued whole before the host reads
the previous step's loss and gradient norm, so the host waits in the last phase while the GPU
runs the step just queued.

    PYTHONPATH=python python3 bench/profile_train_step.py --json runs/profile_train_step.json
    PYTHONPATH=python python3 bench/profile_train_step.py --autocast bfloat16   # both under autocast

apps.compare's options (--seq-len, --batch-size, --data, --autocast, ...) set the step.

Prints tables and writes JSON; needs a CUDA build of needle, torch and transformers.
"""
import argparse
import itertools
import json
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "python"))

# Category of a kernel, by the first pattern its name matches (case-insensitive).
CATEGORIES = (
    ("attention", r"attention|flash|fmha|sdpa|attn"),
    ("matmul", r"gemm|gemv|cutlass|cublas|xmma|nvjet|matmul|splitk|sm\d+_"),
    ("cross-entropy", r"cross_entropy|log_softmax|nll_loss|softmax"),
    ("optimizer", r"adam|multi_tensor|foreach|clip|norm_scale|grad_norm"),
    ("layer norm", r"layer_?norm"),
    ("reduction", r"reduce|sum|mean|\bmax\b|argmax"),
    ("copy / layout", r"copy|transpose|permute|\bcat\b|CatArray|memcpy|memset|fill|gather|scatter|index|embedding"),
)
EVENT_KINDS = ("kernel", "gpu_memcpy", "gpu_memset")


def category(name):
    for label, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return label
    return "elementwise / other"


def summarise_trace(trace, steps):
    """GPU time of a Chrome trace (torch.profiler's export_chrome_trace): per step, busy (union of
    kernel/memcpy/memset intervals), span (first start to last end) and idle = span - busy, in ms;
    launches per step; ms per step by category and by kernel name (largest first); and the idle
    time by the kernel (or copy) that ended each gap, with the gaps per step (largest first)."""
    if steps <= 0:
        raise ValueError(f"summarise_trace: expected steps >= 1, got {steps}")
    events = [e for e in trace.get("traceEvents", [])
              if e.get("ph") == "X" and e.get("cat") in EVENT_KINDS and "dur" in e and "ts" in e]
    if not events:
        raise ValueError("summarise_trace: the trace holds no GPU kernel, memcpy or memset events "
                         "(did the profiler record the CUDA activity?)")
    spans = sorted(((float(e["ts"]), float(e["ts"]) + float(e["dur"]), e) for e in events),
                   key=lambda span: span[:2])
    # Idle gaps, each charged to the event that ends it (what the GPU was waiting to start).
    idle_before = defaultdict(lambda: [0.0, 0])
    busy, (cur_start, cur_end, _) = 0.0, spans[0]
    for start, end, e in spans[1:]:
        if start > cur_end:
            busy += cur_end - cur_start
            gap = idle_before[e.get("name", e["cat"])]  # a copy's name: its direction and memory
            gap[0] += start - cur_end
            gap[1] += 1
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    busy += cur_end - cur_start
    span = max(end for _, end, _ in spans) - spans[0][0]
    by_category, by_kernel, launches = defaultdict(float), defaultdict(lambda: [0.0, 0]), 0
    for e in events:
        name = e.get("name", "?") if e["cat"] == "kernel" else e["cat"]
        launches += e["cat"] == "kernel"
        by_category[category(name)] += float(e["dur"])
        by_kernel[name][0] += float(e["dur"])
        by_kernel[name][1] += 1
    per_step = 1e-3 / steps  # us over all steps -> ms per step
    return {
        "steps": steps,
        "busy_ms": busy * per_step, "span_ms": span * per_step, "idle_ms": (span - busy) * per_step,
        "kernel_launches": launches / steps,
        "by_category_ms": dict(sorted(((k, v * per_step) for k, v in by_category.items()),
                                      key=lambda kv: -kv[1])),
        "by_kernel": [{"name": k, "ms": v[0] * per_step, "calls": v[1] / steps}
                      for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1][0])],
        "idle_before": [{"name": k, "ms": v[0] * per_step, "gaps": v[1] / steps}
                        for k, v in sorted(idle_before.items(), key=lambda kv: -kv[1][0])],
    }


def use_composed_rotary():
    """For an A/B of the fused rotary kernel (--rotary composed): GPT-NeoX's rotary embedding as
    needle computed it before F.rotary_embedding, in elementwise ops on views (the half-swap
    concatenated, two products and a sum, the pass-through dims concatenated back), with the sign
    of rotate_half folded into a cached sin table. Same numbers, to the bit."""
    import needle as ndl
    from apps.models_attention import RotaryTables

    signed = {}

    def rotate(self, x, offset):
        rot, half = self.rotary_dim, self.rotary_dim // 2
        cos, sin = self.tables(offset, x.shape[2], x.device, x.dtype)
        key = (id(self), offset, x.shape[2], str(x.device), str(x.dtype))
        if key not in signed:
            signed[key] = ndl.cat([-sin[:, :half], sin[:, half:]], dim=-1)
        part = x[..., :rot]
        swapped = ndl.cat([part[..., half:], part[..., :half]], dim=-1)
        rotated = part * cos + swapped * signed[key]
        return ndl.cat([rotated, x[..., rot:]], dim=-1) if rot < self.head_dim else rotated

    RotaryTables.rotate = rotate


def use_unfused_head():
    """For an A/B of F.linear_cross_entropy (--head unfused): the models' loss as needle computed it
    before, F.cross_entropy of the logits of a separate output layer (F.linear), whose backward
    takes one more pass over the (tokens, vocabulary) logits."""
    from apps import train_utils as U
    from apps.models import _CausalLM

    def loss(self, ids, targets, ignore_index=-100):
        return U.logits_loss(self, ids, targets, ignore_index)[0]

    _CausalLM.loss = loss


# The host's wall time in each phase of a step, in the order the steps run them. The host queues
# the whole step and then reads the previous step's loss and gradient norm: the last phase is its
# wait for the GPU, which has the step just queued to run meanwhile.
PHASES = ("batch", "forward + backward", "clip", "optimizer + zero_grad", "read the last step")

# --reads blocking: the values are read by float() of the device tensors, one step late as well. On
# the GPU's single stream such a read waits for everything queued, the step just queued included,
# so the GPU idles while the host queues the next step's first kernels (an A/B of the copies).
BLOCKING_READS = False


def to_host(framework):
    """The LaggedReads copy function of a framework's step (see BLOCKING_READS)."""
    from apps import train_utils as U

    if BLOCKING_READS:
        return lambda values: (lambda: [float(v) for v in values])
    return U.needle_to_host if framework == "needle" else U.torch_to_host


class PhaseClock:
    """Host seconds per phase, summed while `on`: tick(i) closes phase i at the current time."""

    def __init__(self):
        self.on, self.steps, self.seconds = False, 0, [0.0] * len(PHASES)

    def start(self):
        self._last = time.perf_counter()

    def tick(self, i):
        now = time.perf_counter()
        if self.on:
            self.seconds[i] += now - self._last
            self.steps += i == len(PHASES) - 1
        self._last = now

    def ms_per_step(self):
        return {name: sec * 1e3 / max(self.steps, 1) for name, sec in zip(PHASES, self.seconds)}


def needle_step(s, clock):
    """apps/train.py's training step (grad_accum 1, no lr schedule) on a fresh model; returns
    step(), which queues a step and returns the previous step's loss (None on the first call)."""
    import needle as ndl
    from apps import train_utils as U
    from apps.train import default_build_model

    device = ndl.device(s["device"])
    ndl.set_float32_matmul_precision(s["matmul_precision"])
    ndl.manual_seed(s["seed"])
    model = default_build_model(s["model"], "dense", device, s["block_size"])
    model.train()
    params = list(model.parameters())
    optimizer = U.adamw(model, s)
    loader = ndl.data.TokenDataLoader(Path(s["data"]) / "train.bin", s["batch_size"], s["seq_len"],
                                      device=device, seed=s["seed"])
    reads, steps = U.LaggedReads(to_host=to_host("needle")), itertools.count(1)
    amp = ndl.autocast(s["device"], enabled=s["autocast"] == "bfloat16")

    def step():
        start = time.perf_counter()
        clock.start()
        x, y = next(loader)
        clock.tick(0)
        with amp:
            loss, _ = U.lm_loss(model, x, y)
        (loss * 1.0).backward()
        clock.tick(1)
        grad_norm = ndl.nn.utils.clip_grad_norm_(params, s["clip"])
        clock.tick(2)
        optimizer.step()
        optimizer.zero_grad()
        clock.tick(3)
        read = reads.push(next(steps), start, s["lr"], [loss.detach()], grad_norm)
        clock.tick(4)
        return read[0].losses[0] if read else None

    return step


def torch_step(s, clock):
    """apps.compare's torch training step on a fresh transformers model; returns step(), which
    queues a step and returns the previous step's loss (None on the first call)."""
    import needle as ndl
    from apps import train_utils as U
    from apps.compare import torch_autocast, torch_model_and_optimizer

    torch, model, optimizer, scheduler = torch_model_and_optimizer(s)
    device = torch.device(s["device"])
    params = list(model.parameters())
    loader = ndl.data.TokenDataLoader(Path(s["data"]) / "train.bin", s["batch_size"], s["seq_len"],
                                      seed=s["seed"])
    reads, steps = U.LaggedReads(to_host=to_host("torch")), itertools.count(1)

    def step():
        start, lr = time.perf_counter(), scheduler.get_last_lr()[0]
        clock.start()
        x, y = (torch.from_numpy(t.numpy()).to(device, non_blocking=True) for t in next(loader))
        clock.tick(0)
        with torch_autocast(torch, s):
            logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        clock.tick(1)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, s["clip"])
        clock.tick(2)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        clock.tick(3)
        read = reads.push(next(steps), start, lr, [loss.detach()], grad_norm)
        clock.tick(4)
        return read[0].losses[0] if read else None

    return step


def measure(name, make_step, s, args):
    import torch
    from torch.profiler import ProfilerActivity, profile

    import needle as ndl

    # Each framework's own caching allocator (needle.cuda and torch.cuda share the names): its
    # peak over the model's creation and the steps.
    memory = ndl.cuda if name == "needle" else torch.cuda
    memory.reset_peak_memory_stats()
    clock = PhaseClock()
    step = make_step(s, clock)
    synchronize = torch.cuda.synchronize  # the whole device: needle's stream and torch's
    for _ in range(args.warmup):
        step()
    synchronize()
    start = time.perf_counter()
    clock.on = True
    for _ in range(args.timed):
        step()
    synchronize()
    wall_ms = (time.perf_counter() - start) * 1e3 / args.timed
    clock.on = False
    peak_gb = memory.max_memory_allocated() / 2**30
    with tempfile.TemporaryDirectory() as tmp:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.profiled):
                step()
            synchronize()
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        summary = summarise_trace(json.loads(path.read_text()), args.profiled)
    tokens = s["batch_size"] * s["seq_len"]
    summary.update({"framework": name, "wall_ms_per_step": wall_ms, "tokens_per_s": tokens / wall_ms * 1e3,
                    "peak_memory_gib": peak_gb, "host_ms": clock.ms_per_step()})
    return summary


def print_table(results, top):
    names = [r["framework"] for r in results]
    print(f"{'per step':<28}" + "".join(f"{n:>16}" for n in names))
    rows = [("wall ms (unprofiled)", "wall_ms_per_step", "{:.1f}"), ("tokens/s", "tokens_per_s", "{:,.0f}"),
            ("peak memory GiB", "peak_memory_gib", "{:.2f}"),
            ("GPU busy ms", "busy_ms", "{:.1f}"), ("GPU idle ms (in the span)", "idle_ms", "{:.1f}"),
            ("kernel launches", "kernel_launches", "{:.0f}")]
    for label, key, fmt in rows:
        print(f"{label:<28}" + "".join(f"{fmt.format(r[key]):>16}" for r in results))
    print("host ms per step, by phase (unprofiled steps):")
    for phase in PHASES:
        print(f"  {phase:<26}" + "".join(f"{r['host_ms'][phase]:>16.2f}" for r in results))
    cats = []
    for r in results:
        cats += [c for c in r["by_category_ms"] if c not in cats]
    print("GPU ms by category:")
    for c in cats:
        print(f"  {c:<26}" + "".join(f"{r['by_category_ms'].get(c, 0.0):>16.2f}" for r in results))
    for r in results:
        print(f"\n{r['framework']}: the {top} kernels with the most GPU time (ms per step, calls per step)")
        for k in r["by_kernel"][:top]:
            print(f"  {k['ms']:8.2f} {k['calls']:6.0f}  {category(k['name']):<20} {k['name'][:110]}")
        print(f"{r['framework']}: GPU idle before these kernels (ms per step, gaps per step)")
        for k in r["idle_before"][:5]:
            print(f"  {k['ms']:8.2f} {k['gaps']:6.1f}  {k['name'][:120]}")


def main(argv=None):
    from apps import compare

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timed", type=int, default=10)
    p.add_argument("--profiled", type=int, default=3)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--frameworks", nargs="+", choices=["needle", "torch"], default=["needle", "torch"])
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--rotary", choices=["fused", "composed"], default="fused",
                   help="needle's rotary embedding: the fused kernel (F.rotary_embedding, as "
                        "apps.train runs) or the elementwise composition it replaced (an A/B)")
    p.add_argument("--head", choices=["fused", "unfused"], default="fused",
                   help="needle's output layer and loss: F.linear_cross_entropy (model.loss, as "
                        "apps.train runs) or F.cross_entropy of F.linear's logits (an A/B)")
    p.add_argument("--reads", choices=["copied", "blocking"], default="copied",
                   help="how the host reads the last step's loss and norm: non-blocking copies (as "
                        "apps.train) or blocking reads of the device values (an A/B)")
    args, rest = p.parse_known_args(argv)
    for name in ("warmup", "timed", "profiled"):
        if getattr(args, name) < 1:
            p.error(f"--{name}: expected >= 1, got {getattr(args, name)}")
    s = compare._settings(compare.build_parser().parse_args(rest))  # --seq-len, --batch-size, --data, ...
    if args.rotary == "composed":
        use_composed_rotary()
    if args.head == "unfused":
        use_unfused_head()
    global BLOCKING_READS
    BLOCKING_READS = args.reads == "blocking"
    makers = {"needle": needle_step, "torch": torch_step}
    results = [measure(n, makers[n], s, args) for n in args.frameworks]
    print(f"{s['model']}, sequence length {s['seq_len']}, batch {s['batch_size']}, "
          f"{compare.precision(s)}, fp32 matmuls {s['matmul_precision']}, dense attention, "
          f"{args.rotary} rotary, {args.head} output layer and loss, {args.reads} reads; {args.profiled} profiled steps")
    print_table(results, args.top)
    if args.json:
        import torch
        from apps import train_utils as U

        U.atomic_write_json(Path(args.json), {"settings": s, "rotary": args.rotary, "head": args.head, "reads": args.reads,
                                              "device": torch.cuda.get_device_name(),
                                              "torch": torch.__version__, "results": results})


if __name__ == "__main__":
    main()
