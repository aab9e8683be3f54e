"""Model sources for ``ssl-zoo eval`` (the ``model`` config group): a train
checkpoint, random init, raw pixels. Weights are only ever loaded with
``weights_only=True`` (or safetensors): a checkpoint cannot run code."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from omegaconf import OmegaConf

from ssl_zoo.build import build_objective, objective_source, pixels_source, random_init_source
from ssl_zoo.data.datasets import DatasetBundle
from ssl_zoo.errors import UserError
from ssl_zoo.eval.features import FeatureSource


def safe_torch_load(path: str | Path) -> Any:
    """torch.load with weights_only=True, turning every failure into one clear line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.path={path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise UserError(f"{path}: refused to load: it holds objects that are not plain weights ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable checkpoint (truncated or corrupted?): {str(exc).splitlines()[0][:160]}") from None


def load_train_checkpoint(path: str | Path, expect_objective: str | None = None):
    """Rebuild the objective of a `ssl-zoo train` checkpoint; returns (objective, config)."""
    ckpt = safe_torch_load(path)
    meta = ckpt.get("ssl_zoo") if isinstance(ckpt, dict) else None
    if not meta:
        raise UserError(f"{path}: not an ssl-zoo train checkpoint (no 'ssl_zoo' entry); "
                        f"for timm or open_clip weights use model=timm or model=open_clip")
    if expect_objective and meta["objective"] != expect_objective:
        raise UserError(f"{path}: a checkpoint of objective {meta['objective']!r}, not {expect_objective!r}")
    cfg = OmegaConf.create(meta["config"])
    objective = build_objective(cfg, list(meta.get("classnames") or []))
    state = {k.removeprefix("objective."): v for k, v in ckpt["state_dict"].items()}
    try:
        objective.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match objective {meta['objective']!r}: {str(exc).splitlines()[0][:160]}") from None
    return objective, OmegaConf.to_container(cfg, resolve=True)


def _checkpoint(cfg: Mapping[str, Any], bundle: DatasetBundle) -> FeatureSource:
    objective, train_cfg = load_train_checkpoint(cfg["model"]["path"], cfg["model"].get("objective"))
    return objective_source(objective, train_cfg)


MODEL_SOURCES: dict[str, Callable[[Mapping[str, Any], DatasetBundle], FeatureSource]] = {
    "checkpoint": _checkpoint,
    "random": random_init_source,
    "pixels": lambda cfg, bundle: pixels_source(),
}


def build_source(cfg: Mapping[str, Any], bundle: DatasetBundle) -> FeatureSource:
    kind = cfg["model"]["kind"]
    if kind not in MODEL_SOURCES:
        raise UserError(f"unknown model kind {kind!r}; available: {', '.join(sorted(MODEL_SOURCES))}")
    return MODEL_SOURCES[kind](cfg, bundle)
