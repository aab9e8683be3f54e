"""Few-shot: k labelled examples per class drawn from train (seeded, per
class), classified by nearest class mean or by logistic regression whose lambda
is chosen by stratified k-fold cross-validation *inside the support set*;
mean and 95% CI (Student t) over seeds. The test split is only ever scored."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from ssl_zoo.errors import UserError
from ssl_zoo.eval.context import EvalContext, Result
from ssl_zoo.eval.linear import fit_logreg, standard_stats, threads_for
from ssl_zoo.eval.metrics import topk_accuracy


def sample_support(labels: np.ndarray, shots: int, seed: int, num_classes: int) -> np.ndarray:
    """``shots`` train indices per class (all of a class if it has fewer), a
    function of (seed, shots) only: the same seed gives the same support set."""
    rng = np.random.default_rng([seed, shots])
    picks = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            picks.append(rng.choice(idx, size=min(shots, len(idx)), replace=False))
    return np.sort(np.concatenate(picks))


def ncm_scores(support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cosine similarity to the L2-normalised mean of each class's normalised features."""
    sx, qx = F.normalize(support_x.float(), dim=1), F.normalize(query_x.float(), dim=1)
    means = torch.zeros(num_classes, sx.shape[1]).index_add_(0, support_y, sx)
    return qx @ F.normalize(means, dim=1).T


def choose_lambda(x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: Mapping[str, Any], seed: int) -> float:
    """Lambda by stratified k-fold CV on the support set alone (folds = min(shots, max_folds));
    at 1 shot there is nothing to hold out, so the fixed ``one_shot_lambda`` is used.
    All (fold, lambda) problems run as one batched L-BFGS fit."""
    from sklearn.model_selection import StratifiedKFold

    shots = int(np.bincount(y.numpy(), minlength=num_classes).min())
    grid = sorted((float(v) for v in cfg.get("lambdas", [1e-3, 1e-2, 1e-1, 1.0])), reverse=True)
    if shots < 2:
        return float(cfg.get("one_shot_lambda", 0.1))
    standardize = bool(cfg.get("standardize", True))
    folds = StratifiedKFold(n_splits=min(shots, int(cfg.get("max_folds", 4))), shuffle=True, random_state=seed)
    masks, means, stds = [], [], []
    for fit, _ in folds.split(x.numpy(), y.numpy()):
        mean, std = standard_stats(x[fit], standardize)
        mask = torch.zeros(len(y))
        mask[fit] = 1.0
        masks.append(mask)
        means.append(mean)
        stds.append(std)
    masks, means, stds = torch.stack(masks), torch.stack(means), torch.stack(stds)
    held, correct, model = masks.T == 0, [], None
    for lam in grid:  # all folds of one lambda in one fit; warm start from the stronger lambda
        model = fit_logreg(x, y, num_classes, [lam] * len(masks), weights=masks, mean=means, std=stds,
                           max_iter=int(cfg.get("max_iter", 100)), init=model)
        correct.append(((model.scores(x).argmax(2) == y[:, None]) & held).sum().item())
    return grid[int(np.argmax(correct))]  # first maximum = strongest lambda on ties


def logistic_scores(support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor, num_classes: int,
                    cfg: Mapping[str, Any], seed: int) -> tuple[torch.Tensor, float]:
    lam = choose_lambda(support_x, support_y, num_classes, cfg, seed)
    mean, std = standard_stats(support_x, bool(cfg.get("standardize", True)))
    model = fit_logreg(support_x, support_y, num_classes, [lam], mean=mean, std=std,
                       max_iter=int(cfg.get("max_iter", 100)))
    return model.scores(query_x)[:, 0], lam


def mean_ci95(values: list[float]) -> tuple[float, float | None]:
    """Mean and half-width of the 95% Student-t interval over seeds."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), None
    return float(v.mean()), float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def few_shot(ctx: EvalContext, cfg: Mapping[str, Any]) -> list[Result]:
    kind = str(cfg.get("feature", "backbone"))
    train, test = ctx.features("train", kind), ctx.features("test", kind)
    seeds = [int(cfg.get("seed", ctx.seed)) + i for i in range(int(cfg.get("seeds", 5)))]
    classifiers = list(cfg.get("classifiers", ["ncm", "logistic"]))
    unknown = [c for c in classifiers if c not in ("ncm", "logistic")]
    if unknown:
        raise UserError(f"unknown eval.few_shot.classifiers {unknown}; available: ncm, logistic")
    with threads_for(1, 1, 1):  # support sets are tiny: one thread, set once
        return _few_shot(ctx, cfg, kind, train, test, seeds, classifiers)


def _few_shot(ctx, cfg, kind, train, test, seeds, classifiers) -> list[Result]:
    labels, out = train.y.numpy(), []
    for shots in (int(k) for k in cfg.get("shots", [1, 2, 4, 8, 16])):
        accs: dict[str, list[float]] = {c: [] for c in classifiers}
        lambdas: list[float] = []
        for seed in seeds:
            idx = torch.as_tensor(sample_support(labels, shots, seed, ctx.num_classes))
            sx, sy = train.x[idx], train.y[idx]
            for clf in classifiers:
                if clf == "ncm":
                    scores = ncm_scores(sx, sy, test.x, ctx.num_classes)
                else:
                    scores, lam = logistic_scores(sx, sy, test.x, ctx.num_classes, cfg, seed)
                    lambdas.append(lam)
                accs[clf].append(topk_accuracy(scores, test.y, 1))
        for clf, values in accs.items():
            mean, ci = mean_ci95(values)
            extra = {"n_train": len(idx), "feature_kind": kind, "per_seed": values}
            if clf == "logistic":
                extra["lambdas"] = lambdas
            out.append(Result("few_shot", "top1", mean, {"classifier": clf, "feature": kind}, shots=shots,
                              ci95=ci, seeds=len(values), extra=extra))
    return out
