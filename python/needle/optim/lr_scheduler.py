"""Learning-rate schedules: ConstantLR (optional warm-up), WarmupCosineLR (warm-up, cosine decay
to a floor), LinearDecayLR (warm-up, linear decay). Call scheduler.step() after optimizer.step()."""
from .._C.optim.lr_scheduler import (  # noqa: F401
    ConstantLR,
    LinearDecayLR,
    LRScheduler,
    WarmupCosineLR,
)
