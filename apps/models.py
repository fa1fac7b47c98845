"""Pythia (GPT-NeoX) and OPT decoder-only language models on needle.nn, with Hugging Face's
parameter names, so a state dict is a Hugging Face checkpoint (apps/hf_io.py reads and writes
them) and training, generation (apps/generate.py) and export share one model.

    model = build_model("pythia-70m", attention="dense", device="cuda")
    logits = model(ids)                                   # ids (B, T) -> logits (B, T, V)
    cache = model.make_kv_cache(capacity)                 # generation: one step at a time
    logits = model(ids, kv_cache=cache, logits_to_keep=1)

    python -m apps.models pythia-70m                      # architecture and parameter count

B = batch, T = tokens, H = heads, D = head dim, E = hidden size, V = vocabulary.
"""
import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import needle as ndl
from needle import nn

from .hf_io import load_hf_checkpoint, save_hf_checkpoint
from .models_attention import Attention, KVCache, RotaryTables

F = nn.functional

__all__ = ["GPTNeoXConfig", "OPTConfig", "PRESETS", "build_model", "from_pretrained",
           "config_from_hf", "GPTNeoXForCausalLM", "OPTForCausalLM", "KVCache",
           "load_hf_checkpoint", "save_hf_checkpoint"]


def _check_positive(cls, **values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{cls}: expected a positive int {name}, got {value!r}")


# --- configurations ----------------------------------------------------------------------------

@dataclass(frozen=True)
class GPTNeoXConfig:
    """GPT-NeoX as in Pythia: parallel residual, partial rotary, exact GELU, untied output."""
    vocab_size: int = 50304
    hidden_size: int = 512
    num_layers: int = 6
    num_heads: int = 8
    intermediate_size: int = 2048
    rotary_pct: float = 0.25
    rotary_base: float = 10000.0
    max_positions: int = 2048
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True
    initializer_range: float = 0.02
    # The GPT-2 tokenizer's <|endoftext|>, which this project's data uses.
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    model_type = "gpt_neox"

    def __post_init__(self):
        _check_positive("GPTNeoXConfig", vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                        num_layers=self.num_layers, num_heads=self.num_heads,
                        intermediate_size=self.intermediate_size, max_positions=self.max_positions)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"GPTNeoXConfig: hidden_size {self.hidden_size} is not a multiple "
                             f"of num_heads {self.num_heads}")
        if not 0.0 <= self.rotary_pct <= 1.0 or self.rotary_dim % 2:
            raise ValueError(f"GPTNeoXConfig: rotary_pct must be in [0, 1] and give an even "
                             f"rotary dim, got {self.rotary_pct} (rotary dim {self.rotary_dim})")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    @property
    def rotary_dim(self):
        # Hugging Face truncates: int(head_size * rotary_pct).
        return int(self.head_dim * self.rotary_pct)

    def num_parameters(self):
        """The parameter count of the model this config builds, without building it: input and
        output embeddings, per layer two LayerNorms, the fused qkv and output projections and the
        MLP (all with biases), and the final LayerNorm."""
        E, I = self.hidden_size, self.intermediate_size
        layer = 2 * 2 * E + (3 * E * E + 3 * E) + (E * E + E) + (E * I + I) + (I * E + E)
        return 2 * self.vocab_size * E + self.num_layers * layer + 2 * E

    def to_hf(self):
        return {
            "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size, "hidden_act": "gelu",
            "rotary_pct": self.rotary_pct, "rotary_emb_base": self.rotary_base,
            "max_position_embeddings": self.max_positions, "layer_norm_eps": self.layer_norm_eps,
            "use_parallel_residual": self.use_parallel_residual, "attention_bias": True,
            "tie_word_embeddings": False, "initializer_range": self.initializer_range,
            "attention_dropout": 0.0, "hidden_dropout": 0.0, "use_cache": True,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        }


@dataclass(frozen=True)
class OPTConfig:
    """OPT: pre-LN, ReLU, learned positions offset by 2, tied output embedding."""
    vocab_size: int = 50272
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_positions: int = 2048
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    pad_token_id: int = 1
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    model_type = "opt"
    # OPTLearnedPositionalEmbedding reserves the first two rows (a fairseq legacy).
    position_offset = 2

    def __post_init__(self):
        _check_positive("OPTConfig", vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                        num_layers=self.num_layers, num_heads=self.num_heads,
                        ffn_dim=self.ffn_dim, max_positions=self.max_positions)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"OPTConfig: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_heads {self.num_heads}")

    @property
    def head_dim(self):
        return self.hidden_size // self.num_heads

    def num_parameters(self):
        """The parameter count of the model this config builds, without building it: token
        embeddings (tied to the output), learned positions (OPT's offset of 2 included), per layer
        two LayerNorms, four attention projections and the MLP (all with biases), and the final
        LayerNorm."""
        E, F = self.hidden_size, self.ffn_dim
        layer = 2 * 2 * E + 4 * (E * E + E) + (E * F + F) + (F * E + E)
        return (self.vocab_size + self.max_positions + 2) * E + self.num_layers * layer + 2 * E

    def to_hf(self):
        return {
            "architectures": ["OPTForCausalLM"], "model_type": "opt",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "ffn_dim": self.ffn_dim, "max_position_embeddings": self.max_positions,
            "word_embed_proj_dim": self.hidden_size, "do_layer_norm_before": True,
            "_remove_final_layer_norm": False, "activation_function": "relu",
            "enable_bias": True, "layer_norm_elementwise_affine": True,
            "tie_word_embeddings": True, "init_std": self.initializer_range,
            "dropout": 0.0, "attention_dropout": 0.0, "layerdrop": 0.0, "use_cache": True,
            "pad_token_id": self.pad_token_id, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id, "torch_dtype": "float32",
        }


PRESETS = {
    "pythia-70m": GPTNeoXConfig(),
    "pythia-160m": GPTNeoXConfig(hidden_size=768, num_layers=12, num_heads=12,
                                 intermediate_size=3072),
    "pythia-410m": GPTNeoXConfig(hidden_size=1024, num_layers=24, num_heads=16,
                                 intermediate_size=4096),
    # Head dim 256: the CUDA attention kernels stop at 128, so this one trains on the CPU only.
    "pythia-1b": GPTNeoXConfig(hidden_size=2048, num_layers=16, num_heads=8,
                               intermediate_size=8192),
    "pythia-1.4b": GPTNeoXConfig(hidden_size=2048, num_layers=24, num_heads=16,
                                 intermediate_size=8192),
    "pythia-2.8b": GPTNeoXConfig(hidden_size=2560, num_layers=32, num_heads=32,
                                 intermediate_size=10240),
    # For CPU runs and tests: the real vocabulary, a small body.
    "pythia-tiny": GPTNeoXConfig(hidden_size=128, num_layers=2, num_heads=4,
                                 intermediate_size=512, max_positions=512),
    "opt-125m": OPTConfig(),
    "opt-tiny": OPTConfig(hidden_size=128, num_layers=2, num_heads=4, ffn_dim=512,
                          max_positions=512),
}


def _first(d, *names, default=None):
    for name in names:
        if d.get(name) is not None:
            return d[name]
    return default


def config_from_hf(hf):
    """A GPTNeoXConfig or OPTConfig from a Hugging Face config.json dict (transformers 4 and 5
    spellings); architectures these models do not implement raise ValueError naming the field."""
    model_type = hf.get("model_type")
    token_ids = {k: hf[k] for k in ("bos_token_id", "eos_token_id") if isinstance(hf.get(k), int)}

    def require(field, expected, default):
        given = hf.get(field, default)
        if given != expected:
            raise ValueError(f"config.json: {field} must be {expected!r} for these models, "
                             f"got {given!r}")

    if model_type == "gpt_neox":
        rope = _first(hf, "rope_parameters", "rope_scaling", default={}) or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"config.json: only default rotary embeddings are implemented, got "
                             f"rope type {rope.get('rope_type', rope.get('type'))!r}")
        require("hidden_act", "gelu", "gelu")
        require("tie_word_embeddings", False, False)
        require("attention_bias", True, True)
        return GPTNeoXConfig(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            rotary_pct=float(_first(hf, "rotary_pct", "partial_rotary_factor",
                                    default=rope.get("partial_rotary_factor", 0.25))),
            rotary_base=float(_first(hf, "rotary_emb_base", "rope_theta",
                                     default=rope.get("rope_theta", 10000.0))),
            max_positions=hf.get("max_position_embeddings", 2048),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
            use_parallel_residual=bool(hf.get("use_parallel_residual", True)),
            initializer_range=float(hf.get("initializer_range", 0.02)), **token_ids)
    if model_type == "opt":
        require("do_layer_norm_before", True, True)
        require("_remove_final_layer_norm", False, False)
        require("activation_function", "relu", "relu")
        require("enable_bias", True, True)
        require("layer_norm_elementwise_affine", True, True)
        require("tie_word_embeddings", True, True)
        require("word_embed_proj_dim", hf["hidden_size"], hf["hidden_size"])
        return OPTConfig(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            ffn_dim=hf["ffn_dim"], max_positions=hf.get("max_position_embeddings", 2048),
            initializer_range=float(hf.get("init_std", 0.02)),
            pad_token_id=hf.get("pad_token_id", 1) if hf.get("pad_token_id") is not None else 1,
            **token_ids)
    raise ValueError(f"config.json: expected model_type 'gpt_neox' or 'opt', got {model_type!r}")


# --- shared pieces ---------------------------------------------------------------------------------

class _Step:
    """What one forward pass tells every layer: where its tokens sit and where keys go."""
    __slots__ = ("offset", "covered", "cache")

    def __init__(self, offset, covered, cache):
        self.offset, self.covered, self.cache = offset, covered, cache


class _CausalLM(nn.Module):
    """Input checks, the KV-cache protocol and HF-style initialisation shared by both families."""

    def _init_weights(self, std):
        # Hugging Face's _init_weights: N(0, std) for Linear and Embedding weights, zero biases,
        # LayerNorms at (1, 0).
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("layer_norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, std)

    @property
    def device(self):
        return self._input_embedding().weight.device

    def make_kv_cache(self, capacity):
        """An empty KVCache for up to `capacity` positions (prompt + new tokens)."""
        if self.config.model_type == "opt" and capacity > self.config.max_positions:
            raise ValueError(f"make_kv_cache: OPT's learned positions cover "
                             f"{self.config.max_positions} tokens, got capacity {capacity}")
        return KVCache(self.config.num_layers, capacity)

    def _ids(self, ids):
        """ids (B, T) as an int64 Tensor on the model's device; NumPy and lists are range-checked
        here, Tensors by the embedding kernel."""
        device = self.device
        if isinstance(ids, ndl.Tensor):
            if ids.ndim != 2:
                raise ValueError(f"{type(self).__name__}: expected token ids of shape (B, T), "
                                 f"got {tuple(ids.shape)}")
            if ids.dtype != ndl.int64:
                ids = ids.to(dtype=ndl.int64)
            return ids if str(ids.device) == str(device) else ids.to(device)
        arr = np.asarray(ids)
        if arr.ndim != 2 or arr.shape[1] == 0 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{type(self).__name__}: expected integer token ids of shape (B, T) "
                             f"with T >= 1, got {arr.dtype} {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.config.vocab_size):
            raise ValueError(f"{type(self).__name__}: token ids must lie in [0, "
                             f"{self.config.vocab_size}), got [{arr.min()}, {arr.max()}]")
        return ndl.tensor(arr.astype(np.int64), dtype=ndl.int64, device=device)

    def forward(self, ids, kv_cache=None, logits_to_keep=0):
        """ids (B, T) -> logits (B, T, V), or (B, logits_to_keep, V) for the last positions.
        With kv_cache, ids continue the cached sequences and their keys join the cache."""
        ids = self._ids(ids)
        B, T = ids.shape
        if not isinstance(logits_to_keep, int) or not 0 <= logits_to_keep <= T:
            raise ValueError(f"logits_to_keep: expected an int in [0, {T}], got "
                             f"{logits_to_keep!r}")
        if kv_cache is None:
            step = _Step(0, T, None)
        else:
            kv_cache.begin(B, T)
            step = _Step(kv_cache.length, kv_cache.capacity, kv_cache)
        try:
            h = self._body(ids, step)
        except BaseException:
            if kv_cache is not None:
                kv_cache.discard()
            raise
        if kv_cache is not None:
            kv_cache.commit(T)
        if logits_to_keep:
            h = h[:, T - logits_to_keep:]
        return F.linear(self._head_input(h), self._head_weight())

    def loss(self, ids, targets, ignore_index=-100):
        """The mean cross-entropy of the logits self(ids) against targets (B, T), the token that
        follows each position (already shifted, as TokenDataLoader gives them; ignore_index
        positions left out), computed without the logits' own backward pass: the output layer
        and the loss are one F.linear_cross_entropy, whose forward pass writes the logits'
        gradient over the logits."""
        ids = self._ids(ids)
        if not isinstance(targets, ndl.Tensor):
            targets = ndl.tensor(np.asarray(targets, dtype=np.int64), dtype=ndl.int64,
                                 device=self.device)
        h = self._body(ids, _Step(0, ids.shape[1], None))
        return F.linear_cross_entropy(self._head_input(h), self._head_weight(), targets,
                                      ignore_index=ignore_index)


# --- GPT-NeoX / Pythia -------------------------------------------------------------------------------

class GPTNeoXAttention(nn.Module):
    def __init__(self, config, kernel, rotary):
        super().__init__()
        E = config.hidden_size
        # Output laid out per head as [q | k | v] (D each), not [Q | K | V].
        self.query_key_value = nn.Linear(E, 3 * E)
        self.dense = nn.Linear(E, E)
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.kernel, self.rotary = kernel, rotary

    def extra_repr(self):
        rot = self.rotary.rotary_dim if self.rotary is not None else 0
        return f"heads={self.num_heads}, head_dim={self.head_dim}, rotary_dim={rot}, {self.kernel}"

    def forward(self, x, step, layer):
        B, T, E = x.shape
        qkv = self.query_key_value(x).reshape(B, T, self.num_heads, 3, self.head_dim)
        q = qkv[:, :, :, 0].permute(0, 2, 1, 3)  # (B, H, T, D) views
        k = qkv[:, :, :, 1].permute(0, 2, 1, 3)
        v = qkv[:, :, :, 2].permute(0, 2, 1, 3)
        if self.rotary is not None:
            q, k = self.rotary.rotate(q, step.offset), self.rotary.rotate(k, step.offset)
        if step.cache is not None:
            k, v = step.cache.extend(layer, k, v)
        o = self.kernel(q, k, v, step.offset, step.covered)
        return self.dense(o.permute(0, 2, 1, 3).reshape(B, T, E))


class GPTNeoXMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(x), approximate="none"))


class GPTNeoXLayer(nn.Module):
    def __init__(self, config, kernel, rotary):
        super().__init__()
        E, eps = config.hidden_size, config.layer_norm_eps
        self.input_layernorm = nn.LayerNorm(E, eps=eps)
        self.post_attention_layernorm = nn.LayerNorm(E, eps=eps)
        self.attention = GPTNeoXAttention(config, kernel, rotary)
        self.mlp = GPTNeoXMLP(config)
        self.parallel = config.use_parallel_residual

    def forward(self, x, step, layer):
        a = self.attention(self.input_layernorm(x), step, layer)
        if self.parallel:
            # x + attn(ln1(x)) + mlp(ln2(x)), summed in Hugging Face's order.
            return self.mlp(self.post_attention_layernorm(x)) + a + x
        a = a + x
        return self.mlp(self.post_attention_layernorm(a)) + a


class GPTNeoXModel(nn.Module):
    def __init__(self, config, kernel, rotary):
        super().__init__()
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(GPTNeoXLayer(config, kernel, rotary)
                                    for _ in range(config.num_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class GPTNeoXForCausalLM(_CausalLM):
    """Pythia. Parameter names are Hugging Face's (gpt_neox.layers.N.attention.query_key_value...)."""

    def __init__(self, config, attention="dense", **attention_options):
        super().__init__()
        self.config = config
        self.attention_kernel = Attention(attention, **attention_options)
        rotary = RotaryTables(config.head_dim, config.rotary_dim, config.rotary_base,
                              config.max_positions) if config.rotary_dim else None
        self.gpt_neox = GPTNeoXModel(config, self.attention_kernel, rotary)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # A plain list: walking the ModuleList through attribute lookups costs per token.
        self._layers = list(self.gpt_neox.layers)
        self._init_weights(config.initializer_range)

    def _input_embedding(self):
        return self.gpt_neox.embed_in

    def _body(self, ids, step):
        h = self.gpt_neox.embed_in(ids)
        for i, layer in enumerate(self._layers):
            h = layer(h, step, i)
        return h

    def _head_input(self, h):
        return self.gpt_neox.final_layer_norm(h)

    def _head_weight(self):
        return self.embed_out.weight


# --- OPT -----------------------------------------------------------------------------------------------

class OPTAttention(nn.Module):
    def __init__(self, config, kernel):
        super().__init__()
        E = config.hidden_size
        self.q_proj = nn.Linear(E, E)
        self.k_proj = nn.Linear(E, E)
        self.v_proj = nn.Linear(E, E)
        self.out_proj = nn.Linear(E, E)
        self.num_heads, self.head_dim, self.kernel = config.num_heads, config.head_dim, kernel
        # OPT scales q by head_dim^-0.5; the kernels apply it to the scores, which is the same.
        self.scaling = self.head_dim ** -0.5

    def extra_repr(self):
        return f"heads={self.num_heads}, head_dim={self.head_dim}, {self.kernel}"

    def forward(self, x, step, layer):
        B, T, E = x.shape

        def heads(t):
            return t.reshape(B, T, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        if step.cache is not None:
            k, v = step.cache.extend(layer, k, v)
        o = self.kernel(q, k, v, step.offset, step.covered, scale=self.scaling)
        return self.out_proj(o.permute(0, 2, 1, 3).reshape(B, T, E))


class OPTDecoderLayer(nn.Module):
    def __init__(self, config, kernel):
        super().__init__()
        E, eps = config.hidden_size, config.layer_norm_eps
        self.self_attn = OPTAttention(config, kernel)
        self.self_attn_layer_norm = nn.LayerNorm(E, eps=eps)
        self.fc1 = nn.Linear(E, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, E)
        self.final_layer_norm = nn.LayerNorm(E, eps=eps)

    def forward(self, x, step, layer):
        x = x + self.self_attn(self.self_attn_layer_norm(x), step, layer)
        return x + self.fc2(F.relu(self.fc1(self.final_layer_norm(x))))


class OPTDecoder(nn.Module):
    def __init__(self, config, kernel):
        super().__init__()
        E = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, E)
        self.embed_positions = nn.Embedding(config.max_positions + config.position_offset, E)
        self.layers = nn.ModuleList(OPTDecoderLayer(config, kernel)
                                    for _ in range(config.num_layers))
        self.final_layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps)


class OPTModel(nn.Module):
    def __init__(self, config, kernel):
        super().__init__()
        self.decoder = OPTDecoder(config, kernel)


class OPTForCausalLM(_CausalLM):
    """OPT. Parameter names are Hugging Face's (model.decoder.layers.N.self_attn.q_proj...); the
    output projection is embed_tokens (tied), so there is no lm_head parameter."""

    def __init__(self, config, attention="dense", **attention_options):
        super().__init__()
        self.config = config
        self.attention_kernel = Attention(attention, **attention_options)
        self.model = OPTModel(config, self.attention_kernel)
        self._layers = list(self.model.decoder.layers)
        self._init_weights(config.initializer_range)

    def _input_embedding(self):
        return self.model.decoder.embed_tokens

    def _body(self, ids, step):
        T = ids.shape[1]
        first = step.offset + self.config.position_offset
        if step.offset + T > self.config.max_positions:
            raise ValueError(f"OPT: positions {step.offset}..{step.offset + T - 1} exceed the "
                             f"{self.config.max_positions} learned positions")
        decoder = self.model.decoder
        # Without padding, Hugging Face's positions are offset + 0..T-1 (+2): a slice, no gather.
        h = decoder.embed_tokens(ids) + decoder.embed_positions.weight[first:first + T]
        for i, layer in enumerate(self._layers):
            h = layer(h, step, i)
        return h

    def _head_input(self, h):
        return self.model.decoder.final_layer_norm(h)

    def _head_weight(self):
        return self.model.decoder.embed_tokens.weight  # tied


# --- construction ---------------------------------------------------------------------------------------

_FAMILIES = {"gpt_neox": GPTNeoXForCausalLM, "opt": OPTForCausalLM}


def build_model(name, attention="dense", device=None, **attention_options):
    """A freshly initialised model: `name` is a PRESETS key or a GPTNeoXConfig / OPTConfig.

    attention: "dense", "local", "global", "strided", "mixed", "random" or a BlockSparseLayout;
    attention_options: block_size (64), impl ("auto" | "fused" | "composed") and the pattern's
    own options (window, global_blocks, stride, blocks_per_row, seed).
    """
    if isinstance(name, (GPTNeoXConfig, OPTConfig)):
        config = name
    elif name in PRESETS:
        config = PRESETS[name]
    else:
        raise ValueError(f"build_model: expected one of {sorted(PRESETS)} or a config, "
                         f"got {name!r}")
    model = _FAMILIES[config.model_type](config, attention, **attention_options)
    if device is not None:
        model.to(device)
    return model


def from_pretrained(path, attention="dense", device=None, strict=True, **attention_options):
    """A model built from `path`/config.json and loaded from its safetensors weights."""
    path = Path(path)
    config_path = path / "config.json" if path.is_dir() else path.parent / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"from_pretrained: no config.json at {config_path}")
    with open(config_path) as f:
        config = config_from_hf(json.load(f))
    model = build_model(config, attention, device, **attention_options)
    load_hf_checkpoint(model, path, strict=strict)
    return model


def describe(model):
    """The architecture and the parameter count, as `python -m apps.models` prints them."""
    config = model.config
    lines = [repr(model), "", f"config: {json.dumps(asdict(config))}"]
    lines.append(f"parameters: {model.num_parameters():,}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Print a model's architecture and size.")
    parser.add_argument("name", choices=sorted(PRESETS))
    parser.add_argument("--attention", default="dense")
    args = parser.parse_args(argv)
    print(describe(build_model(args.name, attention=args.attention)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
