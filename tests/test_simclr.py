"""SimCLR's loss against an independent implementation (pytorch-metric-learning)."""
from __future__ import annotations

import torch
from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent

from ssl_zoo.backbones import build_backbone
from ssl_zoo.objectives.base import DataInfo
from ssl_zoo.objectives.simclr import SimCLR

CFG = {"name": "simclr", "hidden_dim": 32, "out_dim": 16, "temperature": 0.2, "gather_distributed": False,
       "views": {"crop_scale": [0.3, 1.0], "flip": 0.5}}


def _objective():
    bb = build_backbone({"name": "vit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 1}}, 16)
    return SimCLR(bb, CFG, DataInfo(16))


def test_loss_equals_pytorch_metric_learning_ntxent():
    torch.manual_seed(0)
    objective = _objective()
    z0, z1 = torch.randn(12, 16), torch.randn(12, 16)
    ours = objective.criterion(z0, z1)
    # pml: 2N embeddings, sample i and i+N share a label; every other sample is a negative
    labels = torch.arange(12).repeat(2)
    ref = PMLNTXent(temperature=CFG["temperature"])(torch.cat([z0, z1]), labels)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_training_step_uses_two_different_views_of_the_batch():
    torch.manual_seed(0)
    objective = _objective()
    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    v0, v1 = objective.view(images), objective.view(images)
    assert v0.shape == (8, 3, 16, 16) and not torch.allclose(v0, v1)
    loss = objective.training_step({"image": images}, 0.0)["loss"]
    loss.backward()
    assert loss.item() > 0 and objective.backbone.model.patch_embed.proj.weight.grad is not None
