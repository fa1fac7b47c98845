"""Automatic mixed precision, as ``torch.autocast``::

    with ndl.autocast("cuda"):          # dtype bfloat16, the only one needle computes in
        loss = F.cross_entropy(model(x), y)
    loss.backward()                     # outside the region, as PyTorch recommends

Inside a region enabled for a device type, matmul, linear, scaled_dot_product_attention and
block_sparse_attention compute in bfloat16 (float32 inputs are cast, float64 ones left alone);
layer_norm, softmax, log_softmax, logsumexp and cross_entropy compute in float32; every other op
computes in its inputs' promoted dtype. The casts are differentiable, so float32 parameters keep
float32 gradients (no loss scaling is needed: bfloat16 has float32's exponent range). Regions are
per thread and per device type; backward() always runs with them off. Also a decorator:
``@ndl.autocast("cuda")``.
"""
import functools

from . import _C
from ._C import bfloat16


def is_autocast_enabled(device_type="cuda"):
    """Whether a region is on for device_type ('cpu' or 'cuda') in this thread."""
    return _C.get_autocast_state(device_type)[0]


def get_autocast_dtype(device_type="cuda"):
    """The dtype a region for device_type computes lower-precision ops in."""
    return _C.get_autocast_state(device_type)[1]


class autocast:
    """Context manager and decorator: ``autocast(device_type, dtype=None, enabled=True)``.

    device_type is 'cpu' or 'cuda' (a device such as 'cuda:0' names its type); dtype defaults to
    bfloat16 and must be it. ``enabled=False`` turns a region off inside an enclosing one. The
    state in force before ``__enter__`` is restored by ``__exit__``, so regions nest.
    """

    def __init__(self, device_type, dtype=None, enabled=True):
        if not isinstance(device_type, str):
            raise TypeError(f"autocast: expected device_type as a str ('cpu' or 'cuda'), got "
                            f"{type(device_type).__name__}")
        self.device_type = device_type.split(":")[0]
        self.fast_dtype = bfloat16 if dtype is None else dtype
        if not isinstance(enabled, bool):
            raise TypeError(f"autocast: expected enabled as a bool, got {enabled!r}")
        self._enabled = enabled
        # Checks device_type and dtype now, not at __enter__ (set_autocast_state raises).
        before = _C.get_autocast_state(self.device_type)
        _C.set_autocast_state(self.device_type, before[0], self.fast_dtype)
        _C.set_autocast_state(self.device_type, *before)
        self._prev = []

    def __repr__(self):
        return (f"autocast(device_type={self.device_type!r}, dtype={self.fast_dtype}, "
                f"enabled={self._enabled})")

    def __enter__(self):
        self._prev.append(_C.get_autocast_state(self.device_type))
        _C.set_autocast_state(self.device_type, self._enabled, self.fast_dtype)
        return self

    def __exit__(self, *exc):
        _C.set_autocast_state(self.device_type, *self._prev.pop())
        return False

    def __call__(self, fn):
        device_type, dtype, enabled = self.device_type, self.fast_dtype, self._enabled

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with autocast(device_type, dtype=dtype, enabled=enabled):
                return fn(*args, **kwargs)

        return wrapper
