"""The batched kornia views draw random parameters per sample, not per batch."""
from __future__ import annotations

import torch

from ssl_zoo.data.views import View

RECIPE = {"crop_scale": [0.2, 1.0], "flip": 0.5,
          "jitter": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "p": 0.8}, "grayscale": 0.2}


def test_per_sample_random_parameters():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(64, -1, -1, -1).contiguous()
    view = View(RECIPE, 16)
    out = view(img)
    assert out.shape == (64, 3, 16, 16)
    flat = out.flatten(1)
    # identical inputs, different outputs: every pair of samples differs
    dist = torch.cdist(flat, flat) + torch.eye(64) * 1e9
    assert dist.min() > 1e-3
    params = {p.name: p.data for p in view.augment._params}
    crop = view.crop.forward_parameters(img.shape)  # the sampler View.forward draws its boxes from
    # a crop box per sample (integer boxes on 32 px: a few coincide; one per batch would give 1)
    assert len(torch.unique(crop["src"].reshape(64, -1), dim=0)) > 40
    flips = next(v for k, v in params.items() if "Flip" in k)["batch_prob"]
    assert 0 < flips.float().sum() < 64  # some flipped, some not
    # a second call draws new parameters
    assert not torch.allclose(view(img), out)


def test_view_normalises_with_dataset_stats():
    img = torch.full((8, 1, 8, 8), 255, dtype=torch.uint8)  # grayscale is repeated to RGB
    out = View({"crop_scale": [1.0, 1.0], "flip": 0.0}, 8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(img)
    assert torch.allclose(out, torch.full_like(out, (1.0 - 0.5) / 0.25), atol=1e-4)


def test_roi_align_crop_equals_kornia_crop():
    """The crop resample (torchvision roi_align) reproduces kornia's RandomResizedCrop on the same boxes."""
    from torchvision.ops import roi_align

    torch.manual_seed(1)
    x = torch.rand(32, 3, 40, 40)
    view = View(RECIPE, 24)
    params = view.crop.forward_parameters(x.shape)
    reference = view.crop(x, params=params)  # kornia's own warp
    boxes = view.crop_boxes(params["src"])
    ours = roi_align(x, boxes, (24, 24), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    assert torch.allclose(ours, reference, atol=1e-4)
