"""CLIP (Radford et al., 2021): image-text InfoNCE.

Image tower: the shared backbone + a linear projection. Text tower: see
ssl_zoo.text (open_clip's text transformer from scratch, or a frozen
all-MiniLM-L6-v2 with a trainable projection, LiT-style). Loss: open_clip's
ClipLoss, symmetric cross-entropy over the scaled cosine-similarity matrix,
with features gathered across processes with gradients, so N processes equal
one process on the combined batch.

Captions: a batch's own ``"caption"`` strings when the dataset has them, else
a random training template filled with the class name (ssl_zoo.data.captions).

Features: ``encode`` (kNN, linear probe, few-shot) is the backbone's pooled
output *before* the projection, like every other objective;
``encode_image_projected`` and ``encode_text`` live in the joint embedding
space and are what zero-shot compares.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from open_clip.loss import ClipLoss
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from ssl_zoo.data.captions import CAPTION_TEMPLATES, batch_captions, check_templates
from ssl_zoo.errors import UserError
from ssl_zoo.objectives.base import Objective
from ssl_zoo.text import build_text_tower


class CLIP(Objective):
    name = "clip"
    has_text_tower = True

    def __init__(self, backbone, cfg, data):
        super().__init__(backbone, cfg, data)
        embed_dim = int(cfg["embed_dim"])
        self.view = self.make_view(cfg["views"])
        self.image_proj = nn.Linear(backbone.dim, embed_dim, bias=False)
        self.text = build_text_tower(cfg["text"], embed_dim)
        scale = cfg.get("logit_scale") or {}
        # CLIP's parametrisation: a learnable log scale, init log(1/T), capped at max
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / float(scale.get("init_temperature", 0.07)))))
        self.max_logit_scale = float(scale.get("max", 100.0))
        self.templates = check_templates((cfg.get("captions") or {}).get("templates") or CAPTION_TEMPLATES)
        # local_loss: each process scores its own rows against all gathered columns
        self.criterion = ClipLoss(local_loss=bool(cfg.get("local_loss", True)), gather_with_grad=True)

    def encode_image_projected(self, images: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim) image embeddings in the joint space, not normalised."""
        return self.image_proj(self.backbone(images))

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """(N, embed_dim) text embeddings in the joint space, not normalised."""
        return self.text(list(captions))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def contrastive(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """ClipLoss of projected image and text embeddings (normalised here)."""
        if dist.is_available() and dist.is_initialized():  # DDP starts after the objective is built
            self.criterion.rank, self.criterion.world_size = dist.get_rank(), dist.get_world_size()
        return self.criterion(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), self.scale())

    def loss(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """The contrastive loss of already-augmented, normalised images and their captions."""
        return self.contrastive(self.encode_image_projected(images), self.encode_text(captions))

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
        if "caption" not in batch and not self.data.classnames:
            raise UserError("method=clip needs captions: a dataset with a 'caption' per image or with class names")
        captions = batch_captions(batch, self.data.classnames, self.templates)
        return self.view(batch["image"]), captions

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]:
        loss = self.loss(*self._inputs(batch))
        return {"loss": loss, "logit_scale": self.scale().detach()}

    def grad_cache_parts(self, batch: dict[str, Any], progress: float):
        """For trainer.grad_cache_chunk (ssl_zoo.gradcache): two towers, one loss."""
        images, captions = self._inputs(batch)
        return [self.encode_image_projected, self.encode_text], [images, captions], lambda z: self.contrastive(*z)
