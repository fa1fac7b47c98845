"""needle.NDArray from Python, with NumPy as the oracle: creation, every elementwise op (arrays,
broadcasting, scalars on either side), dtype promotion, reductions, matmul, row ops, indexing and
views, joining, NumPy interop (zero-copy), seeding and the small conveniences (item, repr, pickle).
Module-level functions come from needle.array_api, which keeps returning NDArrays after the
top-level names switch to autograd Tensors."""
import copy
import math
import pickle

import numpy as np
import pytest

import needle as ndl
from needle import array_api as nd

rng = np.random.default_rng(0)

NP_DTYPE = {ndl.bool: np.bool_, ndl.int32: np.int32, ndl.int64: np.int64,
            ndl.float32: np.float32, ndl.float64: np.float64, ndl.bfloat16: np.float32}
PROMOTION_ORDER = [ndl.bool, ndl.int32, ndl.int64, ndl.bfloat16, ndl.float32, ndl.float64]


def check(x, expected, dtype=None, rtol=1e-5, atol=1e-6):
    """x is an NDArray equal to the NumPy `expected` in shape, dtype and values."""
    expected = np.asarray(expected)
    assert isinstance(x, ndl.NDArray)
    assert x.shape == expected.shape
    if dtype is not None:
        assert x.dtype == dtype
    np.testing.assert_allclose(x.numpy(), expected, rtol=rtol, atol=atol)


def randn(*shape, dtype=np.float32):
    return np.asarray(rng.standard_normal(shape), dtype=dtype)


# --- creation --------------------------------------------------------------------------------------

def test_creation_functions():
    check(nd.zeros(2, 3), np.zeros((2, 3)), ndl.float32)
    check(nd.zeros((2, 3)), np.zeros((2, 3)))
    check(nd.ones([4], dtype=ndl.int32), np.ones(4), ndl.int32)
    check(nd.full((2, 2), 7), np.full((2, 2), 7), ndl.int64)
    check(nd.full((2,), 2.5), np.full(2, 2.5), ndl.float32)
    check(nd.full((2,), True), np.full(2, True), ndl.bool)
    assert nd.empty(3, 0).shape == (3, 0)
    check(nd.arange(5), np.arange(5), ndl.int64)
    check(nd.arange(2, 11, 3), np.arange(2, 11, 3))
    check(nd.arange(1.0, 0.0, -0.25), np.arange(1.0, 0.0, -0.25), ndl.float32)
    check(nd.eye(3), np.eye(3))
    check(nd.eye(2, 4, dtype=ndl.float64), np.eye(2, 4), ndl.float64)
    x = nd.ones(2, 3, dtype=ndl.float64)
    check(nd.zeros_like(x), np.zeros((2, 3)), ndl.float64)
    check(nd.full_like(x, 4), np.full((2, 3), 4.0), ndl.float64)
    check(nd.ones_like(x, dtype=ndl.int32), np.ones((2, 3)), ndl.int32)
    assert nd.zeros(1, device="cpu").device == ndl.cpu()


@pytest.mark.parametrize("spec", [ndl.float64, "float64", np.float64, np.dtype("float64")])
def test_dtype_arguments_accept_names_and_numpy_types(spec):
    assert nd.zeros(2, dtype=spec).dtype == ndl.float64


def test_dtype_and_device_objects():
    assert repr(ndl.float32) == "needle.float32" and ndl.bfloat16.name == "bfloat16"
    assert ndl.int64.itemsize == 8 and ndl.float32.is_floating_point and not ndl.int32.is_floating_point
    assert ndl.dtype("float32") == ndl.float32 and ndl.float32 != ndl.float64
    assert len({ndl.float32, ndl.dtype("float32"), ndl.int32}) == 2
    d = ndl.device("cuda:1")
    assert (d.type, d.index, str(d)) == ("cuda", 1, "cuda:1")
    assert repr(d) == "device(type='cuda', index=1)" and repr(ndl.cpu()) == "device(type='cpu')"
    assert ndl.device("cpu") == "cpu" and ndl.device("cuda") == ndl.device("cuda", 0)


@pytest.mark.parametrize("np_dtype,dtype", [(np.bool_, ndl.bool), (np.int32, ndl.int32),
                                            (np.int64, ndl.int64), (np.float32, ndl.float32),
                                            (np.float64, ndl.float64), (np.uint8, ndl.int32),
                                            (np.int16, ndl.int32), (np.uint32, ndl.int64)])
def test_from_numpy_round_trip(np_dtype, dtype):
    a = (rng.standard_normal((3, 4)) * 50).astype(np_dtype)
    x = ndl.NDArray(a)
    assert x.dtype == dtype
    np.testing.assert_array_equal(x.numpy(), a)


def test_from_python_values_follows_torch_defaults():
    assert ndl.NDArray([1.5, 2]).dtype == ndl.float32
    assert ndl.NDArray([1, 2]).dtype == ndl.int64
    assert ndl.NDArray([[True], [False]]).dtype == ndl.bool
    assert ndl.NDArray(3.0).shape == () and ndl.NDArray(3.0).item() == 3.0
    assert ndl.NDArray([1, 2], dtype=ndl.float64).dtype == ndl.float64
    check(ndl.NDArray(np.arange(12.0).reshape(3, 4)[:, ::-2]), np.arange(12.0).reshape(3, 4)[:, ::-2])


def test_constructor_copies_an_ndarray():
    x = nd.zeros(3)
    y = ndl.NDArray(x)
    y[0] = 5
    assert x[0].item() == 0 and y[0].item() == 5


# --- elementwise -------------------------------------------------------------------------------------

_erf = np.vectorize(math.erf)
UNARY = {
    "neg": np.negative, "abs": np.abs, "relu": lambda a: np.maximum(a, 0), "sign": np.sign,
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "rsqrt": lambda a: 1 / np.sqrt(a),
    "tanh": np.tanh, "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "sin": np.sin, "cos": np.cos,
    "erf": _erf, "gelu": lambda a: 0.5 * a * (1 + _erf(a / math.sqrt(2))),
    "gelu_grad": lambda a: 0.5 * (1 + _erf(a / math.sqrt(2))) + a * np.exp(-a * a / 2) / math.sqrt(2 * math.pi),
    "gelu_tanh": lambda a: 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3))),
}
POSITIVE_DOMAIN = {"log", "sqrt", "rsqrt"}


def test_unary_table_covers_every_generated_op():
    binary = set(BINARY) | {"logical_not"}
    assert set(ndl._C.elementwise_ops) - binary == set(UNARY)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("layout", ["compact", "transposed"])
def test_unary_ops(name, layout):
    a = randn(3, 4)
    if name in POSITIVE_DOMAIN:
        a = np.abs(a) + 0.1
    x = ndl.NDArray(a)
    if layout == "transposed":
        x, a = x.T, a.T
        assert not x.is_contiguous()
    expected = UNARY[name](a.astype(np.float64))
    check(getattr(x, name)(), expected, ndl.float32, rtol=1e-5, atol=1e-5)
    check(getattr(nd, name)(x), expected, ndl.float32, rtol=1e-5, atol=1e-5)


def test_float_unary_ops_promote_integers_and_keep_float64():
    assert nd.arange(3).exp().dtype == ndl.float32
    x = ndl.NDArray(np.array([0.5, 1.5]))
    check(x.exp(), np.exp([0.5, 1.5]), ndl.float64, rtol=1e-14)
    check(-nd.arange(3), -np.arange(3), ndl.int64)
    check(abs(ndl.NDArray([-2, 3])), [2, 3], ndl.int64)


BINARY = {
    "add": (np.add, "__add__"), "sub": (np.subtract, "__sub__"), "mul": (np.multiply, "__mul__"),
    "div": (np.divide, "__truediv__"), "pow": (np.power, "__pow__"),
    "maximum": (np.maximum, None), "minimum": (np.minimum, None),
    "floor_divide": (np.floor_divide, "__floordiv__"), "remainder": (np.remainder, "__mod__"),
    "eq": (np.equal, "__eq__"), "ne": (np.not_equal, "__ne__"), "lt": (np.less, "__lt__"),
    "le": (np.less_equal, "__le__"), "gt": (np.greater, "__gt__"), "ge": (np.greater_equal, "__ge__"),
    "logical_and": (np.logical_and, None), "logical_or": (np.logical_or, None),
    "logical_xor": (np.logical_xor, None),
}
COMPARISONS = {"eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor"}


def _operands(name, shape_a, shape_b):
    a, b = randn(*shape_a), randn(*shape_b)
    if name == "pow":
        a = (np.abs(a) + 0.5).astype(np.float32)
    if name in ("eq", "ne", "le", "ge"):  # make equality actually occur
        a, b = np.round(a), np.round(b)
    return a, b


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 3), (4, 1)),
                                    ((0, 3), (1, 3)), ((), (2, 2))])
def test_binary_ops_with_broadcasting(name, shapes):
    ref, dunder = BINARY[name]
    a, b = _operands(name, *shapes)
    x, y = ndl.NDArray(a), ndl.NDArray(b)
    dtype = ndl.bool if name in COMPARISONS else ndl.float32
    expected = ref(a.astype(np.float64), b.astype(np.float64))
    check(getattr(nd, name)(x, y), expected, dtype, rtol=1e-5)
    check(getattr(x, name)(y), expected, dtype, rtol=1e-5)
    if dunder:
        check(getattr(x, dunder)(y), expected, dtype, rtol=1e-5)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow", "maximum", "lt", "ge", "eq"])
@pytest.mark.parametrize("scalar", [2, 0.5, -3])
def test_binary_ops_with_scalars_on_either_side(name, scalar):
    ref = BINARY[name][0]
    a = np.abs(randn(2, 3)) + 0.5
    x = ndl.NDArray(a)
    dtype = ndl.bool if name in COMPARISONS else ndl.float32
    check(getattr(nd, name)(x, scalar), ref(a, scalar), dtype, rtol=1e-5)
    with np.errstate(invalid="ignore"):  # (-3) ** 0.7 is NaN in both
        expected = ref(scalar, a)
    check(getattr(nd, name)(scalar, x), expected, dtype, rtol=1e-5)


def test_operators_match_numpy():
    a, b = np.abs(randn(3, 4)) + 0.5, randn(4)
    x, y = ndl.NDArray(a), ndl.NDArray(b)
    check(x + y, a + b)
    check(2 - x, 2 - a)
    check(3 * x, 3 * a)
    check(1 / x, 1 / a, rtol=1e-5)
    check(x ** 2, a ** 2, rtol=1e-5)
    check(2 ** x, 2 ** a, rtol=1e-5)
    check(-x, -a)
    check(x @ y, a @ b, rtol=1e-5)
    check(x + b, a + b)  # a NumPy operand is converted onto x's device
    check(b * x, b * a)  # NumPy on the left defers to NDArray.__rmul__ (__array_priority__)
    check((x > 1) & (x < 2), (a > 1) & (a < 2), ndl.bool)
    check((x > 1) | (x < 0.7), (a > 1) | (a < 0.7), ndl.bool)
    check((x > 1) ^ True, (a > 1) ^ True, ndl.bool)
    check(~(x > 1), ~(a > 1), ndl.bool)
    assert (x == None) is False and (x != "text") is True  # noqa: E711


def test_in_place_operators_write_through_views():
    base = nd.zeros(2, 3)
    row = base[1]
    row += 2
    row *= nd.arange(3)
    check(base, [[0, 0, 0], [0, 2, 4]])
    y = nd.ones(2, dtype=ndl.int64)
    y += 1  # an int scalar keeps int64
    check(y, [2, 2], ndl.int64)


def test_where_clamp_and_integer_division():
    a = randn(3, 4)
    x = ndl.NDArray(a)
    check(nd.where(x > 0, x, 0.0), np.where(a > 0, a, 0))
    check(nd.where(x > 0, -1.0, x), np.where(a > 0, -1, a))
    check(nd.where(x > 0, 1, 0), np.where(a > 0, 1, 0), ndl.int64)
    check(x.clamp(-0.5, 0.5), np.clip(a, -0.5, 0.5))
    check(nd.clamp(x, min=0.0), np.maximum(a, 0))
    check(nd.arange(5) / 2, np.arange(5) / 2, ndl.float32)


# --- promotion ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("i", range(len(PROMOTION_ORDER)))
@pytest.mark.parametrize("j", range(len(PROMOTION_ORDER)))
def test_promotion_table(i, j):
    a = nd.ones(2, dtype=PROMOTION_ORDER[i])
    b = nd.ones(2, dtype=PROMOTION_ORDER[j])
    expected = PROMOTION_ORDER[max(i, j)]
    assert ndl.promote_types(a.dtype, b.dtype) == expected
    if expected != ndl.bool:
        assert (a + b).dtype == expected
    assert (a == b).dtype == ndl.bool


@pytest.mark.parametrize("dtype,scalar,expected", [
    (ndl.bool, True, ndl.bool), (ndl.bool, 1, ndl.int64), (ndl.bool, 1.5, ndl.float32),
    (ndl.int32, 1, ndl.int32), (ndl.int32, 1.5, ndl.float32), (ndl.int64, 2, ndl.int64),
    (ndl.bfloat16, 2.0, ndl.bfloat16), (ndl.float32, 2, ndl.float32),
    (ndl.float64, 0.5, ndl.float64), (ndl.float64, np.float32(0.5), ndl.float64)])
def test_python_scalars_are_weak(dtype, scalar, expected):
    x = nd.ones(3, dtype=dtype)
    assert (x * scalar).dtype == expected
    assert (scalar * x).dtype == expected


# --- reductions and row ops -------------------------------------------------------------------------

@pytest.mark.parametrize("name,ref", [("sum", np.sum), ("mean", np.mean), ("max", np.max),
                                      ("min", np.min), ("prod", np.prod)])
@pytest.mark.parametrize("dim", [None, 0, -1, (0, 2), (1,)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_reductions(name, ref, dim, keepdim):
    a = randn(3, 4, 5) * 0.5 + 1
    x = ndl.NDArray(a).permute(0, 2, 1).permute(0, 2, 1)  # also exercises strided views
    check(getattr(x, name)(dim=dim, keepdim=keepdim), ref(a, axis=dim, keepdims=keepdim), rtol=1e-4)
    check(getattr(nd, name)(x, dim, keepdim), ref(a, axis=dim, keepdims=keepdim), rtol=1e-4)


def test_var_std_argmax_any_all():
    a = randn(4, 6)
    x = ndl.NDArray(a)
    check(x.var(), a.var(ddof=1), rtol=1e-5)
    check(x.var(1, correction=0), a.var(axis=1), rtol=1e-5)
    check(x.var(0, unbiased=False, keepdim=True), a.var(axis=0, keepdims=True), rtol=1e-5)
    check(x.std(1), a.std(axis=1, ddof=1), rtol=1e-5)
    check(x.argmax(), np.argmax(a), ndl.int64)
    check(x.argmax(1), np.argmax(a, 1), ndl.int64)
    check(x.argmin(0, keepdim=True), np.argmin(a, 0)[None], ndl.int64)
    check((x > 1).any(1), (a > 1).any(1), ndl.bool)
    check((x > -3).all(), (a > -3).all(), ndl.bool)


def test_reductions_of_size_zero_and_size_one_dims():
    check(nd.zeros(0, 3).sum(0), np.zeros(3))
    check(nd.ones(1, 3).sum(0, keepdim=True), np.ones((1, 3)))
    check(nd.ones(4, 1).mean(1), np.ones(4))
    check(nd.NDArray([True, True, False]).sum(), 2, ndl.int64)


def test_matmul_shapes():
    for sa, sb in [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
                   ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,))]:
        a, b = randn(*sa), randn(*sb)
        check(nd.matmul(ndl.NDArray(a), ndl.NDArray(b)), a @ b, rtol=1e-4, atol=1e-5)
    a, b = randn(5, 7, dtype=np.float64), randn(7, 3, dtype=np.float64)
    check(ndl.NDArray(a) @ ndl.NDArray(b), a @ b, ndl.float64, rtol=1e-12)
    check(ndl.NDArray(a).T @ ndl.NDArray(a), a.T @ a, ndl.float64, rtol=1e-12)


def test_softmax_family():
    a = randn(3, 5) * 4
    x = ndl.NDArray(a)
    e = np.exp(a - a.max(-1, keepdims=True))
    check(nd.softmax(x), e / e.sum(-1, keepdims=True), rtol=1e-5)
    check(x.log_softmax(dim=0), a - np.log(np.exp(a).sum(0, keepdims=True)), rtol=1e-5, atol=1e-5)
    check(nd.logsumexp(x, 1, keepdim=True), np.log(np.exp(a).sum(1, keepdims=True)), rtol=1e-5)


# --- indexing and views ------------------------------------------------------------------------------

INDEX_KEYS = [1, -1, slice(1, None), slice(None, None, -1), slice(None, None, 2), slice(3, 1),
              (Ellipsis, None), (None, 1), (slice(1, 3), Ellipsis, slice(None, None, -2)),
              Ellipsis, (-2, slice(None, None, -1)), (0, 1, 2), (slice(-3, -1), None, 2),
              (slice(None, None, -3), 0)]


@pytest.mark.parametrize("key", INDEX_KEYS, ids=repr)
def test_getitem_matches_numpy(key):
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    check(ndl.NDArray(a)[key], a[key])


def test_views_share_memory():
    x = nd.zeros(4, 6)
    v = x[1:, ::2]
    v[0] = 7
    v[1:, -1] = nd.NDArray([1.0, 2.0])
    a = np.zeros((4, 6), np.float32)
    a[1, ::2] = 7
    a[2:, 4] = [1, 2]
    check(x, a)
    r = x.reshape(24)
    r[0] = -1
    assert x[0, 0].item() == -1
    t = x.T
    t[5, 3] = 9
    assert x[3, 5].item() == 9
    c = x.clone()
    c[0, 0] = 100
    assert x[0, 0].item() == -1


def test_setitem_forms():
    x = nd.zeros(3, 4)
    x[0] = 1.5
    x[1] = np.arange(4)
    x[2, ::2] = [5, 6]
    x[..., -1] = nd.full((3,), 8.0)
    check(x, [[1.5, 1.5, 1.5, 8], [0, 1, 2, 8], [5, 0, 6, 8]])
    x[:, 1:3] = nd.ones(1, 2) * 4  # broadcast
    check(x[:, 1:3], np.full((3, 2), 4))


def test_shape_ops():
    a = randn(2, 3, 4)
    x = ndl.NDArray(a)
    check(x.reshape(6, 4), a.reshape(6, 4))
    check(x.reshape((-1,)), a.reshape(-1))
    check(x.view(2, 12), a.reshape(2, 12))
    check(x.permute(2, 0, 1), a.transpose(2, 0, 1))
    check(x.permute((1, 2, 0)).reshape(12, 2), a.transpose(1, 2, 0).reshape(12, 2))
    check(x.transpose(0, 2), a.swapaxes(0, 2))
    check(x[0].T, a[0].T)
    check(x.unsqueeze(1), a[:, None])
    check(x[:, :1].squeeze(1), a[:, 0])
    check(x[None, :, :1].squeeze(), a[:, 0])
    check(x[:, :1].expand(2, 5, 4), np.broadcast_to(a[:, :1], (2, 5, 4)))
    check(x[:, :1].expand(-1, 3, -1), np.broadcast_to(a[:, :1], (2, 3, 4)))
    check(x.broadcast_to((3, 2, 3, 4)), np.broadcast_to(a, (3, 2, 3, 4)))
    check(x.flatten(), a.reshape(-1))
    check(x.flatten(1), a.reshape(2, 12))
    t = x.transpose(1, 2)
    assert not t.is_contiguous() and t.contiguous().is_contiguous() and t.compact().is_contiguous()
    check(t.contiguous(), a.swapaxes(1, 2))
    assert x.size() == (2, 3, 4) and x.size(-1) == 4 and x.numel() == 24 and x.ndim == 3
    assert x.strides == (12, 4, 1) and x.T.strides == (1, 4, 12) and len(x) == 2


def test_joining():
    a, b = randn(2, 3), randn(4, 3)
    x, y = ndl.NDArray(a), ndl.NDArray(b)
    check(nd.concatenate([x, y]), np.concatenate([a, b]))
    check(nd.cat([x.T, y.T], dim=1), np.concatenate([a.T, b.T], 1))
    check(nd.stack([x, x * 2], dim=1), np.stack([a, a * 2], 1))
    parts = nd.split(nd.arange(7), 3)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    parts = y.split([1, 3], dim=0)
    check(parts[1], b[1:])
    assert [c.shape for c in nd.chunk(y, 2)] == [(2, 3), (2, 3)]
    check(nd.flip(x, 1), a[:, ::-1])
    check(x.index_select(1, nd.NDArray([2, 0])), a[:, [2, 0]])


# --- dtypes, precision, NumPy interop -----------------------------------------------------------------

def bf16_round(a):
    """float32 -> bfloat16 -> float32 with round-to-nearest-even, the reference for needle's cast."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def test_bfloat16_round_trip():
    a = randn(50) * 100
    x = ndl.NDArray(a).astype(ndl.bfloat16)
    assert x.dtype == ndl.bfloat16 and x.itemsize == 2
    out = x.numpy()
    assert out.dtype == np.float32  # NumPy has no bfloat16: .numpy() widens (exactly)
    np.testing.assert_array_equal(out, bf16_round(a))
    np.testing.assert_array_equal(ndl.NDArray(out).astype(ndl.bfloat16).numpy(), out)
    np.testing.assert_array_equal(np.asarray(x), out)  # via __array__: bfloat16 has no buffer


def test_float64_keeps_precision():
    a = np.array([1.0, 1e-12, -1.0, 1e-12])
    x = ndl.NDArray(a)
    assert x.dtype == ndl.float64
    assert x.sum().item() == pytest.approx(2e-12, rel=1e-6)
    assert (x + 1e-15).numpy()[0] != 1.0


def test_numpy_zero_copy_for_compact_cpu_arrays():
    x = nd.arange(6, dtype=ndl.float32).reshape(2, 3)
    a = np.asarray(x)
    a[0, 1] = 42  # written through NumPy, visible in needle
    assert x[0, 1].item() == 42
    x[1, 2] = -5  # and the other way round
    assert a[1, 2] == -5
    assert np.shares_memory(a, x.numpy())
    m = memoryview(x)
    assert (m.format, m.shape, m.c_contiguous) == ("f", (2, 3), True)


def test_numpy_view_keeps_buffer_alive():
    x = nd.full((1000,), 3.0)
    a = np.asarray(x)
    b = x.numpy()
    del x
    import gc
    gc.collect()
    assert a.sum() == 3000.0 and b[-1] == 3.0


def test_numpy_of_strided_and_broadcast_views():
    x = nd.arange(12, dtype=ndl.float64).reshape(3, 4)
    t = np.asarray(x.T)
    np.testing.assert_array_equal(t, np.arange(12.0).reshape(3, 4).T)
    assert np.shares_memory(t, np.asarray(x))
    b = np.asarray(x[:1].broadcast_to((5, 4)))
    assert b.shape == (5, 4) and not b.flags.writeable  # aliased elements: read-only
    assert np.asarray(x[:, ::-1])[0, 0] == 3.0


def test_item_tolist_scalars_and_len():
    assert nd.NDArray([2.5]).item() == 2.5 and isinstance(nd.NDArray([3]).item(), int)
    assert nd.NDArray(True).item() is True
    assert nd.arange(6).reshape(2, 3).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert float(nd.NDArray(1.5)) == 1.5 and int(nd.NDArray(7)) == 7 and bool(nd.NDArray(1))
    assert len(nd.zeros(5, 2)) == 5
    assert nd.NDArray(2 ** 60).item() == 2 ** 60  # int64 items do not pass through a double


def test_repr_is_readable():
    r = repr(nd.NDArray([[1.5, 2.0]]))
    assert "1.5" in r and "float32" in r and "cpu" in r and "(1, 2)" in r


def test_to_astype_and_casts():
    x = nd.NDArray([1.7, -2.2])
    check(x.astype(ndl.int32), [1, -2], ndl.int32)
    assert x.to(ndl.float64).dtype == ndl.float64
    assert x.to("float64").dtype == ndl.float64 and x.to("cpu").device == ndl.cpu()
    assert x.to(nd.zeros(1, dtype=ndl.int64)).dtype == ndl.int64
    assert x.double().dtype == ndl.float64 and x.long().dtype == ndl.int64
    assert x.cpu().device == ndl.cpu()
    # A copy to the device an array is on is the array itself, non_blocking or not.
    assert not x.to("cpu", non_blocking=True).is_pinned()
    check(x.to("cpu", "float64", non_blocking=True), [1.7, -2.2], ndl.float64)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_floor_divide_and_remainder_match_numpy(dtype):
    # Python's // and %: the quotient rounded toward -inf, the remainder with the divisor's sign.
    rng = np.random.default_rng(7)
    a = (rng.standard_normal((5, 7)) * 20).astype(dtype)
    b = (rng.standard_normal((7,)) * 6).astype(dtype)
    b[b == 0] = 3
    x, y = nd.NDArray(a), nd.NDArray(b)
    for got, want in [(x // y, np.floor_divide(a, b)), (x % y, np.remainder(a, b)),
                      (x // 3, a // dtype(3)), (x % -3, a % dtype(-3)),
                      (17 // y, dtype(17) // b), (-17 % y, dtype(-17) % b),
                      (nd.floor_divide(x, y), a // b), (nd.remainder(x, y), a % b)]:
        assert got.dtype == x.dtype
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-5)
    t = ndl.tensor(a)
    np.testing.assert_allclose((t // ndl.tensor(b)).numpy(), a // b, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose((t % ndl.tensor(b)).numpy(), a % b, rtol=1e-6, atol=1e-5)
    z = nd.NDArray(a.copy())
    z //= 4
    z %= 3
    np.testing.assert_allclose(z.numpy(), (a // dtype(4)) % dtype(3), rtol=1e-6, atol=1e-5)


def test_integer_division_by_zero_and_overflow_do_not_trap():
    # The hardware traps on an integer division by 0 and on INT_MIN // -1 (SIGFPE): 0 // 0 gives
    # 0 for both ops, as NumPy's, and INT_MIN // -1 wraps.
    for dt in (ndl.int32, ndl.int64):
        x = nd.NDArray(np.array([7, -7, 0]), dtype=dt)
        assert (x // 0).tolist() == [0, 0, 0] and (x % 0).tolist() == [0, 0, 0]
        assert (x // nd.zeros(3, dtype=dt)).tolist() == [0, 0, 0]
        low = -2 ** 31 if dt == ndl.int32 else -2 ** 63
        m = nd.NDArray(np.array([low, 5]), dtype=dt)
        assert (m // -1).tolist() == [low, -5] and (m % -1).tolist() == [0, 0]
    f = nd.NDArray([1.0, -1.0, 0.0])
    q = (f // 0).numpy()
    assert q[0] == np.inf and q[1] == -np.inf and np.isnan(q[2])
    assert np.isnan((f % 0).numpy()).all()


@pytest.mark.parametrize("src", ["float32", "float64", "bfloat16"])
def test_float_to_int_casts_saturate(src):
    # Truncation toward zero, saturating, NaN as 0: the GPU's conversion, now the CPU's too (the C++
    # cast of an out-of-range float is undefined: x86 gave INT_MIN for all of these).
    x = nd.NDArray(np.array([1e10, -1e10, np.nan, np.inf, -np.inf, 2.75, -2.75, 0.0]), dtype=src)
    check(x.astype(ndl.int32), [2 ** 31 - 1, -2 ** 31, 0, 2 ** 31 - 1, -2 ** 31, 2, -2, 0], ndl.int32)
    big = nd.NDArray(np.array([1e30, -1e30, np.nan, 2.0 ** 40]), dtype=src)
    check(big.astype(ndl.int64), [2 ** 63 - 1, -2 ** 63, 0, 2 ** 40], ndl.int64)


@pytest.mark.parametrize("make", [lambda a: nd.NDArray(a), lambda a: ndl.tensor(a)], ids=["ndarray", "tensor"])
def test_to_rejects_bad_targets_and_a_dtype_given_twice(make):
    x = make(np.array([1.5, 2.0], dtype=np.float32))
    assert x.to("cpu", dtype="float64").dtype == ndl.float64
    assert x.to(dtype=np.int32).dtype == ndl.int32
    with pytest.raises(TypeError, match=r"got a dtype twice, float64 as the first argument and float32 as dtype="):
        x.to("float64", dtype="float32")
    with pytest.raises(TypeError, match=r"to\(\): expected a device .* or a dtype: .*3\.5"):
        x.to(3.5)
    with pytest.raises(ValueError, match=r"invalid device 'cuda:zz'"):
        x.to("cuda:zz")


def test_pickle_and_copy():
    x = nd.NDArray(randn(3, 2)).astype(ndl.bfloat16)
    y = pickle.loads(pickle.dumps(x))
    assert y.dtype == ndl.bfloat16
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    z = copy.deepcopy(x)
    z[0, 0] = 100
    assert x[0, 0].item() != 100


def test_manual_seed_determinism():
    ndl.manual_seed(1234)
    a, b = nd.rand(100), nd.randn(3, 4)
    ndl.manual_seed(1234)
    np.testing.assert_array_equal(nd.rand(100).numpy(), a.numpy())
    np.testing.assert_array_equal(nd.randn(3, 4).numpy(), b.numpy())
    ndl.manual_seed(99)
    assert not np.array_equal(nd.rand(100).numpy(), a.numpy())
    assert 0.0 <= a.min().item() and a.max().item() < 1.0
    big = nd.randn(200_000).numpy()
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01


def test_cpu_memory_stats_track_allocations():
    before = ndl.memory_stats("cpu")["allocated_bytes"]
    x = nd.empty(1000, dtype=ndl.float64)
    assert ndl.memory_stats()["allocated_bytes"] - before >= 8000
    del x
    assert ndl.memory_stats()["allocated_bytes"] == before


def test_cuda_queries_do_not_need_a_gpu():
    assert isinstance(ndl.cuda.is_available(), bool)
    assert ndl.cuda.device_count() >= (1 if ndl.cuda.is_available() else 0)


def test_matmul_precision_setting_round_trips():
    before = ndl.get_float32_matmul_precision()
    try:
        ndl.set_float32_matmul_precision("high")
        assert ndl.cuda.get_matmul_precision() == "high"
        with pytest.raises(ValueError, match=r"\"highest\", \"high\" or \"medium\", got \"fast\""):
            ndl.cuda.set_matmul_precision("fast")
    finally:
        ndl.set_float32_matmul_precision(before)
    assert ndl.get_float32_matmul_precision() == before


# --- CUDA (skipped without a GPU) ----------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not ndl.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "int64"])
def test_index_add_sums_repeats_once_in_a_fixed_order(device, dtype):
    # Runs of repeated indices either side of the CUDA kernel's 32-position chunks, one run of 700,
    # scattered others and rows never indexed; three outer slices, an odd inner size. The result
    # is the same bits on every call, and each row's repeats are summed before one rounding (a
    # bfloat16 sum rounded at every one of 700 repeats would be off by about 2%).
    rng = np.random.default_rng(11)
    runs = {0: 1, 3: 31, 5: 32, 7: 33, 11: 64, 12: 65, 2: 700, 40: 97}
    ids = np.concatenate([np.full(c, r) for r, c in runs.items()] + [rng.integers(0, 48, 300)])
    rng.shuffle(ids)
    dt = getattr(ndl, dtype)
    if dtype == "int64":
        src, base = rng.integers(-1000, 1000, (3, ids.size, 37)), rng.integers(-9, 9, (3, 50, 37))
    else:  # values as the dtype stores them
        src, base = (np.asarray(ndl.NDArray(rng.standard_normal(shape)).astype(dt).astype(ndl.float64))
                     for shape in ((3, ids.size, 37), (3, 50, 37)))
    expected = base.copy()
    np.add.at(expected, (slice(None), ids), src)  # exact (float64 / int64), order-free
    s, index = ndl.NDArray(src, device=device).astype(dt), ndl.NDArray(ids, device=device)
    outs = [np.asarray(ndl.array_api.index_add(ndl.NDArray(base, device=device).astype(dt), 1, index, s)
                       .astype(ndl.int64 if dtype == "int64" else ndl.float64).cpu()) for _ in range(3)]
    for other in outs[1:]:
        assert np.array_equal(other.view(np.uint8), outs[0].view(np.uint8)), "a repeat gave other bits"
    if dtype == "int64":
        np.testing.assert_array_equal(outs[0], expected)
    else:
        err = np.linalg.norm(outs[0] - expected) / np.linalg.norm(expected)
        assert err < {"float32": 1e-6, "bfloat16": 5e-3, "float64": 1e-14}[dtype], err


@needs_cuda
def test_cuda_arrays_match_numpy():
    a, b = randn(3, 4), randn(4)
    x = ndl.NDArray(a, device="cuda")
    assert x.device == ndl.device("cuda:0") and x.is_cuda
    check(x.cpu(), a)
    check((x * 2 + ndl.NDArray(b).cuda()).softmax(-1).cpu(),
          np.exp(2 * a + b) / np.exp(2 * a + b).sum(-1, keepdims=True), rtol=1e-5)
    check(x.T[::-1].contiguous().cpu(), a.T[::-1])
    check((x @ x.T).cpu(), a @ a.T, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(x), a)  # __array__ copies a CUDA array to the host
    with pytest.raises(BufferError, match=r"CPU array.*cuda:0"):
        memoryview(x)
    ndl.cuda.synchronize()


@needs_cuda
def test_cuda_memory_statistics():
    ndl.cuda.synchronize()
    before = ndl.cuda.memory_allocated()
    x = nd.empty(1 << 20, device="cuda")
    assert ndl.cuda.memory_allocated() - before >= 4 << 20
    assert ndl.cuda.max_memory_allocated() >= ndl.cuda.memory_allocated()
    assert ndl.cuda.memory_reserved() >= ndl.cuda.memory_allocated()
    del x
    assert ndl.cuda.memory_allocated() == before
    ndl.cuda.empty_cache()
    ndl.cuda.reset_peak_memory_stats()
    assert ndl.cuda.max_memory_allocated() == ndl.cuda.memory_allocated()
    assert set(ndl.cuda.memory_stats()) >= {"allocated_bytes", "reserved_bytes"}


def test_split_by_size_as_torch():
    # parts of split_size, the last one smaller; an empty dim gives one empty part (as chunk)
    for x in (ndl.arange(5), ndl.arange(5).array):
        assert [p.shape for p in x.split(2)] == [(2,), (2,), (1,)]
    for x in (ndl.zeros(0), ndl.zeros(0).array):
        assert [p.shape for p in x.split(2)] == [(0,)] == [p.shape for p in x.chunk(2)]
        with pytest.raises(ValueError, match=r"split: split_size must be positive, got 0"):
            x.split(0)
