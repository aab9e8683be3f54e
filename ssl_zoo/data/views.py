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
        self.size = int(size)
        # kornia draws the per-sample crop boxes; torchvision's roi_align resamples them in one
        # kernel (bit-for-bit kornia's bilinear crop, ~4x faster on CPU: see tests/test_data_views.py)
        self.crop = K.RandomResizedCrop((size, size), scale=tuple(r.get("crop_scale", (0.2, 1.0))))
        ops: list[nn.Module] = []
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
            ops.append(K.RandomGaussianBlur((k, k), tuple(r.get("blur_sigma", (0.1, 2.0))), p=float(r["blur"])))
        if r.get("solarize", 0.0):
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=float(r["solarize"])))
        ops.append(K.Normalize(torch.tensor(mean), torch.tensor(std)))
        self.augment = K.AugmentationSequential(*ops)

    def crop_boxes(self, src: torch.Tensor) -> torch.Tensor:
        """(B, 5) roi_align boxes from kornia's crop corners ``src`` (B, 4, 2) as (x, y).
        Kornia maps the crop's corner pixel centres onto the output's corner pixel
        centres; roi_align samples bin centres, hence the half-bin shifts."""
        (x0, y0), (x1, y1), s = src[:, 0].T, src[:, 2].T, self.size
        wx, wy = (x1 - x0) / (s - 1), (y1 - y0) / (s - 1)
        bx0, by0 = x0 + 0.5 - 0.5 * wx, y0 + 0.5 - 0.5 * wy
        idx = torch.arange(len(src), dtype=src.dtype, device=src.device)
        return torch.stack([idx, bx0, by0, bx0 + s * wx, by0 + s * wy], 1)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import roi_align

        x = to_float_rgb(images).contiguous()
        boxes = self.crop_boxes(self.crop.forward_parameters(x.shape)["src"]).to(x.device, x.dtype)
        x = roi_align(x, boxes, (self.size, self.size), spatial_scale=1.0, sampling_ratio=1, aligned=True)
        return self.augment(x)
