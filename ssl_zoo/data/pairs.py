"""Image-caption pairs from a CSV or TSV file: ``data=pairs data.file=FILE.csv``.

Columns: ``image`` (path, relative to the file's folder, or absolute) and
``caption``; optional ``label`` (class name: makes the set usable by the
evaluator; class names are the sorted distinct labels) and ``split``
(``train``/``test``; without it a seeded split is carved, stratified by label).
Without a label column every label is -1 and ``classnames`` is empty: the set
is for image-text pretraining only and evaluation is skipped.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ssl_zoo.data.datasets import DatasetBundle, dataset_spec, files_dataset, stratified_split
from ssl_zoo.errors import UserError

REQUIRED = ("image", "caption")


def _needs(cfg: Mapping[str, Any]) -> list[Path]:
    if not cfg.get("file"):
        raise UserError("needs data.file=FILE.csv")
    return [Path(str(cfg["file"])).expanduser()]


def read_pairs(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserError(f"data.file={path}: no such file (a CSV/TSV with columns image, caption[, label][, split])")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"data.file={path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames} "
                            f"(needs image, caption; optional label, split)")
        rows = list(reader)
    if not rows:
        raise UserError(f"data.file={path}: no rows")
    return rows


@dataset_spec("image-caption pairs (CSV/TSV: image, caption[, label][, split])", "rows of data.file",
              "label column (or none)", _needs)
def load_pairs(cfg: Mapping[str, Any]) -> DatasetBundle:
    path = _needs(cfg)[0]
    rows = read_pairs(path)
    files = [Path(r["image"]) if Path(r["image"]).is_absolute() else path.parent / r["image"] for r in rows]
    captions = [r["caption"] for r in rows]
    labelled = "label" in rows[0]
    names = sorted({r["label"] for r in rows}) if labelled else []
    labels = np.array([names.index(r["label"]) for r in rows] if labelled else [-1] * len(rows))
    if "split" in rows[0]:
        bad = sorted({r["split"] for r in rows} - {"train", "test"})
        if bad:
            raise UserError(f"data.file={path}: split column values {bad} not accepted (train, test)")
        train = np.flatnonzero([r["split"] == "train" for r in rows])
        test = np.flatnonzero([r["split"] == "test" for r in rows])
        if len(train) == 0 or len(test) == 0:
            raise UserError(f"data.file={path}: the split column needs both train and test rows")
    else:
        train, test = stratified_split(labels, float(cfg.get("test_fraction", 0.2)), int(cfg.get("split_seed", 0)))
    sets = [files_dataset([files[i] for i in idx], labels[idx], cfg, [captions[i] for i in idx]) for idx in (train, test)]
    return DatasetBundle("pairs", sets[0], sets[1], names, {"file": str(path), "labelled": labelled})
