"""Datasets yield decoded uint8 images (C, H, W) and labels, never random
augmentations: each objective makes its views batched on the training device
(ssl_zoo.data.views), which keeps the cores for the model.

A dataset loader is a callable ``(data_cfg) -> DatasetBundle`` registered in
the ``ssl_zoo.datasets`` entry-point group.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ssl_zoo.errors import UserError
from ssl_zoo.registry import DATASETS

log = logging.getLogger(__name__)


class ImageDataset(Dataset):
    """In-memory uint8 images (N, C, H, W) with integer labels and optional captions.

    Items are dicts ``{"image", "label"[, "caption"]}``; ``__getitems__`` lets
    the DataLoader fetch a whole batch with one indexing op.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, captions: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.captions = list(captions) if captions is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def __getitems__(self, idx: list[int]) -> list[dict[str, Any]]:
        images, labels = self.images[idx], self.labels[idx].tolist()
        items = [{"image": im, "label": lb} for im, lb in zip(images, labels)]
        if self.captions is not None:
            for item, i in zip(items, idx):
                item["caption"] = self.captions[i]
        return items


@dataclass
class DatasetBundle:
    """Fixed, seeded train and test splits of one dataset plus its class names."""

    name: str
    train: Dataset
    test: Dataset
    classnames: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


def load_dataset(cfg: Mapping[str, Any]) -> DatasetBundle:
    """Load the dataset named by ``cfg.name`` (the ``data`` config group)."""
    bundle = DATASETS.get(cfg["name"])(cfg)
    names = cfg.get("classnames")
    if names:
        bundle.classnames = _read_classnames(names, bundle.num_classes)
    return bundle


def _read_classnames(names: Any, expected: int) -> list[str]:
    import json

    if isinstance(names, str):
        path = Path(names)
        if not path.is_file():
            raise UserError(f"data.classnames={names}: no such file (give a JSON list of names or a list)")
        names = json.loads(path.read_text())
    names = [str(n) for n in names]
    if len(names) != expected:
        raise UserError(f"data.classnames has {len(names)} names but the dataset has {expected} classes")
    return names


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a stratified split that depends only on ``seed``."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(test)


def load_digits_dataset(cfg: Mapping[str, Any]) -> DatasetBundle:
    """sklearn's 1,797 real 8x8 digits (values 0..16), split 80/20 stratified with ``data.split_seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target)
    train, test = stratified_split(digits.target, float(cfg.get("test_fraction", 0.2)), int(cfg.get("split_seed", 0)))
    names = [str(i) for i in range(10)]
    return DatasetBundle("digits", ImageDataset(images[train], labels[train]), ImageDataset(images[test], labels[test]), names)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _scan_classes(root: Path) -> dict[str, list[Path]]:
    classes = {d.name: sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
               for d in sorted(root.iterdir()) if d.is_dir()}
    if not classes:
        raise UserError(f"data.root={root}: no class sub-folders (expected ROOT/<class>/<image> or ROOT/train/<class>/...)")
    empty = [c for c, files in classes.items() if not files]
    if empty:
        raise UserError(f"data.root={root}: class folder(s) with no images: {', '.join(empty)} "
                        f"(accepted suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    return classes


def _decode_folder(files: list[tuple[Path, int]], size: int, on_corrupt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode and resize every image once (deterministic), so training never
    meets a bad file mid-epoch. Corrupt files are skipped and counted, or raise."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import center_crop, resize

    images, labels, bad = [], [], []
    for path, label in files:
        try:
            img = decode_image(str(path), mode=ImageReadMode.RGB)
        except Exception as exc:  # torchvision raises RuntimeError for undecodable bytes
            if on_corrupt != "skip":
                raise UserError(f"corrupt image {path}: {exc} (set data.on_corrupt=skip to skip such files)") from None
            bad.append(path)
            continue
        img = center_crop(resize(img, [size], antialias=True), [size, size])
        images.append(img)
        labels.append(label)
    if bad:
        log.warning("skipped %d corrupt image(s), first: %s", len(bad), bad[0])
    if not images:
        raise UserError("no decodable images found")
    return torch.stack(images), torch.tensor(labels)


def load_imagefolder(cfg: Mapping[str, Any]) -> DatasetBundle:
    """ROOT/<class>/<img>, or ROOT/train/<class>/<img> and ROOT/test/<class>/<img>.
    Without train/ and test/, a stratified seeded split is carved."""
    if not cfg.get("root"):
        raise UserError("data=imagefolder needs data.root=DIR (class sub-folders, optionally under train/ and test/)")
    root = Path(cfg["root"]).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root={root}: no such directory (expected class sub-folders, optionally under train/ and test/)")
    size, on_corrupt = int(cfg.get("image_size", 32)), str(cfg.get("on_corrupt", "skip"))
    if (root / "train").is_dir() or (root / "test").is_dir():
        if not ((root / "train").is_dir() and (root / "test").is_dir()):
            raise UserError(f"data.root={root}: has only one of train/ and test/; give both or neither")
        tr, te = _scan_classes(root / "train"), _scan_classes(root / "test")
        if sorted(tr) != sorted(te):
            raise UserError(f"data.root={root}: train/ and test/ have different classes: "
                            f"only in train: {sorted(set(tr) - set(te))}, only in test: {sorted(set(te) - set(tr))}")
        names = sorted(tr)
        splits = [[(p, i) for i, c in enumerate(names) for p in s[c]] for s in (tr, te)]
        (xtr, ytr), (xte, yte) = (_decode_folder(s, size, on_corrupt) for s in splits)
    else:
        classes = _scan_classes(root)
        names = sorted(classes)
        x, y = _decode_folder([(p, i) for i, c in enumerate(names) for p in classes[c]], size, on_corrupt)
        tr_idx, te_idx = stratified_split(y.numpy(), float(cfg.get("test_fraction", 0.2)), int(cfg.get("split_seed", 0)))
        xtr, ytr, xte, yte = x[tr_idx], y[tr_idx], x[te_idx], y[te_idx]
    return DatasetBundle("imagefolder", ImageDataset(xtr, ytr), ImageDataset(xte, yte), names, {"root": str(root)})
