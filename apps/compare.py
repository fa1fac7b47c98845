"""Measured comparison on a GPU: Pythia-70M trained with dense, local and mixed (block-sparse)
attention by apps/train.py, and the same architecture in PyTorch (transformers'
GPTNeoXForCausalLM, fp32, SDPA) on the same token batches with the same hyperparameters; with
--autocast bfloat16 both frameworks train under bfloat16 autocast instead of in fp32.

    python3 -m apps.compare --steps 1500                       # all four runs, then the table
    python3 -m apps.compare --steps 1500 --runs dense local    # a subset (results accumulate)
    python3 -m apps.compare --table                            # print the table of what is there
    python3 -m apps.compare --seeds runs/compare runs/compare/seed1 runs/compare/seed2
                                  # mixed - dense over seeds, one out-dir per seed (--seed S --out-dir D)

Each run writes runs/compare/<run>.json (final validation loss, tokens/s, attention density,
settings) and its training folder runs/compare/runs/<run>/; the table is printed from every JSON
present, so runs split over several commands still compare, and runs/compare/summary.json and
runs/compare/loss.png are rewritten after each command that runs something (--table only
prints). Runs only compare when their settings match; the table says so when they do not.
Without transformers (or torch) the torch run is skipped with a note. The measured runs this
project quotes are kept under docs/measured/ (docs/measured/compare/<commit>/...).
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    import needle as ndl
except ImportError:
    sys.path.insert(0, str(ROOT / "python"))
    import needle as ndl

import numpy as np

from apps import train_utils as U

NEEDLE_RUNS = ("dense", "local", "mixed")
ALL_RUNS = NEEDLE_RUNS + ("torch",)
# Settings that must agree for two runs to be compared.
SHARED = ("model", "data", "seq_len", "batch_size", "steps", "lr", "warmup_steps", "seed", "matmul_precision",
          "autocast")
# What a setting was before it existed (older result JSONs lack it).
SETTING_DEFAULTS = {"autocast": "off"}


def build_parser():
    p = argparse.ArgumentParser(prog="python3 -m apps.compare", description=__doc__.split("\n")[0],
                                formatter_class=U.HelpFormatter)
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    p.add_argument("--runs", nargs="+", choices=ALL_RUNS, default=list(ALL_RUNS))
    p.add_argument("--table", action="store_true", help="only print the table of the results present")
    p.add_argument("--seeds", nargs="+", metavar="DIR", default=None,
                   help="only summarise dense vs mixed over several out-dirs (one seed each); "
                        "writes seeds.json into --out-dir")
    from apps.models import PRESETS
    p.add_argument("--model", default="pythia-70m", choices=sorted(PRESETS))
    p.add_argument("--data", default=str(ROOT / "data" / "sotu"))
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--block-size", type=int, default=64, choices=[16, 32, 64, 128])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 1%% of the steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda")
    p.add_argument("--matmul-precision", choices=["highest", "high"], default="highest",
                   help="highest: true fp32 matmuls in both frameworks; high: TF32 in both")
    p.add_argument("--autocast", choices=["off", "bfloat16"], default="off",
                   help="bfloat16: both frameworks train under autocast (ndl.autocast and torch.autocast: "
                        "matmuls and attention in bfloat16, float32 parameters and optimizer state)")
    p.add_argument("--eval-interval", type=int, default=0, help="default: a tenth of the steps")
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "compare"))
    return p


def _settings(args):
    warmup = args.warmup_steps if args.warmup_steps is not None else min(max(1, round(0.01 * args.steps)),
                                                                           args.steps - 1)
    return {"model": args.model, "data": str(Path(args.data).resolve()), "seq_len": args.seq_len,
            "batch_size": args.batch_size, "steps": args.steps, "lr": args.lr, "warmup_steps": warmup,
            "seed": args.seed, "matmul_precision": args.matmul_precision, "autocast": args.autocast,
            "device": args.device,
            "block_size": args.block_size, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1,
            "min_lr_ratio": 0.1, "clip": 1.0, "eps": 1e-8}


def _val_curve(records):
    """[step, validation loss] at every evaluation, kept in the run's JSON (the run folder is not)."""
    return [[r["step"], r["val_loss"]] for r in records if r.get("type") == "eval"]


def _steady_tokens_per_s(records, tokens_per_step, skip=10):
    """Tokens/s from the median step time after the first `skip` steps (start-up excluded)."""
    times = [r["step_time"] for r in records if r.get("type") == "train" and r["step"] > skip]
    return tokens_per_step / statistics.median(times) if times else None


# --- needle runs -------------------------------------------------------------------------------------
def run_needle(pattern, s, args, out_dir):
    """apps/train.py in a fresh process (so each run starts with an empty GPU allocator)."""
    name = f"needle-{pattern}"
    cmd = [sys.executable, "-m", "apps.train", "--model", s["model"], "--attention", pattern,
           "--block-size", str(s["block_size"]), "--data", s["data"], "--seq-len", str(s["seq_len"]),
           "--batch-size", str(s["batch_size"]), "--steps", str(s["steps"]), "--lr", str(s["lr"]),
           "--warmup-steps", str(s["warmup_steps"]), "--seed", str(s["seed"]), "--device", s["device"],
           "--matmul-precision", s["matmul_precision"], "--autocast", s["autocast"],
           "--eval-interval", str(args.eval_interval),
           "--save-interval", str(s["steps"]),  # one checkpoint at the end: saving is not what is timed
           "--out-dir", str(out_dir / "runs"), "--name", name, "--overwrite", "--sample-tokens", "0",
           "--log-interval", str(max(1, s["steps"] // 20))]
    print(f"\n== needle, {pattern} attention: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    wall = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"compare: the {pattern} run failed with status {rc}")
    run_dir = out_dir / "runs" / name
    summary = json.loads((run_dir / "summary.json").read_text())
    records = U.read_jsonl(run_dir / "metrics.jsonl")
    tokens_per_step = s["batch_size"] * s["seq_len"]
    return {
        "run": pattern, "framework": "needle", "attention": pattern,
        "attention_density": summary["attention_density"], "parameters": summary["parameters"],
        "val_loss": summary["val_loss"], "val_ppl": summary["val_ppl"],
        "final_train_loss": summary["final_train_loss"], "tokens_per_s": summary["tokens_per_s"],
        "steady_tokens_per_s": _steady_tokens_per_s(records, tokens_per_step),
        "val_curve": _val_curve(records),
        "train_time_s": summary["train_time_s"], "wall_time_s": wall, "unigram_ppl": summary.get("unigram_ppl"),
        "run_dir": str(run_dir), "settings": s,
    }


# --- the PyTorch run ---------------------------------------------------------------------------------
def _torch_lr_factor(step, warmup, total, min_ratio):
    """needle's WarmupCosineLR factor (src/nn/optim.cpp): linear warm-up, cosine to min_ratio."""
    if step < warmup:
        return (step + 1) / warmup
    if step >= total:
        return min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def torch_model_and_optimizer(s):
    """transformers' GPTNeoXForCausalLM of the preset, fp32 with SDPA attention, in train mode, and
    its AdamW + warm-up/cosine schedule as apps/train.py sets them up: (torch, model, optimizer,
    scheduler). Raises ImportError without torch or transformers."""
    import torch
    import transformers
    from apps.models import PRESETS

    device = torch.device(s["device"])
    torch.backends.cuda.matmul.allow_tf32 = s["matmul_precision"] != "highest"
    torch.backends.cudnn.allow_tf32 = s["matmul_precision"] != "highest"
    torch.set_float32_matmul_precision(s["matmul_precision"])
    torch.manual_seed(s["seed"])

    preset = PRESETS[s["model"]]
    hf = dict(preset.to_hf())
    # Newer transformers read the rotary fraction and base under these names.
    hf.setdefault("partial_rotary_factor", hf.get("rotary_pct"))
    hf.setdefault("rope_theta", hf.get("rotary_emb_base"))
    config = transformers.AutoConfig.for_model(**hf)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device)
    model.float()
    model.train()
    attn_impl = getattr(model.config, "_attn_implementation", None)
    if attn_impl != "sdpa":
        raise SystemExit(f"compare: transformers chose attention {attn_impl!r}, not sdpa")
    inv_freq = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
    if inv_freq and 2 * inv_freq[0].numel() != preset.rotary_dim:
        raise SystemExit(f"compare: transformers built rotary dim {2 * inv_freq[0].numel()}, the preset has "
                         f"{preset.rotary_dim}; the architectures differ")
    decay = [p for n, p in model.named_parameters() if U.decays(n, p)]
    no_decay = [p for n, p in model.named_parameters() if not U.decays(n, p)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=s["lr"], betas=(s["beta1"], s["beta2"]), eps=s["eps"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _torch_lr_factor(step, s["warmup_steps"], s["steps"], s["min_lr_ratio"]))
    return torch, model, optimizer, scheduler


def torch_autocast(torch, s):
    """The region torch's forward passes run in: torch.autocast(bfloat16) when s["autocast"] asks
    for it, else a disabled one."""
    return torch.autocast(torch.device(s["device"]).type, dtype=torch.bfloat16,
                          enabled=s.get("autocast", "off") == "bfloat16")


def precision(s):
    """How a run computes, for headers: "fp32" or "bf16 autocast"."""
    return "bf16 autocast" if s.get("autocast", "off") == "bfloat16" else "fp32"


def run_torch(s, args, out_dir):
    """transformers' GPTNeoXForCausalLM from the preset's Hugging Face config, trained in fp32 (or
    under torch.autocast) with SDPA attention on the very batches apps/train.py draws (same TokenDataLoader, seed)."""
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"\n== torch: skipped ({e.name} is not installed)", flush=True)
        return None

    if s["device"].startswith("cuda") and not torch.cuda.is_available():
        print("\n== torch: skipped (torch sees no GPU)", flush=True)
        return None
    torch, model, optimizer, scheduler = torch_model_and_optimizer(s)
    device = torch.device(s["device"])
    num_params = sum(p.numel() for p in model.parameters())
    data = Path(s["data"])
    loader = ndl.data.TokenDataLoader(data / "train.bin", s["batch_size"], s["seq_len"], seed=s["seed"])
    run_dir = out_dir / "runs" / "torch"
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = U.MetricsLog(run_dir / "metrics.jsonl")
    metrics.truncate_after(-1)

    def batch(pair):
        return [torch.from_numpy(t.numpy()).to(device, non_blocking=True) for t in pair]

    def evaluate():
        model.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for x, y in ndl.data.TokenDataLoader(data / "val.bin", s["batch_size"], s["seq_len"], sequential=True):
                x, y = batch((x, y))
                with torch_autocast(torch, s):
                    logits = model(input_ids=x).logits
                    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                total += loss.item() * y.numel()
                count += y.numel()
        model.train()
        return total / count

    tokens_per_step = s["batch_size"] * s["seq_len"]
    eval_every = args.eval_interval
    print(f"\n== torch {torch.__version__}, transformers {transformers.__version__}: GPTNeoXForCausalLM "
          f"({num_params / 1e6:.2f}M parameters, sdpa, {precision(s)}) on {device}", flush=True)
    val = evaluate()
    metrics.append({"type": "eval", "step": 0, "val_loss": val, "val_ppl": math.exp(val)})
    params = list(model.parameters())
    progress = U.Progress(s["steps"], 0, every=max(1, s["steps"] // 20))
    train_time, wall_start = 0.0, time.perf_counter()
    reads = U.LaggedReads(to_host=U.torch_to_host)
    value = None  # the loss of the last step read

    def log_steps(read):
        """Checks and logs the steps whose values were just read (U.StepValues)."""
        nonlocal train_time, value
        for r in read:
            value = r.losses[0]
            if not math.isfinite(value):
                raise SystemExit(f"compare: torch's loss is {value} at step {r.step}")
            train_time += r.seconds
            metrics.append({"type": "train", "step": r.step, "loss": value, "lr": r.lr, "grad_norm": r.grad_norm,
                            "step_time": r.seconds, "tokens_per_s": tokens_per_step / r.seconds})
            progress.update(r.step, value, tokens_per_step, r.seconds)

    for step in range(1, s["steps"] + 1):
        lr = scheduler.get_last_lr()[0]
        start = time.perf_counter()
        x, y = batch(next(loader))
        with torch_autocast(torch, s):
            logits = model(input_ids=x).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, s["clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        # apps/train.py's loop: the whole step is queued before the host reads the previous
        # step's loss and norm.
        log_steps(reads.push(step, start, lr, [loss.detach()], grad_norm))
        if step % eval_every == 0 or step == s["steps"]:
            log_steps(reads.flush())
            val = evaluate()
            metrics.append({"type": "eval", "step": step, "val_loss": val, "val_ppl": math.exp(val)})
            progress.message(f"step {step}: train loss {value:.4f}, val loss {val:.4f}")
    progress.close()
    records = U.read_jsonl(run_dir / "metrics.jsonl")
    return {
        "run": "torch", "framework": f"torch {torch.__version__} + transformers {transformers.__version__}",
        "attention": "dense (sdpa)", "attention_density": 1.0, "parameters": num_params,
        "val_loss": val, "val_ppl": math.exp(val), "final_train_loss": value,
        "tokens_per_s": s["steps"] * tokens_per_step / train_time,
        "steady_tokens_per_s": _steady_tokens_per_s(records, tokens_per_step),
        "val_curve": _val_curve(records),
        "train_time_s": train_time, "wall_time_s": time.perf_counter() - wall_start,
        "run_dir": str(run_dir), "settings": s,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


# --- the table -----------------------------------------------------------------------------------------
def report(out_dir, write=True):
    """Prints the table of the run JSONs in out_dir and the issue's checks; with write, also
    rewrites summary.json and loss.png there."""
    results = {}
    for run in ALL_RUNS:
        path = out_dir / f"{run}.json"
        if path.is_file():
            results[run] = json.loads(path.read_text())
    if not results:
        print(f"no results in {out_dir}")
        return None
    base = next(iter(results.values()))["settings"]
    def setting(settings, k):
        return settings.get(k, SETTING_DEFAULTS.get(k))

    mismatched = [r for r, v in results.items()
                  if any(setting(v["settings"], k) != setting(base, k) for k in SHARED)]
    print(f"\n{base['model']} on {Path(base['data']).name}, sequence length {base['seq_len']}, batch {base['batch_size']}, "
          f"{base['steps']} steps, seed {base['seed']}, lr {base['lr']}, {precision(base)}, "
          f"fp32 matmuls: {base['matmul_precision']}, "
          f"block size {base['block_size']}")
    header = f"{'run':<8} {'attention':<14} {'density':>7} {'val loss':>9} {'val ppl':>9} {'tokens/s':>10} " \
             f"{'steady tok/s':>12} {'vs dense':>8} {'train s':>8}"
    print(header)
    print("-" * len(header))
    dense = results.get("dense")
    for run, r in results.items():
        speed = f"{r['tokens_per_s'] / dense['tokens_per_s']:.2f}x" if dense else "-"
        steady = f"{r['steady_tokens_per_s']:,.0f}" if r.get("steady_tokens_per_s") else "-"
        density = "-" if r.get("attention_density") is None else f"{r['attention_density']:.3f}"
        print(f"{run:<8} {r['attention']:<14} {density:>7} {r['val_loss']:>9.4f} {r['val_ppl']:>9.2f} "
              f"{r['tokens_per_s']:>10,.0f} {steady:>12} {speed:>8} {r['train_time_s']:>8.1f}")
    checks = {}
    if dense and "mixed" in results:
        gap = results["mixed"]["val_loss"] - dense["val_loss"]
        checks["mixed_within_0.05_nats_of_dense"] = {"gap_nats": gap, "met": gap <= 0.05}
    for run in ("local", "mixed"):
        if dense and run in results:
            ratio = results[run]["tokens_per_s"] / dense["tokens_per_s"]
            checks[f"{run}_faster_than_dense"] = {"speedup": ratio, "met": ratio > 1.0}
    for name, c in checks.items():
        value = f"gap {c['gap_nats']:+.4f} nats" if "gap_nats" in c else f"{c['speedup']:.2f}x dense's tokens/s"
        print(f"{name}: {'yes' if c['met'] else 'NO'} ({value})")
    if mismatched:
        print(f"warning: {', '.join(mismatched)} ran with other settings than {next(iter(results))}; "
              "rerun them with the same arguments before comparing")
    summary = {"settings": base, "results": results, "checks": checks, "mismatched": mismatched}
    if write:
        U.atomic_write_json(out_dir / "summary.json", summary)
        plot(results, out_dir / "loss.png")
    return summary


def _lowest(result):
    """[step, loss] of the run's lowest validation loss (from its val_curve), or None without one."""
    curve = result.get("val_curve") or []
    return list(min(curve, key=lambda point: point[1])) if curve else None


def _mean_std_stderr(values):
    """Mean, sample std and standard error of the mean (std and stderr None for one value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, None, None
    std = statistics.stdev(values)
    return mean, std, std / len(values) ** 0.5


def seeds_report(dirs, out_path):
    """mixed - dense validation loss at the end, per seed and its mean / sample std / standard error,
    and the same gap between the two runs' lowest validation losses (from their val_curve: a run that
    overfits ends above its lowest point), from out-dirs that each hold a dense.json and a mixed.json
    of one seed (settings other than the seed equal)."""
    rows = []
    for d in map(Path, dirs):
        pair = {}
        for run in ("dense", "mixed"):
            path = d / f"{run}.json"
            if not path.is_file():
                raise SystemExit(f"--seeds: {path} is missing (run --runs dense mixed --out-dir {d})")
            pair[run] = json.loads(path.read_text())
        rows.append((str(d), pair["dense"], pair["mixed"]))
    base = rows[0][1]["settings"]
    for d, dense, mixed in rows:
        for r in (dense, mixed):
            other = [k for k in SHARED if k not in ("seed", "data") and r["settings"].get(k) != base.get(k)]
            if Path(r["settings"]["data"]).name != Path(base["data"]).name:  # same corpus, any machine
                other.append("data")
            if other:
                raise SystemExit(f"--seeds: {d} ran with other settings ({', '.join(other)})")
    print(f"{base['model']}, sequence length {base['seq_len']}, batch {base['batch_size']}, {base['steps']} steps: "
          "dense vs mixed per seed (end of run; 'lowest' = each run's lowest validation loss, at its step)")
    header = (f"{'seed':>4} {'dense val':>9} {'mixed val':>9} {'mixed - dense':>13} {'mixed tok/s vs dense':>20} "
              f"{'dense lowest':>17} {'mixed lowest':>17} {'gap at lowest':>13}  dir")
    print(header)
    print("-" * len(header))
    seeds = []
    for d, dense, mixed in rows:
        lowest = {name: _lowest(r) for name, r in (("dense", dense), ("mixed", mixed))}
        seed = {"dir": d, "seed": dense["settings"]["seed"], "dense_val_loss": dense["val_loss"],
                "mixed_val_loss": mixed["val_loss"], "gap_nats": mixed["val_loss"] - dense["val_loss"],
                "mixed_speedup": mixed["tokens_per_s"] / dense["tokens_per_s"],
                "dense_lowest": lowest["dense"], "mixed_lowest": lowest["mixed"],
                "gap_at_lowest_nats": (lowest["mixed"][1] - lowest["dense"][1]
                                       if lowest["dense"] and lowest["mixed"] else None)}
        seeds.append(seed)
        cells = [f"{r[1]:.4f} @{r[0]:>6}" if r else "-" for r in (lowest["dense"], lowest["mixed"])]
        at_lowest = "-" if seed["gap_at_lowest_nats"] is None else f"{seed['gap_at_lowest_nats']:+.4f}"
        print(f"{seed['seed']:>4} {dense['val_loss']:>9.4f} {mixed['val_loss']:>9.4f} {seed['gap_nats']:>+13.4f} "
              f"{seed['mixed_speedup']:>19.2f}x {cells[0]:>17} {cells[1]:>17} {at_lowest:>13}  {d}")
    mean, std, stderr = _mean_std_stderr([s["gap_nats"] for s in seeds])
    spread = f", sample std {std:.4f}, standard error {stderr:.4f}" if std is not None else ""
    print(f"mixed - dense at the end: mean {mean:+.4f} nats over {len(seeds)} seeds{spread}; within 0.05: "
          f"{'yes' if mean <= 0.05 else 'NO'}")
    summary = {"settings": base, "seeds": seeds, "mean_gap_nats": mean, "std_gap_nats": std,
               "stderr_gap_nats": stderr, "within_0.05": mean <= 0.05,
               "mean_gap_at_lowest_nats": None, "std_gap_at_lowest_nats": None}
    at_lowest = [s["gap_at_lowest_nats"] for s in seeds if s["gap_at_lowest_nats"] is not None]
    if at_lowest:
        low_mean, low_std, _ = _mean_std_stderr(at_lowest)
        summary.update(mean_gap_at_lowest_nats=low_mean, std_gap_at_lowest_nats=low_std)
        low_spread = f", sample std {low_std:.4f}" if low_std is not None else ""
        print(f"mixed - dense at each run's lowest validation loss: mean {low_mean:+.4f} nats over "
              f"{len(at_lowest)} seeds{low_spread}")
    U.atomic_write_json(out_path, summary)
    plotted = seeds_plot([(dense, mixed) for _, dense, mixed in rows], Path(out_path).with_suffix(".png"))
    if plotted:
        print(f"validation curves and their gap per seed: {plotted}")
    return summary


def seeds_plot(pairs, path):
    """Validation loss of dense and mixed per seed (thin) and their mean over seeds (thick), and
    mixed - dense at each evaluated step, from each run's val_curve; the issue's 0.05-nat line is
    drawn on the gap. Steps shared by both runs of a seed are used, means over the steps every seed
    shares. Writes `path` (PNG) and returns it, or returns None when no seed has both curves."""
    curves = []  # per seed: {step: (dense loss, mixed loss)}
    for dense, mixed in pairs:
        d, m = dict(map(tuple, dense.get("val_curve") or [])), dict(map(tuple, mixed.get("val_curve") or []))
        if set(d) & set(m):
            curves.append({t: (d[t], m[t]) for t in sorted(set(d) & set(m))})
    if not curves:
        return None
    plt = _pyplot()
    fig, (ax_val, ax_gap) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    for c in curves:
        steps, (d, m) = list(c), np.array(list(c.values())).T
        ax_val.plot(steps, d, color="C0", alpha=0.35, linewidth=1)
        ax_val.plot(steps, m, color="C1", alpha=0.35, linewidth=1)
        ax_gap.plot(steps, m - d, color="0.6", linewidth=1)
    common = sorted(set.intersection(*(set(c) for c in curves)))
    if common:
        d, m = np.array([[c[t] for t in common] for c in curves]).mean(axis=0).T
        n = len(curves)
        ax_val.plot(common, d, color="C0", linewidth=2.5, label=f"dense (mean of {n})")
        ax_val.plot(common, m, color="C1", linewidth=2.5, label=f"mixed (mean of {n})")
        ax_gap.plot(common, m - d, color="black", linewidth=2.5, label=f"mean of {n} seeds")
    ax_gap.axhline(0.05, color="C3", linestyle="--", linewidth=1, label="+0.05 (the target at the end)")
    ax_gap.axhline(0.0, color="0.3", linewidth=0.8)
    # The first evaluations (near ln V) would flatten the interesting range.
    late = [v for c in curves for t, pair in c.items() if t >= max(c) * 0.2 for v in pair]
    ax_val.set_ylim(min(late) - 0.05, max(late) + 0.05)
    _finish(fig, ((ax_val, "validation loss per seed"), (ax_gap, "mixed - dense validation loss")), path)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, axes, path):
    """Labels each (axis, title) of a loss-against-step figure and writes it to `path` as PNG."""
    for ax, title in axes:
        ax.set_xlabel("step")
        ax.set_ylabel("nats/token")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    U.save_figure(fig, path)


def plot(results, path):
    plt = _pyplot()
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    for run, r in results.items():
        records = U.read_jsonl(Path(r["run_dir"]) / "metrics.jsonl")
        train = [(x["step"], x["loss"]) for x in records if x.get("type") == "train"]
        val = [(x["step"], x["val_loss"]) for x in records if x.get("type") == "eval"]
        if train:
            steps, losses = np.array(train).T
            window = max(1, len(losses) // 50)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax_train.plot(steps[window - 1:], smooth, label=run)
        if val:
            steps, losses = np.array(val).T
            ax_val.plot(steps, losses, "o-", markersize=3, label=run)
    _finish(fig, ((ax_train, "train loss (moving average)"), (ax_val, "validation loss")), path)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.table:
        return 0 if report(out_dir, write=False) else 1
    if args.seeds:
        seeds_report(args.seeds, out_dir / "seeds.json")
        return 0
    for name in ("steps", "seq_len", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.eval_interval == 0:
        args.eval_interval = max(1, args.steps // 10)
    if not (Path(args.data) / "train.bin").is_file():
        parser.error(f"--data {args.data} has no train.bin (run scripts/fetch_data.sh and python3 -m apps.prepare_data)")
    s = _settings(args)
    for run in args.runs:
        result = run_torch(s, args, out_dir) if run == "torch" else run_needle(run, s, args, out_dir)
        if result is not None:
            result["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
            U.atomic_write_json(out_dir / f"{run}.json", result)
    report(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
