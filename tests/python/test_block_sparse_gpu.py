"""Block-sparse attention on the GPU: needle's CUDA kernels against torch's dense masked attention.

Each case draws fresh random q, k, v and an upstream gradient, runs needle's
block_sparse_attention forward and backward on the GPU, and compares out, dq, dk, dv with a
float64 dense masked attention in torch (torch autograd for the gradients) on the same values
(bfloat16 inputs are rounded first, so both sides see the same numbers). The error is
||got - ref|| / ||ref|| against METHOD.md's bounds (float32 far under 1e-3, tf32 near 3e-4,
bfloat16 operands 1e-3..1e-2). Rows that can see no key must come out exactly 0 (never NaN).

Output buffers are poisoned before each run: NaN arrays of every output's size are allocated and
freed just before the call, so needle's best-fit caching allocator hands those blocks to the
kernels, and an element a kernel fails to write stays NaN and fails the comparison.

On compute capability 9.0 the bfloat16 cases run the Hopper (wgmma) kernels; the last test runs
them again in a child process with NEEDLE_ATTENTION_WGMMA=0, so the mma.sync kernels that every
other GPU uses are checked there too.

Skips cleanly without torch, without a GPU, or in a build without CUDA.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ndl = pytest.importorskip("needle")

if not torch.cuda.is_available() or not ndl.cuda.is_available():
    pytest.skip("needs a CUDA GPU for both torch and needle", allow_module_level=True)
_attention = getattr(ndl._C, "attention", None)
Layout = getattr(ndl.nn, "BlockSparseLayout", None) or getattr(_attention, "BlockSparseLayout", None)
attention = getattr(ndl.nn.functional, "block_sparse_attention", None) or getattr(
    _attention, "block_sparse_attention", None
)
if Layout is None or attention is None:
    pytest.skip("this build has no block-sparse attention", allow_module_level=True)

TDEV = torch.device("cuda")
RNG = np.random.default_rng()  # re-bound per test by conftest.py

# Relative-norm bounds (METHOD.md). "highest" float32 runs 3xTF32 on the tensor cores, float32
# accuracy; "high" runs single TF32.
TOL = {"float32": 1e-4, "tf32": 3e-3, "bfloat16": 2e-2}


def _precision_setter():
    for owner in (ndl, getattr(ndl, "cuda", None), getattr(ndl, "_C", None)):
        fn = getattr(owner, "set_matmul_precision", None) if owner is not None else None
        if fn is not None:
            return fn
    return None


def _dtype(name):
    return ndl.bfloat16 if name == "bfloat16" else ndl.float32


def poison(*specs):
    """Leaves freed NaN blocks of each (shape, dtype) in needle's allocator cache."""
    junk = [
        ndl.tensor(np.full(shape, np.nan, np.float32), dtype=_dtype(dt), device="cuda")
        for shape, dt in specs
        for _ in range(2)
    ]
    ndl.cuda.synchronize()
    del junk


def make_layout(pattern, L, b, causal, H):
    """The layout under test, by name; random masks keep some block rows empty."""
    if pattern == "dense":
        return Layout.dense(L, block_size=b, causal=causal)
    if pattern == "local":
        return Layout.local(L, block_size=b, window=2, causal=causal)
    if pattern == "mixed":
        return Layout.mixed(L, block_size=b, causal=causal)
    nb = -(-L // b)
    shape = (H, nb, nb) if pattern == "per_head" else (nb, nb)
    mask = RNG.random(shape) < 0.4
    mask[..., 0, :] = False  # a query block that keeps nothing: its rows must give 0
    if nb > 2:
        # Under a causal layout a row that keeps only blocks right of its diagonal sees nothing.
        mask[..., 1, :] = False
        mask[..., 1, nb - 1] = True
    return Layout.from_block_mask(mask, b, L, causal=causal)


def element_mask(layout, L, b, causal, H):
    """(H, L, L) bool: query i may see key j."""
    bm = np.asarray(layout.to_block_mask(), dtype=bool)
    if bm.ndim == 2:
        bm = np.broadcast_to(bm, (H,) + bm.shape)
    m = bm.repeat(b, axis=1).repeat(b, axis=2)[:, :L, :L]
    if causal:
        m = m & np.tril(np.ones((L, L), dtype=bool))
    return torch.from_numpy(np.ascontiguousarray(m)).to(TDEV)


def reference(q, k, v, mask, scale):
    """Dense masked attention in float64: out, lse; rows with no visible key give 0, -inf."""
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~mask, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).clamp_min(-1e30).detach()
    e = torch.exp(s - m)
    p = e / e.sum(dim=-1, keepdim=True).clamp_min(1e-300)
    return p @ v, torch.logsumexp(s.detach(), dim=-1)


def check_lse(got, want, tol):
    got = torch.as_tensor(got, dtype=torch.float64, device=TDEV)
    assert not torch.isnan(got).any()
    assert torch.equal(torch.isinf(got), torch.isinf(want)), "-inf exactly where no key is visible"
    fin = torch.isfinite(want)
    if fin.any():  # a random layout may leave every row without a visible key
        err = (got[fin] - want[fin]).abs().max().item()
        assert err < tol * max(1.0, want[fin].abs().max().item())


def rel_err(got, want):
    got = torch.as_tensor(got, dtype=torch.float64, device=TDEV)
    assert not torch.isnan(got).any(), "NaN in output (an element left unwritten?)"
    denom = want.norm().item() or 1.0
    return (got - want).norm().item() / denom


def run_case(pattern, causal, b, D, dtype, L=300, B=2, H=3, tol_key=None):
    tol = TOL[tol_key or dtype]
    layout = make_layout(pattern, L, b, causal, H)
    shape = (B, H, L, D)
    host = [RNG.standard_normal(shape).astype(np.float32) for _ in range(4)]
    scale = 0.8 / math.sqrt(D)
    nq, nk, nv = (
        ndl.tensor(x, dtype=_dtype(dtype), device="cuda", requires_grad=True) for x in host[:3]
    )
    gout = ndl.tensor(host[3], dtype=_dtype(dtype), device="cuda")
    # The values needle holds (rounded for bfloat16), as float64 torch leaves.
    tq, tk, tv, tg = (
        torch.tensor(t.detach().numpy(), dtype=torch.float64, device=TDEV)
        for t in (nq, nk, nv, gout)
    )
    for t in (tq, tk, tv):
        t.requires_grad_(True)

    poison((shape, dtype), ((B, H, L), "float32"))
    out, lse = attention(nq, nk, nv, layout, scale=scale, return_lse=True)
    got = out.detach().numpy()
    got_lse = lse.detach().numpy()
    poison((shape, dtype), ((B, H, L), "float32"))
    out.backward(gout)

    mask = element_mask(layout, L, b, causal, H)
    ref, ref_lse = reference(tq, tk, tv, mask, scale)
    ref.backward(tg)
    check_lse(got_lse, ref_lse, tol)

    errs = {
        "out": rel_err(got, ref.detach()),
        "dq": rel_err(nq.grad.detach().numpy(), tq.grad),
        "dk": rel_err(nk.grad.detach().numpy(), tk.grad),
        "dv": rel_err(nv.grad.detach().numpy(), tv.grad),
    }
    bad = {name: e for name, e in errs.items() if not e < tol}
    assert not bad, f"errors over {tol}: {bad} (all: {errs})"

    # Rows with no visible key: exactly zero output and zero dq.
    empty = ~mask.any(dim=-1)  # (H, L)
    if empty.any():
        idx = empty.nonzero(as_tuple=True)
        got_t = torch.from_numpy(got).to(TDEV)
        dq_t = torch.from_numpy(nq.grad.detach().numpy()).to(TDEV)
        assert (got_t[:, idx[0], idx[1]] == 0).all()
        assert (dq_t[:, idx[0], idx[1]] == 0).all()
    return errs


PATTERNS = ["dense", "local", "mixed", "random", "per_head"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("D", [32, 64, 128])
@pytest.mark.parametrize("b", [16, 32, 64, 128])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_matches_torch(pattern, causal, b, D, dtype):
    run_case(pattern, causal, b, D, dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("D", [8, 16, 24, 40, 48, 80, 96, 112])
@pytest.mark.parametrize("b", [16, 64])
@pytest.mark.parametrize("pattern", ["dense", "mixed", "per_head"])
def test_head_dims_between_the_tile_widths(pattern, b, D, dtype):
    # The kernels are built for tile widths 32, 64, 96 and 128 (mma.sync) or 64 and 128 (wgmma);
    # any other head dim (a multiple of 8) runs in the next width up, its extra columns zero-filled
    # in shared memory and never stored (96: exact on mma.sync, padded on wgmma). Poisoned outputs
    # catch an element left unwritten; the reference catches an extra column leaking into a dot
    # product or a row stride taken from the tile instead of the data.
    run_case(pattern, True, b, D, dtype)


def run_projection_case(pattern, D, dtype, pad=0, offset=0, L=300, B=2, H=3, b=64):
    """q, k, v as the (B, H, L, D) views of one (B, L, H, 3, D + pad) projection (columns offset ..
    offset + D - 1 of each part), the output's heads merged by a free reshape, the loss's gradient
    reaching the backward as a strided view, and the projection's gradient against torch."""
    tol = TOL[dtype]
    layout = make_layout(pattern, L, b, True, H)
    host = RNG.standard_normal((B, L, H, 3, D + pad)).astype(np.float32)
    nqkv = ndl.tensor(host, dtype=_dtype(dtype), device="cuda", requires_grad=True)
    nw = ndl.tensor(RNG.standard_normal((B, L, H * D)).astype(np.float32), dtype=_dtype(dtype),
                    device="cuda")
    scale = 1 / math.sqrt(D)
    poison(((B, H, L, D), dtype), ((B, H, L), "float32"))
    out = attention(*(nqkv[:, :, :, i, offset:offset + D].permute(0, 2, 1, 3) for i in range(3)),
                    layout, scale=scale)
    merged = out.permute(0, 2, 1, 3)
    assert merged.is_contiguous()  # written in (B, L, H, D) memory
    poison(((B, L, H, 3, D + pad), dtype), ((B, H, L, D), dtype))
    (merged.reshape(B, L, H * D) * nw).sum().backward()

    tqkv = torch.tensor(nqkv.detach().numpy(), dtype=torch.float64, device=TDEV,
                        requires_grad=True)
    tw = torch.tensor(nw.numpy(), dtype=torch.float64, device=TDEV)
    ref, _ = reference(*(tqkv[:, :, :, i, offset:offset + D].permute(0, 2, 1, 3)
                         for i in range(3)), element_mask(layout, L, b, True, H), scale)
    (ref.permute(0, 2, 1, 3).reshape(B, L, H * D) * tw).sum().backward()
    errs = {"out": rel_err(out.detach().numpy(), ref.detach()),
            "dqkv": rel_err(nqkv.grad.numpy(), tqkv.grad)}
    assert all(e < tol for e in errs.values()), f"errors over {tol}: {errs}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("D", [40, 64, 128])
@pytest.mark.parametrize("pattern", ["dense", "mixed", "per_head"])
def test_views_of_a_fused_projection(pattern, D, dtype):
    # Read and written where they lie: rows 3 * H * (D + pad) elements apart.
    run_projection_case(pattern, D, dtype)
    # Strides of 3 * (D + 2) elements per head, not multiples of 16 bytes, and (bfloat16) rows
    # starting one element in: the op copies them compact first.
    run_projection_case(pattern, D, dtype, pad=2, offset=0 if dtype == "float32" else 1)


@pytest.mark.parametrize("D", [4, 20, 136, 256])
def test_unsupported_head_dims_are_clear_errors(D):
    x = ndl.tensor(np.zeros((1, 2, 64, D), np.float32), device="cuda")
    with pytest.raises(ValueError, match=rf"head dim must be a multiple of 8 from 8 to 128, got {D}"):
        attention(x, x, x, Layout.dense(64, block_size=64))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_long_sequence_several_tiles(dtype):
    # Many key tiles per row (online-softmax rescaling across tiles, double buffering), a length
    # that is not a multiple of the tile, batch and heads above one.
    run_case("mixed", True, 64, 64, dtype, L=1000, B=2, H=4)
    run_case("local", False, 128, 64, dtype, L=777, B=1, H=2)
    run_case("mixed", True, 32, 80, dtype, L=1000, B=2, H=4)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("b", [16, 64, 128])
@pytest.mark.parametrize("lq", [1, 5, 70])
@pytest.mark.parametrize("D", [64, 40])
def test_decoding_with_q_offset(D, lq, b, dtype):
    # q holds the last lq positions of a length-lk sequence (a KV cache): causal by absolute
    # position, q_offset = lk - lq, an offset that is not a multiple of the block or the tile.
    lk, B, H = 389, 2, 2
    layout = Layout.mixed(lk, block_size=b, causal=True)
    host = [RNG.standard_normal((B, H, n, D)).astype(np.float32) for n in (lq, lk, lk)]
    nq, nk, nv = (ndl.tensor(x, dtype=_dtype(dtype), device="cuda") for x in host)
    tq, tk, tv = (
        torch.tensor(t.numpy(), dtype=torch.float64, device=TDEV) for t in (nq, nk, nv)
    )
    poison(((B, H, lq, D), dtype), ((B, H, lq), "float32"))
    out, lse = attention(nq, nk, nv, layout, q_offset=lk - lq, return_lse=True)
    full = element_mask(layout, lk, b, True, H)[:, lk - lq :, :]
    ref, ref_lse = reference(tq, tk, tv, full, 1 / math.sqrt(D))
    assert rel_err(out.numpy(), ref) < TOL[dtype]
    check_lse(lse.numpy(), ref_lse, TOL[dtype])


def test_tf32_precision():
    setter = _precision_setter()
    if setter is None:
        pytest.skip("needle exposes no set_matmul_precision to Python")
    setter("high")
    try:
        run_case("random", True, 64, 64, "float32", tol_key="tf32")
        run_case("dense", False, 32, 128, "float32", tol_key="tf32")
    finally:
        setter("highest")


def test_results_do_not_depend_on_the_run():
    # A race shows as a result that moves between runs on the same inputs; no atomics are used,
    # so two runs must agree bit for bit.
    L, b, D, H = 513, 32, 64, 2
    layout = make_layout("random", L, b, True, H)
    x = [RNG.standard_normal((1, H, L, D)).astype(np.float32) for _ in range(4)]
    results = []
    for _ in range(2):
        q, k, v = (ndl.tensor(a, device="cuda", requires_grad=True) for a in x[:3])
        out = attention(q, k, v, layout)
        out.backward(ndl.tensor(x[3], device="cuda"))
        results.append([t.detach().numpy() for t in (out, q.grad, k.grad, v.grad)])
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


def test_bfloat16_cases_on_the_mma_sync_kernels():
    # NEEDLE_ATTENTION_WGMMA is read once per process, so the other kernel family needs a process
    # of its own.
    if os.environ.get("NEEDLE_ATTENTION_WGMMA") == "0":
        pytest.skip("this process already runs the mma.sync kernels")
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the mma.sync kernels are this GPU's only bfloat16 kernels: tested above")
    env = dict(os.environ, NEEDLE_ATTENTION_WGMMA="0")
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "bfloat16"],
        env=env, capture_output=True, text=True,
    )
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
