"""Datasets yield decoded uint8 images (C, H, W) and labels, never random
augmentations: each objective makes its views batched on the training device
(ssl_zoo.data.views), which keeps the cores for the model.

A dataset loader is a callable ``(data_cfg) -> DatasetBundle`` registered in
the ``ssl_zoo.datasets`` entry-point group. ``@dataset_spec(...)`` attaches
what ``ssl-zoo list datasets`` shows (size, classes, files it needs).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ssl_zoo.errors import UserError
from ssl_zoo.registry import DATASETS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageDataset(Dataset):
    """In-memory uint8 images (N, C, H, W) with integer labels and optional captions.

    Items are dicts ``{"image", "label"[, "caption"]}``; ``__getitems__`` lets
    the DataLoader fetch a whole batch with one indexing op. Label -1 means
    unlabelled (image-text pairs without a label column).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, captions: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels) or (captions is not None and len(captions) != len(labels)):
            raise ValueError(f"{len(images)} images, {len(labels)} labels, {len(captions or [])} captions")
        self.images = images
        self.labels = torch.as_tensor(labels).long()
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

    def subset(self, idx: np.ndarray) -> "ImageDataset":
        caps = [self.captions[i] for i in idx] if self.captions is not None else None
        return ImageDataset(self.images[idx], self.labels[idx], caps)


class LazyImageDataset(Dataset):
    """Image files decoded and resized (shorter side, then centre crop: deterministic)
    in ``__getitem__``: for sets too large to hold decoded (ImageNet, Food-101).

    A file that fails to decode is never a crash mid-epoch: with
    ``on_corrupt="skip"`` the next decodable file of the split stands in for
    it (logged once per file); with ``"error"`` it raises a one-line UserError.
    """

    def __init__(self, files: Sequence[str | Path], labels: Sequence[int], size: int,
                 captions: Sequence[str] | None = None, on_corrupt: str = "skip"):
        self.files = [str(f) for f in files]
        self.labels = torch.as_tensor(list(labels)).long()
        self.captions = list(captions) if captions is not None else None
        self.size, self.on_corrupt = int(size), on_corrupt
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = i
        for _ in range(len(self.files)):
            if j not in self._bad:
                try:
                    image = decode_resize(self.files[j], self.size)
                    break
                except UserError:
                    if self.on_corrupt != "skip":
                        raise
                    self._bad.add(j)
                    log.warning("corrupt image %s skipped (%d so far in this process)", self.files[j], len(self._bad))
            j = (j + 1) % len(self.files)
        else:
            raise UserError("no decodable images found")
        item = {"image": image, "label": int(self.labels[i])}
        if self.captions is not None:
            item["caption"] = self.captions[i]
        return item

    def subset(self, idx: np.ndarray) -> "LazyImageDataset":
        caps = [self.captions[i] for i in idx] if self.captions is not None else None
        return LazyImageDataset([self.files[i] for i in idx], self.labels[idx].tolist(), self.size, caps, self.on_corrupt)


def decode_resize(path: str | Path, size: int) -> torch.Tensor:
    """One file -> uint8 (3, size, size): shorter side to ``size``, centre crop.
    JPEGs are decoded at reduced scale when much larger (PIL draft), which is
    what makes lazy ImageNet at 32-64 px affordable on a CPU."""
    from PIL import Image
    from torchvision.transforms.v2.functional import center_crop, pil_to_tensor, resize

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # only JPEG honours it; always at least `size`
            img = pil_to_tensor(im.convert("RGB"))
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError) for bad bytes
        raise UserError(f"corrupt image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                        f"(set data.on_corrupt=skip to skip such files)") from None
    return center_crop(resize(img, [size], antialias=True), [size, size])


@dataclass
class DatasetBundle:
    """Fixed, seeded train and test splits of one dataset plus its class names.

    ``splits`` holds extra named evaluation splits (e.g. shapes' ``heldout``);
    ``data.eval_split=NAME`` makes one of them the test split.
    """

    name: str
    train: Dataset
    test: Dataset
    classnames: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, Dataset] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


@dataclass
class DatasetSpec:
    """What `ssl-zoo list datasets` shows about a loader."""

    title: str
    size: str
    classes: str
    needs: Callable[[Mapping[str, Any]], list[Path]] | None = None  # files/dirs it reads; None: embedded

    def availability(self, cfg: Mapping[str, Any]) -> str:
        if self.needs is None:
            return "yes (embedded)"
        try:
            paths = self.needs(cfg)
        except UserError as exc:
            return f"no ({exc})"
        missing = [p for p in paths if not p.exists()]
        return f"no (missing {missing[0]})" if missing else f"yes ({paths[0] if paths else 'generated'})"


def dataset_spec(title: str, size: str, classes: str | int,
                 needs: Callable[[Mapping[str, Any]], list[Path]] | None = None) -> Callable:
    def mark(fn: Callable) -> Callable:
        fn.spec = DatasetSpec(title, size, str(classes), needs)
        return fn

    return mark


def load_dataset(cfg: Mapping[str, Any]) -> DatasetBundle:
    """Load the dataset named by ``cfg.name`` (the ``data`` config group), then
    apply the generic options: classnames, eval_split, train_subset/test_subset."""
    bundle = DATASETS.get(cfg["name"])(cfg)
    names = cfg.get("classnames")
    if names:
        bundle.classnames = _read_classnames(names, bundle.num_classes)
    split = cfg.get("eval_split") or "test"
    if split != "test":
        if split not in bundle.splits:
            raise UserError(f"data.eval_split={split}: {bundle.name} has no such split; "
                            f"available: {', '.join(['test', *bundle.splits])}")
        bundle.test = bundle.splits[split]
    if cfg.get("train_classes"):  # pretrain on some classes, evaluate on all (unseen-class zero-shot)
        bundle.train = restrict_classes(bundle.train, bundle.classnames, list(cfg["train_classes"]))
    seed = int(cfg.get("split_seed", 0))
    for part in ("train", "test"):
        n = cfg.get(f"{part}_subset")
        if n:
            setattr(bundle, part, seeded_subset(getattr(bundle, part), int(n), seed, f"data.{part}_subset"))
    return bundle


def restrict_classes(dataset: Dataset, classnames: list[str], keep: list[str]) -> Dataset:
    """Only the items of the classes named in ``keep`` (data.train_classes)."""
    unknown = [str(k) for k in keep if str(k) not in classnames]
    if unknown:
        raise UserError(f"data.train_classes: unknown class(es) {unknown}; available: {', '.join(classnames)}")
    ids = [classnames.index(str(k)) for k in keep]
    return dataset.subset(np.flatnonzero(np.isin(dataset.labels.numpy(), ids)))


def seeded_subset(dataset: Dataset, n: int, seed: int, what: str = "subset") -> Dataset:
    """A stratified subset of ``n`` items that depends only on ``seed`` (for quick runs)."""
    if n >= len(dataset):
        return dataset
    labels = dataset.labels.numpy()
    if n < len(np.unique(labels)):
        raise UserError(f"{what}={n} is smaller than the number of classes ({len(np.unique(labels))})")
    keep, _ = stratified_split(labels, 1.0 - n / len(dataset), seed)
    return dataset.subset(keep)


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
    """Indices (train, test) of a stratified split that depends only on ``seed``.
    Unstratified when every label is the same (e.g. all -1: unlabelled pairs)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    stratify = labels if len(np.unique(labels)) > 1 else None
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(test)


@dataset_spec("sklearn digits (real 8x8 handwritten digits)", "1,437 train / 360 test", 10)
def load_digits_dataset(cfg: Mapping[str, Any]) -> DatasetBundle:
    """sklearn's 1,797 real 8x8 digits (values 0..16), split 80/20 stratified with ``data.split_seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(digits.target)
    train, test = stratified_split(digits.target, float(cfg.get("test_fraction", 0.2)), int(cfg.get("split_seed", 0)))
    names = [str(i) for i in range(10)]
    return DatasetBundle("digits", ImageDataset(images[train], labels[train]), ImageDataset(images[test], labels[test]), names)


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


def decode_files(files: Sequence[str | Path], size: int, on_corrupt: str) -> tuple[torch.Tensor, np.ndarray]:
    """Decode and resize every image once (deterministic), so training never
    meets a bad file mid-epoch. Returns the images and the indices of the files
    kept; corrupt files are skipped and counted in the log, or raise."""
    if on_corrupt not in ("skip", "error"):
        raise UserError(f"data.on_corrupt={on_corrupt}: accepted values are skip, error")
    images, kept, bad = [], [], []
    for i, path in enumerate(files):
        try:
            images.append(decode_resize(path, size))
            kept.append(i)
        except UserError:
            if on_corrupt != "skip":
                raise
            bad.append(path)
    if bad:
        log.warning("skipped %d corrupt image(s) of %d, first: %s", len(bad), len(files), bad[0])
    if not images:
        raise UserError("no decodable images found")
    return torch.stack(images), np.asarray(kept)


def files_dataset(files: Sequence[Path], labels: Sequence[int], cfg: Mapping[str, Any],
                  captions: Sequence[str] | None = None) -> Dataset:
    """Eager (decoded once, in memory) or, with ``data.lazy=true``, decoded per item."""
    size, on_corrupt = int(cfg.get("image_size", 32)), str(cfg.get("on_corrupt", "skip"))
    if cfg.get("lazy", False):
        return LazyImageDataset(files, labels, size, captions, on_corrupt)
    images, kept = decode_files(files, size, on_corrupt)
    caps = [captions[i] for i in kept] if captions is not None else None
    return ImageDataset(images, torch.as_tensor(np.asarray(labels)[kept]), caps)


def _folder_needs(cfg: Mapping[str, Any]) -> list[Path]:
    if not cfg.get("root"):
        raise UserError("needs data.root=DIR")
    return [Path(cfg["root"]).expanduser()]


@dataset_spec("image folder (ROOT/<class>/<img>, optionally under train/ and test/)", "any", "sub-folders",
              _folder_needs)
def load_imagefolder(cfg: Mapping[str, Any]) -> DatasetBundle:
    """ROOT/<class>/<img>, or ROOT/train/<class>/<img> and ROOT/test/<class>/<img>.
    Without train/ and test/, a stratified seeded split is carved."""
    if not cfg.get("root"):
        raise UserError("data=imagefolder needs data.root=DIR (class sub-folders, optionally under train/ and test/)")
    root = Path(cfg["root"]).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root={root}: no such directory (expected class sub-folders, optionally under train/ and test/)")
    if (root / "train").is_dir() or (root / "test").is_dir():
        if not ((root / "train").is_dir() and (root / "test").is_dir()):
            raise UserError(f"data.root={root}: has only one of train/ and test/; give both or neither")
        tr, te = _scan_classes(root / "train"), _scan_classes(root / "test")
        if sorted(tr) != sorted(te):
            raise UserError(f"data.root={root}: train/ and test/ have different classes: "
                            f"only in train: {sorted(set(tr) - set(te))}, only in test: {sorted(set(te) - set(tr))}")
        names = sorted(tr)
        train, test = ([p for c in names for p in s[c]] for s in (tr, te))
        ytr, yte = ([i for i, c in enumerate(names) for _ in s[c]] for s in (tr, te))
        return DatasetBundle("imagefolder", files_dataset(train, ytr, cfg), files_dataset(test, yte, cfg), names,
                             {"root": str(root)})
    classes = _scan_classes(root)
    names = sorted(classes)
    files = [p for c in names for p in classes[c]]
    labels = np.asarray([i for i, c in enumerate(names) for _ in classes[c]])
    tr, te = stratified_split(labels, float(cfg.get("test_fraction", 0.2)), int(cfg.get("split_seed", 0)))
    return DatasetBundle("imagefolder", files_dataset([files[i] for i in tr], labels[tr], cfg),
                         files_dataset([files[i] for i in te], labels[te], cfg), names, {"root": str(root)})
