"""Kill a training run after its first checkpoint, resume it, and check the
step count continues instead of restarting."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import torch

from conftest import TINY, run_cli

MAX_STEPS = 24


def _args(run_dir, *extra):
    return ["train", "trainer=smoke", *TINY, f"trainer.max_steps={MAX_STEPS}", "trainer.max_epochs=100",
            "trainer.checkpoint_every_n_steps=4", "trainer.log_every_n_steps=1", "eval.baselines=[]",
            f"hydra.run.dir={run_dir}", *extra]


def _step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def test_kill_then_resume_continues_the_step_count(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "ssl_zoo.cli", *_args(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists(), "no checkpoint was written before the deadline"
    killed_at = _step(last)
    assert 0 < killed_at < MAX_STEPS, killed_at

    resumed = run_cli(*_args(tmp_path, "trainer.resume=true"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _step(last) == MAX_STEPS
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "metrics.csv")) if r.get("train/loss")]
    # rows of the killed run are kept, and the resumed run starts at the checkpoint, not at 0
    assert steps[0] == 0 and steps[-1] == MAX_STEPS - 1
    restarts = [b for a, b in zip(steps, steps[1:]) if b < a]
    assert all(b >= killed_at for b in restarts), steps
    assert len(set(steps)) == MAX_STEPS


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    proc = run_cli(*_args(tmp_path, "trainer.resume=true"))
    assert proc.returncode == 2
    assert "no checkpoint" in proc.stderr.strip().splitlines()[-1]
