"""F.linear_cross_entropy on the CPU: cross_entropy(linear(x, w), targets) as one op, whose forward
pass writes the logits' gradient over the logits. Checked against float64 NumPy (loss, dx, dw for
each reduction, ignored rows included), against the unfused ops, under no_grad and autocast, with
one operand frozen, through the language models' loss, and on bad input."""
import sys
from pathlib import Path

import numpy as np
import pytest

ndl = pytest.importorskip("needle")
F = ndl.nn.functional

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from apps.models import GPTNeoXConfig, OPTConfig, build_model  # noqa: E402

RNG = np.random.default_rng(0)  # re-seeded per test by conftest.py


def reference(x, w, t, reduction, upstream=None, ignore_index=-100):
    """Loss and the gradients (dx, dw) of sum(loss * upstream) in float64."""
    logits = x @ w.T
    top = logits.max(-1, keepdims=True)
    lse = (top + np.log(np.exp(logits - top).sum(-1, keepdims=True)))[..., 0]
    keep = t != ignore_index
    safe = np.where(keep, t, 0)
    per_row = np.where(keep, lse - np.take_along_axis(logits, safe[..., None], -1)[..., 0], 0.0)
    if reduction == "none":
        loss, g = per_row, upstream
    elif reduction == "sum":
        loss, g = per_row.sum(), np.ones_like(per_row)
    else:
        loss, g = per_row.sum() / keep.sum(), np.full(per_row.shape, 1.0 / keep.sum())
    d = np.exp(logits - lse[..., None])
    np.put_along_axis(d, safe[..., None], np.take_along_axis(d, safe[..., None], -1) - 1, -1)
    d = d * (keep * g)[..., None]
    dx = d @ w
    dw = d.reshape(-1, d.shape[-1]).T @ x.reshape(-1, x.shape[-1])
    return loss, dx, dw


def inputs(shape=(3, 5, 7), classes=11, dtype=ndl.float64):
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal((classes, shape[-1])) * 0.5
    t = RNG.integers(0, classes, shape[:-1])
    t.reshape(-1)[::4] = -100
    return x, w, t


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_float64_numpy(reduction):
    xv, wv, tv = inputs()
    x = ndl.tensor(xv, dtype=ndl.float64, requires_grad=True)
    w = ndl.tensor(wv, dtype=ndl.float64, requires_grad=True)
    loss = F.linear_cross_entropy(x, w, ndl.tensor(tv), reduction=reduction)
    upstream = RNG.standard_normal(tv.shape)
    want_loss, want_dx, want_dw = reference(xv, wv, tv, reduction, upstream)
    assert tuple(loss.shape) == np.shape(want_loss)
    np.testing.assert_allclose(loss.detach().numpy(), want_loss, rtol=1e-12)
    if reduction == "none":
        (loss * ndl.tensor(upstream, dtype=ndl.float64)).sum().backward()
    else:
        loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), want_dx, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(w.grad.numpy(), want_dw, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matches_the_unfused_ops(dtype):
    # The same numbers as cross_entropy(linear(...)): float32 to rounding; bfloat16 rounds the
    # product and the logits' gradient once on both sides, in different orders.
    dt = getattr(ndl, dtype)
    xv, wv, tv = inputs((4, 9, 16), 300)
    target = ndl.tensor(tv)
    results = []
    for fused in (True, False):
        x = ndl.tensor(xv.astype(np.float32), dtype=dt, requires_grad=True)
        w = ndl.tensor(wv.astype(np.float32), dtype=dt, requires_grad=True)
        if fused:
            loss = F.linear_cross_entropy(x, w, target)
        else:
            loss = F.cross_entropy(F.linear(x, w).reshape(36, 300), target.reshape(36))
        loss.backward()
        assert loss.dtype == dt and x.grad.dtype == dt and w.grad.dtype == dt
        results.append([np.asarray(a.detach().to(dtype=ndl.float32).numpy(), np.float64)
                        for a in (loss, x.grad, w.grad)])
    tol = 1e-6 if dtype == "float32" else 1e-2
    for a, b in zip(*results):
        assert np.linalg.norm(a - b) <= tol * np.linalg.norm(b)


def test_one_operand_frozen_and_no_grad():
    xv, wv, tv = inputs()
    _, want_dx, want_dw = reference(xv, wv, tv, "mean")
    x = ndl.tensor(xv, dtype=ndl.float64, requires_grad=True)
    w = ndl.tensor(wv, dtype=ndl.float64)
    F.linear_cross_entropy(x, w, ndl.tensor(tv)).backward()
    np.testing.assert_allclose(x.grad.numpy(), want_dx, rtol=1e-11, atol=1e-13)
    assert w.grad is None
    x = ndl.tensor(xv, dtype=ndl.float64)
    w = ndl.tensor(wv, dtype=ndl.float64, requires_grad=True)
    F.linear_cross_entropy(x, w, ndl.tensor(tv)).backward()
    np.testing.assert_allclose(w.grad.numpy(), want_dw, rtol=1e-11, atol=1e-13)
    # Under no_grad only the loss is computed (no gradient pass over the logits).
    w = ndl.tensor(wv, dtype=ndl.float64, requires_grad=True)
    with ndl.no_grad():
        loss = F.linear_cross_entropy(x, w, ndl.tensor(tv))
    assert not loss.requires_grad
    assert loss.item() == pytest.approx(reference(xv, wv, tv, "mean")[0], rel=1e-12)


def test_double_backward_is_refused():
    xv, wv, tv = inputs()
    x = ndl.tensor(xv, dtype=ndl.float64, requires_grad=True)
    w = ndl.tensor(wv, dtype=ndl.float64, requires_grad=True)
    loss = F.linear_cross_entropy(x, w, ndl.tensor(tv), reduction="none")
    u = ndl.tensor(RNG.standard_normal(tv.shape), dtype=ndl.float64, requires_grad=True)
    (loss * u).sum().backward(create_graph=True)
    with pytest.raises(RuntimeError, match="double backward through linear_cross_entropy"):
        x.grad.sum().backward()


def test_under_autocast():
    # float32 parameters: the product in bfloat16, the loss and the gradients in float32, close to
    # float64's on the same numbers.
    xv, wv, tv = inputs((2, 8, 32), 64)
    x = ndl.tensor(xv.astype(np.float32), requires_grad=True)
    w = ndl.tensor(wv.astype(np.float32), requires_grad=True)
    with ndl.autocast("cpu"):
        loss = F.linear_cross_entropy(x, w, ndl.tensor(tv))
    assert loss.dtype == ndl.float32
    loss.backward()
    assert x.grad.dtype == ndl.float32 and w.grad.dtype == ndl.float32
    want = reference(xv, wv, tv, "mean")
    for got, expect in zip((loss, x.grad, w.grad), want):
        got = np.asarray(got.detach().numpy(), np.float64)
        assert np.linalg.norm(got - expect) <= 2e-2 * np.linalg.norm(expect)


@pytest.mark.parametrize("config", [
    GPTNeoXConfig(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                  max_positions=64),
    OPTConfig(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, ffn_dim=64,
              max_positions=64),
], ids=["gpt_neox", "opt"])
def test_model_loss_equals_cross_entropy_of_the_logits(config):
    # model.loss (what apps.train minimises) against cross_entropy of model(ids), and their
    # gradients, on one model (OPT's output layer is the tied input embedding).
    model = build_model(config)
    ids = RNG.integers(0, 96, (2, 24))
    targets = RNG.integers(0, 96, (2, 24))
    targets[0, :3] = -100
    results = []
    for fused in (True, False):
        model.zero_grad()
        if fused:
            loss = model.loss(ids, targets)
        else:
            logits = model(ids)
            loss = F.cross_entropy(logits.reshape(48, 96), ndl.tensor(targets.reshape(48)))
        loss.backward()
        results.append((loss.item(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}))
    (fused_loss, fused_grads), (loss, grads) = results
    assert fused_loss == pytest.approx(loss, rel=1e-6)
    for name, g in grads.items():
        assert np.linalg.norm(fused_grads[name] - g) <= 1e-5 * np.linalg.norm(g) + 1e-9, name


def test_bad_input_is_named():
    x = ndl.tensor(np.zeros((2, 3, 4), np.float32))
    w = ndl.tensor(np.zeros((5, 4), np.float32))
    t = ndl.tensor(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="expected a 2-D weight"):
        F.linear_cross_entropy(x, ndl.tensor(np.zeros(4, np.float32)), t)
    with pytest.raises(ValueError, match=r"input of shape \(2, 3, 4\) does not match weight of shape \(5, 3\)"):
        F.linear_cross_entropy(x, ndl.tensor(np.zeros((5, 3), np.float32)), t)
    with pytest.raises(TypeError, match="float32 and float64"):
        F.linear_cross_entropy(x, ndl.tensor(np.zeros((5, 4)), dtype=ndl.float64), t)
    with pytest.raises(ValueError, match=r"expected targets of shape \(2, 3\) for input of shape \(2, 3, 4\), got \(6,\)"):
        F.linear_cross_entropy(x, w, t.reshape(6))
    with pytest.raises(TypeError, match="int64 class-index targets, got float32"):
        F.linear_cross_entropy(x, w, ndl.tensor(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.linear_cross_entropy(x, w, t, reduction="avg")
    with pytest.raises(IndexError, match="target 5"):
        F.linear_cross_entropy(x, w, ndl.tensor(np.full((2, 3), 5, np.int64)))
