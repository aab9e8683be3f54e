"""The backbone factory on real timm models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_zoo.backbones import build_backbone
from ssl_zoo.errors import UserError


def test_cnn_small_image_stem_keeps_resolution():
    bb = build_backbone({"name": "resnet18", "small_stem": True, "channels_last": True}, 32)
    conv = bb.model.conv1
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1)
    assert isinstance(bb.model.maxpool, nn.Identity)
    assert bb.dim == 512 and not bb.is_vit
    # the first stage sees 32x32, so the last stage is 4x4 (not 1x1 as with the ImageNet stem)
    assert bb.forward_tokens(torch.randn(2, 3, 32, 32)).shape[-2:] == (4, 4)
    assert bb.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert bb(torch.randn(2, 3, 32, 32)).shape == (2, 512)


def test_vit_image_and_patch_size_and_feature_dim():
    bb = build_backbone({"name": "vit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 2}}, 16)
    assert bb.is_vit and bb.dim == 192
    assert bb.model.patch_embed.num_patches == 16
    assert bb.forward_tokens(torch.randn(3, 3, 16, 16)).shape == (3, 17, 192)  # CLS + 4x4 patches
    assert bb(torch.randn(3, 3, 16, 16)).shape == (3, 192)


def test_grad_checkpointing_switch_keeps_gradients_equal():
    torch.manual_seed(0)
    cfg = {"name": "vit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 2}}
    plain = build_backbone(cfg, 16)
    ckpt = build_backbone({**cfg, "grad_checkpointing": True}, 16)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.model.grad_checkpointing and not plain.model.grad_checkpointing
    x = torch.randn(2, 3, 16, 16)
    grads = []
    for bb in (plain, ckpt):
        bb.train()
        bb(x).square().sum().backward()
        grads.append(bb.model.patch_embed.proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_unknown_backbone_and_stem_on_a_vit_are_user_errors():
    with pytest.raises(UserError, match="not a timm model"):
        build_backbone({"name": "resnet_nonexistent"}, 32)
    with pytest.raises(UserError, match="small_stem"):
        build_backbone({"name": "vit_tiny_patch16_224", "small_stem": True, "patch_size": 4}, 16)
