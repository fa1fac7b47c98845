"""save / load of dicts of tensors as safetensors files (written atomically: temporary file,
fsync, rename). Model and optimizer state dicts are both flat dicts of tensors."""
from ._C import nn as _nn


def save(state_dict, path, metadata=None):
    """Writes {name: tensor} to `path`; metadata is an optional {str: str}."""
    _nn.save(dict(state_dict), str(path), metadata)


def load(path, device=None):
    """Reads a safetensors file into {name: tensor} (F16 -> float32, U8 -> int32)."""
    return _nn.load(str(path), device)


def load_metadata(path):
    return _nn.load_metadata(str(path))
