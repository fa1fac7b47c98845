"""The Tensor-level top of the API: ndl.tensor, creation functions that return autograd
Tensors (with requires_grad=), and module-level functions (ndl.exp, ndl.matmul, ndl.cat, ...)
that take Tensors and stay differentiable. Plain NDArrays keep working through the same names.
"""
from . import _C
from . import array_api as _nd

Tensor = _C.Tensor
NDArray = _C.NDArray


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf Tensor holding a copy of `data` (a Tensor, an NDArray, NumPy, lists, scalars)."""
    if isinstance(data, Tensor):
        data = data.array
    return Tensor(NDArray(data, dtype=dtype, device=device), requires_grad=requires_grad)


def _creator(nd_fn):
    def create(*args, dtype=None, device=None, requires_grad=False, **kwargs):
        return Tensor(nd_fn(*args, dtype=dtype, device=device, **kwargs), requires_grad=requires_grad)

    create.__name__ = nd_fn.__name__
    create.__doc__ = nd_fn.__doc__
    return create


def _like_creator(nd_fn):
    def create(input, *args, dtype=None, device=None, requires_grad=False, **kwargs):
        arr = input.array if isinstance(input, Tensor) else input
        return Tensor(nd_fn(arr, *args, dtype=dtype, device=device, **kwargs),
                      requires_grad=requires_grad)

    create.__name__ = nd_fn.__name__
    return create


zeros = _creator(_C.zeros)
ones = _creator(_C.ones)
empty = _creator(_C.empty)
full = _creator(_C.full)
arange = _creator(_C.arange)
eye = _creator(_C.eye)
rand = _creator(_C.rand)
randn = _creator(_C.randn)
zeros_like = _like_creator(_C.zeros_like)
ones_like = _like_creator(_C.ones_like)
empty_like = _like_creator(_C.empty_like)
full_like = _like_creator(_C.full_like)
rand_like = _like_creator(_C.rand_like)
randn_like = _like_creator(_C.randn_like)


def _method_or(name, nd_fn):
    """ndl.name(x, ...): the Tensor method for Tensors, the NDArray function otherwise."""

    def fn(input, *args, **kwargs):
        if isinstance(input, Tensor):
            return getattr(input, name)(*args, **kwargs)
        if args and isinstance(args[0], Tensor):  # ndl.maximum(2.0, t)
            return getattr(tensor(input, device=args[0].device, dtype=args[0].dtype), name)(
                *args, **kwargs)
        return nd_fn(input, *args, **kwargs)

    fn.__name__ = name
    fn.__doc__ = getattr(nd_fn, "__doc__", None)
    return fn


def _any_tensor(seq):
    return any(isinstance(t, Tensor) for t in seq)


def _as_tensors(seq):
    return [t if isinstance(t, Tensor) else Tensor(t if isinstance(t, NDArray) else NDArray(t))
            for t in seq]


def cat(tensors, dim=0):
    if _any_tensor(tensors):
        return _C.autograd.cat(_as_tensors(tensors), dim)
    return _nd.cat(tensors, dim)


concatenate = cat


def stack(tensors, dim=0):
    if _any_tensor(tensors):
        return _C.autograd.stack(_as_tensors(tensors), dim)
    return _nd.stack(tensors, dim)


def matmul(input, other):
    if isinstance(input, Tensor) or isinstance(other, Tensor):
        a, b = _as_tensors([input, other])
        return _C.autograd.matmul(a, b)
    return _nd.matmul(input, other)


def where(condition, input, other):
    if isinstance(condition, Tensor) or isinstance(input, Tensor) or isinstance(other, Tensor):
        cond = condition if isinstance(condition, Tensor) else Tensor(condition)
        return _C.autograd.where(cond, input, other)
    return _nd.where(condition, input, other)


def _exports():
    """Every NDArray function that is also a Tensor method becomes a Tensor-aware ndl.name."""
    skip = {"cat", "concatenate", "stack", "matmul", "where"}
    names = {}
    for name in dir(Tensor):
        if name.startswith("_") or name in skip:
            continue
        nd_fn = getattr(_nd, name, None)
        if callable(nd_fn) and not isinstance(nd_fn, type):
            names[name] = _method_or(name, nd_fn)
    return names


globals().update(_exports())
