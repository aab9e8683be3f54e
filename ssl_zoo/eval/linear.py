"""Linear probe: L2-regularised multinomial logistic regression on frozen
features, full-batch L-BFGS in torch (the CLIP paper protocol, made fast).

Objective, for n samples:  mean_i CE(z_i W + b, y_i) + (lam / 2) ||W||_F^2,
z = standardised features, bias not penalised. This is exactly sklearn's
``LogisticRegression(C=1 / (n * lam))``, whose objective is
C * sum_i CE + ||W||^2 / 2 — the same function scaled by 1 / (n C).

Speed: the standardisation is folded into the weights, so one L-BFGS
closure is one (n, D) x (D, C) matmul and its transpose on the raw features;
the lambda sweep warm-starts each fit from the previous (stronger) lambda; the
few-shot folds of one lambda share a single L-BFGS run over the sum of their
objectives (independent problems of similar conditioning: same minimisers).
Summing problems with *different* lambdas is slower (their conditioning
differs: 400 closures against ~20 per lambda), so lambdas stay sequential.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from ssl_zoo.eval.context import EvalContext, Result
from ssl_zoo.eval.metrics import classification_metrics

SMALL_PROBLEM = 1 << 24  # n * D * C below this: one thread beats two (thread sync costs more than the matmul)


@contextmanager
def threads_for(n: int, dim: int, num_classes: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run small CPU fits single-threaded: OpenMP spin-waits made 2 threads 5x
    (5,000 x 512) to 15x (digits) slower than 1 on a shared 2-core machine.
    Decided by problem size only (not by machine load), so a result never
    depends on what else was running. Set once per protocol: switching the
    thread count costs tens of milliseconds."""
    before = torch.get_num_threads()
    small = n * dim * num_classes < SMALL_PROBLEM
    if torch.device(device).type == "cpu" and small and before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def standard_stats(x: torch.Tensor, enabled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the fitting set only (never the test split); identity when disabled."""
    if not enabled:
        return torch.zeros(x.shape[1], device=x.device), torch.ones(x.shape[1], device=x.device)
    return x.mean(0), x.std(0).clamp_min(1e-6)


class LogReg:
    """P fitted linear classifiers in standardised coordinates: W (P, D, C), b (P, C)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.w, self.b, self.mean, self.std = w, b, mean, std

    @staticmethod
    def raw(w, b, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights acting on raw features: z W + b = x (W / std) + (b - (mean / std) W)."""
        v = w / std[:, :, None]
        return v, b - torch.einsum("pd,pdc->pc", mean, v)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(n, P, C) class scores of raw features x (n, D)."""
        v, c = self.raw(self.w, self.b, self.mean, self.std)
        P, D, C = v.shape
        return (x.float() @ v.permute(1, 0, 2).reshape(D, P * C)).view(-1, P, C) + c


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, lams, *, weights: torch.Tensor | None = None,
               mean: torch.Tensor | None = None, std: torch.Tensor | None = None, max_iter: int = 500,
               tol: float = 1e-4, init: LogReg | None = None, bf16: bool = False) -> LogReg:
    """Fit P = len(lams) independent problems on shared raw features x (n, D), labels y (n,).
    ``tol``: L-BFGS stops when every gradient entry is below it (sklearn's default tol is 1e-4 too).
    ``weights`` (P, n) selects each problem's samples (None: all); ``mean``/``std``
    (P, D) or (D,) standardise (None: no standardisation). ``bf16``: the matmuls in
    bfloat16 with fp32 accumulation (~4x faster on CPU; an approximate optimum)."""
    x = x.float()
    n, D = x.shape
    lams = torch.as_tensor(lams, dtype=torch.float32, device=x.device).reshape(-1)
    P = len(lams)
    weights = torch.ones(P, n, device=x.device) if weights is None else weights.to(x.device, torch.float32)
    weights = (weights / weights.sum(1, keepdim=True)).T.contiguous()  # (n, P): each problem's loss is a mean
    mean = torch.zeros(P, D, device=x.device) if mean is None else mean.to(x.device).expand(P, D)
    std = torch.ones(P, D, device=x.device) if std is None else std.to(x.device).expand(P, D)
    w = (init.w.clone() if init else torch.zeros(P, D, num_classes, device=x.device)).requires_grad_(True)
    b = (init.b.clone() if init else torch.zeros(P, num_classes, device=x.device)).requires_grad_(True)
    target = y.to(x.device)[:, None].expand(n, P).reshape(-1)
    xm, dtype = (x.bfloat16(), torch.bfloat16) if bf16 else (x, torch.float32)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=tol,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        v, c = LogReg.raw(w, b, mean, std)
        logits = (xm @ v.permute(1, 0, 2).reshape(D, P * num_classes).to(dtype)).float().view(n, P, num_classes) + c
        ce = F.cross_entropy(logits.reshape(n * P, num_classes), target, reduction="none").view(n, P)
        loss = (weights * ce).sum() + 0.5 * (lams * w.pow(2).sum((1, 2))).sum()
        loss.backward()
        return loss

    with torch.enable_grad(), threads_for(n, D, P * num_classes, x.device):
        opt.step(closure)
    return LogReg(w.detach(), b.detach(), mean, std)


def lambda_grid(cfg: Mapping[str, Any]) -> list[float]:
    """Log-spaced, strongest regularisation first (ties go to the stronger lambda)."""
    if cfg.get("lambdas"):
        return sorted((float(v) for v in cfg["lambdas"]), reverse=True)
    lo, hi, num = float(cfg.get("lambda_min", 1e-6)), float(cfg.get("lambda_max", 1.0)), int(cfg.get("num_lambdas", 7))
    return sorted(np.logspace(np.log10(lo), np.log10(hi), num).tolist(), reverse=True)


def stratified_val_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    fit, val = train_test_split(idx, test_size=fraction, random_state=seed, stratify=y)
    return np.sort(fit), np.sort(val)


def linear_probe_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
                        cfg: Mapping[str, Any], seed: int = 0) -> tuple[torch.Tensor, float, dict[float, float]]:
    """The whole protocol on tensors: sweep lambda on a stratified seeded val
    split of train, refit on all of train, return (test scores, lambda, val top-1 per lambda)."""
    with threads_for(*train_x.shape, num_classes, train_x.device):
        return _linear_probe_scores(train_x, train_y, test_x, num_classes, cfg, seed)


def _linear_probe_scores(train_x, train_y, test_x, num_classes, cfg, seed):
    max_iter, tol = int(cfg.get("max_iter", 500)), float(cfg.get("tol", 1e-4))
    standardize = bool(cfg.get("standardize", True))
    fit_idx, val_idx = stratified_val_split(train_y.cpu().numpy(), float(cfg.get("val_fraction", 0.2)), seed)
    fit_idx, val_idx = torch.as_tensor(fit_idx, device=train_x.device), torch.as_tensor(val_idx, device=train_x.device)
    lambdas = lambda_grid(cfg)
    mean, std = standard_stats(train_x[fit_idx], standardize)
    models, init = [], None
    bf16 = bool(cfg.get("sweep_bf16", True))
    for lam in lambdas:  # strong to weak, each warm-started from the last
        init = fit_logreg(train_x[fit_idx], train_y[fit_idx], num_classes, [lam], mean=mean, std=std,
                          max_iter=max_iter, tol=tol, init=init, bf16=bf16)
        models.append(init)
    xv, yv = train_x[val_idx], train_y[val_idx]
    val_acc = torch.stack([(m.scores(xv)[:, 0].argmax(1) == yv).float().mean() for m in models])
    best = int(torch.argmax(val_acc))  # first maximum: the strongest lambda among ties
    mean, std = standard_stats(train_x, standardize)  # final fit on train + val, warm-started
    init = LogReg(models[best].w, models[best].b, mean, std)
    final = fit_logreg(train_x, train_y, num_classes, [lambdas[best]], mean=mean, std=std, max_iter=max_iter,
                       tol=tol, init=init)
    return final.scores(test_x)[:, 0], lambdas[best], dict(zip(lambdas, val_acc.tolist()))


def linear_probe(ctx: EvalContext, cfg: Mapping[str, Any]) -> list[Result]:
    kind = str(cfg.get("feature", "backbone"))
    train, test = ctx.features("train", kind), ctx.features("test", kind)
    dev = ctx.device
    scores, lam, accs = linear_probe_scores(train.x.to(dev), train.y.to(dev), test.x.to(dev), ctx.num_classes,
                                            cfg, int(cfg.get("seed", ctx.seed)))
    extra = {"lambda": lam, "val_top1": accs[lam], "feature_kind": kind}
    return [Result("linear_probe", m, v, {"feature": kind}, extra=extra)
            for m, v in classification_metrics(scores.cpu(), test.y, ctx.num_classes).items()]
