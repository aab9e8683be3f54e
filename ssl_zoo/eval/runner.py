"""Evaluate feature sources on a dataset with the configured protocols and
append result rows. ``ssl-zoo eval`` and the evaluation after ``ssl-zoo
train`` both come through ``evaluate``."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Mapping

from ssl_zoo.data.datasets import DatasetBundle
from ssl_zoo.errors import UserError
from ssl_zoo.eval.cache import FeatureCache, cache_key, dataset_fingerprint, transform_fingerprint
from ssl_zoo.eval.features import Features, FeatureSource, extract
from ssl_zoo.eval.protocols import PROTOCOLS, EvalContext
from ssl_zoo.results import append_rows, make_row

log = logging.getLogger(__name__)


def check_protocols(names: list[str]) -> None:
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise UserError(f"unknown eval protocol(s) {', '.join(unknown)}; available: {', '.join(sorted(PROTOCOLS))}")


def encoder_for(source: FeatureSource, kind: str):
    """The image encoder of a feature kind ("backbone" or "projected")."""
    if kind == "backbone":
        return source.encode
    if kind == "projected":
        if source.encode_zero_shot_image is not None:
            return source.encode_zero_shot_image
        if source.encode_text is not None:  # a text model whose `encode` already lives in the text space
            return source.encode
        raise UserError(f"feature=projected needs a model with an image-text projection (CLIP, open_clip); "
                        f"{source.objective} has none (use feature=backbone)")
    raise UserError(f"unknown feature kind {kind!r}; available: backbone, projected")


class FeatureStore:
    """Extracts each (split, kind) at most once per run, through the disk cache."""

    def __init__(self, source: FeatureSource, bundle: DatasetBundle, eval_cfg: Mapping[str, Any], device: str):
        self.source, self.bundle, self.device = source, bundle, device
        self.batch_size, self.bf16 = int(eval_cfg.get("batch_size", 256)), bool(eval_cfg.get("bf16", False))
        self.cache = FeatureCache(eval_cfg.get("cache_dir") if source.key else None)  # no key: never cache
        self.memo: dict[tuple[str, str], Features] = {}

    def weights_id(self) -> str:
        """The weights fingerprint plus what else decides ``encode``: the source's
        name and, for objectives, their method config (e.g. MAE's pooling)."""
        method_cfg = getattr(self.source.module, "cfg", None)
        extra = json.dumps(dict(method_cfg), sort_keys=True, default=str) if isinstance(method_cfg, Mapping) else ""
        return f"{self.source.key}|{self.source.objective}|{self.source.backbone}|{extra}"

    def __call__(self, split: str, kind: str) -> Features:
        if (split, kind) not in self.memo:
            dataset = getattr(self.bundle, split)
            source = dataclasses.replace(self.source, encode=encoder_for(self.source, kind))
            key = cache_key(self.weights_id(), self.bundle.name, split, dataset_fingerprint(dataset),
                            transform_fingerprint(self.source.transform), kind, self.bf16)
            t0 = time.perf_counter()
            self.memo[split, kind] = self.cache.get_or_compute(
                key, lambda: extract(source, dataset, self.batch_size, self.device, self.bf16))
            log.info("features %s/%s (%s): %.2fs", split, kind, self.source.objective, time.perf_counter() - t0)
        return self.memo[split, kind]


def evaluate(source: FeatureSource, bundle: DatasetBundle, eval_cfg: Mapping[str, Any], *,
             results_path: str, run: str, cfg_hash: str, device: str = "cpu", seed: int = 0) -> list[dict[str, Any]]:
    names = list(eval_cfg["protocols"])
    check_protocols(names)
    if not bundle.classnames:  # e.g. data=pairs without a label column: pretraining data only
        log.warning("%s has no class labels: evaluation skipped", bundle.name)
        return []
    t0 = time.perf_counter()
    store = FeatureStore(source, bundle, eval_cfg, device)
    ctx = EvalContext(source, list(bundle.classnames), bundle.name, store, device, seed)
    rows = []
    for name in names:
        t_protocol = time.perf_counter()
        for r in PROTOCOLS[name](ctx, eval_cfg.get(name) or {}):
            kind = r.extra.get("feature_kind", "backbone")
            train, test = store("train", kind) if r.protocol != "zero_shot" else None, store("test", kind)
            fields = dict(
                objective=source.objective, backbone=source.backbone, pretrain_data=source.pretrain_data,
                eval_data=bundle.name, protocol=r.protocol, shots=r.shots, params=r.params, metric=r.metric,
                value=r.value, ci95=r.ci95, seeds=r.seeds, n_train=len(train.y) if train else 0,
                n_test=len(test.y), run=run, config_hash=cfg_hash, feature_dim=int(test.x.shape[1]))
            rows.append(make_row(**{**fields, **source.info, **r.extra}))
        log.info("%s: %.2fs", name, time.perf_counter() - t_protocol)
    for row in rows:
        row["eval_seconds"] = round(time.perf_counter() - t0, 2)
    append_rows(results_path, rows)
    return rows


def resolve_device(device: str) -> str:
    """auto -> cuda when available, else cpu. Lives here, not in train.py, so
    ``ssl-zoo eval`` does not import Lightning (seconds of start-up)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available (use device=auto or device=cpu)")
    return device


def eval_command(cfg, run_dir) -> list[dict[str, Any]]:
    """``ssl-zoo eval``: one model source on one dataset."""
    from omegaconf import OmegaConf

    from ssl_zoo.data.datasets import load_dataset
    from ssl_zoo.eval.models import build_source
    from ssl_zoo.results import config_hash

    check_protocols(list(cfg.eval.protocols))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    bundle = load_dataset(cfg.data)
    source = build_source(resolved, bundle)
    return evaluate(source, bundle, cfg.eval, results_path=str(run_dir / "results.jsonl"), run=str(run_dir),
                    cfg_hash=config_hash(resolved), device=resolve_device(cfg.device), seed=int(cfg.seed))
