"""F.rotary_embedding: the fused rotary kernels (forward and backward) on every device present.

The reference is NumPy's own arithmetic: x * cos + rotate_half(x) * sin computed op by op in the
same dtype (bfloat16 emulated: float32 arithmetic rounded to bfloat16 after every op, which is
what needle's elementwise kernels do), so the fused kernel must agree to the bit. The gradient is
the adjoint map, checked the same way and by <f(x), y> = <x, f^T(y)> in float64.
"""
import numpy as np
import pytest

import needle as ndl

F = ndl.nn.functional
DEVICES = ["cpu"] + (["cuda"] if ndl.cuda.is_available() else [])
DTYPES = {"float64": ndl.float64, "float32": ndl.float32, "bfloat16": ndl.bfloat16}


def bf16(a):
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32."""
    b = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return r.view(np.float32)


def reference(x, cos, sin, dtype, transpose=False):
    """The map (or its adjoint) op by op in `dtype`'s arithmetic; x (..., T, D), tables (T, R)."""
    rnd = bf16 if dtype == "bfloat16" else (lambda a: a)
    R, h = cos.shape[1], cos.shape[1] // 2
    lo, hi = x[..., :h], x[..., h:R]
    c_lo, c_hi, s_lo, s_hi = cos[:, :h], cos[:, h:], sin[:, :h], sin[:, h:]
    if not transpose:
        first = rnd(rnd(lo * c_lo) - rnd(hi * s_lo))
        second = rnd(rnd(hi * c_hi) + rnd(lo * s_hi))
    else:
        first = rnd(rnd(lo * c_lo) + rnd(hi * s_hi))
        second = rnd(rnd(hi * c_hi) - rnd(lo * s_lo))
    return np.concatenate([first, second, x[..., R:]], axis=-1)


def tables(T, R, dtype, offset=3):
    inv = 1.0 / 10000 ** (np.arange(0, R, 2) / R)
    ang = np.outer(np.arange(offset, offset + T), inv)
    np_dtype = np.float64 if dtype == "float64" else np.float32
    cos = np.concatenate([np.cos(ang)] * 2, -1).astype(np_dtype)
    sin = np.concatenate([np.sin(ang)] * 2, -1).astype(np_dtype)
    if dtype == "bfloat16":
        cos, sin = bf16(cos), bf16(sin)
    return cos, sin


def values(shape, dtype, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    if dtype == "float64":
        return x
    x = x.astype(np.float32)
    return bf16(x) if dtype == "bfloat16" else x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("R", [2, 6, 10])
def test_forward_and_gradient_equal_the_op_by_op_formula(device, dtype, R):
    T, D = 7, 10
    x = values((2, 3, T, D), dtype, 1)
    dy = values((2, 3, T, D), dtype, 2)
    cos, sin = tables(T, R, dtype)
    xt = ndl.tensor(x, dtype=DTYPES[dtype], device=device, requires_grad=True)
    y = F.rotary_embedding(xt, ndl.tensor(cos, dtype=DTYPES[dtype], device=device),
                           ndl.tensor(sin, dtype=DTYPES[dtype], device=device))
    assert y.dtype == DTYPES[dtype] and y.shape == (2, 3, T, D)
    np.testing.assert_array_equal(y.detach().numpy().astype(x.dtype), reference(x, cos, sin, dtype))
    y.backward(ndl.tensor(dy, dtype=DTYPES[dtype], device=device))
    np.testing.assert_array_equal(xt.grad.numpy().astype(x.dtype),
                                  reference(dy, cos, sin, dtype, transpose=True))


def test_gradient_is_the_adjoint_in_float64():
    T, D, R = 5, 8, 8
    x, y = values((3, T, D), "float64", 3), values((3, T, D), "float64", 4)
    cos, sin = tables(T, R, "float64")
    fx = reference(x, cos, sin, "float64")
    fty = reference(y, cos, sin, "float64", transpose=True)
    assert abs(np.sum(fx * y) - np.sum(x * fty)) < 1e-12 * np.sum(np.abs(fx * y))
    xt = ndl.tensor(x, requires_grad=True)
    (F.rotary_embedding(xt, ndl.tensor(cos), ndl.tensor(sin)) * ndl.tensor(y)).sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy(), fty)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_strided_views_of_a_fused_projection(device, dtype):
    # q and k sliced out of a (B, T, H, 3, D) projection and permuted to (B, H, T, D), as the
    # GPT-NeoX model does: the kernel reads them in place, and their gradients land in q's and k's
    # slots of the projection's gradient (v's slot gets v's).
    B, T, H, D, R = 2, 9, 3, 16, 4
    qkv = values((B, T, H, 3, D), dtype, 5)
    w = values((B, H, T, D), dtype, 6)
    cos, sin = tables(T, R, dtype)
    t = ndl.tensor(qkv, dtype=DTYPES[dtype], device=device, requires_grad=True)
    c, s = (ndl.tensor(a, dtype=DTYPES[dtype], device=device) for a in (cos, sin))
    q, k, v = (t[:, :, :, i].permute(0, 2, 1, 3) for i in range(3))
    q2, k2 = F.rotary_embedding(q, c, s), F.rotary_embedding(k, c, s)
    heads = lambda i: qkv[:, :, :, i].transpose(0, 2, 1, 3)  # noqa: E731
    np.testing.assert_array_equal(q2.detach().numpy(), reference(heads(0), cos, sin, dtype))
    np.testing.assert_array_equal(k2.detach().numpy(), reference(heads(1), cos, sin, dtype))
    wt = ndl.tensor(w, dtype=DTYPES[dtype], device=device)
    ((q2 * wt).sum() + k2.sum() * 2.0 + (v * 3.0).sum()).backward()
    g = t.grad.numpy()
    rnd = bf16 if dtype == "bfloat16" else (lambda a: a)
    back = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731
    np.testing.assert_array_equal(g[:, :, :, 0], back(reference(w, cos, sin, dtype, transpose=True)))
    twos = np.full((B, H, T, D), 2.0, np.float32)
    np.testing.assert_array_equal(g[:, :, :, 1], back(rnd(reference(twos, cos, sin, dtype, True))))
    np.testing.assert_array_equal(g[:, :, :, 2], np.full((B, T, H, D), 3.0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fused_equals_the_composition_bit_for_bit(device, dtype):
    # Tables that require grad take the composed path (differentiable in the tables too): both
    # paths must give the same bits for x's value and gradient.
    T, D, R = 6, 12, 8
    x, dy = values((4, T, D), dtype, 7), values((4, T, D), dtype, 8)
    cos, sin = tables(T, R, dtype)
    out = []
    for learnable in (False, True):
        xt = ndl.tensor(x, dtype=DTYPES[dtype], device=device, requires_grad=True)
        c, s = (ndl.tensor(a, dtype=DTYPES[dtype], device=device, requires_grad=learnable)
                for a in (cos, sin))
        y = F.rotary_embedding(xt, c, s)
        y.backward(ndl.tensor(dy, dtype=DTYPES[dtype], device=device))
        out.append((y.detach().numpy(), xt.grad.numpy()))
        if learnable:
            # d/dcos = sum over rows of dy * x on the rotated dims
            want = np.sum(dy[..., :R].astype(np.float64) * x[..., :R], axis=0)
            tol = 1e-2 if dtype == "bfloat16" else 1e-5
            np.testing.assert_allclose(c.grad.numpy(), want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


@pytest.mark.parametrize("device", DEVICES)
def test_double_backward(device):
    # The op is linear in x: its gradient is the adjoint map, whose gradient is the map again.
    T, D, R = 4, 6, 6
    x, u = values((2, T, D), "float64", 9), values((2, T, D), "float64", 10)
    w0 = values((2, T, D), "float64", 11)
    cos, sin = tables(T, R, "float64")
    c, s = ndl.tensor(cos, device=device), ndl.tensor(sin, device=device)
    xt = ndl.tensor(x, device=device, requires_grad=True)
    w = ndl.tensor(w0, device=device, requires_grad=True)
    (F.rotary_embedding(xt, c, s) * w).sum().backward(create_graph=True)
    gx = xt.grad  # f^T(w), a function of w
    np.testing.assert_array_equal(gx.detach().numpy(), reference(w0, cos, sin, "float64", True))
    w.grad = None
    (gx * ndl.tensor(u, device=device)).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), reference(u, cos, sin, "float64"), rtol=1e-14)


def test_promotes_like_the_composition():
    T, D, R = 3, 4, 4
    x = values((T, D), "bfloat16", 12)
    cos, sin = tables(T, R, "float32")
    y = F.rotary_embedding(ndl.tensor(x, dtype=ndl.bfloat16), ndl.tensor(cos), ndl.tensor(sin))
    assert y.dtype == ndl.float32
    np.testing.assert_array_equal(y.numpy(), reference(x, cos, sin, "float32"))


@pytest.mark.parametrize("device", DEVICES)
def test_cpu_and_cuda_agree_to_the_bit(device):
    if device == "cpu":
        pytest.skip("compares the CUDA kernels with the CPU's")
    for dtype in DTYPES:
        x = values((2, 2, 33, 64), dtype, 13)
        cos, sin = tables(33, 16, dtype)
        res = []
        for dev in ("cpu", "cuda"):
            xt = ndl.tensor(x, dtype=DTYPES[dtype], device=dev, requires_grad=True)
            y = F.rotary_embedding(xt, ndl.tensor(cos, dtype=DTYPES[dtype], device=dev),
                                   ndl.tensor(sin, dtype=DTYPES[dtype], device=dev))
            (y * y).sum().backward()
            res.append((y.detach().numpy(), xt.grad.numpy()))
        np.testing.assert_array_equal(res[0][0], res[1][0])
        np.testing.assert_array_equal(res[0][1], res[1][1])


@pytest.mark.parametrize("cos_shape, sin_shape, match", [
    ((5, 3), (5, 3), "R even"),
    ((5, 10), (5, 10), "at most D"),
    ((4, 4), (4, 4), r"\(T, R\) = \(5, R\)"),
    ((5, 4), (5, 2), "one shape"),
    ((4,), (4,), "one shape"),
])
def test_bad_tables_are_clear_errors(cos_shape, sin_shape, match):
    x = ndl.zeros(2, 5, 8)
    with pytest.raises(ValueError, match=match):
        F.rotary_embedding(x, ndl.zeros(*cos_shape), ndl.zeros(*sin_shape))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"expected x of shape \(\.\.\., T, D\)"):
        F.rotary_embedding(ndl.zeros(8), ndl.zeros(1, 4), ndl.zeros(1, 4))
    with pytest.raises(TypeError, match="expected floating x"):
        F.rotary_embedding(ndl.zeros(2, 4, dtype=ndl.int64), ndl.zeros(2, 4), ndl.zeros(2, 4))
    if ndl.cuda.is_available():
        with pytest.raises(RuntimeError, match="x on cuda"):
            F.rotary_embedding(ndl.zeros(2, 4, device="cuda"), ndl.zeros(2, 4), ndl.zeros(2, 4))
