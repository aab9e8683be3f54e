"""The training engine: one LightningModule that drives any objective.

Shared once for every method: optimizer (AdamW + warmup/cosine), precision,
atomic checkpoints, resume, metrics.csv, progress bar.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ssl_zoo.objectives.base import Objective

CKPT_FORMAT = 1  # bump when the layout of the "ssl_zoo" checkpoint entry changes


class SSLModule(L.LightningModule):
    def __init__(self, objective: Objective, optim: dict[str, Any], meta: dict[str, Any]):
        super().__init__()
        self.objective = objective
        self.optim = dict(optim)
        self.meta = meta  # objective name, resolved config as YAML: stored in every checkpoint

    def _progress(self) -> float:
        total = max(1, self.trainer.estimated_stepping_batches)
        return min(1.0, self.global_step / total)

    def on_train_epoch_start(self) -> None:
        self.objective.on_epoch_start(self.current_epoch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.objective.training_step(batch, self._progress())
        n = len(batch["image"])
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=n)
        for key, value in out.items():
            if key != "loss":
                self.log(f"train/{key}", value, batch_size=n)
        return out["loss"]

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.objective.before_optimizer_step(self.current_epoch)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.objective.after_step(self._progress())

    def configure_optimizers(self):
        groups = self.objective.parameter_groups(float(self.optim["weight_decay"]))
        opt = make_optimizer(self.optim, groups)
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = int(round(float(self.optim.get("warmup_fraction", 0.1)) * total))

        def schedule(step: int) -> float:  # linear warm-up, then cosine to zero
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ssl_zoo"] = {"format": CKPT_FORMAT, **self.meta}


def make_optimizer(optim: dict[str, Any], groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    lr, name = float(optim["lr"]), str(optim.get("name", "adamw"))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(optim.get("betas", (0.9, 0.999))))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(optim.get("momentum", 0.9)))
    from ssl_zoo.errors import UserError

    raise UserError(f"unknown trainer.optim.name {name!r}; available: adamw, sgd")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write to a temporary file, fsync, then rename: a crash never leaves a torn checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class _AppendingWriter(_ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; on resume we keep
    the rows already written and append to them."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """metrics.csv directly in the run directory, appended to on resume."""

    def __init__(self, run_dir: str, flush_every_n_steps: int = 10):
        # flush often: a killed run keeps its rows up to the last checkpoint
        super().__init__(save_dir=run_dir, name="", version="", flush_logs_every_n_steps=flush_every_n_steps)

    @property
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
