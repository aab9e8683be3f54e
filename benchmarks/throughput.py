"""Training images/s per objective: fp32 vs bf16 autocast, with and without
gradient checkpointing, and the achieved model FLOP/s as a fraction of the
bf16 matmul peak measured in the same run.

    python benchmarks/throughput.py
    python benchmarks/throughput.py --methods simclr clip --batch 128 --steps 5 --depth 4

A training step = the objective's training_step (views included), backward,
and an AdamW step. FLOPs of one step are counted with
torch.utils.flop_counter (matmuls and convolutions, forward + backward).
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

MODES = {"fp32": (False, False), "bf16": (True, False), "bf16+ckpt": (True, True), "fp32+ckpt": (False, True)}


def build(method: str, depth: int, ckpt: bool):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from ssl_zoo.build import build_objective

    GlobalHydra.instance().clear()
    with initialize_config_module("ssl_zoo.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"method={method}", f"backbone.kwargs.depth={depth}",
                                          f"backbone.grad_checkpointing={str(ckpt).lower()}"])
    torch.manual_seed(0)
    return build_objective(cfg, [str(i) for i in range(10)]), int(cfg.data.image_size)


def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def measure(method: str, mode: str, batch: int, steps: int, depth: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    bf16, ckpt = MODES[mode]
    model, size = build(method, depth, ckpt)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = {"image": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8), "label": torch.arange(batch) % 10}

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = model.training_step(data, 0.5)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:  # also the warm-up step
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    return {"images_per_s": batch / seconds, "flops_per_s": counter.get_total_flops() / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["simclr", "byol", "dino", "mae", "clip"])
    ap.add_argument("--modes", nargs="+", default=["fp32", "bf16", "bf16+ckpt"], choices=list(MODES))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--depth", type=int, default=2, help="ViT blocks of the vit_tiny backbone")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak (1024^3, this run): fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s "
          f"({peak['bf16'] / peak['fp32']:.2f}x)")
    print(f"{'method':>8} {'mode':>10} {'img/s':>8} {'x fp32':>7} {'GFLOP/s':>8} {'of bf16 peak':>13}")
    for method in args.methods:
        base = None
        for mode in args.modes:
            r = measure(method, mode, args.batch, args.steps, args.depth)
            base = base or r["images_per_s"]
            print(f"{method:>8} {mode:>10} {r['images_per_s']:>8.1f} {r['images_per_s'] / base:>7.2f} "
                  f"{r['flops_per_s'] / 1e9:>8.2f} {r['flops_per_s'] / peak['bf16']:>13.1%}", flush=True)


if __name__ == "__main__":
    main()
