"""The evaluation protocols, by name. Each is ``fn(ctx, cfg) -> list[Result]``
where ``cfg`` is its section of the ``eval`` config (e.g. ``eval.knn``).
Defaults are documented in docs/protocols.md."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ssl_zoo.eval.context import EvalContext, Result
from ssl_zoo.eval.few_shot import few_shot
from ssl_zoo.eval.knn import knn_predict_scores
from ssl_zoo.eval.linear import linear_probe
from ssl_zoo.eval.metrics import classification_metrics
from ssl_zoo.eval.retrieval import retrieval
from ssl_zoo.eval.zero_shot import zero_shot

__all__ = ["EvalContext", "Result", "PROTOCOLS"]


def knn(ctx: EvalContext, cfg: Mapping[str, Any]) -> list[Result]:
    out = []
    kind = str(cfg.get("feature", "backbone"))
    train, test = ctx.features("train", kind), ctx.features("test", kind)
    T = float(cfg.get("temperature", 0.07))
    for k in cfg.get("k", [20, 200]):
        scores = knn_predict_scores(train.x, train.y, test.x, ctx.num_classes, int(k), T)
        for metric, value in classification_metrics(scores, test.y, ctx.num_classes).items():
            out.append(Result("knn", metric, value, {"k": int(k), "T": T}, extra={"feature_kind": kind}))
    return out


PROTOCOLS: dict[str, Callable[[EvalContext, Mapping[str, Any]], list[Result]]] = {
    "knn": knn,
    "linear_probe": linear_probe,
    "few_shot": few_shot,
    "zero_shot": zero_shot,
    "retrieval": retrieval,
}
