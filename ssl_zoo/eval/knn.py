"""Weighted kNN on L2-normalised features (Wu et al. 2018; the DINO and
solo-learn protocol): each of the k nearest train samples votes for its class
with weight exp(cos / T)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


@torch.no_grad()
def knn_predict_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
                       k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores (N_test, C) of the weighted vote."""
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    k = min(k, len(train_x))
    scores = []
    for start in range(0, len(test_x), chunk):
        sim = test_x[start:start + chunk] @ train_x.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(len(sim), num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_y[top_idx], weights)
        scores.append(votes)
    return torch.cat(scores)
