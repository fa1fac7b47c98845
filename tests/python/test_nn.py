"""needle.nn from Python: a Python subclass registers parameters and submodules on assignment,
layers match NumPy float64 references, state dicts round-trip through safetensors."""
import numpy as np
import pytest

import needle as ndl
from needle import nn
from needle.serialization import load, save


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 5)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(5, 2, bias=False)
        self.scale = nn.Parameter(ndl._C.Tensor(np.ones(2, dtype=np.float32)))
        self.note = "plain attribute"

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x))) * self.scale


def test_python_subclass_registers_on_assignment():
    m = TinyMLP()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "fc1.weight", "fc1.bias", "fc2.weight"]
    assert m.num_parameters() == 2 + 15 + 5 + 10
    assert m.note == "plain attribute"
    assert "TinyMLP(" in repr(m) and "(fc1): Linear(in_features=3" in repr(m)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    w1, b1 = m.fc1.weight.detach().numpy(), m.fc1.bias.detach().numpy()
    w2 = m.fc2.weight.detach().numpy()
    expected = np.maximum(x @ w1.T + b1, 0) @ w2.T
    out = m(ndl._C.Tensor(x))
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    assert m.fc1.weight.grad is not None


def test_python_child_inside_cpp_sequential_keeps_its_forward():
    seq = nn.Sequential(TinyMLP(), nn.GELU())
    y = seq(ndl._C.Tensor(np.ones((1, 3), dtype=np.float32)))
    assert tuple(y.shape) == (1, 2)
    assert len(seq) == 2


def test_state_dict_round_trip_and_strict_errors(tmp_path):
    a, b = TinyMLP(), TinyMLP()
    path = tmp_path / "m.safetensors"
    save(a.state_dict(), path)
    b.load_state_dict(load(path))
    x = ndl._C.Tensor(np.ones((2, 3), dtype=np.float32))
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())
    state = a.state_dict()
    del state["fc1.bias"]
    with pytest.raises(ValueError, match="fc1.bias"):
        b.load_state_dict(state)
    keys = b.load_state_dict(state, strict=False)
    assert keys.missing_keys == ["fc1.bias"]


def test_layer_norm_and_rms_norm_against_numpy():
    x = np.random.default_rng(1).standard_normal((3, 6))
    t = ndl._C.Tensor(x)
    ln = nn.LayerNorm(6).to(ndl.float64)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ln(t).detach().numpy(), (x - mu) / np.sqrt(var + 1e-5), rtol=1e-10)
    rms = nn.RMSNorm(6).to(ndl.float64)
    ref = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(rms(t).detach().numpy(), ref, rtol=1e-12)


def test_unknown_attention_pattern_is_rejected():
    with pytest.raises(ValueError, match="strided"):
        nn.MultiHeadAttention(8, 2, attention="banded")
