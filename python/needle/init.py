"""In-place parameter initialisers (torch.nn.init names plus GPT-NeoX's small_init_ and
wang_init_), drawing from needle's seeded generator."""
from ._C.nn.init import (  # noqa: F401
    calculate_gain,
    constant_,
    kaiming_normal_,
    kaiming_uniform_,
    normal_,
    ones_,
    small_init_,
    trunc_normal_,
    uniform_,
    wang_init_,
    xavier_normal_,
    xavier_uniform_,
    zeros_,
)
