"""needle.optim: SGD, Adam, AdamW (C++ kernels on the parameters' device) with parameter
groups and flat state dicts that save as safetensors; lr_scheduler holds the schedules."""
from .._C.optim import SGD, Adam, AdamW, Optimizer  # noqa: F401
from . import lr_scheduler  # noqa: F401
