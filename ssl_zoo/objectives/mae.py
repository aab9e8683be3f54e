"""MAE (He et al., 2021): encode a random 25% of the patches, decode all
positions, and regress the normalised pixels of the masked patches.

The backbone's timm ViT runs through lightly's ``MaskedVisionTransformerTIMM``
(which also gives it the MAE weight init and fixed sin-cos positions); the
decoder is lightly's ``MaskedVisionTransformerDecoderTIMM`` with a linear
embedding in and a linear pixel head out (lightly's replacement for the
deprecated ``MAEDecoderTIMM``). Features for evaluation come from the
unmasked encoder: ``pool: mean`` (patch tokens averaged, the default) or
``pool: cls``.
"""
from __future__ import annotations

from typing import Any

import torch
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F

from ssl_zoo.errors import UserError
from ssl_zoo.objectives.base import Objective


def masked_patch_loss(pred: torch.Tensor, images: torch.Tensor, idx_mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """MSE between predictions (B, M, p*p*C) and the per-patch normalised
    pixels of the masked patches ``idx_mask`` (B, M; patch indices, no prefix)."""
    target = utils.normalize_mean_var(utils.patchify(images, patch_size), dim=-1)
    return F.mse_loss(pred.float(), utils.get_at_index(target, idx_mask).float())


class MAE(Objective):
    name = "mae"

    def __init__(self, backbone, cfg, data):
        super().__init__(backbone, cfg, data)
        vit = backbone.model
        if not backbone.is_vit or not isinstance(vit, VisionTransformer):
            raise UserError(f"method=mae needs a timm VisionTransformer backbone (e.g. backbone=vit_tiny); "
                            f"got {backbone.name!r}")
        if vit.num_prefix_tokens > 1:
            raise UserError(f"method=mae supports ViTs with at most a class token; {backbone.name!r} has "
                            f"{vit.num_prefix_tokens} prefix tokens (register tokens)")
        if cfg.get("pool", "mean") not in ("mean", "cls") or (cfg.get("pool") == "cls" and not vit.num_prefix_tokens):
            raise UserError(f"method.pool={cfg['pool']!r}; accepted: mean, cls (cls needs a ViT with a class token)")
        self.mask_ratio = float(cfg["mask_ratio"])
        self.patch_size = vit.patch_embed.patch_size[0]
        self.prefix = vit.num_prefix_tokens
        self.view = self.make_view(cfg["views"])
        # shares its parameters with self.backbone: what MAE trains is what is evaluated
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)
        dim = int(cfg["decoder_dim"])
        self.decoder_embed = nn.Linear(vit.embed_dim, dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, embed_dim=dim, depth=int(cfg["decoder_depth"]),
            num_heads=int(cfg["decoder_heads"]), num_prefix_tokens=self.prefix)
        self.prediction_head = nn.Linear(dim, self.patch_size ** 2 * 3)

    def predict_masked(self, x: torch.Tensor, idx_keep: torch.Tensor, idx_mask: torch.Tensor) -> torch.Tensor:
        """Pixel predictions (B, M, p*p*3) at the masked positions of sequence ``idx_mask``."""
        tokens = self.decoder_embed(self.encoder.encode(images=x, idx_keep=idx_keep))
        # scatter the kept tokens into a full-length sequence; the decoder fills
        # the masked positions with its mask token
        full = tokens.new_zeros(len(x), self.encoder.sequence_length, tokens.shape[-1])
        full = utils.set_at_index(full, idx_keep, tokens)
        decoded = self.decoder(full, idx_mask=idx_mask)
        return self.prediction_head(utils.get_at_index(decoded, idx_mask))

    def training_step(self, batch: dict[str, Any], progress: float) -> dict[str, torch.Tensor]:
        x = self.view(batch["image"])
        idx_keep, idx_mask = utils.random_token_mask((len(x), self.encoder.sequence_length), self.mask_ratio,
                                                     mask_class_token=self.prefix == 0, device=x.device)
        pred = self.predict_masked(x, idx_keep, idx_mask)
        return {"loss": masked_patch_loss(pred, x, idx_mask - self.prefix, self.patch_size)}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.encode(images=images)
        if self.cfg.get("pool", "mean") == "cls":
            return tokens[:, 0]
        return tokens[:, self.prefix:].mean(dim=1)
