"""Expand a suite (conf/suite/NAME.yaml) into cells.

A cell is one ``ssl-zoo train`` (an objective on a backbone and a dataset, for
one seed) or one ``ssl-zoo eval`` of a baseline (``model=random`` per backbone
and dataset, ``model=pixels`` per dataset). Its identity is the hash of its
resolved config, the same ``config_hash`` that train/eval write in every row,
so a restarted bench recognises finished cells in results.jsonl.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from omegaconf import OmegaConf

from ssl_zoo.errors import UserError
from ssl_zoo.eval import BASELINE_MODELS


@dataclass
class Cell:
    command: str                 # "train" | "eval"
    overrides: list[str]         # Hydra overrides, without hydra.run.dir
    label: dict[str, Any]        # objective, backbone, data, seed: for names and summaries
    config_hash: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # resolved facts (timm name, protocols)

    @property
    def name(self) -> str:
        parts = [self.label["objective"], self.label.get("backbone") or "", self.label["data"],
                 f"s{self.label['seed']}"]
        slug = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", str(p)) for p in parts if p != "")
        return f"{slug}-{self.config_hash}" if self.config_hash else slug

    def describe(self) -> str:
        lb = self.label
        bb = f" {lb['backbone']}" if lb.get("backbone") else ""
        return f"{lb['objective']}{bb} on {lb['data']} (seed {lb['seed']})"


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise UserError(f"suite.{where} must be a list, got {value!r}") from None


def _per(suite: Mapping[str, Any], key: str, name: Any) -> list[str]:
    table = suite.get(key) or {}
    return [str(o) for o in _list(table.get(str(name)), f"{key}.{name}")]


TRAIN_ONLY = ("trainer", "method")


def eval_only(overrides: list[str]) -> list[str]:
    """Drop training settings (trainer.*, method.*) from an evaluation cell:
    ``per_backbone: {resnet18: [trainer.max_epochs=4]}`` concerns training only."""
    return [o for o in overrides if re.split(r"[.=/]", o.lstrip("+~"), maxsplit=1)[0] not in TRAIN_ONLY]


def expand(suite: Mapping[str, Any]) -> list[Cell]:
    """All cells of a suite, in a stable order: training cells, then baselines."""
    methods, backbones, datasets, models = (_list(suite.get(k), k) for k in ("methods", "backbones", "datasets", "models"))
    if not datasets or not (models or (methods and backbones)):
        raise UserError(f"suite {suite.get('name')!r} needs datasets and either methods + backbones or models")
    seeds = [int(s) for s in _list(suite.get("seeds", [0]), "seeds")] or [0]
    excluded = [dict(e) for e in _list(suite.get("exclude"), "exclude")]
    common = [str(o) for o in _list(suite.get("overrides"), "overrides")]
    train_only = [str(o) for o in _list(suite.get("train"), "train")]

    def skip(choice: dict[str, Any]) -> bool:
        return any(all(str(choice.get(k)) == str(v) for k, v in e.items()) for e in excluded)

    def shared(backbone: Any | None, data: Any, seed: int) -> list[str]:
        return [*([f"backbone={backbone}"] if backbone is not None else []), f"data={data}", f"seed={seed}", *common]

    def specific(method: Any | None, backbone: Any | None, data: Any) -> list[str]:
        # the most specific settings last, so they win over the suite-wide ones
        return [*(_per(suite, "per_method", method) if method is not None else []),
                *(_per(suite, "per_backbone", backbone) if backbone is not None else []), *_per(suite, "per_data", data)]

    cells = []
    for method, backbone, data, seed in itertools.product(methods, backbones, datasets, seeds):
        if skip({"method": method, "backbone": backbone, "data": data}):
            continue
        overrides = [f"method={method}", *shared(backbone, data, seed), "eval.baselines=[]", *train_only,
                     *specific(method, backbone, data)]
        cells.append(Cell("train", overrides, {"objective": method, "backbone": backbone, "data": data, "seed": seed}))
    for model, data, seed in itertools.product(models, datasets, seeds[:1]):
        # an external model (open_clip, timm): evaluated, not trained
        model = dict(model)
        overrides = [f"model={model.pop('kind')}", *[f"model.{k}={v}" for k, v in model.items()],
                     *eval_only([*shared(None, data, seed), *specific(None, None, data)])]
        label = f"{model.get('name')}/{model.get('pretrained')}" if model.get("pretrained") else str(model.get("name"))
        cells.append(Cell("eval", overrides, {"objective": label, "backbone": None, "data": data, "seed": seed}))
    baselines = _list(suite.get("baselines", list(BASELINE_MODELS)), "baselines")
    unknown = [b for b in baselines if b not in BASELINE_MODELS]
    if unknown:
        raise UserError(f"suite.baselines: unknown {unknown}; available: {', '.join(BASELINE_MODELS)}")
    for name in baselines:
        # pixels do not depend on the backbone or a seed: one cell per dataset
        per_backbone = backbones if name == "random_init" else [None]
        base_seeds = seeds if name == "random_init" else seeds[:1]
        for backbone, data, seed in itertools.product(per_backbone, datasets, base_seeds):
            overrides = [f"model={BASELINE_MODELS[name]}",
                         *eval_only([*shared(backbone, data, seed), *specific(None, backbone, data)])]
            cells.append(Cell("eval", overrides, {"objective": name, "backbone": backbone, "data": data, "seed": seed}))
    return cells


def _check_groups(cell: Cell, loader) -> None:
    """An unknown method/backbone/data/... named in a suite: one clear line."""
    groups = set(loader.list_groups(""))
    for o in cell.overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key in groups and value not in loader.get_group_options(key):
            raise UserError(f"suite cell {cell.describe()}: unknown {key} {value!r}; "
                            f"available: {', '.join(sorted(loader.get_group_options(key)))}")


def resolve(cells: list[Cell]) -> list[Cell]:
    """Check every cell's config and fill in its config hash, exactly as
    train/eval compute it (the resolved config without Hydra's own section)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    from ssl_zoo.config import CONFIG_MODULE
    from ssl_zoo.results import config_hash

    backup = get_gh_backup()  # we may be inside the running bench app: put its Hydra back afterwards
    try:
        GlobalHydra.instance().clear()
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            for cell in cells:
                _check_groups(cell, loader)
                try:
                    cfg = compose(cell.command, overrides=cell.overrides)
                except HydraException as exc:
                    first = " ".join(ln.strip() for ln in str(exc).splitlines()[:2])
                    raise UserError(f"suite cell {cell.describe()}: {first}") from None
                resolved = OmegaConf.to_container(cfg, resolve=True)
                cell.config_hash = config_hash(resolved)
                cell.info = {"eval": resolved.get("eval", {})}
    finally:
        GlobalHydra.instance().clear()
        restore_gh_from_backup(backup)
    hashes = [c.config_hash for c in cells]
    dupes = {h for h in hashes if hashes.count(h) > 1}
    if dupes:
        names = [c.describe() for c in cells if c.config_hash in dupes]
        raise UserError(f"suite has cells with identical configs: {', '.join(names)}; remove the duplicates")
    return cells


def plan(suite: Mapping[str, Any]) -> list[Cell]:
    return resolve(expand(suite))
