"""MultiHeadAttention with block-sparse patterns: the layer's block-sparse path agrees with its
dense path wherever the layout keeps every causal block, differs where it drops blocks, works
with rotary embeddings, and trains (gradients reach every parameter)."""
import numpy as np
import pytest

import needle as ndl

nn = ndl.nn


def pair(attention, rotary_dim=0, block_size=16):
    ndl.manual_seed(0)
    dense = nn.MultiHeadAttention(32, 4, rotary_dim=rotary_dim)
    sparse = nn.MultiHeadAttention(32, 4, rotary_dim=rotary_dim, attention=attention,
                                   block_size=block_size)
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


@pytest.mark.parametrize("rotary_dim", [0, 4])
def test_dense_layout_matches_dense_attention(rotary_dim):
    layout = nn.BlockSparseLayout.dense(48, 16, True)
    dense, sparse = pair(layout, rotary_dim)
    x = ndl.randn(2, 48, 32)
    np.testing.assert_allclose(sparse(x).detach().numpy(), dense(x).detach().numpy(), atol=2e-5)


@pytest.mark.parametrize("pattern", ["local", "global", "strided", "mixed", "random"])
def test_patterns_equal_dense_inside_one_block_and_differ_beyond(pattern):
    dense, sparse = pair(pattern, rotary_dim=4)
    short = ndl.randn(1, 16, 32)  # one block: every pattern keeps the diagonal block
    np.testing.assert_allclose(sparse(short).detach().numpy(), dense(short).detach().numpy(),
                               atol=2e-5)
    if pattern in ("local", "mixed"):
        long = ndl.randn(1, 128, 32)  # 8 blocks: far-away blocks are dropped
        diff = np.abs(sparse(long).detach().numpy() - dense(long).detach().numpy()).max()
        assert diff > 1e-3


def test_named_mixed_is_window_3_global_1_stride_4():
    # 160 positions in blocks of 16: 10 blocks, so windows 1 and 3 keep different blocks.
    n = 10
    qb, kb = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x = ndl.randn(1, n * 16, 32)
    outputs = {}
    for window in (3, 1):
        keep = (abs(qb - kb) <= window) | (qb < 1) | (kb < 1) | (abs(qb - kb) % 4 == 0)
        _, layer = pair(nn.BlockSparseLayout.from_block_mask(keep, 16, n * 16, causal=True),
                        rotary_dim=4)
        outputs[window] = layer(x).detach().numpy()
    _, named = pair("mixed", rotary_dim=4)
    got = named(x).detach().numpy()
    np.testing.assert_allclose(got, outputs[3], atol=1e-6)
    assert np.abs(got - outputs[1]).max() > 1e-3


def test_block_sparse_layer_backward_reaches_every_parameter():
    _, sparse = pair("mixed", rotary_dim=4)
    x = ndl.randn(2, 64, 32, requires_grad=True)
    sparse(x).sum().backward()
    assert x.grad is not None
    for name, p in sparse.named_parameters():
        assert p.grad is not None, name
        assert np.isfinite(p.grad.numpy()).all(), name


def test_bad_attention_arguments():
    with pytest.raises(ValueError, match="attention"):
        nn.MultiHeadAttention(32, 4, attention="banded")
    with pytest.raises(ValueError, match="block_size"):
        nn.MultiHeadAttention(32, 4, attention="local", block_size=24)
    layout = nn.BlockSparseLayout.local(32, 16, 1, True)
    layer = nn.MultiHeadAttention(32, 4, attention=layout)
    with pytest.raises(ValueError, match="covers 32 positions"):
        layer(ndl.randn(1, 48, 32))
