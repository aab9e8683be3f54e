"""The base objective: what every method shares, and the hooks each overrides.

An objective is an ``nn.Module`` built from the shared backbone and its own
``method`` config. The training engine (ssl_zoo.engine) calls only:

- ``training_step(batch, progress) -> dict`` with a ``"loss"`` tensor and any
  scalars to log (``progress`` is the fraction of training done, in [0, 1]);
- ``after_step(progress)`` after each optimizer step (EMA teachers, ...);
- ``on_epoch_start(epoch)``;
- ``before_optimizer_step(epoch)`` after backward, once gradients are final
  (e.g. DINO drops its last layer's gradients in the first epoch);

and the evaluator calls ``encode(images) -> features`` on normalised images,
plus ``encode_text(captions)`` for objectives with a text tower
(``has_text_tower = True``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ssl_zoo.backbones import Backbone
from ssl_zoo.data.views import IMAGENET_MEAN, IMAGENET_STD, View


@dataclass
class DataInfo:
    """What an objective may know about its training data."""

    image_size: int
    classnames: list[str] = field(default_factory=list)
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD


class Objective(nn.Module):
    name: str = "objective"
    has_text_tower: bool = False

    def __init__(self, backbone: Backbone, cfg: Mapping[str, Any], data: DataInfo):
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.data = data

    def make_view(self, recipe: Mapping[str, Any], size: int | None = None) -> View:
        """A batched random view at ``size`` (default: the data's image size)."""
        return View(recipe, size or self.data.image_size, self.data.mean, self.data.std)

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """Called after each optimizer step."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called at the start of each training epoch."""

    def before_optimizer_step(self, epoch: int) -> None:
        """Called after backward (gradients synced across processes), before the optimizer step."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Features used by every evaluation protocol: the backbone's pooled output."""
        return self.backbone(images)

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: no weight decay on biases, norms, tokens and logit scales."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or "token" in name or "pos_embed" in name else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
