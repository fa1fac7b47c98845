"""Every public callable of needle, needle.nn.functional, Tensor and NDArray, called with wrong and
edge-case arguments (0-d, empty, integer, bool, strided, bfloat16 and requires-grad arrays, None,
strings, negative numbers, NaN, sequences), returns or raises a Python exception of the kinds the
API documents. It never takes the interpreter down, and never raises anything else (an
AttributeError or SystemError from inside a binding is a bug too).

Each family runs in a child process, so a crash fails its test, naming the last group it called,
instead of ending the test run. The calls are deterministic: a failure reproduces."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import needle as ndl

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"

CHILD = r'''
import itertools, math, sys
import needle as nd
import needle.nn.functional as F

# "Tensor-cuda": the family with its arrays on the GPU (and one CPU array, for mixed devices).
family, _, on = sys.argv[1].partition("-")
EXPECTED = (TypeError, ValueError, IndexError, RuntimeError, NotImplementedError, OverflowError,
            ZeroDivisionError, MemoryError)


def arrays(as_ndarray):
    made = {
        "0d": nd.tensor(3.0), "int0d": nd.tensor(2), "v3": nd.randn(3), "m23": nd.randn(2, 3),
        "empty03": nd.zeros(0, 3), "int64": nd.tensor([0, 1, 2]), "bool": nd.tensor([True, False]),
        "strided": nd.randn(3, 4)[:, ::2], "bf16": nd.randn(2, 3).to(dtype=nd.bfloat16),
        "grad": nd.randn(2, 3, requires_grad=True), "grad0d": nd.tensor(2.0, requires_grad=True),
    }
    if on == "cuda":
        made = {k: v.detach().to("cuda").requires_grad_(v.requires_grad) for k, v in made.items()}
        made["strided"] = nd.randn(3, 4).to("cuda")[:, ::2]
        made["cpu"] = nd.randn(2, 3)
    return {k: v.detach().array if as_ndarray else v for k, v in made.items()}


SCALARS = [None, "x", -1, 0, 2, 0.5, math.nan, True, (2, -3), [1, 2], [], nd.int32]


def use(result):
    for r in result if isinstance(result, (tuple, list)) else [result]:
        if isinstance(r, (nd.Tensor, nd.NDArray)):
            r.numpy()
            if isinstance(r, nd.Tensor) and r.requires_grad:
                r.sum().backward()


calls = 0


def call(fn, args):
    global calls
    calls += 1
    try:
        use(fn(*args))
    except EXPECTED:
        pass
    except Exception as e:  # anything else is reported with its arguments
        print(f"UNEXPECTED {type(e).__name__}: {str(e)[:200]} from {fn!r} with {args!r}",
              flush=True)


def arg_lists(values, most):
    return [c for n in range(most + 1) for c in itertools.product(values, repeat=n)]


OPERATORS = {"__add__", "__sub__", "__mul__", "__truediv__", "__matmul__", "__pow__", "__rsub__",
             "__rtruediv__", "__rpow__", "__rmatmul__", "__getitem__", "__setitem__", "__eq__",
             "__lt__", "__and__", "__or__", "__neg__", "__invert__", "__bool__", "__float__",
             "__int__", "__len__"}
# Backward, hooks and the in-place fills have tests of their own; cuda() needs a GPU.
SKIP = {"backward", "register_hook", "numpy", "tolist", "item", "zero_", "normal_", "uniform_",
        "fill_", "copy_", "cuda"}


def callables(obj):
    return sorted(n for n in dir(obj)
                  if (not n.startswith("_") or n in OPERATORS) and n not in SKIP
                  and callable(getattr(obj, n)) and not isinstance(getattr(obj, n), type))


if family in ("Tensor", "NDArray"):
    as_ndarray = family == "NDArray"
    values = SCALARS + list(arrays(as_ndarray).values())
    for name in callables(nd.NDArray if as_ndarray else nd.Tensor):
        for key in arrays(as_ndarray):
            print("GROUP", family, name, "of", key, flush=True)
            receivers = arrays(as_ndarray)  # fresh, as __setitem__ and requires_grad_ change them
            for args in arg_lists(values, 2):
                call(getattr(receivers[key], name), args)
elif family == "nn":
    # Constructors (module classes and BlockSparseLayout's factories) with small sizes, then
    # each module built is called on every array; a layout is used by block_sparse_attention.
    import needle.nn as nn
    sizes = [None, "x", "mixed", -1, 0, 2, 16, 64, 0.5, math.nan, True, (2, 2), [1, 2]]
    makers = [getattr(nn, n) for n in dir(nn) if isinstance(getattr(nn, n), type)
              and n not in ("Module", "Parameter", "BlockSparseLayout")]
    makers += [getattr(nn.BlockSparseLayout, n) for n in ("local", "global_", "mixed", "random",
                                                          "strided", "dense", "from_block_mask",
                                                          "from_csr", "per_head")]
    inputs = list(arrays(False).values()) + [nd.randn(1, 2, 64, 16), nd.randn(2, 16, 16)]
    for make in makers:
        print("GROUP", family, make.__qualname__ if hasattr(make, "__qualname__") else make,
              flush=True)
        for args in arg_lists(sizes, 3):
            try:
                built = make(*args)
            except EXPECTED:
                continue
            except Exception as e:
                print(f"UNEXPECTED {type(e).__name__}: {str(e)[:200]} from {make!r} with {args!r}",
                      flush=True)
                continue
            if isinstance(built, nn.BlockSparseLayout):
                q = nd.randn(1, built.num_heads, built.q_len, 16, requires_grad=True)
                kv = nd.randn(1, built.num_heads, built.k_len, 16)
                call(F.block_sparse_attention, (q, kv, kv, built))
                for x in inputs:
                    call(F.block_sparse_attention, (x, x, x, built))
            elif callable(built):
                for x in inputs:
                    call(built, (x,))
elif family == "self":
    # Every method and property accessor of the bound classes, called unbound with None as self
    # (and a few more arguments): pybind11 would let None through as a null self where a method
    # takes its self by pointer (bindings.h, self_ref).
    import inspect
    import needle.data, needle.nn, needle.optim, needle.optim.lr_scheduler
    classes = {c for m in (nd, needle.nn, needle.optim, needle.optim.lr_scheduler, needle.data)
               for c in vars(m).values()
               if isinstance(c, type) and c.__module__.startswith("needle._C")}
    for cls in sorted(classes, key=lambda c: c.__qualname__):
        for name in sorted(vars(cls)):
            attr = inspect.getattr_static(cls, name)
            if isinstance(attr, property):
                accessors = [f for f in (attr.fget, attr.fset) if f is not None]
            elif type(attr).__name__ == "instancemethod":  # a pybind11 method
                accessors = [getattr(cls, name)]
            else:
                continue
            print("GROUP", family, cls.__qualname__, name, flush=True)
            for f in accessors:
                for args in ((None,), (None, None), (None, 1), (None, None, None)):
                    call(f, args)
elif family == "huge":
    # Sizes whose element or byte counts overflow int64, or that no machine holds, as every
    # argument of every function, method and module constructor: each raises (a shape that
    # overflowed wrapped to a small buffer, and writing it crashed). The child's data segment is
    # capped, so a size that is merely too big fails to allocate quickly instead of swapping.
    import resource
    import needle.nn as nn
    resource.setrlimit(resource.RLIMIT_DATA, (8 << 30, 8 << 30))
    huge = [2**62, 2**63 - 1, -2**63, 2**61, 2**32, (2**32, 2**32), [2**40, 2**40, 0]]
    values = huge + [2, nd.randn(2, 3)]
    targets = [(m, n) for m in (nd, F) for n in callables(m)
               if n not in ("autocast", "no_grad", "enable_grad", "manual_seed")]
    targets += [(nd.randn(2, 3), n) for n in callables(nd.Tensor)]
    targets += [(nd.randn(2, 3).array, n) for n in callables(nd.NDArray)]
    targets += [(nn, n) for n in dir(nn) if isinstance(getattr(nn, n), type)
                and n not in ("Module", "Parameter", "BlockSparseLayout")]
    targets += [(nn.BlockSparseLayout, n) for n in ("local", "global_", "mixed", "random",
                                                    "strided", "dense", "per_head")]
    for owner, name in targets:
        print("GROUP", family, name, flush=True)
        for args in arg_lists(values, 2):
            if any(not isinstance(a, nd.Tensor) and a in huge for a in args):
                call(getattr(owner, name), args)
else:
    module = nd if family == "needle" else F
    values = SCALARS + list(arrays(False).values())
    for name in callables(module):
        if family == "needle" and name in ("autocast", "no_grad", "enable_grad"):
            continue  # context managers: nothing runs until entered
        print("GROUP", family, name, flush=True)
        for args in arg_lists(values, 3 if family == "functional" else 2):
            call(getattr(module, name), args)
print("CALLS", calls, flush=True)
'''


ON_GPU = pytest.mark.skipif(not ndl.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("family", [
    "needle", "functional", "Tensor", "NDArray", "nn", "self", "huge",
    *(pytest.param(f"{f}-cuda", marks=ON_GPU) for f in ("needle", "functional", "Tensor", "NDArray"))])
def test_bad_arguments_raise_python_errors(family, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    # cwd is a temporary folder: save() given a string path writes there.
    proc = subprocess.run([sys.executable, "-c", CHILD, family], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    lines = proc.stdout.splitlines()
    groups = [line for line in lines if line.startswith("GROUP")]
    unexpected = [line for line in lines if line.startswith("UNEXPECTED")]
    assert proc.returncode == 0, (
        f"the child ended with status {proc.returncode} in "
        f"{groups[-1] if groups else 'its setup'}:\n{proc.stderr[-3000:]}")
    assert not unexpected, "\n".join(unexpected[:20])
    assert lines[-1].startswith("CALLS "), proc.stdout[-500:]
    assert len(groups) > 10 and int(lines[-1].split()[1]) > 500  # the families were found
