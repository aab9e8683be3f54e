"""DINO (Caron et al., 2021): a student matches the centred, sharpened output
of an EMA teacher across multi-crop views.

Two global crops (the data's size) go through teacher and student; N local
crops (about half the size) through the student only. lightly provides the
head (``DINOProjectionHead``) and the loss (``DINOLoss``: centering, teacher
temperature). Schedules: teacher momentum cosine from ``momentum_start`` to 1,
teacher temperature linear warm-up over ``warmup_fraction`` of training, the
head's last layer frozen for ``freeze_last_layer`` epochs. Evaluation uses the
teacher backbone by default (as the DINO papers do; ``eval_network: student``).
"""
from __future__ import annotations

from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import linear_warmup_schedule
from timm.layers import Format
from torch import nn

from ssl_zoo.errors import UserError
from ssl_zoo.objectives.base import Objective
from ssl_zoo.objectives.momentum import cosine_momentum, ema_update, frozen_copy


def allow_any_image_size(vit: nn.Module) -> None:
    """What timm's ``dynamic_img_size=True`` sets up, applied to a built ViT, so
    that local crops smaller than the global ones share its weights (positional
    embeddings are resampled to the crop's grid; the global size is unchanged)."""
    vit.dynamic_img_size = True
    vit.patch_embed.strict_img_size = False
    vit.patch_embed.flatten = False
    vit.patch_embed.output_fmt = Format.NHWC


class DINO(Objective):
    name = "dino"

    def __init__(self, backbone, cfg, data):
        super().__init__(backbone, cfg, data)
        size = data.image_size
        self.local_size = int(cfg.get("local_size") or max(1, size // 2))
        self.n_local = int(cfg["n_local"])
        if backbone.is_vit:
            patch = backbone.model.patch_embed.patch_size[0]
            if self.local_size % patch:
                raise UserError(f"method.local_size={self.local_size} must be a multiple of the ViT patch size "
                                f"({patch}); e.g. method.local_size={max(patch, self.local_size // patch * patch)}")
            allow_any_image_size(backbone.model)
        views = cfg["views"]
        self.global_views = nn.ModuleList([self.make_view(views["global1"]), self.make_view(views["global2"])])
        self.local_view = self.make_view(views["local"], self.local_size)
        self.head = self.make_head(backbone.dim)
        self.teacher_backbone = frozen_copy(backbone)
        # a weight-normed layer cannot be deep-copied: build a twin and copy the weights
        self.teacher_head = self.make_head(backbone.dim)
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(int(cfg["out_dim"]), student_temp=float(cfg["student_temp"]),
                                  center_momentum=float(cfg["center_momentum"]))
        if cfg.get("eval_network", "teacher") not in ("teacher", "student"):
            raise UserError(f"method.eval_network={cfg['eval_network']!r}; accepted: teacher, student")

    def make_head(self, dim: int) -> DINOProjectionHead:
        c = self.cfg
        return DINOProjectionHead(dim, int(c["hidden_dim"]), int(c["bottleneck_dim"]), int(c["out_dim"]),
                                  batch_norm=bool(c.get("batch_norm", False)),
                                  freeze_last_layer=int(c["freeze_last_layer"]))

    def momentum(self, progress: float) -> float:
        return cosine_momentum(progress, float(self.cfg["momentum_start"]), float(self.cfg.get("momentum_end", 1.0)))

    def teacher_temp(self, progress: float) -> float:
        c = self.cfg
        return linear_warmup_schedule(progress, float(c["warmup_fraction"]), float(c["warmup_teacher_temp"]),
                                      float(c["teacher_temp"]))

    def loss(self, teacher_out: list[torch.Tensor], student_out: list[torch.Tensor], progress: float) -> torch.Tensor:
        """Cross-entropy of every student view against every other teacher view;
        updates the center from the teacher outputs."""
        return self.criterion(teacher_out, student_out, teacher_temp=self.teacher_temp(progress))

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]:
        images = batch["image"]
        n = len(images)
        # one forward per crop size: the views of a size are batched together
        globals_ = torch.cat([v(images) for v in self.global_views])
        student = [self.head(self.backbone(globals_))]
        if self.n_local:
            locals_ = torch.cat([self.local_view(images) for _ in range(self.n_local)])
            student.append(self.head(self.backbone(locals_)))
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(globals_)).chunk(2)
        loss = self.loss(list(teacher), list(torch.cat(student).split(n)), progress)
        return {"loss": loss, "momentum": torch.tensor(self.momentum(progress)),
                "teacher_temp": torch.tensor(self.teacher_temp(progress))}

    def before_optimizer_step(self, epoch: int) -> None:
        self.head.cancel_last_layer_gradients(epoch)

    def after_step(self, progress: float) -> None:
        ema_update([(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)], self.momentum(progress))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.cfg.get("eval_network", "teacher") == "student":
            return self.backbone(images)
        return self.teacher_backbone(images)
