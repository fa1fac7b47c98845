"""needle.optim from Python against written-out update formulas."""
import numpy as np

import needle as ndl
from needle import nn, optim


def test_adamw_two_steps_match_formula():
    p = nn.Parameter(ndl._C.Tensor(np.array([1.0, -2.0])))
    opt = optim.AdamW([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    x, m, v = np.array([1.0, -2.0]), np.zeros(2), np.zeros(2)
    for step, g in enumerate([np.array([0.5, -1.0]), np.array([2.0, 0.25])], start=1):
        p.grad = ndl._C.Tensor(g)
        opt.step()
        x = x * (1 - 0.1 * 0.1)
        m = 0.9 * m + 0.1 * g
        v = 0.99 * v + 0.01 * g * g
        x = x - 0.1 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.99**step)) + 1e-8)
        np.testing.assert_allclose(p.detach().numpy(), x, rtol=1e-12)


def test_param_groups_and_scheduler():
    a = nn.Parameter(ndl._C.Tensor(np.ones(2)))
    b = nn.Parameter(ndl._C.Tensor(np.ones(2)))
    opt = optim.SGD([{"params": [a], "weight_decay": 0.5}, {"params": [b]}], lr=1.0)
    sched = optim.lr_scheduler.WarmupCosineLR(opt, warmup_steps=2, total_steps=10, min_ratio=0.0)
    assert opt.param_groups[0]["lr"] == 0.5
    sched.step()
    assert opt.param_groups[1]["lr"] == 1.0
    a.grad = ndl._C.Tensor(np.zeros(2))
    b.grad = ndl._C.Tensor(np.zeros(2))
    opt.step()
    np.testing.assert_allclose(a.detach().numpy(), [0.5, 0.5])
    np.testing.assert_allclose(b.detach().numpy(), [1.0, 1.0])


def test_clip_grad_norm_returns_norm():
    p = nn.Parameter(ndl._C.Tensor(np.zeros(2)))
    p.grad = ndl._C.Tensor(np.array([3.0, 4.0]))
    norm = nn.utils.clip_grad_norm_([p], 1.0)
    # torch's form: a 0-d tensor (float64 here), read with .item() or float()
    assert isinstance(norm, ndl.Tensor) and norm.shape == () and norm.dtype == ndl.float64
    assert abs(norm.item() - 5.0) < 1e-12 and abs(float(norm) - 5.0) < 1e-12
    assert not norm.requires_grad
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.8], rtol=1e-5)
