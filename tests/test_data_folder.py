"""ImageFolder: corrupt files, empty classes, mismatched splits; seeded subsets."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssl_zoo.data.datasets import load_dataset
from ssl_zoo.errors import UserError


def _folder(root, classes=("a", "b"), n=5, corrupt=None):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    if corrupt:
        (root / corrupt).write_bytes(b"\xff\xd8 truncated")


def test_corrupt_image_skipped_and_counted(tmp_path, caplog):
    _folder(tmp_path, corrupt="a/bad.jpg")
    with caplog.at_level(logging.WARNING):
        b = load_dataset({"name": "imagefolder", "root": str(tmp_path), "image_size": 16, "test_fraction": 0.2})
    assert len(b.train) + len(b.test) == 10 and "skipped 1 corrupt image(s)" in caplog.text
    # an epoch through a DataLoader never meets the bad file
    seen = sum(len(batch["image"]) for batch in DataLoader(b.train, batch_size=3, shuffle=True))
    assert seen == len(b.train)


@pytest.mark.parametrize("lazy", [False, True])
def test_corrupt_image_error_mode(tmp_path, lazy):
    _folder(tmp_path / "train", corrupt="a/bad.jpg")
    _folder(tmp_path / "test")
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 16, "on_corrupt": "error", "lazy": lazy}
    with pytest.raises(UserError, match="corrupt image .*bad.jpg.*data.on_corrupt=skip"):
        b = load_dataset(cfg)
        [b.train[i] for i in range(len(b.train))]


def test_empty_class_and_mismatched_splits(tmp_path):
    _folder(tmp_path / "one")
    (tmp_path / "one" / "empty").mkdir()
    with pytest.raises(UserError, match="class folder\\(s\\) with no images: empty"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path / "one")})
    _folder(tmp_path / "two" / "train", classes=("a", "b"))
    _folder(tmp_path / "two" / "test", classes=("a", "c"))
    with pytest.raises(UserError, match="different classes: only in train: \\['b'\\], only in test: \\['c'\\]"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path / "two")})
    _folder(tmp_path / "three" / "train")
    with pytest.raises(UserError, match="only one of train/ and test/"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path / "three")})


def test_lazy_equals_eager(tmp_path):
    _folder(tmp_path, n=4)
    eager = load_dataset({"name": "imagefolder", "root": str(tmp_path), "image_size": 12})
    lazy = load_dataset({"name": "imagefolder", "root": str(tmp_path), "image_size": 12, "lazy": True})
    assert torch.equal(torch.stack([lazy.train[i]["image"] for i in range(len(lazy.train))]), eager.train.images)


def test_seeded_stratified_subset():
    full = load_dataset({"name": "digits", "image_size": 16})
    a, b = (load_dataset({"name": "digits", "train_subset": 200, "test_subset": 50}) for _ in range(2))
    assert len(a.train) == 200 and len(a.test) == 50 and torch.equal(a.train.images, b.train.images)
    assert torch.bincount(a.train.labels).min() >= 18  # stratified: ~20 per class
    assert len(full.train) == 1437
    with pytest.raises(UserError, match="eval_split=heldout"):
        load_dataset({"name": "digits", "eval_split": "heldout"})
