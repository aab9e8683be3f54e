"""What a protocol sees (EvalContext) and what it returns (Result).

Features are fetched lazily per (split, kind) so a protocol that needs the
projected CLIP embedding, or only the test split, costs no extra extraction;
each (split, kind) is extracted at most once per evaluation (and cached on disk).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ssl_zoo.eval.features import Features, FeatureSource

# Feature kinds: "backbone" = FeatureSource.encode (pre-projection);
# "projected" = FeatureSource.encode_zero_shot_image (the image-text space).
FEATURE_KINDS = ("backbone", "projected")


@dataclass
class EvalContext:
    source: FeatureSource
    classnames: list[str]
    dataset: str
    get_features: Callable[[str, str], Features]  # (split, kind) -> Features
    device: str = "cpu"
    seed: int = 0

    @classmethod
    def from_features(cls, train: Features, test: Features, classnames: list[str], source: FeatureSource,
                      dataset: str, **kw: Any) -> "EvalContext":
        """A context over features already in memory (one kind only)."""
        splits = {"train": train, "test": test}
        return cls(source, classnames, dataset, lambda split, kind: splits[split], **kw)

    def features(self, split: str, kind: str = "backbone") -> Features:
        return self.get_features(split, kind)

    @property
    def train(self) -> Features:
        return self.features("train")

    @property
    def test(self) -> Features:
        return self.features("test")

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


@dataclass
class Result:
    protocol: str
    metric: str
    value: float
    params: dict[str, Any] = field(default_factory=dict)
    shots: int | None = None
    ci95: float | None = None
    seeds: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # extra row fields; may override n_train / n_test
