"""Multi-process training: the real CLI with Lightning DDP on 2 CPU processes
(gloo), and gradient caching across processes (gathered negatives, one
gradient all-reduce per step) equal to one process on the combined batch."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY, run_cli

WORLD, BATCH, CHUNK = 2, 12, 4


def test_two_process_ddp_train_writes_results_once(tmp_path):
    proc = run_cli("train", "trainer=smoke", "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu",
                   "eval.baselines=[]", *TINY, f"hydra.run.dir={tmp_path}", timeout=400,
                   env={"OMP_NUM_THREADS": "1"})  # one thread per rank: 2 ranks on 2 cores
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    keys = [(r["objective"], r["protocol"], json.dumps(r["params"], sort_keys=True), r["metric"]) for r in rows]
    assert rows and len(keys) == len(set(keys)), "rank 1 must not evaluate or write results"
    assert {r["objective"] for r in rows} == {"simclr"}
    assert all(r["train_steps"] == 4 for r in rows)
    assert (tmp_path / "train_ddp_process_1.log").is_file()  # rank 1 ran, in the same run directory
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def _build():
    from test_gradcache import build

    return build("clip")


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 16, 16, generator=g), [f"a photo of {i}." for i in range(BATCH)]


def _worker(rank: int, port: int, out: str) -> None:
    from ssl_zoo.gradcache import average_gradients, grad_cached_step

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = _build()
        views, captions = _inputs()
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        loss = grad_cached_step([model.encode_image_projected, model.encode_text], [views[rows], captions[rows]],
                                lambda z: model.contrastive(*z), CHUNK)
        average_gradients(model)
        losses = [torch.zeros(()) for _ in range(WORLD)]
        dist.all_gather(losses, loss)
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        torch.save({"losses": torch.stack(losses), "grads": grads}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_grad_cache_across_two_processes_equals_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    model = _build()
    views, captions = _inputs()
    full = model.loss(views, captions)
    full.backward()
    torch.testing.assert_close(ranks[0]["losses"].mean(), full.detach(), rtol=1e-5, atol=1e-5)
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        for r in ranks:  # every rank holds the same, full-batch gradient
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-5, atol=1e-5, msg=name)
