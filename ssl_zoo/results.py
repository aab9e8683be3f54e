"""results.jsonl: one JSON row per (model, eval data, protocol, shots, params, metric).

Appends take an exclusive lock and write each batch of rows with a single
``write`` on an O_APPEND descriptor, so several processes can share one file
without lost or torn rows. The schema is a contract (DESIGN.md).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Mapping

SCHEMA_FIELDS = (
    "objective", "backbone", "pretrain_data", "eval_data", "protocol", "shots", "params",
    "metric", "value", "ci95", "seeds", "n_train", "n_test", "run", "config_hash", "versions", "created",
)
_PACKAGES = ("ssl-zoo", "torch", "torchvision", "timm", "lightly", "lightning", "open-clip-torch",
             "pytorch-metric-learning", "kornia", "scikit-learn")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg.replace("-", "_")] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def config_hash(cfg: Mapping[str, Any]) -> str:
    """Stable short hash of a (resolved, plain) config."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_row(**fields: Any) -> dict[str, Any]:
    """A schema row; unknown extra fields are kept (throughput, seconds, ...)."""
    row = {k: fields.pop(k, None) for k in SCHEMA_FIELDS}
    row["value"] = float(row["value"])
    if row["ci95"] is not None:
        row["ci95"] = float(row["ci95"])
    row["seeds"] = int(row["seeds"] or 1)
    row["params"] = row["params"] or {}
    row["versions"] = row["versions"] or versions()
    row["created"] = row["created"] or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if not 0.0 <= row["value"] <= 1.0:
        raise ValueError(f"metric value {row['value']} outside [0, 1] for {row['metric']}")
    row.update(fields)
    return row


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    data = "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows).encode()
    if not data:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:  # a single write is the norm; loop only for partial writes
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete rows; a torn last line (a killed writer) is skipped, not fatal."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return rows
