"""Trains a Pythia-architecture language model on a prepared token folder (apps/prepare_data.py).

    python3 -m apps.train --model pythia-tiny --attention mixed --seq-len 256 --steps 300 --name demo
    python3 -m apps.train --device cuda --model pythia-70m --attention mixed --steps 1500
    python3 -m apps.train --name demo --resume            # continue from the last checkpoint

Pythia's recipe: AdamW (betas 0.9, 0.95; weight decay 0.1 except biases and norms), linear
warm-up then cosine decay to 10% of the peak learning rate, global gradient-norm clipping at
1.0. Everything lands in runs/<name>/: config.json, metrics.jsonl (one JSON object per train
step and per evaluation), checkpoints/ (model, optimizer, data-loader and RNG state, written
atomically), loss.png, sample.txt and summary.json. A resumed run reproduces the uninterrupted
run's losses step for step. Ctrl-C (or SIGTERM) saves a checkpoint and exits with status 130
(143); a non-finite loss stops the run with status 1, naming the step, without overwriting the
last good checkpoint.
"""

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
try:
    import needle as ndl
except ImportError:  # a source checkout: the extension is built into python/needle/
    sys.path.insert(0, str(ROOT / "python"))
    import needle as ndl

import numpy as np

from needle.data import TokenDataLoader

from apps import train_utils as U

# Settings that decide the optimisation trajectory. Their command-line defaults are None so a
# resumed run can tell "not given" (take the saved value) from "given" (must match it).
DEFAULTS = {
    "model": "pythia-70m",
    "attention": "dense",
    "block_size": 64,
    "data": str(ROOT / "data" / "sotu"),
    "seq_len": 2048,
    "batch_size": 8,
    "grad_accum": 1,
    "steps": None,  # resolved from --steps or --tokens; 1000 when neither is given
    "lr": 1e-3,
    "min_lr_ratio": 0.1,
    "warmup_steps": None,  # 1% of the steps (Pythia's), at least 1
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "eps": 1e-8,
    "clip": 1.0,
    "seed": 0,
}
DEFAULT_STEPS = 1000
# Where and how the run computes. Not trajectory settings (a resumed run may move to another
# device when told to), but a resumed run keeps its own unless the command line says otherwise.
RUN_DEFAULTS = {"device": "cpu", "matmul_precision": "highest", "autocast": "off"}
EXIT_NONFINITE, EXIT_SIGINT, EXIT_SIGTERM = 1, 130, 143


class NonFiniteLoss(Exception):
    pass


class Stop(Exception):
    """Raised out of the loop by Ctrl-C / SIGTERM after the checkpoint is written."""

    def __init__(self, signum, detail):
        super().__init__(f"stopped by {signal.Signals(signum).name}: {detail}")
        self.signum = signum


def build_parser():
    p = argparse.ArgumentParser(prog="python3 -m apps.train", description=__doc__.split("\n")[0],
                                formatter_class=U.HelpFormatter)
    d = DEFAULTS
    g = p.add_argument_group("model and data")
    g.add_argument("--model", help="preset from apps/models.py, as python3 -m apps.models --help "
                   f"lists them (default {d['model']})")
    g.add_argument("--attention", help="dense | local | global | strided | mixed, as apps/models.py "
                   f"accepts (default {d['attention']})")
    g.add_argument("--block-size", type=int, choices=[16, 32, 64, 128],
                   help="block-sparse attention block size (default 64); a pattern is sparse only "
                        "when the sequence spans several blocks")
    g.add_argument("--data", help=f"prepared token folder with train.bin, val.bin, meta.json (default {d['data']})")
    g.add_argument("--seq-len", type=int, help=f"tokens per sequence (default {d['seq_len']})")
    g.add_argument("--device", help="cpu or cuda (default cpu; a resumed run keeps its own)")
    g.add_argument("--matmul-precision", choices=["highest", "high", "medium"],
                   help="float32 matmul precision on CUDA (highest: true fp32; high: TF32; default "
                        "highest; a resumed run keeps its own)")
    g.add_argument("--autocast", choices=["off", "bfloat16"],
                   help="bfloat16: mixed precision under ndl.autocast, matmuls and attention in "
                        "bfloat16, layer norms, softmax and the loss in float32, parameters, "
                        "gradients and optimizer state float32 (default off; a resumed run keeps "
                        "its own)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, help=f"sequences per micro-batch (default {d['batch_size']})")
    g.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (default 1)")
    steps = g.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, help=f"optimizer steps (default {DEFAULT_STEPS})")
    steps.add_argument("--tokens", type=int, help="training tokens; steps = ceil(tokens / tokens per step)")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d['lr']})")
    g.add_argument("--min-lr-ratio", type=float, help="cosine floor as a fraction of --lr (default 0.1)")
    g.add_argument("--warmup-steps", type=int, help="linear warm-up steps, fewer than --steps (default 1%% of them)")
    g.add_argument("--weight-decay", type=float, help="AdamW decay on matrices (default 0.1)")
    g.add_argument("--beta1", type=float, help="default 0.9")
    g.add_argument("--beta2", type=float, help="default 0.95")
    g.add_argument("--eps", type=float, help="default 1e-8")
    g.add_argument("--clip", type=float, help="global gradient-norm clip, 0 to disable (default 1.0)")
    g.add_argument("--seed", type=int, help="initialisation, data order and per-step RNG (default 0)")
    g = p.add_argument_group("run")
    g.add_argument("--name", help="run folder name under --out-dir (default <model>-<attention>-<corpus>)")
    g.add_argument("--out-dir", default=str(ROOT / "runs"))
    g.add_argument("--resume", action="store_true", help="continue runs/<name> from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    g.add_argument("--stop-at", type=int, default=0,
                   help="end this invocation after this step with a checkpoint (the schedule still "
                        "runs to --steps; continue with --resume)")
    g.add_argument("--eval-interval", type=int, default=100, help="evaluate every N steps (and at the end)")
    g.add_argument("--eval-batches", type=int, default=0, help="validation batches per evaluation (0: the whole split)")
    g.add_argument("--save-interval", type=int, default=0, help="checkpoint every N steps (0: at each evaluation)")
    g.add_argument("--keep-checkpoints", type=int, default=1)
    g.add_argument("--log-interval", type=int, default=10, help="progress lines when stderr is not a terminal")
    g = p.add_argument_group("sample at the end")
    g.add_argument("--prompt", default="My fellow citizens,")
    g.add_argument("--sample-tokens", type=int, default=80, help="0 skips the sample")
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--top-p", type=float, default=0.95)
    g.add_argument("--tokenizer-file", help="tokenizer.json for decoding (default: the data's GPT-2 files)")
    g.add_argument("--encoder-json", help="with --vocab-bpe: GPT-2 vocabulary files for decoding")
    g.add_argument("--vocab-bpe")
    g.add_argument("--no-plot", action="store_true", help="skip loss.png")
    g = p.add_argument_group("test hooks (for tests/python/test_train.py)")
    g.add_argument("--test-hook-nan-at-step", type=int, default=0, metavar="STEP",
                   help="TEST HOOK: poison the loss with NaN at STEP to exercise the non-finite stop")
    return p


# --- configuration -----------------------------------------------------------------------------------
def _check_positive(parser, name, value, allow_zero=False):
    # Written so that NaN fails too (every comparison with it is false), as does infinity.
    if value is not None and not ((value > 0 or (allow_zero and value == 0)) and math.isfinite(value)):
        finite = " and finite" if isinstance(value, float) else ""
        parser.error(f"--{name.replace('_', '-')} must be {'>= 0' if allow_zero else 'positive'}"
                     f"{finite}, got {value}")


def resolve_config(parser, args):
    """The run's configuration: defaults, the saved config on --resume, then the command line.
    Errors name the argument."""
    out_dir = Path(args.out_dir)
    given = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if "data" in given:  # stored absolute, so a run resumes from any working directory
        given["data"] = str(Path(given["data"]).resolve())
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite replaces it; give one of them")
    if args.tokens is not None:
        given.pop("steps", None)
    name = args.name
    if name is None:
        if args.resume:
            parser.error("--resume needs --name (the run folder to continue)")
        corpus = Path(given.get("data", DEFAULTS["data"])).name
        name = f"{given.get('model', DEFAULTS['model'])}-{given.get('attention', DEFAULTS['attention'])}-{corpus}"
    if "/" in name or name in ("", ".", ".."):
        parser.error(f"--name must be a plain folder name, got {name!r}")
    run_dir = out_dir / name

    if args.resume:
        try:
            saved = json.loads((run_dir / "config.json").read_text())
        except FileNotFoundError:
            parser.error(f"--resume: {run_dir}/config.json does not exist; start the run without --resume")
        train = saved["train"]
        if args.tokens is not None:
            parser.error("--resume continues the saved schedule; --tokens cannot change it")
        conflicts = [f"--{k.replace('_', '-')} {v} (the run has {train[k]})"
                     for k, v in given.items() if train.get(k) != v]
        if conflicts:
            parser.error("--resume cannot change the training settings: " + "; ".join(conflicts))
        _fill_run_defaults(args, saved.get("run", {}))
        return run_dir, train

    _fill_run_defaults(args, {})

    train = {**DEFAULTS, **given}
    for k in ("seq_len", "batch_size", "grad_accum", "steps", "tokens", "lr", "eps"):
        _check_positive(parser, k, train.get(k) if k != "tokens" else args.tokens)
    for k in ("warmup_steps", "weight_decay", "clip", "seed"):
        _check_positive(parser, k, train.get(k), allow_zero=True)
    if not 0.0 <= train["min_lr_ratio"] <= 1.0:
        parser.error(f"--min-lr-ratio must be in [0, 1], got {train['min_lr_ratio']}")
    for k in ("beta1", "beta2"):
        if not 0.0 <= train[k] < 1.0:
            parser.error(f"--{k} must be in [0, 1), got {train[k]}")
    tokens_per_step = train["batch_size"] * train["grad_accum"] * train["seq_len"]
    if args.tokens is not None:
        train["steps"] = -(-args.tokens // tokens_per_step)
    elif train["steps"] is None:
        train["steps"] = DEFAULT_STEPS
    if train["warmup_steps"] is None:
        train["warmup_steps"] = min(max(1, round(0.01 * train["steps"])), train["steps"] - 1)
    if train["warmup_steps"] >= train["steps"]:
        parser.error(f"--warmup-steps {train['warmup_steps']} must be less than the run's {train['steps']} steps")
    return run_dir, train


def _fill_run_defaults(args, saved_run):
    """--device, --matmul-precision and --autocast when not given: the resumed run's own, else the
    defaults."""
    for k, default in RUN_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, saved_run.get(k, default))


def _validate_run_args(parser, args, train):
    for k in ("eval_interval", "log_interval", "keep_checkpoints"):
        _check_positive(parser, k, getattr(args, k))
    for k in ("eval_batches", "save_interval", "stop_at", "sample_tokens", "test_hook_nan_at_step"):
        _check_positive(parser, k, getattr(args, k), allow_zero=True)
    if args.stop_at > train["steps"]:
        parser.error(f"--stop-at {args.stop_at} is past the run's last step ({train['steps']})")
    if (args.encoder_json is None) != (args.vocab_bpe is None):
        parser.error("--encoder-json and --vocab-bpe go together")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu or cuda[:0], got {args.device!r}")
    if args.device.startswith("cuda") and not ndl.cuda.is_available():
        parser.error("--device cuda: this needle build has no CUDA backend or sees no GPU "
                     "(build with NEEDLE_CUDA=ON on a machine with a GPU)")


def _read_corpus(parser, data_dir, seq_len):
    data_dir = Path(data_dir)
    missing = [f for f in ("train.bin", "val.bin", "meta.json") if not (data_dir / f).is_file()]
    if missing:
        parser.error(f"--data {data_dir}: missing {', '.join(missing)} (prepare it with "
                     "scripts/fetch_data.sh and python3 -m apps.prepare_data)")
    meta = json.loads((data_dir / "meta.json").read_text())
    val_tokens = meta["tokens"]["val"]
    if val_tokens < seq_len + 1:
        parser.error(f"--seq-len {seq_len}: the validation split of {data_dir} holds only {val_tokens} "
                     "tokens, not one full window")
    return data_dir, meta


def _git_commit():
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --- model -------------------------------------------------------------------------------------------
def last_good(run_dir):
    found = U.latest_checkpoint(run_dir)
    if found is None:
        return "; no checkpoint was saved before it"
    return f"; the last good checkpoint (step {found[0]}) is intact in {found[1]}"


def default_build_model(name, attention, device, block_size):
    try:
        from apps.models import build_model
    except ImportError as e:
        raise SystemExit(f"error: apps/models.py cannot be imported ({e})") from e
    return build_model(name, attention=attention, device=device, block_size=block_size)


def attention_density(model, seq_len):
    """The fraction of causal-dense attention blocks the model's pattern keeps at seq_len
    (BlockSparseLayout.density()), or None for a model without apps/models.py's kernel."""
    kernel = getattr(model, "attention_kernel", None)
    if kernel is None:
        return None
    if kernel.name == "dense":
        return 1.0
    return float(kernel.layout(seq_len).density())


# --- the run -----------------------------------------------------------------------------------------
def train(argv=None, build_model=None):
    """Runs (or resumes) one training run; returns summary.json's dict. Raises NonFiniteLoss
    or Stop (after saving) for the caller to turn into an exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run_dir, cfg = resolve_config(parser, args)
    _validate_run_args(parser, args, cfg)
    data_dir, meta = _read_corpus(parser, cfg["data"], cfg["seq_len"])
    if build_model is None:  # apps/models.py's presets and patterns, checked before any file changes
        from apps.models import PRESETS
        from apps.models_attention import PATTERNS
        for k, names in (("model", PRESETS), ("attention", PATTERNS)):
            if cfg[k] not in names:
                parser.error(f"--{k} must be one of {', '.join(sorted(names))}, got {cfg[k]!r}")
    build_model = build_model or default_build_model
    device = ndl.device(args.device)
    if args.device.startswith("cuda"):
        ndl.set_float32_matmul_precision(args.matmul_precision)
    # Forward passes (training, evaluation, the sample) run in this region; backward outside it.
    amp = ndl.autocast(args.device, enabled=args.autocast == "bfloat16")

    if run_dir.exists() and not args.resume:
        if not args.overwrite:
            parser.error(f"{run_dir} exists; pass --resume to continue it or --overwrite to replace it")
        if any(run_dir.iterdir()) and not (run_dir / "config.json").exists():
            parser.error(f"--overwrite: {run_dir} does not look like a run folder (no config.json); not deleting it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    ndl.manual_seed(cfg["seed"])
    model = build_model(cfg["model"], cfg["attention"], device, cfg["block_size"])
    model.train()
    params = list(model.parameters())
    num_params = sum(int(np.prod(p.shape)) for p in params)
    optimizer = U.adamw(model, cfg)
    # Built before any optimizer state is loaded: it records the peak lr of each group.
    scheduler = ndl.optim.lr_scheduler.WarmupCosineLR(optimizer, cfg["warmup_steps"], cfg["steps"],
                                                      cfg["min_lr_ratio"])
    loader = TokenDataLoader(data_dir / "train.bin", cfg["batch_size"], cfg["seq_len"], device=device, seed=cfg["seed"])
    tokens_per_step = cfg["batch_size"] * cfg["grad_accum"] * cfg["seq_len"]
    density = attention_density(model, cfg["seq_len"])
    metrics = U.MetricsLog(run_dir / "metrics.jsonl")

    step, train_time, tokens_seen = 0, 0.0, 0
    if args.resume:
        found = U.latest_checkpoint(run_dir)
        if found is None:
            parser.error(f"--resume: {run_dir} has no checkpoint yet")
        step, ckpt_dir = found
        state = U.load_checkpoint(ckpt_dir, model, optimizer, device=device)
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        train_time, tokens_seen = state["train_time"], state["tokens_seen"]
        metrics.truncate_after(step)
        print(f"resuming {run_dir} from step {step} ({ckpt_dir.name})", flush=True)
    else:
        U.atomic_write_json(run_dir / "config.json", {
            "train": cfg,
            "run": {k: v for k, v in vars(args).items() if k not in DEFAULTS and k not in ("tokens", "resume", "overwrite")},
            "model": {"parameters": num_params, "attention_density": density},
            "data": {"dir": str(data_dir), "meta": {k: meta[k] for k in ("name", "vocab_size", "tokens") if k in meta}},
            "tokens_per_step": tokens_per_step,
            "git_commit": _git_commit(),
            "needle": os.path.dirname(ndl.__file__),
        })
    if step >= cfg["steps"]:
        parser.error(f"{run_dir} already finished its {cfg['steps']} steps")
    if args.stop_at and args.stop_at <= step:
        parser.error(f"--stop-at {args.stop_at}: the run is already at step {step}")

    density_note = "" if density is None else f", attention density {density:.3f} at length {cfg['seq_len']}"
    print(f"{cfg['model']} ({num_params / 1e6:.2f}M parameters, {cfg['attention']} attention{density_note}) on "
          f"{args.device}{', bfloat16 autocast' if args.autocast == 'bfloat16' else ''}; {cfg['steps']} steps x {tokens_per_step:,} tokens; run folder {run_dir}", flush=True)

    val_path = data_dir / "val.bin"
    # The bar to clear, on exactly the validation tokens evaluate() predicts.
    unigram_ppl = U.unigram_perplexity(
        np.fromfile(data_dir / "train.bin", dtype=np.uint16),
        U.eval_targets(np.fromfile(val_path, dtype=np.uint16), cfg["seq_len"], args.eval_batches * cfg["batch_size"]),
        meta["vocab_size"])
    save_every = args.save_interval or args.eval_interval
    last_step = args.stop_at or cfg["steps"]
    stop_signal = []

    def run_eval(at_step):
        start = time.perf_counter()
        with amp:
            loss, n = U.evaluate(model, val_path, cfg["batch_size"], cfg["seq_len"], device, args.eval_batches)
        record = {"type": "eval", "step": at_step, "val_loss": loss, "val_ppl": math.exp(loss), "val_tokens": n,
                  "eval_time": time.perf_counter() - start}
        metrics.append(record)
        return record

    def checkpoint(at_step):
        state = {"scheduler": scheduler.state_dict(), "loader": loader.state_dict(),
                 "rng": {"scheme": "needle generator reseeded each step from (seed, step)", "seed": cfg["seed"],
                         "next_step_seed": U.step_seed(cfg["seed"], at_step + 1)},
                 "train_time": train_time, "tokens_seen": tokens_seen}
        return U.save_checkpoint(run_dir, at_step, model, optimizer, state, keep=args.keep_checkpoints)

    def on_signal(signum, _frame):
        if stop_signal:  # a second Ctrl-C: stop now; the last committed checkpoint stays valid
            raise KeyboardInterrupt
        stop_signal.append(signum)
        progress.message(f"{signal.Signals(signum).name}: stopping after step {step} with a checkpoint "
                         "(again to abort without saving)")

    if step == 0:
        r = run_eval(0)
        print(f"step 0: val loss {r['val_loss']:.4f} (ppl {r['val_ppl']:.1f})", flush=True)

    progress = U.Progress(cfg["steps"], step, every=args.log_interval)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    run_start_tokens, run_start_time = tokens_seen, train_time
    first_step = step + 1
    reads = U.LaggedReads()
    train_loss = None  # the mean loss of the last step read

    def log_steps(read):
        """Checks and logs the steps whose values were just read (U.StepValues). The checks run
        one step late, after the next step is queued, so the optimizer has already applied a
        non-finite step in memory; but no checkpoint is written after a step before its values
        pass them, so the last good checkpoint stays intact."""
        nonlocal train_time, tokens_seen, train_loss
        for r in read:
            for micro, value in enumerate(r.losses):
                if not math.isfinite(value):
                    raise NonFiniteLoss(f"non-finite training loss ({value}) at step {r.step}, micro-batch "
                                        f"{micro + 1}{last_good(run_dir)}")
            if cfg["clip"] > 0 and not math.isfinite(r.grad_norm):
                raise NonFiniteLoss(f"non-finite gradient norm ({r.grad_norm}) at step {r.step}{last_good(run_dir)}")
            train_time += r.seconds
            tokens_seen += tokens_per_step
            # Micro-batches have equal token counts, so the mean of their means is the true mean.
            train_loss = sum(r.losses) / cfg["grad_accum"]
            metrics.append({"type": "train", "step": r.step, "loss": train_loss, "lr": r.lr,
                            "grad_norm": r.grad_norm, "tokens": tokens_seen, "step_time": r.seconds,
                            "tokens_per_s": tokens_per_step / r.seconds})
            progress.update(r.step, train_loss, tokens_per_step, r.seconds)

    try:
        while step < last_step:
            step += 1
            ndl.manual_seed(U.step_seed(cfg["seed"], step))
            lr = scheduler.get_last_lr()[0]
            start = time.perf_counter()
            losses = []
            for micro in range(cfg["grad_accum"]):
                x, y = next(loader)
                with amp:
                    loss, vocab = U.lm_loss(model, x, y)
                if args.test_hook_nan_at_step == step and micro == 0:
                    loss = loss * float("nan")
                (loss * (1.0 / cfg["grad_accum"])).backward()
                losses.append(loss.detach())
            if step == first_step and vocab < meta["vocab_size"]:
                raise ValueError(f"the model predicts {vocab} tokens but {data_dir} uses a vocabulary of {meta['vocab_size']}")
            grad_norm = ndl.nn.utils.clip_grad_norm_(params, cfg["clip"]) if cfg["clip"] > 0 else None
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
            # The step is queued whole before the host waits for a value, and the values it reads
            # are the previous step's, long finished: the device always has a step to run.
            log_steps(reads.push(step, start, lr, losses, grad_norm))

            # The step's own values are read and checked before an evaluation or a checkpoint, so
            # metrics.jsonl stays in step order and no checkpoint holds an unchecked step. The last
            # step always saves, so no step is left unread at the end.
            if step % args.eval_interval == 0 or step == cfg["steps"]:
                log_steps(reads.flush())
                r = run_eval(step)
                progress.message(f"step {step}: train loss {train_loss:.4f}, val loss {r['val_loss']:.4f} "
                                 f"(ppl {r['val_ppl']:.1f})")
            if step % save_every == 0 or step == last_step or stop_signal:
                log_steps(reads.flush())
                checkpoint(step)
                if stop_signal:
                    raise Stop(stop_signal[0], f"checkpoint of step {step} saved in {run_dir}; continue with "
                                               f"--resume --name {run_dir.name}")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        progress.close()
        if not args.no_plot:
            U.plot_losses(U.read_jsonl(run_dir / "metrics.jsonl"), run_dir / "loss.png",
                          f"{cfg['model']}, {cfg['attention']} attention, {Path(cfg['data']).name}", unigram_ppl)

    run_tokens, run_time = tokens_seen - run_start_tokens, train_time - run_start_time
    records = U.read_jsonl(run_dir / "metrics.jsonl")
    final_eval = [r for r in records if r["type"] == "eval" and r["step"] == step]
    # A run that overfits ends above its lowest validation loss: say where that was.
    best_eval = min((r for r in records if r["type"] == "eval"), key=lambda r: r["val_loss"], default=None)
    summary = {
        "name": run_dir.name, "run_dir": str(run_dir), "model": cfg["model"], "attention": cfg["attention"],
        "attention_density": density, "parameters": num_params, "device": args.device,
        "autocast": args.autocast, "seq_len": cfg["seq_len"],
        "batch_size": cfg["batch_size"], "grad_accum": cfg["grad_accum"], "step": step, "steps": cfg["steps"],
        "finished": step == cfg["steps"], "tokens_seen": tokens_seen, "train_time_s": train_time,
        "tokens_per_s": tokens_seen / train_time,
        "tokens_per_s_this_invocation": run_tokens / run_time if run_time else None,
        "final_train_loss": next(r["loss"] for r in reversed(records) if r["type"] == "train"),
        "val_loss": final_eval[0]["val_loss"] if final_eval else None,
        "val_ppl": final_eval[0]["val_ppl"] if final_eval else None,
        "best_val_loss": best_eval["val_loss"] if best_eval else None,
        "best_val_step": best_eval["step"] if best_eval else None,
        "unigram_ppl": unigram_ppl,
    }
    if step < cfg["steps"]:
        print(f"stopped after step {step} of {cfg['steps']} (--stop-at); continue with --resume --name {run_dir.name}",
              flush=True)
        return summary

    if args.sample_tokens:
        with amp:
            summary["sample"] = write_sample(args, model, data_dir, meta, run_dir, device)
    U.atomic_write_json(run_dir / "summary.json", summary)
    return summary


# --- the sample --------------------------------------------------------------------------------------
def load_tokenizer(args, data_dir, meta):
    """The tokenizer that made the data: an explicit one, else GPT-2's files from the npm
    package apps/prepare_data.py used (data/npm/...). None when neither can be found."""
    Tokenizer = ndl.data.Tokenizer
    if args.tokenizer_file:
        return Tokenizer.from_file(args.tokenizer_file)
    if args.encoder_json:
        return Tokenizer.from_gpt2(args.encoder_json, args.vocab_bpe)
    tok = meta.get("config", {}).get("tokenizer", {})
    if "tokenizer_file" in tok and Path(tok["tokenizer_file"]).is_file():
        return Tokenizer.from_file(tok["tokenizer_file"])
    if "package" in tok:
        pkg = data_dir.parent / "npm" / f"{tok['package'].lstrip('@').replace('/', '-')}-{tok['version']}"
        if (pkg / "encoder.json").is_file():
            return Tokenizer.from_gpt2(str(pkg / "encoder.json"), str(pkg / "vocab.bpe"))
    return None


def write_sample(args, model, data_dir, meta, run_dir, device):
    tokenizer = load_tokenizer(args, data_dir, meta)
    if tokenizer is None:
        print("no sample: the data's tokenizer was not found (pass --tokenizer-file or --encoder-json/--vocab-bpe)")
        return None
    from apps.generate import generate

    prompt_ids = tokenizer.encode(args.prompt) or [meta["eot_token"]]
    ids = ndl.tensor(np.array([prompt_ids], dtype=np.int64), device=device)
    model.eval()
    with ndl.no_grad():
        out = generate(model, ids, args.sample_tokens, temperature=args.temperature, top_k=args.top_k,
                       top_p=args.top_p, seed=0, eos_token_id=meta.get("eot_token"))
    new_ids = [int(t) for t in np.asarray(out.numpy() if hasattr(out, "numpy") else out).reshape(-1)[len(prompt_ids):]]
    text = args.prompt + tokenizer.decode(new_ids)
    U.atomic_write_bytes(run_dir / "sample.txt", (text + "\n").encode())
    return text


def main(argv=None, build_model=None):
    try:
        summary = train(argv, build_model)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_NONFINITE
    except Stop as e:
        print(e, file=sys.stderr)
        return EXIT_SIGINT if e.signum == signal.SIGINT else EXIT_SIGTERM
    except KeyboardInterrupt:
        print("aborted without saving; the last committed checkpoint is intact", file=sys.stderr)
        return EXIT_SIGINT
    if summary["finished"]:
        print(f"final validation loss {summary['val_loss']:.4f}, perplexity {summary['val_ppl']:.2f} "
              f"(unigram perplexity of the corpus: {summary['unigram_ppl']:.2f}); "
              f"{summary['tokens_per_s']:,.0f} tokens/s over {U.format_duration(summary['train_time_s'])} of training")
        if summary.get("best_val_loss") is not None and summary["best_val_loss"] < summary["val_loss"]:
            print(f"lowest validation loss {summary['best_val_loss']:.4f} at step {summary['best_val_step']} "
                  "(the model overfits the training split after it)")
        if summary.get("sample") is not None:
            print("sample:\n" + summary["sample"])
        print(f"run folder: {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
