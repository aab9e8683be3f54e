"""The two products of one linear-probe evaluation (logits rows @ x.T and
gradient g @ x, rows and g with C = 10 rows), by each FeatureProducts mode
against the plain matmul of the same dtype, in one run; plus what preparing
each mode costs (it is paid once per probe).

    python benchmarks/feature_products.py              # 40,000 x 512: the sweep of a 50,000-sample probe
    python benchmarks/feature_products.py --n 48000 --dim 784
"""
from __future__ import annotations

import argparse
import time

import torch

from ssl_zoo.eval.products import FeatureProducts


def per_call_ms(fn, repeats: int) -> float:
    fn()
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=40_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--rows", type=int, default=10, help="P * C: classes times problems")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, args.dim, generator=g)
    rows, grads = torch.randn(args.rows, args.dim, generator=g), torch.randn(args.rows, args.n, generator=g)
    print(f"x {args.n} x {args.dim}, {args.rows} rows; torch {torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'dtype':6s} {'mode':6s} {'prepare ms':>10s} {'logits ms':>10s} {'grad ms':>8s} {'vs plain':>9s}")
    for dtype in (torch.bfloat16, torch.float32):
        plain_total = None
        for mode in ("plain", "dense", "pack"):
            t0 = time.perf_counter()
            fp = FeatureProducts(x, dtype, mode)
            prepare = 1000 * (time.perf_counter() - t0)
            logits = per_call_ms(lambda: fp.logits(rows), args.repeats)
            grad = per_call_ms(lambda: fp.grad(grads), args.repeats)
            plain_total = plain_total or logits + grad
            name = str(dtype).split(".")[1]
            print(f"{name:6s} {fp.mode:6s} {prepare:10.1f} {logits:10.2f} {grad:8.2f} "
                  f"{plain_total / (logits + grad):8.1f}x")


if __name__ == "__main__":
    main()
