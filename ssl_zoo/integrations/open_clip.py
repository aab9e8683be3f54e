"""open_clip models as feature sources: image tower, text tower, tokenizer and
the model's own preprocessing (image size, mean, std).

``model=open_clip model.name=ViT-L-14 model.pretrained=openai`` goes through
open_clip's own download path (needs the hub once); ``model.pretrained=FILE``
loads a local file, which open_clip reads with ``weights_only=True`` (or as
safetensors), so a weight file cannot run code. ``model.config=FILE.json``
registers a custom architecture (its file stem is then a valid ``model.name``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from ssl_zoo.data.views import EvalTransform
from ssl_zoo.errors import UserError
from ssl_zoo.eval.features import FeatureSource


class OpenClipEncoders(torch.nn.Module):
    """Holds the model; encodes images (pre- or post-projection) and captions."""

    def __init__(self, model: torch.nn.Module, tokenizer):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled image features before the projection (ViT towers); towers whose
        projection cannot be split off (ResNet attention pool) give encode_image."""
        visual = self.model.visual
        proj = getattr(visual, "proj", None)
        if not isinstance(proj, torch.Tensor):
            return self.encode_image(x)
        visual.proj = None
        try:
            return visual(x)
        finally:
            visual.proj = proj

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.encode_text(self.tokenizer(captions).to(device))


def load_open_clip(name: str, pretrained: str | None, config: str | None = None):
    import open_clip

    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise UserError(f"model.config={config}: no such file (an open_clip model config JSON)")
        open_clip.add_model_config(path)
    if name not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {name!r}; available e.g. ViT-B-32, ViT-L-14 "
                        f"(see open_clip.list_models(), or give model.config=FILE.json)")
    if pretrained and not Path(pretrained).expanduser().is_file() and "/" in pretrained:
        raise UserError(f"model.pretrained={pretrained}: no such file (give a weight file or an open_clip tag)")
    pretrained = str(Path(pretrained).expanduser()) if pretrained and Path(pretrained).expanduser().is_file() else pretrained
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None, weights_only=True)
    except Exception as exc:  # unpickling refusals, truncated zips, shape mismatches, unknown tags
        from ssl_zoo.eval.models import weight_error

        raise weight_error(pretrained, exc) from None
    return model, open_clip.get_tokenizer(name)


def open_clip_source(cfg: Mapping[str, Any], bundle=None) -> FeatureSource:
    from ssl_zoo.build import weights_key

    m = cfg["model"]
    name, pretrained = str(m["name"]), m.get("pretrained")
    model, tokenizer = load_open_clip(name, pretrained, m.get("config"))
    import open_clip

    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    enc = OpenClipEncoders(model, tokenizer).eval()
    tag = Path(pretrained).name if pretrained else "random"
    return FeatureSource(
        objective=f"open_clip:{name}/{tag}", backbone=name, pretrain_data=None,
        transform=EvalTransform(size, tuple(pp.get("mean")), tuple(pp.get("std"))),
        encode=enc.encode_backbone, module=enc,
        encode_text=enc.encode_text, encode_zero_shot_image=enc.encode_image, key=weights_key(model),
        info={"weights": str(pretrained)})
