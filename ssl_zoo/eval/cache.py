"""On-disk feature cache.

One file per (model weights, dataset contents, split, transform, feature kind,
precision), stored as safetensors so reading a cache entry can never run code.
The key hashes the *contents* of the dataset split (not only its name), so a
different ``data.split_seed`` or image size is a miss, not a stale hit.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from ssl_zoo.eval.features import Features

log = logging.getLogger(__name__)
CACHE_FORMAT = 1  # bump when extraction changes in a way the key does not see


def dataset_fingerprint(dataset: Dataset) -> str:
    """Hash of the images and labels of an in-memory dataset (ImageDataset), or
    of the file list of a lazy one; other datasets fall back to type and length."""
    h = hashlib.sha256()
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        h.update(str((tuple(images.shape), str(images.dtype))).encode())
        h.update(images.contiguous().numpy().tobytes())
        h.update(labels.numpy().tobytes())
    elif hasattr(dataset, "files"):  # lazily decoded files: their paths, size and labels
        h.update(json.dumps([list(map(str, dataset.files)), getattr(dataset, "size", None)]).encode())
        h.update(torch.as_tensor(dataset.labels).numpy().tobytes())
    else:
        h.update(f"{type(dataset).__qualname__}:{len(dataset)}:{getattr(dataset, 'root', '')}".encode())
    return h.hexdigest()[:16]


def transform_fingerprint(transform: torch.nn.Module) -> str:
    describe = getattr(transform, "describe", None)
    return describe() if callable(describe) else type(transform).__qualname__


def cache_key(weights: str, dataset: str, split: str, data_hash: str, transform: str, kind: str, bf16: bool) -> str:
    parts = {"format": CACHE_FORMAT, "weights": weights, "dataset": dataset, "split": split,
             "data": data_hash, "transform": transform, "kind": kind, "bf16": bool(bf16)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """``cache.get_or_compute(key, fn)``; ``root=None`` disables caching."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root).expanduser() if root else None
        self.hits = self.misses = 0

    def path(self, key: str) -> Path | None:
        return self.root / f"{key}.safetensors" if self.root else None

    def get_or_compute(self, key: str, compute: Callable[[], Features]) -> Features:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save_file

        path = self.path(key)
        if path is not None and path.is_file():
            try:
                t = load_file(str(path))
                self.hits += 1
                return Features(t["x"], t["y"])
            except (SafetensorError, KeyError, OSError) as exc:  # a torn entry: recompute it
                log.warning("feature cache entry %s unreadable (%s); recomputing", path, exc)
        self.misses += 1
        feats = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            save_file({"x": feats.x.contiguous(), "y": feats.y.contiguous()}, str(tmp))
            os.replace(tmp, path)  # atomic: concurrent runs never see a half-written entry
        return feats
