"""Real on-disk formats, written small here, read through torchvision's loaders."""
from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_zoo.data.datasets import load_dataset
from ssl_zoo.errors import UserError

FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """The idx format: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian int32 dims, data."""
    data = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()
    (gzip.open(f"{path}.gz", "wb") if gz else open(path, "wb")).write(data)


def _fashion_files(folder: Path, gz: bool, rng) -> dict:
    folder.mkdir(parents=True)
    arrays = {"train": (rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), rng.integers(0, 10, 30, dtype=np.uint8)),
              "t10k": (rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), rng.integers(0, 10, 12, dtype=np.uint8))}
    for split, (x, y) in arrays.items():
        _idx(folder / f"{split}-images-idx3-ubyte", x, gz)
        _idx(folder / f"{split}-labels-idx1-ubyte", y, gz)
    return arrays


@pytest.mark.parametrize("layout", ["debian_gz", "torchvision_raw"])
def test_fashion_mnist_idx_files(tmp_path, layout):
    rng = np.random.default_rng(0)
    root = tmp_path / "fm"
    folder = root if layout == "debian_gz" else root / "FashionMNIST" / "raw"
    arrays = _fashion_files(folder, layout == "debian_gz", rng)
    b = load_dataset({"name": "fashion_mnist", "root": str(root), "cache_dir": str(tmp_path / "cache"), "image_size": 28})
    assert b.classnames[0] == "T-shirt/top" and b.num_classes == 10
    assert torch.equal(b.train.images[:, 0], torch.from_numpy(arrays["train"][0]))
    assert torch.equal(b.train.labels, torch.from_numpy(arrays["train"][1]).long())
    assert torch.equal(b.test.images[:, 0], torch.from_numpy(arrays["t10k"][0]))


@pytest.mark.skipif(not (FASHION_DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                    reason="the Debian package dataset-fashion-mnist is not installed here")
def test_fashion_mnist_real_debian_files(tmp_path):
    b = load_dataset({"name": "fashion_mnist", "root": str(FASHION_DEBIAN), "cache_dir": str(tmp_path), "image_size": 28})
    assert (len(b.train), len(b.test)) == (60000, 10000)
    assert b.train.images.shape[1:] == (1, 28, 28)
    # the official splits are balanced: 6,000 / 1,000 images per class
    assert torch.bincount(b.train.labels).tolist() == [6000] * 10
    assert torch.bincount(b.test.labels).tolist() == [1000] * 10


def _cifar(root: Path, n_classes: int, rng) -> dict:
    """The python-version layout: pickled dicts of (N, 3072) uint8 rows, CHW order."""
    hundred = n_classes == 100
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = "fine_labels" if hundred else "labels"
    files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    out = {"train": [], "test": []}
    for name in files + ["test" if hundred else "test_batch"]:
        x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        y = rng.integers(0, n_classes, 4).tolist()
        pickle.dump({"data": x, key: y}, open(folder / name, "wb"))
        out["test" if name.startswith("test") else "train"].append((x, y))
    names = [f"class_{i}" for i in range(n_classes)]
    meta = {"fine_label_names": names} if hundred else {"label_names": names}
    pickle.dump(meta, open(folder / ("meta" if hundred else "batches.meta"), "wb"))
    return out


@pytest.mark.parametrize("name,n_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickle_batches(tmp_path, name, n_classes):
    written = _cifar(tmp_path, n_classes, np.random.default_rng(1))
    b = load_dataset({"name": name, "root": str(tmp_path), "verify": False, "image_size": 32})
    x = np.concatenate([x for x, _ in written["train"]]).reshape(-1, 3, 32, 32)
    assert torch.equal(b.train.images, torch.from_numpy(x))
    assert b.train.labels.tolist() == sum((y for _, y in written["train"]), [])
    assert len(b.test) == 4 and b.classnames[1] == "class 1" and b.num_classes == n_classes
    # torchvision's md5 check rejects files that are not the published ones, in one line
    with pytest.raises(UserError, match="could not be read.*data.verify=false"):
        load_dataset({"name": name, "root": str(tmp_path), "verify": True})


def test_stl10_binaries(tmp_path):
    """stl10_binary/*_X.bin: (N, 3, 96, 96) uint8 in column-major (W, H) order; *_y.bin labels 1..10."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # (N, C, H, W)
        x.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # stored as (N, C, W, H)
        (rng.integers(1, 11, n).astype(np.uint8)).tofile(folder / f"{split}_y.bin")
        images[split] = x
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))
    b = load_dataset({"name": "stl10", "root": str(tmp_path), "verify": False, "image_size": 96})
    assert torch.equal(b.train.images, torch.from_numpy(images["train"]))
    assert b.train.labels.min() >= 0 and b.train.labels.max() <= 9 and b.classnames[0] == "c0"
    small = load_dataset({"name": "stl10", "root": str(tmp_path), "verify": False, "image_size": 32})
    assert small.test.images.shape == (4, 3, 32, 32)


def _jpeg(path: Path, rng, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def test_food101_lazy(tmp_path):
    rng = np.random.default_rng(3)
    base = tmp_path / "food-101"
    meta = {"train": {}, "test": {}}
    for c in ("apple_pie", "sushi"):
        for split, ids in (("train", ["1", "2", "3"]), ("test", ["4"])):
            meta[split][c] = [f"{c}/{i}" for i in ids]
            for i in ids:
                _jpeg(base / "images" / c / f"{i}.jpg", rng)
    (base / "meta").mkdir()
    for split in meta:
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))
    (base / "images" / "sushi" / "2.jpg").write_bytes(b"not a jpeg")  # a corrupt file
    b = load_dataset({"name": "food101", "root": str(tmp_path), "image_size": 16})
    assert b.classnames == ["apple pie", "sushi"] and (len(b.train), len(b.test)) == (6, 2)
    items = [b.train[i] for i in range(len(b.train))]  # a whole epoch: the corrupt one is replaced, no crash
    assert all(it["image"].shape == (3, 16, 16) and it["image"].dtype == torch.uint8 for it in items)
    assert [it["label"] for it in items] == [0, 0, 0, 1, 1, 1]
    strict = load_dataset({"name": "food101", "root": str(tmp_path), "image_size": 16, "on_corrupt": "error"})
    with pytest.raises(UserError, match="corrupt image .*2.jpg"):
        [strict.train[i] for i in range(len(strict.train))]


def test_imagenet_folders_and_meta(tmp_path):
    """torchvision's ImageNet layout: train/<wnid>/, val/<wnid>/, meta.bin = (wnid -> names, val wnids)."""
    rng = np.random.default_rng(4)
    wnids = {"n01440764": ("tench", "Tinca tinca"), "n01443537": ("goldfish", "Carassius auratus")}
    for w in wnids:
        for i in range(2):
            _jpeg(tmp_path / "train" / w / f"{w}_{i}.JPEG", rng, (80, 60))
        _jpeg(tmp_path / "val" / w / f"ILSVRC2012_val_{w}.JPEG", rng, (80, 60))
    torch.save((wnids, list(wnids)), tmp_path / "meta.bin")
    b = load_dataset({"name": "imagenet", "root": str(tmp_path), "image_size": 24})
    assert b.classnames == ["tench", "goldfish"] and (len(b.train), len(b.test)) == (4, 2)
    assert b.test[1]["image"].shape == (3, 24, 24) and b.test[1]["label"] == 1


@pytest.mark.parametrize("name,looked", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                         ("stl10", "stl10_binary"), ("food101", "food-101"),
                                         ("fashion_mnist", "train-images-idx3-ubyte")])
def test_missing_root_is_one_clear_line(tmp_path, name, looked):
    with pytest.raises(UserError) as err:
        load_dataset({"name": name, "root": str(tmp_path / "nowhere")})
    msg = str(err.value)
    assert "\n" not in msg and looked in msg and "data.download=true" in msg


def test_missing_imagenet_says_what_to_place(tmp_path):
    with pytest.raises(UserError, match="ImageNet not found .*place train/, val/"):
        load_dataset({"name": "imagenet", "root": str(tmp_path)})


def test_cli_missing_root_exits_2(tmp_path, capsys):
    from ssl_zoo.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["eval", "model=pixels", "data=cifar10", f"data.root={tmp_path}/x", f"hydra.run.dir={tmp_path}/run"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and "cifar-10-batches-py" in err
