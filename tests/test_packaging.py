"""The built wheel carries the config tree, and a wheel install resolves it;
an example plugin installed with pip trains through `ssl-zoo train method=barlow`."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, TINY, run_cli


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO))
    (whl,) = out.glob("ssl_zoo-*.whl")
    return whl


def test_wheel_carries_the_config_tree_and_entry_points(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for cfg in ("train.yaml", "eval.yaml", "method/simclr.yaml", "backbone/vit_tiny.yaml", "data/digits.yaml",
                "trainer/smoke.yaml", "eval/default.yaml", "model/checkpoint.yaml"):
        assert f"ssl_zoo/conf/{cfg}" in names, cfg
    eps = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(eps).decode()
    assert "[ssl_zoo.objectives]" in text and "simclr = ssl_zoo.objectives.simclr:SimCLR" in text
    assert "ssl-zoo = ssl_zoo.cli:main" in text


def test_a_wheel_install_composes_its_config(wheel, tmp_path):
    target = tmp_path / "site"
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    code = ("import ssl_zoo, ssl_zoo.conf; from ssl_zoo.config import validate_overrides;"
            "validate_overrides('train', ['method=simclr', 'trainer=smoke']);"
            "print(ssl_zoo.__file__); print(list(ssl_zoo.conf.__path__)[0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(target)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    module_file, conf_dir = proc.stdout.split()
    assert module_file.startswith(str(target)) and conf_dir.startswith(str(target))


def test_example_plugin_installed_with_pip_trains(tmp_path):
    target = tmp_path / "plugin_site"
    _pip("install", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO / "examples" / "ssl_zoo_barlow"))
    assert list(target.glob("ssl_zoo_barlow-*.dist-info/entry_points.txt"))
    env = {"PYTHONPATH": str(target)}
    listing = run_cli("list", "objectives", env=env)
    assert listing.returncode == 0, listing.stderr
    line = next(ln for ln in listing.stdout.splitlines() if ln.strip().startswith("barlow"))
    assert "ssl-zoo-barlow" in line and "method/barlow.yaml" in line

    run_dir = tmp_path / "run"
    proc = run_cli("train", "method=barlow", "trainer=smoke", *TINY, "eval.baselines=[]",
                   f"hydra.run.dir={run_dir}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (run_dir / "results.jsonl").read_text().splitlines()
    assert rows and all('"objective": "barlow"' in r for r in rows)
    # without the plugin on the path, the method is unknown (nothing leaked into ssl_zoo itself)
    assert "barlow" not in run_cli("list", "objectives").stdout
