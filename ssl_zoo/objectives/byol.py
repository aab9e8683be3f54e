"""BYOL (Grill et al., 2020): an online network (backbone, projection,
prediction) predicts the projection of a target network on the other view.

The target is an EMA of the online backbone and projection, momentum
cosine-scheduled from ``momentum_start`` (0.99) to 1. Views are asymmetric:
view 1 always blurred, view 2 rarely blurred but sometimes solarised.
Evaluation uses the online backbone (as in the paper).
"""
from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from ssl_zoo.objectives.base import Objective
from ssl_zoo.objectives.momentum import cosine_momentum, ema_update, frozen_copy


class BYOL(Objective):
    name = "byol"

    def __init__(self, backbone, cfg, data):
        super().__init__(backbone, cfg, data)
        self.views = nn.ModuleList([self.make_view(cfg["views"]["view1"]), self.make_view(cfg["views"]["view2"])])
        hidden, out = int(cfg["hidden_dim"]), int(cfg["out_dim"])
        self.projection = BYOLProjectionHead(backbone.dim, hidden, out)
        self.prediction = BYOLPredictionHead(out, hidden, out)
        self.target_backbone = frozen_copy(backbone)
        self.target_projection = frozen_copy(self.projection)
        self.criterion = NegativeCosineSimilarity()

    def momentum(self, progress: float) -> float:
        return cosine_momentum(progress, float(self.cfg["momentum_start"]), float(self.cfg.get("momentum_end", 1.0)))

    def loss(self, p0: torch.Tensor, p1: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """Symmetrised: each view's prediction against the other view's target,
        ``2 - 2 cos`` each (the paper's normalised MSE), summed over the two directions."""
        return (2 + 2 * self.criterion(p0, z1)) + (2 + 2 * self.criterion(p1, z0))

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]:
        images = batch["image"]
        x0, x1 = self.views[0](images), self.views[1](images)
        p0 = self.prediction(self.projection(self.backbone(x0)))
        p1 = self.prediction(self.projection(self.backbone(x1)))
        with torch.no_grad():
            z0 = self.target_projection(self.target_backbone(x0))
            z1 = self.target_projection(self.target_backbone(x1))
        return {"loss": self.loss(p0, p1, z0, z1), "momentum": torch.tensor(self.momentum(progress))}

    def after_step(self, progress: float) -> None:
        ema_update([(self.backbone, self.target_backbone), (self.projection, self.target_projection)],
                   self.momentum(progress))
