"""Grad mode, as in PyTorch: ``with ndl.no_grad(): ...`` or ``@ndl.no_grad()`` records no graph."""
import functools

from . import _C

is_grad_enabled = _C.is_grad_enabled


class _GradMode:
    """Context manager and decorator that sets grad mode and restores the previous one."""

    def __init__(self, enabled):
        self._enabled = bool(enabled)
        self._prev = []

    def __enter__(self):
        self._prev.append(_C.is_grad_enabled())
        _C.set_grad_enabled(self._enabled)
        return self

    def __exit__(self, *exc):
        _C.set_grad_enabled(self._prev.pop())
        return False

    def __call__(self, fn):
        enabled = self._enabled

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _GradMode(enabled):
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradMode):
    def __init__(self):
        super().__init__(False)


class enable_grad(_GradMode):
    def __init__(self):
        super().__init__(True)


class set_grad_enabled(_GradMode):
    """Takes effect at once (``ndl.set_grad_enabled(False)``) and, used with ``with``, restores
    the mode that was in force before the call."""

    def __init__(self, mode):
        super().__init__(mode)
        self._before = _C.is_grad_enabled()
        _C.set_grad_enabled(self._enabled)

    def __enter__(self):
        self._prev.append(self._before)
        return self
