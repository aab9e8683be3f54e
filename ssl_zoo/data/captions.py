"""Training captions for class-labelled data (image-text objectives).

A labelled dataset without captions (digits, Fashion-MNIST, an image folder)
becomes image-caption pairs by filling a random template with the class name.
These templates are *training data*; the zero-shot *prompts* used for
evaluation live in ssl_zoo.data.prompts and are deliberately worded
differently, so zero-shot accuracy is not measured on the exact sentences the
text tower was trained on.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

CAPTION_TEMPLATES: tuple[str, ...] = (
    "{c}",
    "an image of {c}.",
    "a picture showing {c}.",
    "this is {c}.",
    "a small grayscale image of {c}.",
    "a blurry picture of {c}.",
    "there is {c} in this image.",
    "a centred image of {c}.",
)


def check_templates(templates: Sequence[str]) -> list[str]:
    from ssl_zoo.errors import UserError

    templates = [str(t) for t in templates]
    bad = [t for t in templates if "{c}" not in t]
    if not templates or bad:
        raise UserError(f"method.captions.templates: every template needs a {{c}} placeholder for the class name "
                        f"(got {bad[:3] if bad else 'an empty list'})")
    return templates


def batch_captions(batch: dict[str, Any], classnames: Sequence[str], templates: Sequence[str],
                   generator: torch.Generator | None = None) -> list[str]:
    """The batch's own ``"caption"`` strings when the dataset carries them,
    else ``template.format(c=classnames[label])`` with one random template per sample."""
    if "caption" in batch:
        return list(batch["caption"])
    labels = torch.as_tensor(batch["label"]).tolist()
    picks = torch.randint(len(templates), (len(labels),), generator=generator).tolist()
    return [templates[t].format(c=classnames[y]) for t, y in zip(picks, labels)]
