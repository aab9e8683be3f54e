"""Real labelled datasets read through torchvision's own loaders, from a local
root (or downloaded there with ``data.download=true`` where a network exists).

Small sets (Fashion-MNIST, CIFAR, STL-10) are decoded into memory as uint8;
large ones (Food-101, ImageNet) are lazy: each item is decoded and resized to
``data.image_size`` in ``__getitem__`` (deterministic, no augmentation).
Test splits are the official ones (ImageNet: val). torchvision checks the
md5 of CIFAR/STL files; ``data.verify=false`` accepts a re-packed copy.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ssl_zoo.data.datasets import DatasetBundle, ImageDataset, LazyImageDataset, dataset_spec
from ssl_zoo.errors import UserError

DOWNLOAD_HINT = "download it with data.download=true where a network exists, or place"


def _root(cfg: Mapping[str, Any], name: str) -> Path:
    if not cfg.get("root"):
        raise UserError(f"data={name} needs data.root=DIR")
    return Path(str(cfg["root"])).expanduser()


def _not_found(cfg: Mapping[str, Any], title: str, looked: Path, what: str) -> UserError:
    return UserError(f"data.root={cfg['root']}: {title} not found (looked for {looked}); {DOWNLOAD_HINT} {what} there")


def _torchvision(make: Callable[[], Any], cfg: Mapping[str, Any], title: str) -> Any:
    """Call a torchvision constructor, turning its errors into one line."""
    try:
        return make()
    except RuntimeError as exc:
        hint = "" if cfg.get("download") else "; a re-packed copy is accepted with data.verify=false"
        raise UserError(f"data.root={cfg['root']}: {title} could not be read: {str(exc).splitlines()[0]}{hint}") from None
    except OSError as exc:  # URLError (no network) is an OSError
        raise UserError(f"data.root={cfg['root']}: {title}: download failed ({exc}); place the files there instead") from None


def _resize_all(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), once at load (saves memory for STL-10 at small sizes)."""
    from torchvision.transforms.v2.functional import resize

    if images.shape[-1] == size:
        return images
    return torch.cat([resize(c, [size, size], antialias=True) for c in images.split(1024)])


def _bundle(name: str, train: tuple, test: tuple, classnames: list[str], cfg: Mapping[str, Any],
            native: int) -> DatasetBundle:
    size = int(cfg.get("image_size", native))
    (xtr, ytr), (xte, yte) = train, test
    return DatasetBundle(name, ImageDataset(_resize_all(xtr, size), ytr), ImageDataset(_resize_all(xte, size), yte),
                         list(classnames), {"root": str(cfg.get("root"))})


# --- Fashion-MNIST --------------------------------------------------------------------------------------

FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _fashion_dir(root: Path) -> tuple[Path, bool] | None:
    """Where the four idx files are (flat as in the Debian package, or torchvision's
    FashionMNIST/raw layout), and whether they are gzipped."""
    for d in (root / "FashionMNIST" / "raw", root):
        if all((d / f).is_file() for f in FASHION_FILES):
            return d, False
        if all((d / f"{f}.gz").is_file() for f in FASHION_FILES):
            return d, True
    return None


def _fashion_needs(cfg: Mapping[str, Any]) -> list[Path]:
    root = _root(cfg, "fashion_mnist")
    found = _fashion_dir(root)
    return [found[0]] if found else [root / FASHION_FILES[0]]


def _fashion_torchvision_root(src: Path, gz: bool, cfg: Mapping[str, Any]) -> Path:
    """A root in torchvision's layout: the source itself, or a cache dir with the
    idx files gunzipped once (the Debian package ships them gzipped, read-only)."""
    if not gz and src.parent.name == "FashionMNIST":
        return src.parent.parent
    stats = [(f, (src / f"{f}.gz" if gz else src / f).stat()) for f in FASHION_FILES]
    key = hashlib.sha256(repr([str(src)] + [(f, s.st_size, s.st_mtime_ns) for f, s in stats]).encode()).hexdigest()[:12]
    cache = Path(str(cfg.get("cache_dir") or "~/.cache/ssl_zoo")).expanduser() / "fashion_mnist" / key
    raw = cache / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES:
        if (raw / f).is_file():
            continue
        tmp = raw / f".{f}.tmp{os.getpid()}"  # atomic: concurrent runs never see a half-written file
        if gz:
            with gzip.open(src / f"{f}.gz", "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout)
        else:
            shutil.copyfile(src / f, tmp)
        os.replace(tmp, raw / f)
    return cache


@dataset_spec("Fashion-MNIST (real 28x28 grayscale clothing)", "60,000 train / 10,000 test", 10, _fashion_needs)
def load_fashion_mnist(cfg: Mapping[str, Any]) -> DatasetBundle:
    from torchvision.datasets import FashionMNIST

    root = _root(cfg, "fashion_mnist")
    found = _fashion_dir(root)
    if found is None and cfg.get("download"):
        _torchvision(lambda: FashionMNIST(str(root), train=True, download=True), cfg, "Fashion-MNIST")
        found = _fashion_dir(root)
    if found is None:
        raise _not_found(cfg, "Fashion-MNIST", root / FASHION_FILES[0],
                         "the four idx files (optionally .gz; Debian: apt install dataset-fashion-mnist)")
    tv_root = str(_fashion_torchvision_root(*found, cfg))
    sets = [_torchvision(lambda t=t: FashionMNIST(tv_root, train=t), cfg, "Fashion-MNIST") for t in (True, False)]
    splits = [(s.data.unsqueeze(1).contiguous(), s.targets) for s in sets]
    return _bundle("fashion_mnist", *splits, sets[0].classes, cfg, 28)


# --- CIFAR-10 / CIFAR-100 ---------------------------------------------------------------------------------

def _unverified(cls: type) -> type:
    """The same torchvision loader, checking that the files exist but not their md5."""
    attrs = {"train_list": [[f, None] for f, _ in cls.train_list], "test_list": [[f, None] for f, _ in cls.test_list]}
    if hasattr(cls, "meta"):
        attrs["meta"] = {**cls.meta, "md5": None}
    return type(f"Unverified{cls.__name__}", (cls,), attrs)


def _cifar_needs(cls_name: str) -> Callable[[Mapping[str, Any]], list[Path]]:
    def needs(cfg: Mapping[str, Any]) -> list[Path]:
        import torchvision.datasets as tvd

        return [_root(cfg, cls_name.lower()) / getattr(tvd, cls_name).base_folder]

    return needs


def _load_cifar(cfg: Mapping[str, Any], cls_name: str, title: str) -> DatasetBundle:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = _root(cfg, cls_name.lower())
    folder = root / cls.base_folder
    if not folder.is_dir() and not cfg.get("download"):
        raise _not_found(cfg, title, folder, "the python-version archive (extracted)")
    if not cfg.get("verify", True):
        cls = _unverified(cls)
    sets = [_torchvision(lambda t=t: cls(str(root), train=t, download=bool(cfg.get("download"))), cfg, title)
            for t in (True, False)]
    splits = [(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(s.targets)) for s in sets]
    return _bundle(cls_name.lower(), *splits, [c.replace("_", " ") for c in sets[0].classes], cfg, 32)


@dataset_spec("CIFAR-10", "50,000 train / 10,000 test", 10, _cifar_needs("CIFAR10"))
def load_cifar10(cfg: Mapping[str, Any]) -> DatasetBundle:
    return _load_cifar(cfg, "CIFAR10", "CIFAR-10")


@dataset_spec("CIFAR-100 (fine labels)", "50,000 train / 10,000 test", 100, _cifar_needs("CIFAR100"))
def load_cifar100(cfg: Mapping[str, Any]) -> DatasetBundle:
    return _load_cifar(cfg, "CIFAR100", "CIFAR-100")


# --- STL-10 ----------------------------------------------------------------------------------------------

STL_FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")


def _stl_needs(cfg: Mapping[str, Any]) -> list[Path]:
    return [_root(cfg, "stl10") / "stl10_binary" / f for f in STL_FILES]


def _stl_class(verify: bool) -> type:
    from torchvision.datasets import STL10
    from torchvision.datasets.utils import check_integrity

    class LabelledSTL10(STL10):
        """Checks only the labelled files: the 2.6 GB unlabeled_X.bin is not needed."""

        def _check_integrity(self) -> bool:
            return all(check_integrity(os.path.join(self.root, self.base_folder, f), md5 if verify else None)
                       for f, md5 in self.train_list[:2] + self.test_list)

    return LabelledSTL10


@dataset_spec("STL-10 (labelled part)", "5,000 train / 8,000 test", 10, _stl_needs)
def load_stl10(cfg: Mapping[str, Any]) -> DatasetBundle:
    root = _root(cfg, "stl10")
    if not all(p.is_file() for p in _stl_needs(cfg)) and not cfg.get("download"):
        raise _not_found(cfg, "STL-10", root / "stl10_binary", "the binary archive (extracted)")
    cls = _stl_class(bool(cfg.get("verify", True)))
    sets = [_torchvision(lambda s=s: cls(str(root), split=s, download=bool(cfg.get("download"))), cfg, "STL-10")
            for s in ("train", "test")]
    splits = [(torch.from_numpy(s.data).contiguous(), torch.from_numpy(s.labels.astype(np.int64))) for s in sets]
    return _bundle("stl10", *splits, sets[0].classes, cfg, 96)


# --- Food-101 and ImageNet (lazy) ---------------------------------------------------------------------------

def _food_needs(cfg: Mapping[str, Any]) -> list[Path]:
    base = _root(cfg, "food101") / "food-101"
    return [base / "meta" / "train.json", base / "images"]


@dataset_spec("Food-101 (lazy decode)", "75,750 train / 25,250 test", 101, _food_needs)
def load_food101(cfg: Mapping[str, Any]) -> DatasetBundle:
    from torchvision.datasets import Food101

    root = _root(cfg, "food101")
    if not all(p.exists() for p in _food_needs(cfg)) and not cfg.get("download"):
        raise _not_found(cfg, "Food-101", root / "food-101", "the extracted archive (food-101/images, food-101/meta)")
    sets = [_torchvision(lambda s=s: Food101(str(root), split=s, download=bool(cfg.get("download"))), cfg, "Food-101")
            for s in ("train", "test")]
    size, on_corrupt = int(cfg.get("image_size", 64)), str(cfg.get("on_corrupt", "skip"))
    train, test = (LazyImageDataset(s._image_files, s._labels, size, on_corrupt=on_corrupt) for s in sets)
    return DatasetBundle("food101", train, test, [c.replace("_", " ") for c in sets[0].classes], {"root": str(root)})


def _imagenet_needs(cfg: Mapping[str, Any]) -> list[Path]:
    root = _root(cfg, "imagenet")
    meta = root / "meta.bin"
    return [root / "train", root / "val", meta if meta.exists() else root / "ILSVRC2012_devkit_t12.tar.gz"]


@dataset_spec("ImageNet-1k (ILSVRC 2012, lazy decode; test = val)", "1,281,167 train / 50,000 val", 1000,
              _imagenet_needs)
def load_imagenet(cfg: Mapping[str, Any]) -> DatasetBundle:
    """torchvision's ImageNet: ROOT/train/<wnid>/, ROOT/val/<wnid>/ and ROOT/meta.bin
    (made by torchvision from ILSVRC2012_devkit_t12.tar.gz on first use). Never downloads."""
    from torchvision.datasets import ImageNet

    root = _root(cfg, "imagenet")
    missing = [p for p in _imagenet_needs(cfg) if not p.exists()]
    if missing:
        raise UserError(f"data.root={cfg['root']}: ImageNet not found (missing {missing[0]}); ImageNet cannot be "
                        f"downloaded automatically: place train/, val/ (class folders) and the devkit archive there")
    sets = [_torchvision(lambda s=s: ImageNet(str(root), split=s), cfg, "ImageNet") for s in ("train", "val")]
    size, on_corrupt = int(cfg.get("image_size", 64)), str(cfg.get("on_corrupt", "skip"))
    train, test = (LazyImageDataset([p for p, _ in s.samples], [y for _, y in s.samples], size, on_corrupt=on_corrupt)
                   for s in sets)
    names = [c[0] if isinstance(c, tuple) else str(c) for c in sets[0].classes]
    return DatasetBundle("imagenet", train, test, names, {"root": str(root)})
