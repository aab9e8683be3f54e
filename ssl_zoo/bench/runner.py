"""``ssl-zoo bench``: run every cell of a suite, then write the tables.

Each cell runs as its own ``ssl-zoo train`` / ``ssl-zoo eval`` subprocess in
``BENCH/cells/<name>-<config hash>``. A subprocess isolates failures (a crash
or out-of-memory in one cell leaves the others and the bench alive), returns
all its memory when done, and makes kill/restart and Hydra's launchers
natural: a launcher job is just "run cell #i". When a cell succeeds, its rows
are copied into ``BENCH/results.jsonl`` with one locked append (all or
nothing), and that is what marks it finished: a restarted bench skips every
cell whose config hash is already there and reruns the rest from scratch.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from omegaconf import OmegaConf

from ssl_zoo.bench.report import HARDWARE_FILE, SETTINGS_FILE, protocol_settings, record_hardware, write_outputs
from ssl_zoo.bench.suite import Cell, plan
from ssl_zoo.bench.tables import column_specs
from ssl_zoo.errors import UserError
from ssl_zoo.results import append_rows, read_rows

log = logging.getLogger(__name__)
FAILURES = "failures.jsonl"
PLAN = "plan.json"  # the cells, for the launcher's jobs


def _quote(path: Path) -> str:
    s = str(path)
    return f"'{s}'" if "'" not in s else s  # Hydra's override grammar: spaces etc. need quotes


def finished(bench_dir: Path) -> set[str]:
    path = bench_dir / "results.jsonl"
    return {r.get("config_hash") for r in read_rows(path)} if path.is_file() else set()


def failed(bench_dir: Path) -> set[str]:
    path = bench_dir / FAILURES
    return {r.get("config_hash") for r in read_rows(path)} if path.is_file() else set()


def _die_with_parent() -> None:
    """Child side: if the bench is SIGKILLed, take the cell's run down too."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_process(cmd: list[str], log_path: Path, stream: bool) -> int:
    """Run ``cmd``, its output to ``log_path`` (and to our stderr when ``stream``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        previous = signal.getsignal(signal.SIGTERM)

        def forward(signum, frame):  # SIGTERM to the bench stops the running cell first
            proc.terminate()
            raise SystemExit(128 + signum)

        in_main = _is_main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, forward)
        try:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                out.write(chunk)
                if stream:
                    sys.stderr.buffer.write(chunk)
                    sys.stderr.flush()
            return proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if in_main:
                signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_in_process(cell: Cell, cell_dir: Path) -> int:
    """The cell in this process (``isolate=false``): no start-up cost, no isolation."""
    import traceback

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    from ssl_zoo.config import CONFIG_MODULE

    cell_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(cell_dir / "cell.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    backup = get_gh_backup()
    try:
        GlobalHydra.instance().clear()
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose(cell.command, overrides=cell.overrides)
        if cell.command == "train":
            from ssl_zoo.train import train

            train(cfg, cell_dir)
        else:
            from ssl_zoo.eval.runner import eval_command

            eval_command(cfg, cell_dir)
        return 0
    except Exception as exc:  # one cell's failure must not end the bench
        logging.getLogger(__name__).error("cell failed: %s\n%s", exc, traceback.format_exc())
        handler.flush()
        with open(cell_dir / "cell.log", "a") as f:
            f.write(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}\n")
        return 1
    finally:
        GlobalHydra.instance().clear()
        restore_gh_from_backup(backup)
        logging.getLogger().removeHandler(handler)
        handler.close()


def run_cell(cell: Cell, bench_dir: Path, stream: bool = False, isolate: bool = True) -> tuple[list[dict[str, Any]], float]:
    """Run one cell; on success append its rows to BENCH/results.jsonl. Returns (rows, seconds)."""
    cell_dir = bench_dir / "cells" / cell.name
    if cell_dir.exists():  # an earlier attempt that did not finish: start clean
        shutil.rmtree(cell_dir)
    cmd = [sys.executable, "-m", "ssl_zoo.cli", cell.command, *cell.overrides, f"hydra.run.dir={_quote(cell_dir)}"]
    started, t0 = time.time(), time.perf_counter()
    rc = run_process(cmd, cell_dir / "cell.log", stream) if isolate else run_in_process(cell, cell_dir)
    seconds = time.perf_counter() - t0
    rows = read_rows(cell_dir / "results.jsonl") if (cell_dir / "results.jsonl").is_file() else []
    if rc != 0 or not rows:
        tail = (cell_dir / "cell.log").read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        append_rows(bench_dir / FAILURES, [{"config_hash": cell.config_hash, "cell": cell.name, "rc": rc,
                                            "error": tail[0][-300:], "log": str(cell_dir / "cell.log")}])
        raise CellFailed(f"{cell.describe()} failed (exit {rc}): {tail[0][-300:]}  [log: {cell_dir / 'cell.log'}]")
    wrong = {r.get("config_hash") for r in rows} - {cell.config_hash}
    if wrong:  # the bench's hash must be the run's own, or resuming could never recognise the cell
        append_rows(bench_dir / FAILURES, [{"config_hash": cell.config_hash, "cell": cell.name, "rc": rc,
                                            "error": f"config hash {sorted(wrong)} != planned"}])
        raise CellFailed(f"{cell.describe()}: its run has config hash {', '.join(sorted(wrong))}, the bench planned "
                         f"{cell.config_hash}: did the config files change while the bench ran? Run it again.")
    for r in rows:
        r["bench_cell"] = cell.name
        r["cell_started"] = round(started, 2)
        r["cell_seconds"] = round(seconds, 2)
    append_rows(bench_dir / "results.jsonl", rows)
    return rows, seconds


class CellFailed(Exception):
    pass


def summary(cell: Cell, rows: list[Mapping[str, Any]], seconds: float, knn: Mapping[str, Any]) -> str:
    """One line per finished cell: the headline numbers and the time it took."""
    def pick(protocol: str, shots: int | None = None, params: Mapping[str, Any] | None = None) -> float | None:
        for r in rows:
            if (r["protocol"] == protocol and r["metric"] == "top1" and r.get("shots") == shots
                    and all((r.get("params") or {}).get(k) == v for k, v in (params or {}).items())):
                return float(r["value"])
        return None

    parts = [(f"kNN@{knn.get('k', 20)}", pick("knn", params=knn)), ("linear", pick("linear_probe")),
             ("16-shot", pick("few_shot", 16)), ("zero-shot", pick("zero_shot"))]
    text = "  ".join(f"{n} {100 * v:.1f}" for n, v in parts if v is not None)
    speed = next((r.get("train_images_per_s") for r in rows if r.get("train_images_per_s")), None)
    return f"{cell.describe()}: {text}  ({seconds:.0f} s{f', {speed:.0f} img/s' if speed else ''})"


def _run_sequential(cells: list[Cell], bench_dir: Path, cfg, knn: Mapping[str, Any], total: int, done: int) -> list[str]:
    from tqdm.auto import tqdm

    errors = []
    bar = tqdm(total=total, initial=done, desc="bench", unit="cell", file=sys.stderr, dynamic_ncols=True)
    try:
        for cell in cells:
            bar.set_postfix_str(cell.describe())
            try:
                rows, seconds = run_cell(cell, bench_dir, stream=bool(cfg.stream_cell_output), isolate=bool(cfg.isolate))
                bar.write(f"[done] {summary(cell, rows, seconds, knn)}", file=sys.stderr)
            except CellFailed as exc:
                errors.append(str(exc))
                bar.write(f"[FAILED] {exc}", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
    return errors


def _run_launcher(cfg, indices: list[int], bench_dir: Path) -> None:
    """All pending cells as one Hydra multirun: one launcher job per cell."""
    from hydra.core.hydra_config import HydraConfig

    mine = ("launcher=", "launcher_overrides=", "jobs=", "cell=", "bench_dir=", "hydra.")
    user = [o for o in HydraConfig.get().overrides.task if not o.startswith(mine)]
    if cfg.jobs is not None:
        key = "n_jobs" if "joblib" in str(cfg.launcher) else "array_parallelism"
        user.append(f"hydra.launcher.{key}={int(cfg.jobs)}")
    cmd = [sys.executable, "-m", "ssl_zoo.cli", "bench", "-m", *user, f"hydra/launcher={cfg.launcher}",
           *[str(o) for o in cfg.launcher_overrides], f"hydra.sweep.dir={_quote(bench_dir / 'launcher')}",
           f"bench_dir={_quote(bench_dir)}", f"cell={','.join(map(str, indices))}"]
    log.info("launching %d cells through hydra/launcher=%s", len(indices), cfg.launcher)
    run_process(cmd, bench_dir / "launcher.log", stream=True)


def _launcher_job(cfg, cells: list[Cell], bench_dir: Path, knn: Mapping[str, Any]) -> None:
    cell = cells[int(cfg.cell)]
    if cell.config_hash in finished(bench_dir):
        return
    try:
        rows, seconds = run_cell(cell, bench_dir, stream=False, isolate=bool(cfg.isolate))
        print(f"[done] cell {int(cfg.cell) + 1}/{len(cells)} {summary(cell, rows, seconds, knn)}", file=sys.stderr, flush=True)
    except CellFailed as exc:
        print(f"[FAILED] {exc}", file=sys.stderr, flush=True)


def bench(cfg, run_dir: Path) -> list[dict[str, Any]]:
    suite = OmegaConf.to_container(cfg.suite, resolve=True)
    table_cfg = suite.get("table") or {}
    knn = dict(table_cfg.get("knn") or {"k": 20})
    bench_dir = Path(cfg.bench_dir).resolve() if cfg.bench_dir else Path(run_dir).resolve()
    if cfg.cell is not None:  # one job of the launcher sweep: the parent's plan, not composed again
        cells = [Cell(**c) for c in json.loads((bench_dir / PLAN).read_text())]
        return _launcher_job(cfg, cells, bench_dir, knn)
    cells = plan(suite)

    bench_dir.mkdir(parents=True, exist_ok=True)
    (bench_dir / "suite.yaml").write_text(OmegaConf.to_yaml(cfg.suite, resolve=True))
    record_hardware(bench_dir)
    (bench_dir / PLAN).write_text(json.dumps([dataclasses.asdict(c) for c in cells], indent=1))
    done, bad = finished(bench_dir), failed(bench_dir)
    pending = [i for i, c in enumerate(cells) if c.config_hash not in done
               and (cfg.retry_failed or c.config_hash not in bad)]
    n_done = sum(c.config_hash in done for c in cells)
    print(f"bench {suite['name']}: {len(cells)} cells, {n_done} finished earlier, {len(pending)} to run -> {bench_dir}",
          file=sys.stderr, flush=True)
    if pending and cfg.launcher:
        _run_launcher(cfg, pending, bench_dir)
    elif pending:
        _run_sequential([cells[i] for i in pending], bench_dir, cfg, knn, len(cells), n_done)

    hashes = {c.config_hash for c in cells}
    rows = [r for r in read_rows(bench_dir / "results.jsonl") if r.get("config_hash") in hashes] \
        if (bench_dir / "results.jsonl").is_file() else []
    missing = [c for c in cells if c.config_hash not in {r["config_hash"] for r in rows}]
    hw = json.loads((bench_dir / HARDWARE_FILE).read_text())
    settings = protocol_settings(c.info["eval"] for c in cells)
    (bench_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))
    write_outputs(rows, bench_dir, specs=column_specs(table_cfg), metric=table_cfg.get("metric", "top1"),
                  hardware_list=hw, settings=settings, title=f"ssl_zoo bench: {suite['name']}")
    if suite.get("study") and rows:  # a suite's own analysis after its cells (e.g. concept_frequency)
        from ssl_zoo.study.experiment import run_study

        run_study(suite, bench_dir, rows)
    print(f"bench {suite['name']}: {len(cells) - len(missing)}/{len(cells)} cells -> {bench_dir / 'table.md'}, "
          f"table.csv, report.html", file=sys.stderr, flush=True)
    if missing:
        names = ", ".join(c.describe() for c in missing)
        raise UserError(f"{len(missing)} cell(s) did not finish: {names}; logs in {bench_dir / 'cells'}; "
                        f"run the same command again to retry them")
    return rows
