"""Zero-shot classification with text prompts (the CLIP protocol).

Per class: embed every template filled with the class name, L2-normalise,
average, L2-normalise again; logits = 100 * cos(image, class). Image features
are the *projected* embedding (FeatureSource.encode_zero_shot_image). Models
without a text tower are skipped with a log line, never an error.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from ssl_zoo.data.prompts import classnames_for, prompt_hash, templates_for
from ssl_zoo.eval.context import EvalContext, Result
from ssl_zoo.eval.metrics import classification_metrics

log = logging.getLogger(__name__)


@torch.no_grad()
def class_embeddings(encode_text, classnames: list[str], templates: list[str]) -> torch.Tensor:
    """(C, D) unit-norm class embeddings from template ensembling."""
    rows = []
    for name in classnames:
        emb = F.normalize(encode_text([t.format(c=name) for t in templates]).float(), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows).cpu()


def zero_shot_scores(image_x: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    return 100.0 * F.normalize(image_x.float(), dim=-1) @ class_emb.T


def zero_shot(ctx: EvalContext, cfg: Mapping[str, Any]) -> list[Result]:
    src = ctx.source
    if src.encode_text is None or getattr(src, "encode_zero_shot_image", None) is None:
        log.info("zero_shot skipped for %s: the model has no text tower", src.objective)
        return []
    names = classnames_for(ctx.dataset, ctx.classnames, bool(cfg.get("classnames")))
    templates = templates_for(ctx.dataset, cfg.get("templates"))
    test = ctx.features("test", "projected")
    scores = zero_shot_scores(test.x, class_embeddings(src.encode_text, names, templates))
    metrics = classification_metrics(scores, test.y, len(names))
    pred = scores.argmax(1)
    per_class = {n: (pred[test.y == c] == c).float().mean().item() for c, n in enumerate(names) if (test.y == c).any()}
    extra = {"n_train": 0, "prompt_hash": prompt_hash(names, templates), "feature_kind": "projected"}
    return [Result("zero_shot", m, v, {"templates": len(templates)},
                   extra={**extra, **({"per_class": per_class} if m == "top1" else {})})
            for m, v in metrics.items()]
