"""Write a bench's outputs from result rows: table.md, table.csv and a
self-contained, offline report.html (plots embedded as base64 PNG, no
scripts, no external resources). ``ssl-zoo report DIR...`` rebuilds them from
any set of results.jsonl files."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Mapping

from ssl_zoo.bench.tables import (DEFAULT_COLUMNS, ColumnSpec, Table, _row_key, build_table, column_specs,
                                  footnotes, latest_per_run, to_csv, to_markdown)
from ssl_zoo.errors import UserError
from ssl_zoo.results import append_rows, read_rows

HARDWARE_FILE = "hardware.json"
SETTINGS_FILE = "protocols.json"


def hardware() -> dict[str, Any]:
    """CPU model, cores, torch threads and GPU of this machine (for the footnotes)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu or "none"}


def record_hardware(bench_dir: Path) -> None:
    """Add this machine to BENCH/hardware.json (a bench resumed elsewhere lists both)."""
    path = bench_dir / HARDWARE_FILE
    known = json.loads(path.read_text()) if path.is_file() else []
    me = hardware()
    if me not in known:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps([*known, me], indent=1))
        os.replace(tmp, path)


# ---------------------------------------------------------------- plots

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(n_panels: int):
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(4.6 * n_panels, 3.4))
    return fig, [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]


def _label(key: tuple) -> str:
    objective, backbone, pre = key
    return f"{objective} / {backbone}" + (f" [{pre}]" if pre else "")


def plot_few_shot(rows: list[Mapping[str, Any]], metric: str) -> str | None:
    rows = [r for r in rows if r["protocol"] == "few_shot" and r["metric"] == metric and r.get("shots")]
    datasets = sorted({r["eval_data"] for r in rows})
    if not datasets:
        return None
    from ssl_zoo.bench.tables import aggregate

    fig, axes = _figure(len(datasets))
    for ax, dataset in zip(axes, datasets):
        mine = [r for r in rows if r["eval_data"] == dataset]
        variant = min(json.dumps(r.get("params") or {}, sort_keys=True) for r in mine)  # as in the table
        mine = [r for r in mine if json.dumps(r.get("params") or {}, sort_keys=True) == variant]
        for key in sorted({_row_key(r) for r in mine}, key=str):
            shots = sorted({int(r["shots"]) for r in mine if _row_key(r) == key})
            vals = [aggregate([r for r in mine if _row_key(r) == key and r["shots"] == s]) for s in shots]
            ax.errorbar(shots, [100 * v.mean for v in vals], yerr=[100 * (v.ci95 or 0) for v in vals],
                        marker="o", capsize=3, label=_label(key), linestyle="--" if key[0] in ("random_init", "pixels") else "-")
        ax.set_xscale("log", base=2)
        ticks = sorted({int(r["shots"]) for r in mine})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("shots per class")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"few-shot on {dataset} ({json.loads(variant) or 'default'})", fontsize=9)
        ax.legend(fontsize=7)
    return _png(fig)


def _metrics_csv(row: Mapping[str, Any]) -> Path | None:
    run = Path(str(row.get("run") or ""))
    candidates = [run / "metrics.csv"]
    if row.get("_source_dir"):  # a bench directory moved elsewhere: cells/<name>/metrics.csv
        candidates.append(Path(row["_source_dir"]) / "cells" / run.name / "metrics.csv")
    return next((p for p in candidates if p.is_file()), None)


def read_loss(path: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    with open(path, newline="") as f:
        for rec in csv.DictReader(f):
            key = "train/loss" if "train/loss" in rec else next((k for k in rec if k and "loss" in k), None)
            if key and rec.get(key) not in (None, ""):
                steps.append(int(float(rec.get("step") or len(steps))))
                losses.append(float(rec[key]))
    return steps, losses


def plot_losses(rows: list[Mapping[str, Any]]) -> str | None:
    runs: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("pretrain_data") and r.get("train_steps") is not None:
            runs.setdefault(str(r.get("run")), r)
    curves = []
    for r in runs.values():
        path = _metrics_csv(r)
        if path:
            steps, losses = read_loss(path)
            if losses:
                curves.append((r, steps, losses))
    if not curves:
        return None
    datasets = sorted({r["pretrain_data"] for r, _, _ in curves})
    fig, axes = _figure(len(datasets))
    for ax, dataset in zip(axes, datasets):
        for r, steps, losses in sorted((c for c in curves if c[0]["pretrain_data"] == dataset), key=lambda c: str(_row_key(c[0]))):
            ax.plot(steps, losses, label=f"{r['objective']} / {r['backbone']} ({Path(str(r['run'])).name[-16:]})")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"training loss on {dataset} (each method's own loss)", fontsize=9)
        ax.legend(fontsize=6)
    return _png(fig)


def plot_throughput(rows: list[Mapping[str, Any]]) -> str | None:
    per_run: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("train_images_per_s") is not None:
            per_run.setdefault(str(r.get("config_hash")), r)
    if not per_run:
        return None
    groups: dict[str, list[float]] = {}
    for r in per_run.values():
        groups.setdefault(f"{r['objective']} / {r['backbone']} on {r['pretrain_data']}", []).append(float(r["train_images_per_s"]))
    names = sorted(groups)
    fig, (ax,) = _figure(1)
    fig.set_size_inches(6.5, 0.45 * len(names) + 1.2)
    ax.barh(names, [sum(groups[n]) / len(groups[n]) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel("training images / s (mean over runs)")
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


# ---------------------------------------------------------------- html

def table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["model", "backbone", *[c.title for c in table.columns]])
    body = []
    for row in table.rows:
        cells = [f"<td>{html.escape(row.model)}</td>", f"<td>{html.escape(row.backbone)}</td>"]
        for c in table.columns:
            v = row.values.get(c.title)
            text = html.escape(v.text()) if v else "—"
            cells.append(f'<td class="num">{"<b>" + text + "</b>" if v and c.title in row.best else text}</td>')
        body.append(f'<tr class="{"baseline" if row.is_baseline else "method"}">{"".join(cells)}</tr>')
    return f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px}td.num{text-align:right}tr.baseline td{color:#555;font-style:italic}
figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:12px;color:#444}ol{font-size:12px}"""


def report_html(table: Table, notes: list[str], plots: dict[str, tuple[str | None, str]], title: str) -> str:
    figures = []
    for name, (png, caption) in plots.items():
        if png:
            figures.append(f'<figure id="plot-{name}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        else:
            figures.append(f'<p class="noplot">{html.escape(caption)}: no data in these results.</p>')
    foot = "".join(f"<li>{html.escape(n).replace('**bold**', '<b>bold</b>')}</li>" for n in notes)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{table_html(table)}"
            f'<ol class="notes">{foot}</ol>{"".join(figures)}</body></html>\n')


def write_outputs(rows: list[Mapping[str, Any]], out_dir: Path, *, specs: tuple[ColumnSpec, ...] = DEFAULT_COLUMNS,
                  metric: str = "top1", hardware_list: Iterable[Mapping[str, Any]] = (),
                  settings: Mapping[str, Any] | None = None, title: str = "ssl_zoo benchmark") -> Table:
    """table.md, table.csv and report.html in ``out_dir``; returns the table."""
    rows = latest_per_run(rows)
    table = build_table(rows, specs, metric)
    notes = footnotes(table, rows, list(hardware_list), settings)
    plots = {"few_shot": (plot_few_shot(rows, metric), f"few-shot {metric} vs shots per class, per objective"),
             "loss": (plot_losses(rows), "training loss curves (from each run's metrics.csv)"),
             "throughput": (plot_throughput(rows), "training throughput (images / s) per objective")}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("table.md", to_markdown(table, notes)), ("table.csv", to_csv(table)),
                       ("report.html", report_html(table, notes, plots, title))):
        tmp = out_dir / f".{name}.{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)  # readers never see half a table
    return table


def protocol_settings(evals: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Each protocol's config section, where every cell used the same one."""
    out: dict[str, Any] = {}
    evals = list(evals)
    for name in ("knn", "linear_probe", "few_shot", "zero_shot"):
        seen = {json.dumps(e.get(name), sort_keys=True, default=str) for e in evals if name in (e.get("protocols") or [])}
        if len(seen) == 1 and (value := json.loads(seen.pop())):
            out[name] = value
    return out


def load_results(paths: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and recorded hardware from results.jsonl files or directories holding one."""
    rows, hw = [], []
    for p in paths:
        p = Path(p)
        file = p / "results.jsonl" if p.is_dir() else p
        if not file.is_file():
            raise UserError(f"{p}: no results.jsonl there (give a bench/train/eval directory or a results.jsonl file)")
        for r in read_rows(file):
            r["_source_dir"] = str(file.parent)
            rows.append(r)
        hw_file = file.parent / HARDWARE_FILE
        if hw_file.is_file():
            hw += json.loads(hw_file.read_text())
    return rows, hw


def report_command(args: list[str]) -> Path:
    """``ssl-zoo report DIR [DIR ...] [--out OUT]``: one DIR is rebuilt in place;
    several are merged into OUT (default ./report), with a merged results.jsonl."""
    out, paths, it = None, [], iter(args)
    for a in it:
        if a in ("-o", "--out"):
            out = next(it, None)
            if out is None:
                raise UserError("--out needs a directory")
        elif a.startswith("--out="):
            out = a.split("=", 1)[1]
        elif a.startswith("-"):
            raise UserError(f"unknown option {a!r}; usage: ssl-zoo report DIR [DIR ...] [--out OUT]")
        else:
            paths.append(a)
    if not paths:
        raise UserError("usage: ssl-zoo report DIR [DIR ...] [--out OUT] (directories holding results.jsonl)")
    rows, hw = load_results(paths)
    if not rows:
        raise UserError(f"no result rows in {', '.join(paths)}")
    single = Path(paths[0]) if len(paths) == 1 and Path(paths[0]).is_dir() else None
    out_dir = Path(out) if out else (single or Path("report"))
    if out_dir.resolve() != (single.resolve() if single else None):
        merged = out_dir / "results.jsonl"
        if merged.exists():
            merged.unlink()
        append_rows(merged, [{k: v for k, v in r.items() if k != "_source_dir"} for r in latest_per_run(rows)])
    # a bench directory knows its suite's column choices and protocol settings
    bench = next((Path(p) for p in paths if (Path(p) / "suite.yaml").is_file()), None)
    table_cfg, settings = {}, None
    if bench is not None:
        from omegaconf import OmegaConf

        table_cfg = (OmegaConf.to_container(OmegaConf.load(bench / "suite.yaml")) or {}).get("table") or {}
        if (bench / SETTINGS_FILE).is_file():
            settings = json.loads((bench / SETTINGS_FILE).read_text())
    table = write_outputs(rows, out_dir, specs=column_specs(table_cfg), metric=table_cfg.get("metric", "top1"),
                          hardware_list=hw, settings=settings, title=f"ssl_zoo report: {', '.join(paths)}")
    print(f"{len(table.rows)} models x {len(table.columns)} columns from {len(rows)} rows -> "
          f"{out_dir / 'table.md'}, table.csv, report.html")
    return out_dir
