"""Model sources for ``ssl-zoo eval`` (the ``model`` config group): a train
checkpoint, any timm model, any open_clip model, random init, raw pixels.
Weights are only ever loaded with ``weights_only=True`` (or safetensors): a
checkpoint cannot run code."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from omegaconf import OmegaConf

from ssl_zoo.data.datasets import DatasetBundle
from ssl_zoo.errors import UserError
from ssl_zoo.eval.features import FeatureSource


def _first_line(exc: Exception) -> str:
    """The gist of a library error on one line: its first sentence (two lines
    when the first only announces the second, as load_state_dict's does)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]
    return text.split(". ")[0][:200]


def weight_error(path: Any, exc: Exception) -> UserError:
    """One line for any failure to load a weight file (used by every model source)."""
    if isinstance(exc, UserError):
        return exc
    chain = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(e, pickle.UnpicklingError) for e in chain) or "weights_only" in str(exc):
        return UserError(f"{path}: refused to load: it holds objects that are not plain weights "
                         f"(only tensors load, with weights_only=True): {_first_line(exc)}")
    if "size mismatch" in str(exc) or "Missing key" in str(exc) or "Unexpected key" in str(exc):
        return UserError(f"{path}: weights do not match the model architecture: {_first_line(exc)}")
    return UserError(f"{path}: not a readable weight file (truncated or corrupted?): {_first_line(exc)}")


def safe_torch_load(path: str | Path) -> Any:
    """torch.load with weights_only=True (safetensors for *.safetensors), one clear line on failure."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"model.path={path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, torn zips, bad headers: never a traceback
        raise weight_error(path, exc) from None


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
    from ssl_zoo.build import build_objective

    objective = build_objective(cfg, list(meta.get("classnames") or []))
    state = {k.removeprefix("objective."): v for k, v in ckpt["state_dict"].items()}
    try:
        objective.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: weights do not match objective {meta['objective']!r}: {str(exc).splitlines()[0][:160]}") from None
    return objective, OmegaConf.to_container(cfg, resolve=True)


def _checkpoint(cfg: Mapping[str, Any], bundle: DatasetBundle) -> FeatureSource:
    objective, train_cfg = load_train_checkpoint(cfg["model"]["path"], cfg["model"].get("objective"))
    from ssl_zoo.build import objective_source

    return objective_source(objective, train_cfg)


def timm_source(cfg: Mapping[str, Any], bundle: DatasetBundle) -> FeatureSource:
    """Any timm model without its classifier. ``model.pretrained``: null (random
    init), a local weight file (loaded through timm's own pretrained path with
    ``pretrained_cfg_overlay=dict(file=...)``, i.e. its key filters and head
    removal; timm reads it with weights_only=True), or a tag (timm's hub download)."""
    import timm

    from ssl_zoo.build import weights_key
    from ssl_zoo.data.views import EvalTransform

    m = cfg["model"]
    name, pretrained = str(m["name"]), m.get("pretrained")
    if not timm.is_model(name.split(".")[0]):
        raise UserError(f"unknown timm model {name!r} (see timm.list_models(), e.g. resnet18, vit_base_patch16_224)")
    kwargs = dict(m.get("kwargs") or {})
    path = Path(str(pretrained)).expanduser() if pretrained else None
    try:
        if path is not None and path.is_file():
            model = timm.create_model(name, pretrained=True, num_classes=0,
                                      pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        elif pretrained:
            if "/" in str(pretrained) or path.suffix in (".pth", ".pt", ".bin", ".safetensors", ".ckpt"):
                raise UserError(f"model.pretrained={pretrained}: no such file (give a weight file or a timm tag)")
            model = timm.create_model(f"{name}.{pretrained}", pretrained=True, num_classes=0, **kwargs)
        else:
            torch.manual_seed(int(cfg.get("seed", 0)))
            model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except Exception as exc:
        raise weight_error(pretrained, exc) from None
    data_cfg = timm.data.resolve_data_config(model=model)
    size = int(m.get("image_size") or data_cfg["input_size"][-1])
    mean, std = (tuple(m["mean"]), tuple(m["std"])) if m.get("mean") else (data_cfg["mean"], data_cfg["std"])
    tag = path.name if path is not None and path.is_file() else (pretrained or "random")
    return FeatureSource(f"timm:{name}/{tag}", name, None, EvalTransform(size, mean, std), model, module=model,
                         key=weights_key(model), info={"weights": str(pretrained)})


def _open_clip(cfg: Mapping[str, Any], bundle: DatasetBundle) -> FeatureSource:
    from ssl_zoo.integrations.open_clip import open_clip_source

    return open_clip_source(cfg, bundle)


def _build(name: str):
    """ssl_zoo.build imports timm (seconds); pixels and errors should not wait for it."""
    import ssl_zoo.build

    return getattr(ssl_zoo.build, name)


MODEL_SOURCES: dict[str, Callable[[Mapping[str, Any], DatasetBundle], FeatureSource]] = {
    "checkpoint": _checkpoint,
    "timm": timm_source,
    "open_clip": _open_clip,
    "random": lambda cfg, bundle: _build("random_init_source")(cfg, bundle),
    "pixels": lambda cfg, bundle: _build("pixels_source")(),
}


def build_source(cfg: Mapping[str, Any], bundle: DatasetBundle) -> FeatureSource:
    kind = cfg["model"]["kind"]
    if kind not in MODEL_SOURCES:
        raise UserError(f"unknown model kind {kind!r}; available: {', '.join(sorted(MODEL_SOURCES))}")
    return MODEL_SOURCES[kind](cfg, bundle)
