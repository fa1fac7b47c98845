"""apps.compare's summary over seeds (--seeds), on result files written here."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from apps import compare  # noqa: E402


def _write(d, run, seed, val_loss, tokens_per_s, curve=None, **overrides):
    settings = {"model": "pythia-70m", "data": f"/machine{seed}/data/sotu", "seq_len": 2048, "batch_size": 8,
                "steps": 1500, "lr": 1e-3, "warmup_steps": 15, "seed": seed, "matmul_precision": "highest"}
    settings.update(overrides)
    d.mkdir(parents=True, exist_ok=True)
    result = {"run": run, "val_loss": val_loss, "tokens_per_s": tokens_per_s, "settings": settings}
    if curve is not None:
        result["val_curve"] = curve
    (d / f"{run}.json").write_text(json.dumps(result))


def test_seeds_report_gaps_mean_and_std(tmp_path, capsys):
    for seed, (dense, mixed) in enumerate([(4.25, 4.31), (4.26, 4.30), (4.27, 4.35)]):
        _write(tmp_path / f"s{seed}", "dense", seed, dense, 100.0)
        _write(tmp_path / f"s{seed}", "mixed", seed, mixed, 112.0)
    out = tmp_path / "seeds.json"
    summary = compare.seeds_report([tmp_path / f"s{i}" for i in range(3)], out)
    gaps = [s["gap_nats"] for s in summary["seeds"]]
    assert gaps == pytest.approx([0.06, 0.04, 0.08])
    assert summary["mean_gap_nats"] == pytest.approx(0.06)
    assert summary["std_gap_nats"] == pytest.approx(0.02)
    assert summary["within_0.05"] is False
    assert [s["mixed_speedup"] for s in summary["seeds"]] == pytest.approx([1.12] * 3)
    assert json.loads(out.read_text())["mean_gap_nats"] == pytest.approx(0.06)
    assert "mean +0.0600 nats over 3 seeds" in capsys.readouterr().out


def test_seeds_report_gap_at_each_runs_lowest_validation_loss(tmp_path, capsys):
    # seed 0: both runs lowest mid-run, mixed then overfits more; seed 1 has no curve (older JSON)
    _write(tmp_path / "s0", "dense", 0, 4.30, 100.0, curve=[[0, 10.9], [750, 4.00], [1500, 4.30]])
    _write(tmp_path / "s0", "mixed", 0, 4.40, 110.0, curve=[[0, 10.9], [600, 4.02], [750, 4.03], [1500, 4.40]])
    _write(tmp_path / "s1", "dense", 1, 4.25, 100.0)
    _write(tmp_path / "s1", "mixed", 1, 4.27, 110.0)
    summary = compare.seeds_report([tmp_path / "s0", tmp_path / "s1"], tmp_path / "seeds.json")
    s0, s1 = summary["seeds"]
    assert s0["dense_lowest"] == [750, 4.00] and s0["mixed_lowest"] == [600, 4.02]
    assert s0["gap_at_lowest_nats"] == pytest.approx(0.02)
    assert s1["dense_lowest"] is None and s1["gap_at_lowest_nats"] is None
    assert summary["mean_gap_at_lowest_nats"] == pytest.approx(0.02)
    assert summary["mean_gap_nats"] == pytest.approx(0.06)
    assert summary["stderr_gap_nats"] == pytest.approx(0.04)  # std 0.04 * sqrt(2) over sqrt(2)
    out = capsys.readouterr().out
    assert "at each run's lowest validation loss: mean +0.0200 nats over 1 seeds" in out
    # seed 0's curves share steps 0, 750 and 1500: the plot of curves and gaps is written beside
    assert (tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "seeds.png" in out


def test_seeds_plot_needs_curves(tmp_path):
    _write(tmp_path / "s0", "dense", 0, 4.30, 100.0)
    _write(tmp_path / "s0", "mixed", 0, 4.40, 110.0, curve=[[0, 10.9], [1500, 4.40]])
    compare.seeds_report([tmp_path / "s0"], tmp_path / "seeds.json")
    assert (tmp_path / "seeds.json").exists()
    assert not (tmp_path / "seeds.png").exists()  # dense has no curve: nothing to draw


def test_seeds_report_rejects_missing_runs_and_other_settings(tmp_path):
    _write(tmp_path / "a", "dense", 0, 4.25, 100.0)
    with pytest.raises(SystemExit, match="mixed.json is missing"):
        compare.seeds_report([tmp_path / "a"], tmp_path / "seeds.json")
    _write(tmp_path / "a", "mixed", 0, 4.30, 110.0)
    _write(tmp_path / "b", "dense", 1, 4.25, 100.0)
    _write(tmp_path / "b", "mixed", 1, 4.30, 110.0, steps=1000)
    with pytest.raises(SystemExit, match="other settings \\(steps\\)"):
        compare.seeds_report([tmp_path / "a", tmp_path / "b"], tmp_path / "seeds.json")
    assert not (tmp_path / "seeds.json").exists()


def test_val_curve_keeps_every_evaluation():
    records = [{"type": "train", "step": 1, "loss": 9.0}, {"type": "eval", "step": 0, "val_loss": 10.5},
               {"type": "train", "step": 2, "loss": 8.0}, {"type": "eval", "step": 2, "val_loss": 7.25}]
    assert compare._val_curve(records) == [[0, 10.5], [2, 7.25]]


def test_table_prints_from_the_jsons_and_writes_nothing(tmp_path, capsys):
    _write(tmp_path, "dense", 0, 4.25, 100.0, block_size=64)
    _write(tmp_path, "mixed", 0, 4.32, 112.0, block_size=64)
    for run, density in (("dense", 1.0), ("mixed", 0.483)):  # the fields a finished run has
        path = tmp_path / f"{run}.json"
        r = json.loads(path.read_text())
        r.update(attention=run, attention_density=density, val_ppl=70.0, train_time_s=200.0)
        path.write_text(json.dumps(r))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert compare.main(["--table", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mixed_within_0.05_nats_of_dense: NO (gap +0.0700 nats)" in out
    assert "mixed_faster_than_dense: yes (1.12x" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _finished(d, run, density, **overrides):
    _write(d, run, 0, 4.3, 100.0, block_size=64, **overrides)
    path = d / f"{run}.json"
    r = json.loads(path.read_text())
    r.update(attention=run, attention_density=density, val_ppl=70.0, train_time_s=200.0)
    path.write_text(json.dumps(r))


def test_table_names_the_precision_and_flags_runs_of_another(tmp_path, capsys):
    # Results written before --autocast existed count as fp32 ("off"), so they still compare with
    # fp32 runs; a bfloat16-autocast run among them is flagged.
    _finished(tmp_path, "dense", 1.0)
    _finished(tmp_path, "local", 0.119, autocast="off")
    assert compare.main(["--table", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ", fp32, fp32 matmuls: highest" in out and "warning" not in out
    _finished(tmp_path, "mixed", 0.483, autocast="bfloat16")
    assert compare.main(["--table", "--out-dir", str(tmp_path)]) == 0
    assert "warning: mixed ran with other settings than dense" in capsys.readouterr().out
    for run in ("dense", "local"):
        _finished(tmp_path, run, 1.0 if run == "dense" else 0.119, autocast="bfloat16")
    assert compare.main(["--table", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ", bf16 autocast, fp32 matmuls: highest" in out and "warning" not in out


def test_autocast_reaches_both_frameworks_settings():
    s = compare._settings(compare.build_parser().parse_args(["--autocast", "bfloat16"]))
    assert s["autocast"] == "bfloat16" and compare.precision(s) == "bf16 autocast"
    assert compare._settings(compare.build_parser().parse_args([]))["autocast"] == "off"
