"""The concept-frequency experiment's machinery at smoke scale: the real
`ssl-zoo bench suite=concept_frequency` (CLIP trained for 2 steps, in-process
cells) must produce per-seed fits, compositional and seen/unseen rows. This
checks the plumbing, not the science (docs/zero_shot_study.md has the real run)."""
import json

import pytest
from conftest import run_cli

SEEN = ["T-shirt/top", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Bag"]


def _list(items):
    return "[" + ",".join(json.dumps(i) for i in items) + "]"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("cf")
    shapes = ["data.image_size=16", "data.n_train=256", "data.n_test=160", "data.n_heldout=64",
              "data.frequency=zipf", "data.zipf_alpha=1.0", "data.heldout_pairs=8"]
    fashion = ["data.image_size=16", "data.train_subset=140", "data.test_subset=100", "method.text.kind=minilm",
               "data.train_classes=" + _list(SEEN).replace('"', "'")]
    proc = run_cli("bench", "suite=concept_frequency", "isolate=false", "stream_cell_output=false", "suite.seeds=[0]",
                   "suite.train=" + _list(["trainer=smoke", "trainer.max_steps=2", "trainer.batch_size=16"]),
                   "suite.per_data.shapes=" + _list(shapes), "suite.per_data.fashion_mnist=" + _list(fashion),
                   "suite.overrides=" + _list(["eval.protocols=[zero_shot]", "backbone.kwargs.depth=1",
                                                "eval.cache_dir=null"]),
                   f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "concept_frequency.json").read_text())


def test_per_seed_fit_for_every_attribute(study):
    out, s = study
    got = {(r["attribute"], r["seed"]) for r in s["per_seed"]}
    assert got == {(a, seed) for a in ("shape", "color") for seed in (0,)}
    for r in s["per_seed"]:
        assert len(r["points"]) == 8  # every concept of the 8-way task has a count and an accuracy
        f = r["fit"]
        assert f["n"] == 8 and f["slope_ci95"][0] <= f["slope"] <= f["slope_ci95"][1]
    # Zipf(1) counts: the first-listed concept is the most frequent in training
    counts = {n: c for n, c, _ in s["pooled"]["shape"]["points"]}
    assert counts["circle"] == max(counts.values()) and counts["circle"] > 3 * min(counts.values())
    assert (out / "concept_frequency.png").stat().st_size > 1000
    assert "Spearman rho" in (out / "concept_frequency.md").read_text()


def test_compositional_and_unseen_classes_are_reported(study):
    out, s = study
    assert [c["seed"] for c in s["compositional"]] == [0]
    assert all(0 <= c["heldout"] <= 1 and 0 <= c["test"] <= 1 for c in s["compositional"])
    su = [r for r in s["seen_unseen"] if r["data"] == "fashion_mnist"]
    assert len(su) == 1 and sorted(su[0]["unseen_classes"]) == ["Ankle boot", "Sneaker", "Trouser"]
    assert len(su[0]["per_class"]) == 10  # zero-shot over all 10 classes, though 7 were trained on
    rows = [json.loads(line) for line in (out / "study.jsonl").read_text().splitlines()]
    heldout = [r for r in rows if r["metric"] == "top1" and len(r.get("per_class", {})) == 8 and r["n_test"] == 64]
    assert heldout, "held-out pair rows are in study.jsonl"


def test_train_classes_restricts_only_the_training_split():
    from ssl_zoo.data.datasets import load_dataset
    from ssl_zoo.errors import UserError

    cfg = {"name": "digits", "image_size": 8, "split_seed": 0}
    full = load_dataset(cfg)
    part = load_dataset({**cfg, "train_classes": ["1", "7"]})
    assert sorted(set(part.train.labels.tolist())) == [1, 7]
    assert len(part.train) == int(((full.train.labels == 1) | (full.train.labels == 7)).sum())
    assert len(part.test) == len(full.test) and part.classnames == full.classnames
    with pytest.raises(UserError, match="unknown class"):
        load_dataset({**cfg, "train_classes": ["eleven"]})
