"""Captioned shapes: synthetic, deterministic from ``data.seed``.

Each image is one shape of one colour, size and position on a plain canvas,
with a caption made from its attributes ("a small red triangle at the top
left"). The frequency of shapes and colours in the training split is
controlled (uniform, or Zipf with exponent alpha by list order), and chosen
(shape, colour) pairs can be held out of train entirely: they appear only in
the ``heldout`` split, for compositional zero-shot tests. ``test`` is uniform
over the pairs seen in train, so per-concept accuracy is not confounded by
test frequency. Drawing is vectorised numpy (implicit shape equations on a
pixel grid, 2x supersampled): ~10k 32 px images take about a second.
"""
from __future__ import annotations

import itertools
from typing import Any, Mapping

import numpy as np
import torch

from ssl_zoo.data.datasets import DatasetBundle, ImageDataset, dataset_spec
from ssl_zoo.errors import UserError

PALETTE = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 220, 40),
    "purple": (150, 60, 200), "orange": (245, 140, 20), "cyan": (40, 210, 220), "white": (240, 240, 240),
    "pink": (245, 120, 180), "brown": (140, 90, 40), "gray": (140, 140, 140),
}
# Centre of each position, as a fraction of the canvas (x, y from the top left).
POSITIONS = {
    "top left": (0.3, 0.3), "top": (0.5, 0.3), "top right": (0.7, 0.3),
    "left": (0.3, 0.5), "center": (0.5, 0.5), "right": (0.7, 0.5),
    "bottom left": (0.3, 0.7), "bottom": (0.5, 0.7), "bottom right": (0.7, 0.7),
}
ATTRIBUTES = ("shape", "color", "size", "position")
LABELS = (*ATTRIBUTES, "shape_color")
SPLIT_IDS = {"train": 0, "test": 1, "heldout": 2}


def _star(u, v):
    theta = (np.arctan2(v, u) - np.pi / 2) * 5 / (2 * np.pi)
    tri = 1 - np.abs((theta % 1.0) * 2 - 1)  # 1 at the five points, 0 between them
    return np.hypot(u, v) <= 0.45 + 0.55 * tri


def _heart(u, v):
    x, y = u * 1.15, v * 1.15 + 0.15
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


# Implicit masks in units of the shape radius; v points up.
SHAPES = {
    "circle": lambda u, v: u * u + v * v <= 1,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.8,
    "triangle": lambda u, v: (v >= -0.7) & (v <= 1 - 1.79 * np.abs(u)),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1,
    "cross": lambda u, v: ((np.abs(u) <= 0.33) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.33) & (np.abs(u) <= 1)),
    "star": _star,
    "heart": _heart,
    "ring": lambda u, v: (u * u + v * v <= 1) & (u * u + v * v >= 0.3),
}


def position_phrase(position: str) -> str:
    if position == "center":
        return "in the center"
    if position in ("left", "right"):
        return f"on the {position}"
    return f"at the {position}"


def caption(shape: str, color: str, size: str, position: str) -> str:
    return f"a {size} {color} {shape} {position_phrase(position)}"


def concept_probabilities(n: int, frequency: str, alpha: float) -> np.ndarray:
    """Uniform, or Zipf: p(rank r) proportional to (r + 1) ** -alpha, in list order."""
    if frequency == "uniform":
        return np.full(n, 1.0 / n)
    if frequency == "zipf":
        p = (np.arange(n) + 1.0) ** -float(alpha)
        return p / p.sum()
    raise UserError(f"data.frequency={frequency}: accepted values are uniform, zipf")


def choose_heldout(shapes: list[str], colors: list[str], spec: Any, seed: int) -> list[tuple[int, int]]:
    """(shape, colour) index pairs never drawn in train: an explicit list of
    [shape, colour] names, or a count picked at random (seeded) so that every
    shape and every colour still occurs in train."""
    if not spec:
        return []
    if not isinstance(spec, int) or isinstance(spec, bool):
        pairs = []
        for item in spec:
            s, c = (list(item) + [None, None])[:2]
            if s not in shapes or c not in colors:
                raise UserError(f"data.heldout_pairs: {list(item)} is not a [shape, colour] of "
                                f"shapes {shapes} and colours {colors}")
            pairs.append((shapes.index(s), colors.index(c)))
        pairs = sorted(set(pairs))
    else:
        rng = np.random.default_rng([seed, 99])
        all_pairs = list(itertools.product(range(len(shapes)), range(len(colors))))
        seen_s, seen_c = np.full(len(shapes), len(colors)), np.full(len(colors), len(shapes))
        pairs = []
        for k in rng.permutation(len(all_pairs)):
            s, c = all_pairs[k]
            if len(pairs) < spec and seen_s[s] > 1 and seen_c[c] > 1:
                pairs.append((s, c))
                seen_s[s] -= 1
                seen_c[c] -= 1
        if len(pairs) < spec:
            raise UserError(f"data.heldout_pairs={spec}: at most {len(pairs)} pairs can be held out "
                            f"while every shape and colour stays in train")
        pairs.sort()
    per_shape = {s for s, _ in pairs}
    if any(sum(1 for p in pairs if p[0] == s) == len(colors) for s in per_shape):
        raise UserError("data.heldout_pairs holds out every colour of a shape: it would never be seen in train")
    return pairs


def render(shape: np.ndarray, rgb: np.ndarray, radius: np.ndarray, cx: np.ndarray, cy: np.ndarray,
           size: int, names: list[str], background: np.ndarray, aa: int = 2,
           noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 (N, 3, size, size). Coordinates in pixels; ``shape`` indexes ``names``;
    ``noise`` is the std of added Gaussian pixel noise, as a fraction of 255."""
    n, s = len(shape), size * aa
    grid = (np.arange(s, dtype=np.float32) + 0.5) / aa
    mask = np.zeros((n, s, s), dtype=bool)
    for k, name in enumerate(names):
        idx = np.flatnonzero(shape == k)
        if len(idx) == 0:
            continue
        r = radius[idx, None, None].astype(np.float32)
        u = (grid[None, None, :] - cx[idx, None, None].astype(np.float32)) / r
        v = (cy[idx, None, None].astype(np.float32) - grid[None, :, None]) / r
        mask[idx] = SHAPES[name](u, v)
    # box-filter the supersampled mask: anti-aliased edges
    sub = mask.view(np.uint8).reshape(n, size, aa, size, aa)
    count = sum(sub[:, :, i, :, j] for i in range(aa) for j in range(aa))  # uint8 adds: much faster than .sum
    a = count[:, None].astype(np.float32) / (aa * aa)
    img = background[:, :, None, None] + a * (rgb - background)[:, :, None, None]
    if noise > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise * 255)
    return np.clip(img, 0, 255, out=img).round().astype(np.uint8)


class ShapesSpec:
    """The attribute vocabularies and sampling distributions of one config."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.shapes = [str(s) for s in cfg.get("shapes") or list(SHAPES)]
        self.colors = [str(c) for c in cfg.get("colors") or list(PALETTE)[:8]]
        sizes = cfg.get("sizes") or {"small": 0.14, "large": 0.24}
        self.sizes, self.radii = [str(k) for k in sizes], np.array([float(v) for v in sizes.values()])
        self.positions = [str(p).replace("_", " ") for p in cfg.get("positions") or list(POSITIONS)]
        for what, values, known in (("shapes", self.shapes, SHAPES), ("colors", self.colors, PALETTE),
                                    ("positions", self.positions, POSITIONS)):
            bad = [v for v in values if v not in known]
            if bad or len(set(values)) != len(values):
                raise UserError(f"data.{what}: {bad or 'duplicates'} not accepted; available: {', '.join(known)}")
        self.image_size = int(cfg.get("image_size", 32))
        self.seed = int(cfg.get("seed", 0))
        frequency, alpha = str(cfg.get("frequency", "uniform")), float(cfg.get("zipf_alpha", 1.0))
        self.p_shape = concept_probabilities(len(self.shapes), frequency, alpha)
        self.p_color = concept_probabilities(len(self.colors), frequency, alpha)
        self.heldout = choose_heldout(self.shapes, self.colors, cfg.get("heldout_pairs"), self.seed)
        self.seen = [p for p in itertools.product(range(len(self.shapes)), range(len(self.colors)))
                     if p not in set(self.heldout)]
        self.noise, self.jitter = float(cfg.get("noise", 0.02)), float(cfg.get("color_jitter", 0.06))

    def pair_probabilities(self, split: str) -> tuple[list[tuple[int, int]], np.ndarray]:
        """Train: p(shape) * p(colour), renormalised over the seen pairs; test:
        uniform over seen pairs; heldout: uniform over the held-out pairs."""
        if split == "heldout":
            return self.heldout, np.full(len(self.heldout), 1.0 / max(1, len(self.heldout)))
        if split == "test":
            return self.seen, np.full(len(self.seen), 1.0 / len(self.seen))
        p = np.array([self.p_shape[s] * self.p_color[c] for s, c in self.seen])
        return self.seen, p / p.sum()

    def sample(self, split: str, n: int) -> dict[str, np.ndarray]:
        """Attribute indices for ``n`` images, plus the drawn images (uint8)."""
        rng = np.random.default_rng([self.seed, SPLIT_IDS[split]])
        pairs, p = self.pair_probabilities(split)
        pick = rng.choice(len(pairs), size=n, p=p)
        pairs = np.asarray(pairs).reshape(-1, 2)
        a = {"shape": pairs[pick, 0], "color": pairs[pick, 1],
             "size": rng.integers(len(self.sizes), size=n), "position": rng.integers(len(self.positions), size=n)}
        px = self.image_size
        centres = np.array([POSITIONS[q] for q in self.positions])[a["position"]]
        cx, cy = ((centres + rng.uniform(-0.04, 0.04, size=(n, 2))) * px).T  # small jitter inside each position
        radius = self.radii[a["size"]] * px * rng.uniform(0.92, 1.08, size=n)
        base = np.array([PALETTE[c] for c in self.colors], dtype=np.float32)[a["color"]]
        rgb = (base * (1 + rng.uniform(-self.jitter, self.jitter, size=(n, 3)))).astype(np.float32)
        background = np.repeat(rng.uniform(20, 50, size=(n, 1)), 3, axis=1).astype(np.float32)
        chunks = []
        for lo in range(0, n, 2048):  # bounded memory
            sl = slice(lo, lo + 2048)
            chunks.append(render(a["shape"][sl], rgb[sl], radius[sl], cx[sl], cy[sl], px, self.shapes, background[sl],
                                 noise=self.noise, rng=rng))
        a["images"] = np.concatenate(chunks) if chunks else np.zeros((0, 3, px, px), np.uint8)
        return a

    def classnames(self, label: str) -> list[str]:
        if label == "shape_color":
            return [f"{c} {s}" for s in self.shapes for c in self.colors]
        return {"shape": self.shapes, "color": self.colors, "size": self.sizes, "position": self.positions}[label]

    def labels(self, a: Mapping[str, np.ndarray], label: str) -> np.ndarray:
        if label == "shape_color":
            return a["shape"] * len(self.colors) + a["color"]
        return a[label]

    def captions(self, a: Mapping[str, np.ndarray]) -> list[str]:
        return [caption(self.shapes[s], self.colors[c], self.sizes[z], self.positions[q])
                for s, c, z, q in zip(a["shape"], a["color"], a["size"], a["position"])]


@dataset_spec("captioned shapes (synthetic, seeded; held-out shape-colour pairs)", "configurable", "by data.label",
              lambda cfg: [])
def load_shapes(cfg: Mapping[str, Any]) -> DatasetBundle:
    spec = ShapesSpec(cfg)
    label = str(cfg.get("label", "shape"))
    if label not in LABELS:
        raise UserError(f"data.label={label}: accepted values are {', '.join(LABELS)}")
    sizes = {"train": int(cfg.get("n_train", 5000)), "test": int(cfg.get("n_test", 1000)),
             "heldout": int(cfg.get("n_heldout", 1000)) if spec.heldout else 0}
    sets, attrs = {}, {}
    for split, n in sizes.items():
        if split != "heldout" or n:
            a = spec.sample(split, n)
            sets[split] = ImageDataset(torch.from_numpy(a.pop("images")), torch.from_numpy(spec.labels(a, label)),
                                       spec.captions(a))
            attrs[split] = a
    counts = {k: dict(zip(spec.classnames(k), np.bincount(spec.labels(attrs["train"], k),
                                                          minlength=len(spec.classnames(k))).tolist()))
              for k in LABELS}
    meta = {"attributes": attrs, "train_counts": counts, "label": label,
            "heldout_pairs": [(spec.shapes[s], spec.colors[c]) for s, c in spec.heldout]}
    extra = {"heldout": sets["heldout"]} if "heldout" in sets else {}
    return DatasetBundle("shapes", sets["train"], sets["test"], spec.classnames(label), meta, extra)
