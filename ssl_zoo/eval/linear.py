"""Linear probe: L2-regularised multinomial logistic regression on frozen
features (the CLIP paper protocol), made fast.

Objective, for n samples:  mean_i CE(z_i W + b, y_i) + (lam / 2) ||W||_F^2,
z = standardised features, bias not penalised. This is exactly sklearn's
``LogisticRegression(C=1 / (n * lam))``, whose objective is
C * sum_i CE + ||W||^2 / 2 — the same function scaled by 1 / (n C). The
solver is sklearn's too (scipy's L-BFGS-B, same tolerance and stopping rule);
only the loss and gradient are computed differently, in torch.

Speed (benchmarks/linear_probe.py, docs/performance.md): the standardisation
is folded into the weights, so an evaluation is two products with the raw
features, done by oneDNN on features laid out once (products.py), in bf16
around fp32 anchors (LogRegProblem); the lambda sweep warm-starts each fit
from the previous (stronger) lambda and reuses the prepared features and the anchor. The few-shot
folds of one lambda share one run over the sum of their objectives
(independent problems of similar conditioning: same minimisers).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from ssl_zoo.errors import UserError
from ssl_zoo.eval.context import EvalContext, Result
from ssl_zoo.eval.metrics import classification_metrics
from ssl_zoo.eval.products import FeatureProducts, bf16_onednn_ok

SMALL_PROBLEM = 1 << 24  # n * D * C below this: one thread beats two (thread sync costs more than the matmul)


def is_large(n: int, dim: int, outputs: int) -> bool:
    """n * D * C at or above SMALL_PROBLEM: worth two threads, bf16 and preparing the features."""
    return n * dim * outputs >= SMALL_PROBLEM


def probe_products(x: torch.Tensor, num_classes: int, bf16: bool, split: int | None = None) -> FeatureProducts:
    """The products of a fit's evaluations: laid out once for large problems (packing costs
    more than it saves on small ones), in bf16 or fp32."""
    mode = "pack" if is_large(*x.shape, num_classes) else "plain"
    return FeatureProducts(x, torch.bfloat16 if bf16 else torch.float32, mode, split=split)


@functools.lru_cache(maxsize=1)
def _blas_threads():
    """One threadpoolctl controller: building one scans the loaded libraries (~2 ms),
    too much for every few-shot fit. scipy.optimize is imported first so its BLAS is seen."""
    import scipy.optimize  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def threads_for(n: int, dim: int, num_classes: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Threads for a fit. Small CPU fits run torch single-threaded: OpenMP
    spin-waits made 2 threads 5x (5,000 x 512) to 15x (digits) slower than 1 on
    2 cores; decided by problem size only, so a result never depends on machine
    load. The BLAS under scipy's L-BFGS-B (dot products of a few thousand
    numbers) always gets one thread: its idle threads spin and took a core from
    torch's matmuls (the 50,000 x 512 probe ran 2x slower)."""
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu" and not is_large(n, dim, num_classes) and before != 1:
        torch.set_num_threads(1)
    try:
        with _blas_threads().limit(limits=1, user_api="blas"):
            yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def standard_stats(x: torch.Tensor, enabled: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of the fitting set only (never the test split); identity when disabled."""
    if not enabled:
        return torch.zeros(x.shape[1], device=x.device), torch.ones(x.shape[1], device=x.device)
    mean = x.float().mean(0)
    rows = min(len(x), 4096)
    sq, ones = torch.zeros_like(mean), torch.ones(rows, device=x.device)
    buf = torch.empty(rows, x.shape[1], device=x.device)
    for chunk in x.split(rows):  # two-pass std in row chunks: ~8x faster than x.std(0) on (n, D) CPU tensors
        d = torch.sub(chunk.float(), mean, out=buf[:len(chunk)]).square_()
        sq.addmv_(d.T, ones[:len(chunk)])
    return mean, (sq / max(len(x) - 1, 1)).sqrt().clamp_min(1e-6)


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
        """(n, P, C) class scores of raw features x (n, D); centred first (see LogRegProblem)."""
        m0 = self.mean[0]
        v, c = self.raw(self.w, self.b, self.mean - m0, self.std)
        P, D, C = v.shape
        z = x.float() - m0
        mode = "dense" if is_large(*z.shape, P * C) else "plain"
        return FeatureProducts(z, mode=mode).logits(v.permute(0, 2, 1).reshape(P * C, D)).T.reshape(-1, P, C) + c


class LogRegProblem:
    """P problems on shared raw features x (n, D): for each p, the weighted mean
    CE of ``x V_p + c_p`` (V = W / std, the standardisation folded in) plus
    ``lam_p / 2 ||W_p||^2``, solved by scipy's L-BFGS-B (sklearn's solver: the
    same iterations and stopping rule) with loss and gradient computed in torch.

    ``weights`` (P, n) selects each problem's samples (None: all); ``mean``/``std``
    (P, D) or (D,) standardise (None: none). Per-sample arrays are (P*C, n):
    a softmax over the C rows of a contiguous block is ~10x faster than over (n, C).

    The two products of an evaluation go through ``FeatureProducts`` (x laid out
    once for oneDNN on CPU). ``bf16``: they read a bf16 copy of x (made once, so
    a lambda sweep reuses it; ~2x the speed of fp32). A bf16 *output* would be
    too coarse: the CE gradient nearly cancels the penalty's, and a rounded loss
    stalls the line search. So
    logits and CE gradient are kept in fp32 at an anchor (the last accepted
    iterate; exact fp32 at the first fit) and only the change from it goes
    through bf16: ``logits = L_a + (V - V_a) x_bf16``, ``grad = g_a + x_bf16 (G - G_a)``.
    The changes are small, so their rounding error is too. Logits and gradient
    depend on the weights only, not on lambda, so the anchor carries over from
    one fit to the next warm-started one."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, weights: torch.Tensor | None = None,
                 mean: torch.Tensor | None = None, std: torch.Tensor | None = None, bf16: bool = False,
                 products: FeatureProducts | None = None, centered: bool = False):
        # Work on centred features: the folded standardisation (V = W / std, c = b - mean V) on
        # features far from zero cancels catastrophically (DINO's: |x| up to 2.9, std 0.003; a
        # constant offset feature turned the gradient into noise / 1e-6), and bf16 keeps 8 bits
        # of |x|. ``centered``: x is centred already (the caller's own copy), use it as is.
        x = x.float()
        self.shift = torch.zeros(x.shape[1], device=x.device) if centered else x.mean(0)
        self.x = x if centered else x - self.shift
        n, D = self.x.shape
        self.P = 1 if weights is None else len(weights)
        self.C, self.bf16 = num_classes, bf16
        dev = self.x.device
        weights = torch.ones(self.P, n, device=dev) if weights is None else weights.to(dev, torch.float32)
        self.weights = (weights / weights.sum(1, keepdim=True))[:, None, :]  # (P, 1, n): each loss is a mean
        self.mean = torch.zeros(self.P, D, device=dev) if mean is None else mean.to(dev).float().expand(self.P, D)
        self.centred_mean = self.mean - self.shift  # the standardisation in the centred coordinates
        self.std = torch.ones(self.P, D, device=dev) if std is None else std.to(dev).expand(self.P, D)
        self.y = y.to(dev).view(1, 1, n).expand(self.P, 1, n)
        self.onehot = F.one_hot(y.to(dev), num_classes).T.float()[None]  # (1, C, n)
        # ``products``: prebuilt ones over these rows (e.g. the head of a larger set's). bf16's exact
        # fp32 anchors are few per fit: oneDNN on x as it is, nothing to prepare.
        self.products = probe_products(self.x, num_classes, bf16) if products is None else products
        dense = "dense" if is_large(n, D, num_classes) else "plain"
        self.exact_products = FeatureProducts(self.x, mode=dense) if bf16 else self.products
        self.anchor = self.last = None

    def _unpack(self, theta: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(theta).to(self.x.device, torch.float32)
        P, D, C = self.P, self.x.shape[1], self.C
        return t[:P * D * C].view(P, D, C), t[P * D * C:].view(P, C)

    def _softmax_grad(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted CE summed over problems (fp64) and dLoss/dlogits (P*C, n) of logits (P*C, n)."""
        logp = torch.log_softmax(logits.view(self.P, self.C, -1), 1)
        ce = -(self.weights * logp.gather(1, self.y)).double().sum()  # fp64: late steps change it by < 1 fp32 ulp
        g = logp.exp_().sub_(self.onehot).mul_(self.weights)
        return ce, g.view(self.P * self.C, -1)

    def _exact(self, rows: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(logits, CE, dL/dlogits, dCE/dV as (P*C, D)) in fp32; rows = V as (P*C, D)."""
        if rows.any():
            logits = self.exact_products.logits(rows) + c.reshape(-1, 1)
        else:  # the usual first point, W = 0
            logits = c.reshape(-1, 1).expand(-1, len(self.x)).contiguous()
        ce, g = self._softmax_grad(logits)
        return logits, ce, g, self.exact_products.grad(g)

    def _anchored(self, rows: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows_a, c_a, logits_a, g_a, gv_a = self.anchor
        logits = self.products.logits(rows - rows_a).float().add_(logits_a).add_((c - c_a).reshape(-1, 1))
        ce, g = self._softmax_grad(logits)
        gv = self.products.grad(g - g_a).float().add_(gv_a)
        return logits, ce, g, gv

    def loss_grad(self, theta: np.ndarray, lams: torch.Tensor) -> tuple[float, np.ndarray]:
        w, b = self._unpack(theta)
        v, c = LogReg.raw(w, b, self.centred_mean, self.std)
        P, D, C = v.shape
        rows = v.permute(0, 2, 1).reshape(P * C, D)
        if self.bf16 and self.anchor is None:
            logits, _, g, gv = self._exact(rows, c)
            self.anchor = (rows, c, logits, g, gv)
        logits, ce, g, gv = self._anchored(rows, c) if self.bf16 else self._exact(rows, c)
        gc = g.view(P, C, -1).sum(2)
        # back through V = W / std, c = b - mean V
        gw = (gv.view(P, C, D).permute(0, 2, 1) - self.centred_mean[:, :, None] * gc[:, None, :]) / self.std[:, :, None]
        gw += lams[:, None, None] * w
        loss = ce + 0.5 * (lams * w.pow(2).sum((1, 2))).double().sum()
        self.last = (theta.astype(np.float32), rows, c, logits, g, gv)  # the weights as evaluated (fp32)
        return float(loss), torch.cat([gw.reshape(-1), gc.reshape(-1)]).double().cpu().numpy()

    def _accept(self, theta: np.ndarray) -> None:
        """After each iteration: the accepted iterate (scipy's last evaluation) becomes the anchor."""
        if self.bf16:
            self.anchor = self.last[1:] if np.array_equal(self.last[0], theta.astype(np.float32)) else None

    def fit(self, lams, *, init: "LogReg | None" = None, max_iter: int = 500, tol: float = 1e-4,
            exact: bool = False) -> "LogReg":
        """``tol``: stop when every gradient entry is below it (sklearn's default tol, 1e-4, and rule).
        ``exact`` (bf16 only): afterwards, restart from the solution with a fresh exact fp32 anchor
        until the exact gradient meets ``tol`` — so rounding x to bf16 cannot move the optimum
        (it did by ~4e-4 in gradient on digits' 1,400 heavy-tailed pixel features)."""
        from scipy.optimize import minimize

        lams = torch.as_tensor(lams, dtype=torch.float32, device=self.x.device).reshape(-1).expand(self.P)
        D = self.x.shape[1]
        theta0 = (np.concatenate([init.w.reshape(-1).cpu().numpy(), init.b.reshape(-1).cpu().numpy()])
                  if init else np.zeros(self.P * (D + 1) * self.C)).astype(np.float64)
        if self.anchor is not None and not np.array_equal(self.last[0], theta0.astype(np.float32)):
            self.anchor = None  # not a warm start from this problem's last fit
        options = {"maxiter": max_iter, "gtol": tol, "ftol": 64 * np.finfo(float).eps, "maxls": 50}
        with threads_for(len(self.x), D, self.P * self.C, self.x.device):
            res = minimize(self.loss_grad, theta0, args=(lams,), jac=True, method="L-BFGS-B", callback=self._accept,
                           options=options)
            for _ in range(3 if exact and self.bf16 else 0):
                self.anchor = None  # the next evaluation is exact fp32; it ends the loop if it meets tol
                res = minimize(self.loss_grad, res.x, args=(lams,), jac=True, method="L-BFGS-B",
                               callback=self._accept, options=options)
                if res.nit == 0:
                    break
        self._accept(res.x)
        w, b = self._unpack(res.x)
        return LogReg(w.clone(), b.clone(), self.mean, self.std)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, lams, *, weights: torch.Tensor | None = None,
               mean: torch.Tensor | None = None, std: torch.Tensor | None = None, max_iter: int = 500,
               tol: float = 1e-4, init: LogReg | None = None, bf16: bool = False) -> LogReg:
    """One-off fit of ``len(lams)`` problems (see LogRegProblem)."""
    lams = list(np.atleast_1d(np.asarray(lams, dtype=float)))
    if weights is None and len(lams) > 1:
        weights = torch.ones(len(lams), len(x))
    problem = LogRegProblem(x, y, num_classes, weights=weights, mean=mean, std=std, bf16=bf16)
    return problem.fit(lams, init=init, max_iter=max_iter, tol=tol)


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


def use_bf16(setting: Any, x: torch.Tensor, num_classes: int) -> bool:
    """``auto``: bf16 products only for problems big enough to gain (n*D*C >= SMALL_PROBLEM)
    on hardware with bf16 arithmetic (CUDA, or a CPU whose oneDNN has it: elsewhere bf16 is
    emulated and slower than fp32); small ones stay fp32, where rounding the features would
    move weakly regularised optima."""
    if isinstance(setting, bool):
        return setting
    if str(setting).lower() == "auto":
        fast = x.device.type != "cpu" or bf16_onednn_ok(x)
        return fast and is_large(*x.shape, num_classes)
    raise UserError(f"eval.linear_probe.bf16={setting!r}: expected auto, true or false")


def val_top1(models: list[LogReg], x: torch.Tensor, y: torch.Tensor, mean, std) -> torch.Tensor:
    """Top-1 of each single-problem model on (x, y), in one matmul."""
    k = len(models)
    stacked = LogReg(torch.cat([m.w for m in models]), torch.cat([m.b for m in models]), mean.expand(k, -1),
                     std.expand(k, -1))
    return (stacked.scores(x).argmax(2) == y[:, None]).float().mean(0)


def _linear_probe_scores(train_x, train_y, test_x, num_classes, cfg, seed):
    max_iter, tol = int(cfg.get("max_iter", 500)), float(cfg.get("tol", 1e-4))
    standardize, bf16 = bool(cfg.get("standardize", True)), use_bf16(cfg.get("bf16", "auto"), train_x, num_classes)
    fit_idx, val_idx = stratified_val_split(train_y.cpu().numpy(), float(cfg.get("val_fraction", 0.2)), seed)
    order = torch.as_tensor(np.concatenate([fit_idx, val_idx]), device=train_x.device)
    x, y, n_fit = train_x[order].float(), train_y[order], len(fit_idx)  # a copy: fitting rows first, then val
    shift = x[:n_fit].mean(0)
    x -= shift  # centred in place (see LogRegProblem); the test features get the same shift
    lambdas = lambda_grid(cfg)
    mean, std = standard_stats(x[:n_fit], standardize)
    # prepared once: the sweep uses the fitting rows, the final fit all
    products = probe_products(x, num_classes, bf16, split=n_fit)
    sweep = LogRegProblem(x[:n_fit], y[:n_fit], num_classes, mean=mean, std=std, bf16=bf16,
                          products=products.head(), centered=True)
    models, init = [], None
    for lam in lambdas:  # strong to weak, each warm-started from the last
        init = sweep.fit([lam], init=init, max_iter=max_iter, tol=tol)
        models.append(init)
    val_acc = val_top1(models, x[n_fit:], y[n_fit:], mean, std)
    del sweep
    best = int(torch.argmax(val_acc))  # first maximum: the strongest lambda among ties
    mean, std = standard_stats(x, standardize)  # final fit on train + val, warm-started
    final = LogRegProblem(x, y, num_classes, mean=mean, std=std, bf16=bf16, products=products, centered=True).fit(
        [lambdas[best]], init=LogReg(models[best].w, models[best].b, mean, std), max_iter=max_iter, tol=tol,
        exact=True)
    return final.scores(test_x.float() - shift)[:, 0], lambdas[best], dict(zip(lambdas, val_acc.tolist()))


def linear_probe(ctx: EvalContext, cfg: Mapping[str, Any]) -> list[Result]:
    kind = str(cfg.get("feature", "backbone"))
    train, test = ctx.features("train", kind), ctx.features("test", kind)
    dev = ctx.device
    scores, lam, accs = linear_probe_scores(train.x.to(dev), train.y.to(dev), test.x.to(dev), ctx.num_classes,
                                            cfg, int(cfg.get("seed", ctx.seed)))
    extra = {"lambda": lam, "val_top1": accs[lam], "feature_kind": kind}
    return [Result("linear_probe", m, v, {"feature": kind}, extra=extra)
            for m, v in classification_metrics(scores.cpu(), test.y, ctx.num_classes).items()]
