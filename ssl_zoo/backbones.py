"""The one backbone factory: any timm model, adapted for small images.

Every objective trains the module returned by ``build_backbone``: a timm
model with its classifier removed, whose ``forward`` returns pooled features
of size ``backbone.dim``.
"""
from __future__ import annotations

from typing import Any, Mapping

import timm
import torch
from torch import nn

from ssl_zoo.errors import UserError
from ssl_zoo.registry import BACKBONES


class Backbone(nn.Module):
    """A timm model without head; ``forward(x) -> (B, dim)`` pooled features."""

    def __init__(self, model: nn.Module, name: str, is_vit: bool):
        super().__init__()
        self.model = model
        self.name = name
        self.is_vit = is_vit
        self.dim = int(model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features: (B, tokens, dim) for ViTs, (B, C, H, W) for CNNs."""
        return self.model.forward_features(x)


def _small_image_stem(model: nn.Module) -> None:
    """CIFAR-style stem: 3x3 stride-1 first conv and no max-pool, so a 32 px
    image is not reduced to 8 px before the first stage."""
    first = model.pretrained_cfg.get("first_conv", "conv1")
    if isinstance(first, (list, tuple)):
        first = first[0]
    parent, _, attr = first.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    conv = getattr(owner, attr, None)
    if not isinstance(conv, nn.Conv2d):
        raise UserError(f"backbone.small_stem=true needs a CNN with a first conv at {first!r}; "
                        f"{type(model).__name__} has none (set backbone.small_stem=false)")
    setattr(owner, attr, nn.Conv2d(conv.in_channels, conv.out_channels, 3, 1, 1, bias=conv.bias is not None))
    for name in ("maxpool", "stem_pool"):
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, nn.Identity())


def build_backbone(cfg: Mapping[str, Any], image_size: int) -> Backbone:
    """``cfg`` is the ``backbone`` config group: name, kwargs, small_stem,
    patch_size (ViTs), grad_checkpointing, channels_last, pretrained."""
    name = cfg["name"]
    if name in BACKBONES:  # a plugin backbone: a callable (cfg, image_size) -> Backbone
        return BACKBONES.get(name)(cfg, image_size)
    if not timm.is_model(name):
        raise UserError(f"unknown backbone {name!r}: not a timm model name "
                        f"(see `timm.list_models()`, e.g. resnet18, vit_tiny_patch16_224)")
    kwargs = dict(cfg.get("kwargs") or {})
    is_vit = "vit" in name or "deit" in name
    if is_vit:
        kwargs.setdefault("img_size", image_size)
        if cfg.get("patch_size"):
            kwargs["patch_size"] = int(cfg["patch_size"])
    model = timm.create_model(name, pretrained=bool(cfg.get("pretrained", False)), num_classes=0, **kwargs)
    if cfg.get("small_stem", False):
        if is_vit:
            raise UserError(f"backbone.small_stem=true is for CNNs; {name} is a ViT (set backbone.patch_size instead)")
        _small_image_stem(model)
    if cfg.get("grad_checkpointing", False):
        model.set_grad_checkpointing(True)
    if cfg.get("channels_last", False) and not is_vit:
        model = model.to(memory_format=torch.channels_last)
    return Backbone(model, name, is_vit)
