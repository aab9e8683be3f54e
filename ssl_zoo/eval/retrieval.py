"""Retrieval: test images query the train set by cosine similarity;
precision@1 and mean average precision at R from pytorch-metric-learning's
AccuracyCalculator (R = the number of train images of the query's class)."""
from __future__ import annotations

from typing import Any, Mapping

from ssl_zoo.eval.context import EvalContext, Result

METRICS = ("precision_at_1", "mean_average_precision_at_r")


def retrieval(ctx: EvalContext, cfg: Mapping[str, Any]) -> list[Result]:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    kind = str(cfg.get("feature", "backbone"))
    train, test = ctx.features("train", kind), ctx.features("test", kind)
    calc = AccuracyCalculator(include=METRICS, k="max_bin_count", device=None,
                              knn_func=CustomKNN(CosineSimilarity(), batch_size=int(cfg.get("batch_size", 512))))
    acc = calc.get_accuracy(test.x, test.y, train.x, train.y, ref_includes_query=False)
    return [Result("retrieval", m, float(acc[m]), {"feature": kind}, extra={"feature_kind": kind}) for m in METRICS]
