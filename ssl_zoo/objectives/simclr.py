"""SimCLR (Chen et al., 2020): two augmented views, NT-Xent over the batch.

Negatives are gathered across processes with gradients (lightly's
``gather_distributed``), so N processes equal one process on the combined batch.
"""
from __future__ import annotations

from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from ssl_zoo.objectives.base import Objective


class SimCLR(Objective):
    name = "simclr"

    def __init__(self, backbone, cfg, data):
        super().__init__(backbone, cfg, data)
        self.view = self.make_view(cfg["views"])
        self.head = SimCLRProjectionHead(backbone.dim, int(cfg["hidden_dim"]), int(cfg["out_dim"]))
        self.criterion = NTXentLoss(temperature=float(cfg["temperature"]),
                                    gather_distributed=bool(cfg.get("gather_distributed", True)))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]:
        images = batch["image"]
        z0, z1 = self.project(self.view(images)), self.project(self.view(images))
        return {"loss": self.criterion(z0, z1)}

    def grad_cache_parts(self, batch: dict[str, Any], progress: float):
        """For trainer.grad_cache_chunk (ssl_zoo.gradcache): both views made once, one encoder."""
        images = batch["image"]
        views = [self.view(images), self.view(images)]
        return [self.project, self.project], views, lambda z: self.criterion(z[0], z[1])
