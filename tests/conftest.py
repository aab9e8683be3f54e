"""Shared test helpers: run the real `ssl-zoo` CLI in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, timeout: int = 300, cwd: str | os.PathLike | None = None):
    """``python -m ssl_zoo.cli ARGS`` -> CompletedProcess (text)."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ssl_zoo.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


# Small enough for CI: a 2-block ViT on 16 px digits.
TINY = ["backbone.kwargs.depth=2", "trainer.progress_bar=false"]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One real `ssl-zoo train trainer=smoke` run shared by several tests."""
    run_dir = tmp_path_factory.mktemp("smoke_train")
    proc = run_cli("train", "trainer=smoke", *TINY, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only spin-wait on a busy shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
