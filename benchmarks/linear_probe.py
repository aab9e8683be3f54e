"""Linear probe: ssl_zoo's sweep (scipy L-BFGS-B on torch bf16/fp32-anchored
loss and gradient) vs sklearn's L-BFGS doing the same sweep on the same
features, in one run (median of --repeats timed runs per side).

Both sides run the identical protocol: the same stratified seeded validation
split, z-scoring with fitting-set statistics, the same lambda grid (sklearn
C = 1 / (n * lambda), n = samples in that fit), lambda chosen on validation
top-1, final fit on train + val, test top-1 reported.

    python benchmarks/linear_probe.py            # 50,000 x 512, 10 classes
    python benchmarks/linear_probe.py --n 10000  # smaller
    python benchmarks/linear_probe.py --features TRAIN.safetensors TEST.safetensors --repeats 1
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def gaussian_mixture(n: int, dim: int, classes: int, seed: int, sep: float):
    """Class means on a random direction set; unit isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g) * sep / dim ** 0.5
    y = torch.randint(0, classes, (n,), generator=g)
    return means[y] + torch.randn(n, dim, generator=g), y


def sklearn_sweep(x: np.ndarray, y: np.ndarray, xt: np.ndarray, lambdas: list[float], val_fraction: float,
                  seed: int, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ssl_zoo.eval.linear import stratified_val_split

    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)  # weakly regularised fits on real features hit max_iter
    fit, val = stratified_val_split(y, val_fraction, seed)
    scaler = StandardScaler().fit(x[fit])
    xf, xv = scaler.transform(x[fit]), scaler.transform(x[val])
    best, best_acc = lambdas[0], -1.0
    for lam in lambdas:  # strongest first, ties to the stronger lambda: as ssl_zoo
        clf = LogisticRegression(C=1.0 / (len(fit) * lam), solver="lbfgs", max_iter=max_iter).fit(xf, y[fit])
        acc = (clf.predict(xv) == y[val]).mean()
        if acc > best_acc:
            best, best_acc = lam, acc
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=1.0 / (len(x) * best), solver="lbfgs", max_iter=max_iter).fit(scaler.transform(x), y)
    return clf.predict(scaler.transform(xt)), best


def main() -> None:
    from ssl_zoo.eval.linear import lambda_grid, linear_probe_scores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000, help="training samples")
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--sep", type=float, default=3.0, help="class-mean separation (sets the difficulty)")
    p.add_argument("--num-lambdas", type=int, default=7)
    p.add_argument("--max-iter", type=int, default=500, help="L-BFGS iterations per fit, both sides (ssl_zoo's default)")
    p.add_argument("--features", nargs=2, metavar=("TRAIN", "TEST"),
                   help="real features instead of the mixture: two .safetensors files with x (n, D) and y (n,), "
                        "e.g. entries of ssl_zoo's feature cache")
    p.add_argument("--fp32", action="store_true", help="all matmuls in fp32 (eval.linear_probe.bf16=false)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side; the median is reported")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    if args.features:
        from safetensors.torch import load_file

        (xtr, ytr), (xte, yte) = ((f["x"].float(), f["y"].long()) for f in map(load_file, args.features))
        args.n, args.n_test, args.dim, args.classes = len(xtr), len(xte), xtr.shape[1], int(ytr.max()) + 1
    else:
        x, y = gaussian_mixture(args.n + args.n_test, args.dim, args.classes, 0, args.sep)
        xtr, ytr, xte, yte = x[:args.n], y[:args.n], x[args.n:], y[args.n:]
    cfg = {"num_lambdas": args.num_lambdas, "lambda_min": 1e-6, "lambda_max": 1.0, "val_fraction": 0.2,
           "bf16": "auto" if not args.fp32 else False, "max_iter": args.max_iter}
    lambdas = lambda_grid(cfg)
    print(f"features: {args.n} train + {args.n_test} test x {args.dim} dims, {args.classes} classes; "
          f"{len(lambdas)} lambdas + final fit; torch {torch.__version__} threads={torch.get_num_threads()} "
          f"device={args.device}")

    dev = args.device
    # warm-up outside the timings: first torch.optim use imports torch._dynamo (seconds), sklearn its solvers
    small = {"num_lambdas": 2, "val_fraction": 0.5}
    linear_probe_scores(xtr[:200].to(dev), ytr[:200].to(dev), xte[:10].to(dev), args.classes, small)
    sklearn_sweep(xtr[:200].numpy(), ytr[:200].numpy(), xte[:10].numpy(), [1.0], 0.5, 0, 100)

    def timed(run):
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = run()
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)), times, out

    t_ours, times_ours, (scores, lam, _) = timed(
        lambda: linear_probe_scores(xtr.to(dev), ytr.to(dev), xte.to(dev), args.classes, cfg, seed=0))
    acc_ours = (scores.argmax(1).cpu() == yte).float().mean().item()
    t_sk, times_sk, (pred, lam_sk) = timed(
        lambda: sklearn_sweep(xtr.numpy(), ytr.numpy(), xte.numpy(), lambdas, 0.2, 0, args.max_iter))
    acc_sk = float((pred == yte.numpy()).mean())
    print("runs (s): ssl_zoo " + " ".join(f"{t:.2f}" for t in times_ours)
          + " | sklearn " + " ".join(f"{t:.2f}" for t in times_sk))
    print(f"ssl_zoo (median)      : {t_ours:8.2f} s  test top-1 {100 * acc_ours:.2f}%  lambda {lam:.1e}")
    print(f"sklearn (median)      : {t_sk:8.2f} s  test top-1 {100 * acc_sk:.2f}%  lambda {lam_sk:.1e}")
    print(f"speed-up {t_sk / t_ours:.1f}x, accuracy difference {100 * abs(acc_ours - acc_sk):.2f} points")


if __name__ == "__main__":
    main()
