"""bench/profile_train_step.py's trace summary, on Chrome traces written here (no GPU, no torch)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("profile_train_step", ROOT / "bench" / "profile_train_step.py")
prof = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prof)


def _event(cat, name, ts, dur, ph="X"):
    return {"ph": ph, "cat": cat, "name": name, "ts": ts, "dur": dur}


def test_busy_idle_launches_and_groups_per_step():
    trace = {"traceEvents": [
        _event("kernel", "ampere_sgemm_128x64_nn", 0, 100),
        _event("kernel", "needle::cuda::attn::forward_kernel<float>", 90, 30),  # overlaps the gemm by 10
        _event("gpu_memcpy", "Memcpy HtoD", 150, 10),
        _event("kernel", "needle::cuda::adamw_kernel<float>", 200, 20),
        _event("kernel", "ampere_sgemm_128x64_nn", 300, 100),
        _event("cpu_op", "aten::mm", 0, 1000),          # host events are not GPU time
        _event("kernel", "ignored instant", 50, 0, ph="i"),
    ]}
    s = prof.summarise_trace(trace, steps=2)
    # busy: [0,120] + [150,160] + [200,220] + [300,400] = 250 us; span 400 us; over 2 steps, in ms
    assert s["busy_ms"] == pytest.approx(0.125)
    assert s["span_ms"] == pytest.approx(0.2)
    assert s["idle_ms"] == pytest.approx(0.075)
    assert s["kernel_launches"] == 2.0
    assert s["by_category_ms"] == pytest.approx({"matmul": 0.1, "attention": 0.015, "optimizer": 0.01,
                                                 "copy / layout": 0.005})
    assert list(s["by_category_ms"]) == ["matmul", "attention", "optimizer", "copy / layout"]
    top = s["by_kernel"][0]
    assert top["name"] == "ampere_sgemm_128x64_nn" and top["ms"] == pytest.approx(0.1) and top["calls"] == 1.0
    # gaps: [120, 150] before the copy, [160, 200] before adamw, [220, 300] before the second gemm
    assert [(g["name"], g["ms"], g["gaps"]) for g in s["idle_before"]] == [
        ("ampere_sgemm_128x64_nn", pytest.approx(0.04), 0.5),
        ("needle::cuda::adamw_kernel<float>", pytest.approx(0.02), 0.5),
        ("Memcpy HtoD", pytest.approx(0.015), 0.5)]
    assert sum(g["ms"] for g in s["idle_before"]) == pytest.approx(s["idle_ms"])


def test_categories_of_both_frameworks_kernels():
    assert prof.category("fmha_cutlassB_f32_aligned_64x64_k64_sm80") == "attention"
    assert prof.category("sm90_xmma_gemm_f32f32_f32f32_f32_nn_n_tilesize128x128x8") == "matmul"
    assert prof.category("needle::cuda::(anonymous namespace)::cross_entropy_forward_kernel<float>") == "cross-entropy"
    assert prof.category("void at::native::vectorized_layer_norm_kernel<float, float>") == "layer norm"
    assert prof.category("void at::native::multi_tensor_apply_kernel<...>") == "optimizer"
    assert prof.category("needle::cuda::ewise_contiguous_kernel<needle::cuda::AddOp>") == "elementwise / other"


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="no GPU kernel"):
        prof.summarise_trace({"traceEvents": [_event("cpu_op", "aten::mm", 0, 5)]}, steps=1)
    with pytest.raises(ValueError, match="expected steps >= 1, got 0"):
        prof.summarise_trace({"traceEvents": []}, steps=0)


def test_composed_rotary_ablation_gives_the_fused_kernels_numbers(monkeypatch):
    # --rotary composed swaps RotaryTables.rotate for the elementwise composition needle ran
    # before the fused kernel; the A/B is only fair if both give the same bits.
    np = pytest.importorskip("numpy")
    import needle as ndl
    from apps.models_attention import RotaryTables

    monkeypatch.setattr(RotaryTables, "rotate", RotaryTables.rotate)  # restored after the test
    x = np.random.default_rng(3).standard_normal((2, 3, 11, 16)).astype(np.float32)
    w = np.random.default_rng(4).standard_normal((2, 3, 11, 16)).astype(np.float32)
    results = []
    for composed in (False, True):
        if composed:
            prof.use_composed_rotary()
        rot = RotaryTables(head_dim=16, rotary_dim=4, base=10000, length=8)
        for dtype in (ndl.float32, ndl.bfloat16):
            t = ndl.tensor(x, dtype=dtype, requires_grad=True)
            y = rot.rotate(t.permute(0, 2, 1, 3).permute(0, 2, 1, 3), 5)
            (y * ndl.tensor(w, dtype=dtype)).sum().backward()
            results.append((y.detach().numpy(), t.grad.numpy()))
    assert "use_composed_rotary" in RotaryTables.rotate.__qualname__  # the swap took effect
    for fused, composed in zip(results[:2], results[2:]):
        np.testing.assert_array_equal(fused[0], composed[0])
        np.testing.assert_array_equal(fused[1], composed[1])
    assert not np.array_equal(results[0][0][..., :4], x[..., :4])


def test_unfused_head_ablation_computes_the_same_loss(monkeypatch):
    # --head unfused swaps the models' loss for F.cross_entropy of F.linear's logits; the A/B is
    # only fair if both give the same loss and gradients (to float32 rounding: the order differs).
    np = pytest.importorskip("numpy")
    import needle as ndl
    import sys
    sys.path.insert(0, str(ROOT))
    from apps.models import GPTNeoXConfig, _CausalLM, build_model

    monkeypatch.setattr(_CausalLM, "loss", _CausalLM.loss)  # restored after the test
    config = GPTNeoXConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4,
                           intermediate_size=64, max_positions=32)
    rng = np.random.default_rng(5)
    x = ndl.tensor(rng.integers(0, 64, (2, 16)))
    y = ndl.tensor(rng.integers(0, 64, (2, 16)))
    results = []
    for unfused in (False, True):
        if unfused:
            prof.use_unfused_head()
        ndl.manual_seed(0)
        model = build_model(config)
        loss = model.loss(x, y)
        loss.backward()
        results.append((loss.item(), model.embed_out.weight.grad.numpy()))
    assert "use_unfused_head" in _CausalLM.loss.__qualname__  # the swap took effect
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)


def test_needle_step_times_its_host_phases_only_while_on(tmp_path):
    # The profiler's needle step (apps/train.py's step) on the CPU with the tiny preset: the clock
    # sums each phase's host time while `on` and counts whole steps.
    np = pytest.importorskip("numpy")
    import sys
    sys.path.insert(0, str(ROOT))
    from apps import compare

    np.random.default_rng(0).integers(0, 50, 4000).astype(np.uint16).tofile(tmp_path / "train.bin")
    s = compare._settings(compare.build_parser().parse_args(
        ["--model", "pythia-tiny", "--device", "cpu", "--data", str(tmp_path), "--seq-len", "16",
         "--batch-size", "2", "--block-size", "16"]))
    clock = prof.PhaseClock()
    step = prof.needle_step(s, clock)
    # Each call queues a step and returns the one before's loss: the first has none to return.
    assert step() is None
    assert np.isfinite(step()) and clock.steps == 0 and clock.seconds == [0.0] * len(prof.PHASES)
    clock.on = True
    for _ in range(3):
        step()
    clock.on = False
    step()
    assert clock.steps == 3
    ms = clock.ms_per_step()
    assert list(ms) == list(prof.PHASES) and all(v > 0 for v in ms.values())
    assert ms["forward + backward"] > ms["batch"]


def test_reads_ablation_reads_the_same_values(monkeypatch):
    # --reads blocking (float() of the device values at read time) against the non-blocking copies
    # apps.train makes: the A/B must read the same numbers.
    ndl = pytest.importorskip("needle")
    from apps import train_utils as U

    values = [ndl.tensor([2.5])[0], ndl.tensor(0.125, dtype=ndl.float64), 3.0]
    assert prof.to_host("needle") is U.needle_to_host and prof.to_host("torch") is U.torch_to_host
    copied = prof.to_host("needle")(values)()
    monkeypatch.setattr(prof, "BLOCKING_READS", True)
    assert prof.to_host("needle")(values)() == copied == [2.5, 0.125, 3.0]
