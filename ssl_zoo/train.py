"""``ssl-zoo train``: pretrain one objective with Lightning, then evaluate it
and the baselines with the common evaluator."""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ssl_zoo.build import build_objective, objective_source
from ssl_zoo.data.datasets import load_dataset
from ssl_zoo.engine import AtomicCheckpointIO, RunCSVLogger, SSLModule
from ssl_zoo.errors import UserError
from ssl_zoo.eval import BASELINE_MODELS
from ssl_zoo.eval.models import MODEL_SOURCES
from ssl_zoo.eval.runner import check_protocols, evaluate, resolve_device
from ssl_zoo.results import config_hash

log = logging.getLogger(__name__)


def quiet_lightning() -> None:
    """Route Lightning's messages through Hydra's logging (console + run log)
    instead of its own handler, which printed each line twice."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("lightning"):
            logging.getLogger(name).handlers.clear()
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def train_loader(dataset, cfg: DictConfig, seed: int) -> DataLoader:
    t = cfg.trainer
    if len(dataset) < int(t.batch_size):
        raise UserError(f"trainer.batch_size={t.batch_size} is larger than the training set ({len(dataset)} images)")
    return DataLoader(dataset, batch_size=int(t.batch_size), shuffle=True, drop_last=True,
                      num_workers=int(t.num_workers), persistent_workers=int(t.num_workers) > 0,
                      generator=torch.Generator().manual_seed(seed))


def make_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    t = cfg.trainer
    every_n = int(t.checkpoint_every_n_steps or 0)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0,
        every_n_train_steps=every_n or None, every_n_epochs=None if every_n else 1)
    accelerator = t.accelerator if t.accelerator != "auto" else ("gpu" if resolve_device(cfg.device) == "cuda" else "cpu")
    return L.Trainer(
        max_epochs=int(t.max_epochs), max_steps=int(t.max_steps), precision=t.precision, accelerator=accelerator,
        devices=t.devices, num_nodes=int(t.num_nodes), strategy=t.strategy, callbacks=[ckpt],
        logger=RunCSVLogger(str(run_dir), int(t.log_every_n_steps)), log_every_n_steps=int(t.log_every_n_steps),
        enable_progress_bar=bool(t.progress_bar), enable_model_summary=False,
        # with gradient caching the engine clips itself (manual optimisation)
        gradient_clip_val=None if int(t.get("grad_cache_chunk", 0)) > 0 else t.gradient_clip_val,
        accumulate_grad_batches=int(t.accumulate_grad_batches),
        plugins=[AtomicCheckpointIO()], default_root_dir=str(run_dir), deterministic=False)


def check_scale(t: DictConfig) -> None:
    chunk = int(t.get("grad_cache_chunk", 0))
    if chunk > 0 and int(t.accumulate_grad_batches) > 1:
        raise UserError("trainer.grad_cache_chunk and trainer.accumulate_grad_batches>1 exclude each other: "
                        "gradient caching already is the accumulation (set one of them)")
    if chunk > 0 and str(t.precision).startswith("16"):
        raise UserError("trainer.grad_cache_chunk needs precision 32-true or bf16-mixed (no fp16 loss scaling)")
    if (t.optim.get("bf16_weights") or []) and not str(t.precision).startswith("bf16"):
        raise UserError("trainer.optim.bf16_weights needs trainer.precision=bf16-mixed")


def relaunchable_argv() -> None:
    """Lightning's DDP launcher starts ranks 1..N-1 by re-running ``sys.argv``
    (plus hydra.run.dir=...); the CLI left only the overrides there, so put
    the script and the command back."""
    import __main__

    if os.environ.get("LOCAL_RANK") is None and sys.argv[1:2] != ["train"]:
        sys.argv = [getattr(__main__, "__file__", None) or sys.argv[0], "train", *sys.argv[1:]]


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    quiet_lightning()
    check_protocols(list(cfg.eval.protocols))
    unknown = [b for b in cfg.eval.baselines if b not in BASELINE_MODELS]
    if unknown:
        raise UserError(f"unknown eval.baselines {unknown}; available: {', '.join(BASELINE_MODELS)}")
    check_scale(cfg.trainer)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    bundle = load_dataset(cfg.data)
    objective = build_objective(cfg, bundle.classnames)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    cfg_hash = config_hash(resolved)
    optim = {**resolved["trainer"]["optim"], **(resolved["method"].get("optim") or {})}
    meta = {"objective": objective.name, "config": OmegaConf.to_yaml(cfg, resolve=True), "config_hash": cfg_hash,
            "classnames": list(bundle.classnames)}
    module = SSLModule(objective, optim, meta, grad_cache_chunk=int(cfg.trainer.get("grad_cache_chunk", 0)),
                       gradient_clip_val=cfg.trainer.gradient_clip_val)

    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt_path = None
    if cfg.trainer.resume:
        if not last.is_file():
            raise UserError(f"trainer.resume=true but there is no checkpoint at {last} "
                            f"(resume needs the same hydra.run.dir as the first run)")
        ckpt_path = str(last)
    trainer = make_trainer(cfg, run_dir)
    relaunchable_argv()
    t0 = time.perf_counter()
    trainer.fit(module, train_loader(bundle.train, cfg, int(cfg.seed)), ckpt_path=ckpt_path)
    seconds = time.perf_counter() - t0
    if trainer.global_rank != 0:
        return {}
    samples = (trainer.global_step * int(cfg.trainer.batch_size) * int(cfg.trainer.accumulate_grad_batches)
               * trainer.world_size)
    info = {"train_seconds": round(seconds, 2), "train_steps": int(trainer.global_step),
            "train_images_per_s": round(samples / max(seconds, 1e-9), 1)}
    log.info("trained %s for %d steps in %.1fs", objective.name, trainer.global_step, seconds)

    device = resolve_device(cfg.device)
    results = str(run_dir / "results.jsonl")
    kwargs = dict(results_path=results, run=str(run_dir), cfg_hash=cfg_hash, device=device)
    source = objective_source(objective, resolved)
    source.info.update(info)
    rows = evaluate(source, bundle, cfg.eval, **kwargs)
    for name in cfg.eval.baselines:
        rows += evaluate(MODEL_SOURCES[BASELINE_MODELS[name]](resolved, bundle), bundle, cfg.eval, **kwargs)
    return {"rows": rows, **info}
