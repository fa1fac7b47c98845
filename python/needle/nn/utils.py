"""Gradient utilities."""
from .._C import nn as _nn


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scales gradients in place so their global norm is at most max_norm; returns the norm
    before clipping, as torch does: a 0-d float64 tensor on the gradients' device. Nothing waits
    for the GPU until it is read (``.item()``, ``float()``), so a training loop can queue the
    optimizer step first."""
    if hasattr(parameters, "grad"):
        parameters = [parameters]
    return _nn.clip_grad_norm_(list(parameters), float(max_norm), float(norm_type))
