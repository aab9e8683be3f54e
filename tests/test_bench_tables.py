"""Tables, suites and concurrent appends: fast, no training."""
from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from omegaconf import OmegaConf

from ssl_zoo.bench.suite import expand
from ssl_zoo.bench.tables import build_table, column_specs, to_csv, to_markdown
from ssl_zoo.errors import UserError
from ssl_zoo.results import append_rows, make_row, read_rows

CONF = Path(__file__).resolve().parents[1] / "conf"


def row(objective, value, *, eval_data="digits", protocol="knn", shots=None, params=None, cfg="h0",
        backbone="vit", pretrain="digits", ci95=None, seeds=1, metric="top1"):
    return make_row(objective=objective, backbone=backbone, pretrain_data=pretrain, eval_data=eval_data,
                    protocol=protocol, shots=shots, params=params if params is not None else {"k": 20, "T": 0.07},
                    metric=metric, value=value, ci95=ci95, seeds=seeds, config_hash=cfg, versions={"torch": "x"})


def test_mean_and_ci_over_seeds_match_scipy_t_interval():
    vals = [0.81, 0.84, 0.79]
    rows = [row("simclr", v, cfg=f"s{i}") for i, v in enumerate(vals)]
    table = build_table(rows)
    v = table.rows[0].values["digits kNN"]
    lo, hi = scipy.stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=scipy.stats.sem(vals))
    assert v.mean == pytest.approx(np.mean(vals))
    assert v.ci95 == pytest.approx((hi - lo) / 2)
    assert v.runs == 3
    assert v.text() == f"{100 * np.mean(vals):.1f} ± {100 * (hi - lo) / 2:.1f}"


def test_single_run_keeps_its_own_ci_and_duplicates_count_once():
    few = dict(protocol="few_shot", shots=4, params={"classifier": "ncm"}, seeds=5)
    rows = [row("byol", 0.5, ci95=0.02, **few), row("byol", 0.5, ci95=0.02, **few)]  # same run read twice
    v = build_table(rows).rows[0].values["digits 4-shot"]
    assert (v.mean, v.ci95, v.runs, v.seeds) == (0.5, 0.02, 1, 5)


def test_best_is_bold_with_ties_and_baselines_come_last():
    rows = [row("pixels", 0.9004, backbone="pixels", pretrain=None), row("simclr", 0.9001),
            row("byol", 0.70), row("random_init", 0.3, pretrain=None)]
    table = build_table(rows)
    assert [r.objective for r in table.rows] == ["byol", "simclr", "pixels", "random_init"]
    md = to_markdown(table)
    assert "| simclr | vit | **90.0** |" in md and "| pixels (baseline) | pixels | **90.0** |" in md
    assert "| byol | vit | 70.0 |" in md
    lines = to_csv(table).splitlines()
    assert lines[0].split(",")[-3:] == ["digits kNN", "digits kNN ci95", "digits kNN best"]
    assert [ln.split(",")[-1] for ln in lines[1:]] == ["0", "1", "1", "0"]


def test_columns_follow_params_shots_and_datasets():
    rows = [row("simclr", 0.6, params={"k": 200, "T": 0.1}), row("simclr", 0.7, params={"k": 20, "T": 0.1}),
            row("simclr", 0.4, eval_data="shapes", pretrain="shapes", protocol="few_shot", shots=1, params={"classifier": "ncm"}),
            row("simclr", 0.5, eval_data="shapes", pretrain="shapes", protocol="few_shot", shots=1, params={"classifier": "logreg"}),
            row("simclr", 0.9, eval_data="shapes", pretrain="shapes", protocol="few_shot", shots=2, params={"classifier": "ncm"})]
    table = build_table(rows, column_specs({"knn": {"k": 200}}))
    assert [c.title for c in table.columns] == ["digits kNN", "shapes 1-shot"]
    assert table.rows[0].values["digits kNN"].mean == 0.6
    # two few-shot classifiers: one is shown (the first by name) and a note says so
    assert table.rows[0].values["shapes 1-shot"].mean == 0.5
    assert table.notes == ["few-shot columns show classifier=logreg; also in results.jsonl: classifier=ncm"]


def test_cross_domain_pretraining_gets_its_own_row():
    rows = [row("simclr", 0.8), row("simclr", 0.6, pretrain="shapes")]
    models = [r.model for r in build_table(rows).rows]
    assert models == ["simclr", "simclr [pretrained on shapes]"]


def _cfg(name):
    return OmegaConf.to_container(OmegaConf.load(CONF / "suite" / f"{name}.yaml"))


def test_quick_suite_grid():
    cells = expand(_cfg("quick"))
    train = [c for c in cells if c.command == "train"]
    combos = {(c.label["objective"], c.label["backbone"]) for c in train}
    assert {m for m, _ in combos} == {"simclr", "byol", "dino", "mae", "clip"}
    assert {m for m, b in combos if b == "resnet18"} == {"simclr", "byol", "dino", "clip"}
    assert len(train) == 9 * 2
    base = [c.label["objective"] for c in cells if c.command == "eval"]
    assert base.count("random_init") == 2 * 2 and base.count("pixels") == 2
    assert all("zero_shot" in [o for o in c.overrides if o.startswith("eval.protocols")][-1] for c in cells)
    assert "eval.baselines=[]" in train[0].overrides  # baselines are their own cells


@pytest.mark.parametrize("name", ["fashion", "cifar10", "clip_zeroshot", "tiny"])
def test_every_suite_expands(name):
    cells = expand(_cfg(name))
    assert cells and all(c.command in ("train", "eval") for c in cells)


def test_bad_suite_is_a_user_error():
    with pytest.raises(UserError, match="needs datasets"):
        expand({"name": "x", "methods": ["simclr"], "backbones": [], "datasets": ["digits"]})
    with pytest.raises(UserError, match="unknown"):
        expand({"name": "x", "methods": ["simclr"], "backbones": ["vit_tiny"], "datasets": ["digits"],
                "baselines": ["imagenet"]})


def _writer(path: str, worker: int, batches: int) -> None:
    for b in range(batches):
        # big rows (~70 kB per batch): more than a pipe buffer or a page, so a torn write would show
        rows = [{"worker": worker, "batch": b, "i": i, "pad": "x" * 7000, "sum": worker * 1000 + b * 10 + i}
                for i in range(10)]
        append_rows(path, rows)


def test_concurrent_appends_lose_and_tear_no_rows(tmp_path):
    path = str(tmp_path / "results.jsonl")
    workers, batches = 6, 15
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, batches)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = Path(path).read_text().splitlines()
    assert len(lines) == workers * batches * 10
    rows = [json.loads(ln) for ln in lines]  # every line parses: nothing torn
    assert {(r["worker"], r["batch"], r["i"]) for r in rows} == {
        (w, b, i) for w in range(workers) for b in range(batches) for i in range(10)}
    assert all(r["sum"] == r["worker"] * 1000 + r["batch"] * 10 + r["i"] and len(r["pad"]) == 7000 for r in rows)
    # each batch is contiguous: one write per batch
    for k in range(0, len(rows), 10):
        assert len({(r["worker"], r["batch"]) for r in rows[k:k + 10]}) == 1
    assert len(read_rows(path)) == len(rows)
