"""needle's CUDA ops and their gradients against torch on the same GPU.

Each case draws fresh random inputs (never zeros), runs the op and its backward in needle on
cuda:0 and the same op through torch autograd on the GPU in float64 (bfloat16 inputs are rounded
to bfloat16 first, so both sides see the same numbers), and compares by the relative L2 error
||needle - torch|| / ||torch|| (METHOD.md's bounds: float32 far under 1e-3, bfloat16 1e-3..1e-2);
NaN or inf where torch is finite fails. Covered: unary and binary elementwise ops (broadcasting
included), reductions (the full reduction's two-stage path too), matmul, softmax / log_softmax
(rows staged in shared memory, rows that cannot be read in vectors, vocabulary-sized rows, rows
too long to stage), logsumexp (special values too), layer_norm, cross_entropy (ignore_index),
embedding, gelu, linear_cross_entropy (under autocast too), and the backward of a small MLP with
cross-entropy.

Output blocks are poisoned first: NaN arrays of each output's size are allocated and freed just
before the op, so needle's best-fit caching allocator hands those blocks to the kernels and an
element a kernel fails to write stays NaN.

Skips cleanly without torch, without a GPU, or in a build without CUDA.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
ndl = pytest.importorskip("needle")

if not torch.cuda.is_available() or not ndl.cuda.is_available():
    pytest.skip("needs a CUDA GPU for both torch and needle", allow_module_level=True)

F = ndl.nn.functional
TF = torch.nn.functional
TDEV = torch.device("cuda")
RNG = np.random.default_rng()  # re-bound per test by conftest.py
TOL = {"float32": 2e-5, "bfloat16": 2e-2}


@pytest.fixture(autouse=True)
def full_float32_matmul():
    ndl.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    yield


def ndtype(name):
    return {"float32": ndl.float32, "bfloat16": ndl.bfloat16}[name]


def rounded(a, dtype):
    """a's values as the dtype stores them (bfloat16 rounding done by torch), as float64."""
    t = torch.from_numpy(np.asarray(a, np.float32))
    if dtype == "bfloat16":
        t = t.bfloat16()
    return t.double().numpy()


def randn(shape, dtype="float32", scale=1.0, shift=0.0, positive=False):
    a = RNG.standard_normal(shape) * scale + shift
    if positive:
        a = np.abs(a) + 0.5
    return rounded(a, dtype)


class Pair:
    """One input on both sides: a needle Tensor on cuda (of `dtype`) and a float64 torch leaf."""

    def __init__(self, values, dtype="float32", requires_grad=True):
        self.values = values
        self.n = ndl.tensor(values.astype(np.float32), dtype=ndtype(dtype), device="cuda",
                            requires_grad=requires_grad)
        self.t = torch.tensor(values, dtype=torch.float64, device=TDEV,
                              requires_grad=requires_grad)


def to_np(x):
    if isinstance(x, ndl.Tensor):
        x = x.detach()
    return np.asarray(x.numpy(), dtype=np.float64)


def poison(*shapes, dtype="float32"):
    junk = [ndl.tensor(np.full(s, np.nan, np.float32), dtype=ndtype(dtype), device="cuda")
            for s in shapes for _ in range(2)]
    del junk


def check(got, want, tol, what):
    got = to_np(got) if not isinstance(got, np.ndarray) else got
    want = want.detach().cpu().numpy() if isinstance(want, torch.Tensor) else want
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.isfinite(got).all() or not np.isfinite(want).all(), f"{what}: non-finite values"
    denom = np.linalg.norm(want)
    err = np.linalg.norm(got - want) / (denom if denom > 0 else 1.0)
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


def check_grads(n_out, t_out, pairs, tol, what, grad_tols=None):
    """Backward of sum(out * g) for one random upstream g on both sides; compares out and grads
    (grad_tols: a bound per input, default tol)."""
    check(n_out, t_out, tol, what)
    g = np.asarray(RNG.standard_normal(tuple(t_out.shape)), dtype=np.float64)
    gdtype = "bfloat16" if n_out.dtype == ndl.bfloat16 else "float32"
    n_out.backward(ndl.tensor(g.astype(np.float32), dtype=n_out.dtype, device="cuda"))
    gt = torch.tensor(rounded(g, gdtype), dtype=torch.float64, device=TDEV)
    t_out.backward(gt)
    for i, p in enumerate(pairs):
        assert p.n.grad is not None, f"{what}: no gradient for input {i}"
        check(p.n.grad, p.t.grad, grad_tols[i] if grad_tols else tol,
              f"{what}: grad of input {i}")


UNARY = [
    ("exp", torch.exp, {}), ("log", torch.log, {"positive": True}),
    ("sqrt", torch.sqrt, {"positive": True}), ("rsqrt", torch.rsqrt, {"positive": True}),
    ("tanh", torch.tanh, {}), ("sigmoid", torch.sigmoid, {}), ("sin", torch.sin, {}),
    ("cos", torch.cos, {}), ("erf", torch.erf, {}), ("neg", torch.neg, {}),
    ("abs", torch.abs, {}), ("relu", torch.relu, {}),
    ("gelu", lambda x: TF.gelu(x), {}), ("gelu_tanh", lambda x: TF.gelu(x, approximate="tanh"), {}),
    ("gelu_grad", lambda x: torch.ops.aten.gelu_backward(torch.ones_like(x), x), {}),
]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name,tfn,kw", UNARY, ids=[u[0] for u in UNARY])
def test_unary_and_grad(name, tfn, kw, dtype):
    x = Pair(randn((37, 129), dtype, **kw), dtype)
    poison((37, 129))
    check_grads(getattr(x.n, name)(), tfn(x.t), [x], TOL[dtype], name)


BINARY = [
    ("add", lambda a, b: a + b, lambda a, b: a + b),
    ("sub", lambda a, b: a - b, lambda a, b: a - b),
    ("mul", lambda a, b: a * b, lambda a, b: a * b),
    ("div", lambda a, b: a / b, lambda a, b: a / b),
    ("maximum", lambda a, b: a.maximum(b), torch.maximum),
    ("minimum", lambda a, b: a.minimum(b), torch.minimum),
]
# Same shapes, broadcasting on either side, a scalar-like operand, a non-contiguous operand.
SHAPES = [((64, 300), (64, 300)), ((8, 1, 33), (5, 1)), ((1, 257), (96, 1)), ((4, 5, 6), (1,))]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name,nfn,tfn", BINARY, ids=[b[0] for b in BINARY])
def test_binary_broadcast_and_grad(name, nfn, tfn, shapes, dtype):
    positive = name == "div"
    a = Pair(randn(shapes[0], dtype), dtype)
    b = Pair(randn(shapes[1], dtype, positive=positive), dtype)
    t_out = tfn(a.t, b.t)
    # A broadcast operand's gradient sums k terms that bfloat16 rounded one by one: the error
    # grows like sqrt(k) while the sum may cancel, so its bound grows with sqrt(k) too.
    grad_tols = [TOL[dtype] * max(1.0, np.sqrt(t_out.numel() / p.t.numel()) / 2)
                 if dtype == "bfloat16" else TOL[dtype] for p in (a, b)]
    check_grads(nfn(a.n, b.n), t_out, [a, b], TOL[dtype], name, grad_tols)


def test_binary_on_transposed_views():
    a = Pair(randn((300, 200)))
    b = Pair(randn((200, 300)))
    check_grads(a.n * b.n.transpose(0, 1) + 2.0, a.t * b.t.transpose(0, 1) + 2.0, [a, b],
                TOL["float32"], "mul of a transposed view")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape,dim,keepdim", [
    ((33, 4097), -1, False), ((33, 4097), 0, True), ((5, 700, 9), 1, False),
    ((2, 3, 50304), -1, False), ((4096, 64), None, False), (((1 << 22) + 12,), None, False),
    ((16384, 1536), 0, False), ((1000, 264), 0, True),  # columns in 16-byte vectors per lane
], ids=str)
def test_sum_mean_and_grad(shape, dim, keepdim, dtype):
    # dim None over the flat 4M elements: the two-stage grid reduction.
    kw = {} if dim is None else {"dim": dim, "keepdim": keepdim}
    tol = TOL[dtype] * 5
    x = Pair(randn(shape, dtype), dtype)
    check_grads(x.n.sum(**kw), x.t.sum(**kw), [x], tol, "sum")
    y = Pair(randn(shape, dtype), dtype)
    check_grads(y.n.mean(**kw), y.t.mean(**kw), [y], tol, "mean")


@pytest.mark.parametrize("shape,dim", [((64, 1000), -1), ((1000, 64), 0), ((3, 70000), 1),
                                       (((1 << 21) + 5,), None)], ids=str)
def test_max_argmax_and_grad(shape, dim):
    x = Pair(randn(shape))
    if dim is None:
        check(x.n.max(), x.t.max(), 0, "max of all")
        assert x.n.argmax().item() == x.t.argmax().item()
        return
    check_grads(x.n.max(dim=dim), x.t.amax(dim=dim), [x], 0, "max")
    got = x.n.argmax(dim=dim).numpy()
    np.testing.assert_array_equal(got, x.t.argmax(dim=dim).cpu().numpy())


def test_integer_and_bool_sums():
    a = RNG.integers(-1000, 1000, size=(3, 100003))
    n = ndl.tensor(a, device="cuda")
    np.testing.assert_array_equal(n.sum(dim=-1).numpy(), a.sum(-1))
    assert n.sum().item() == int(a.sum())
    mask = ndl.tensor(a > 0, device="cuda")
    assert mask.sum().item() == int((a > 0).sum())



def test_eye_and_arange_on_the_gpu():
    # eye fills its diagonal as a strided view on the device; arange computes on the host and
    # copies once.
    for n, m, dtype in [(3, 5, "int32"), (4, 2, "float32"), (5, 5, "bfloat16"), (0, 3, "float32")]:
        e = ndl.eye(n, m, dtype=getattr(ndl, dtype), device="cuda")
        assert e.device == ndl.device("cuda") and e.dtype == getattr(ndl, dtype)
        np.testing.assert_array_equal(e.numpy(), np.eye(n, m))
    np.testing.assert_array_equal(ndl.arange(1, 2, 0.25, device="cuda").numpy(),
                                  np.arange(1, 2, 0.25, dtype=np.float32))
    np.testing.assert_array_equal(ndl.arange(7, 0, -3, device="cuda").numpy(), [7, 4, 1])


@pytest.mark.parametrize("dtype", ["int32", "int64", "float32", "float64"])
def test_floor_divide_and_remainder_match_torch(dtype):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((33, 65)) * 50).astype(dtype)
    b = (rng.standard_normal((65,)) * 7).astype(dtype)
    b[b == 0] = 2
    x, y = ndl.tensor(a, device="cuda"), ndl.tensor(b, device="cuda")
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    for got, want in [(x // y, torch.floor_divide(ta, tb)), (x % y, torch.remainder(ta, tb)),
                      (x // -3, torch.floor_divide(ta, -3)), (5 % y, torch.remainder(5, tb))]:
        np.testing.assert_allclose(got.numpy(), want.cpu().numpy(), rtol=1e-6, atol=1e-5)
    if dtype.startswith("int"):  # 0 for a zero divisor, as on the CPU
        zero = ndl.zeros(65, dtype=x.dtype, device="cuda")
        assert not (x // 0).numpy().any() and not (x % zero).numpy().any()
    elif dtype == "float32":  # the remainder's gradient: 1 for a, -floor(a / b) for b
        p, q = Pair(a), Pair(b)
        check_grads(p.n % q.n, torch.remainder(p.t, q.t), [p, q], TOL["float32"], "remainder")


@pytest.mark.parametrize("src", ["float32", "float64", "bfloat16"])
def test_float_to_int_casts_match_the_cpu(src):
    # Both backends saturate out-of-range floats and take NaN as 0 (one convert() in convert.h).
    values = np.array([1e10, -1e10, np.nan, np.inf, -np.inf, 2.75, -2.75, 2.0 ** 40, 1e30])
    for dst in ("int32", "int64"):
        cpu = ndl.NDArray(values, dtype=src).astype(getattr(ndl, dst))
        gpu = ndl.NDArray(values, dtype=src, device="cuda").astype(getattr(ndl, dst))
        np.testing.assert_array_equal(gpu.numpy(), cpu.numpy())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shapes", [((128, 256), (256, 96)), ((3, 65, 33), (3, 33, 47)),
                                    ((2, 3, 16, 32), (32, 24)), ((1, 512), (512, 1))], ids=str)
def test_matmul_and_grad(shapes, dtype):
    a = Pair(randn(shapes[0], dtype), dtype)
    b = Pair(randn(shapes[1], dtype), dtype)
    check_grads(a.n @ b.n, a.t @ b.t, [a, b], 1e-5 if dtype == "float32" else 2e-2, "matmul")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("x_shape", [(2, 37, 24), (5, 24), (1, 1, 24)], ids=str)
def test_linear_with_bias_and_grad(x_shape, dtype):
    # The forward is one GEMM with cuBLASLt's bias epilogue; the gradients are plain GEMMs and a sum.
    x = Pair(randn(x_shape, dtype), dtype)
    w = Pair(randn((40, 24), dtype), dtype)
    b = Pair(randn((40,), dtype), dtype)
    check_grads(ndl.nn.functional.linear(x.n, w.n, b.n), TF.linear(x.t, w.t, b.t), [x, w, b],
                1e-5 if dtype == "float32" else 2e-2, "linear")


def test_linear_with_bias_on_unaligned_views():
    # Operands starting 1 and 3 elements into their buffers: the epilogue's algorithm must suit
    # each pointer's alignment (cuBLASLt assumes 256 bytes unless told).
    for dtype in ("float32", "bfloat16"):
        for shift in (1, 3):
            x, w, b = (randn(s, dtype) for s in ((3 * 24 + shift,), (40 * 24 + shift,), (40 + shift,)))
            nx, nw, nb = (ndl.tensor(v.astype(np.float32), dtype=ndtype(dtype), device="cuda")
                          for v in (x, w, b))
            got = ndl.nn.functional.linear(nx[shift:].reshape(3, 24), nw[shift:].reshape(40, 24),
                                           nb[shift:])
            tx, tw, tb = (torch.tensor(v[shift:], dtype=torch.float64, device=TDEV) for v in (x, w, b))
            want = TF.linear(tx.reshape(3, 24), tw.reshape(40, 24), tb)
            check(got, want, 1e-5 if dtype == "float32" else 2e-2, f"{dtype} linear, shift {shift}")


def test_matmul_tf32_precision():
    a, b = Pair(randn((256, 512))), Pair(randn((512, 128)))
    ndl.set_float32_matmul_precision("high")
    try:
        check(a.n @ b.n, a.t @ b.t, 3e-3, "tf32 matmul")
    finally:
        ndl.set_float32_matmul_precision("highest")


# Rows staged in shared memory (vectorised and not), vocabulary-sized rows, and rows too long for
# shared memory (the two-pass fallback).
SOFTMAX_SHAPES = [(64, 1024), (33, 1023), (4, 50304), (3, 7), (2, 70001)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_and_grad(shape, log, dtype):
    x = Pair(randn(shape, dtype, scale=3.0), dtype)
    poison(shape)
    nfn, tfn = (F.log_softmax, torch.log_softmax) if log else (F.softmax, torch.softmax)
    what = "log_softmax" if log else "softmax"
    if dtype == "float32":
        check_grads(nfn(x.n, -1), tfn(x.t, -1), [x], TOL[dtype], what)
        return
    # bfloat16 stores the output rounded, and where one entry dominates a row the gradient cancels:
    # that rounding alone can move it further from float64's than any fixed bound (a (3, 7) row
    # drew 4.7e-2). So the gradient is checked against float64 arithmetic on the saved output: the
    # backward computes in float32 and rounds once, within bfloat16's unit roundoff 2^-8.
    y = nfn(x.n, -1)
    check(y, tfn(x.t, -1), TOL[dtype], what)
    g = rounded(RNG.standard_normal(shape), dtype)
    y.backward(ndl.tensor(g.astype(np.float32), dtype=ndl.bfloat16, device="cuda"))
    y64 = to_np(y)
    want = (g - np.exp(y64) * g.sum(-1, keepdims=True) if log
            else y64 * (g - (g * y64).sum(-1, keepdims=True)))
    check(x.n.grad, want, 2.0 ** -8, f"{what}: grad at the saved output")


# 50304 and 50257: rows split over a thread-block cluster (on Hopper), aligned and not.
@pytest.mark.parametrize("cols", [1024, 4096, 50304, 50257])
def test_softmax_extreme_rows(cols):
    a = RNG.standard_normal((7, cols)).astype(np.float32) * 3
    a[0, 5] = 1e4  # one dominant entry
    a[1, :] = -1e4  # all equal and very negative
    a[2, ::2] = -np.inf  # masked half
    a[3] += 3e3  # a large shift: log_softmax must not lose it
    a[5, cols - 3] = np.nan  # NaN anywhere in the row: the whole row is NaN, as in torch
    a[6, cols // 2] = np.inf  # +inf: the whole row is NaN, as in torch
    for nfn, tfn in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        n = nfn(ndl.tensor(a, device="cuda"), -1)
        t = tfn(torch.tensor(a, dtype=torch.float64, device=TDEV), -1)
        finite = np.isfinite(t.cpu().numpy()).all(axis=1)
        check(to_np(n)[finite], t[torch.from_numpy(finite).to(TDEV)], TOL["float32"],
              f"{nfn.__name__} of extreme rows")
        assert np.array_equal(np.isfinite(to_np(n)), np.isfinite(t.cpu().numpy()))


# Vocabulary-sized rows (split over a thread-block cluster on Hopper), odd lengths whose rows start
# off a 16-byte boundary (their ends are peeled), a row staged by one block (4097) and single
# elements; one row, a few, and the 1334 rows of a 64M-element batch. Forward only: the gradient
# is composed of elementwise ops and a sum, which other tests cover.
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows", [1, 7, 1334])
@pytest.mark.parametrize("cols", [50304, 50257, 4097, 1])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_long_rows(cols, rows, log, dtype):
    x = Pair(randn((rows, cols), dtype, scale=3.0), dtype, requires_grad=False)
    poison((rows, cols), dtype=dtype)
    nfn, tfn = (F.log_softmax, torch.log_softmax) if log else (F.softmax, torch.softmax)
    got, want = to_np(nfn(x.n, -1)), tfn(x.t, -1).cpu().numpy()
    what = f"{'log_softmax' if log else 'softmax'} {rows}x{cols}"
    check(got, want, TOL[dtype], what)
    # Per element too: every output written, each within a few bfloat16 / float32 roundings.
    tol = 2 ** -7 if dtype == "bfloat16" else 1e-5
    scale = np.abs(want) if not log else np.maximum(np.abs(want), 1.0)
    bad = ~(np.abs(got - want) <= tol * scale + 1e-30)
    assert not bad.any(), f"{what}: {bad.sum()} elements off, first at {np.argwhere(bad)[0]}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cols", [50304, 50257])
def test_softmax_rows_of_an_offset_view(cols, dtype):
    """x[1:] of a compact array is passed as is: its rows start one row further on, so input and
    output may sit at different offsets from a 16-byte boundary (the element-by-element path)."""
    x = Pair(randn((6, cols), dtype, scale=3.0), dtype, requires_grad=False)
    for nfn, tfn in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        poison((5, cols), dtype=dtype)
        check(nfn(x.n[1:], -1), tfn(x.t[1:], -1), TOL[dtype], f"{nfn.__name__} of x[1:]")


def logsumexp64(x):
    """log(sum(exp(x))) along the last axis in float64, with needle's and torch's special values: a
    NaN anywhere gives NaN, an infinite maximum is the answer (+inf, or -inf for a row of -inf)."""
    m = x.max(axis=-1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        s = np.exp(x - np.where(np.isfinite(m), m, 0.0)[..., None]).sum(axis=-1)
        return np.where(np.isinf(m), m, m + np.log(s))


def cuda_rows(x, dtype, offset):
    """x (rows, cols) on cuda as `dtype`; offset 1: a view one element into its buffer, so the rows
    start off a 16-byte boundary and are read element by element whatever their length."""
    flat = np.concatenate([np.zeros(offset), x.ravel()]).astype(np.float32)
    t = ndl.tensor(flat, dtype=ndtype(dtype), device="cuda")[offset:].reshape(*x.shape)
    assert (t.array.data_ptr() % 16 != 0) == (offset != 0)
    return t


def ramp_rows(rows, cols, order, dtype):
    """Rows over +-80 (their exps overflow float32 unless taken from the row's maximum), rising or
    falling along the row, rounded to dtype, as float64."""
    ramp = np.linspace(-80.0, 80.0, cols)
    return rounded((ramp if order == "rising" else ramp[::-1]) + RNG.standard_normal((rows, cols)),
                   dtype)


# logsumexp takes every row through row_op_kernel's segments: rising rows move a thread's maximum
# from one segment to the next, falling rows never do. 72, 8200 and 50304 columns are read in
# 16-byte chunks (8200 and 72 leave threads with part of a segment or none), 1, 7, 75 and 8201
# element by element, and so is every row of a view one element into its buffer (offset 1).
# Against float64 on the same (rounded) values; a bfloat16 result is rounded to bfloat16 (2^-8).
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("cols", [1, 7, 72, 75, 8200, 8201, 50304])
@pytest.mark.parametrize("order", ["rising", "falling"])
def test_logsumexp_running_maximum(order, cols, offset, dtype):
    x = ramp_rows(6, cols, order, dtype)
    poison((6,), dtype=dtype)
    got = to_np(cuda_rows(x, dtype, offset).logsumexp(-1))
    np.testing.assert_allclose(got, logsumexp64(x), rtol=1e-6 if dtype == "float32" else 2 ** -8,
                               atol=2e-5)


# NaN, +inf and -inf in the chunked (64, 8200, 50304) and element-wise (63, 8201) kernels: a NaN
# anywhere gives NaN (also beside +inf), a row holding +inf gives +inf, a row of -inf gives -inf,
# -inf elements add nothing (also before the row's first finite element).
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cols", [64, 63, 8200, 8201, 50304])
def test_logsumexp_special_values(cols, dtype):
    x = ramp_rows(9, cols, "rising", dtype)
    x[0, ::3] = -np.inf
    x[1, 5] = np.inf
    x[2, 7] = np.nan
    x[3, :] = -np.inf
    x[4, :-1] = -np.inf
    x[4, -1] = 0.5
    x[5, 3], x[5, -2] = np.nan, np.inf
    x[6, 0], x[6, -1] = -np.inf, np.inf
    x[7, -1] = np.nan
    x[8, :cols // 2] = -np.inf
    got = to_np(cuda_rows(x, dtype, 0).logsumexp(-1))
    want = logsumexp64(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 2 ** -8, atol=2e-5)


# Rows of 4 MB (float32) or 2 MB (bfloat16): more than the cached kernel's shared memory and than
# a cluster of 8 blocks takes (about 1.8 MB on Hopper), so softmax and log_softmax take the
# statistics from row_op_kernel's segments (1000000: in chunks, 1000001 and the view one element
# into its buffer: element by element), then write the output in a second pass. Rising and falling
# rows over +-80, a masked half, and rows of special values: NaN, +inf and all -inf give NaN rows,
# as in torch.
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cols,offset", [(1000000, 0), (1000000, 1), (1000001, 0)])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_rows_beyond_shared_memory(cols, offset, log, dtype):
    x = np.concatenate([ramp_rows(1, cols, "rising", dtype), ramp_rows(5, cols, "falling", dtype)])
    x[2, ::2] = -np.inf
    x[3, -1] = np.nan
    x[4, cols // 3] = np.inf
    x[5, :] = -np.inf
    poison(x.shape, dtype=dtype)
    xs = cuda_rows(x, dtype, offset)
    got = to_np(xs.log_softmax(-1) if log else xs.softmax(-1))
    with np.errstate(invalid="ignore"):
        shifted = x - x.max(axis=1, keepdims=True)
        log_s = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        want = shifted - log_s if log else np.exp(shifted - log_s)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    check(got[finite], want[finite], TOL[dtype], "log_softmax" if log else "softmax")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows,d", [(1, 1), (7, 5), (256, 512), (1027, 1024), (33, 384), (3, 2049), (1500, 96),
                                    (2, 60000)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_and_grad(rows, d, affine, dtype):
    x = Pair(randn((rows, d), dtype, scale=2.0, shift=0.5), dtype)
    pairs = [x]
    if affine:
        w, b = Pair(randn((d,), dtype), dtype), Pair(randn((d,), dtype), dtype)
        pairs += [w, b]
        n = F.layer_norm(x.n, (d,), w.n, b.n, 1e-5)
        t = TF.layer_norm(x.t, (d,), w.t, b.t, 1e-5)
    else:
        n = F.layer_norm(x.n, (d,), None, None, 1e-5)
        t = TF.layer_norm(x.t, (d,), eps=1e-5)
    tol = TOL[dtype] * (1 if dtype == "bfloat16" else 5)
    check_grads(n, t, pairs, tol, "layer_norm")


# Rows of a multiple of 8 classes are read in 16-byte chunks (50304, 1000), others one element at a
# time (10, 1003).
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows,classes", [(64, 10), (128, 50304), (33, 1000), (5, 1003)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_grad(rows, classes, reduction, dtype):
    x = Pair(randn((rows, classes), dtype, scale=2.0), dtype)
    target = RNG.integers(0, classes, rows)
    target[::5] = -100  # ignored rows
    n = F.cross_entropy(x.n, ndl.tensor(target, device="cuda"), reduction=reduction)
    t = TF.cross_entropy(x.t, torch.tensor(target, device=TDEV), reduction=reduction)
    check_grads(n, t, [x], TOL[dtype] * 5 if dtype == "float32" else TOL[dtype],
                f"cross_entropy ({reduction})")


# linear_cross_entropy: the logits' gradient written over them in the forward kernel (chunked rows
# staged in shared memory: 50304, 1000; chunked rows too long to stage: 120000; element by element:
# 1003, 10), dx and dweight by two GEMMs in the backward.
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows,hidden,classes", [(64, 32, 10), (256, 64, 50304), (33, 16, 1000),
                                                 (5, 24, 1003), (6, 16, 120000)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_and_grad(rows, hidden, classes, reduction, dtype):
    x = Pair(randn((rows, hidden), dtype), dtype)
    w = Pair(randn((classes, hidden), dtype, scale=0.3), dtype)
    target = RNG.integers(0, classes, rows)
    target[::5] = -100  # ignored rows
    poison((rows, classes), dtype=dtype)
    n = F.linear_cross_entropy(x.n, w.n, ndl.tensor(target, device="cuda"), reduction=reduction)
    t = TF.cross_entropy(x.t @ w.t.T, torch.tensor(target, device=TDEV), reduction=reduction)
    check_grads(n, t, [x, w], TOL[dtype] * 5 if dtype == "float32" else TOL[dtype],
                f"linear_cross_entropy ({reduction})")


def test_linear_cross_entropy_under_autocast_matches_the_unfused_ops():
    # apps.train's output layer and loss under bfloat16 autocast: the fused op against
    # cross_entropy(linear(...)) on the same float32 parameters, in the same region. Both round the
    # product and the logits' gradient to bfloat16 once, so they agree far inside bfloat16's bounds.
    xv = RNG.standard_normal((2, 96, 64)).astype(np.float32)
    wv = (RNG.standard_normal((50304, 64)) * 0.2).astype(np.float32)
    target = ndl.tensor(RNG.integers(0, 50304, (2, 96)), device="cuda")
    results = []
    for fused in (True, False):
        x = ndl.tensor(xv, device="cuda", requires_grad=True)
        w = ndl.tensor(wv, device="cuda", requires_grad=True)
        with ndl.autocast("cuda"):
            if fused:
                loss = F.linear_cross_entropy(x, w, target)
            else:
                loss = F.cross_entropy(F.linear(x, w).reshape(192, 50304), target.reshape(192))
        assert loss.dtype == ndl.float32
        loss.backward()
        assert x.grad.dtype == ndl.float32 and w.grad.dtype == ndl.float32
        results.append([to_np(loss), to_np(x.grad), to_np(w.grad)])
    for what, a, b in zip(("loss", "dx", "dweight"), *results):
        check(a, b, 1e-2, f"fused against unfused under autocast: {what}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("classes", [50304, 8200, 72, 8201, 75])
@pytest.mark.parametrize("order", ["rising", "falling"])
def test_cross_entropy_running_maximum(order, classes, dtype):
    # Logits over +-80 (their exps overflow float32 unless taken from the row's maximum), rising
    # or falling along the row, so a thread's running maximum moves from one segment to the next
    # (rising: every segment rescales the sums) or never does. 8200 and 72 classes leave threads
    # with part of a segment or none; 8201 and 75 are read element by element, not in chunks of 8.
    # Against float64 on the same (rounded) logits; a bfloat16 loss is rounded to bfloat16 (one
    # unit: 2^-8 relative).
    ramp = np.linspace(-80.0, 80.0, classes)
    x = rounded((ramp if order == "rising" else ramp[::-1]) + RNG.standard_normal((6, classes)),
                dtype)
    target = RNG.integers(0, classes, 6)
    xs = ndl.tensor(x.astype(np.float32), dtype=ndtype(dtype), device="cuda")
    got = to_np(F.cross_entropy(xs, ndl.tensor(target, device="cuda"), reduction="none"))
    top = x.max(axis=1)
    want = top + np.log(np.exp(x - top[:, None]).sum(axis=1)) - x[np.arange(6), target]
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 2 ** -8, atol=2e-5)


@pytest.mark.parametrize("classes", [64, 63])
def test_cross_entropy_special_values_match_the_cpu(classes):
    # -inf logits (masked classes), a row of +inf, a row with a NaN and a row of all -inf but the
    # target's, in the chunked (64) and element-wise (63) kernels, against the CPU kernels.
    x = RNG.standard_normal((6, classes)).astype(np.float32)
    x[0, ::3] = -np.inf
    x[1, 5] = np.inf
    x[2, 7] = np.nan
    x[3, :] = -np.inf
    x[3, 2] = 0.5
    x[4, 1:] = -np.inf
    target = np.array([1, 2, 3, 2, 0, 9])
    for dtype in (ndl.float32, ndl.bfloat16):
        got, want = [], []
        for device, out in (("cuda", got), ("cpu", want)):
            xs = ndl.tensor(x, dtype=dtype, device=device, requires_grad=True)
            loss = F.cross_entropy(xs, ndl.tensor(target, device=device), reduction="none")
            loss.backward(ndl.ones(6, dtype=loss.dtype, device=device))
            out += [loss.detach().to(ndl.float32).numpy(), xs.grad.to(ndl.float32).numpy()]
        for g, w, what in zip(got, want, ("loss", "grad")):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{dtype} {what}")
            np.testing.assert_allclose(g, w, rtol=2e-2, atol=1e-6, err_msg=f"{dtype} {what}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_embedding_and_grad(dtype):
    w = Pair(randn((1000, 64), dtype), dtype)
    ids = RNG.integers(0, 1000, (8, 33))
    ids[0, :4] = 7  # repeated ids accumulate in the gradient
    n = F.embedding(ndl.tensor(ids, device="cuda"), w.n)
    t = TF.embedding(torch.tensor(ids, device=TDEV), w.t)
    check_grads(n, t, [w], TOL[dtype], "embedding")


def test_embedding_grad_is_the_same_on_every_run():
    # The training case: (8, 2048) token ids with heavily repeated tokens, width 512.
    rng = np.random.default_rng(5)
    ids = ndl.tensor(rng.zipf(1.3, (8, 2048)) % 50304, device="cuda")
    g = ndl.tensor(rng.standard_normal((8, 2048, 512)).astype(np.float32), device="cuda")
    grads = []
    for _ in range(3):
        w = ndl.tensor(np.zeros((50304, 512), np.float32), device="cuda", requires_grad=True)
        (F.embedding(ids, w) * g).sum().backward()
        grads.append(w.grad.numpy().view(np.uint32))
    assert np.array_equal(grads[0], grads[1]) and np.array_equal(grads[0], grads[2])


def gelu_inputs(n):
    """n values over the whole useful range: dense near 0, then out to |x| = 1e4 and beyond
    (where gelu is x or a flushed -0), and the special values."""
    a = np.concatenate([
        np.linspace(-8, 8, n // 2), RNG.standard_normal(n // 4) * 3,
        np.sign(RNG.standard_normal(n // 4)) * np.exp(RNG.uniform(-20, 9.3, n // 4)),
        [0.0, -0.0, 1e-30, -1e-30, 13.0, -13.0, 3e38, -3e38, np.inf, -np.inf, np.nan]])
    return a


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("offset", [0, 1], ids=["aligned", "offset"])
def test_gelu_accuracy_and_special_values(dtype, offset):
    """Element by element against float64 on the same (rounded) inputs: bfloat16 within half a
    bfloat16 unit of the exact value (the kernel's float arithmetic is within 5e-5 relative of it),
    float32 within 1e-5 relative + 1e-6; +inf gives inf, -inf and NaN give NaN, as on the CPU. Odd
    lengths and an offset-1 view take the vector kernel's tail and the element-by-element path."""
    vals = rounded(gelu_inputs((1 << 18) + 5), dtype)
    x = ndl.tensor(vals.astype(np.float32), dtype=ndtype(dtype), device="cuda")[offset:]
    vals = vals[offset:]
    poison(vals.shape, dtype=dtype)
    got = to_np(F.gelu(x))
    # x * Phi(x) through erfc: 1 + erf(x / sqrt 2) cancels for x < -5 even in float64.
    tv = torch.tensor(vals, dtype=torch.float64, device=TDEV)
    want = (tv * 0.5 * torch.special.erfc(-tv / np.sqrt(2.0))).cpu().numpy()
    cpu = to_np(F.gelu(ndl.tensor(vals.astype(np.float32), dtype=ndtype(dtype))))
    finite = np.isfinite(vals)
    got_f, want_f = got[finite], want[finite]
    if dtype == "bfloat16":
        ok = np.abs(got_f - want_f) <= 2 ** -8 * 1.02 * np.abs(want_f) + 1e-37
    else:  # erff's absolute error near -1 shows in 1 + erf for x < -4
        ok = np.abs(got_f - want_f) <= 1e-5 * np.abs(want_f) + 1e-6
    bad = np.zeros_like(finite)
    bad[finite] = ~ok
    assert not bad.any(), (f"gelu {dtype}: {bad.sum()} off, e.g. x={vals[bad][:4]} "
                           f"got {got[bad][:4]} want {want[bad][:4]}")
    special = ~finite
    np.testing.assert_array_equal(np.isnan(got[special]), np.isnan(cpu[special]))
    np.testing.assert_array_equal(got[special & ~np.isnan(cpu)], cpu[special & ~np.isnan(cpu)])
    assert got[vals == np.inf].tolist() == [np.inf] and np.isnan(got[vals == -np.inf]).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gelu_grad_wide_range(dtype):
    x = Pair(rounded(np.clip(gelu_inputs(1 << 16)[:-3], -30, 30), dtype), dtype)
    check_grads(F.gelu(x.n), TF.gelu(x.t), [x], TOL[dtype], f"gelu {dtype}")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_functional_and_grad(approximate):
    x = Pair(randn((1 << 16) + 3, scale=3.0))
    check_grads(F.gelu(x.n, approximate=approximate), TF.gelu(x.t, approximate=approximate), [x],
                TOL["float32"], f"gelu ({approximate})")


def test_mlp_cross_entropy_backward_matches_torch():
    batch, d_in, hidden, classes = 96, 128, 512, 50
    x = Pair(randn((batch, d_in)), requires_grad=False)
    params = [Pair(randn(s, scale=0.1)) for s in ((hidden, d_in), (hidden,), (hidden,), (hidden,),
                                                  (classes, hidden), (classes,))]
    w1, b1, g, beta, w2, b2 = params
    target = RNG.integers(0, classes, batch)

    h = F.gelu(F.linear(x.n, w1.n, b1.n))
    h = F.layer_norm(h, (hidden,), g.n, beta.n, 1e-5)
    loss = F.cross_entropy(F.linear(h, w2.n, b2.n), ndl.tensor(target, device="cuda"))
    th = TF.gelu(TF.linear(x.t, w1.t, b1.t))
    th = TF.layer_norm(th, (hidden,), g.t, beta.t, 1e-5)
    tloss = TF.cross_entropy(TF.linear(th, w2.t, b2.t), torch.tensor(target, device=TDEV))

    check(loss, tloss, 1e-5, "loss")
    loss.backward()
    tloss.backward()
    for name, p in zip(["w1", "b1", "ln weight", "ln bias", "w2", "b2"], params):
        check(p.n.grad, p.t.grad, 1e-4, f"grad of {name}")


def test_no_device_allocations_in_steady_state():
    """After a warm-up step, repeated identical steps reuse the allocator's cached blocks."""
    w = ndl.tensor(randn((256, 256), scale=0.05).astype(np.float32), device="cuda",
                   requires_grad=True)
    x = ndl.tensor(randn((64, 256)).astype(np.float32), device="cuda")
    target = ndl.tensor(RNG.integers(0, 256, 64), device="cuda")

    def step():
        loss = F.cross_entropy(F.gelu(F.linear(x, w)), target)
        w.grad = None
        loss.backward()
        return loss

    step()
    ndl.cuda.synchronize()
    before = ndl.cuda.memory_stats()["num_device_allocs"]
    for _ in range(20):
        step()
    ndl.cuda.synchronize()
    assert ndl.cuda.memory_stats()["num_device_allocs"] == before


def test_views_spanning_2_31_elements():
    """The elementwise kernels index a strided view in 32 bits when its extent in the base array
    fits in int32 and in int64 otherwise (strided_plan.h). Rows 2^30 + 8 elements apart put a
    3 x 64 view's last row past element 2^31 of its base: the copy into the view, the copies out of
    it and the ops on it take the int64 plan, and the sum runs over 3.2e9 elements. bfloat16
    (6.4 GB here) holds the small integers used exactly."""
    if torch.cuda.get_device_properties(0).total_memory < (12 << 30):
        pytest.skip("needs a GPU with 12 GB or more (the base array is 6.4 GB)")
    cols = (1 << 30) + 8
    base = ndl.zeros(3, cols, dtype=ndl.bfloat16, device="cuda")
    x = RNG.integers(1, 60, size=(3, 64)).astype(np.float32)
    base[:, 5:69] = ndl.tensor(x, dtype=ndl.bfloat16, device="cuda")
    view = base[:, 5:69]
    np.testing.assert_array_equal(view.numpy(), x)
    np.testing.assert_array_equal(base[:, 4:70:65].numpy(), np.zeros((3, 2)))
    np.testing.assert_array_equal((view * 2 - 1).numpy(), x * 2 - 1)
    np.testing.assert_array_equal((view - base[:1, 5:69]).numpy(), x - x[:1])
    # The sum is rounded to bfloat16 (8 significant bits); missing the last row would take away
    # about a third of it.
    total = base.sum().item()
    assert abs(total - x.sum()) <= x.sum() / 128, f"sum {total}, expected {x.sum()}"


def test_non_blocking_copy_to_the_host():
    """Tensor.to("cpu", non_blocking=True) queues the copy into pinned memory and returns at
    once; the result waits for the copy on its first use. Values, dtypes, gradients and the
    training loop's reads (apps/train_utils.needle_to_host) against blocking copies."""
    w = ndl.tensor(RNG.standard_normal((256, 256)) / 16, dtype=ndl.float32, device="cuda")
    x = ndl.tensor(RNG.standard_normal((256, 256)), dtype=ndl.float32, device="cuda", requires_grad=True)
    y = x
    for _ in range(10):  # work queued ahead of the copy
        y = y @ w
    host = y.to("cpu", non_blocking=True)
    assert host.is_pinned() and host.device == ndl.cpu() and not y.is_pinned()
    np.testing.assert_array_equal(host.detach().numpy(), y.detach().numpy())
    # Gradients flow back through the copy to the GPU.
    (host * 2).sum().backward()
    want = 2 * np.ones((256, 256)) @ np.linalg.matrix_power(w.numpy().astype(np.float64).T, 10)
    assert np.linalg.norm(x.grad.numpy() - want) / np.linalg.norm(want) < 1e-4
    # The dtype is converted on the GPU, then copied; strided views are compacted first.
    y = y.detach()
    h64 = y.to("cpu", ndl.float64, non_blocking=True)
    assert h64.dtype == ndl.float64 and h64.is_pinned()
    np.testing.assert_array_equal(h64.numpy(), y.numpy().astype(np.float64))
    np.testing.assert_array_equal(y.T.to("cpu", non_blocking=True).numpy(), y.numpy().T)
    # Small scalars, read as the training loop reads them.
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from apps import train_utils as U
    loss = (y * y).mean()
    norm = ndl.nn.utils.clip_grad_norm_([x], 1e9)
    read = U.needle_to_host([loss.detach(), norm, 2.5])
    assert read() == [loss.item(), norm.item(), 2.5]
    # A CPU tensor is returned as it is.
    c = ndl.tensor([1.0, 2.0])
    assert not c.to("cpu", non_blocking=True).is_pinned()
    # A pinned copy uploaded again: the upload is waited for, so writing the host copy right
    # after it cannot change what the GPU received.
    h = y.to("cpu", non_blocking=True)
    back = h.to("cuda")
    h.fill_(0.0)
    np.testing.assert_array_equal(back.numpy(), y.numpy())
