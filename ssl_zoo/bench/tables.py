"""Result rows -> the standard table (pure: no I/O besides the returned text).

Rows of the table: objective + backbone (methods first, baselines last);
columns: for each eval dataset kNN, linear, few-shot at 1/4/16 shots,
zero-shot. A cell aggregates the rows of distinct runs (config hashes):
the mean, and ± the 95% CI half-width (Student t) when there are several
runs; with one run, the row's own ci95 (few-shot seeds) is shown.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

BASELINES = ("random_init", "pixels")


@dataclass(frozen=True)
class ColumnSpec:
    label: str
    protocol: str
    shots: int | None = None
    params: tuple = ()          # (key, value) pairs the row's params must contain


DEFAULT_COLUMNS = (
    ColumnSpec("kNN", "knn", params=(("k", 20),)),
    ColumnSpec("linear", "linear_probe"),
    ColumnSpec("1-shot", "few_shot", 1),
    ColumnSpec("4-shot", "few_shot", 4),
    ColumnSpec("16-shot", "few_shot", 16),
    ColumnSpec("zero-shot", "zero_shot"),
)


def column_specs(table_cfg: Mapping[str, Any] | None) -> tuple[ColumnSpec, ...]:
    """The default columns, with the params a suite picks per protocol
    (``table.knn: {k: 200}``, ``table.few_shot: {classifier: logistic}``)."""
    table_cfg = table_cfg or {}
    out = []
    for c in DEFAULT_COLUMNS:
        picked = table_cfg.get(c.protocol)
        out.append(ColumnSpec(c.label, c.protocol, c.shots, tuple(sorted(dict(picked).items()))) if picked else c)
    return tuple(out)


@dataclass
class Column:
    dataset: str
    spec: ColumnSpec
    params: dict[str, Any] = field(default_factory=dict)  # the params actually shown

    @property
    def title(self) -> str:
        return f"{self.dataset} {self.spec.label}"


@dataclass
class Value:
    mean: float
    ci95: float | None
    runs: int          # distinct runs (training seeds) aggregated
    seeds: int         # seeds inside one run (few-shot sampling), from the row

    def text(self) -> str:
        s = f"{100 * self.mean:.1f}"
        return s if self.ci95 is None else f"{s} ± {100 * self.ci95:.1f}"


@dataclass
class Row:
    objective: str
    backbone: str
    pretrain_data: str | None   # set only when it differs from the column's dataset
    values: dict[str, Value] = field(default_factory=dict)   # column title -> value
    best: set = field(default_factory=set)

    @property
    def is_baseline(self) -> bool:
        return self.objective in BASELINES

    @property
    def model(self) -> str:
        name = f"{self.objective} (baseline)" if self.is_baseline else self.objective
        return f"{name} [pretrained on {self.pretrain_data}]" if self.pretrain_data else name


@dataclass
class Table:
    columns: list[Column]
    rows: list[Row]
    metric: str
    notes: list[str] = field(default_factory=list)


def t_ci95(values: list[float]) -> float | None:
    """Half-width of the 95% CI of the mean (Student t, n - 1 dof)."""
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def _row_key(r: Mapping[str, Any]) -> tuple:
    pre = r.get("pretrain_data")
    return (r["objective"], r["backbone"], pre if pre not in (None, r["eval_data"]) else None)


def _matches(r: Mapping[str, Any], dataset: str, spec: ColumnSpec, metric: str) -> bool:
    if r["eval_data"] != dataset or r["protocol"] != spec.protocol or r["metric"] != metric:
        return False
    if spec.shots is not None and r.get("shots") != spec.shots:
        return False
    params = r.get("params") or {}
    return all(params.get(k) == v for k, v in spec.params)


def latest_per_run(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run config, model, eval, protocol, shots, params, metric):
    a cell evaluated twice, or a file read twice, counts once (the newest)."""
    seen: dict[tuple, dict] = {}
    for r in rows:
        key = (r.get("config_hash"), r["objective"], r["backbone"], r.get("pretrain_data"), r["eval_data"],
               r["protocol"], r.get("shots"), json.dumps(r.get("params") or {}, sort_keys=True), r["metric"])
        if key not in seen or str(r.get("created") or "") >= str(seen[key].get("created") or ""):
            seen[key] = dict(r)
    return list(seen.values())


def aggregate(rows: list[Mapping[str, Any]]) -> Value:
    values = [float(r["value"]) for r in rows]
    if len(values) == 1:
        r = rows[0]
        return Value(values[0], r.get("ci95"), 1, int(r.get("seeds") or 1))
    return Value(sum(values) / len(values), t_ci95(values), len(values), max(int(r.get("seeds") or 1) for r in rows))


def build_table(rows: Iterable[Mapping[str, Any]], specs: tuple[ColumnSpec, ...] = DEFAULT_COLUMNS,
                metric: str = "top1") -> Table:
    rows = latest_per_run(rows)
    datasets = sorted({r["eval_data"] for r in rows})
    keys = sorted({_row_key(r) for r in rows}, key=lambda k: (k[0] in BASELINES, k[0], str(k[1]), str(k[2])))
    table_rows = {k: Row(*k) for k in keys}
    columns, notes = [], []
    for dataset in datasets:
        for spec in specs:
            matching = [r for r in rows if _matches(r, dataset, spec, metric)]
            if not matching:
                continue
            # several param variants (e.g. two few-shot classifiers): show the first, say which
            variants = sorted({json.dumps(r.get("params") or {}, sort_keys=True) for r in matching})
            col = Column(dataset, spec, json.loads(variants[0]))
            note = (f"{PROTOCOL_NAMES.get(spec.protocol, spec.protocol)} columns show {_params_text(col.params)}; "
                    f"also in results.jsonl: {'; '.join(_params_text(json.loads(v)) for v in variants[1:])}")
            if len(variants) > 1 and note not in notes:
                notes.append(note)
            chosen = [r for r in matching if json.dumps(r.get("params") or {}, sort_keys=True) == variants[0]]
            for key in keys:
                mine = [r for r in chosen if _row_key(r) == key]
                if mine:
                    table_rows[key].values[col.title] = aggregate(mine)
            columns.append(col)
    for col in columns:  # best per column, on the displayed precision: ties are all bold
        shown = {k: round(100 * r.values[col.title].mean, 1) for k, r in table_rows.items() if col.title in r.values}
        top = max(shown.values())
        for k, v in shown.items():
            if v == top:
                table_rows[k].best.add(col.title)
    return Table(columns, list(table_rows.values()), metric, notes)


def to_markdown(table: Table, footnotes: list[str] = ()) -> str:
    head = ["model", "backbone", *[c.title for c in table.columns]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        cells = []
        for c in table.columns:
            v = row.values.get(c.title)
            text = v.text() if v else "—"
            cells.append(f"**{text}**" if v and c.title in row.best else text)
        lines.append("| " + " | ".join([row.model, row.backbone, *cells]) + " |")
    notes = [*footnotes, *table.notes]
    if notes:
        lines += ["", *[f"{i}. {n}" for i, n in enumerate(notes, 1)]]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """One line per table row; per column the value and its CI in percent, and
    whether it is the best of its column."""
    out = io.StringIO()
    w = csv.writer(out)
    head = ["model", "objective", "backbone", "pretrain_data", "group"]
    for c in table.columns:
        head += [c.title, f"{c.title} ci95", f"{c.title} best"]
    w.writerow(head)
    for row in table.rows:
        line = [row.model, row.objective, row.backbone, row.pretrain_data or "",
                "baseline" if row.is_baseline else "method"]
        for c in table.columns:
            v = row.values.get(c.title)
            line += ([f"{100 * v.mean:.1f}", "" if v.ci95 is None else f"{100 * v.ci95:.1f}",
                      int(c.title in row.best)] if v else ["", "", ""])
        w.writerow(line)
    return out.getvalue()


PROTOCOL_NAMES = {"knn": "kNN", "linear_probe": "linear probe", "few_shot": "few-shot", "zero_shot": "zero-shot"}


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"


def footnotes(table: Table, rows: list[Mapping[str, Any]], hardware: list[Mapping[str, Any]] = (),
              settings: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Protocol settings, seeds, versions, hardware and dates, from the rows
    (and, where a bench recorded it, the protocols' config: λ grid, shots, ...)."""
    rows = latest_per_run(rows)
    notes = [f"{table.metric} accuracy (%) on each dataset's test split after the final training epoch; "
             "**bold**: best of its column (ties all bold); —: not run. A method row is pretrained on the "
             "dataset of each column unless it names another."]
    by_protocol: dict[str, set] = {}
    for c in table.columns:
        by_protocol.setdefault(c.spec.protocol, set()).add(json.dumps(c.params, sort_keys=True))
    for protocol, variants in by_protocol.items():
        shots = sorted({c.spec.shots for c in table.columns if c.spec.protocol == protocol and c.spec.shots})
        seeds = sorted({int(r.get("seeds") or 1) for r in rows if r["protocol"] == protocol})
        text = "; ".join(_params_text(json.loads(v)) for v in sorted(variants))
        extra = f", shots {'/'.join(map(str, shots))}" if shots else ""
        extra += (f", {'/'.join(map(str, seeds))} sampling seeds (for a single training run, ± is their 95% CI)"
                  if seeds != [1] else "")
        conf = (settings or {}).get(protocol)
        extra += f" (config: {_params_text(conf)})" if conf else ""
        notes.append(f"{PROTOCOL_NAMES.get(protocol, protocol)}: {text}{extra}.")
    runs = sorted({v.runs for r in table.rows for v in r.values.values()})
    if runs and runs != [1]:
        notes.append(f"training seeds per cell: {'/'.join(map(str, runs))}; with 2 or more, ± is the 95% CI "
                     "half-width of the mean over seeds (Student t).")
    versions = sorted({json.dumps(r.get("versions") or {}, sort_keys=True) for r in rows})
    for v in versions:
        notes.append("versions: " + ", ".join(f"{k} {x}" for k, x in json.loads(v).items()))
    for h in {json.dumps(h, sort_keys=True) for h in hardware}:
        notes.append("hardware: " + ", ".join(f"{k} {x}" for k, x in json.loads(h).items() if x not in (None, "")))
    created = sorted(str(r.get("created")) for r in rows if r.get("created"))
    if created:
        notes.append(f"date: {created[0][:10]}" + (f" to {created[-1][:10]}" if created[-1][:10] != created[0][:10] else ""))
    return notes
