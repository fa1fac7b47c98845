"""Shared test set-up.

- Makes `import needle` work from a source checkout: the extension is built into python/needle/,
  so python/ goes on sys.path unless the package is already importable (installed, PYTHONPATH).
- Gives each test its own random stream. A module that draws its inputs from a module-level
  numpy Generator named `RNG` or `rng` gets that name re-bound, before each test, to a Generator
  seeded from the test's name (parameters included). A test's inputs then do not depend on which
  tests ran before it, so adding, removing, selecting (-k) or reordering tests never changes
  another test's draws, and a failure reproduces when its test is run alone.
"""
import importlib.util
import os
import sys
import zlib

import numpy as np
import pytest

_PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))

if importlib.util.find_spec("needle") is None and _PYTHON_DIR not in sys.path:
    sys.path.insert(0, _PYTHON_DIR)


@pytest.fixture(autouse=True)
def per_test_random_stream(request):
    """Re-binds the test module's `RNG` / `rng` Generator to one seeded by the test's name."""
    module = request.module
    seed = zlib.crc32(request.node.name.encode())
    for attr in ("RNG", "rng"):
        if isinstance(getattr(module, attr, None), np.random.Generator):
            setattr(module, attr, np.random.default_rng(seed))
