"""The training engine: one LightningModule that drives any objective.

Shared once for every method: optimizer (ssl_zoo.optim + warmup/cosine), precision,
gradient caching (ssl_zoo.gradcache), atomic checkpoints, resume, metrics.csv, progress bar.
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

from ssl_zoo.errors import UserError
from ssl_zoo.gradcache import average_gradients, grad_cached_step
from ssl_zoo.objectives.base import Objective
from ssl_zoo.optim import cast_bf16_weights, make_optimizer

CKPT_FORMAT = 1  # bump when the layout of the "ssl_zoo" checkpoint entry changes


class SSLModule(L.LightningModule):
    def __init__(self, objective: Objective, optim: dict[str, Any], meta: dict[str, Any],
                 grad_cache_chunk: int = 0, gradient_clip_val: float | None = None):
        super().__init__()
        self.objective = objective
        self.optim = dict(optim)
        self.meta = meta  # objective name, resolved config as YAML: stored in every checkpoint
        # Gradient caching runs its own backward passes inside the step: manual optimisation.
        self.grad_cache_chunk = int(grad_cache_chunk)
        self.gradient_clip_val = gradient_clip_val
        if self.grad_cache_chunk > 0:
            if not hasattr(objective, "grad_cache_parts"):
                raise UserError(f"trainer.grad_cache_chunk needs an objective with grad_cache_parts "
                                f"(e.g. simclr, clip); {objective.name} has none (set trainer.grad_cache_chunk=0)")
            self.automatic_optimization = False

    def _progress(self) -> float:
        total = max(1, self.trainer.estimated_stepping_batches)
        return min(1.0, self.global_step / total)

    def on_train_epoch_start(self) -> None:
        self.objective.on_epoch_start(self.current_epoch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if not self.automatic_optimization:
            return self._grad_cached_step(batch)
        out = self.objective.training_step(batch, self._progress())
        n = len(batch["image"])
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=n)
        for key, value in out.items():
            if key != "loss":
                self.log(f"train/{key}", value, batch_size=n)
        return out["loss"]

    def _grad_cached_step(self, batch: dict[str, Any]) -> torch.Tensor:
        opt = self.optimizers()
        opt.zero_grad()
        encoders, inputs, loss_fn = self.objective.grad_cache_parts(batch, self._progress())
        loss = grad_cached_step(encoders, inputs, loss_fn, self.grad_cache_chunk)
        average_gradients(self.objective)  # DDP's reducer is bypassed in manual optimisation
        if self.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=float(self.gradient_clip_val))
        opt.step()
        self.lr_schedulers().step()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.objective.before_optimizer_step(self.current_epoch)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.objective.after_step(self._progress())

    def configure_optimizers(self):
        cast_bf16_weights(self.objective, self.optim.get("bf16_weights") or [])
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

    def on_fit_end(self) -> None:
        # bf16 storage is a training-time saving; evaluation gets fp32 weights
        for name in self.optim.get("bf16_weights") or []:
            self.objective.get_submodule(str(name)).float()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ssl_zoo"] = {"format": CKPT_FORMAT, **self.meta}


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
