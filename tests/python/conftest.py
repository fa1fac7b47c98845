"""Makes `import needle` work from a source checkout: the extension is built into python/needle/,
so python/ goes on sys.path unless the package is already importable (installed, PYTHONPATH)."""
import importlib.util
import os
import sys

_PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))

if importlib.util.find_spec("needle") is None and _PYTHON_DIR not in sys.path:
    sys.path.insert(0, _PYTHON_DIR)
