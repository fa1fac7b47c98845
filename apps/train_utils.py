"""The pieces of apps/train.py that are not the loop itself: the AdamW parameter groups, the
lagged read of a step's values, validation, the unigram baseline, atomic files, checkpoints, the
metrics log, the progress line and the loss plot. Each is small and testable on its own.

Checkpoint layout (runs/<name>/checkpoints/):
    step-000200/model.safetensors       model.state_dict()
    step-000200/optimizer.safetensors   optimizer.state_dict() (AdamW moments, steps, groups)
    step-000200/state.json              step, scheduler, data-loader and RNG state, counters
    latest.json                         {"step": 200, "dir": "step-000200"}: the commit point
A checkpoint directory is complete before latest.json names it (and latest.json is replaced
with os.replace), so a crash at any moment leaves the previous checkpoint usable.
"""

import argparse
import collections
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import needle as ndl
import needle.nn.functional as F
from needle.data import TokenDataLoader

# Re-exported: train.py and compare.py write their files through U.atomic_write_*.
from apps.files import atomic_write_bytes, atomic_write_json, fsync_dir, save_figure  # noqa: F401
from apps.models import _CausalLM

CHECKPOINT_FORMAT = 1


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's defaults in --help, except where the default is None: there the option's value
    comes from elsewhere (a preset, the other options), which its help text says."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def read_jsonl(path):
    """The records of a JSON-lines file; a torn last line (a crash mid-append) is dropped."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break
    except FileNotFoundError:
        pass
    return records


class MetricsLog:
    """Appends one JSON object per line to runs/<name>/metrics.jsonl, flushed at once so a
    crash loses at most the line being written."""

    def __init__(self, path):
        self.path = Path(path)

    def truncate_after(self, step):
        """Keeps the records up to `step` (a resumed run rewrites what came after its
        checkpoint, so the file never holds two versions of a step)."""
        kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def append(self, record):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


# --- optimisation ----------------------------------------------------------------------------------
def decays(name, param):
    """Pythia's (GPT-NeoX's) split: weight decay on matrices, none on biases and norm weights.
    Those are exactly the parameters with fewer than two dimensions; the name test catches a
    norm whose weight someone made 2-D."""
    is_norm = any(k in name.lower() for k in ("norm", "ln_", "layernorm"))
    return param.ndim >= 2 and name.rsplit(".", 1)[-1] != "bias" and not is_norm


def param_groups(model, weight_decay):
    """AdamW parameter groups: [{decayed, weight_decay}, {the rest, 0.0}], empty ones left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if decays(name, p) else no_decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no parameters to train")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adamw(model, cfg):
    """apps/train.py's optimizer: AdamW over param_groups with cfg's lr, beta1, beta2, eps and
    weight_decay (a train config or apps.compare's settings)."""
    return ndl.optim.AdamW(param_groups(model, cfg["weight_decay"]), lr=cfg["lr"],
                           betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"], weight_decay=cfg["weight_decay"])


def lm_loss(model, x, y):
    """Mean next-token cross-entropy of model(x) (B, T, V) against y (B, T), and V. needle's causal
    LMs take it through model.loss (the output layer and the loss fused); any other model
    through its logits (logits_loss)."""
    if isinstance(model, _CausalLM):
        return model.loss(x, y), model.config.vocab_size
    return logits_loss(model, x, y)


def logits_loss(model, x, y, ignore_index=-100):
    """Mean cross-entropy of the logits model(x) (B, T, V) against y (B, T), and V: F.cross_entropy
    of a separate output layer's logits."""
    logits = model(x)
    if logits.ndim != 3:
        raise ValueError(f"the model should return logits of shape (B, T, V), got {tuple(logits.shape)}")
    b, t, v = logits.shape
    return F.cross_entropy(logits.reshape(b * t, v), y.reshape(b * t), ignore_index=ignore_index), v


def step_seed(seed, step):
    """The seed of needle's generator for one training step. Reseeding from (seed, step) makes
    any randomness inside a step (dropout) a function of the step alone, so a resumed run draws
    what the uninterrupted one drew without needle exposing its generator's offset."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0]) >> 1


# --- reading a step's values ----------------------------------------------------------------------
@dataclass(frozen=True)
class StepValues:
    """One training step's values, read on the host."""

    step: int
    lr: float
    losses: list  # one float per micro-batch
    grad_norm: float  # nan when the step did not clip
    seconds: float  # completion to completion (LaggedReads' docstring)


def needle_to_host(values):
    """Queues copies of a step's values (needle tensors or floats) to the host and returns a
    function that reads them as floats. The copies are non-blocking (Tensor.to("cpu",
    non_blocking=True)): a read waits only for the work queued before its copy, not for the
    steps queued after it; on the CPU it is a plain read."""
    host = [v.detach().to("cpu", non_blocking=True) if isinstance(v, ndl.Tensor) else v for v in values]
    return lambda: [float(v) for v in host]


def torch_to_host(values):
    """needle_to_host for torch tensors. torch's non-blocking copy does not wait on use, so
    an event recorded after the copies is waited for before the read."""
    import torch

    host = [v.detach().to("cpu", non_blocking=True) if isinstance(v, torch.Tensor) else v for v in values]
    event = None
    if any(isinstance(v, torch.Tensor) and v.is_cuda for v in values):
        event = torch.cuda.Event()
        event.record()

    def read():
        if event is not None:
            event.synchronize()
        return [float(v) for v in host]

    return read


class LaggedReads:
    """Reads a training step's losses and gradient norm one step late, so the device always has a
    whole step queued while the host waits for a value.

    push() takes the step just queued (its values still being computed), queues their copies to
    the host (to_host: needle_to_host or torch_to_host) and reads the step before it; flush()
    reads the pending step now (before an evaluation or a checkpoint). The copies make the lag
    real: on a GPU's single stream, a plain read (float() of a device tensor) would wait for
    everything queued so far, the next step included.

    A step's seconds run from the previous read, or from its own start if it was queued after
    that read (after a flush), to its own read: a pipeline of steps sums to its wall time, and
    what runs between a flush and the next step (an evaluation) counts in no step."""

    def __init__(self, clock=time.perf_counter, to_host=needle_to_host):
        self._clock = clock
        self._to_host = to_host
        self._pending = None
        self._last_read = -math.inf

    def push(self, step, start_time, lr, losses, grad_norm=None):
        """Stores the step just queued (grad_norm None: it did not clip); returns the pending step
        before it, read now: a list of 0 or 1 StepValues."""
        done = self.flush()
        losses = list(losses)
        values = losses + ([] if grad_norm is None else [grad_norm])
        self._pending = (step, start_time, lr, len(losses), grad_norm is not None, self._to_host(values))
        return done

    def flush(self):
        """Reads the pending step now: [StepValues], or [] when none is pending."""
        if self._pending is None:
            return []
        step, start, lr, n, clipped, read = self._pending
        self._pending = None
        values = read()
        norm = values[n] if clipped else math.nan
        now = self._clock()
        seconds = now - max(start, self._last_read)
        self._last_read = now
        return [StepValues(step, lr, values[:n], norm, seconds)]


# --- evaluation ------------------------------------------------------------------------------------
def evaluate(model, val_path, batch_size, seq_len, device, max_batches=0):
    """Mean cross-entropy (nats per token) over the validation split's non-overlapping windows
    (the first max_batches batches when max_batches > 0), under no_grad and eval mode.
    Returns (loss, tokens evaluated)."""
    loader = TokenDataLoader(val_path, batch_size, seq_len, device=device, sequential=True)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with ndl.no_grad():
            for i, (x, y) in enumerate(loader):
                if max_batches and i >= max_batches:
                    break
                loss, _ = lm_loss(model, x, y)
                n = x.shape[0] * x.shape[1]
                total += loss.item() * n  # batches differ in size at the end: weight by tokens
                count += n
    finally:
        model.train(was_training)
    return total / count, count


def unigram_perplexity(train_tokens, eval_tokens, vocab_size):
    """Perplexity of a unigram model fitted to train_tokens (add-one smoothing over the whole
    vocabulary, so a token unseen in training costs a finite amount) on eval_tokens. The bar
    any language model must clear: it knows word frequencies and nothing about context."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    if counts.size > vocab_size:
        raise ValueError(f"train tokens go up to id {counts.size - 1}, beyond vocab_size {vocab_size}")
    log_p = np.log(counts + 1.0) - math.log(counts.sum() + vocab_size)
    return float(np.exp(-log_p[np.asarray(eval_tokens, dtype=np.int64)].mean()))


def eval_targets(val_tokens, seq_len, max_windows=0):
    """The validation tokens evaluate() predicts: targets of the non-overlapping windows."""
    windows = (len(val_tokens) - 1) // seq_len
    if max_windows:
        windows = min(windows, max_windows)
    return val_tokens[1 : 1 + windows * seq_len]


# --- checkpoints -----------------------------------------------------------------------------------
def latest_checkpoint(run_dir):
    """(step, directory) of the committed checkpoint, or None."""
    pointer = Path(run_dir) / "checkpoints" / "latest.json"
    try:
        latest = json.loads(pointer.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise ValueError(f"{pointer} is not valid JSON ({e}); it is written atomically, so it was edited by hand") from e
    directory = pointer.parent / latest["dir"]
    if not directory.is_dir():
        raise ValueError(f"{pointer} names {directory}, which does not exist")
    return int(latest["step"]), directory


def save_checkpoint(run_dir, step, model, optimizer, state, keep=1):
    """Writes checkpoint `step` and commits it by replacing latest.json; then removes all but
    the newest `keep` checkpoints. Returns the checkpoint directory."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ndl.save(model.state_dict(), tmp / "model.safetensors")  # needle's save fsyncs and renames
    ndl.save(optimizer.state_dict(), tmp / "optimizer.safetensors")
    atomic_write_json(tmp / "state.json", {"format": CHECKPOINT_FORMAT, "step": step, **state})
    fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. Ctrl-C right after a scheduled save)
        current = latest_checkpoint(run_dir)
        if current is not None and current[1].name == name:
            shutil.rmtree(tmp)
            return final
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    atomic_write_json(root / "latest.json", {"step": step, "dir": name})
    old = sorted((p for p in root.glob("step-*") if p.is_dir() and p.name != name),
                 key=lambda p: int(p.name.split("-")[1]))
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def load_checkpoint(directory, model, optimizer, device=None):
    """Loads model and optimizer state in place; returns state.json's dict."""
    directory = Path(directory)
    state = json.loads((directory / "state.json").read_text())
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{directory} has checkpoint format {state.get('format')}, this app reads {CHECKPOINT_FORMAT}")
    model.load_state_dict(ndl.load(directory / "model.safetensors", device=device))
    optimizer.load_state_dict(ndl.load(directory / "optimizer.safetensors", device=device))
    return state


# --- progress --------------------------------------------------------------------------------------
def format_duration(seconds):
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """One status line: a bar, step, loss, tokens/s and ETA. Redrawn in place on a terminal;
    elsewhere (logs, CI) printed as a plain line every `every` steps. The rate is over the last
    `window` steps, so one step timed short or long (read just after an evaluation) hardly
    moves it."""

    def __init__(self, total_steps, first_step, every=10, stream=None, width=24, window=20):
        self.total = total_steps
        self.recent = collections.deque(maxlen=window)  # (tokens, seconds) of the last steps
        self.first = first_step
        self.every = max(1, every)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.width = width
        self.start = time.perf_counter()
        self.drawn = False

    def update(self, step, loss, tokens, seconds):
        """Records a step of `tokens` tokens that took `seconds`, and redraws."""
        self.recent.append((tokens, seconds))
        if not self.tty and step % self.every and step != self.total:
            return
        tokens_per_s = sum(t for t, _ in self.recent) / sum(s for _, s in self.recent)
        done = step - self.first
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * (self.total - step) if done else float("nan")
        filled = int(self.width * step / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = (f"[{bar}] step {step}/{self.total}  loss {loss:.4f}  {tokens_per_s:,.0f} tok/s  "
                f"elapsed {format_duration(elapsed)}  eta {format_duration(eta) if done else '--:--'}")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text):
        """Prints a line without tearing the status line."""
        if self.drawn:
            self.stream.write("\r\033[K")
            self.drawn = False
        print(text, file=self.stream, flush=True)

    def close(self):
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# --- plot ------------------------------------------------------------------------------------------
def plot_losses(records, path, title, unigram_ppl=None):
    """Train loss per step (raw and smoothed), validation loss at each evaluation and, when
    given, the unigram baseline's loss, as a PNG written atomically. Uses the Agg backend: no
    display is needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("type") == "train"]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("type") == "eval"]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    if train:
        steps, losses = np.array(train).T
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train (per step)")
        # An exponential moving average with bias correction, so the curve starts at the data.
        beta, avg, smooth = 0.9, 0.0, []
        for i, v in enumerate(losses, 1):
            avg = beta * avg + (1 - beta) * v
            smooth.append(avg / (1 - beta**i))
        ax.plot(steps, smooth, color="tab:blue", linewidth=1.6, label="train (smoothed)")
    if val:
        steps, losses = np.array(val).T
        ax.plot(steps, losses, "o-", color="tab:orange", linewidth=1.6, markersize=4, label="validation")
    if unigram_ppl:
        ax.axhline(math.log(unigram_ppl), color="gray", linestyle="--", linewidth=1,
                   label=f"unigram baseline (ppl {unigram_ppl:.0f})")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
