"""Zero-shot prompts: class names and templates per dataset.

These are *evaluation* prompts; the captions CLIP trains on
(ssl_zoo/data/captions.py) are a different list on purpose, so zero-shot is
not scored on the exact sentences seen in training.

Where the clip-benchmark package has the dataset, its JSON files are read
(e.g. ImageNet's 80 templates); digits, Fashion-MNIST and shapes use the lists
below. Users override both: ``eval.zero_shot.templates=FILE.json|[...]`` and
``data.classnames=FILE.json|[...]``.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ssl_zoo.errors import UserError

# ssl_zoo dataset name -> clip-benchmark's key in its JSON files
CLIP_BENCHMARK_NAMES = {
    "cifar10": "cifar10", "cifar100": "cifar100", "stl10": "stl10", "food101": "food101",
    "imagenet": "imagenet1k", "imagenet1k": "imagenet1k", "mnist": "mnist", "svhn": "svhn",
    "dtd": "dtd", "pets": "pets", "flowers": "flowers", "cars": "cars", "eurosat": "eurosat", "sun397": "sun397",
}

TEMPLATES = {
    "digits": ["a photo of the number {c}.", "a blurry image of the digit {c}.", "the numeral {c}.",
               "a low resolution picture of a {c}.", "a black and white image of the number {c}."],
    "fashion_mnist": ["a photo of a {c}.", "a grayscale photo of a {c}.", "a low resolution photo of the {c}.",
                      "a product photo of a {c}.", "a blurry photo of a {c}, a type of clothing."],
    "shapes": ["a {c}.", "a picture of a {c}.", "an image showing a {c}.", "a drawing of something {c}.",
               "a simple rendering of a {c}."],
}
DEFAULT_TEMPLATES = ["a photo of a {c}."]


@lru_cache(maxsize=1)
def _clip_benchmark_json() -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        from importlib.resources import files

        root = files("clip_benchmark") / "datasets"
        return (json.loads((root / "en_zeroshot_classification_templates.json").read_text()),
                json.loads((root / "en_classnames.json").read_text()))
    except (ModuleNotFoundError, FileNotFoundError):
        return {}, {}


def _read_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"{what}={value}: no such file (give a JSON file with a list of strings, or a list)")
        try:
            value = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{what}={value}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise UserError(f"{what}: expected a non-empty list of strings (or a JSON file holding one)")
    return list(value)


def templates_for(dataset: str, override: Any = None) -> list[str]:
    """Templates with a ``{c}`` placeholder: the override, else clip-benchmark's, else ssl_zoo's."""
    if override:
        templates = _read_list(override, "eval.zero_shot.templates")
    elif dataset in TEMPLATES:
        templates = TEMPLATES[dataset]
    else:
        templates = _clip_benchmark_json()[0].get(CLIP_BENCHMARK_NAMES.get(dataset, dataset)) or DEFAULT_TEMPLATES
    if not isinstance(templates, list):  # clip-benchmark's per-class dicts (CuPL) are not templates
        templates = DEFAULT_TEMPLATES
    bad = [t for t in templates if "{c}" not in t]
    if bad:
        raise UserError(f"eval.zero_shot.templates: {bad[0]!r} has no {{c}} placeholder for the class name")
    return templates


def classnames_for(dataset: str, dataset_names: list[str], user_given: bool) -> list[str]:
    """Class names for prompts: the user's (already applied to the dataset), else
    clip-benchmark's where it has the dataset with the same number of classes,
    else the dataset's own."""
    if not user_given:
        names = _clip_benchmark_json()[1].get(CLIP_BENCHMARK_NAMES.get(dataset, dataset))
        if names and len(names) == len(dataset_names):
            return list(names)
    return list(dataset_names)


def prompt_hash(classnames: list[str], templates: list[str]) -> str:
    return hashlib.sha256(json.dumps([classnames, templates]).encode()).hexdigest()[:16]
