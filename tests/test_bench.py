"""``ssl-zoo bench`` end to end on the tiny suite (real subprocesses, real
training): kill and restart, tables against results.jsonl cell by cell,
``ssl-zoo report``, the HTML in headless Chromium, the joblib launcher."""
from __future__ import annotations

import csv
import html.parser
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from ssl_zoo.bench.report import report_command
from ssl_zoo.results import read_rows


def _cli(*args):
    return [sys.executable, "-m", "ssl_zoo.cli", *args]


ENV = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}


def make_imagefolder(root: Path) -> Path:
    """4 classes x 15 images of 8 px: a plain colour per class plus noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(15):
            img = np.clip(np.array(colour) + rng.normal(0, 40, (8, 8, 3)), 0, 255).astype("uint8")
            Image.fromarray(img).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Start the tiny suite on digits + an ImageFolder, SIGKILL it once the first
    cell's rows are in, restart it with the same arguments."""
    tmp = tmp_path_factory.mktemp("bench")
    folder = make_imagefolder(tmp / "folder")
    bench_dir = tmp / "bench"
    # random_init is left to the joblib test below: 4 cells here keep the test short
    args = _cli("bench", "suite=tiny", "suite.datasets=[digits,imagefolder]", "suite.baselines=[pixels]",
                f'+suite.per_data.imagefolder=["data.root={folder}","data.image_size=16"]',
                f"hydra.run.dir={bench_dir}", "stream_cell_output=false")
    first_log = open(tmp / "first.log", "w")  # a file, not a pipe: a full pipe would stall the bench
    first = subprocess.Popen(args, stdout=first_log, stderr=subprocess.STDOUT, env=ENV)
    results = bench_dir / "results.jsonl"
    deadline = time.time() + 240
    while not (results.is_file() and read_rows(results)):
        assert first.poll() is None, f"bench ended before the first cell finished: {(tmp / 'first.log').read_text()[-2000:]}"
        assert time.time() < deadline, "no cell finished in time"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first_log.close()
    before = read_rows(results)
    second = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"dir": bench_dir, "before": before, "after": read_rows(results), "log": second.stderr, "args": args}


def test_restart_skips_finished_cells_and_completes(killed_and_resumed):
    before, after = killed_and_resumed["before"], killed_and_resumed["after"]
    done_first = {r["config_hash"] for r in before}
    assert len(done_first) == 1  # killed right after the first cell
    assert "4 cells, 1 finished earlier, 3 to run" in killed_and_resumed["log"]
    # the finished cell was not run again: its rows are exactly the ones from before the kill
    assert [r for r in after if r["config_hash"] in done_first] == before
    cells = {r["bench_cell"] for r in after}
    assert len(cells) == 4 and len({r["config_hash"] for r in after}) == 4
    objectives = {(r["objective"], r["eval_data"]) for r in after}
    assert objectives == {(o, d) for o in ("simclr", "pixels") for d in ("digits", "imagefolder")}
    # a restarted bench with nothing to do runs nothing and rebuilds the same table
    table = (killed_and_resumed["dir"] / "table.md").read_text()
    again = subprocess.run(killed_and_resumed["args"], capture_output=True, text=True, env=ENV, timeout=200)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 finished earlier, 0 to run" in again.stderr
    assert (killed_and_resumed["dir"] / "table.md").read_text() == table


def expected_cells(rows):
    """Independently of ssl_zoo.bench.tables: model -> column -> 'xx.x'."""
    out = {}
    for r in rows:
        if r["protocol"] == "knn" and r["metric"] == "top1" and r["params"]["k"] == 20:
            model = r["objective"] + (" (baseline)" if r["objective"] in ("random_init", "pixels") else "")
            out.setdefault(model, {}).setdefault(f"{r['eval_data']} kNN", []).append(r["value"])
    return {m: {c: f"{100 * sum(v) / len(v):.1f}" for c, v in cols.items()} for m, cols in out.items()}


def parse_markdown(text):
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return {r[0]: dict(zip(head[2:], r[2:])) for r in rows}


class _Cells(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.in_table, self.cell = [], False, None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.in_table = True
        elif self.in_table and tag == "tr":
            self.rows.append([])
        elif self.in_table and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False
        elif tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def test_tables_agree_with_results_cell_by_cell(killed_and_resumed):
    d = killed_and_resumed["dir"]
    expected = expected_cells(read_rows(d / "results.jsonl"))
    assert set(expected) == {"simclr", "pixels (baseline)"}
    md = parse_markdown((d / "table.md").read_text())
    with open(d / "table.csv", newline="") as f:
        csv_rows = {r["model"]: r for r in csv.DictReader(f)}
    p = _Cells()
    p.feed((d / "report.html").read_text())
    head, *body = p.rows
    html_rows = {r[0]: dict(zip(head[2:], r[2:])) for r in body}
    for model, cols in expected.items():
        for col, value in cols.items():
            assert md[model][col].strip("*") == value, (model, col)
            assert csv_rows[model][col] == value, (model, col)
            assert html_rows[model][col] == value, (model, col)
    for table in (md, csv_rows, html_rows):
        assert set(table) == set(expected)
    # the best of each column is bold in markdown and flagged in the csv
    for col in ("digits kNN", "imagefolder kNN"):
        top = max(float(c[col]) for c in expected.values())
        for model, cols in expected.items():
            assert md[model][col].startswith("**") == (float(cols[col]) == top)
            assert csv_rows[model][f"{col} best"] == str(int(float(cols[col]) == top))
    # baselines last; footnotes name the protocol and the hardware
    text = (d / "table.md").read_text()
    assert list(md)[-1] == "pixels (baseline)"
    assert "kNN: T=0.07, k=20" in text and "hardware: " in text and "versions: " in text


def test_report_command_rebuilds_the_same_table(killed_and_resumed, tmp_path):
    d = killed_and_resumed["dir"]
    out = report_command([str(d), "--out", str(tmp_path / "rebuilt")])
    assert (out / "table.md").read_text() == (d / "table.md").read_text()
    assert (out / "table.csv").read_text() == (d / "table.csv").read_text()
    assert len(read_rows(out / "results.jsonl")) == len(read_rows(d / "results.jsonl"))
    bad = subprocess.run(_cli("report", str(tmp_path / "nothing")), capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "no results.jsonl" in bad.stderr


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _load_in_chromium(page: Path) -> tuple[str, list[str]]:
    proc = subprocess.run([_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--log-level=0", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return proc.stdout, console


@pytest.mark.skipif(_chromium() is None, reason="no headless browser: install Debian's `chromium` (apt-get install -y chromium)")
def test_report_html_loads_in_headless_chromium(killed_and_resumed, tmp_path):
    import base64
    import io
    import re

    # the check itself can fail: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    assert _load_in_chromium(bad)[1], "the console-error check saw nothing on a broken page"

    report = killed_and_resumed["dir"] / "report.html"
    assert not re.search(r'(src|href)="(https?:)?//', report.read_text()), "report must be offline"
    dom, console = _load_in_chromium(report)
    assert console == [], console
    assert 'id="results"' in dom
    images = re.findall(r'<figure id="plot-([a-z_]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', dom)
    assert {name for name, _ in images} == {"loss", "throughput"}  # tiny suite: kNN only, so no few-shot plot
    for _, data in images:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 50


def test_joblib_launcher_runs_cells_in_parallel(tmp_path):
    """Through Hydra's joblib launcher, cells run in-process in its workers (isolate=false)."""
    bench_dir = tmp_path / "bench"
    proc = subprocess.run(_cli("bench", "suite=tiny", "launcher=joblib", "jobs=2", "isolate=false",
                               f"hydra.run.dir={bench_dir}"), capture_output=True, text=True, env=ENV, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(bench_dir / "results.jsonl")
    assert {r["objective"] for r in rows} == {"simclr", "random_init", "pixels"}
    assert len({r["bench_cell"] for r in rows}) == 3
    assert "3/3 cells" in proc.stderr
    md = parse_markdown((bench_dir / "table.md").read_text())
    assert list(md) == ["simclr", "pixels (baseline)", "random_init (baseline)"]
    assert md == {m: {c: (f"**{v}**" if md[m][c].startswith("**") else v) for c, v in cols.items()}
                  for m, cols in expected_cells(rows).items()}
    # two cells ran at the same time (really parallel)
    spans = {(r["cell_started"], r["cell_started"] + r["cell_seconds"]) for r in rows}
    assert any(a0 < b1 and b0 < a1 for a0, a1 in spans for b0, b1 in spans if (a0, a1) != (b0, b1))


def test_a_failing_cell_is_recorded_not_fatal(tmp_path):
    """In-process (isolate=false) for speed: the cell's error becomes CellFailed
    with its first line, failures.jsonl records it, results.jsonl stays empty."""
    from omegaconf import OmegaConf

    from ssl_zoo.bench.runner import CellFailed, failed, run_cell
    from ssl_zoo.bench.suite import plan

    suite = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/suite/tiny.yaml"))
    suite.update(datasets=["imagefolder"], baselines=["pixels"],
                 per_data={"imagefolder": [f"data.root={tmp_path / 'missing'}"]})
    cells = plan(suite)
    pixels = cells[-1]
    assert pixels.label["objective"] == "pixels"
    with pytest.raises(CellFailed, match="no such directory"):
        run_cell(pixels, tmp_path / "bench", isolate=False)
    assert failed(tmp_path / "bench") == {pixels.config_hash}
    assert not (tmp_path / "bench" / "results.jsonl").exists()
