"""EMA targets shared by BYOL and DINO: a frozen copy of the online network,
moved towards it after every optimizer step with a cosine-scheduled momentum
(lightly's ``update_momentum`` and ``cosine_schedule``)."""
from __future__ import annotations

import copy
from typing import Iterable

from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy that the optimizer never sees (requires_grad False everywhere)."""
    target = copy.deepcopy(module)
    deactivate_requires_grad(target)
    return target


def cosine_momentum(progress: float, start: float, end: float = 1.0) -> float:
    """``end - (end - start) * (cos(pi * progress) + 1) / 2`` for progress in [0, 1].

    lightly's schedule runs over steps; with ``max_steps=2`` its
    ``step / (max_steps - 1)`` is exactly the fraction of training done.
    """
    return cosine_schedule(min(max(float(progress), 0.0), 1.0), 2, start, end)


def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """``target = momentum * target + (1 - momentum) * online`` for each (online, target)."""
    for online, target in pairs:
        update_momentum(online, target, m=momentum)
