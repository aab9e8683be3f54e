"""`ssl-zoo concepts`: counting class names in captions (known counts), the fit
against independent formulas, and the command end to end."""
import csv
import io
import json
import tarfile

import numpy as np
import pytest
from conftest import run_cli

from ssl_zoo.errors import UserError
from ssl_zoo.study.concepts import count_concepts, fit, read_captions

CAPTIONS = [
    "A cat on a mat",                   # cat
    "two cats and a dog",               # cat, dog
    "concatenate the catalog",          # nothing: cat only inside other words
    "boxes of berries",                 # box (plural -es), berry (plural -ies)
    "a red fox near the box",           # box, fox
    "hot dog stand",                    # dog; "hot dog" needs both words: also hot dog
    "a dog that is hot",                # dog, hot dog (all words occur, any order)
    "DOGS! Dogma is not a dog-thing.",  # dog (DOGS, dog-thing); "dogma" does not count
    "leaves on a tree",                 # leaf (plural -ves)
    "Ankle boots and a sneaker",        # ankle boot, sneaker
]
CLASSES = ["cat", "dog", "box", "berry", "fox", "hot dog", "leaf", "ankle boot", "sneaker", "bird"]
EXPECTED = {"cat": 2, "dog": 4, "box": 2, "berry": 1, "fox": 1, "hot dog": 2, "leaf": 1, "ankle boot": 1,
            "sneaker": 1, "bird": 0}


def test_counts_word_boundaries_plurals_and_multi_word_names():
    assert count_concepts(CAPTIONS, {c: [c] for c in CLASSES}) == EXPECTED


def test_aliases_count_a_caption_once():
    got = count_concepts(["a kitty and a cat", "a kitten"], {"cat": ["cat", "kitty", "kitten"]})
    assert got == {"cat": 2}


def test_every_corpus_format_gives_the_same_counts(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(CAPTIONS) + "\n\n")
    for name, delim in (("c.csv", ","), ("c.tsv", "\t")):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(["url", "text"])
            w.writerows([[f"http://x/{i}.jpg", c] for i, c in enumerate(CAPTIONS)])
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:  # webdataset: key.jpg + key.txt per sample
        for i, c in enumerate(CAPTIONS):
            for suffix, data in ((".jpg", b"\xff\xd8not-an-image"), (".txt", c.encode())):
                info = tarfile.TarInfo(f"{i:06d}{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    for name in ("c.txt", "c.csv", "c.tsv", "shard-000.tar"):
        caps = list(read_captions(tmp_path / name, column="text"))
        assert caps == CAPTIONS, name
    with pytest.raises(UserError, match="no column 'caption'"):
        list(read_captions(tmp_path / "c.csv"))


def test_fit_matches_independent_formulas():
    rng = np.random.default_rng(1)
    counts = np.array([3, 10, 40, 100, 300, 1000, 5000, 20000])
    acc = np.clip(0.1 * np.log10(counts) + rng.normal(0, 0.05, len(counts)), 0, 1)
    f = fit(counts, acc, n_boot=500, seed=0)
    x = np.log10(counts)
    slope, intercept = np.polyfit(x, acc, 1)
    resid = acc - (slope * x + intercept)
    r2 = 1 - resid @ resid / ((acc - acc.mean()) @ (acc - acc.mean()))
    se = np.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
    t975_df6 = 2.446911851144969  # Student t quantile, 6 degrees of freedom
    rank = lambda v: np.argsort(np.argsort(v)).astype(float)  # no ties here
    rho = np.corrcoef(rank(x), rank(acc))[0, 1]
    assert f["slope"] == pytest.approx(slope) and f["r2"] == pytest.approx(r2)
    assert f["slope_ci95"] == pytest.approx([slope - t975_df6 * se, slope + t975_df6 * se])
    assert f["spearman_rho"] == pytest.approx(rho)
    lo, hi = f["spearman_ci95"]
    assert -1 <= lo <= hi <= 1 and lo < 1.0
    assert fit(counts, acc, n_boot=500, seed=0)["spearman_ci95"] == f["spearman_ci95"]  # seeded
    with_zero = fit(np.r_[0, counts], np.r_[0.5, acc], n_boot=10)
    assert with_zero["n"] == len(counts) and with_zero["n_zero_count"] == 1


def _results(path, per_class):
    row = {"objective": "open_clip:tiny/random", "eval_data": "toy", "protocol": "zero_shot", "metric": "top1",
           "value": 0.5, "per_class": per_class, "params": {}}
    other = {**row, "metric": "top5", "per_class": None}
    path.write_text(json.dumps(row) + "\n" + json.dumps(other) + "\n")


def test_concepts_command_end_to_end(tmp_path):
    acc = {"cat": 0.6, "dog": 0.9, "box": 0.5, "fox": 0.3, "hot dog": 0.7, "bird": 0.1}
    _results(tmp_path / "results.jsonl", acc)
    (tmp_path / "captions.txt").write_text("\n".join(CAPTIONS))
    proc = run_cli("concepts", "--results", str(tmp_path / "results.jsonl"), "--corpus", str(tmp_path / "captions.txt"),
                   "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "concepts.json").read_text())
    per = {p["class"]: (p["count"], p["accuracy"]) for p in report["groups"][0]["per_class"]}
    assert per == {c: (EXPECTED[c], acc[c]) for c in acc}
    f = report["groups"][0]["fit"]
    assert f["n"] == 5 and f["n_zero_count"] == 1  # bird: count 0, left out of the log fit
    assert (tmp_path / "out" / "concepts.png").stat().st_size > 1000
    assert "Spearman rho" in proc.stdout

    (tmp_path / "counts.json").write_text(json.dumps({c: EXPECTED[c] for c in acc}))
    again = run_cli("concepts", "--results", str(tmp_path / "results.jsonl"), "--counts", str(tmp_path / "counts.json"),
                    "--out", str(tmp_path / "out2"), timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "out2" / "concepts.json").read_text())["groups"][0]["fit"] == f


def test_concepts_user_errors_are_one_line_exit_2(tmp_path):
    _results(tmp_path / "r.jsonl", {"cat": 1.0})
    for args, message in ((["--results", str(tmp_path / "r.jsonl")], "one of the arguments --corpus --counts"),
                          (["--results", str(tmp_path / "nope.jsonl"), "--counts", "x.json"], "no such file"),
                          (["--results", str(tmp_path / "r.jsonl"), "--counts", str(tmp_path / "r.jsonl")],
                           "not a readable JSON")):
        proc = run_cli("concepts", *args, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
