"""Classification metrics from class scores."""
from __future__ import annotations

import torch


def topk_accuracy(scores: torch.Tensor, y: torch.Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == y[:, None]).any(dim=1).float().mean().item()


def mean_per_class_recall(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    pred = scores.argmax(1)
    recalls = [(pred[y == c] == c).float().mean().item() for c in range(num_classes) if (y == c).any()]
    return sum(recalls) / len(recalls)


def classification_metrics(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float]:
    """top1, top5 (only with >= 5 classes), mean_per_class_recall."""
    out = {"top1": topk_accuracy(scores, y, 1)}
    if num_classes >= 5:
        out["top5"] = topk_accuracy(scores, y, 5)
    out["mean_per_class_recall"] = mean_per_class_recall(scores, y, num_classes)
    return out
