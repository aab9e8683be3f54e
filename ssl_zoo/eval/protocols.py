"""The evaluation protocols, by name. Each is ``fn(ctx, cfg) -> list[Result]``
where ``cfg`` is its section of the ``eval`` config (e.g. ``eval.knn``).
Defaults are documented in docs/protocols.md."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ssl_zoo.eval.features import Features, FeatureSource
from ssl_zoo.eval.knn import knn_predict_scores
from ssl_zoo.eval.metrics import classification_metrics


@dataclass
class EvalContext:
    train: Features
    test: Features
    classnames: list[str]
    source: FeatureSource
    dataset: str

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
    extra: dict[str, Any] = field(default_factory=dict)


def knn(ctx: EvalContext, cfg: Mapping[str, Any]) -> list[Result]:
    out = []
    T = float(cfg.get("temperature", 0.07))
    for k in cfg.get("k", [20, 200]):
        scores = knn_predict_scores(ctx.train.x, ctx.train.y, ctx.test.x, ctx.num_classes, int(k), T)
        for metric, value in classification_metrics(scores, ctx.test.y, ctx.num_classes).items():
            out.append(Result("knn", metric, value, {"k": int(k), "T": T}))
    return out


PROTOCOLS: dict[str, Callable[[EvalContext, Mapping[str, Any]], list[Result]]] = {"knn": knn}
