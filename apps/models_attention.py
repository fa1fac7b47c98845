"""Attention plumbing shared by the apps/ language models (apps/models.py): the choice of attention
kernel per model (dense or a block-sparse pattern), the KV cache used by generation, and GPT-NeoX
rotary embeddings of q and k.

Shapes: B = batch, H = heads, T = new tokens, S = keys (cached + new), D = head dim.
"""
import numpy as np

import needle as ndl

F = ndl.nn.functional

# Pattern name -> BlockSparseLayout constructor name.
PATTERNS = {
    "dense": "dense",
    "local": "local",
    "global": "global_",
    "strided": "strided",
    "mixed": "mixed",
    "random": "random",
}
IMPLS = ("auto", "fused", "composed")

# Device string -> whether its backend has the fused block-sparse kernels. Learnt from the first
# call on each device, because a build may register the op without filling every backend's slot.
_FUSED_BY_DEVICE = {}
_NO_KERNEL = "no fused block_sparse_attention"


def block_sparse_api():
    """(BlockSparseLayout, block_sparse_attention) from this needle build, or (None, None).

    needle._C.attention is preferred: its op takes q_offset, which decoding with a KV cache needs.
    """
    attention = getattr(ndl._C, "attention", None)
    if attention is not None:
        return attention.BlockSparseLayout, attention.block_sparse_attention
    layout_cls = getattr(ndl.nn, "BlockSparseLayout", None)
    op = getattr(F, "block_sparse_attention", None)
    if layout_cls is not None and op is not None:
        return layout_cls, op
    return None, None


class Attention:
    """One model's attention kernel: `spec` is "dense", a pattern name from PATTERNS, or a
    BlockSparseLayout. Layouts of named patterns are built per covered length and cached.

    impl: "auto" uses the fused block-sparse kernels where the device's backend has them (with a
    dense layout for "dense": the framework's fused dense attention) and otherwise composes
    matmul + mask + softmax (scaled_dot_product_attention for dense); "fused" insists on the
    kernels; "composed" always composes (a reference for the kernels).
    """

    def __init__(self, spec="dense", block_size=64, impl="auto", **pattern_options):
        self.layout_cls, self.op = block_sparse_api()
        if impl not in IMPLS:
            raise ValueError(f"attention impl: expected one of {IMPLS}, got {impl!r}")
        if not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f"attention block_size: expected a positive int, got {block_size!r}")
        self.block_size, self.impl, self.pattern_options = block_size, impl, dict(pattern_options)
        self.fixed_layout = None
        if isinstance(spec, str):
            if spec not in PATTERNS:
                raise ValueError(f"attention: expected one of {sorted(PATTERNS)} or a "
                                 f"BlockSparseLayout, got {spec!r}")
            self.name = spec
        elif self.layout_cls is not None and isinstance(spec, self.layout_cls):
            if not spec.causal:
                raise ValueError("attention: a language model needs a causal BlockSparseLayout, "
                                 f"got {spec!r}")
            self.name, self.fixed_layout = spec.name, spec
        else:
            raise ValueError(f"attention: expected one of {sorted(PATTERNS)} or a "
                             f"BlockSparseLayout, got {type(spec).__name__}")
        needs_layouts = self.name != "dense" or impl == "fused"
        if needs_layouts and self.layout_cls is None:
            raise RuntimeError(f"attention {self.name!r} (impl {impl!r}) needs needle's "
                               "BlockSparseLayout (needle._C.attention), which this build lacks")
        if self.name == "dense" and pattern_options:
            raise ValueError(f"attention 'dense' takes no pattern options, got {pattern_options}")
        self._layouts = {}
        self._block_masks = {}

    def __repr__(self):
        opts = "".join(f", {k}={v}" for k, v in sorted(self.pattern_options.items()))
        return f"Attention({self.name!r}, block_size={self.block_size}, impl={self.impl!r}{opts})"

    def layout(self, length):
        """The layout covering `length` positions (cached per length)."""
        if self.fixed_layout is not None:
            if length > self.fixed_layout.seq_len:
                raise ValueError(f"attention: the BlockSparseLayout covers "
                                 f"{self.fixed_layout.seq_len} positions, got {length}")
            return self.fixed_layout
        layout = self._layouts.get(length)
        if layout is None:
            make = getattr(self.layout_cls, PATTERNS[self.name])
            layout = make(length, self.block_size, **self.pattern_options)
            self._layouts[length] = layout
        return layout

    def __call__(self, q, k, v, q_offset, covered, scale=None):
        """softmax(scale q k^T) v for q (B, H, T, D) at absolute positions q_offset.., k and v
        (B, H, S, D) with S = q_offset + T; `covered` is the length the layout must span (the
        KV cache's capacity while generating, so every step shares one layout)."""
        use_fused = self.impl == "fused" or (
            self.impl == "auto" and self.layout_cls is not None
            and _FUSED_BY_DEVICE.get(str(q.device), True))
        if use_fused:
            layout = self.layout(covered)
            try:
                out = self.op(q, k, v, layout, scale=scale, q_offset=q_offset)
                _FUSED_BY_DEVICE[str(q.device)] = True
                return out
            except RuntimeError as e:
                if self.impl == "fused" or _NO_KERNEL not in str(e):
                    raise
                _FUSED_BY_DEVICE[str(q.device)] = False
        if self.name == "dense":
            # One query row sees every cached key, so the causal mask is only needed for T > 1.
            return F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1, scale=scale)
        return self._composed(q, k, v, self.layout(covered), q_offset, scale)

    def _composed(self, q, k, v, layout, q_offset, scale):
        """The layout applied as an element mask to dense attention; rows with no key give 0,
        as the kernels do."""
        T, S, D = q.shape[2], k.shape[2], q.shape[3]
        blocks = self._block_masks.get(id(layout))
        if blocks is None:
            blocks = layout.to_block_mask()
            self._block_masks[id(layout)] = blocks  # layouts live in self._layouts: ids stay valid
        b = layout.block_size
        rows = np.arange(q_offset, q_offset + T)
        cols = np.arange(S)
        keep = blocks[..., rows[:, None] // b, cols[None, :] // b]
        if layout.causal:
            keep = keep & (cols[None, :] <= rows[:, None])
        if keep.ndim == 3:
            keep = keep[None]  # (1, H, T, S): one layout per head
        scores = (q @ k.transpose(-2, -1)) * (scale if scale is not None else D ** -0.5)
        blocked = ndl.tensor(~keep, dtype=ndl.bool, device=q.device)
        probs = F.softmax(scores.masked_fill(blocked, float("-inf")), dim=-1)
        empty = ~keep.any(axis=-1, keepdims=True)
        if empty.any():
            probs = probs.masked_fill(ndl.tensor(empty, dtype=ndl.bool, device=q.device), 0.0)
        return probs @ v


class KVCache:
    """Keys and values of the positions seen so far, per layer, for one batch of sequences.

    `capacity` bounds the total length; block-sparse layouts are built for it so that every
    decoding step reads the same layout (the rows of a named pattern do not depend on its length).
    A forward pass stages its keys and values and commits them only when every layer succeeded.
    """

    def __init__(self, num_layers, capacity):
        if capacity <= 0:
            raise ValueError(f"KVCache: expected a positive capacity, got {capacity}")
        self.num_layers, self.capacity, self.length = num_layers, capacity, 0
        self._keys = [None] * num_layers
        self._values = [None] * num_layers
        self._staged = {}

    def __repr__(self):
        return f"KVCache(length={self.length}, capacity={self.capacity})"

    @property
    def batch_size(self):
        return None if self._keys[0] is None else self._keys[0].shape[0]

    def begin(self, batch, new_tokens):
        if self.length + new_tokens > self.capacity:
            raise ValueError(f"KVCache: {self.length} cached + {new_tokens} new positions exceed "
                             f"the capacity {self.capacity}")
        if self.batch_size is not None and batch != self.batch_size:
            raise ValueError(f"KVCache: expected batch size {self.batch_size}, got {batch}")
        self._staged = {}

    def extend(self, layer, k, v):
        """k, v (B, H, T, D) of the new positions -> all keys and values (B, H, S, D)."""
        if self._keys[layer] is not None:
            k = ndl.cat([self._keys[layer], k], dim=2)
            v = ndl.cat([self._values[layer], v], dim=2)
        self._staged[layer] = (k, v)
        return k, v

    def commit(self, new_tokens):
        if len(self._staged) != self.num_layers:
            raise RuntimeError(f"KVCache: {len(self._staged)} of {self.num_layers} layers "
                               "extended in one forward pass")
        for layer, (k, v) in self._staged.items():
            self._keys[layer], self._values[layer] = k, v
        self._staged = {}
        self.length += new_tokens

    def discard(self):
        self._staged = {}


class RotaryTables:
    """GPT-NeoX rotary embeddings: on the first rotary_dim dims of each head of q and k,
    y = x * cos + rotate_half(x) * sin (F.rotary_embedding: one fused kernel forward and one
    backward, which read q and k as (B, H, T, D) views of the fused projection, in place, and
    write them compact for the attention kernels); the other D - rotary_dim dims pass through.

    The angles follow Hugging Face's float32 arithmetic (inv_freq = 1 / base^(arange(0, rot, 2) /
    rot) and position * inv_freq in float32) so logits agree to float32 rounding; tables are
    cached per device and dtype and regrown when a longer sequence arrives.
    """

    def __init__(self, head_dim, rotary_dim, base, length):
        if rotary_dim <= 0 or rotary_dim % 2 or rotary_dim > head_dim:
            raise ValueError(f"rotary: expected an even rotary_dim in (0, head_dim={head_dim}], "
                             f"got {rotary_dim}")
        self.head_dim, self.rotary_dim, self.base, self.length = head_dim, rotary_dim, base, length
        self._tables = {}

    def _build(self, length):
        """(cos, sin): (length, rotary_dim), [cos | cos] and [sin | sin] per position."""
        rot = self.rotary_dim
        exponent = np.arange(0, rot, 2, dtype=np.int64).astype(np.float32) / np.float32(rot)
        inv_freq = (np.float32(1.0) / (np.float32(self.base) ** exponent)).astype(np.float32)
        angles = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]  # float32
        cos = np.cos(angles.astype(np.float64)).astype(np.float32)
        sin = np.sin(angles.astype(np.float64)).astype(np.float32)
        return np.concatenate([cos, cos], axis=1), np.concatenate([sin, sin], axis=1)

    def tables(self, offset, length, device, dtype):
        end = offset + length
        key = (str(device), str(dtype))
        cached = self._tables.get(key)
        if cached is None or cached[0].shape[0] < end:
            size = max(self.length, end)
            cos, sin = self._build(size)
            cached = (ndl.tensor(cos, dtype=dtype, device=device),
                      ndl.tensor(sin, dtype=dtype, device=device))
            self._tables[key] = cached
        return cached[0][offset:end], cached[1][offset:end]

    def rotate(self, x, offset):
        """x (B, H, T, D) at positions offset.. (any view) -> compact (B, H, T, D), rotated."""
        cos, sin = self.tables(offset, x.shape[2], x.device, x.dtype)
        return F.rotary_embedding(x, cos, sin)
