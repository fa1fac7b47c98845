"""ndl.autocast: which ops compute in which dtype, that a region computes exactly what the same
casts written by hand compute (forward and every gradient), that it stays close to a float64
reference, and the region's semantics (nesting, enabled=False, decorator, exceptions, threads,
backward outside autocast). Runs on the CPU, and on CUDA where the build and machine have it.
"""
import threading

import numpy as np
import pytest

import needle as ndl

F = ndl.nn.functional
Layout = ndl.nn.BlockSparseLayout

DEVICES = ["cpu"] + (["cuda"] if ndl.cuda.is_available() else [])
RNG = np.random.default_rng()  # re-bound per test by conftest.py


def randn(*shape, device="cpu", dtype=ndl.float32, requires_grad=False, scale=1.0):
    return ndl.tensor(RNG.standard_normal(shape) * scale, dtype=dtype, device=device,
                      requires_grad=requires_grad)


def np64(t):
    return t.to(ndl.float64).numpy() if t.dtype != ndl.float64 else t.numpy()


@pytest.mark.parametrize("device", DEVICES)
def test_op_dtypes_inside_a_region(device):
    x, w, b = randn(4, 8, device=device), randn(6, 8, device=device), randn(6, device=device)
    q = randn(1, 2, 64, 16, device=device)
    layout = Layout.local(64, 32, window=1, causal=True)
    with ndl.autocast(device):
        # lower precision
        assert (x @ w.transpose(0, 1)).dtype == ndl.bfloat16
        assert ndl.matmul(x, w.transpose(0, 1)).dtype == ndl.bfloat16
        y = F.linear(x, w, b)
        assert y.dtype == ndl.bfloat16
        assert F.scaled_dot_product_attention(q, q, q, is_causal=True).dtype == ndl.bfloat16
        assert F.block_sparse_attention(q, q, q, layout).dtype == ndl.bfloat16
        # float32, from bfloat16 inputs
        assert F.layer_norm(y, [6]).dtype == ndl.float32
        assert F.softmax(y, dim=-1).dtype == ndl.float32
        assert F.log_softmax(y, dim=-1).dtype == ndl.float32
        assert y.logsumexp(dim=-1).dtype == ndl.float32
        targets = ndl.tensor([0, 1, 2, 3], dtype=ndl.int64, device=device)
        assert F.cross_entropy(y, targets).dtype == ndl.float32
        # everything else: the inputs' dtype, promoted
        assert F.gelu(y).dtype == ndl.bfloat16
        assert (y + randn(4, 6, device=device)).dtype == ndl.float32
        assert y.sum().dtype == ndl.bfloat16
        # float64 is left alone by the lower-precision ops, as in torch
        x64 = randn(4, 8, device=device, dtype=ndl.float64)
        assert (x64 @ x64.transpose(0, 1)).dtype == ndl.float64
    # and outside the region nothing is cast
    assert F.linear(x, w, b).dtype == ndl.float32


class Block(ndl.nn.Module):
    """A pre-norm transformer block and head, with the casts autocast would make as explicit
    arguments: cast(t) is identity (plain float32), or .to(bfloat16) / .to(float32) by hand."""

    def __init__(self, E, H, vocab, device):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = ndl.nn.LayerNorm(E), ndl.nn.LayerNorm(E)
        self.qkv, self.out = ndl.nn.Linear(E, 3 * E), ndl.nn.Linear(E, E)
        self.fc1, self.fc2 = ndl.nn.Linear(E, 4 * E), ndl.nn.Linear(4 * E, E)
        self.head = ndl.nn.Linear(E, vocab, bias=False)
        self.to(device)

    def forward(self, x, targets, layout, low=None, high=None):
        low = low or (lambda t: t)
        high = high or (lambda t: t)

        def linear(m, t):
            return F.linear(low(t), low(m.weight), low(getattr(m, "bias", None)) if getattr(m, "bias", None) is not None else None)

        B, T, E = x.shape
        D = E // self.H
        qkv = linear(self.qkv, F.layer_norm(high(x), [E], high(self.ln1.weight), high(self.ln1.bias)))
        qkv = qkv.reshape(B, T, self.H, 3, D)
        q, k, v = (qkv[:, :, :, i].permute(0, 2, 1, 3) for i in range(3))
        if layout is None:
            a = F.scaled_dot_product_attention(low(q), low(k), low(v), is_causal=True)
        else:
            a = F.block_sparse_attention(low(q), low(k), low(v), layout)
        x = x + linear(self.out, a.permute(0, 2, 1, 3).reshape(B, T, E))
        h = F.layer_norm(high(x), [E], high(self.ln2.weight), high(self.ln2.bias))
        x = x + linear(self.fc2, F.gelu(linear(self.fc1, h)))
        logits = linear(self.head, x)
        return F.cross_entropy(high(logits).reshape(B * T, -1), targets.reshape(B * T))


def grads(model):
    return {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("attention", ["dense", "local"])
def test_region_equals_the_casts_written_by_hand(device, attention):
    B, T, E, H, V = 2, 64, 32, 2, 56  # V a multiple of 8: the CUDA loss reads rows in chunks
    ndl.manual_seed(1)
    model = Block(E, H, V, device)
    x = randn(B, T, E, device=device)
    targets = ndl.tensor(RNG.integers(0, V, (B, T)), dtype=ndl.int64, device=device)
    layout = None if attention == "dense" else Layout.local(T, 16, window=1, causal=True)

    with ndl.autocast(device):
        loss = model(x, targets, layout)
    assert loss.dtype == ndl.float32
    loss.backward()
    auto = grads(model)
    model.zero_grad()

    manual = model(x, targets, layout, low=lambda t: t.to(ndl.bfloat16),
                   high=lambda t: t.to(ndl.float32))
    manual.backward()
    by_hand = grads(model)

    assert loss.item() == manual.item()
    for name, g in auto.items():
        assert g.dtype == ndl.float32, name
        if name.split(".")[0] in ("qkv", "out", "fc1", "fc2", "head"):
            # A Linear's weight and bias gradients come out of its GEMM in float32; the casts by
            # hand round them to bfloat16 (their cast's backward then widens them back). So
            # they agree up to that rounding, one bfloat16 ulp, and the region's are finer.
            got, want = g.numpy(), by_hand[name].numpy()
            np.testing.assert_allclose(got, want, rtol=2.0**-7, atol=1e-6 * np.abs(want).max(),
                                       err_msg=name)
            assert not np.array_equal(got, g.to(ndl.bfloat16).to(ndl.float32).numpy()), name
        else:
            np.testing.assert_array_equal(g.numpy(), by_hand[name].numpy(), err_msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_close_to_a_float64_reference(device):
    B, T, E, H, V = 2, 64, 32, 2, 56  # V a multiple of 8: the CUDA loss reads rows in chunks
    ndl.manual_seed(2)
    model = Block(E, H, V, device)
    x = randn(B, T, E, device=device)
    targets = ndl.tensor(RNG.integers(0, V, (B, T)), dtype=ndl.int64, device=device)
    layout = Layout.mixed(T, 16, window=1, global_blocks=1, stride=2, causal=True)
    with ndl.autocast(device):
        loss = model(x, targets, layout)
    loss.backward()
    auto = {k: np64(v) for k, v in grads(model).items()}
    model.zero_grad()

    model64 = Block(E, H, V, "cpu")
    for (name, p64), (_, p) in zip(model64.named_parameters(), model.named_parameters()):
        p64.data = p.detach().to(ndl.float64).cpu()
    loss64 = model64(x.detach().to(ndl.float64).cpu(), targets.cpu(), layout)
    loss64.backward()
    assert abs(loss.item() - loss64.item()) < 2e-2 * abs(loss64.item())
    for name, p64 in model64.named_parameters():
        want = p64.grad.numpy()
        err = np.linalg.norm(auto[name] - want) / max(np.linalg.norm(want), 1e-30)
        assert err < 2e-2, f"{name}: relative error {err:.3g} against float64"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_parameter_gradients_are_float32_products(device, bias):
    """Under autocast a float32 Linear's weight and bias gradients are the float32 results of its
    bfloat16 GEMM (the bias gradient summed in the same GEMM), never rounded to bfloat16: the
    float64 product of the bfloat16 operands, to float32 accuracy. Rounded to bfloat16 they would
    be off by up to 2^-9 relative. The input's gradient stays the bfloat16 product's."""
    x = randn(3, 37, 24, device=device, requires_grad=True)
    w = randn(40, 24, device=device, requires_grad=True)
    b = randn(40, device=device, requires_grad=True) if bias else None
    gy = randn(3, 37, 40, device=device).to(ndl.bfloat16)
    with ndl.autocast(device):
        y = F.linear(x, w, b)
    assert y.dtype == ndl.bfloat16
    y.backward(gy)

    g64 = np64(gy).reshape(-1, 40)
    x64 = np64(x.detach().to(ndl.bfloat16)).reshape(-1, 24)
    w64 = np64(w.detach().to(ndl.bfloat16))
    assert w.grad.dtype == ndl.float32 and x.grad.dtype == ndl.float32
    np.testing.assert_allclose(w.grad.numpy(), g64.T @ x64, rtol=1e-5, atol=1e-4)
    if bias:
        assert b.grad.dtype == ndl.float32
        np.testing.assert_allclose(b.grad.numpy(), g64.sum(0), rtol=1e-5, atol=1e-4)
    # The input's gradient: the bfloat16 product g @ w, widened by its cast's backward.
    want_x = (g64 @ w64).reshape(3, 37, 24)
    np.testing.assert_allclose(x.grad.numpy(), want_x, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_double_backward_under_autocast(device):
    """With create_graph, Linear's gradients are Tensor ops through the bfloat16 weight, so a
    gradient penalty differentiates again, down to the float32 weight."""
    x = randn(5, 8, device=device, requires_grad=True)
    w = randn(6, 8, device=device, requires_grad=True)
    b = randn(6, device=device, requires_grad=True)
    with ndl.autocast(device):
        y = F.linear(x, w, b)
    y.to(ndl.float32).sum().backward(create_graph=True)
    gx = x.grad
    x.grad = w.grad = b.grad = None
    (gx * gx).sum().backward()
    # gx[i, :] = sum_o w[o, :], so d/dw of sum(gx^2) = 2 * 5 * colsum(w) broadcast over rows.
    w64 = np64(w.detach().to(ndl.bfloat16))
    want = np.broadcast_to(2 * 5 * w64.sum(0), (6, 8))
    assert w.grad.dtype == ndl.float32
    np.testing.assert_allclose(w.grad.numpy(), want, rtol=2e-2, atol=2e-2)


def test_regions_nest_and_restore():
    assert not ndl.is_autocast_enabled("cpu")
    with ndl.autocast("cpu"):
        assert ndl.is_autocast_enabled("cpu") and not ndl.is_autocast_enabled("cuda")
        with ndl.autocast("cpu", enabled=False):
            assert not ndl.is_autocast_enabled("cpu")
            assert (randn(2, 2) @ randn(2, 2)).dtype == ndl.float32
        assert ndl.is_autocast_enabled("cpu")
        with pytest.raises(ZeroDivisionError):
            with ndl.autocast("cpu", enabled=False):
                1 / 0
        assert ndl.is_autocast_enabled("cpu")
    assert not ndl.is_autocast_enabled("cpu")
    assert ndl.get_autocast_dtype("cpu") == ndl.bfloat16
    # a device such as "cuda:0" names its type; regions are per type
    with ndl.autocast("cuda:0"):
        assert ndl.is_autocast_enabled("cuda") and not ndl.is_autocast_enabled("cpu")


def test_decorator():
    @ndl.autocast("cpu")
    def f(a, b):
        return a @ b

    assert f(randn(2, 3), randn(3, 2)).dtype == ndl.bfloat16
    assert not ndl.is_autocast_enabled("cpu")


def test_regions_are_per_thread():
    seen = []
    with ndl.autocast("cpu"):
        t = threading.Thread(target=lambda: seen.append(ndl.is_autocast_enabled("cpu")))
        t.start()
        t.join()
    assert seen == [False]


def test_backward_runs_with_autocast_off():
    """A backward called inside a region gives the same gradients as one called outside: the
    gradient formulas' matmuls must not be cast again."""
    w = randn(8, 8, requires_grad=True)
    x = randn(4, 8)
    with ndl.autocast("cpu"):
        y = F.softmax(x @ w, dim=-1).sum()
        y.backward()
    inside = w.grad.numpy().copy()
    w.grad = None
    with ndl.autocast("cpu"):
        y = F.softmax(x @ w, dim=-1).sum()
    y.backward()
    np.testing.assert_array_equal(inside, w.grad.numpy())
    assert w.grad.dtype == ndl.float32


def test_gradients_have_their_inputs_dtype():
    """Without autocast too: where an op mixes dtypes, each input's gradient has its own dtype
    (the bfloat16 branch's backward stays bfloat16), as in PyTorch."""
    a = randn(3, 4, dtype=ndl.bfloat16, requires_grad=True)
    b = randn(3, 4, requires_grad=True)
    w = randn(4, 4, dtype=ndl.bfloat16, requires_grad=True)
    ((a @ w) * b).sum().backward()
    assert a.grad.dtype == ndl.bfloat16 and w.grad.dtype == ndl.bfloat16
    assert b.grad.dtype == ndl.float32
    want = (b.detach().to(ndl.bfloat16).numpy().astype(np.float64)
            @ w.detach().numpy().astype(np.float64).T)
    np.testing.assert_allclose(a.grad.to(ndl.float64).numpy(), want, rtol=2e-2, atol=2e-2)


def test_a_gradient_argument_of_another_dtype_is_cast_to_the_outputs():
    # backward(gradient) in float32 for bfloat16 outputs of fused ops (layer_norm, block-sparse
    # attention): their gradient functions get the output's dtype, as every other gradient.
    x = randn(2, 64, 16, dtype=ndl.bfloat16, requires_grad=True)
    y = F.layer_norm(x, [16])
    g = randn(2, 64, 16)
    y.backward(g)
    want = x.grad.to(ndl.float32).numpy()
    x.grad = None
    F.layer_norm(x, [16]).backward(g.to(ndl.bfloat16))
    assert x.grad.dtype == ndl.bfloat16
    np.testing.assert_array_equal(x.grad.to(ndl.float32).numpy(), want)
    q = randn(1, 2, 64, 16, dtype=ndl.bfloat16, requires_grad=True)
    out = F.block_sparse_attention(q, q, q, Layout.local(64, 32, window=1, causal=True))
    out.backward(randn(1, 2, 64, 16))
    assert q.grad.dtype == ndl.bfloat16 and np.isfinite(q.grad.to(ndl.float32).numpy()).all()


def test_errors_say_what_was_expected():
    with pytest.raises(TypeError, match="expected dtype bfloat16.*got float64"):
        ndl.autocast("cpu", dtype=ndl.float64)
    with pytest.raises(ValueError, match="expected device_type 'cpu' or 'cuda', got 'tpu'"):
        ndl.autocast("tpu")
    with pytest.raises(TypeError, match="device_type as a str"):
        ndl.autocast(ndl.device("cpu"))
    with pytest.raises(TypeError, match="enabled as a bool"):
        ndl.autocast("cpu", enabled="yes")
    assert not ndl.is_autocast_enabled("cpu")
