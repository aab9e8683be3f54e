"""Feature extraction: batched, eval mode, no_grad, always float32 out."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@dataclass
class FeatureSource:
    """Anything that turns uint8 images into features for the protocols.

    ``transform`` maps a uint8 batch to the model input; ``encode`` maps that to
    (B, D) features. ``module`` (if any) is put in eval mode and moved to the
    device. ``encode_text`` (captions -> (N, D)) enables zero-shot; zero-shot
    image features come from ``encode_zero_shot_image`` when set. ``key``
    fingerprints the weights for the feature cache.
    """

    objective: str
    backbone: str
    pretrain_data: str | None
    transform: nn.Module
    encode: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module | None = None
    encode_text: Callable[[list[str]], torch.Tensor] | None = None
    # zero-shot image features (images -> (B, D) in encode_text's space); None: use ``encode``
    encode_zero_shot_image: Callable[[torch.Tensor], torch.Tensor] | None = None
    key: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Features:
    x: torch.Tensor  # (N, D) float32
    y: torch.Tensor  # (N,) int64


@torch.no_grad()
def extract(source: FeatureSource, dataset: Dataset, batch_size: int = 256, device: str = "cpu",
            bf16: bool = False) -> Features:
    if source.module is not None:
        source.module.to(device).eval()
    source.transform.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16) if bf16 else nullcontext()
    xs, ys = [], []
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        with autocast:
            feats = source.encode(source.transform(images))
        xs.append(feats.float().cpu())
        ys.append(torch.as_tensor(batch["label"]))
    return Features(torch.cat(xs), torch.cat(ys).long())
