"""Evaluate feature sources on a dataset with the configured protocols and
append result rows. ``ssl-zoo eval`` and the evaluation after ``ssl-zoo
train`` both come through ``evaluate``."""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

from ssl_zoo.data.datasets import DatasetBundle
from ssl_zoo.errors import UserError
from ssl_zoo.eval.features import FeatureSource, extract
from ssl_zoo.eval.protocols import PROTOCOLS, EvalContext
from ssl_zoo.results import append_rows, make_row

log = logging.getLogger(__name__)


def check_protocols(names: list[str]) -> None:
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise UserError(f"unknown eval protocol(s) {', '.join(unknown)}; available: {', '.join(sorted(PROTOCOLS))}")


def evaluate(source: FeatureSource, bundle: DatasetBundle, eval_cfg: Mapping[str, Any], *,
             results_path: str, run: str, cfg_hash: str, device: str = "cpu") -> list[dict[str, Any]]:
    names = list(eval_cfg["protocols"])
    check_protocols(names)
    t0 = time.perf_counter()
    bs, bf16 = int(eval_cfg.get("batch_size", 256)), bool(eval_cfg.get("bf16", False))
    train = extract(source, bundle.train, bs, device, bf16)
    test = extract(source, bundle.test, bs, device, bf16)
    ctx = EvalContext(train, test, bundle.classnames, source, bundle.name)
    rows = []
    for name in names:
        for r in PROTOCOLS[name](ctx, eval_cfg.get(name) or {}):
            rows.append(make_row(
                objective=source.objective, backbone=source.backbone, pretrain_data=source.pretrain_data,
                eval_data=bundle.name, protocol=r.protocol, shots=r.shots, params=r.params, metric=r.metric,
                value=r.value, ci95=r.ci95, seeds=r.seeds, n_train=len(train.y), n_test=len(test.y),
                run=run, config_hash=cfg_hash, feature_dim=int(train.x.shape[1]), **source.info, **r.extra))
    for row in rows:
        row["eval_seconds"] = round(time.perf_counter() - t0, 2)
    append_rows(results_path, rows)
    return rows


def eval_command(cfg, run_dir) -> list[dict[str, Any]]:
    """``ssl-zoo eval``: one model source on one dataset."""
    from omegaconf import OmegaConf

    from ssl_zoo.data.datasets import load_dataset
    from ssl_zoo.eval.models import build_source
    from ssl_zoo.results import config_hash
    from ssl_zoo.train import resolve_device

    check_protocols(list(cfg.eval.protocols))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    bundle = load_dataset(cfg.data)
    source = build_source(resolved, bundle)
    return evaluate(source, bundle, cfg.eval, results_path=str(run_dir / "results.jsonl"), run=str(run_dir),
                    cfg_hash=config_hash(resolved), device=resolve_device(cfg.device))
