"""Hugging Face checkpoints for the apps/ models: reading model.safetensors (single or sharded)
into a model whose parameter names are Hugging Face's, and writing model.safetensors + config.json
that transformers' from_pretrained reads back.

Only safetensors is read: a pickled pytorch_model.bin can run arbitrary code when unpickled, so it
is refused with a message saying so. F16/BF16 weights become the model's float32; the buffers some
checkpoints carry (causal-mask tables, rotary inv_freq) are not parameters and are skipped.
"""
import json
from collections import namedtuple
from pathlib import Path

import numpy as np

import needle as ndl

from .files import atomic_write_json

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CONFIG = "config.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# Non-parameter buffers that older transformers versions saved alongside the weights.
_IGNORED_SUFFIXES = {
    "gpt_neox": (".attention.bias", ".attention.masked_bias", "rotary_emb.inv_freq"),
    "opt": (),
}

LoadResult = namedtuple("LoadResult", "missing_keys unexpected_keys ignored_keys")


class PickleCheckpointError(ValueError):
    """A pickled checkpoint was offered; it is never unpickled."""


def _refuse_pickle(path):
    raise PickleCheckpointError(
        f"refusing to load {path}: pickled PyTorch checkpoints (pytorch_model.bin) can run "
        "arbitrary code when loaded. Convert it to safetensors (e.g. transformers' "
        "save_pretrained(dir, safe_serialization=True)) and load model.safetensors instead")


def _shard_files(index_path):
    with open(index_path) as f:
        index = json.load(f)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path}: expected a non-empty 'weight_map' object")
    files = []
    for shard in weight_map.values():
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise ValueError(f"{index_path}: expected shard file names ending in .safetensors "
                             f"in the same folder, got {shard!r}")
        if shard not in files:
            files.append(shard)
    return [index_path.parent / shard for shard in files]


def checkpoint_files(path):
    """The safetensors files of a checkpoint file or folder, in load order."""
    path = Path(path)
    if path.is_dir():
        if (path / SAFETENSORS).is_file():
            return [path / SAFETENSORS]
        if (path / SAFETENSORS_INDEX).is_file():
            return _shard_files(path / SAFETENSORS_INDEX)
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            _refuse_pickle(path / pickles[0])
        raise FileNotFoundError(f"no {SAFETENSORS} or {SAFETENSORS_INDEX} in {path}")
    if path.suffix in _PICKLE_SUFFIXES:
        _refuse_pickle(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.name.endswith(".safetensors.index.json"):
        return _shard_files(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"expected a .safetensors file, a {SAFETENSORS_INDEX} or a folder "
                         f"holding one, got {path}")
    return [path]


def read_checkpoint(path, device=None):
    """{name: Tensor} of every tensor in the checkpoint's safetensors files."""
    tensors = {}
    for file in checkpoint_files(path):
        for name, t in ndl.load(str(file), device=device).items():
            if name in tensors:
                raise ValueError(f"{file}: tensor {name!r} also appears in an earlier shard")
            tensors[name] = t
    return tensors


def _normalise(model_type, tensors):
    """Maps checkpoint names onto the model's (Hugging Face) names; returns (tensors, ignored,
    tied) where tied holds an lm_head to compare with the embedding it is tied to."""
    out, ignored, tied = {}, [], None
    for name, t in tensors.items():
        if name.endswith(_IGNORED_SUFFIXES.get(model_type, ())):
            ignored.append(name)
            continue
        if model_type == "opt":
            if name == "lm_head.weight":
                tied = t
                continue
            if name.startswith("decoder."):  # OPTModel checkpoints have no "model." prefix
                name = "model." + name
        if name in out:
            raise ValueError(f"checkpoint holds {name!r} both with and without the 'model.' prefix")
        out[name] = t
    return out, ignored, tied


def load_hf_checkpoint(model, path, strict=True):
    """Loads a Hugging Face safetensors checkpoint (file, folder or sharded index) into `model`.

    Names are Hugging Face's, with or without OPT's "model." prefix. With strict=True, missing,
    unexpected or mis-shaped tensors raise ValueError naming every one and nothing is loaded;
    with strict=False the tensors that fit are loaded and a LoadResult lists the rest.
    """
    model_type = model.config.model_type
    params = {name: p for name, p in model.named_parameters()}
    given, ignored, lm_head = _normalise(model_type, read_checkpoint(path))

    missing = [n for n in params if n not in given]
    unexpected = [n for n in given if n not in params]
    mismatched = [f"{n}: expected {tuple(params[n].shape)}, got {tuple(t.shape)}"
                  for n, t in given.items() if n in params and tuple(t.shape) != tuple(params[n].shape)]
    if strict and (missing or unexpected or mismatched):
        problems = []
        for what, names in (("missing", missing), ("unexpected", unexpected),
                            ("shape-mismatched", mismatched)):
            if names:
                problems.append(f"{what} keys: " + ", ".join(names))
        raise ValueError(f"load_hf_checkpoint({path}) into {type(model).__name__}: "
                         + "; ".join(problems))

    state = {}
    for name, t in given.items():
        if name not in params or tuple(t.shape) != tuple(params[name].shape):
            continue
        target = params[name].dtype
        if t.dtype != target:
            if t.dtype not in (ndl.bfloat16, ndl.float32, ndl.float64):
                raise ValueError(f"load_hf_checkpoint: {name} has dtype {t.dtype}, expected a "
                                 f"floating dtype convertible to {target}")
            t = t.to(dtype=target)
        state[name] = t
    if lm_head is not None:
        embed = "model.decoder.embed_tokens.weight"
        source = given.get(embed)
        reference = source.numpy() if source is not None else params[embed].detach().numpy()
        if lm_head.shape != reference.shape or not np.array_equal(
                lm_head.to(dtype=ndl.float32).numpy(), reference.astype(np.float32)):
            raise ValueError("load_hf_checkpoint: lm_head.weight differs from "
                             f"{embed}, but OPT ties them; this model cannot hold both")
    model.load_state_dict(state, strict=False)
    return LoadResult(missing, unexpected + mismatched, ignored)


def save_hf_checkpoint(model, path):
    """Writes `path`/model.safetensors (Hugging Face names, float32) and `path`/config.json."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = dict(model.named_parameters())
    # transformers refuses safetensors files without a "format" entry in the metadata.
    ndl.save(state, str(path / SAFETENSORS), metadata={"format": "pt"})
    atomic_write_json(path / CONFIG, model.config.to_hf())
    return path
