"""data=pairs: a CSV/TSV of (image, caption[, label][, split]) read into an ImageDataset with captions."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ssl_zoo.data.datasets import load_dataset
from ssl_zoo.errors import UserError


def _write(tmp_path, header, rows, suffix=".csv"):
    sep = "\t" if suffix == ".tsv" else ","
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir(exist_ok=True)
    for r in rows:
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / r[0])
    path = tmp_path / f"pairs{suffix}"
    path.write_text("\n".join([sep.join(header)] + [sep.join(r) for r in rows]) + "\n")
    return path


def test_labelled_pairs_with_split_column(tmp_path):
    rows = [(f"img/{i}.png", f"a photo of thing {i}", ["cat", "dog"][i % 2], "test" if i >= 8 else "train")
            for i in range(10)]
    path = _write(tmp_path, ["image", "caption", "label", "split"], rows, ".tsv")
    b = load_dataset({"name": "pairs", "file": str(path), "image_size": 16})
    assert b.classnames == ["cat", "dog"] and (len(b.train), len(b.test)) == (8, 2)
    item = b.train[3]
    assert item["caption"] == "a photo of thing 3" and item["label"] == 1 and item["image"].shape == (3, 16, 16)


def test_unlabelled_pairs_for_pretraining(tmp_path, caplog):
    rows = [(f"img/{i}.png", f"caption {i}") for i in range(10)]
    path = _write(tmp_path, ["image", "caption"], rows)
    (tmp_path / "img" / "3.png").write_bytes(b"broken")
    b = load_dataset({"name": "pairs", "file": str(path), "image_size": 16, "test_fraction": 0.2})
    assert b.classnames == [] and set(b.train.labels.tolist()) == {-1}
    assert len(b.train) + len(b.test) == 9 and "caption 3" not in b.train.captions + b.test.captions
    assert "skipped 1 corrupt" in caplog.text
    # captions stay aligned with their images after the skip
    for ds in (b.train, b.test):
        for cap, img in zip(ds.captions, ds.images):
            src = np.asarray(Image.open(tmp_path / "img" / f"{cap.split()[-1]}.png").convert("RGB").resize((16, 16)))
            assert abs(img.permute(1, 2, 0).float().mean() - float(src.mean())) < 3


def test_bad_pairs_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_dataset({"name": "pairs", "file": str(tmp_path / "none.csv")})
    (tmp_path / "x.csv").write_text("path,text\na.png,hi\n")
    with pytest.raises(UserError, match="missing column.*image, caption"):
        load_dataset({"name": "pairs", "file": str(tmp_path / "x.csv")})
