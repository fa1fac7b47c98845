"""Differentiable functions (torch.nn.functional names): the C++ ops of needle._C.functional plus
the compositions of needle._C.nn (silu, rms_norm, mse_loss, attention, apply_rotary)."""
from .._C import functional as _F
from .._C import nn as _nn
from .._C.attention import block_sparse_attention

linear = _F.linear
embedding = _F.embedding
cross_entropy = _F.cross_entropy
linear_cross_entropy = _F.linear_cross_entropy
layer_norm = _F.layer_norm
rotary_embedding = _F.rotary_embedding
gelu = _F.gelu
dropout = _F.dropout
softmax = _F.softmax
log_softmax = _F.log_softmax
pad = _F.pad

relu = _nn.relu
silu = _nn.silu
rms_norm = _nn.rms_norm
mse_loss = _nn.mse_loss
scaled_dot_product_attention = _nn.scaled_dot_product_attention
apply_rotary = _nn.apply_rotary

__all__ = [name for name in dir() if not name.startswith("_")]
