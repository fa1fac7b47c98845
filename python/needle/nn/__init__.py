"""needle.nn: modules (subclass Module in Python; assigning a Parameter or Module to an attribute
registers it), layers, losses and attention, implemented in C++ (src/nn)."""
from .._C.nn import (
    CrossEntropyLoss,
    Dropout,
    Embedding,
    GELU,
    LayerNorm,
    Linear,
    Module,
    MSELoss,
    MultiHeadAttention,
    Parameter,
    ReLU,
    Residual,
    RMSNorm,
    SiLU,
)
from .._C.attention import BlockSparseLayout
from .modules import ModuleList, Sequential
from . import functional, utils
from .. import init

__all__ = [name for name in dir() if not name.startswith("_")]
