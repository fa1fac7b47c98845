"""needle: a small, readable deep-learning framework with a C++ core (see README.md).

    import needle as ndl
    x = ndl.randn(2, 3)
    y = (x @ x.T).softmax(dim=-1)
"""
from . import _C
from ._C import (
    NDArray,
    OutOfMemoryError,
    bfloat16,
    bool,
    cpu,
    device,
    dtype,
    float32,
    float64,
    int32,
    int64,
    manual_seed,
    memory_stats,
    promote_types,
)
from .array_api import *  # noqa: F401,F403  (creation, elementwise ops, reductions, joining)
from . import array_api, cuda

__all__ = [name for name in dir() if not name.startswith("_")]
