"""apps/train.py: exact resume, the non-finite-loss stop, Ctrl-C checkpoints, the optimiser's
parameter groups and schedule, the logged loss under gradient accumulation, the lagged read of a
step's values, the unigram baseline, atomic checkpoints and argument errors. Runs on a synthetic
corpus with a 64-token vocabulary and a tiny model, so it needs no downloaded data and takes
seconds."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import needle as ndl
from needle import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from apps import train as train_app  # noqa: E402
from apps import train_utils as U  # noqa: E402
from apps.models import GPTNeoXConfig, build_model  # noqa: E402

VOCAB = 64


# --- a tiny model and corpus ---------------------------------------------------------------------
# apps/models.py's GPT-NeoX at toy size with the corpus's 64-token vocabulary (the presets' 50,304
# would make each step cost seconds), and block-sparse attention that is really sparse at this
# length (4 blocks of 16: local's window 1 keeps 7 of the 10 causal blocks, where mixed's window 3
# would keep them all), so the fused block-sparse kernels are inside every check. The
# subprocess test runs the real pythia-tiny preset through the command line.
ATTENTION = "local"
MODEL = ["--model", "toy", "--attention", ATTENTION, "--block-size", "16", "--seq-len", "64"]
TOY = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128,
                    max_positions=256)


def build_toy(name, attention, device, block_size):
    assert name == "toy", name
    return build_model(TOY, attention=attention, device=device, block_size=block_size)


def _markov_tokens(n, seed):
    """A corpus with learnable structure: each token mostly follows from the previous one."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.uint16)
    out[0] = 0
    steps = rng.choice([1, 7, 13], size=n, p=[0.6, 0.3, 0.1])
    for i in range(1, n):
        out[i] = (int(out[i - 1]) * 5 + int(steps[i])) % (VOCAB - 1)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    train, val = _markov_tokens(20000, 1), _markov_tokens(1200, 2)
    train.tofile(d / "train.bin")
    val.tofile(d / "val.bin")
    meta = {"name": "markov", "vocab_size": VOCAB, "eot_token": VOCAB - 1,
            "tokens": {"train": int(train.size), "val": int(val.size)}}
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def _args(corpus, out, name, *extra):
    return [*MODEL, "--data", str(corpus), "--out-dir", str(out), "--name", name, "--batch-size", "4",
            "--lr", "3e-3", "--warmup-steps", "2", "--eval-interval", "4", "--sample-tokens", "0", "--no-plot",
            *extra]


def _run(argv):
    return train_app.main(argv, build_toy)


def _losses(run_dir, kind="train"):
    key = "loss" if kind == "train" else "val_loss"
    return {r["step"]: r[key] for r in U.read_jsonl(Path(run_dir) / "metrics.jsonl") if r["type"] == kind}


def _weights(run_dir):
    step, d = U.latest_checkpoint(run_dir)
    return step, {k: v.numpy() for k, v in ndl.load(d / "model.safetensors").items()}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted 12-step run that the interrupted ones must reproduce."""
    out = tmp_path_factory.mktemp("runs")
    assert _run(_args(corpus, out, "ref", "--steps", "12", "--save-interval", "12")) == 0
    return out / "ref"


# --- resume, NaN, Ctrl-C ---------------------------------------------------------------------------
def test_reference_run_learns_and_writes_its_files(corpus, reference):
    losses = _losses(reference)
    assert sorted(losses) == list(range(1, 13))
    assert losses[12] < losses[1] - 0.5, losses  # the Markov structure is learnable
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 12
    assert summary["val_loss"] == pytest.approx(_losses(reference, "eval")[12])
    assert summary["val_ppl"] == pytest.approx(math.exp(summary["val_loss"]))
    evals = _losses(reference, "eval")
    assert summary["best_val_loss"] == min(evals.values())
    assert evals[summary["best_val_step"]] == summary["best_val_loss"]
    assert summary["attention_density"] == pytest.approx(7 / 10)  # really sparse, as MODEL promises
    train, val = (np.fromfile(corpus / f"{split}.bin", dtype=np.uint16) for split in ("train", "val"))
    assert summary["unigram_ppl"] == pytest.approx(U.unigram_perplexity(train, U.eval_targets(val, 64), VOCAB))
    config = json.loads((reference / "config.json").read_text())
    assert config["train"]["steps"] == 12 and config["train"]["beta2"] == 0.95
    assert U.latest_checkpoint(reference)[0] == 12
    assert sorted(_losses(reference, "eval")) == [0, 4, 8, 12]


def test_resume_reproduces_the_uninterrupted_run(corpus, reference, tmp_path):
    assert _run(_args(corpus, tmp_path, "split", "--steps", "12", "--stop-at", "6")) == 0
    assert U.latest_checkpoint(tmp_path / "split")[0] == 6
    assert not (tmp_path / "split" / "summary.json").exists()
    assert _run(_args(corpus, tmp_path, "split", "--resume")) == 0
    ref, split = _losses(reference), _losses(tmp_path / "split")
    assert sorted(split) == sorted(ref)
    for step in ref:
        assert abs(split[step] - ref[step]) <= 1e-6, (step, split[step], ref[step])
    ref_val, split_val = _losses(reference, "eval"), _losses(tmp_path / "split", "eval")
    assert sorted(split_val) == sorted(ref_val)
    for step in ref_val:
        assert abs(split_val[step] - ref_val[step]) <= 1e-6
    (s1, w1), (s2, w2) = _weights(reference), _weights(tmp_path / "split")
    assert s1 == s2 == 12
    for k in w1:
        np.testing.assert_allclose(w2[k], w1[k], rtol=0, atol=1e-6, err_msg=k)


@pytest.mark.skipif(not ndl.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runs_repeat_and_resume_bit_for_bit(corpus, tmp_path):
    # On the GPU too the same command gives the same losses and weights to the last bit (no
    # atomics in any reduction, the embedding's gradient included), and a resumed run continues
    # exactly: the same bits as the uninterrupted one.
    # Head dim 16, which the CUDA attention kernels run in 32-wide tiles (zero-filled columns).
    toy = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                        max_positions=256)

    def run(argv):
        return train_app.main(argv, lambda name, attention, device, block_size: build_model(
            toy, attention=attention, device=device, block_size=block_size))

    common = ("--device", "cuda", "--steps", "8", "--save-interval", "8")
    for name in ("a", "b"):
        assert run(_args(corpus, tmp_path, name, *common)) == 0
    assert run(_args(corpus, tmp_path, "split", *common, "--stop-at", "4")) == 0
    assert run(_args(corpus, tmp_path, "split", "--resume")) == 0  # on CUDA again, as saved
    assert json.loads((tmp_path / "split" / "summary.json").read_text())["device"] == "cuda"
    a = _losses(tmp_path / "a")
    assert sorted(a) == list(range(1, 9))
    for name in ("b", "split"):
        assert _losses(tmp_path / name) == a, name
        assert _losses(tmp_path / name, "eval") == _losses(tmp_path / "a", "eval"), name
    (sa, wa) = _weights(tmp_path / "a")
    for name in ("b", "split"):
        s, w = _weights(tmp_path / name)
        assert s == sa == 8
        for k in wa:
            assert np.array_equal(w[k].view(np.uint8), wa[k].view(np.uint8)), (name, k)


def _check_autocast_run(corpus, reference, out, run, *device):
    """A bfloat16-autocast run learns, stays near the float32 reference, keeps float32 weights,
    records its setting, and a resumed run (which keeps the setting without being told) repeats
    it step for step."""
    common = (*device, "--steps", "12", "--save-interval", "12")
    assert run(_args(corpus, out, "amp", *common, "--autocast", "bfloat16")) == 0
    assert run(_args(corpus, out, "split", *common, "--autocast", "bfloat16", "--stop-at", "6")) == 0
    assert run(_args(corpus, out, "split", "--resume")) == 0
    amp, ref = _losses(out / "amp"), _losses(reference)
    assert sorted(amp) == list(range(1, 13))
    assert amp[12] < amp[1] - 0.5, amp
    # bfloat16 rounding (8 significant bits) moves the trajectory a little, not the learning.
    assert abs(amp[12] - ref[12]) < 0.1, (amp[12], ref[12])
    assert amp != ref  # the region really computed in bfloat16
    assert _losses(out / "split") == amp and _losses(out / "split", "eval") == _losses(out / "amp", "eval")
    summary = json.loads((out / "split" / "summary.json").read_text())
    assert summary["autocast"] == "bfloat16"
    assert json.loads((out / "amp" / "config.json").read_text())["run"]["autocast"] == "bfloat16"
    step, d = U.latest_checkpoint(out / "amp")
    assert step == 12
    assert {str(v.dtype) for v in ndl.load(d / "model.safetensors").values()} == {str(ndl.float32)}


def test_autocast_run_learns_and_resumes_exactly(corpus, reference, tmp_path):
    _check_autocast_run(corpus, reference, tmp_path, _run)


@pytest.mark.skipif(not ndl.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_autocast_run_learns_and_resumes_exactly(corpus, reference, tmp_path):
    # The same checks through the CUDA kernels: bfloat16 GEMMs and the bfloat16 attention kernels
    # (wgmma on Hopper), against the float32 CPU reference run.
    _check_autocast_run(corpus, reference, tmp_path, _run, "--device", "cuda")


@pytest.mark.parametrize("nan_step, last_good", [
    (5, 4),  # read one step late, after step 6 is queued
    (6, 4),  # read just before step 6's checkpoint, which is then never written
])
def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(corpus, reference, tmp_path, capfd,
                                                                      nan_step, last_good):
    argv = _args(corpus, tmp_path, "nan", "--steps", "12", "--save-interval", "2")
    assert _run(argv + ["--test-hook-nan-at-step", str(nan_step)]) == train_app.EXIT_NONFINITE
    err = capfd.readouterr().err
    assert f"non-finite training loss (nan) at step {nan_step}, micro-batch 1" in err, err
    assert f"last good checkpoint (step {last_good})" in err, err
    step, directory = U.latest_checkpoint(tmp_path / "nan")
    assert step == last_good and directory.name == f"step-{last_good:06d}"
    assert max(_losses(tmp_path / "nan")) == nan_step - 1  # nothing logged for the poisoned step
    # The kept checkpoint is the good one: resuming from it reproduces the reference run.
    assert _run(_args(corpus, tmp_path, "nan", "--resume")) == 0
    ref, resumed = _losses(reference), _losses(tmp_path / "nan")
    assert sorted(resumed) == sorted(ref)
    assert all(abs(resumed[s] - ref[s]) <= 1e-6 for s in ref)


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(corpus, tmp_path):
    run_dir = tmp_path / "sigint"
    argv = _args(corpus, tmp_path, "sigint", "--steps", "400", "--eval-interval", "400", "--model", "pythia-tiny")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-m", "apps.train", *argv], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while max(_losses(run_dir), default=0) < 3:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child logged no training step within 120 s"
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == train_app.EXIT_SIGINT, (out, err)
    assert "Traceback" not in err and "stopped by SIGINT" in err, err
    step, _ = U.latest_checkpoint(run_dir)
    assert 3 <= step < 400
    assert max(_losses(run_dir)) == step  # the checkpoint holds the last logged step
    assert (run_dir / "loss.png").exists() is False  # --no-plot was given
    resume = _args(corpus, tmp_path, "sigint", "--resume", "--stop-at", str(step + 2), "--model", "pythia-tiny")
    assert train_app.main(resume) == 0
    assert sorted(_losses(run_dir)) == list(range(1, step + 3))


# --- the pieces --------------------------------------------------------------------------------------
def test_logged_loss_is_the_mean_over_micro_batches(corpus, tmp_path):
    args = _args(corpus, tmp_path, "accum", "--steps", "1", "--warmup-steps", "0", "--grad-accum", "3", "--seed", "5")
    assert _run(args) == 0
    logged = _losses(tmp_path / "accum")[1]
    # The same initial weights and the same three batches, evaluated by hand.
    ndl.manual_seed(5)
    model = build_toy("toy", ATTENTION, ndl.cpu(), 16)
    loader = ndl.data.TokenDataLoader(corpus / "train.bin", 4, 64, seed=5)
    with ndl.no_grad():
        by_hand = [U.lm_loss(model, *next(loader))[0].item() for _ in range(3)]
    assert logged == pytest.approx(np.mean(by_hand), abs=1e-6)
    assert len({round(v, 4) for v in by_hand}) == 3  # three different batches, not one repeated


def test_learning_rate_follows_warmup_then_cosine_to_ten_percent(corpus, tmp_path):
    args = _args(corpus, tmp_path, "lr", "--steps", "10", "--warmup-steps", "3", "--lr", "1e-2")
    assert _run(args) == 0
    lrs = {r["step"]: r["lr"] for r in U.read_jsonl(tmp_path / "lr" / "metrics.jsonl") if r["type"] == "train"}
    for step, lr in lrs.items():
        s = step - 1  # the scheduler's index of the step's update
        expected = 1e-2 * ((s + 1) / 3 if s < 3 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 3) / 7)))
        assert lr == pytest.approx(expected, rel=1e-9), step


def test_lagged_reads_return_each_step_once_in_order_timed_completion_to_completion():
    times = iter([4.0, 6.0, 9.0, 25.0])  # the clock at each read
    reads = U.LaggedReads(clock=lambda: next(times))
    # Step 1 queued from t=0; step 2 from t=1 reads it at t=4; step 3 from t=2 reads step 2 at 6.
    assert reads.push(1, 0.0, 0.1, [ndl.tensor(np.array(2.5, dtype=np.float32))], ndl.tensor(np.array(0.5))) == []
    (one,) = reads.push(2, 1.0, 0.2, [3.0, ndl.tensor(np.array(1.0, dtype=np.float32))], None)
    (two,) = reads.push(3, 2.0, 0.3, [1.5], 0.25)
    (three,) = reads.flush()  # before an evaluation, at t=9
    assert reads.flush() == []
    assert [r.step for r in (one, two, three)] == [1, 2, 3]
    assert one == U.StepValues(step=1, lr=0.1, losses=[2.5], grad_norm=0.5, seconds=4.0)
    assert type(one.losses[0]) is float and type(one.grad_norm) is float  # read from tensors
    assert two.losses == [3.0, 1.0] and math.isnan(two.grad_norm)  # no clipping: nan
    assert (two.seconds, three.seconds) == (2.0, 3.0)
    assert one.seconds + two.seconds + three.seconds == 9.0  # the pipeline's wall time
    # A step queued after the flush (and the evaluation, t=9 to 20) is timed from its own start.
    assert reads.push(4, 20.0, 0.4, [1.25], 0.5) == []
    (four,) = reads.flush()
    assert four.step == 4 and four.seconds == 5.0


def test_param_groups_exclude_biases_and_norms_from_weight_decay():
    model = train_app.default_build_model("pythia-tiny", "dense", ndl.cpu(), 64)
    named = list(model.named_parameters())
    decayed = {n for n, p in named if U.decays(n, p)}
    assert decayed == {n for n, p in named if p.ndim == 2}
    assert {"embed_out.weight", "gpt_neox.embed_in.weight",
            "gpt_neox.layers.0.attention.query_key_value.weight"} <= decayed
    assert not decayed & {"gpt_neox.final_layer_norm.weight", "gpt_neox.layers.1.input_layernorm.bias",
                          "gpt_neox.layers.0.mlp.dense_h_to_4h.bias"}
    groups = U.param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert [len(g["params"]) for g in groups] == [len(decayed), len(named) - len(decayed)]
    assert [tuple(p.shape) for p in groups[0]["params"]] == [tuple(p.shape) for n, p in named if n in decayed]
    # A 2-D parameter that is a norm's still gets no decay.
    assert not U.decays("blocks.0.layernorm.weight", model.embed_out.weight)


def test_unigram_perplexity_matches_a_hand_computation():
    train = np.array([0, 0, 1, 2], dtype=np.uint16)
    ev = np.array([0, 3], dtype=np.uint16)
    # add-one over a vocabulary of 4: p(0) = 3/8, p(3) = 1/8
    assert U.unigram_perplexity(train, ev, 4) == pytest.approx(math.exp(-(math.log(3 / 8) + math.log(1 / 8)) / 2))
    with pytest.raises(ValueError, match="beyond vocab_size"):
        U.unigram_perplexity(np.array([5], dtype=np.uint16), ev, 4)


def test_an_unfinished_checkpoint_is_never_the_latest(tmp_path):
    model = nn.Linear(3, 2)
    opt = ndl.optim.AdamW(model.parameters(), lr=1e-3)
    U.save_checkpoint(tmp_path, 3, model, opt, {"x": 1})
    (tmp_path / "checkpoints" / ".step-000004.tmp").mkdir()  # a save that crashed midway
    assert U.latest_checkpoint(tmp_path)[0] == 3
    U.save_checkpoint(tmp_path, 5, model, opt, {"x": 2})
    dirs = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step"))
    assert dirs == ["step-000005"]  # keep=1 removed step 3
    other = nn.Linear(3, 2)
    state = U.load_checkpoint(tmp_path / "checkpoints" / "step-000005", other, ndl.optim.AdamW(other.parameters()))
    assert state["step"] == 5 and state["x"] == 2
    np.testing.assert_array_equal(other.weight.detach().numpy(), model.weight.detach().numpy())


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be positive"),
    (["--lr", "nan"], "--lr must be positive and finite, got nan"),  # a traceback from AdamW
    (["--lr", "inf"], "--lr must be positive and finite, got inf"),
    (["--weight-decay", "nan"], "--weight-decay must be >= 0 and finite, got nan"),
    (["--clip=inf"], "--clip must be >= 0 and finite, got inf"),
    (["--seq-len", "5000"], "not one full window"),
    (["--block-size", "24"], "invalid choice: 24"),
    (["--warmup-steps", "10", "--steps", "10"], "must be less than the run's 10 steps"),
    (["--stop-at", "20", "--steps", "10"], "past the run's last step"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio must be in"),
    (["--device", "tpu"], "--device must be cpu or cuda"),
])
def test_bad_arguments_exit_with_a_clear_message(corpus, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        _run(_args(corpus, tmp_path, "bad", *extra))
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_presets_and_patterns_exit_before_the_run_folder_changes(corpus, tmp_path, capsys):
    # With apps/models.py's builder (the test's toy builder accepts only "toy").
    assert _run(_args(corpus, tmp_path, "kept", "--steps", "2", "--warmup-steps", "1")) == 0
    for extra, message in [(["--model", "pythia-7b"], "--model must be one of opt-125m, opt-tiny,"),
                           (["--model", "pythia-tiny", "--attention", "sliding"],
                            "--attention must be one of dense, global, local, mixed")]:
        with pytest.raises(SystemExit) as e:
            train_app.main(_args(corpus, tmp_path, "kept", "--overwrite", *extra))
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert max(_losses(tmp_path / "kept")) == 2  # --overwrite deleted nothing


def test_resume_refuses_changed_settings_and_existing_runs_need_a_flag(corpus, tmp_path, capsys):
    assert _run(_args(corpus, tmp_path, "r", "--steps", "2", "--warmup-steps", "1")) == 0
    for argv, message in [
        (_args(corpus, tmp_path, "r", "--steps", "2", "--warmup-steps", "1"), "exists; pass --resume"),
        (_args(corpus, tmp_path, "r", "--resume", "--warmup-steps", "1", "--lr", "1e-2"), "cannot change the training settings: --lr"),
        (_args(corpus, tmp_path, "r", "--resume", "--warmup-steps", "1"), "already finished its 2 steps"),
        (_args(corpus, tmp_path, "missing", "--resume"), "config.json does not exist"),
    ]:
        with pytest.raises(SystemExit):
            _run(argv)
        assert message in capsys.readouterr().err
    assert _run(_args(corpus, tmp_path, "r", "--steps", "3", "--overwrite")) == 0
    assert max(_losses(tmp_path / "r")) == 3


def test_resume_keeps_the_runs_device_and_matmul_precision_unless_told(corpus, tmp_path, capsys):
    assert _run(_args(corpus, tmp_path, "d", "--steps", "4", "--stop-at", "2")) == 0
    run = json.loads((tmp_path / "d" / "config.json").read_text())["run"]
    assert run["device"] == "cpu" and run["matmul_precision"] == "highest"  # the defaults, recorded
    # A run saved as a CUDA run resumes on CUDA when --device is not given: here, with no GPU to
    # be seen, that is the clear error rather than a silent move to the CPU.
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    config["run"].update(device="cuda", matmul_precision="high")
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    if not ndl.cuda.is_available():
        with pytest.raises(SystemExit):
            _run(_args(corpus, tmp_path, "d", "--resume"))
        assert "--device cuda" in capsys.readouterr().err
    # Told otherwise, it moves.
    assert _run(_args(corpus, tmp_path, "d", "--resume", "--device", "cpu", "--stop-at", "3")) == 0
    assert "on cpu;" in capsys.readouterr().out
    assert max(_losses(tmp_path / "d")) == 3


def test_loss_plot_is_written(corpus, tmp_path):
    argv = [a for a in _args(corpus, tmp_path, "plot", "--steps", "4") if a != "--no-plot"]
    assert _run(argv) == 0
    png = (tmp_path / "plot" / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_lagged_reads_queue_the_copies_at_push_and_read_them_one_step_later():
    events = []

    def to_host(values):
        events.append(("copy", list(values)))
        return lambda: events.append(("read", list(values))) or [float(v) for v in values]

    reads = U.LaggedReads(to_host=to_host)
    reads.push(1, 0.0, 0.1, [2.0, 3.0], 0.5)
    assert events == [("copy", [2.0, 3.0, 0.5])]  # the norm travels with the losses
    (one,) = reads.push(2, 1.0, 0.1, [4.0], None)
    assert events[1:] == [("read", [2.0, 3.0, 0.5]), ("copy", [4.0])]
    assert one.losses == [2.0, 3.0] and one.grad_norm == 0.5
    (two,) = reads.flush()
    assert events[3:] == [("read", [4.0])] and two.losses == [4.0] and math.isnan(two.grad_norm)


def test_progress_rate_is_over_the_last_steps():
    import io

    out = io.StringIO()
    p = U.Progress(3, 0, every=1, stream=out, window=2)
    p.update(1, 1.0, 100, 1.0)
    p.update(2, 1.0, 100, 0.5)   # (100 + 100) / 1.5 s
    p.update(3, 1.0, 100, 0.25)  # the first step left the window: 200 / 0.75 s
    rates = [line.split("  ")[2] for line in out.getvalue().splitlines()]
    assert rates == ["100 tok/s", "133 tok/s", "267 tok/s"]
