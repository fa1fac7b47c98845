"""TokenDataLoader: (input, target) batches from a uint16 token file (apps/prepare_data.py).

    loader = TokenDataLoader("data/sotu/train.bin", batch_size=8, seq_len=256, seed=0)
    x, y = next(loader)            # random windows, forever; y is x shifted by one token
    for x, y in TokenDataLoader("data/sotu/val.bin", 8, 256, sequential=True): ...   # each window once

The file is memory-mapped, so only the windows drawn are read. Random windows come from a
NumPy PCG64 generator; state_dict()/load_state_dict() capture it, so a resumed run draws
exactly the batches the interrupted one would have.
"""

import os

import numpy as np

__all__ = ["TokenDataLoader"]


def _to_output(batch, device):
    """The one place batches leave NumPy: needle tensors when needle.tensor exists,
    else the int64 arrays themselves."""
    import needle

    tensor = getattr(needle, "tensor", None)
    if tensor is None:
        if device is not None:
            raise ValueError(f"device={device!r} needs needle.tensor, which this build of needle lacks")
        return batch
    return tensor(batch, device=device)


class TokenDataLoader:
    """Batches of shape (batch_size, seq_len), int64, from a file of uint16 token ids.

    Random mode (default): each batch is batch_size windows at uniformly random offsets; the
    iterator never ends. Sequential mode: the non-overlapping windows tokens[i*T : i*T + T]
    (targets one further) in order, each once; the last batch may be smaller. A new `for`
    loop starts again from the first window.
    """

    def __init__(self, path_to_bin, batch_size, seq_len, device=None, seed=0, sequential=False):
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        path = os.fspath(path_to_bin)
        if not os.path.isfile(path):
            raise ValueError(f"token file {path!r} does not exist (run python3 -m apps.prepare_data)")
        size = os.path.getsize(path)
        if size % 2:
            raise ValueError(f"token file {path!r} has {size} bytes; uint16 tokens need an even size")
        num_tokens = size // 2
        if num_tokens < 2:
            raise ValueError(f"token file {path!r} holds {num_tokens} tokens; at least 2 are needed "
                             "for one (input, target) pair")
        if seq_len + 1 > num_tokens:
            raise ValueError(f"seq_len={seq_len} is larger than the data allows: {path!r} holds "
                             f"{num_tokens} tokens, so seq_len can be at most {num_tokens - 1}")
        self.path = path
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self.device = device
        self.seed = seed
        self.sequential = bool(sequential)
        self.num_tokens = num_tokens
        self._tokens = np.memmap(path, dtype=np.uint16, mode="r")
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._position = 0  # next window, sequential mode
        self._offsets = np.arange(self.seq_len + 1)

    @property
    def num_windows(self):
        """Non-overlapping windows that sequential mode visits."""
        return (self.num_tokens - 1) // self.seq_len

    def __len__(self):
        if not self.sequential:
            raise TypeError("a random TokenDataLoader has no length: it yields batches forever")
        return -(-self.num_windows // self.batch_size)

    def __iter__(self):
        return self

    def __next__(self):
        if self.sequential:
            if self._position >= self.num_windows:
                self._position = 0
                raise StopIteration
            count = min(self.batch_size, self.num_windows - self._position)
            starts = (self._position + np.arange(count)) * self.seq_len
            self._position += count
        else:
            starts = self._rng.integers(0, self.num_tokens - self.seq_len, size=self.batch_size)
        windows = self._tokens[starts[:, None] + self._offsets].astype(np.int64)
        return _to_output(windows[:, :-1], self.device), _to_output(windows[:, 1:], self.device)

    def next_batch(self):
        return next(self)

    def state_dict(self):
        return {
            "sequential": self.sequential,
            "seed": self.seed,
            "position": self._position,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state):
        missing = {"sequential", "position", "rng"} - set(state)
        if missing:
            raise ValueError(f"TokenDataLoader state is missing {sorted(missing)}")
        if bool(state["sequential"]) != self.sequential:
            raise ValueError(f"state is from a {'sequential' if state['sequential'] else 'random'} loader, "
                             f"this one is {'sequential' if self.sequential else 'random'}")
        position = int(state["position"])
        if not 0 <= position <= self.num_windows:
            raise ValueError(f"state position {position} is outside 0..{self.num_windows} for {self.path!r}")
        self._rng.bit_generator.state = state["rng"]
        self._position = position

    def __repr__(self):
        mode = "sequential" if self.sequential else f"random, seed={self.seed}"
        return (f"TokenDataLoader({self.path!r}, batch_size={self.batch_size}, seq_len={self.seq_len}, "
                f"{self.num_tokens} tokens, {mode})")
