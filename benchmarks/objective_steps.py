"""Cost of one training step per objective, against SimCLR measured in the same run.

    python benchmarks/objective_steps.py [--methods simclr,byol,dino,mae] [--steps 3] [--batch 256] [--threads N]

Each objective is built from its default config (conf/method/<name>.yaml) on
the default backbone (conf/backbone/vit_tiny.yaml) for the 16 px digits, and
runs forward + backward + AdamW step under bf16 autocast (the trainer default)
on a batch of real digits. Wall and process CPU seconds per step are averaged
over ``--steps`` after one warm-up step; the ratio column is against SimCLR.
On a shared machine wall time is inflated by other jobs; CPU seconds and the
ratios are the steadier figures (use ``--threads 1`` there: idle OpenMP
threads spin and inflate CPU time when the cores are oversubscribed). The
last column, CPU s/step x 100 steps / 2 cores, is a lower bound for the
training part of a default `ssl-zoo train` on digits (20 epochs of 5 steps).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml
from sklearn.datasets import load_digits

from ssl_zoo.build import build_objective

CONF = Path(__file__).resolve().parents[1] / "conf"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def step_cost(method: str, images: torch.Tensor, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    cfg = {"method": _load(CONF / "method" / f"{method}.yaml"), "backbone": _load(CONF / "backbone" / "vit_tiny.yaml"),
           "data": _load(CONF / "data" / "digits.yaml")}
    objective = build_objective(cfg, [str(i) for i in range(10)])
    objective.train()
    optim = {**_load(CONF / "trainer" / "default.yaml")["optim"], **(cfg["method"].get("optim") or {})}
    opt = torch.optim.AdamW(objective.parameter_groups(optim["weight_decay"]), lr=optim["lr"],
                            betas=tuple(optim["betas"]))
    wall = cpu = 0.0
    for i in range(steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = objective.training_step({"image": images}, i / (steps + 1))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        objective.before_optimizer_step(0)
        opt.step()
        objective.after_step((i + 1) / (steps + 1))
        if i:  # the first step pays one-off costs (kernels, allocator)
            wall, cpu = wall + time.perf_counter() - t0, cpu + time.process_time() - c0
    return wall / steps, cpu / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="simclr,byol,dino,mae")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    digits = torch.from_numpy(load_digits().images).float()  # (N, 8, 8) in 0..16
    images = (digits[: args.batch] * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    methods = args.methods.split(",")
    if "simclr" in methods:
        methods = ["simclr"] + [m for m in methods if m != "simclr"]
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch}, {args.steps} timed steps")
    print(f"{'method':8s} {'wall s/step':>12s} {'cpu s/step':>11s} {'steps/s':>8s} {'cpu vs simclr':>14s} "
          f"{'est. 100 steps on 2 cores (s)':>30s}")
    base = None
    for m in methods:
        wall, cpu = step_cost(m, images, args.steps)
        base = base or (cpu if m == "simclr" else None)
        ratio = f"{cpu / base:.2f}x" if base else "-"
        est = 100 * cpu / 2  # perfect 2-core scaling: a lower bound
        print(f"{m:8s} {wall:12.2f} {cpu:11.2f} {1 / wall:8.2f} {ratio:>14s} {est:30.0f}", flush=True)


if __name__ == "__main__":
    main()
