"""Block-sparse attention from Python: BlockSparseLayout patterns (each against its definition
written in NumPy), validation errors, densities, and block_sparse_attention's output, logsumexp
and gradients against a float64 dense masked reference in NumPy."""
import math

import numpy as np
import pytest

import needle as ndl
from needle._C import attention

BlockSparseLayout = attention.BlockSparseLayout
block_sparse_attention = attention.block_sparse_attention


# --- the NumPy reference ----------------------------------------------------------------------

def element_mask(layout, lq, lk, q_offset=0):
    """(LH, lq, lk) bool: key j visible to query row i (absolute position q_offset + i)."""
    blocks = layout.to_block_mask()
    if blocks.ndim == 2:
        blocks = blocks[None]
    b = layout.block_size
    full = np.repeat(np.repeat(blocks, b, axis=1), b, axis=2)
    mask = full[:, q_offset:q_offset + lq, :lk]
    if layout.causal:
        pos = np.arange(q_offset, q_offset + lq)[:, None]
        mask = mask & (np.arange(lk)[None, :] <= pos)
    return mask


def reference(q, k, v, dout, layout, scale, q_offset=0):
    """out, lse, dq, dk, dv in float64; rows with no visible key give 0, -inf and no gradient."""
    lq, lk = q.shape[2], k.shape[2]
    mask = element_mask(layout, lq, lk, q_offset)[None]  # broadcasts over batch (and heads if 1)
    s = np.where(mask, scale * q @ np.swapaxes(k, -1, -2), -np.inf)
    m = s.max(axis=-1, keepdims=True)
    empty = np.isinf(m)
    p = np.exp(s - np.where(empty, 0.0, m))
    total = p.sum(axis=-1, keepdims=True)
    p = np.where(empty, 0.0, p / np.where(empty, 1.0, total))
    lse = np.where(empty, -np.inf, m + np.log(np.where(empty, 1.0, total)))[..., 0]
    out = p @ v
    dp = dout @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return out, lse, scale * ds @ k, scale * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ dout


def run(layout, b, h, lq, lk, d, dtype=np.float64, seed=0, q_offset=None, tol=1e-10):
    rng = np.random.default_rng(seed)
    q, dout = (rng.standard_normal((b, h, lq, d)) for _ in range(2))
    k, v = (rng.standard_normal((b, h, lk, d)) for _ in range(2))
    # The reference sees the inputs rounded to dtype, so only the kernel's arithmetic differs.
    q, k, v, dout = (x.astype(dtype).astype(np.float64) for x in (q, k, v, dout))
    tq, tk, tv = (ndl.tensor(x.astype(dtype), requires_grad=q_offset is None) for x in (q, k, v))
    out, lse = block_sparse_attention(tq, tk, tv, layout, q_offset=q_offset, return_lse=True)
    want = reference(q, k, v, dout, layout, 1 / math.sqrt(d), q_offset or 0)
    np.testing.assert_allclose(out.detach().numpy(), want[0], rtol=tol, atol=tol)
    np.testing.assert_array_equal(np.isinf(lse.numpy()), np.isinf(want[1]))
    np.testing.assert_allclose(lse.numpy(), want[1], rtol=tol, atol=tol)
    if q_offset is None:
        (out * ndl.tensor(dout.astype(dtype))).sum().backward()
        for t, g in zip((tq, tk, tv), want[2:]):
            assert not np.isnan(t.grad.numpy()).any()
            np.testing.assert_allclose(t.grad.numpy(), g, rtol=4 * tol, atol=4 * tol)
    return out


# --- pattern definitions -------------------------------------------------------------------------

DEFINITIONS = {
    "dense": (lambda n, c: BlockSparseLayout.dense(n * 16, 16, causal=c),
              lambda qb, kb: np.ones_like(qb, bool)),
    "local": (lambda n, c: BlockSparseLayout.local(n * 16, 16, window=2, causal=c),
              lambda qb, kb: abs(qb - kb) <= 2),
    "global": (lambda n, c: BlockSparseLayout.global_(n * 16, 16, global_blocks=2, causal=c),
               lambda qb, kb: (qb < 2) | (kb < 2) | (qb == kb)),
    "strided": (lambda n, c: BlockSparseLayout.strided(n * 16, 16, stride=3, causal=c),
                lambda qb, kb: abs(qb - kb) % 3 == 0),
    # mixed's defaults: window 3, 1 global block, stride 4.
    "mixed": (lambda n, c: BlockSparseLayout.mixed(n * 16, 16, causal=c),
              lambda qb, kb: (abs(qb - kb) <= 3) | (qb < 1) | (kb < 1) | (abs(qb - kb) % 4 == 0)),
    # The default until issue #9, still there when asked for.
    "mixed(window=1)": (lambda n, c: BlockSparseLayout.mixed(n * 16, 16, window=1, global_blocks=1,
                                                              stride=4, causal=c),
                        lambda qb, kb: (abs(qb - kb) <= 1) | (qb < 1) | (kb < 1)
                        | (abs(qb - kb) % 4 == 0)),
}


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@pytest.mark.parametrize("causal", [False, True])
def test_pattern_definitions(name, causal):
    make, keep = DEFINITIONS[name]
    n = 11
    qb, kb = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    want = keep(qb, kb)
    layout = make(n, causal)
    if causal:  # everything above the diagonal trimmed
        want = want & (kb <= qb)
    np.testing.assert_array_equal(layout.to_block_mask(), want)
    assert layout.num_blocks == want.sum()
    dense = (kb <= qb).sum() if causal else n * n
    assert layout.density() == pytest.approx(want.sum() / dense)


def test_random_layout():
    a = BlockSparseLayout.random(2048, 64, blocks_per_row=3, seed=1)
    mask = a.to_block_mask()
    assert mask.diagonal().all() and not np.triu(mask, 1).any()
    np.testing.assert_array_equal(mask.sum(axis=1), 1 + np.minimum(3, np.arange(32)))
    np.testing.assert_array_equal(mask, BlockSparseLayout.random(2048, 64, 3, 1).to_block_mask())
    assert (mask != BlockSparseLayout.random(2048, 64, 3, 2).to_block_mask()).any()
    heads = BlockSparseLayout.random(512, 64, 2, seed=0, num_heads=4)
    assert heads.num_heads == 4 and heads.to_block_mask().shape == (4, 8, 8)


def test_densities_at_2048():
    # 32 x 32 blocks of 64; 528 lie in the causal lower triangle.
    assert BlockSparseLayout.dense(2048).density() == 1.0
    assert BlockSparseLayout.local(2048).density() == pytest.approx(63 / 528)
    assert BlockSparseLayout.local(2048, causal=False).density() == pytest.approx(94 / 1024)
    assert BlockSparseLayout.global_(2048).density() == pytest.approx(63 / 528)
    assert BlockSparseLayout.strided(2048).num_blocks == sum(q // 4 + 1 for q in range(32))
    # mixed: local(3) | global(1) | strided(4), counted from its own mask.
    qb, kb = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    keep = (abs(qb - kb) <= 3) | (qb < 1) | (kb < 1) | (abs(qb - kb) % 4 == 0)
    for causal, mask, dense in [(True, keep & (kb <= qb), 528), (False, keep, 1024)]:
        layout = BlockSparseLayout.mixed(2048, causal=causal)
        np.testing.assert_array_equal(layout.to_block_mask(), mask)
        assert layout.num_blocks == mask.sum()
        assert layout.density() == pytest.approx(mask.sum() / dense)
    assert (keep & (kb <= qb)).sum() == 255  # the figure docs/block_sparse.md quotes


def test_csr_round_trip_and_properties():
    layout = BlockSparseLayout.mixed(1000, 64)
    assert (layout.block_size, layout.seq_len, layout.num_q_blocks) == (64, 1000, 16)
    again = BlockSparseLayout.from_csr(layout.row_ptr, layout.col_idx, 64, 1000)
    np.testing.assert_array_equal(again.to_block_mask(), layout.to_block_mask())
    assert "mixed" in repr(layout)
    # A causal user mask loses its blocks above the diagonal.
    trimmed = BlockSparseLayout.from_block_mask(np.ones((4, 4), bool), 16, 64, causal=True)
    np.testing.assert_array_equal(trimmed.to_block_mask(), np.tril(np.ones((4, 4), bool)))


@pytest.mark.parametrize("args, message", [
    (([0, 1], [0]), "row_ptr of length 3"),
    (([0, 2, 3], [1, 0, 1]), "strictly increasing col_idx"),
    (([0, 2, 3], [0, 0, 1]), "strictly increasing col_idx"),
    (([0, 1, 2], [0, 2]), r"col_idx in \[0, 2\)"),
    (([0, 2, 1], [0, 1]), "non-decreasing row_ptr"),
])
def test_invalid_csr(args, message):
    with pytest.raises(ValueError, match=message):
        BlockSparseLayout.from_csr(*args, block_size=32, seq_len=64, causal=False)


def test_invalid_layouts():
    with pytest.raises(ValueError, match=r"\{16, 32, 64, 128\}, got 48"):
        BlockSparseLayout.local(128, 48)
    with pytest.raises(ValueError, match=r"shape \(4, 4\).*got \(2, 2\)"):
        BlockSparseLayout.from_block_mask(np.ones((2, 2), bool), 32, 100)
    with pytest.raises(ValueError, match="1 or 2 heads"):
        x = ndl.tensor(np.zeros((1, 2, 64, 8)))
        block_sparse_attention(x, x, x, BlockSparseLayout.random(64, 32, 1, num_heads=3))
    with pytest.raises(ValueError, match="covers 64 query"):
        x = ndl.tensor(np.zeros((1, 1, 96, 8)))
        block_sparse_attention(x, x, x, BlockSparseLayout.local(64, 32))


# --- the op against the reference ----------------------------------------------------------------

PATTERNS = {
    "dense": lambda L, b, c: BlockSparseLayout.dense(L, b, causal=c),
    "local": lambda L, b, c: BlockSparseLayout.local(L, b, window=1, causal=c),
    "global": lambda L, b, c: BlockSparseLayout.global_(L, b, global_blocks=1, causal=c),
    "strided": lambda L, b, c: BlockSparseLayout.strided(L, b, stride=3, causal=c),
    "mixed": lambda L, b, c: BlockSparseLayout.mixed(L, b, causal=c),
    "random": lambda L, b, c: BlockSparseLayout.random(L, b, blocks_per_row=2, seed=3, causal=c),
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block", [16, 32])
def test_patterns_match_reference(name, causal, block):
    # 100 is a multiple of neither block size: the last block is partial.
    run(PATTERNS[name](100, block, causal), 2, 2, 100, 100, 16, seed=block)


@pytest.mark.parametrize("block", [16, 32, 64, 128])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_block_sizes_and_dtypes(block, dtype, tol):
    run(BlockSparseLayout.mixed(300, block, stride=3), 1, 2, 300, 300, 32, dtype, seed=block,
        tol=tol)


def test_empty_rows_give_zeros_and_no_nan():
    mask = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 0]], bool)  # query block 1 sees nothing
    layout = BlockSparseLayout.from_block_mask(mask, 16, 40, causal=False)
    out = run(layout, 1, 2, 40, 40, 8).detach().numpy()
    assert (out[:, :, 16:32] == 0).all()


def test_per_head_layouts():
    run(BlockSparseLayout.random(130, 32, 1, seed=5, num_heads=3), 2, 3, 130, 130, 16)
    per_head = BlockSparseLayout.per_head([BlockSparseLayout.local(130, 32, 0, causal=False),
                                           BlockSparseLayout.global_(130, 32, causal=False),
                                           BlockSparseLayout.strided(130, 32, 2, causal=False)])
    run(per_head, 1, 3, 130, 130, 16)
    masks = np.random.default_rng(0).random((3, 5, 5)) < 0.4
    run(BlockSparseLayout.from_block_mask(masks, 32, 130, causal=True), 1, 3, 130, 130, 16)


def test_cross_attention_lengths():
    mask = np.random.default_rng(1).random((5, 13)) < 0.6
    run(BlockSparseLayout.from_block_mask(mask, 16, 70, causal=False, k_len=200),
        1, 2, 70, 200, 16)


def test_decoding_matches_last_row():
    layout = BlockSparseLayout.mixed(173, 32, stride=3)
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, 2, 173, 16)) for _ in range(3))
    full = block_sparse_attention(*(ndl.tensor(x) for x in (q, k, v)), layout).numpy()
    # Default q_offset for a causal layout: the queries are the last positions.
    last = block_sparse_attention(ndl.tensor(q[:, :, -1:]), ndl.tensor(k), ndl.tensor(v),
                                  layout).numpy()
    np.testing.assert_allclose(last, full[:, :, -1:], rtol=1e-12, atol=1e-12)
    # Explicit q_offset against a KV cache shorter than the layout.
    run(layout, 1, 2, 1, 100, 16, q_offset=99)


def test_default_scale_and_double_backward():
    layout = BlockSparseLayout.local(64, 16)
    rng = np.random.default_rng(2)
    q, k, v = (ndl.tensor(rng.standard_normal((1, 1, 64, 8)), requires_grad=True)
               for _ in range(3))
    out = block_sparse_attention(q, k, v, layout)
    halved = block_sparse_attention(q, k, v, layout, scale=0.5 / math.sqrt(8))
    assert not np.allclose(out.detach().numpy(), halved.detach().numpy())
    w = ndl.tensor(rng.standard_normal((1, 1, 64, 8)), requires_grad=True)
    (out * w).sum().backward(create_graph=True)
    with pytest.raises(RuntimeError, match="double backward not supported"):
        q.grad.sum().backward()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_views_of_a_fused_projection(dtype, tol):
    """q, k, v as the (B, H, L, D) views of one (B, L, H, 3, D) projection are read where they lie,
    the output comes back as the (B, H, L, D) view of (B, L, H, D) memory, and the gradient
    w.r.t. the projection holds the three gradients side by side. Views the kernels cannot read
    in 16-byte rows (here one element into their buffer) give the same results through a compact
    copy."""
    B, H, L, D = 2, 3, 70, 16
    layout = BlockSparseLayout.mixed(L, 16, stride=3)
    rng = np.random.default_rng(11)
    qkv = rng.standard_normal((B, L, H, 3, D)).astype(dtype)
    w = rng.standard_normal((B, L, H * D)).astype(dtype)
    q, k, v = (np.ascontiguousarray(qkv[:, :, :, i].transpose(0, 2, 1, 3)).astype(np.float64)
               for i in range(3))
    dout = w.reshape(B, L, H, D).transpose(0, 2, 1, 3).astype(np.float64)
    want = reference(q, k, v, dout, layout, 1 / math.sqrt(D))

    def check(t, views):
        out = block_sparse_attention(*views, layout)
        assert out.shape == (B, H, L, D)
        merged = out.permute(0, 2, 1, 3)
        assert merged.is_contiguous()  # (B, L, H, D) memory: merging the heads is free
        np.testing.assert_allclose(out.detach().numpy(), want[0], rtol=tol, atol=tol)
        # The gradient reaches the kernel as the strided (B, H, L, D) view of a (B, L, E) array.
        (merged.reshape(B, L, H * D) * ndl.tensor(w)).sum().backward()
        return t.grad.numpy()

    t = ndl.tensor(qkv, requires_grad=True)
    grad = check(t, [t[:, :, :, i].permute(0, 2, 1, 3) for i in range(3)])
    for i in range(3):
        np.testing.assert_allclose(grad[:, :, :, i].transpose(0, 2, 1, 3), want[2 + i],
                                   rtol=4 * tol, atol=4 * tol)

    # One element into its buffer: rows no longer 16-byte aligned, so the op copies them.
    padded = np.concatenate([np.zeros((B, L, H, 3, 1), dtype), qkv], axis=-1)
    t = ndl.tensor(padded, requires_grad=True)
    grad = check(t, [t[:, :, :, i, 1:].permute(0, 2, 1, 3) for i in range(3)])
    assert (grad[..., 0] == 0).all()
    for i in range(3):
        np.testing.assert_allclose(grad[:, :, :, i, 1:].transpose(0, 2, 1, 3), want[2 + i],
                                   rtol=4 * tol, atol=4 * tol)
