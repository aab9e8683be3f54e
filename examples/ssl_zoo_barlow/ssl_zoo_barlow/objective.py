"""Barlow Twins: make the cross-correlation of two views' embeddings the identity.

Everything shared (backbone, data, optimizer, precision, checkpoints,
evaluation) comes from ssl_zoo; this file holds only the method.
"""
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from ssl_zoo.objectives.base import Objective


class BarlowTwins(Objective):
    name = "barlow"

    def __init__(self, backbone, cfg, data):
        super().__init__(backbone, cfg, data)
        self.view = self.make_view(cfg["views"])
        self.head = BarlowTwinsProjectionHead(backbone.dim, int(cfg["hidden_dim"]), int(cfg["out_dim"]))
        self.criterion = BarlowTwinsLoss(lambda_param=float(cfg["lambda_param"]))

    def training_step(self, batch, progress):
        images = batch["image"]
        z0 = self.head(self.backbone(self.view(images)))
        z1 = self.head(self.backbone(self.view(images)))
        return {"loss": self.criterion(z0, z1)}
