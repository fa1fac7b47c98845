"""needle: a small, readable deep-learning framework with a C++ core (see README.md).

    import needle as ndl
    x = ndl.randn(2, 3, requires_grad=True)
    y = (x @ x.T).softmax(dim=-1).sum()
    y.backward()

Top-level functions create and take autograd Tensors (PyTorch's names); `needle.array_api`
holds the same functions on plain NDArrays.
"""
from . import _C
from ._C import (
    NDArray,
    OutOfMemoryError,
    Tensor,
    bfloat16,
    bool,
    cpu,
    device,
    dtype,
    float32,
    float64,
    get_float32_matmul_precision,
    int32,
    int64,
    manual_seed,
    memory_stats,
    promote_types,
    set_float32_matmul_precision,
)
from .tensor import *  # noqa: F401,F403  (tensor(), creation, Tensor-aware functions)
from .tensor import cat, concatenate, matmul, stack, tensor, where
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .amp import autocast, get_autocast_dtype, is_autocast_enabled
from . import amp, array_api, cuda, data, init, nn, optim
from .serialization import load, save

__all__ = [name for name in dir() if not name.startswith("_")]
