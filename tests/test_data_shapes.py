"""Captioned shapes: determinism, requested concept frequencies, held-out pairs, rendering."""
from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from ssl_zoo.data.datasets import load_dataset
from ssl_zoo.data.shapes import render
from ssl_zoo.errors import UserError

SHAPES = ["circle", "square", "triangle", "diamond", "cross", "star"]
COLORS = ["red", "green", "blue", "yellow", "purple"]


def cfg(**kw):
    base = {"name": "shapes", "seed": 0, "n_train": 3000, "n_test": 300, "n_heldout": 200, "image_size": 32,
            "shapes": SHAPES, "colors": COLORS, "frequency": "uniform", "zipf_alpha": 1.0, "heldout_pairs": 0,
            "label": "shape"}
    return {**base, **kw}


def test_deterministic_from_seed():
    a, b, c = (load_dataset(cfg(n_train=200, n_test=50, seed=s)) for s in (3, 3, 4))
    assert torch.equal(a.train.images, b.train.images) and a.train.captions == b.train.captions
    assert not torch.equal(a.train.images, c.train.images)


def test_zipf_frequencies_and_heldout_pairs():
    alpha = 1.3
    b = load_dataset(cfg(frequency="zipf", zipf_alpha=alpha, heldout_pairs=4, label="shape_color"))
    heldout = {tuple(p) for p in b.meta["heldout_pairs"]}
    assert len(heldout) == 4
    # expected joint written from the definition: p(i-th shape) * p(j-th colour), each ∝ rank^-alpha,
    # renormalised over the pairs that are not held out
    ps = np.array([(i + 1.0) ** -alpha for i in range(len(SHAPES))])
    pc = np.array([(j + 1.0) ** -alpha for j in range(len(COLORS))])
    seen = [(s, c) for s, c in itertools.product(SHAPES, COLORS) if (s, c) not in heldout]
    p = np.array([ps[SHAPES.index(s)] * pc[COLORS.index(c)] for s, c in seen])
    p /= p.sum()
    attrs = b.meta["attributes"]["train"]
    got = [(SHAPES[s], COLORS[c]) for s, c in zip(attrs["shape"], attrs["color"])]
    assert not heldout & set(got), "a held-out pair appears in train"
    counts = np.array([got.count(pair) for pair in seen])
    assert chisquare(counts, p * len(got)).pvalue > 1e-4
    # marginals within 4-sigma binomial bounds
    n = len(got)
    for k, name in enumerate(SHAPES):
        q = sum(pi for (s, _), pi in zip(seen, p) if s == name)
        assert abs(b.meta["train_counts"]["shape"][name] - n * q) <= 4 * np.sqrt(n * q * (1 - q)) + 1
    # the heldout split holds only held-out pairs, the test split only seen ones, labels = shape_color
    for split, allowed in (("heldout", heldout), ("test", set(seen))):
        ds = b.splits["heldout"] if split == "heldout" else b.test
        names = {b.classnames[y] for y in ds.labels.tolist()}
        assert names <= {f"{c} {s}" for s, c in allowed}
    assert load_dataset(cfg(heldout_pairs=4, eval_split="heldout")).test.captions == b.splits["heldout"].captions


def test_explicit_heldout_list_and_bad_values():
    b = load_dataset(cfg(heldout_pairs=[["triangle", "red"]], n_train=500))
    assert "a red triangle" not in " ".join(c.replace("small ", "").replace("large ", "") for c in b.train.captions)
    assert all(re.search(r"(small|large) red triangle", c) for c in b.splits["heldout"].captions)
    with pytest.raises(UserError, match="heldout_pairs"):
        load_dataset(cfg(heldout_pairs=[["triangle", "mauve"]]))
    with pytest.raises(UserError, match="data.label"):
        load_dataset(cfg(label="texture"))
    with pytest.raises(UserError, match="every colour of a shape"):
        load_dataset(cfg(heldout_pairs=[["star", c] for c in COLORS]))


def test_captions_and_labels_agree_with_attributes():
    b = load_dataset(cfg(n_train=300, label="position"))
    a = b.meta["attributes"]["train"]
    for i in range(0, 300, 37):
        size, color, shape = ["small", "large"][a["size"][i]], COLORS[a["color"][i]], SHAPES[a["shape"][i]]
        pos = b.classnames[b.train.labels[i]]
        assert b.train.captions[i].startswith(f"a {size} {color} {shape} ") and b.train.captions[i].endswith(pos)
    assert load_dataset(cfg(n_train=300, label="color")).classnames == COLORS


def test_render_area_and_colour():
    """A circle of radius r covers ~pi r^2 pixels; a square of half-side 0.8 r covers (1.6 r)^2."""
    n, size, r = 2, 64, 12.5  # square side 1.6 r = 20 px: on the sub-pixel grid
    bg, rgb = np.zeros((n, 3), np.float32), np.tile(np.float32([200, 100, 50]), (n, 1))
    img = render(np.array([0, 1]), rgb, np.full(n, r), np.full(n, 32.0), np.full(n, 32.0), size,
                 ["circle", "square"], bg, aa=4)
    coverage = img[:, 0].astype(np.float64).sum(axis=(1, 2)) / 200
    assert coverage[0] == pytest.approx(np.pi * r * r, rel=0.02)
    assert coverage[1] == pytest.approx((1.6 * r) ** 2, rel=0.02)
    assert img[0, :, 32, 32].tolist() == [200, 100, 50] and img[0, :, 0, 0].tolist() == [0, 0, 0]
