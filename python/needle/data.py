"""needle.data: text to token ids and token ids to training batches.

    tok = ndl.data.Tokenizer.from_gpt2(encoder_json, vocab_bpe)   # C++ byte-level BPE
    loader = ndl.data.TokenDataLoader("data/sotu/train.bin", batch_size=8, seq_len=256)
"""
from ._C.data import *  # noqa: F401,F403  (Tokenizer and its helpers, from python/bindings/data.cpp)
from ._C.data import Tokenizer
from .dataloader import TokenDataLoader

__all__ = [name for name in dir() if not name.startswith("_")]
