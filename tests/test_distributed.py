"""Two processes (torch.distributed, gloo, CPU) give the same loss and
gradients as one process on the combined batch, for the contrastive losses
that gather negatives across processes (CLIP, SimCLR).

Scaling convention: each rank's loss is the mean over its *local* rows (scored
against every gathered column); the gather's backward sums the gradient
contributions of all ranks, and DDP averages parameter gradients over ranks.
So mean(rank losses) == full-batch loss and mean(rank grads) == full-batch grads.
"""
from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

WORLD = 2
BATCH = 8  # combined; each rank gets BATCH // WORLD
CONF = Path(__file__).resolve().parents[1] / "conf"
TINY_VIT = {"name": "vit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2}}
CASES = ("clip", "clip_global_loss", "simclr")


def build(case: str):
    from ssl_zoo.backbones import build_backbone
    from ssl_zoo.objectives.base import DataInfo
    from ssl_zoo.objectives.clip import CLIP
    from ssl_zoo.objectives.simclr import SimCLR

    method = "simclr" if case == "simclr" else "clip"
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{method}.yaml"))
    torch.manual_seed(0)
    info = DataInfo(16, [str(i) for i in range(10)], (0.5,) * 3, (0.5,) * 3)
    if method == "simclr":
        cfg.update(hidden_dim=32, out_dim=16)
        model = SimCLR(build_backbone(TINY_VIT, 16), cfg, info)
        # BatchNorm (lightly's projection head) normalises with per-process batch
        # statistics; only SyncBatchNorm (GPU-only in torch) makes that exact, so the
        # loss's gather is tested with BN using fixed statistics.
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return model
    cfg["text"].update(width=32, layers=1, heads=2, context_length=16)
    cfg["local_loss"] = case != "clip_global_loss"
    return CLIP(build_backbone(TINY_VIT, 16), cfg, info)


def inputs():
    g = torch.Generator().manual_seed(1)
    views = torch.randn(2, BATCH, 3, 16, 16, generator=g)  # fixed "augmented" views
    captions = [f"an image of {i}." for i in range(BATCH)]
    return views, captions


def loss_of(model, case: str, rows: slice) -> torch.Tensor:
    views, captions = inputs()
    if case == "simclr":
        return model.criterion(model.project(views[0, rows]), model.project(views[1, rows]))
    return model.loss(views[0, rows], captions[rows])


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        half = BATCH // WORLD
        rows = slice(rank * half, (rank + 1) * half)
        for case in CASES:
            model = build(case)
            loss = loss_of(model, case, rows)
            loss.backward()
            g = grads(model)
            for t in g.values():  # what DDP does: average over ranks
                dist.all_reduce(t)
                t /= WORLD
            losses = [torch.zeros(()) for _ in range(WORLD)]
            dist.all_gather(losses, loss.detach())
            if rank == 0:
                torch.save({"losses": torch.stack(losses), "grads": g}, Path(out_dir) / f"{case}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_on_the_combined_batch(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for case in CASES:
        got = torch.load(tmp_path / f"{case}.pt")
        model = build(case)
        full = loss_of(model, case, slice(0, BATCH))
        full.backward()
        want = grads(model)
        torch.testing.assert_close(got["losses"].mean(), full.detach(), rtol=1e-5, atol=1e-5, msg=case)
        if case != "clip_global_loss":  # local losses: each rank scores only its own rows
            assert not torch.allclose(got["losses"][0], got["losses"][1]), case
        assert got["grads"].keys() == want.keys(), case
        for name, g in want.items():
            torch.testing.assert_close(got["grads"][name], g, rtol=1e-5, atol=1e-5, msg=f"{case}: {name}")

