"""The CLI contract: one clear line and exit code 2 for user errors; a real
train run writes checkpoints, metrics.csv and schema rows."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY, run_cli
from ssl_zoo.results import SCHEMA_FIELDS


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_unknown_method_names_available_objectives(tmp_path):
    line = _one_error_line(run_cli("train", "method=nope", f"hydra.run.dir={tmp_path}"))
    assert "nope" in line and "simclr" in line
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize("override,expected", [
    ("trainer.max_epochs=abc", "expected an integer"),
    ("trainer.progress_bar=maybe", "expected a boolean"),
    ("trainer.optim.lr=fast", "expected a number"),
    ("trainer.nosuchkey=1", "trainer.nosuchkey"),
    ("trainer.max_epochs=[1", "malformed override"),
])
def test_bad_override_is_one_line(override, expected):
    assert expected in _one_error_line(run_cli("train", override))


def test_bad_value_in_a_sweep_is_caught_before_any_run(tmp_path):
    line = _one_error_line(run_cli("train", "-m", "method=simclr,nope", f"hydra.sweep.dir={tmp_path}"))
    assert "nope" in line
    assert not any(tmp_path.iterdir())


def test_unknown_command_and_list_section():
    assert "train, eval" in _one_error_line(run_cli("frobnicate"))
    assert "objectives" in _one_error_line(run_cli("list", "nope"))


def test_list_shows_builtin_objectives_with_their_configs():
    proc = run_cli("list", "objectives", "datasets", "protocols")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("simclr"))
    assert "ssl-zoo" in line and "method/simclr.yaml" in line
    assert "digits" in proc.stdout and "knn" in proc.stdout


def test_train_writes_checkpoint_metrics_and_schema_rows(smoke_run):
    rows = [json.loads(line) for line in (smoke_run / "results.jsonl").read_text().splitlines()]
    assert {r["objective"] for r in rows} == {"simclr", "random_init", "pixels"}
    for r in rows:
        assert set(SCHEMA_FIELDS) <= set(r)
        assert 0.0 <= r["value"] <= 1.0 and r["eval_data"] == "digits" and r["protocol"] in {"knn"} | {r["protocol"]}
        assert r["n_train"] == 1437 and r["n_test"] == 360
    trained = [r for r in rows if r["objective"] == "simclr"]
    assert {r["pretrain_data"] for r in trained} == {"digits"}
    assert {(r["params"]["k"], r["metric"]) for r in trained if r["protocol"] == "knn"} >= {(20, "top1"), (200, "top1")}
    assert trained[0]["train_steps"] == 4
    ckpt = torch.load(smoke_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4 and ckpt["ssl_zoo"]["objective"] == "simclr"
    header = (smoke_run / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header


def test_eval_reloads_the_train_checkpoint(smoke_run, tmp_path):
    proc = run_cli("eval", "model=checkpoint", f"model.path={smoke_run / 'checkpoints' / 'last.ckpt'}",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {(r["params"]["k"], r["metric"]): r["value"] for r in map(json.loads, open(tmp_path / "results.jsonl"))
           if r["protocol"] == "knn"}
    want = {(r["params"]["k"], r["metric"]): r["value"] for r in map(json.loads, open(smoke_run / "results.jsonl"))
            if r["objective"] == "simclr" and r["protocol"] == "knn"}
    assert got == pytest.approx(want, abs=1e-6)


def test_eval_refuses_a_checkpoint_of_another_objective(smoke_run):
    line = _one_error_line(run_cli("eval", "model=checkpoint", "model.objective=byol",
                                   f"model.path={smoke_run / 'checkpoints' / 'last.ckpt'}"))
    assert "simclr" in line and "byol" in line


def test_eval_baselines_pixels_and_random(tmp_path):
    for model in ("pixels", "random"):
        proc = run_cli("eval", f"model={model}", *TINY[:1], f"hydra.run.dir={tmp_path / model}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = [json.loads(x) for x in open(tmp_path / model / "results.jsonl")]
        assert rows and rows[0]["objective"] == {"pixels": "pixels", "random": "random_init"}[model]
        if model == "pixels":
            assert rows[0]["feature_dim"] == 64  # 8x8 digits, one channel
