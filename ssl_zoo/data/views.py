"""Batched view generation on the training device with per-sample random
parameters (kornia). One generic recipe covers every objective: crop, flip,
colour jitter, grayscale, blur, solarise; each objective's YAML sets its own.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import kornia.augmentation as K
import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1] with 3 channels (grayscale repeated)."""
    x = images.float().div_(255.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class EvalTransform(nn.Module):
    """Deterministic: resize to ``size`` and normalise. Used for feature extraction."""

    def __init__(self, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.size = int(size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float_rgb(images)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def describe(self) -> str:
        return f"resize{self.size}-norm{self.mean.flatten().tolist()}{self.std.flatten().tolist()}"


class View(nn.Module):
    """One random view of a uint8 batch: ``View(recipe, size)(images) -> float (B, 3, size, size)``."""

    def __init__(self, recipe: Mapping[str, Any], size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        r = dict(recipe)
        ops: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=tuple(r.get("crop_scale", (0.2, 1.0))))]
        if r.get("flip", 0.5):
            ops.append(K.RandomHorizontalFlip(p=float(r.get("flip", 0.5))))
        jitter = r.get("jitter")
        if jitter and float(jitter.get("p", 0.8)) > 0:
            ops.append(K.ColorJitter(float(jitter.get("brightness", 0.4)), float(jitter.get("contrast", 0.4)),
                                     float(jitter.get("saturation", 0.2)), float(jitter.get("hue", 0.1)),
                                     p=float(jitter.get("p", 0.8))))
        if r.get("grayscale", 0.0):
            ops.append(K.RandomGrayscale(p=float(r["grayscale"])))
        if r.get("blur", 0.0):
            k = max(3, (size // 10) | 1)  # odd kernel ~10% of the image, as in SimCLR
            ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=float(r["blur"])))
        if r.get("solarize", 0.0):
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=float(r["solarize"])))
        ops.append(K.Normalize(torch.tensor(mean), torch.tensor(std)))
        self.augment = K.AugmentationSequential(*ops)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.augment(to_float_rgb(images))
