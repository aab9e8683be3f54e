"""Build an objective (with its backbone) from a resolved config. Shared by
training and by loading a checkpoint for evaluation."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ssl_zoo.backbones import build_backbone
from ssl_zoo.data.datasets import DatasetBundle
from ssl_zoo.data.views import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from ssl_zoo.eval.features import FeatureSource
from ssl_zoo.objectives.base import DataInfo, Objective
from ssl_zoo.registry import OBJECTIVES


def data_info(data_cfg: Mapping[str, Any], classnames: list[str]) -> DataInfo:
    return DataInfo(int(data_cfg["image_size"]), list(classnames),
                    tuple(data_cfg.get("mean") or IMAGENET_MEAN), tuple(data_cfg.get("std") or IMAGENET_STD))


def build_objective(cfg: Mapping[str, Any], classnames: list[str]) -> Objective:
    cls = OBJECTIVES.get(cfg["method"]["name"])
    info = data_info(cfg["data"], classnames)
    return cls(build_backbone(cfg["backbone"], info.image_size), cfg["method"], info)


def weights_key(module: torch.nn.Module) -> str:
    """A cheap fingerprint of a module's weights (for the feature cache)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = t.detach().float().flatten().cpu()
        h.update(str((tuple(t.shape), t.sum().item(), t.abs().sum().item(), t[:16].tolist())).encode())
    return h.hexdigest()[:16]


def objective_source(objective: Objective, cfg: Mapping[str, Any], label: str | None = None) -> FeatureSource:
    """Evaluate an objective's encoder on the deterministic eval transform of its data."""
    info = objective.data
    return FeatureSource(
        objective=label or objective.name, backbone=cfg["backbone"]["name"], pretrain_data=cfg["data"]["name"],
        transform=EvalTransform(info.image_size, info.mean, info.std), encode=objective.encode, module=objective,
        encode_text=objective.encode_text if objective.has_text_tower else None,
        encode_zero_shot_image=objective.encode_image_projected if objective.has_text_tower else None,
        key=weights_key(objective))


def random_init_source(cfg: Mapping[str, Any], bundle: DatasetBundle) -> FeatureSource:
    """The same backbone, untrained (seeded with ``cfg.seed``)."""
    torch.manual_seed(int(cfg.get("seed", 0)))
    info = data_info(cfg["data"], bundle.classnames)
    backbone = build_backbone(cfg["backbone"], info.image_size)
    return FeatureSource("random_init", cfg["backbone"]["name"], None, EvalTransform(info.image_size, info.mean, info.std),
                         backbone, module=backbone, key=weights_key(backbone))


class _Pixels(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().div(255.0).flatten(1)


def pixels_source() -> FeatureSource:
    """Raw pixels at the dataset's own resolution, scaled to [0, 1] and flattened."""
    return FeatureSource("pixels", "pixels", None, _Pixels(), lambda x: x, key="pixels")
